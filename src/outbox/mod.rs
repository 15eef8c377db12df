//! The durable outbox: numbers records per stream and keeps them in sled until the broker
//! acknowledged the message that carried them.
//!
//! # On-disk layout (`storage.path`)
//! - `outbox/`: the sled database (`cache_capacity` 16 MiB, background flusher off; we flush).
//!   - trees `telemetry`, `events`, `results`: one per [`Stream`]. Key = `seq` as big-endian
//!     `u64` (byte order = seq order = FIFO). Value = `[version = 1][ts_ms: u64 BE][record JSON
//!     with its seq]` ([`codec`]); `ts_ms` is the acquisition time, kept outside the JSON so the
//!     oldest-record age needs no parsing; the JSON is spliced verbatim into MQTT envelopes.
//!   - tree `meta`: `hwm/<stream>` = highest seq ever assigned and flushed (BE u64);
//!     `created` = marks a database this code initialised.
//! - `seq-marks`: per-stream seq ceilings outside sled ([`marks`]), for when sled is lost.
//! - `outbox.corrupt-<unix ms>/`: a store that could not be opened, moved aside and kept.
//!
//! # Invariants
//! - `seq` per stream starts at 1 and increases by exactly 1 per appended record. At open,
//!   `next = max(last key, hwm) + 1`; sled's `generate_id` is never used (not contiguous).
//!   A fresh database next to an existing `seq-marks` file resumes above the marks' ceiling.
//! - Group commit: [`Outbox::append`] only inserts; a record is *stored* once a later
//!   [`Outbox::flush`] (`flush_async`, run by [`Outbox::run_flusher`] every
//!   `storage.flush_interval` or after [`OutboxOptions::flush_after_records`] appends) completed.
//!   Each flush first persists `hwm/<stream>` (same sled log, so it is durable together with the
//!   records) and, when needed, raises the `seq-marks` ceiling (fsynced *before* the flush).
//!   Only then the per-stream *durable* watermark advances; [`Outbox::read_batch`] never returns a
//!   record above it, so nothing unflushed is ever published.
//! - Delete only after ack: records leave only through [`Outbox::ack`] (the uplink calls it after
//!   the PUBACK of the message that carried them) or budget eviction ([`Outbox::enforce_budget`]),
//!   each as one `apply_batch`. Deletions are flushed lazily: a crash may resend acknowledged
//!   records (duplicates, removed by the central post by `(cabinet, stream, seq)`), never lose one.
//!   Because `hwm` was flushed with the records, deleting them can never let a seq be reused.
//! - Counters (records, bytes per stream, oldest ts) are kept in memory (`Tree::len` is O(n)),
//!   rebuilt by one scan at open.
//! - Budget: when the store exceeds `storage.max_bytes`, telemetry is evicted oldest first;
//!   events and results only once no telemetry is left. Each eviction appends an
//!   `outbox_evicted` event naming the stream and seq range.

pub mod codec;
pub mod cursor;
pub mod marks;

use std::fs;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::config::{StorageConfig, UplinkConfig};
use crate::metrics::Metrics;
use crate::record::{Event, RecordBody, Severity, Stream};

pub use cursor::SendCursors;
pub use marks::SeqMarks;

/// The streams in tree index order (see [`stream_index`]).
pub const STREAMS: [Stream; 3] = [Stream::Telemetry, Stream::Events, Stream::Results];

/// Index of a stream in per-stream arrays.
pub fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Telemetry => 0,
        Stream::Events => 1,
        Stream::Results => 2,
    }
}

/// Bytes kept free in a message for the envelope around the records (cabinet id ≤ 64 chars).
pub const ENVELOPE_ROOM: usize = 256;
/// Cache of the sled page cache: sled's 1 GiB default is far too much for a cabinet.
pub const CACHE_CAPACITY: u64 = 16 * 1024 * 1024;
/// How far `size_on_disk` may exceed the live data before sled reclaims space (measured 3–4×):
/// the live bytes are kept under `max_bytes / SPACE_AMPLIFICATION` so the files stay in budget.
pub const SPACE_AMPLIFICATION: u64 = 4;

/// Errors of the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed (I/O underneath, or a bug). Transient for writes; at open see [`Recovery`].
    #[error("outbox store: {0}")]
    Store(#[from] sled::Error),
    /// The storage directory or the seq-marks file could not be read or written.
    #[error("outbox directory {path}: {source}")]
    Dir {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A record too large to ever fit in a message (permanent for that record).
    #[error("record of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit ([`OutboxOptions::max_record_bytes`]).
        max: usize,
    },
    /// A stored value has an unknown format (corruption).
    #[error("{stream} record {seq} has an unknown encoding")]
    BadValue {
        /// Stream.
        stream: Stream,
        /// Seq of the bad value.
        seq: u64,
    },
}

impl OutboxError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OutboxError::Store(_) | OutboxError::Dir { .. })
    }
}

fn dir_err(path: &Path) -> impl FnOnce(io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Dir {
        path: path.to_owned(),
        source,
    }
}

/// Tuning of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxOptions {
    /// Hard budget of the store on disk (`storage.max_bytes`).
    pub max_bytes: u64,
    /// Largest encoded record accepted (must fit a message with its envelope).
    pub max_record_bytes: usize,
    /// Wake the flusher early once this many records wait for a flush.
    pub flush_after_records: usize,
    /// sled page cache size.
    pub cache_capacity: u64,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            max_bytes: crate::config::DEFAULT_STORAGE_MAX_BYTES,
            max_record_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES - ENVELOPE_ROOM,
            flush_after_records: 1000,
            cache_capacity: CACHE_CAPACITY,
        }
    }
}

impl OutboxOptions {
    /// Options for a configuration: budget from `[storage]`, record limit from the uplink's
    /// message size.
    pub fn from_config(storage: &StorageConfig, uplink: &UplinkConfig) -> Self {
        OutboxOptions {
            max_bytes: storage.max_bytes,
            max_record_bytes: uplink
                .max_message_bytes
                .saturating_sub(ENVELOPE_ROOM)
                .max(64),
            ..OutboxOptions::default()
        }
    }
}

/// The previous store was lost: it could not be opened (moved aside, replaced by an empty one),
/// or it is gone while the `seq-marks` file says records were stored. The daemon raises a
/// critical `store_recovered` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the unreadable store was moved (kept for analysis); `None` when it was missing.
    pub moved_to: Option<PathBuf>,
    /// Why it could not be opened.
    pub reason: String,
    /// The first seq each stream will use now, per [`STREAMS`] order.
    pub next_seq: [(Stream, u64); 3],
}

/// A contiguous-in-the-tree run of stored records of one stream, ready to publish.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Stream of every record.
    pub stream: Stream,
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record (keys between may be missing after an eviction).
    pub last_seq: u64,
    values: Vec<sled::IVec>,
    json_bytes: usize,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the batch holds no record (never returned by [`Outbox::read_batch`]).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total bytes of record JSON plus one separator each.
    pub fn json_bytes(&self) -> usize {
        self.json_bytes
    }

    /// The record JSON objects, in seq order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.values.iter().map(|v| &v[codec::HEADER_LEN..])
    }
}

/// Per-stream figures for `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStats {
    /// Stream.
    pub stream: Stream,
    /// Records stored, not yet acknowledged.
    pub records: u64,
    /// Bytes of those records (keys + values).
    pub bytes: u64,
    /// Age of the oldest stored record.
    pub oldest_age_seconds: Option<f64>,
    /// Last seq assigned.
    pub last_seq: u64,
    /// Last seq made durable.
    pub durable_seq: u64,
}

/// Figures of the whole outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStats {
    /// Per stream, telemetry, events, results.
    pub streams: Vec<StreamStats>,
    /// Bytes of the store on disk (last measurement).
    pub disk_bytes: u64,
    /// Budget (`storage.max_bytes`).
    pub budget_bytes: u64,
}

impl OutboxStats {
    /// Records waiting in every stream.
    pub fn total_records(&self) -> u64 {
        self.streams.iter().map(|s| s.records).sum()
    }
}

struct StreamState {
    tree: sled::Tree,
    /// Highest seq assigned; the next record gets `last_appended + 1`.
    last_appended: u64,
    /// Highest seq covered by a completed flush.
    durable: u64,
    /// `hwm/<stream>` as last inserted into `meta`.
    hwm_written: u64,
    records: u64,
    bytes: u64,
    /// Timestamp of the record with the lowest seq still stored.
    oldest_ts_ms: Option<u64>,
}

struct State {
    streams: [StreamState; 3],
    marks: SeqMarks,
    /// Appends since the last flush started.
    pending: usize,
    /// Deletions not yet flushed.
    dirty: bool,
}

/// The outbox. One per process (sled allows one open `Db` per path).
pub struct Outbox {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    opts: OutboxOptions,
    state: Mutex<State>,
    flush_lock: tokio::sync::Mutex<()>,
    kick: Notify,
    durable_tx: watch::Sender<u64>,
    disk_bytes: AtomicU64,
    /// When the flusher last completed a round (for the systemd watchdog).
    flusher_beat: Mutex<Option<Instant>>,
    metrics: Metrics,
}

fn hwm_key(stream: Stream) -> Vec<u8> {
    format!("hwm/{}", stream.as_str()).into_bytes()
}

fn read_u64(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

/// Everything read from a sled directory at open.
struct Opened {
    db: sled::Db,
    meta: sled::Tree,
    streams: [StreamState; 3],
    fresh: bool,
}

/// sled's log segment size for a store: its files hold several segments beyond the live data, so
/// with the default 512 KiB a small budget (a few MiB) is exceeded by the segments alone. New
/// stores get `max_bytes / 32` rounded down to a power of two, between 32 KiB and sled's default.
/// sled refuses to open a store with another segment size than it was created with, so an
/// existing store keeps the size written in its `conf` file.
pub fn segment_size_for(path: &Path, max_bytes: u64) -> usize {
    const MIN: u64 = 32 * 1024;
    const MAX: u64 = 512 * 1024;
    // sled appends a CRC after the text, so the file is not valid UTF-8 as a whole.
    let existing = fs::read(path.join("conf")).ok().and_then(|conf| {
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    existing.unwrap_or_else(|| {
        let target = (max_bytes / 32).clamp(MIN, MAX);
        // Largest power of two not above the target.
        (1u64 << (63 - target.leading_zeros())) as usize
    })
}

fn open_db(path: &Path, opts: &OutboxOptions) -> Result<Opened, OutboxError> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(opts.cache_capacity)
        .segment_size(segment_size_for(path, opts.max_bytes))
        .flush_every_ms(None)
        .open()?;
    let meta = db.open_tree("meta")?;
    let fresh = meta.get("created")?.is_none();
    let mut states = Vec::with_capacity(3);
    for stream in STREAMS {
        let tree = db.open_tree(stream.as_str())?;
        let hwm = read_u64(meta.get(hwm_key(stream))?);
        let (mut records, mut bytes, mut oldest, mut last_key) = (0u64, 0u64, None, 0u64);
        // One O(n) scan at open rebuilds the counters and proves every value decodes.
        for item in tree.iter() {
            let (k, v) = item?;
            let seq = codec::seq_of(&k).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            let d = codec::decode_value(&v).ok_or(OutboxError::BadValue { stream, seq })?;
            records += 1;
            bytes += (k.len() + v.len()) as u64;
            oldest.get_or_insert(d.ts_ms);
            last_key = seq;
        }
        let last = hwm.max(last_key);
        states.push(StreamState {
            tree,
            last_appended: last,
            durable: last,
            hwm_written: hwm,
            records,
            bytes,
            oldest_ts_ms: oldest,
        });
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
fn open_db_guarded(path: &Path, opts: &OutboxOptions) -> Result<Opened, OutboxError> {
    match catch_unwind(AssertUnwindSafe(|| open_db(path, opts))) {
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

/// sled's file lock is released when the last reference to a `Db` goes, and its flush threads
/// may hold one a moment after the previous handle in this process was dropped (tests reopen).
/// Wait briefly for that; another process holding the store keeps failing with the lock error.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn is_lock_busy(e: &OutboxError) -> bool {
    matches!(e, OutboxError::Store(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock"))
}

fn open_db_waiting_for_lock(path: &Path, opts: &OutboxOptions) -> Result<Opened, OutboxError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open_db_guarded(path, opts) {
            Err(e) if is_lock_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Whether an open error means the files are unusable (move aside) rather than the system
/// refusing access (report, do not touch the data).
fn is_corruption(e: &OutboxError) -> bool {
    match e {
        OutboxError::Store(sled::Error::Io(_)) => false,
        OutboxError::Store(_) | OutboxError::BadValue { .. } => true,
        OutboxError::Dir { .. } | OutboxError::TooLarge { .. } => false,
    }
}

impl Outbox {
    /// Open (or create) the outbox under `dir` (`storage.path`).
    ///
    /// A store that cannot be opened because its files are corrupt is moved aside to
    /// `outbox.corrupt-<unix ms>` and replaced by an empty one; the returned [`Recovery`] says so
    /// (the daemon raises a critical `store_recovered` event). Numbering then continues above
    /// the `seq-marks` ceilings. I/O errors (permissions, disk) are returned as they are.
    pub fn open(
        dir: &Path,
        opts: OutboxOptions,
        metrics: Metrics,
    ) -> Result<(Arc<Outbox>, Option<Recovery>), OutboxError> {
        fs::create_dir_all(dir).map_err(dir_err(dir))?;
        let marks_on_disk = marks::read(dir).map_err(dir_err(dir))?;
        let db_path = dir.join("outbox");
        let mut recovery = None;
        let opened = match open_db_waiting_for_lock(&db_path, &opts) {
            Ok(o) => o,
            Err(e) if is_corruption(&e) => {
                let millis = codec::millis(SystemTime::now());
                let moved_to = dir.join(format!("outbox.corrupt-{millis}"));
                fs::rename(&db_path, &moved_to).map_err(dir_err(&db_path))?;
                tracing::error!(error = %e, moved_to = %moved_to.display(), "outbox store unreadable, moved aside; starting empty");
                metrics
                    .store_recoveries_total
                    .with_label_values(&["corrupt"])
                    .inc();
                recovery = Some((Some(moved_to), e.to_string()));
                open_db_guarded(&db_path, &opts)?
            }
            Err(e) => return Err(e),
        };
        let Opened {
            db,
            meta,
            mut streams,
            fresh,
        } = opened;
        if fresh && recovery.is_none() && marks_on_disk.is_some() {
            tracing::error!(path = %db_path.display(), "outbox store missing although seq-marks exist; starting empty");
            metrics
                .store_recoveries_total
                .with_label_values(&["missing"])
                .inc();
            recovery = Some((None, "store missing".to_owned()));
        }
        let marks = marks_on_disk.unwrap_or_default();
        if fresh {
            // A database this code never initialised, next to marks: the previous store was lost.
            // Resume above every seq the central post may have seen.
            for stream in STREAMS {
                let s = &mut streams[stream_index(stream)];
                let ceiling = marks.ceiling[stream_index(stream)];
                s.last_appended = s.last_appended.max(ceiling);
                s.durable = s.last_appended;
            }
            meta.insert("created", &codec::millis(SystemTime::now()).to_be_bytes())?;
        }
        for stream in STREAMS {
            let s = &mut streams[stream_index(stream)];
            if s.hwm_written != s.last_appended {
                meta.insert(hwm_key(stream), &s.last_appended.to_be_bytes())?;
                s.hwm_written = s.last_appended;
            }
        }
        // Whatever sled recovered is on disk now; make it (and the meta above) durable before
        // treating it as stored.
        db.flush()?;
        let recovery = recovery.map(|(moved_to, reason)| Recovery {
            moved_to,
            reason,
            next_seq: STREAMS.map(|s| (s, streams[stream_index(s)].last_appended + 1)),
        });
        let disk = db.size_on_disk().unwrap_or(0);
        metrics.outbox_budget_bytes.set(clamp_i64(opts.max_bytes));
        let (durable_tx, _) = watch::channel(0);
        let outbox = Arc::new(Outbox {
            dir: dir.to_owned(),
            db,
            meta,
            opts,
            state: Mutex::new(State {
                streams,
                marks,
                pending: 0,
                dirty: false,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            kick: Notify::new(),
            durable_tx,
            disk_bytes: AtomicU64::new(disk),
            flusher_beat: Mutex::new(None),
            metrics,
        });
        outbox.update_metrics(&outbox.lock());
        Ok((outbox, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters worse than approximate.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number a record and insert it. It becomes publishable after the next completed flush.
    pub fn append(&self, body: &RecordBody) -> Result<u64, OutboxError> {
        let mut st = self.lock();
        let seq = self.append_locked(&mut st, body)?;
        st.pending += 1;
        if st.pending >= self.opts.flush_after_records {
            self.kick.notify_one();
        }
        Ok(seq)
    }

    fn append_locked(&self, st: &mut State, body: &RecordBody) -> Result<u64, OutboxError> {
        let s = &mut st.streams[stream_index(body.stream())];
        let seq = s.last_appended + 1;
        let json = body.to_json_with_seq(seq);
        if json.len() > self.opts.max_record_bytes {
            return Err(OutboxError::TooLarge {
                size: json.len(),
                max: self.opts.max_record_bytes,
            });
        }
        let ts = body.ts();
        let value = codec::encode_value(ts, &json);
        // Inserted while holding the state lock: every seq ≤ `last_appended` is in sled, which
        // is what lets a flush snapshot `last_appended` as its durable target.
        s.tree.insert(codec::key(seq), value.as_slice())?;
        s.last_appended = seq;
        s.records += 1;
        s.bytes += (8 + value.len()) as u64;
        s.oldest_ts_ms.get_or_insert(codec::millis(ts));
        Ok(seq)
    }

    /// Make everything appended so far durable (group commit), then advance the durable
    /// watermarks and wake the uplink. Used by the flusher and at shutdown.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        let _serial = self.flush_lock.lock().await;
        let (targets, new_marks) = {
            let mut st = self.lock();
            st.pending = 0;
            let targets = STREAMS.map(|s| st.streams[stream_index(s)].last_appended);
            let advancing = STREAMS
                .iter()
                .any(|s| targets[stream_index(*s)] > st.streams[stream_index(*s)].durable);
            if !advancing && !st.dirty {
                return Ok(());
            }
            st.dirty = false;
            for stream in STREAMS {
                let i = stream_index(stream);
                if targets[i] > st.streams[i].hwm_written {
                    self.meta
                        .insert(hwm_key(stream), &targets[i].to_be_bytes())?;
                    st.streams[i].hwm_written = targets[i];
                }
            }
            let mut marks = st.marks;
            let mut raise = false;
            for (ceiling, target) in marks.ceiling.iter_mut().zip(targets) {
                if target > *ceiling {
                    *ceiling = target + marks::BLOCK;
                    raise = true;
                }
            }
            (targets, raise.then_some(marks))
        };
        if let Some(m) = new_marks {
            let dir = self.dir.clone();
            let written = tokio::task::spawn_blocking(move || marks::write(&dir, &m))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
            written.map_err(dir_err(&self.dir))?;
            self.lock().marks = m;
        }
        self.db.flush_async().await?;
        {
            let mut st = self.lock();
            for (s, target) in st.streams.iter_mut().zip(targets) {
                s.durable = s.durable.max(target);
            }
            self.update_metrics(&st);
        }
        self.durable_tx.send_modify(|g| *g = g.wrapping_add(1));
        Ok(())
    }

    /// Group-commit loop: flush every `interval`, or early after
    /// [`OutboxOptions::flush_after_records`] appends; measure the store size and enforce the
    /// budget about once a second. Returns after a final flush once `shutdown` becomes true.
    pub async fn run_flusher(
        self: Arc<Self>,
        interval: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_measure = Instant::now();
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.kick.notified() => {}
                r = shutdown.changed() => if r.is_err() { break },
            }
            match self.flush().await {
                Ok(()) => {
                    *self.flusher_beat.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "outbox flush failed; retrying"),
            }
            if last_measure.elapsed() >= Duration::from_secs(1) {
                last_measure = Instant::now();
                if let Err(e) = self.enforce_budget() {
                    tracing::warn!(error = %e, "outbox budget enforcement failed");
                }
            }
        }
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, "final outbox flush failed");
        }
    }

    /// When [`Outbox::run_flusher`] last completed a flush round (`None` before the first): the
    /// daemon feeds the systemd watchdog only while this keeps moving. A failing flush (disk
    /// error) stops it.
    pub fn flusher_heartbeat(&self) -> Option<Instant> {
        *self.flusher_beat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A receiver that changes after every completed flush (the uplink waits on it).
    pub fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable_tx.subscribe()
    }

    /// Highest durable seq of a stream.
    pub fn durable_seq(&self, stream: Stream) -> u64 {
        self.lock().streams[stream_index(stream)].durable
    }

    /// Seq of the oldest record still stored in a stream, if any.
    pub fn first_stored(&self, stream: Stream) -> Result<Option<u64>, OutboxError> {
        let tree = self.lock().streams[stream_index(stream)].tree.clone();
        Ok(tree.first()?.and_then(|(k, _)| codec::seq_of(&k)))
    }

    /// Durable records of `stream` with `from <= seq <= upto`, oldest first, at most
    /// `max_records` and as many as fit in `max_json_bytes` (record JSON plus one separator each),
    /// but at least one. `None` if there is no such record.
    pub fn read_batch(
        &self,
        stream: Stream,
        from: u64,
        upto: u64,
        max_json_bytes: usize,
        max_records: usize,
    ) -> Result<Option<Batch>, OutboxError> {
        let (tree, durable) = {
            let st = self.lock();
            let s = &st.streams[stream_index(stream)];
            (s.tree.clone(), s.durable)
        };
        let end = upto.min(durable);
        if end == 0 || from > end {
            return Ok(None);
        }
        let mut values = Vec::new();
        let (mut first, mut last, mut bytes) = (0, 0, 0usize);
        for item in tree.range(codec::key(from)..=codec::key(end)) {
            let (k, v) = item?;
            let seq = codec::seq_of(&k).ok_or(OutboxError::BadValue { stream, seq: 0 })?;
            if codec::decode_value(&v).is_none() {
                return Err(OutboxError::BadValue { stream, seq });
            }
            let size = v.len() - codec::HEADER_LEN + 1;
            if !values.is_empty() && (bytes + size > max_json_bytes || values.len() >= max_records)
            {
                break;
            }
            if values.is_empty() {
                first = seq;
            }
            last = seq;
            bytes += size;
            values.push(v);
        }
        Ok((!values.is_empty()).then_some(Batch {
            stream,
            first_seq: first,
            last_seq: last,
            values,
            json_bytes: bytes,
        }))
    }

    /// The broker acknowledged records `first..=last` of `stream`: delete them (one
    /// `apply_batch`) and count them as published. Returns how many were still stored.
    pub fn ack(&self, stream: Stream, first: u64, last: u64) -> Result<u64, OutboxError> {
        let mut st = self.lock();
        let removed = Self::remove_range(&mut st, stream, first, last)?;
        st.dirty |= removed > 0;
        self.metrics
            .published_records_total
            .with_label_values(&[stream.as_str()])
            .inc_by(removed);
        self.update_metrics(&st);
        Ok(removed)
    }

    fn remove_range(
        st: &mut State,
        stream: Stream,
        first: u64,
        last: u64,
    ) -> Result<u64, OutboxError> {
        let s = &mut st.streams[stream_index(stream)];
        let mut batch = sled::Batch::default();
        let (mut count, mut bytes) = (0u64, 0u64);
        for item in s.tree.range(codec::key(first)..=codec::key(last)) {
            let (k, v) = item?;
            bytes += (k.len() + v.len()) as u64;
            count += 1;
            batch.remove(k);
        }
        if count == 0 {
            return Ok(0);
        }
        s.tree.apply_batch(batch)?;
        s.records = s.records.saturating_sub(count);
        s.bytes = s.bytes.saturating_sub(bytes);
        s.oldest_ts_ms = match s.tree.first()? {
            Some((_, v)) => codec::decode_value(&v).map(|d| d.ts_ms),
            None => None,
        };
        Ok(count)
    }

    /// Measure the store and evict if it is over budget: telemetry oldest first; events and
    /// results only once no telemetry is left. Each eviction appends an `outbox_evicted` event.
    /// Returns the number of records evicted.
    ///
    /// Two limits: the live bytes must stay under `max_bytes / SPACE_AMPLIFICATION` (sled's files
    /// run 3–4× the live data); and when the files (`size_on_disk`) exceed `max_bytes` *and are
    /// still growing* since the last measurement, a further tenth of the live data goes. Files
    /// over budget but not growing are left alone: sled reuses freed segments without shrinking
    /// its files, so a store that once filled up would otherwise keep evicting forever.
    pub fn enforce_budget(&self) -> Result<u64, OutboxError> {
        let disk = self.db.size_on_disk()?;
        let previous = self.disk_bytes.swap(disk, Ordering::Relaxed);
        let live_budget = self.opts.max_bytes / SPACE_AMPLIFICATION;
        let mut st = self.lock();
        let live: u64 = st.streams.iter().map(|s| s.bytes).sum();
        let mut to_free = live.saturating_sub(live_budget);
        if disk > self.opts.max_bytes && disk > previous {
            to_free = to_free.max(live / 10);
        }
        let mut evicted = 0;
        // Telemetry first, then events, then results (results matter most to the central post).
        for stream in [Stream::Telemetry, Stream::Events, Stream::Results] {
            if to_free == 0 {
                break;
            }
            let (first, last, bytes, count) = {
                let s = &st.streams[stream_index(stream)];
                let (mut first, mut last, mut bytes, mut count) = (0, 0, 0u64, 0u64);
                for item in s.tree.iter() {
                    let (k, v) = item?;
                    let seq = codec::seq_of(&k).unwrap_or(0);
                    if count == 0 {
                        first = seq;
                    }
                    last = seq;
                    bytes += (k.len() + v.len()) as u64;
                    count += 1;
                    if bytes >= to_free {
                        break;
                    }
                }
                (first, last, bytes, count)
            };
            if count == 0 {
                continue;
            }
            let removed = Self::remove_range(&mut st, stream, first, last)?;
            to_free = to_free.saturating_sub(bytes);
            evicted += removed;
            st.dirty = true;
            self.metrics
                .evicted_records_total
                .with_label_values(&[stream.as_str()])
                .inc_by(removed);
            tracing::warn!(stream = %stream, first_seq = first, last_seq = last, records = removed, "outbox over budget: evicted oldest records");
            let event = RecordBody::Event(Event {
                ts: SystemTime::now(),
                kind: crate::event::EventKind::OutboxEvicted,
                severity: Severity::Major,
                source: "cabinetd".into(),
                message: format!(
                    "outbox over budget: {removed} {stream} records {first}..{last} dropped unsent"
                ),
                data: serde_json::json!({"stream": stream.as_str(), "first_seq": first, "last_seq": last}),
            });
            self.append_locked(&mut st, &event)?;
            st.pending += 1;
        }
        self.update_metrics(&st);
        Ok(evicted)
    }

    /// Figures for `/status`.
    pub fn stats(&self) -> OutboxStats {
        let st = self.lock();
        let now = codec::millis(SystemTime::now());
        OutboxStats {
            streams: STREAMS
                .iter()
                .map(|&stream| {
                    let s = &st.streams[stream_index(stream)];
                    StreamStats {
                        stream,
                        records: s.records,
                        bytes: s.bytes,
                        oldest_age_seconds: s
                            .oldest_ts_ms
                            .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                        last_seq: s.last_appended,
                        durable_seq: s.durable,
                    }
                })
                .collect(),
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            budget_bytes: self.opts.max_bytes,
        }
    }

    fn update_metrics(&self, st: &State) {
        let m = &self.metrics;
        let mut oldest: Option<u64> = None;
        for stream in STREAMS {
            let s = &st.streams[stream_index(stream)];
            m.outbox_records
                .with_label_values(&[stream.as_str()])
                .set(clamp_i64(s.records));
            if let Some(t) = s.oldest_ts_ms {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        let age = oldest
            .map(|t| codec::millis(SystemTime::now()).saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        m.outbox_oldest_record_age_seconds.set(age);
        m.outbox_bytes
            .set(clamp_i64(self.disk_bytes.load(Ordering::Relaxed)));
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
