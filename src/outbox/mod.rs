//! The durable outbox: numbers records per stream and keeps them in sled until the broker
//! acknowledged the message that carried them.
//!
//! # On-disk layout (`storage.path`), layout version 2
//! - `outbox/`: the sled database (`cache_capacity` [`CACHE_CAPACITY`], background flusher off:
//!   the store flushes itself; segment size from the budget, [`store::segment_size_for`]).
//!   - trees `blocks/telemetry`, `blocks/events`, `blocks/results`: one per [`Stream`]. Key =
//!     seq of the block's first record as big-endian `u64` (byte order = seq order = FIFO).
//!     Value = a block of consecutive records ([`block`]): `[version = 2][codec][count: u32]
//!     [first_ts_ms: u64][content]`, content = the records' lengths then their JSON (with seq)
//!     joined by `,` exactly as in an envelope, zstd-compressed (codec 1; raw, codec 0, when that
//!     is not smaller). A block is *sealed* at [`SEAL_BYTES`] of JSON or [`SEAL_RECORDS`]
//!     records, or before a record that does not follow it (a hole, see *Full filesystem*).
//!   - trees `open/telemetry`, `open/events`, `open/results`: the stream's *open block* (the
//!     one being filled) as *chunks*, one per group commit that added records to it: key = seq
//!     of the chunk's first record, value = the same encoding for just those records
//!     (`first_ts_ms` = the open block's). A group commit writes only its new records, not the
//!     whole open block again; the flush that inserts a sealed block deletes its chunks (blocks
//!     tree first, so a crash never loses both). At open, chunk records already in a block are
//!     dropped, runs of consecutive records become the open block (rewritten as one chunk by
//!     the first flush) and a run broken by a gap is sealed.
//!   - tree `meta`: `format` = `[2]`; `created` = ms when this code initialised the database;
//!     `hwm/<stream>` = highest seq ever assigned and flushed (BE u64); `acked/<stream>` =
//!     acknowledged seqs inside blocks still stored (pairs of BE u64 intervals, [`acks`]);
//!     `dropped/<stream>` = seqs numbered but not stored on a full filesystem and not yet
//!     announced (same encoding).
//!   - layout 1 (one key per record in trees named `telemetry`, `events`, `results`, value
//!     `[1][ts_ms][JSON]`, [`codec`]) has no `format` key: it is rewritten as blocks at open,
//!     then its trees are dropped (a crash in between redoes the conversion).
//!   - `snap.*.generating`: a snapshot sled left half-written (a crash, or a full disk while it
//!     wrote one) is removed before opening (under sled's own lock): sled would take it for the
//!     latest snapshot and declare the whole store corrupt.
//! - `seq-marks`: per-stream seq ceilings outside sled ([`marks`]), for when sled is lost.
//! - `outbox.corrupt-<unix ms>/`: a store that could not be opened, moved aside and kept.
//!
//! # Invariants
//! - `seq` per stream starts at 1 and increases by exactly 1 per appended record. At open,
//!   `next = max(last stored seq, hwm) + 1`; sled's `generate_id` is never used.
//! - A database without `created` is *fresh*. If anything existed in `storage.path` before
//!   (a state file, `seq-marks`, a store directory with files), the previous store was lost: the
//!   open reports a [`Recovery`] (the daemon raises `store_recovered`) and numbering resumes at
//!   the `seq-marks` ceiling + 1 — or, when no readable `seq-marks` survives, at
//!   [`store::wall_clock_seq_base`] (Unix ms × 1000), above anything a store can have numbered.
//!   An unreadable `seq-marks` next to an intact store is reported too and rewritten.
//! - Group commit: an append only adds the record to its stream's open block in memory;
//!   [`store::Store::flush`] (every `storage.flush_interval`, or after
//!   [`OutboxOptions::flush_after_records`] appends) raises the `seq-marks` ceiling when needed
//!   (fsynced *before*), inserts sealed blocks and applies block deletions, writes the open
//!   blocks' new records as one chunk each and deletes obsolete chunks, writes
//!   `hwm/<stream>`, `acked/<stream>` and `dropped/<stream>`, then `Db::flush`. Only then the
//!   durable watermark advances: nothing unflushed is ever read for publishing. A flush that
//!   fails before sled is touched (the `seq-marks` file) forgets nothing: the next one redoes
//!   it whole. An error from sled itself is final for the process: sled refuses every later
//!   write, and dropping its handle then may block for good (measured: a reopen after ENOSPC
//!   hung the outbox thread), so the store is marked dead, never written or dropped again, and
//!   the daemon exits 1 for systemd to restart it ([`worker`]).
//! - Delete only after ack: a record leaves through an ack (the uplink acks after the PUBACK of
//!   the message that carried it) or an announced eviction. A block is deleted once all its
//!   records are acknowledged; a partly acknowledged one keeps its acknowledged seqs in
//!   `acked/<stream>` (the *ack frontier*), persisted at the next flush: a clean restart never
//!   sends an acknowledged record again, a crash may (duplicates, removed by the central post
//!   by `(cabinet, stream, seq)`), nothing is ever lost. Because `hwm` was flushed with the
//!   records, deleting them can never let a seq be reused.
//! - Counters and the block index are kept in memory (`Tree::len` is O(n)), rebuilt by one scan
//!   at open; budget enforcement never scans sled.
//! - Budget: the files stay under `storage.max_bytes`, or under what the filesystem has room for
//!   when that is less (its free space minus [`store::Store::reserve`], four sled segments).
//!   Live block bytes are kept under a [`SPACE_AMPLIFICATION`]th of that. Over it, telemetry is
//!   evicted oldest block first; events and results only once no telemetry is left. Each
//!   eviction appends an `outbox_evicted` event naming the stream and the exact seq range of the
//!   unacknowledged records it dropped (`data.reason = "budget"`).
//!
//! # Full filesystem (a full disk is an outage, not a data loss)
//! sled cannot survive running out of space, so the store never lets it: the free space is
//! measured at every group commit (one `statvfs`) and sets a [`store::Pressure`].
//! - `storage_full` (critical event, `/readyz` 503, `/status` `outbox.storage_full`, metric
//!   `cabinetd_outbox_storage_full`) is raised when less than two reserves are free, or when the
//!   filesystem holds the store under its budget and the store uses what it can; it clears once
//!   three reserves are free and the store is well under what the filesystem allows.
//! - Under the reserve ([`store::Pressure::Hard`]): a new telemetry record still gets its seq
//!   (seq stays contiguous) but is not stored; the hole is announced by an `outbox_evicted`
//!   event (`data.reason = "storage_full"`) once the filesystem has room again, or every
//!   [`store::DROPPED_ANNOUNCE_EVERY`] meanwhile. The pending hole is persisted in
//!   `dropped/<stream>` with the `hwm` that covers it, so a restart announces it too. Events,
//!   results, acknowledgements and deletions still use the reserve. No budget eviction: it
//!   costs writes before it gives room back.
//! - Under a quarter of the reserve ([`store::Pressure::Floor`]): nothing is written. Acks are
//!   kept in memory (the records are not sent again while the process runs), new events and
//!   results wait in memory, telemetry is numbered and not stored as above.
//! - A store that cannot be opened (no room — it is then not moved aside, moving would not make
//!   room and would shelve its backlog — a read-only filesystem, or a fresh store failing after
//!   the old one was moved aside) does not stop the daemon: the outbox thread runs without a
//!   store, holds the records it receives (no seq yet; at most [`worker::HELD_MAX`] per
//!   stream, the oldest discarded and counted), never pushes back on the producers (the
//!   lighting programme and commands go on), says so (`/status` `outbox.available = false`
//!   and `outbox.error`, `/readyz` 503), and tries again every `retry_open`
//!   ([`worker::RETRY_OPEN`]). Once open, the held records are numbered and stored and a
//!   critical `outbox_unavailable` event says since when, why, and how many were kept and
//!   discarded (`data.since`, `until`, `reason`, `kept`, `discarded.{telemetry,events,
//!   results}`, `discarded_from`/`discarded_to`).
//!
//! # Threads
//! One thread owns the store ([`Outbox`], [`worker`]): the async tasks talk to it through
//! bounded channels, served fairly (no request kind starves the group commit), so sled never runs
//! on the async workers. A store that cannot write (a flush failing before sled) pushes back on
//! the record channel (the devices' polls wait) once [`worker::MAX_PENDING`] records wait,
//! instead of dropping records; failing for [`worker::FATAL_AFTER`] is fatal (exit 1).

pub mod acks;
pub mod block;
pub mod codec;
pub mod cursor;
pub mod marks;
pub mod recorder;
pub mod store;
pub mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{StorageConfig, UplinkConfig};
use crate::record::Stream;

pub use cursor::SendCursors;
pub use marks::SeqMarks;
pub use store::{Eviction, Store};
pub use worker::Outbox;

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
/// sled's page cache. Its 1 GiB default is far too much for a cabinet; the store reads blocks
/// mostly once (replay) and keeps the open blocks itself, so a small cache costs nothing.
pub const CACHE_CAPACITY: u64 = 4 * 1024 * 1024;
/// How far sled's files may exceed the live block bytes (log segments are cleaned once half
/// garbage; leaves are rewritten whole when sled consolidates them): the live bytes are kept
/// under `limit / SPACE_AMPLIFICATION`.
pub const SPACE_AMPLIFICATION: u64 = 4;
/// A block is sealed once its JSON reaches this size (≈ 350 benchmark records, ~1.5 KiB
/// compressed): big enough to compress well; until then its records are chunks, uncompressed
/// as often as not, so a bigger block costs space while it is open.
pub const SEAL_BYTES: usize = 32 * 1024;
/// ... or this many records.
pub const SEAL_RECORDS: usize = 4096;

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
    #[error("{stream} block {seq} has an unknown encoding")]
    BadValue {
        /// Stream.
        stream: Stream,
        /// Key of the bad value.
        seq: u64,
    },
    /// The outbox thread has stopped (after [`Outbox::close`], or a fatal store error).
    #[error("the outbox has stopped")]
    Stopped,
    /// sled failed while writing: it refuses every later write, so the store is unusable until
    /// the process restarts (permanent).
    #[error("outbox store failed ({0}); it needs a restart")]
    Dead(String),
    /// No store is open (it could not be opened; the outbox retries in the background).
    #[error("no outbox store: {0}")]
    Unavailable(String),
}

impl OutboxError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OutboxError::Store(_) | OutboxError::Dir { .. } | OutboxError::Unavailable(_)
        )
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
    /// Flush early once this many records wait for a flush.
    pub flush_after_records: usize,
    /// sled page cache size.
    pub cache_capacity: u64,
    /// Group-commit interval (`storage.flush_interval`).
    pub flush_interval: Duration,
    /// Interval between attempts to open the store while none is open.
    pub retry_open: Duration,
    /// Whether `storage.path` held the state of an earlier run, as the daemon saw it before it
    /// opened any state file of its own; `None`: look at the directory when the store opens.
    ///
    /// The daemon must look first: it creates the command-id window before the store, and a
    /// store that took that fresh file for "state of an earlier run" treated every first start
    /// as a lost store and numbered from the wall clock (store_forward_e2e's full-filesystem
    /// test hung on seqs near 1.8e15).
    pub earlier_run: Option<bool>,
}

impl Default for OutboxOptions {
    fn default() -> Self {
        OutboxOptions {
            max_bytes: crate::config::DEFAULT_STORAGE_MAX_BYTES,
            max_record_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES - ENVELOPE_ROOM,
            flush_after_records: 1000,
            cache_capacity: CACHE_CAPACITY,
            flush_interval: crate::config::DEFAULT_FLUSH_INTERVAL,
            retry_open: worker::RETRY_OPEN,
            earlier_run: None,
        }
    }
}

impl OutboxOptions {
    /// Options for a configuration: budget and group commit from `[storage]`, record limit from
    /// the uplink's message size.
    pub fn from_config(storage: &StorageConfig, uplink: &UplinkConfig) -> Self {
        OutboxOptions {
            max_bytes: storage.max_bytes,
            max_record_bytes: uplink
                .max_message_bytes
                .saturating_sub(ENVELOPE_ROOM)
                .max(64),
            flush_interval: storage.flush_interval,
            ..OutboxOptions::default()
        }
    }

    /// Largest decompressed block content accepted when reading (a corrupt frame cannot make the
    /// store allocate more): a full block, its last record and the length prefixes.
    pub fn max_block_content(&self) -> usize {
        SEAL_BYTES + self.max_record_bytes + SEAL_RECORDS * 10 + 1024
    }
}

/// The previous store was lost: it could not be opened (moved aside, replaced by an empty one),
/// it is gone while other state says it existed, or `seq-marks` was unreadable. The daemon
/// raises a critical `store_recovered` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the unreadable store was moved (kept for analysis); `None` when it was missing.
    pub moved_to: Option<PathBuf>,
    /// Why.
    pub reason: String,
    /// The first seq each stream will use now, per [`STREAMS`] order.
    pub next_seq: [(Stream, u64); 3],
}

/// A run of stored records of one stream, ready to publish.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Stream of every record.
    pub stream: Stream,
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record (seqs between may be missing: evicted or already acknowledged).
    pub last_seq: u64,
    records: usize,
    body: Vec<u8>,
    ends: Vec<u32>,
}

impl Batch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.records
    }

    /// Whether the batch holds no record (never returned by a read).
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Total bytes of record JSON plus one separator each.
    pub fn json_bytes(&self) -> usize {
        self.body.len() + 1
    }

    /// The records' JSON joined by `,`: what goes between `[` and `]` in the envelope.
    pub fn joined(&self) -> &[u8] {
        &self.body
    }

    /// The record JSON objects, in seq order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 {
                0
            } else {
                self.ends[i - 1] as usize + 1
            };
            &self.body[start..end as usize]
        })
    }
}

/// Per-stream figures for `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamStats {
    /// Stream.
    pub stream: Stream,
    /// Records stored, not yet acknowledged.
    pub records: u64,
    /// Bytes of the blocks holding them (keys + values).
    pub bytes: u64,
    /// Age of the oldest stored record.
    pub oldest_age_seconds: Option<f64>,
    /// Last seq assigned.
    pub last_seq: u64,
    /// Last seq made durable.
    pub durable_seq: u64,
    /// Blocks stored.
    pub blocks: u64,
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
    /// The budget in force: `budget_bytes`, or less when the filesystem has less room.
    pub limit_bytes: u64,
    /// Free bytes on the store's filesystem (last measurement).
    pub fs_free_bytes: u64,
    /// The filesystem is full: telemetry is evicted to keep room (`/readyz` answers 503).
    pub storage_full: bool,
    /// A store is open (false while it cannot be opened: records are held in memory).
    pub available: bool,
    /// Records held in memory, not numbered yet, while no store is open.
    pub held_records: u64,
    /// Why the store cannot write, while it cannot (records wait in memory, devices are held),
    /// or why none is open.
    pub error: Option<String>,
}

impl OutboxStats {
    /// Records waiting in every stream.
    pub fn total_records(&self) -> u64 {
        self.streams.iter().map(|s| s.records).sum()
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
