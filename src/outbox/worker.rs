//! The outbox thread: one OS thread owns the [`Store`] and runs every sled call, on a
//! current-thread runtime of its own; the async side talks to it through bounded channels.
//!
//! - Appends come in batches on a channel of [`APPEND_CHANNEL`] batches. While more than
//!   [`MAX_PENDING`] stored records wait for a flush that keeps failing, the thread stops taking
//!   appends: the channel fills, the recorder waits, the record channel fills, the devices' polls
//!   wait. No record is dropped. A flush that fails before reaching sled (the `seq-marks` file)
//!   is retried; failing for [`FATAL_AFTER`] it is fatal. A failure of sled itself is fatal at
//!   once: sled refuses every later write in this process (and dropping its handle may block for
//!   good, so a dead store is never dropped). Fatal means [`Outbox::fatal`]: the daemon exits 1 and
//!   systemd restarts it, which reopens the store.
//! - A store that cannot be opened (the filesystem is full or read-only, or even a fresh store
//!   fails after the old one was moved aside) does not stop the daemon: the thread runs without
//!   one, tries again every [`RETRY_OPEN`] ([`OutboxOptions::retry_open`]), and says so ([`OutboxStats::error`], `/readyz` 503).
//!   Records pushed meanwhile have no seq yet; they are held in memory, per stream at most
//!   [`HELD_MAX`] (the oldest go first, counted), and never push back on the producers, so the
//!   lighting programme and commands go on. Once a store opens they are numbered and stored, and
//!   a critical `outbox_unavailable` event tells how long it lasted and how many records were
//!   discarded.
//! - Reads, acks and flush requests come on a control channel, served as fairly as the appends
//!   and the group-commit tick (none of them may starve the others).
//! - Group commit every `flush_interval` (or after `flush_after_records` appends); the budget is
//!   checked about once a second. `/status` figures are a snapshot refreshed by the thread, so
//!   reading them never waits for sled.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::record::{format_ts, Event, RecordBody, Severity, Stream};

use super::store::{Eviction, Store};
use super::{
    stream_index, Batch, OutboxError, OutboxOptions, OutboxStats, Recovery, StreamStats, STREAMS,
};

/// Batches of records waiting for the thread.
pub const APPEND_CHANNEL: usize = 64;
/// Stored records waiting for a flush beyond which the thread takes no more appends.
pub const MAX_PENDING: u64 = 50_000;
/// A flush failing (before sled) for this long is fatal.
pub const FATAL_AFTER: Duration = Duration::from_secs(60);
/// Interval between attempts to open the store while none is open (default of
/// [`OutboxOptions::retry_open`]).
pub const RETRY_OPEN: Duration = Duration::from_secs(10);
/// Records held in memory per stream while no store is open.
pub const HELD_MAX: usize = 50_000;

/// Where a broker session starts: first stored seq and durable seq per stream ([`STREAMS`]).
pub type SessionStart = ([Option<u64>; 3], [u64; 3]);

enum Ctl {
    Append {
        body: RecordBody,
        reply: oneshot::Sender<Result<u64, OutboxError>>,
    },
    Read {
        stream: Stream,
        from: u64,
        upto: u64,
        max_json_bytes: usize,
        max_records: usize,
        reply: oneshot::Sender<Result<Option<Batch>, OutboxError>>,
    },
    Ack {
        stream: Stream,
        first: u64,
        last: u64,
    },
    Session {
        reply: oneshot::Sender<Result<SessionStart, OutboxError>>,
    },
    Flush {
        reply: oneshot::Sender<Result<(), OutboxError>>,
    },
    Budget {
        reply: oneshot::Sender<Vec<Eviction>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

struct Snapshot {
    stats: OutboxStats,
    beat: Option<Instant>,
}

/// Handle on the outbox thread. Cheap to share (`Arc`); the thread ends after [`Outbox::close`]
/// or when the last handle is dropped, with a final flush either way.
pub struct Outbox {
    ctl: mpsc::Sender<Ctl>,
    appends: mpsc::Sender<Vec<RecordBody>>,
    snapshot: Arc<Mutex<Snapshot>>,
    durable: watch::Receiver<u64>,
    fatal: watch::Receiver<Option<String>>,
}

impl Outbox {
    /// Open the store under `dir` on the calling thread (it may wait for sled's file lock: call
    /// it from `spawn_blocking` in async code) and start the outbox thread.
    ///
    /// Fails only when another process holds the store (its lock): two daemons on one store
    /// would drive the same equipment. A store that cannot be opened for any other reason is
    /// logged and retried by the thread (see the module header); the returned [`Recovery`] is
    /// that of an open that succeeded here.
    pub fn open(
        dir: &Path,
        opts: OutboxOptions,
        metrics: Metrics,
    ) -> Result<(Arc<Outbox>, Option<Recovery>), OutboxError> {
        let flush_interval = opts.flush_interval;
        let flush_after = opts.flush_after_records;
        let (store, recovery, unavailable) = match Store::open(dir, opts.clone(), metrics.clone()) {
            Ok((store, recovery)) => (Some(store), recovery, None),
            Err(e) if super::store::is_lock_busy(&e) => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, dir = %dir.display(), retry_every = ?opts.retry_open, "the outbox store cannot be opened: running without it (records held in memory, not published); retrying");
                (None, None, Some(Unavailable::new(e.to_string())))
            }
        };
        let (ctl_tx, ctl_rx) = mpsc::channel(64);
        let (app_tx, app_rx) = mpsc::channel(APPEND_CHANNEL);
        let (durable_tx, durable) = watch::channel(0);
        let (fatal_tx, fatal) = watch::channel(None);
        let stats = match &store {
            Some(s) => s.stats(),
            None => unavailable_stats(&opts, unavailable.as_ref().map(|u| u.reason.as_str())),
        };
        let snapshot = Arc::new(Mutex::new(Snapshot { stats, beat: None }));
        let worker = Worker {
            store,
            dir: dir.to_owned(),
            opts,
            metrics,
            unavailable,
            held: Held::default(),
            snapshot: snapshot.clone(),
            durable_tx,
            fatal_tx,
            failing: None,
            since_flush: 0,
            flush_after,
        };
        std::thread::Builder::new()
            .name("outbox".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("a current-thread runtime builds");
                rt.block_on(worker.run(ctl_rx, app_rx, flush_interval));
            })
            .map_err(|e| OutboxError::Dir {
                path: dir.to_owned(),
                source: e,
            })?;
        Ok((
            Arc::new(Outbox {
                ctl: ctl_tx,
                appends: app_tx,
                snapshot,
                durable,
                fatal,
            }),
            recovery,
        ))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Ctl,
    ) -> Result<T, OutboxError> {
        let (tx, rx) = oneshot::channel();
        self.ctl
            .send(make(tx))
            .await
            .map_err(|_| OutboxError::Stopped)?;
        rx.await.map_err(|_| OutboxError::Stopped)
    }

    /// Number one record and store it (publishable after the next flush); returns its seq.
    /// Fails with [`OutboxError::Unavailable`] while no store is open.
    pub async fn append(&self, body: RecordBody) -> Result<u64, OutboxError> {
        self.call(|reply| Ctl::Append { body, reply }).await?
    }

    /// Hand records to the thread in order, waiting while it takes no more (backpressure).
    pub async fn push(&self, bodies: Vec<RecordBody>) -> Result<(), OutboxError> {
        self.appends
            .send(bodies)
            .await
            .map_err(|_| OutboxError::Stopped)
    }

    /// Like [`Outbox::push`] without waiting: gives the records back when the channel is full.
    pub fn try_push(&self, bodies: Vec<RecordBody>) -> Result<(), Vec<RecordBody>> {
        self.appends.try_send(bodies).map_err(|e| match e {
            mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
        })
    }

    /// Durable, unacknowledged records of `stream` in `from..=upto` (see
    /// [`Store::read_batch`]).
    pub async fn read_batch(
        &self,
        stream: Stream,
        from: u64,
        upto: u64,
        max_json_bytes: usize,
        max_records: usize,
    ) -> Result<Option<Batch>, OutboxError> {
        self.call(|reply| Ctl::Read {
            stream,
            from,
            upto,
            max_json_bytes,
            max_records,
            reply,
        })
        .await?
    }

    /// The broker acknowledged the records of `first..=last` that a message carried.
    pub async fn ack(&self, stream: Stream, first: u64, last: u64) -> Result<(), OutboxError> {
        self.ctl
            .send(Ctl::Ack {
                stream,
                first,
                last,
            })
            .await
            .map_err(|_| OutboxError::Stopped)
    }

    /// First stored (unacknowledged) seq and durable seq of each stream, in [`STREAMS`] order:
    /// where a new broker session starts. Fails while no store is open.
    pub async fn session_start(&self) -> Result<SessionStart, OutboxError> {
        self.call(|reply| Ctl::Session { reply }).await?
    }

    /// Make everything appended so far durable now.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.call(|reply| Ctl::Flush { reply }).await?
    }

    /// Check the budget now (the thread does it every second by itself).
    pub async fn enforce_budget(&self) -> Result<Vec<Eviction>, OutboxError> {
        self.call(|reply| Ctl::Budget { reply }).await
    }

    /// Final flush, then the thread drops the store (releasing sled's lock) and ends.
    pub async fn close(&self) -> Result<(), OutboxError> {
        self.call(|reply| Ctl::Close { reply }).await
    }

    /// A receiver that changes after every flush that made records durable (and when a store
    /// opens after running without one).
    pub fn subscribe_durable(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Becomes `Some(reason)` when the store cannot write for good: the daemon must stop (exit 1).
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.clone()
    }

    /// Highest durable seq of a stream (as of the last snapshot).
    pub fn durable_seq(&self, stream: Stream) -> u64 {
        self.lock().stats.streams[stream_index(stream)].durable_seq
    }

    /// Figures for `/status` (a snapshot the thread refreshes at every group commit).
    pub fn stats(&self) -> OutboxStats {
        self.lock().stats.clone()
    }

    /// Whether the store takes records normally: open, writing, filesystem not full. `/readyz`
    /// answers 503 otherwise (the daemon keeps running).
    pub fn ready(&self) -> bool {
        let s = self.lock();
        s.stats.available && s.stats.error.is_none() && !s.stats.storage_full
    }

    /// When the thread last completed a round without error (`None` before the first): the
    /// daemon feeds the systemd watchdog only while this keeps moving. Running without a store,
    /// each attempt to open one counts.
    pub fn flusher_heartbeat(&self) -> Option<Instant> {
        self.lock().beat
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn unavailable_stats(opts: &OutboxOptions, reason: Option<&str>) -> OutboxStats {
    OutboxStats {
        streams: STREAMS
            .iter()
            .map(|&stream| StreamStats {
                stream,
                records: 0,
                bytes: 0,
                oldest_age_seconds: None,
                last_seq: 0,
                durable_seq: 0,
                blocks: 0,
            })
            .collect(),
        disk_bytes: 0,
        budget_bytes: opts.max_bytes,
        limit_bytes: 0,
        fs_free_bytes: 0,
        storage_full: false,
        available: false,
        held_records: 0,
        error: reason.map(|r| format!("no store: {r}")),
    }
}

/// Why no store is open.
struct Unavailable {
    since: SystemTime,
    reason: String,
    last_try: Instant,
}

impl Unavailable {
    fn new(reason: String) -> Self {
        Unavailable {
            since: SystemTime::now(),
            reason,
            last_try: Instant::now(),
        }
    }
}

/// Records received while no store is open (no seq yet), per stream.
#[derive(Default)]
struct Held {
    records: [VecDeque<RecordBody>; 3],
    /// Discarded (oldest first) once a stream held [`HELD_MAX`], per stream.
    discarded: [u64; 3],
    /// Acquisition times of the first and last record discarded.
    discarded_ts: Option<(SystemTime, SystemTime)>,
}

impl Held {
    fn push(&mut self, body: RecordBody) {
        let i = stream_index(body.stream());
        if self.records[i].len() >= HELD_MAX {
            if let Some(old) = self.records[i].pop_front() {
                self.discarded[i] += 1;
                let ts = old.ts();
                self.discarded_ts = Some(match self.discarded_ts {
                    Some((a, b)) => (a.min(ts), b.max(ts)),
                    None => (ts, ts),
                });
            }
        }
        self.records[i].push_back(body);
    }

    fn len(&self) -> usize {
        self.records.iter().map(VecDeque::len).sum()
    }
}

struct Worker {
    store: Option<Store>,
    dir: PathBuf,
    opts: OutboxOptions,
    metrics: Metrics,
    /// Set while no store is open.
    unavailable: Option<Unavailable>,
    held: Held,
    snapshot: Arc<Mutex<Snapshot>>,
    durable_tx: watch::Sender<u64>,
    fatal_tx: watch::Sender<Option<String>>,
    /// Since when flushes fail (before reaching sled), and why.
    failing: Option<(Instant, String)>,
    since_flush: usize,
    flush_after: usize,
}

impl Worker {
    async fn run(
        mut self,
        mut ctl: mpsc::Receiver<Ctl>,
        mut appends: mpsc::Receiver<Vec<RecordBody>>,
        flush_interval: Duration,
    ) {
        let mut tick = tokio::time::interval(flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_budget = Instant::now();
        let mut appends_open = true;
        let mut buf: Vec<Vec<RecordBody>> = Vec::with_capacity(16);
        let close_reply = loop {
            // Without a store records are held (bounded), never pushed back: see the header.
            let accepting = appends_open
                && self
                    .store
                    .as_ref()
                    .is_none_or(|s| s.pending_records() < MAX_PENDING);
            // Not biased: serving the control channel first would let a steady stream of reads
            // and acks (the uplink draining a backlog) starve the group commit and the appends,
            // so fresh records would not become publishable until the drain ends.
            tokio::select! {
                c = ctl.recv() => match c {
                    Some(Ctl::Close { reply }) => break Some(reply),
                    Some(c) => self.handle(c),
                    None => break None,
                },
                n = appends.recv_many(&mut buf, 16), if accepting => {
                    if n == 0 {
                        appends_open = false;
                        continue;
                    }
                    for body in buf.drain(..).flatten() {
                        self.append(body);
                    }
                    if self.since_flush >= self.flush_after {
                        let _ = self.flush();
                    }
                }
                _ = tick.tick() => {
                    if self.store.is_none() {
                        self.retry_open();
                    }
                    let _ = self.flush();
                    if last_budget.elapsed() >= Duration::from_secs(1) {
                        last_budget = Instant::now();
                        if let Some(store) = self.store.as_mut() {
                            store.enforce_budget();
                        }
                    }
                    self.publish();
                }
            }
        };
        // Take what is still queued, then the final flush.
        while let Ok(bodies) = appends.try_recv() {
            for body in bodies {
                self.append(body);
            }
        }
        let _ = self.flush();
        self.publish();
        if let Some(store) = self.store.take() {
            if store.is_dead().is_some() {
                // sled's destructor waits for writes that will never complete.
                std::mem::forget(store);
            }
        }
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    fn append(&mut self, body: RecordBody) {
        let Some(store) = self.store.as_mut() else {
            self.held.push(body);
            return;
        };
        match store.append(&body) {
            Ok(_) => self.since_flush += 1,
            // Only a record too large for any message: refused loudly (it can never be sent).
            Err(e) => {
                tracing::error!(error = %e, stream = %body.stream(), "record refused by the outbox")
            }
        }
    }

    fn unavailable_error(&self) -> OutboxError {
        OutboxError::Unavailable(
            self.unavailable
                .as_ref()
                .map_or_else(|| "closed".to_owned(), |u| u.reason.clone()),
        )
    }

    fn handle(&mut self, c: Ctl) {
        let unavailable = self.unavailable_error();
        match c {
            Ctl::Append { body, reply } => {
                let r = match self.store.as_mut() {
                    Some(store) => store.append(&body),
                    None => Err(unavailable),
                };
                if r.is_ok() {
                    self.since_flush += 1;
                }
                let _ = reply.send(r);
            }
            Ctl::Read {
                stream,
                from,
                upto,
                max_json_bytes,
                max_records,
                reply,
            } => {
                let r = match self.store.as_mut() {
                    Some(store) => {
                        store.read_batch(stream, from, upto, max_json_bytes, max_records)
                    }
                    None => Err(unavailable),
                };
                let _ = reply.send(r);
            }
            Ctl::Ack {
                stream,
                first,
                last,
            } => {
                if let Some(store) = self.store.as_mut() {
                    store.ack(stream, first, last);
                }
            }
            Ctl::Session { reply } => {
                let r = match self.store.as_ref() {
                    Some(s) => Ok((
                        STREAMS.map(|st| s.first_stored(st)),
                        STREAMS.map(|st| s.durable_seq(st)),
                    )),
                    None => Err(unavailable),
                };
                let _ = reply.send(r);
            }
            Ctl::Flush { reply } => {
                let r = if self.store.is_some() {
                    self.flush()
                } else {
                    Err(unavailable)
                };
                self.publish();
                let _ = reply.send(r);
            }
            Ctl::Budget { reply } => {
                let e = self
                    .store
                    .as_mut()
                    .map(Store::enforce_budget)
                    .unwrap_or_default();
                self.publish();
                let _ = reply.send(e);
            }
            Ctl::Close { .. } => unreachable!("handled by the loop"),
        }
    }

    /// Try to open the store again (every [`RETRY_OPEN`] while none is open). On success the
    /// held records are numbered and stored, and the outage is announced.
    fn retry_open(&mut self) {
        let Some(u) = self.unavailable.as_mut() else {
            return;
        };
        // Each attempt is progress for the watchdog: the thread is alive and doing its job.
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).beat = Some(Instant::now());
        if u.last_try.elapsed() < self.opts.retry_open {
            return;
        }
        u.last_try = Instant::now();
        match Store::open(&self.dir, self.opts.clone(), self.metrics.clone()) {
            Err(e) => {
                let reason = e.to_string();
                if reason != u.reason {
                    tracing::error!(error = %reason, "the outbox store still cannot be opened");
                    u.reason = reason;
                } else {
                    tracing::debug!(error = %reason, "the outbox store still cannot be opened");
                }
            }
            Ok((mut store, recovery)) => {
                let u = self.unavailable.take().expect("checked above");
                tracing::warn!(since = %format_ts(u.since), "the outbox store is open again");
                if let Some(rec) = recovery {
                    store_recovered_event(&mut store, &rec);
                }
                let held = std::mem::take(&mut self.held);
                let kept = held.len();
                // Events and results first: they are few, and the announcement below counts.
                for i in [1, 2, 0] {
                    for body in &held.records[i] {
                        if store.append(body).is_ok() {
                            self.since_flush += 1;
                        }
                    }
                }
                for (i, n) in held.discarded.iter().enumerate() {
                    if *n > 0 {
                        self.metrics
                            .evicted_records_total
                            .with_label_values(&[STREAMS[i].as_str()])
                            .inc_by(*n);
                    }
                }
                let discarded: u64 = held.discarded.iter().sum();
                let mut data = serde_json::json!({
                    "since": format_ts(u.since),
                    "until": format_ts(SystemTime::now()),
                    "reason": u.reason,
                    "kept": kept,
                    "discarded": {
                        "telemetry": held.discarded[0],
                        "events": held.discarded[1],
                        "results": held.discarded[2],
                    },
                });
                if let Some((a, b)) = held.discarded_ts {
                    data["discarded_from"] = format_ts(a).into();
                    data["discarded_to"] = format_ts(b).into();
                }
                let _ = store.append(&RecordBody::Event(Event {
                    ts: SystemTime::now(),
                    kind: crate::event::EventKind::OutboxUnavailable,
                    severity: Severity::Critical,
                    source: "cabinetd".into(),
                    message: format!(
                        "the outbox store could not be opened from {} ({}): {kept} records kept in memory were stored now, {discarded} discarded (no seq was assigned to them)",
                        format_ts(u.since),
                        u.reason
                    ),
                    data,
                }));
                self.store = Some(store);
                let _ = self.flush();
                // The uplink starts its session over once a store is there.
                self.durable_tx.send_modify(|g| *g = g.wrapping_add(1));
            }
        }
    }

    fn flush(&mut self) -> Result<(), OutboxError> {
        self.since_flush = 0;
        let Some(store) = self.store.as_mut() else {
            return Ok(());
        };
        match store.flush() {
            Ok(advanced) => {
                if let Some((since, _)) = self.failing.take() {
                    tracing::warn!(after = ?since.elapsed(), "outbox writes again");
                }
                if advanced {
                    self.durable_tx.send_modify(|g| *g = g.wrapping_add(1));
                }
                self.lock().beat = Some(Instant::now());
                Ok(())
            }
            Err(e) => {
                let now = Instant::now();
                let message = e.to_string();
                if self.failing.is_none() {
                    tracing::error!(error = %message, "outbox cannot write; records wait in memory and the devices are held back");
                    self.failing = Some((now, message.clone()));
                    let event = RecordBody::Event(Event {
                        ts: SystemTime::now(),
                        kind: crate::event::EventKind::OutboxWriteFailed,
                        severity: Severity::Critical,
                        source: "cabinetd".into(),
                        message: format!("the outbox cannot write ({message}); records wait and polls are held back"),
                        data: serde_json::json!({"error": message}),
                    });
                    let _ = store.append(&event);
                }
                let since = self.failing.as_ref().map_or(now, |f| f.0);
                let dead = matches!(e, OutboxError::Dead(_));
                if (dead || now.duration_since(since) >= FATAL_AFTER)
                    && self.fatal_tx.borrow().is_none()
                {
                    tracing::error!(error = %message, failing_for = ?now.duration_since(since), "outbox store failed for good");
                    let _ = self.fatal_tx.send(Some(format!(
                        "the outbox cannot write ({message}) for {} s",
                        now.duration_since(since).as_secs()
                    )));
                }
                Err(e)
            }
        }
    }

    fn publish(&mut self) {
        let mut stats = match (&self.store, &self.unavailable) {
            (Some(store), _) => store.stats(),
            (None, u) => unavailable_stats(&self.opts, u.as_ref().map(|u| u.reason.as_str())),
        };
        if stats.error.is_none() {
            stats.error = self.failing.as_ref().map(|f| f.1.clone());
        }
        stats.held_records = self.held.len() as u64;
        self.lock().stats = stats;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The critical `store_recovered` event of a store that was lost (see [`Recovery`]).
pub fn store_recovered_event(store: &mut Store, rec: &Recovery) {
    let moved_to = rec.moved_to.as_ref().map(|p| p.display().to_string());
    tracing::error!(moved_to = ?moved_to, reason = %rec.reason, "outbox store lost (unreadable: moved aside; or missing); started fresh");
    let _ = store.append(&RecordBody::Event(Event {
        ts: SystemTime::now(),
        kind: crate::event::EventKind::StoreRecovered,
        severity: Severity::Critical,
        source: "cabinetd".into(),
        message: format!(
            "the outbox store was lost ({}); a fresh one was started",
            rec.reason
        ),
        data: serde_json::json!({"moved_to": moved_to, "reason": rec.reason}),
    }));
}
