//! The store itself: blocks in sled, owned by one thread (see the module header in
//! [`super`] for the layout and its invariants). Every method takes `&mut self`; nothing here
//! locks or awaits. Appends, acks and evictions only change memory; [`Store::flush`] is the one
//! place that writes sled (inserts, deletes, marks, then `Db::flush`), so a failed flush leaves
//! everything pending in memory and the next one retries it whole.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::Metrics;
use crate::record::{Event, RecordBody, Severity, Stream};

use super::acks::AckSet;
use super::block::{self, Records};
use super::marks::{self, MarksFile, SeqMarks};
use super::{
    codec, dir_err, stream_index, Batch, OutboxError, OutboxOptions, OutboxStats, Recovery,
    StreamStats, STREAMS,
};

/// meta key of the layout version.
const FORMAT_KEY: &[u8] = b"format";
/// Layout version written in meta `format`.
pub const FORMAT: u8 = 2;

fn hwm_key(stream: Stream) -> Vec<u8> {
    format!("hwm/{}", stream.as_str()).into_bytes()
}

fn acked_key(stream: Stream) -> Vec<u8> {
    format!("acked/{}", stream.as_str()).into_bytes()
}

/// Name of a stream's block tree (v1 used the bare stream name, one record per key).
pub fn tree_name(stream: Stream) -> String {
    format!("blocks/{}", stream.as_str())
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// What the store keeps in memory about one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BlockMeta {
    count: u32,
    /// Key + value bytes as last encoded.
    bytes: u64,
    first_ts_ms: u64,
}

struct StreamState {
    stream: Stream,
    tree: sled::Tree,
    /// Highest seq assigned; the next record gets `last_appended + 1`.
    last_appended: u64,
    /// Highest seq covered by a completed flush.
    durable: u64,
    /// `hwm/<stream>` as last written.
    hwm_written: u64,
    /// Every block of the stream (in sled, waiting to be inserted, or the open tail), by key.
    blocks: BTreeMap<u64, BlockMeta>,
    /// The open tail block (in memory; inserted under `tail.first_seq` at each flush).
    tail: Records,
    /// Records of the tail as of its last successful flush.
    tail_flushed: usize,
    /// Sealed blocks waiting for the next flush to insert them.
    to_insert: BTreeMap<u64, Vec<u8>>,
    /// Keys to delete at the next flush.
    to_delete: Vec<u64>,
    acked: AckSet,
    acked_dirty: bool,
    /// Stored records not yet acknowledged.
    records: u64,
    /// Sum of `BlockMeta::bytes`.
    bytes: u64,
    /// The sealed block decompressed last (a batch rarely ends on a block boundary).
    cache: Option<Records>,
}

impl StreamState {
    fn new(stream: Stream, tree: sled::Tree) -> Self {
        StreamState {
            stream,
            tree,
            last_appended: 0,
            durable: 0,
            hwm_written: 0,
            blocks: BTreeMap::new(),
            tail: Records::default(),
            tail_flushed: 0,
            to_insert: BTreeMap::new(),
            to_delete: Vec::new(),
            acked: AckSet::default(),
            acked_dirty: false,
            records: 0,
            bytes: 0,
            cache: None,
        }
    }

    fn first_stored(&self) -> Option<u64> {
        // The first unacknowledged seq of the first block.
        let (&k, m) = self.blocks.iter().next()?;
        (k..k + u64::from(m.count)).find(|s| !self.acked.contains(*s))
    }

    fn oldest_ts_ms(&self) -> Option<u64> {
        self.blocks.values().next().map(|m| m.first_ts_ms)
    }

    /// Forget block `key` (acknowledged or evicted): delete at the next flush.
    fn drop_block(&mut self, key: u64) -> Option<BlockMeta> {
        let m = self.blocks.remove(&key)?;
        let last = key + u64::from(m.count) - 1;
        let acked = self.acked.count_in(key, last);
        self.records -= u64::from(m.count) - acked;
        self.bytes -= m.bytes;
        if self.acked.spans() > 0 {
            self.acked.remove(key, last);
            self.acked_dirty = true;
        }
        // It may be in sled (flushed earlier as the open block) even when a newer version
        // waits to be inserted: delete it in any case.
        self.to_insert.remove(&key);
        self.to_delete.push(key);
        if self.tail.first_seq == key && !self.tail.is_empty() {
            self.tail.clear();
            self.tail_flushed = 0;
        }
        if self.cache.as_ref().is_some_and(|c| c.first_seq == key) {
            self.cache = None;
        }
        Some(m)
    }
}

/// Records evicted from one stream (one contiguous seq range of unacknowledged records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eviction {
    /// Stream.
    pub stream: Stream,
    /// First seq evicted.
    pub first_seq: u64,
    /// Last seq evicted.
    pub last_seq: u64,
    /// Records evicted (acknowledged ones inside the range are not counted).
    pub records: u64,
}

/// Space figures of one budget check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Space {
    /// Bytes of sled's files.
    pub disk_bytes: u64,
    /// Free bytes on the filesystem (for an unprivileged writer).
    pub fs_free_bytes: u64,
    /// The budget in force: `max_bytes`, or less when the filesystem has less room.
    pub limit_bytes: u64,
}

/// The outbox store (one per process: sled allows one open `Db` per path).
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    opts: OutboxOptions,
    streams: [StreamState; 3],
    marks: SeqMarks,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    space: Space,
    segment_size: u64,
    storage_full: bool,
    metrics: Metrics,
}

/// Everything read from a sled directory at open.
struct Opened {
    db: sled::Db,
    meta: sled::Tree,
    streams: [StreamState; 3],
    fresh: bool,
}

/// sled's log segment size for a new store: its files hold several segments beyond the live
/// data, so with the default 512 KiB a small budget is exceeded by the segments alone. New stores
/// get a 32nd of the room they may use (`max_bytes`, or the filesystem's size when smaller)
/// rounded down to a power of two, between 32 KiB and 512 KiB. sled refuses to open a store with
/// another segment size than it was created with, so an existing store keeps the one in `conf`.
pub fn segment_size_for(path: &Path, max_bytes: u64) -> usize {
    const MIN: u64 = 32 * 1024;
    const MAX: u64 = 512 * 1024;
    // sled appends a CRC after the text, so the file is not valid UTF-8 as a whole.
    let existing = fs::read(path.join("conf")).ok().and_then(|conf| {
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|v| v.is_power_of_two())
    });
    existing.unwrap_or_else(|| {
        let fs_size = path
            .ancestors()
            .find_map(|p| nix::sys::statvfs::statvfs(p).ok())
            .map(|s| fs_bytes(s.blocks(), s.fragment_size()))
            .filter(|&b| b > 0)
            .unwrap_or(u64::MAX);
        let target = (max_bytes.min(fs_size) / 32).clamp(MIN, MAX);
        // Largest power of two not above the target.
        (1u64 << (63 - target.leading_zeros())) as usize
    })
}

/// Blocks × fragment size: the statvfs types are 32 bits wide on some targets (armv7).
#[allow(clippy::useless_conversion)]
fn fs_bytes(blocks: nix::libc::fsblkcnt_t, fragment: nix::libc::c_ulong) -> u64 {
    u64::from(blocks).saturating_mul(u64::from(fragment))
}

fn sled_config(path: &Path, opts: &OutboxOptions) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_capacity)
        .segment_size(segment_size_for(path, opts.max_bytes))
        .flush_every_ms(None)
}

/// The v1 layout (one record per key in trees named after the streams), rewritten as blocks.
fn migrate_v1(
    db: &sled::Db,
    meta: &sled::Tree,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<bool, OutboxError> {
    if meta.get(FORMAT_KEY)?.is_some() {
        return Ok(false);
    }
    let names = db.tree_names();
    let mut migrated = false;
    for stream in STREAMS {
        if !names
            .iter()
            .any(|n| n.as_ref() == stream.as_str().as_bytes())
        {
            continue;
        }
        let old = db.open_tree(stream.as_str())?;
        let new = db.open_tree(tree_name(stream))?;
        // A migration interrupted by a crash left a partial copy: start it again.
        new.clear()?;
        let mut rec = Records::default();
        let mut expect = 0u64;
        let mut put = |rec: &mut Records| -> Result<(), OutboxError> {
            if !rec.is_empty() {
                new.insert(codec::key(rec.first_seq), rec.encode(compressor.as_mut()))?;
                rec.clear();
            }
            Ok(())
        };
        for item in old.iter() {
            let (k, v) = item?;
            let seq = codec::seq_of(&k).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            let d = codec::decode_value(&v).ok_or(OutboxError::BadValue { stream, seq })?;
            // A block holds consecutive seqs: a hole (acked or evicted records) starts a new one.
            if seq != expect || rec.body.len() + d.json.len() > super::SEAL_BYTES {
                put(&mut rec)?;
            }
            rec.begin_record(seq, d.ts_ms);
            rec.body.extend_from_slice(d.json);
            rec.end_record();
            expect = seq + 1;
            migrated = true;
        }
        put(&mut rec)?;
    }
    meta.insert(FORMAT_KEY, &[FORMAT])?;
    db.flush()?;
    for stream in STREAMS {
        if names
            .iter()
            .any(|n| n.as_ref() == stream.as_str().as_bytes())
        {
            db.drop_tree(stream.as_str())?;
        }
    }
    db.flush()?;
    Ok(migrated)
}

fn open_db(
    path: &Path,
    opts: &OutboxOptions,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Opened, OutboxError> {
    let db = sled_config(path, opts).open()?;
    let meta = db.open_tree("meta")?;
    let fresh = meta.get("created")?.is_none();
    if migrate_v1(&db, &meta, compressor)? {
        tracing::info!(path = %path.display(), "outbox store converted from layout 1 (one key per record) to blocks");
    }
    let mut states = Vec::with_capacity(3);
    for stream in STREAMS {
        let mut s = StreamState::new(stream, db.open_tree(tree_name(stream))?);
        let hwm = read_u64(meta.get(hwm_key(stream))?);
        let acked = match meta.get(acked_key(stream))? {
            Some(v) => AckSet::decode(&v).ok_or(OutboxError::BadValue { stream, seq: 0 })?,
            None => AckSet::default(),
        };
        let mut last_key = 0;
        // One scan at open rebuilds the block index and proves every block decodes.
        for item in s.tree.iter() {
            let (k, v) = item?;
            let seq = codec::seq_of(&k).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            let h = block::header(&v).ok_or(OutboxError::BadValue { stream, seq })?;
            block::decode(seq, &v, opts.max_block_content())
                .ok_or(OutboxError::BadValue { stream, seq })?;
            let last = seq + u64::from(h.count) - 1;
            if seq <= last_key {
                return Err(OutboxError::BadValue { stream, seq });
            }
            let m = BlockMeta {
                count: h.count,
                bytes: (k.len() + v.len()) as u64,
                first_ts_ms: h.first_ts_ms,
            };
            // Only acknowledgements inside stored blocks matter.
            let done = acked.count_in(seq, last);
            if done > 0 {
                for a in seq..=last {
                    if acked.contains(a) {
                        s.acked.insert(a, a);
                    }
                }
            }
            s.records += u64::from(h.count) - done;
            s.bytes += m.bytes;
            s.blocks.insert(seq, m);
            last_key = last;
        }
        let last = hwm.max(last_key);
        s.last_appended = last;
        s.durable = last;
        s.hwm_written = hwm;
        states.push(s);
    }
    let streams: [StreamState; 3] = states
        .try_into()
        .unwrap_or_else(|_| unreachable!("three streams"));
    Ok(Opened {
        db,
        meta,
        streams,
        fresh,
    })
}

/// Open, catching sled's panics on some corrupt files (sled#1533) as errors.
fn open_db_guarded(
    path: &Path,
    opts: &OutboxOptions,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Opened, OutboxError> {
    match catch_unwind(AssertUnwindSafe(|| open_db(path, opts, compressor))) {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_owned());
            Err(OutboxError::Store(sled::Error::ReportableBug(format!(
                "sled panicked at open: {what}"
            ))))
        }
    }
}

/// sled's file lock is released when the last reference to a `Db` goes; a handle dropped just
/// before (tests reopen, the store reopens after a write error) may hold it a moment longer.
/// Another process holding the store keeps failing with the lock error.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn is_lock_busy(e: &OutboxError) -> bool {
    matches!(e, OutboxError::Store(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
}

fn open_db_waiting_for_lock(
    path: &Path,
    opts: &OutboxOptions,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Opened, OutboxError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open_db_guarded(path, opts, compressor) {
            Err(e) if is_lock_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// A first seq above anything a lost store can have used when no `seq-marks` survive: the wall
/// clock in milliseconds × 1000. A store that itself started at such a base at time T and then
/// numbered fewer than a million records a second cannot have reached the base of a later time.
/// It stays below 2^53 (exact in a JavaScript number) until the year 2255.
pub fn wall_clock_seq_base(now: SystemTime) -> u64 {
    codec::millis(now).saturating_mul(1000)
}

/// Whether the storage directory held anything before this open (a state file, a store).
fn had_previous_state(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|mut entries| {
            entries.any(|e| {
                e.ok().is_some_and(|e| {
                    let p = e.path();
                    // An empty store directory is what a failed first start leaves: not state.
                    !(p.is_dir()
                        && fs::read_dir(&p)
                            .map(|mut d| d.next().is_none())
                            .unwrap_or(false))
                })
            })
        })
        .unwrap_or(false)
}

impl Store {
    /// Open (or create) the store under `dir` (`storage.path`).
    ///
    /// A store that cannot be opened (corrupt files, sled panics, I/O errors other than another
    /// process holding it) is moved aside to `outbox.corrupt-<unix ms>` and replaced by an empty
    /// one. A fresh store next to any previous state, or an unreadable `seq-marks`, is also a
    /// recovery. Each is returned as a [`Recovery`] (the daemon raises `store_recovered`), with
    /// numbering resumed above every seq the central post may have seen (module header).
    pub fn open(
        dir: &Path,
        opts: OutboxOptions,
        metrics: Metrics,
    ) -> Result<(Store, Option<Recovery>), OutboxError> {
        let previous_state = had_previous_state(dir);
        fs::create_dir_all(dir).map_err(dir_err(dir))?;
        let marks_file = marks::read(dir);
        let db_path = dir.join("outbox");
        let mut compressor = block::compressor().ok();
        let mut recovery: Option<(Option<PathBuf>, String, &str)> = None;
        let opened = match open_db_waiting_for_lock(&db_path, &opts, &mut compressor) {
            Ok(o) => o,
            Err(e) if is_lock_busy(&e) => return Err(e),
            Err(e) => {
                let millis = codec::millis(SystemTime::now());
                let moved_to = dir.join(format!("outbox.corrupt-{millis}"));
                fs::rename(&db_path, &moved_to).map_err(dir_err(&db_path))?;
                tracing::error!(error = %e, moved_to = %moved_to.display(), "outbox store unusable, moved aside; starting empty");
                recovery = Some((Some(moved_to), e.to_string(), "corrupt"));
                open_db_guarded(&db_path, &opts, &mut compressor)?
            }
        };
        let Opened {
            db,
            meta,
            mut streams,
            fresh,
        } = opened;
        let mut marks = SeqMarks::default();
        match &marks_file {
            MarksFile::Valid(m) => marks = *m,
            MarksFile::Missing => {}
            MarksFile::Unreadable(why) => {
                tracing::error!(path = %marks::path(dir).display(), reason = %why, "seq-marks unreadable");
                if recovery.is_none() && !fresh {
                    // The store is intact and knows its seqs: the file is rewritten below.
                    recovery = Some((
                        None,
                        format!("seq-marks unreadable ({why}); rewritten from the store"),
                        "marks",
                    ));
                }
            }
        }
        if fresh && recovery.is_none() && previous_state {
            let reason = match &marks_file {
                MarksFile::Valid(_) => "store missing".to_owned(),
                MarksFile::Missing => "store missing and seq-marks missing".to_owned(),
                MarksFile::Unreadable(why) => {
                    format!("store missing and seq-marks unreadable ({why})")
                }
            };
            tracing::error!(path = %db_path.display(), %reason, "outbox store lost; starting empty");
            recovery = Some((None, reason, "missing"));
        }
        if fresh {
            // A database this code never initialised: if anything existed before, resume above
            // every seq the central post may have seen (the marks' ceilings, or the wall clock
            // when no marks survive).
            let base = match (&marks_file, recovery.is_some()) {
                (MarksFile::Valid(_), _) | (_, false) => 0,
                (_, true) => wall_clock_seq_base(SystemTime::now()),
            };
            for s in streams.iter_mut() {
                let ceiling = marks.ceiling[stream_index(s.stream)].max(base);
                s.last_appended = s.last_appended.max(ceiling);
                s.durable = s.last_appended;
            }
            meta.insert("created", &codec::millis(SystemTime::now()).to_be_bytes())?;
            meta.insert(FORMAT_KEY, &[FORMAT])?;
        }
        for s in streams.iter_mut() {
            if s.hwm_written != s.last_appended {
                meta.insert(hwm_key(s.stream), &s.last_appended.to_be_bytes())?;
                s.hwm_written = s.last_appended;
            }
        }
        if let Some((_, _, label)) = &recovery {
            metrics
                .store_recoveries_total
                .with_label_values(&[label])
                .inc();
        }
        // The marks must cover what the store says (an unreadable or stale file is rewritten).
        let mut want = marks;
        for s in &streams {
            let c = &mut want.ceiling[stream_index(s.stream)];
            if *c < s.last_appended {
                *c = s.last_appended + marks::BLOCK;
            }
        }
        if want != marks || matches!(marks_file, MarksFile::Unreadable(_)) {
            marks::write(dir, &want).map_err(dir_err(dir))?;
            marks = want;
        }
        // Whatever sled recovered is on disk now; make it (and the meta above) durable before
        // treating it as stored.
        db.flush()?;
        let recovery = recovery.map(|(moved_to, reason, _)| Recovery {
            moved_to,
            reason,
            next_seq: STREAMS.map(|st| (st, streams[stream_index(st)].last_appended + 1)),
        });
        metrics
            .outbox_budget_bytes
            .set(super::clamp_i64(opts.max_bytes));
        let segment_size = segment_size_for(&db_path, opts.max_bytes) as u64;
        let mut store = Store {
            dir: dir.to_owned(),
            db_path,
            db,
            meta,
            opts,
            streams,
            marks,
            compressor,
            space: Space::default(),
            segment_size,
            storage_full: false,
            metrics,
        };
        store.measure();
        store.update_metrics();
        Ok((store, recovery))
    }

    /// The storage directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number a record and add it to its stream's open block (memory only). It becomes
    /// publishable after the next successful [`Store::flush`]. Fails only for a record too large
    /// to ever be published (permanent for that record; no seq is used).
    pub fn append(&mut self, body: &RecordBody) -> Result<u64, OutboxError> {
        let max = self.opts.max_record_bytes;
        let s = &mut self.streams[stream_index(body.stream())];
        let seq = s.last_appended + 1;
        let ts_ms = codec::millis(body.ts());
        // Seal the open block first if this record may not fit it.
        if !s.tail.is_empty()
            && (s.tail.body.len() + 1 + max.min(1024) > super::SEAL_BYTES
                || s.tail.len() >= super::SEAL_RECORDS)
        {
            Self::seal(s, &mut self.compressor);
        }
        let start = s.tail.body.len();
        s.tail.begin_record(seq, ts_ms);
        let json_start = s.tail.body.len();
        body.write_json_with_seq(seq, &mut s.tail.body);
        let size = s.tail.body.len() - json_start;
        if size > max {
            s.tail.abort_record(start);
            return Err(OutboxError::TooLarge { size, max });
        }
        s.tail.end_record();
        s.last_appended = seq;
        s.records += 1;
        let key = s.tail.first_seq;
        let m = s.blocks.entry(key).or_insert_with(|| {
            s.bytes += 8;
            BlockMeta {
                count: 0,
                bytes: 8,
                first_ts_ms: ts_ms,
            }
        });
        m.count += 1;
        // Raw size until the next flush encodes it: an upper bound for the budget.
        let estimate = 8 + block::HEADER_LEN as u64 + (s.tail.body.len() as u64) / 8;
        if estimate > m.bytes {
            s.bytes += estimate - m.bytes;
            m.bytes = estimate;
        }
        Ok(seq)
    }

    fn seal(s: &mut StreamState, compressor: &mut Option<zstd::bulk::Compressor<'static>>) {
        let key = s.tail.first_seq;
        let last = s.tail.last_seq();
        if s.acked.count_in(key, last) == s.tail.len() as u64 {
            // Every record already acknowledged: nothing to keep.
            s.drop_block(key);
            return;
        }
        let value = s.tail.encode(compressor.as_mut());
        if let Some(m) = s.blocks.get_mut(&key) {
            s.bytes = s.bytes + 8 + value.len() as u64 - m.bytes;
            m.bytes = 8 + value.len() as u64;
        }
        s.to_insert.insert(key, value);
        if s.cache.as_ref().is_some_and(|c| c.first_seq == key) {
            s.cache = None;
        }
        s.tail.clear();
        s.tail_flushed = 0;
    }

    /// Records appended but not yet made durable, all streams together (the worker stops taking
    /// appends while too many wait, so a failing disk pushes back on the devices).
    pub fn pending_records(&self) -> u64 {
        self.streams
            .iter()
            .map(|s| s.last_appended - s.durable)
            .sum()
    }

    /// Whether a flush has anything to do.
    pub fn needs_flush(&self) -> bool {
        self.streams.iter().any(|s| {
            s.last_appended > s.durable
                || !s.to_delete.is_empty()
                || !s.to_insert.is_empty()
                || s.acked_dirty
        })
    }

    /// Make everything appended, acknowledged and evicted so far durable (group commit): insert
    /// sealed blocks and the open block, apply deletions, persist `hwm/<stream>` and the ack
    /// sets, raise the `seq-marks` ceilings (fsynced first), then `Db::flush`. Only then the
    /// durable watermarks advance. On error nothing is forgotten: the next flush redoes it all.
    pub fn flush(&mut self) -> Result<bool, OutboxError> {
        if !self.needs_flush() {
            return Ok(false);
        }
        let mut new_marks = self.marks;
        for s in &self.streams {
            let c = &mut new_marks.ceiling[stream_index(s.stream)];
            if s.last_appended > *c {
                *c = s.last_appended + marks::BLOCK;
            }
        }
        if new_marks != self.marks {
            marks::write(&self.dir, &new_marks).map_err(dir_err(&self.dir))?;
            self.marks = new_marks;
        }
        let mut tail_values: [Option<Vec<u8>>; 3] = [None, None, None];
        for (i, s) in self.streams.iter_mut().enumerate() {
            let mut batch = sled::Batch::default();
            for (k, v) in &s.to_insert {
                batch.insert(&codec::key(*k), v.as_slice());
            }
            if !s.tail.is_empty() && s.tail.len() > s.tail_flushed {
                let v = s.tail.encode(self.compressor.as_mut());
                batch.insert(&codec::key(s.tail.first_seq), v.as_slice());
                tail_values[i] = Some(v);
            }
            for k in &s.to_delete {
                batch.remove(&codec::key(*k));
            }
            s.tree.apply_batch(batch)?;
            if s.last_appended > s.hwm_written {
                self.meta
                    .insert(hwm_key(s.stream), &s.last_appended.to_be_bytes())?;
            }
            if s.acked_dirty {
                if s.acked.spans() == 0 {
                    self.meta.remove(acked_key(s.stream))?;
                } else {
                    self.meta.insert(acked_key(s.stream), s.acked.encode())?;
                }
            }
        }
        self.db.flush()?;
        for (s, tail) in self.streams.iter_mut().zip(tail_values) {
            // A block read before its final version was inserted must be read again.
            if s.cache
                .as_ref()
                .is_some_and(|c| s.to_insert.contains_key(&c.first_seq))
            {
                s.cache = None;
            }
            s.to_insert.clear();
            s.to_delete.clear();
            s.acked_dirty = false;
            s.hwm_written = s.hwm_written.max(s.last_appended);
            s.durable = s.last_appended;
            if let Some(v) = tail {
                s.tail_flushed = s.tail.len();
                if let Some(m) = s.blocks.get_mut(&s.tail.first_seq) {
                    s.bytes = s.bytes + 8 + v.len() as u64 - m.bytes;
                    m.bytes = 8 + v.len() as u64;
                }
            }
        }
        self.update_metrics();
        Ok(true)
    }

    /// Drop the sled handle and open the database again (after a write error: sled refuses
    /// every later write once one failed). What sled had flushed is on disk; everything since is
    /// still pending in memory and the next flush writes it again.
    pub fn reopen(&mut self) -> Result<(), OutboxError> {
        let config = sled_config(&self.db_path, &self.opts);
        // Release the old handle (and its file lock) first: swap in a throwaway temporary db.
        let placeholder = sled::Config::new().temporary(true).open()?;
        let old = std::mem::replace(&mut self.db, placeholder);
        drop(old);
        let deadline = Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.meta = db.open_tree("meta")?;
        for s in self.streams.iter_mut() {
            s.tree = db.open_tree(tree_name(s.stream))?;
            s.hwm_written = 0;
            s.acked_dirty = true;
            s.tail_flushed = 0;
            s.cache = None;
        }
        self.db = db;
        Ok(())
    }

    /// Highest durable seq of a stream.
    pub fn durable_seq(&self, stream: Stream) -> u64 {
        self.streams[stream_index(stream)].durable
    }

    /// Seq of the oldest record still stored and not acknowledged in a stream, if any.
    pub fn first_stored(&self, stream: Stream) -> Option<u64> {
        self.streams[stream_index(stream)].first_stored()
    }

    /// Durable, unacknowledged records of `stream` with `from <= seq <= upto`, oldest first, at
    /// most `max_records` and as many as fit in `max_json_bytes` (record JSON plus one separator
    /// each), but at least one. `None` if there is no such record.
    pub fn read_batch(
        &mut self,
        stream: Stream,
        from: u64,
        upto: u64,
        max_json_bytes: usize,
        max_records: usize,
    ) -> Result<Option<Batch>, OutboxError> {
        let max_content = self.opts.max_block_content();
        let s = &mut self.streams[stream_index(stream)];
        let end = upto.min(s.durable);
        if end == 0 || from > end {
            return Ok(None);
        }
        let start_key = s
            .blocks
            .range(..=from)
            .next_back()
            .filter(|(k, m)| **k + u64::from(m.count) > from)
            .map(|(k, _)| *k)
            .unwrap_or(from);
        let keys: Vec<u64> = s.blocks.range(start_key..=end).map(|(k, _)| *k).collect();
        let mut out = Batch {
            stream,
            first_seq: 0,
            last_seq: 0,
            records: 0,
            body: Vec::new(),
            ends: Vec::new(),
        };
        'blocks: for key in keys {
            let owned;
            let recs: &Records = if s.tail.first_seq == key && !s.tail.is_empty() {
                &s.tail
            } else if s.cache.as_ref().is_some_and(|c| c.first_seq == key) {
                s.cache.as_ref().expect("checked")
            } else {
                let v = s
                    .tree
                    .get(codec::key(key))?
                    .ok_or(OutboxError::BadValue { stream, seq: key })?;
                owned = block::decode(key, &v, max_content)
                    .ok_or(OutboxError::BadValue { stream, seq: key })?;
                s.cache = Some(owned);
                s.cache.as_ref().expect("just set")
            };
            // Runs of unacknowledged records, each copied as one slice.
            let mut i = from.saturating_sub(key) as usize;
            while i < recs.len() {
                let seq = key + i as u64;
                if seq > end {
                    break 'blocks;
                }
                if s.acked.contains(seq) {
                    i += 1;
                    continue;
                }
                let size = recs.range(i).len() + 1;
                if out.records > 0
                    && (out.body.len() + size > max_json_bytes || out.records >= max_records)
                {
                    break 'blocks;
                }
                if out.records == 0 {
                    out.first_seq = seq;
                } else {
                    out.body.push(b',');
                }
                out.body.extend_from_slice(&recs.body[recs.range(i)]);
                out.ends.push(out.body.len() as u32);
                out.records += 1;
                out.last_seq = seq;
                i += 1;
            }
        }
        Ok((out.records > 0).then_some(out))
    }

    /// The broker acknowledged the records of `first..=last` of `stream` that a message carried:
    /// blocks wholly acknowledged are deleted at the next flush, a partly acknowledged one keeps
    /// its ack frontier. Returns how many stored records became acknowledged.
    pub fn ack(&mut self, stream: Stream, first: u64, last: u64) -> u64 {
        let s = &mut self.streams[stream_index(stream)];
        let last = last.min(s.durable);
        if first > last {
            return 0;
        }
        let start_key = s
            .blocks
            .range(..=first)
            .next_back()
            .map(|(k, _)| *k)
            .unwrap_or(first);
        let keys: Vec<(u64, u32)> = s
            .blocks
            .range(start_key..=last)
            .map(|(k, m)| (*k, m.count))
            .collect();
        let mut newly = 0;
        for (key, count) in keys {
            let block_last = key + u64::from(count) - 1;
            let (a, b) = (first.max(key), last.min(block_last));
            if a > b {
                continue;
            }
            let added = s.acked.insert(a, b);
            if added == 0 {
                continue;
            }
            newly += added;
            s.records -= added;
            s.acked_dirty = true;
            let is_tail = s.tail.first_seq == key && !s.tail.is_empty();
            // A block goes once all of it is acknowledged; the open block too, since every
            // record of it is then durable and nothing newer is in it.
            if s.acked.count_in(key, block_last) == u64::from(count)
                && (!is_tail || s.tail.len() as u64 == u64::from(count))
            {
                s.drop_block(key);
            }
        }
        self.metrics
            .published_records_total
            .with_label_values(&[stream.as_str()])
            .inc_by(newly);
        if newly > 0 {
            self.update_metrics();
        }
        newly
    }

    /// Evict the oldest block of `stream`; returns the unacknowledged ranges it held.
    fn evict_oldest(&mut self, stream: Stream, out: &mut Vec<Eviction>) -> u64 {
        let s = &mut self.streams[stream_index(stream)];
        let Some((&key, &m)) = s.blocks.iter().next() else {
            return 0;
        };
        let last = key + u64::from(m.count) - 1;
        let mut run: Option<(u64, u64)> = None;
        let push = |run: (u64, u64), out: &mut Vec<Eviction>| {
            // Consecutive blocks evicted together make one range.
            if let Some(prev) = out
                .last_mut()
                .filter(|e| e.stream == stream && e.last_seq + 1 == run.0)
            {
                prev.last_seq = run.1;
                prev.records += run.1 - run.0 + 1;
            } else {
                out.push(Eviction {
                    stream,
                    first_seq: run.0,
                    last_seq: run.1,
                    records: run.1 - run.0 + 1,
                });
            }
        };
        for seq in key..=last {
            if s.acked.contains(seq) {
                if let Some(r) = run.take() {
                    push(r, out);
                }
            } else {
                run = Some(run.map_or((seq, seq), |(a, _)| (a, seq)));
            }
        }
        if let Some(r) = run {
            push(r, out);
        }
        s.drop_block(key);
        m.bytes
    }

    /// Measure the files and the filesystem; returns the figures (also kept for [`Store::stats`]).
    pub fn measure(&mut self) -> Space {
        let disk = self.db.size_on_disk().unwrap_or(self.space.disk_bytes);
        let free = nix::sys::statvfs::statvfs(&self.dir)
            .map(|s| fs_bytes(s.blocks_available(), s.fragment_size()))
            .unwrap_or(u64::MAX);
        let room = disk.saturating_add(free.saturating_sub(self.reserve()));
        self.space = Space {
            disk_bytes: disk,
            fs_free_bytes: free,
            limit_bytes: self.opts.max_bytes.min(room),
        };
        self.space
    }

    /// Free space kept on the filesystem for what must still be written when it is full: the
    /// deletions of acknowledged blocks, events, command results (four sled segments).
    pub fn reserve(&self) -> u64 {
        4 * self.segment_size
    }

    /// Measure the store and evict if it is over its budget: telemetry oldest first; events and
    /// results only once no telemetry is left. Returns the evictions; each also appends an
    /// `outbox_evicted` event naming the stream and the seq range.
    ///
    /// The budget in force is `max_bytes`, or what the filesystem still has room for (its free
    /// space minus [`Store::reserve`]) when that is less: a full disk is an outage, not a data
    /// loss. Live block bytes are kept under a [`super::SPACE_AMPLIFICATION`]th of it (sled's
    /// log holds garbage until it cleans segments); if the files still pass 90 % of it, a further
    /// tenth of the live data goes. Nothing here scans sled: the block index is in memory.
    pub fn enforce_budget(&mut self) -> Vec<Eviction> {
        let previous = self.space.disk_bytes;
        let space = self.measure();
        let live: u64 = self.streams.iter().map(|s| s.bytes).sum();
        let live_budget = space.limit_bytes / super::SPACE_AMPLIFICATION;
        let mut to_free = live.saturating_sub(live_budget);
        if space.disk_bytes > space.limit_bytes / 10 * 9 && space.disk_bytes >= previous {
            to_free = to_free.max(live / 10);
        }
        let full = space.fs_free_bytes < 2 * self.reserve()
            || (space.limit_bytes < self.opts.max_bytes && to_free > 0);
        if full && !self.storage_full {
            tracing::error!(
                free_bytes = space.fs_free_bytes,
                store_bytes = space.disk_bytes,
                "storage full: the filesystem has no more room for the outbox; evicting telemetry"
            );
            self.storage_full = true;
            self.metrics.outbox_storage_full.set(1);
            let event = RecordBody::Event(Event {
                ts: SystemTime::now(),
                kind: "storage_full".into(),
                severity: Severity::Critical,
                source: "cabinetd".into(),
                message: format!(
                    "the filesystem of the outbox is full ({} bytes free, store {} bytes): oldest telemetry is evicted",
                    space.fs_free_bytes, space.disk_bytes
                ),
                data: serde_json::json!({"free_bytes": space.fs_free_bytes, "store_bytes": space.disk_bytes, "budget_bytes": self.opts.max_bytes}),
            });
            let _ = self.append(&event);
        } else if self.storage_full && !full && space.fs_free_bytes >= 4 * self.reserve() {
            tracing::warn!(free_bytes = space.fs_free_bytes, "storage has room again");
            self.storage_full = false;
            self.metrics.outbox_storage_full.set(0);
        }
        let mut evictions = Vec::new();
        for stream in [Stream::Telemetry, Stream::Events, Stream::Results] {
            while to_free > 0 {
                // Keep the events written for the evictions themselves.
                if stream != Stream::Telemetry
                    && self.streams[stream_index(stream)].blocks.len() <= 1
                {
                    break;
                }
                let freed = self.evict_oldest(stream, &mut evictions);
                if freed == 0 {
                    break;
                }
                to_free = to_free.saturating_sub(freed);
            }
        }
        for e in &evictions {
            self.metrics
                .evicted_records_total
                .with_label_values(&[e.stream.as_str()])
                .inc_by(e.records);
            tracing::warn!(stream = %e.stream, first_seq = e.first_seq, last_seq = e.last_seq, records = e.records, "outbox over budget: evicted oldest records");
            let event = RecordBody::Event(Event {
                ts: SystemTime::now(),
                kind: "outbox_evicted".into(),
                severity: Severity::Major,
                source: "cabinetd".into(),
                message: format!(
                    "outbox over budget: {} {} records {}..{} dropped unsent",
                    e.records, e.stream, e.first_seq, e.last_seq
                ),
                data: serde_json::json!({"stream": e.stream.as_str(), "first_seq": e.first_seq, "last_seq": e.last_seq}),
            });
            if let Err(err) = self.append(&event) {
                tracing::error!(error = %err, "cannot record an outbox_evicted event");
            }
        }
        self.update_metrics();
        evictions
    }

    /// Whether the filesystem is full (`storage_full` raised and not cleared).
    pub fn storage_full(&self) -> bool {
        self.storage_full
    }

    /// Figures for `/status`.
    pub fn stats(&self) -> OutboxStats {
        let now = codec::millis(SystemTime::now());
        OutboxStats {
            streams: self
                .streams
                .iter()
                .map(|s| StreamStats {
                    stream: s.stream,
                    records: s.records,
                    bytes: s.bytes,
                    oldest_age_seconds: s
                        .oldest_ts_ms()
                        .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                    last_seq: s.last_appended,
                    durable_seq: s.durable,
                    blocks: s.blocks.len() as u64,
                })
                .collect(),
            disk_bytes: self.space.disk_bytes,
            budget_bytes: self.opts.max_bytes,
            limit_bytes: self.space.limit_bytes,
            fs_free_bytes: self.space.fs_free_bytes,
            storage_full: self.storage_full,
            error: None,
        }
    }

    fn update_metrics(&self) {
        let m = &self.metrics;
        let mut oldest: Option<u64> = None;
        for s in &self.streams {
            m.outbox_records
                .with_label_values(&[s.stream.as_str()])
                .set(super::clamp_i64(s.records));
            if let Some(t) = s.oldest_ts_ms() {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        let age = oldest
            .map(|t| codec::millis(SystemTime::now()).saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        m.outbox_oldest_record_age_seconds.set(age);
        m.outbox_bytes.set(super::clamp_i64(self.space.disk_bytes));
    }
}
