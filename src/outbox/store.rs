//! The store itself: blocks in sled, owned by one thread (see the module header in
//! [`super`] for the layout and its invariants). Every method takes `&mut self`; nothing here
//! locks or awaits. Appends, acks and evictions only change memory; [`Store::flush`] is the one
//! place that writes sled (inserts, deletes, marks, then `Db::flush`), so a flush that fails
//! before sled was touched (the `seq-marks` file) leaves everything pending in memory and the
//! next one retries it whole. An error from sled itself is final for the process (sled refuses
//! every later write, and dropping its handle may then block for good): the store reports it and
//! is never written again ([`Store::is_dead`]).

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

/// How often a range of telemetry not stored (filesystem nearly full) is announced while the
/// filesystem stays nearly full.
pub const DROPPED_ANNOUNCE_EVERY: Duration = Duration::from_secs(60);

/// meta key of the layout version.
const FORMAT_KEY: &[u8] = b"format";
/// Layout version written in meta `format`.
pub const FORMAT: u8 = 2;

fn hwm_key(stream: Stream) -> Vec<u8> {
    format!("hwm/{}", stream.as_str()).into_bytes()
}

fn dropped_key(stream: Stream) -> Vec<u8> {
    format!("dropped/{}", stream.as_str()).into_bytes()
}

fn acked_key(stream: Stream) -> Vec<u8> {
    format!("acked/{}", stream.as_str()).into_bytes()
}

/// Name of a stream's block tree (v1 used the bare stream name, one record per key).
pub fn tree_name(stream: Stream) -> String {
    format!("blocks/{}", stream.as_str())
}

/// Name of a stream's tree of open-block chunks (the records of the block being filled, one
/// entry per group commit).
pub fn open_tree_name(stream: Stream) -> String {
    format!("open/{}", stream.as_str())
}

/// Whether an I/O error means the filesystem has no room (ENOSPC, EDQUOT).
fn is_no_room_io(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(c) if c == nix::libc::ENOSPC || c == nix::libc::EDQUOT)
}

/// Whether an outbox error means the filesystem has no room.
pub fn is_no_room(e: &OutboxError) -> bool {
    match e {
        OutboxError::Store(sled::Error::Io(io)) | OutboxError::Dir { source: io, .. } => {
            is_no_room_io(io)
        }
        _ => false,
    }
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
    /// Chunks of the open block (`open/<stream>`).
    open: sled::Tree,
    /// Highest seq assigned; the next record gets `last_appended + 1`.
    last_appended: u64,
    /// Highest seq covered by a completed flush.
    durable: u64,
    /// `hwm/<stream>` as last written.
    hwm_written: u64,
    /// Every block of the stream (in sled, waiting to be inserted, or the open tail), by key.
    blocks: BTreeMap<u64, BlockMeta>,
    /// The open block (all its records in memory; on disk as chunks in `open`).
    tail: Records,
    /// Records of the tail written as chunks by a successful flush.
    tail_flushed: usize,
    /// Keys and sizes (key + value) of the chunks that may hold records of the tail.
    tail_chunks: Vec<(u64, u64)>,
    /// Sealed blocks waiting for the next flush to insert them, with the keys of the chunks
    /// that held their records (deleted in the same flush, never before).
    to_insert: BTreeMap<u64, (Vec<u8>, Vec<u64>)>,
    /// Block keys to delete at the next flush.
    to_delete: Vec<u64>,
    /// Chunk keys to delete at the next flush: chunks of open blocks acknowledged or evicted
    /// whole, or left over by a crash.
    open_delete: Vec<u64>,
    acked: AckSet,
    acked_dirty: bool,
    /// Stored records not yet acknowledged.
    records: u64,
    /// Sum of `BlockMeta::bytes`.
    bytes: u64,
    /// The sealed block decompressed last (a batch rarely ends on a block boundary).
    cache: Option<Records>,
    /// Seqs numbered but not stored because the filesystem was full (telemetry only), not yet
    /// announced by an `outbox_evicted` event.
    /// (Disjoint ranges, in an [`AckSet`]: a stored record may separate two of them.)
    dropped: AckSet,
    /// When the oldest `dropped` range began.
    dropped_since: Option<Instant>,
    /// `dropped` changed since it was last written to meta `dropped/<stream>` (persisted with
    /// the `hwm` that covers it, so a restart announces it rather than leave an unexplained
    /// hole).
    dropped_dirty: bool,
    /// Records stored in memory since the last flush that wrote records.
    unflushed: u64,
}

impl StreamState {
    fn new(stream: Stream, tree: sled::Tree, open: sled::Tree) -> Self {
        StreamState {
            stream,
            tree,
            open,
            last_appended: 0,
            durable: 0,
            hwm_written: 0,
            blocks: BTreeMap::new(),
            tail: Records::default(),
            tail_flushed: 0,
            tail_chunks: Vec::new(),
            to_insert: BTreeMap::new(),
            to_delete: Vec::new(),
            open_delete: Vec::new(),
            acked: AckSet::default(),
            acked_dirty: false,
            records: 0,
            bytes: 0,
            cache: None,
            dropped: AckSet::default(),
            dropped_since: None,
            dropped_dirty: false,
            unflushed: 0,
        }
    }

    fn has_tail(&self) -> bool {
        !self.tail.is_empty()
    }

    /// Index a block found at open, with the acknowledgements inside it.
    fn add_recovered(&mut self, key: u64, m: BlockMeta, acked: &AckSet) {
        let last = key + u64::from(m.count) - 1;
        let done = acked.count_in(key, last);
        if done > 0 {
            for a in key..=last {
                if acked.contains(a) {
                    self.acked.insert(a, a);
                }
            }
        }
        self.records += u64::from(m.count) - done;
        self.bytes += m.bytes;
        self.blocks.insert(key, m);
    }

    /// A run of chunk records found at open that is not the tail: stored as a sealed block by
    /// the first flush.
    fn recover_sealed(
        &mut self,
        run: Records,
        chunks: Vec<u64>,
        acked: &AckSet,
        compressor: Option<&mut zstd::bulk::Compressor<'static>>,
    ) {
        let value = run.encode(compressor);
        let m = BlockMeta {
            count: run.len() as u32,
            bytes: 8 + value.len() as u64,
            first_ts_ms: run.first_ts_ms,
        };
        self.add_recovered(run.first_seq, m, acked);
        self.to_insert.insert(run.first_seq, (value, chunks));
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
        if self.has_tail() && self.tail.first_seq == key {
            // The open block: its chunks go.
            self.open_delete
                .extend(self.tail_chunks.drain(..).map(|(k, _)| k));
            self.tail.clear();
            self.tail_flushed = 0;
        } else {
            // A sealed block, in sled or still waiting to be inserted (then it never reaches
            // sled, its chunks go; deleting its key anyway costs a few bytes).
            if let Some((_, chunks)) = self.to_insert.remove(&key) {
                self.open_delete.extend(chunks);
            }
            self.to_delete.push(key);
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

/// How close the filesystem is to full, from its free space at each group commit (see
/// [`Store::reserve`]). sled cannot survive running out of space (module header), so the store
/// stops writing before it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pressure {
    /// Room enough.
    Normal,
    /// Less than the reserve is free: new telemetry is numbered but not stored (announced as
    /// evicted); events, results, acknowledgements and evictions still are.
    Hard,
    /// Less than a quarter of the reserve: nothing is written at all (sled's log takes room
    /// even for a deletion). Acknowledgements are kept in memory (the records are not sent
    /// again while the process runs), new events and results wait in memory.
    Floor,
}

/// The outbox store (one per process: sled allows one open `Db` per path).
pub struct Store {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    opts: OutboxOptions,
    streams: [StreamState; 3],
    marks: SeqMarks,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    space: Space,
    segment_size: u64,
    storage_full: bool,
    pressure: Pressure,
    /// sled returned an error: nothing is written any more (the process must restart).
    dead: Option<String>,
    /// Test hooks: a fixed free-space figure instead of the filesystem's, and a number of
    /// flushes to fail (before anything is written) as if the disk refused them.
    free_override: Option<u64>,
    fail_flushes: u32,
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

/// Remove the snapshot files sled left half-written (`snap.<lsn>.generating`: a crash or a full
/// disk while it wrote one). sled writes a snapshot under that name, fsyncs, then renames it, so
/// such a file is never a complete snapshot; but sled's open takes the last `snap.*` file by name
/// and, finding it truncated, reports the whole store corrupt (sled#1527; seen here after ENOSPC
/// during an open). Only done while holding sled's own lock (`flock` on `db`), so a store another
/// process has open is left alone.
fn remove_partial_snapshots(path: &Path) {
    let Ok(db) = fs::File::open(path.join("db")) else {
        return;
    };
    let Ok(_lock) = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusiveNonblock) else {
        return;
    };
    let Ok(entries) = fs::read_dir(path) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %e.path().display(), "removing a snapshot sled left half-written");
            let _ = fs::remove_file(e.path());
        }
    }
}

fn open_db(
    path: &Path,
    opts: &OutboxOptions,
    compressor: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Opened, OutboxError> {
    remove_partial_snapshots(path);
    let db = sled_config(path, opts).open()?;
    let meta = db.open_tree("meta")?;
    let fresh = meta.get("created")?.is_none();
    if migrate_v1(&db, &meta, compressor)? {
        tracing::info!(path = %path.display(), "outbox store converted from layout 1 (one key per record) to blocks");
    }
    let mut states = Vec::with_capacity(3);
    for stream in STREAMS {
        let mut s = StreamState::new(
            stream,
            db.open_tree(tree_name(stream))?,
            db.open_tree(open_tree_name(stream))?,
        );
        let hwm = read_u64(meta.get(hwm_key(stream))?);
        let acked = match meta.get(acked_key(stream))? {
            Some(v) => AckSet::decode(&v).ok_or(OutboxError::BadValue { stream, seq: 0 })?,
            None => AckSet::default(),
        };
        // A range not stored while the filesystem was full, not yet announced: announced now.
        if let Some(v) = meta.get(dropped_key(stream))? {
            s.dropped = AckSet::decode(&v).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            s.dropped_since = Instant::now().checked_sub(DROPPED_ANNOUNCE_EVERY);
        }
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
            s.add_recovered(
                seq,
                BlockMeta {
                    count: h.count,
                    bytes: (k.len() + v.len()) as u64,
                    first_ts_ms: h.first_ts_ms,
                },
                &acked,
            );
            last_key = last;
        }
        // The open block's chunks. A crash between inserting a sealed block and deleting its
        // chunks leaves both: records already in a block are dropped from the chunks. Runs of
        // consecutive records become the tail; a run broken by a gap is sealed.
        let mut tail = Records::default();
        let mut tail_chunks: Vec<(u64, u64)> = Vec::new();
        for item in s.open.iter() {
            let (k, v) = item?;
            let seq = codec::seq_of(&k).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            let mut chunk = block::decode(seq, &v, opts.max_block_content())
                .ok_or(OutboxError::BadValue { stream, seq })?;
            let covered = if tail.is_empty() {
                last_key
            } else {
                tail.last_seq()
            };
            chunk.drop_before(covered + 1);
            if chunk.is_empty() {
                s.open_delete.push(seq);
                continue;
            }
            if !tail.is_empty() && chunk.first_seq != tail.last_seq() + 1 {
                let run = std::mem::take(&mut tail);
                let keys = tail_chunks.drain(..).map(|c| c.0).collect();
                s.recover_sealed(run, keys, &acked, compressor.as_mut());
            }
            tail.extend_from(&chunk);
            tail_chunks.push((seq, (k.len() + v.len()) as u64));
        }
        if !tail.is_empty() {
            last_key = last_key.max(tail.last_seq());
            let count = tail.len() as u32;
            let first_ts_ms = tail.first_ts_ms;
            let key = tail.first_seq;
            s.tail = tail;
            // Written again as one chunk by the first flush, which deletes these in the same
            // batch.
            s.tail_flushed = 0;
            let bytes = tail_chunks.iter().map(|c| c.1).sum();
            s.tail_chunks = tail_chunks;
            s.add_recovered(
                key,
                BlockMeta {
                    count,
                    bytes,
                    first_ts_ms,
                },
                &acked,
            );
        }
        for (&k, m) in &s.blocks {
            last_key = last_key.max(k + u64::from(m.count) - 1);
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

/// Whether opening failed because another handle (another process) holds the store.
pub(crate) fn is_lock_busy(e: &OutboxError) -> bool {
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
pub fn had_previous_state(dir: &Path) -> bool {
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
        let previous_state = opts.earlier_run.unwrap_or_else(|| had_previous_state(dir));
        fs::create_dir_all(dir).map_err(dir_err(dir))?;
        let marks_file = marks::read(dir);
        let db_path = dir.join("outbox");
        let mut compressor = block::compressor().ok();
        let mut recovery: Option<(Option<PathBuf>, String, &str)> = None;
        // sled writes `conf` first: without it nothing was ever stored here.
        let existed = db_path.join("conf").exists();
        let opened = match open_db_waiting_for_lock(&db_path, &opts, &mut compressor) {
            Ok(o) => o,
            Err(e) if is_lock_busy(&e) => return Err(e),
            Err(e) if !existed => {
                // Created by this very attempt (a new store, or the retry of one that failed):
                // nothing to keep, and moving it aside at every retry would pile them up.
                let _ = fs::remove_dir_all(&db_path);
                return Err(e);
            }
            // A full filesystem is not a corrupt store: moving it aside would not make room and
            // would shelve its backlog. The caller runs without a store and tries again.
            Err(e) if is_no_room(&e) => return Err(e),
            Err(e) => {
                let millis = codec::millis(SystemTime::now());
                let moved_to = dir.join(format!("outbox.corrupt-{millis}"));
                fs::rename(&db_path, &moved_to).map_err(dir_err(&db_path))?;
                tracing::error!(error = %e, moved_to = %moved_to.display(), "outbox store unusable, moved aside; starting empty");
                recovery = Some((Some(moved_to), e.to_string(), "corrupt"));
                match open_db_guarded(&db_path, &opts, &mut compressor) {
                    Ok(o) => o,
                    Err(e) => {
                        // What the failed attempt left holds nothing: the next attempt starts
                        // from scratch rather than moving it aside again.
                        let _ = fs::remove_dir_all(&db_path);
                        return Err(e);
                    }
                }
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
        // Whatever sled recovered is on disk now; make it (and the meta above) durable before
        // treating it as stored.
        db.flush()?;
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
        if let Some((_, _, label)) = &recovery {
            metrics
                .store_recoveries_total
                .with_label_values(&[label])
                .inc();
        }
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
            db,
            meta,
            opts,
            streams,
            marks,
            compressor,
            space: Space::default(),
            segment_size,
            storage_full: false,
            pressure: Pressure::Normal,
            dead: None,
            free_override: None,
            fail_flushes: 0,
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
    ///
    /// Under [`Pressure::Hard`] a telemetry record is numbered but not stored: its seq joins a
    /// range announced by the next [`Store::enforce_budget`] as evicted (`outbox_evicted`), so the
    /// central post sees the hole and knows why.
    pub fn append(&mut self, body: &RecordBody) -> Result<u64, OutboxError> {
        let max = self.opts.max_record_bytes;
        let stream = body.stream();
        let s = &mut self.streams[stream_index(stream)];
        let seq = s.last_appended + 1;
        if self.pressure >= Pressure::Hard && stream == Stream::Telemetry {
            s.last_appended = seq;
            s.dropped.insert(seq, seq);
            s.dropped_since.get_or_insert_with(Instant::now);
            s.dropped_dirty = true;
            return Ok(seq);
        }
        let ts_ms = codec::millis(body.ts());
        // Seal the open block first if this record may not fit it, or would not follow it (a
        // hole of records dropped while the filesystem was full).
        if s.has_tail()
            && (s.tail.body.len() + 1 + max.min(1024) > super::SEAL_BYTES
                || s.tail.len() >= super::SEAL_RECORDS
                || s.tail.last_seq() + 1 != seq)
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
        s.unflushed += 1;
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
        // The chunks written so far plus the raw size of the rest: an upper bound for the
        // budget until the block is sealed.
        let written: u64 = s.tail_chunks.iter().map(|c| c.1).sum();
        let unwritten =
            s.tail.body.len() - s.tail.range(s.tail_flushed.min(s.tail.len() - 1)).start;
        let estimate = 8 + written + unwritten as u64;
        s.bytes = s.bytes + estimate - m.bytes;
        m.bytes = estimate;
        Ok(seq)
    }

    /// Close the open block: encoded whole (compressed) for the next flush to insert in
    /// `blocks/<stream>`, in the same flush that deletes its chunks.
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
        let chunks = s.tail_chunks.drain(..).map(|(k, _)| k).collect();
        s.to_insert.insert(key, (value, chunks));
        if s.cache.as_ref().is_some_and(|c| c.first_seq == key) {
            s.cache = None;
        }
        s.tail.clear();
        s.tail_flushed = 0;
    }

    /// Records stored in memory but not yet made durable, all streams together (the worker stops
    /// taking appends while too many wait, so a failing disk pushes back on the devices).
    pub fn pending_records(&self) -> u64 {
        self.streams.iter().map(|s| s.unflushed).sum()
    }

    /// Whether a flush has anything to do.
    pub fn needs_flush(&self) -> bool {
        self.dead.is_none()
            && self.streams.iter().any(|s| {
                s.last_appended > s.durable
                    || !s.to_delete.is_empty()
                    || !s.to_insert.is_empty()
                    || !s.open_delete.is_empty()
                    || s.tail_flushed < s.tail.len()
                    || s.acked_dirty
                    || s.dropped_dirty
            })
    }

    /// Free bytes on the store's filesystem for an unprivileged writer.
    fn free_bytes(&self) -> u64 {
        self.free_override.unwrap_or_else(|| {
            nix::sys::statvfs::statvfs(&self.dir)
                .map(|s| fs_bytes(s.blocks_available(), s.fragment_size()))
                .unwrap_or(u64::MAX)
        })
    }

    /// Update [`Store::pressure`] from the free space (with some hysteresis on the way back).
    fn update_pressure(&mut self, free: u64) {
        let reserve = self.reserve();
        let next = if free < reserve / 4 {
            Pressure::Floor
        } else if free < reserve
            || (self.pressure >= Pressure::Hard && free < reserve + reserve / 4)
        {
            Pressure::Hard
        } else {
            Pressure::Normal
        };
        if next != self.pressure {
            match next {
                Pressure::Normal => {
                    tracing::warn!(
                        free_bytes = free,
                        "outbox filesystem has room again: telemetry is stored again"
                    )
                }
                Pressure::Hard => {
                    tracing::error!(free_bytes = free, reserve_bytes = reserve, "outbox filesystem nearly full: new telemetry is not stored (announced as evicted); events, results and acknowledgements use the reserve")
                }
                Pressure::Floor => {
                    tracing::error!(free_bytes = free, reserve_bytes = reserve, "outbox filesystem full: only acknowledgements and deletions are written; events and results wait in memory")
                }
            }
            self.pressure = next;
        }
    }

    /// How close the filesystem is to full, as of the last flush or budget check.
    pub fn pressure(&self) -> Pressure {
        self.pressure
    }

    /// Make everything appended, acknowledged and evicted so far durable (group commit): insert
    /// sealed blocks, write the new records of each open block as one chunk, apply deletions,
    /// persist `hwm/<stream>` and the ack sets, raise the `seq-marks` ceilings (fsynced first),
    /// then `Db::flush`. Only then the durable watermarks advance. Returns whether they did.
    ///
    /// Under [`Pressure::Floor`] nothing is written: records, deletions and acknowledgements
    /// wait in memory until the filesystem has room. A failure before sled is written (the `seq-marks` file) forgets nothing: the next flush
    /// redoes it all. A failure of sled itself is final ([`Store::is_dead`]).
    pub fn flush(&mut self) -> Result<bool, OutboxError> {
        if let Some(why) = &self.dead {
            return Err(OutboxError::Dead(why.clone()));
        }
        // Measured at every group commit, idle or not (one statvfs): the pressure decides what
        // the next appends do.
        let free = self.free_bytes();
        self.update_pressure(free);
        if !self.needs_flush() {
            return Ok(false);
        }
        if self.fail_flushes > 0 {
            self.fail_flushes -= 1;
            self.pressure = Pressure::Floor;
            return Err(OutboxError::Dir {
                path: self.dir.clone(),
                source: std::io::Error::from_raw_os_error(nix::libc::ENOSPC),
            });
        }
        if self.pressure >= Pressure::Floor {
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
            if let Err(e) = marks::write(&self.dir, &new_marks) {
                let e = dir_err(&self.dir)(e);
                if is_no_room(&e) {
                    // Until the next flush measures again, behave as on a full disk.
                    self.pressure = Pressure::Floor;
                }
                return Err(e);
            }
            self.marks = new_marks;
        }
        match self.write() {
            Ok(advanced) => {
                self.update_metrics();
                Ok(advanced)
            }
            Err(e) => {
                let why = e.to_string();
                tracing::error!(error = %why, "outbox store failed: sled refuses every write from now on");
                self.dead = Some(why.clone());
                Err(OutboxError::Dead(why))
            }
        }
    }

    /// The sled part of [`Store::flush`]: blocks first, then chunks (their deletion never
    /// reaches the log before the block that replaces them), then meta, then `Db::flush`.
    fn write(&mut self) -> Result<bool, OutboxError> {
        let mut chunks: [Option<(u64, u64)>; 3] = [None; 3];
        for (i, s) in self.streams.iter_mut().enumerate() {
            let mut batch = sled::Batch::default();
            for (k, (v, _)) in &s.to_insert {
                batch.insert(&codec::key(*k), v.as_slice());
            }
            for k in &s.to_delete {
                batch.remove(&codec::key(*k));
            }
            s.tree.apply_batch(batch)?;
            let mut batch = sled::Batch::default();
            for k in s
                .open_delete
                .iter()
                .chain(s.to_insert.values().flat_map(|v| &v.1))
            {
                batch.remove(&codec::key(*k));
            }
            if s.tail_flushed < s.tail.len() {
                let key = s.tail.first_seq + s.tail_flushed as u64;
                if s.tail_flushed == 0 {
                    // Chunks recovered at open hold the same records: replaced by this one.
                    for (k, _) in s.tail_chunks.drain(..) {
                        batch.remove(&codec::key(k));
                    }
                }
                let v = s.tail.encode_range(
                    s.tail_flushed,
                    s.tail.len(),
                    s.tail.first_ts_ms,
                    self.compressor.as_mut(),
                );
                chunks[i] = Some((key, 8 + v.len() as u64));
                // Known before it is written: a failed flush may have left it in sled.
                if !s.tail_chunks.iter().any(|c| c.0 == key) {
                    s.tail_chunks.push((key, 0));
                }
                batch.insert(&codec::key(key), v);
            }
            s.open.apply_batch(batch)?;
            if s.last_appended > s.hwm_written {
                self.meta
                    .insert(hwm_key(s.stream), &s.last_appended.to_be_bytes())?;
            }
            if s.dropped_dirty {
                if s.dropped.spans() == 0 {
                    self.meta.remove(dropped_key(s.stream))?;
                } else {
                    self.meta
                        .insert(dropped_key(s.stream), s.dropped.encode())?;
                }
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
        let mut advanced = false;
        for (s, chunk) in self.streams.iter_mut().zip(chunks) {
            // A block read before its final version was inserted must be read again.
            if s.cache
                .as_ref()
                .is_some_and(|c| s.to_insert.contains_key(&c.first_seq))
            {
                s.cache = None;
            }
            s.to_insert.clear();
            s.to_delete.clear();
            s.open_delete.clear();
            s.acked_dirty = false;
            s.dropped_dirty = false;
            s.unflushed = 0;
            s.hwm_written = s.hwm_written.max(s.last_appended);
            advanced |= s.durable != s.last_appended;
            s.durable = s.last_appended;
            if let Some((key, bytes)) = chunk {
                s.tail_flushed = s.tail.len();
                if let Some(c) = s.tail_chunks.iter_mut().find(|c| c.0 == key) {
                    c.1 = bytes;
                }
                let written: u64 = s.tail_chunks.iter().map(|c| c.1).sum();
                if let Some(m) = s.blocks.get_mut(&s.tail.first_seq) {
                    s.bytes = s.bytes + written - m.bytes;
                    m.bytes = written;
                }
            }
        }
        Ok(advanced)
    }

    /// Telemetry numbered but not stored (filesystem nearly full) and not yet announced: the
    /// next [`Store::enforce_budget`] with room announces it.
    pub fn pending_dropped(&self, stream: Stream) -> Vec<(u64, u64)> {
        self.streams[stream_index(stream)].dropped.iter().collect()
    }

    /// Why sled failed, once it has: the store writes nothing more and the process must
    /// restart to use it again.
    pub fn is_dead(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// Test hook: take `free` as the filesystem's free bytes instead of asking it (`None`: ask).
    #[doc(hidden)]
    pub fn set_free_bytes_for_test(&mut self, free: Option<u64>) {
        self.free_override = free;
    }

    /// Test hook: the next `n` flushes fail before writing anything, as when the `seq-marks`
    /// file cannot be written (ENOSPC).
    #[doc(hidden)]
    pub fn fail_flushes_for_test(&mut self, n: u32) {
        self.fail_flushes = n;
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
                // A block sealed since the last flush is not in sled yet (its durable records
                // are in chunks until that flush).
                owned = match s.to_insert.get(&key) {
                    Some((v, _)) => block::decode(key, v, max_content),
                    None => {
                        let v = s
                            .tree
                            .get(codec::key(key))?
                            .ok_or(OutboxError::BadValue { stream, seq: key })?;
                        block::decode(key, &v, max_content)
                    }
                }
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
        let free = self.free_bytes();
        let room = disk.saturating_add(free.saturating_sub(self.reserve()));
        self.space = Space {
            disk_bytes: disk,
            fs_free_bytes: free,
            limit_bytes: self.opts.max_bytes.min(room),
        };
        self.space
    }

    /// Free space kept on the filesystem for what must still be written when it is full: the
    /// deletions of acknowledged blocks, events, command results (four sled segments). Below it
    /// the store is under [`Pressure::Hard`], below a quarter of it [`Pressure::Floor`].
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
    ///
    /// Telemetry numbered but not stored under [`Pressure::Hard`] is announced here too.
    pub fn enforce_budget(&mut self) -> Vec<Eviction> {
        if self.dead.is_some() {
            return Vec::new();
        }
        let previous = self.space.disk_bytes;
        let space = self.measure();
        self.update_pressure(space.fs_free_bytes);
        let live: u64 = self.streams.iter().map(|s| s.bytes).sum();
        let live_budget = space.limit_bytes / super::SPACE_AMPLIFICATION;
        let mut to_free = live.saturating_sub(live_budget);
        if space.disk_bytes > space.limit_bytes / 10 * 9 && space.disk_bytes >= previous {
            to_free = to_free.max(live / 10);
        }
        let reserve = self.reserve();
        // The filesystem cannot give the configured budget and the store uses what it can.
        let limited =
            space.limit_bytes < self.opts.max_bytes && live * 10 >= live_budget.max(1) * 9;
        let full = space.fs_free_bytes < 2 * reserve || self.pressure >= Pressure::Hard || limited;
        // Cleared only well clear of it, so it does not flap while an outage fills the room.
        let clear = self.pressure == Pressure::Normal
            && space.fs_free_bytes >= 3 * reserve
            && !(space.limit_bytes < self.opts.max_bytes && live * 2 >= live_budget);
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
                kind: crate::event::EventKind::StorageFull,
                severity: Severity::Critical,
                source: "cabinetd".into(),
                message: format!(
                    "the filesystem of the outbox is full ({} bytes free, store {} bytes): oldest telemetry is evicted, and new telemetry is not stored while less than {reserve} bytes are free (both announced by outbox_evicted)",
                    space.fs_free_bytes, space.disk_bytes
                ),
                data: serde_json::json!({"free_bytes": space.fs_free_bytes, "store_bytes": space.disk_bytes, "budget_bytes": self.opts.max_bytes, "reserve_bytes": reserve}),
            });
            let _ = self.append(&event);
        } else if self.storage_full && clear {
            tracing::warn!(free_bytes = space.fs_free_bytes, "storage has room again");
            self.storage_full = false;
            self.metrics.outbox_storage_full.set(0);
        }
        // Evicting costs writes (deletions in sled's log) before it gives room back: only with
        // room to spare. Nearer full, new telemetry is not stored instead (see `append`).
        if self.pressure != Pressure::Normal {
            to_free = 0;
        }
        let mut evictions = Vec::new();
        let mut dropped = Vec::new();
        let pressure = self.pressure;
        for s in self.streams.iter_mut() {
            // Announced once the filesystem has room again, or every minute while it is
            // nearly full; never while nothing can be written.
            let due = match (pressure, s.dropped_since) {
                (Pressure::Normal, _) => true,
                (Pressure::Hard, Some(since)) => since.elapsed() >= DROPPED_ANNOUNCE_EVERY,
                _ => false,
            };
            if !due {
                continue;
            }
            s.dropped_since = None;
            let ranges = std::mem::take(&mut s.dropped);
            for (first, last) in ranges.iter() {
                s.dropped_dirty = true;
                dropped.push(Eviction {
                    stream: s.stream,
                    first_seq: first,
                    last_seq: last,
                    records: last - first + 1,
                });
            }
        }
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
        let announced: Vec<(Eviction, bool)> = dropped
            .iter()
            .map(|e| (*e, true))
            .chain(evictions.iter().map(|e| (*e, false)))
            .collect();
        for (e, not_stored) in announced {
            self.metrics
                .evicted_records_total
                .with_label_values(&[e.stream.as_str()])
                .inc_by(e.records);
            let (reason, what) = if not_stored {
                tracing::warn!(stream = %e.stream, first_seq = e.first_seq, last_seq = e.last_seq, records = e.records, "outbox filesystem full: records not stored");
                ("storage_full", "filesystem full: not stored")
            } else {
                tracing::warn!(stream = %e.stream, first_seq = e.first_seq, last_seq = e.last_seq, records = e.records, "outbox over budget: evicted oldest records");
                ("budget", "outbox over budget")
            };
            let event = RecordBody::Event(Event {
                ts: SystemTime::now(),
                kind: crate::event::EventKind::OutboxEvicted,
                severity: Severity::Major,
                source: "cabinetd".into(),
                message: format!(
                    "{what}: {} {} records {}..{} dropped unsent",
                    e.records, e.stream, e.first_seq, e.last_seq
                ),
                data: serde_json::json!({"stream": e.stream.as_str(), "first_seq": e.first_seq, "last_seq": e.last_seq, "records": e.records, "reason": reason}),
            });
            if let Err(err) = self.append(&event) {
                tracing::error!(error = %err, "cannot record an outbox_evicted event");
            }
        }
        dropped.extend(evictions);
        let evictions = dropped;
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
            available: true,
            held_records: 0,
            error: self.dead.clone(),
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
