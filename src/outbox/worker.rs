//! The outbox thread: one OS thread owns the [`Store`] and runs every sled call, on a
//! current-thread runtime of its own; the async side talks to it through bounded channels.
//!
//! - Appends come in batches on a channel of [`APPEND_CHANNEL`] batches. While the store cannot
//!   write and [`MAX_PENDING`] records wait in memory, the thread stops taking appends: the
//!   channel fills, the recorder waits, the record channel fills, the devices' polls wait. No
//!   record is dropped; a store that cannot write for [`FATAL_AFTER`] is reported as fatal
//!   ([`Outbox::fatal`]) and the daemon exits 1 so that systemd restarts it.
//! - Reads, acks and flush requests come on a control channel, served first.
//! - Group commit every `flush_interval` (or after `flush_after_records` appends); the budget is
//!   checked about once a second. `/status` figures are a snapshot refreshed by the thread, so
//!   reading them never waits for sled.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::record::{Event, RecordBody, Severity, Stream};

use super::store::{Eviction, Store};
use super::{stream_index, Batch, OutboxError, OutboxOptions, OutboxStats, Recovery, STREAMS};

/// Batches of records waiting for the thread.
pub const APPEND_CHANNEL: usize = 64;
/// Records appended but not durable beyond which the thread takes no more appends.
pub const MAX_PENDING: u64 = 50_000;
/// A store that has not been able to write for this long is fatal.
pub const FATAL_AFTER: Duration = Duration::from_secs(60);
/// Interval between attempts to reopen sled while writes fail.
const REOPEN_EVERY: Duration = Duration::from_secs(5);

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
        reply: oneshot::Sender<([Option<u64>; 3], [u64; 3])>,
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
    pub fn open(
        dir: &std::path::Path,
        opts: OutboxOptions,
        metrics: Metrics,
    ) -> Result<(Arc<Outbox>, Option<Recovery>), OutboxError> {
        let flush_interval = opts.flush_interval;
        let flush_after = opts.flush_after_records;
        let (store, recovery) = Store::open(dir, opts, metrics)?;
        let (ctl_tx, ctl_rx) = mpsc::channel(64);
        let (app_tx, app_rx) = mpsc::channel(APPEND_CHANNEL);
        let (durable_tx, durable) = watch::channel(0);
        let (fatal_tx, fatal) = watch::channel(None);
        let snapshot = Arc::new(Mutex::new(Snapshot {
            stats: store.stats(),
            beat: None,
        }));
        let worker = Worker {
            store: Some(store),
            snapshot: snapshot.clone(),
            durable_tx,
            fatal_tx,
            failing: None,
            last_reopen: Instant::now(),
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
    /// where a new broker session starts.
    pub async fn session_start(&self) -> Result<([Option<u64>; 3], [u64; 3]), OutboxError> {
        self.call(|reply| Ctl::Session { reply }).await
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

    /// A receiver that changes after every flush that made records durable.
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

    /// When the thread last completed a flush round without error (`None` before the first):
    /// the daemon feeds the systemd watchdog only while this keeps moving.
    pub fn flusher_heartbeat(&self) -> Option<Instant> {
        self.lock().beat
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Worker {
    store: Option<Store>,
    snapshot: Arc<Mutex<Snapshot>>,
    durable_tx: watch::Sender<u64>,
    fatal_tx: watch::Sender<Option<String>>,
    /// Since when writes fail, and why.
    failing: Option<(Instant, String)>,
    last_reopen: Instant,
    since_flush: usize,
    flush_after: usize,
}

impl Worker {
    fn store(&mut self) -> &mut Store {
        self.store
            .as_mut()
            .expect("store open while the worker runs")
    }

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
            let accepting = appends_open && self.store().pending_records() < MAX_PENDING;
            tokio::select! {
                biased;
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
                        self.append(&body);
                    }
                    if self.since_flush >= self.flush_after {
                        let _ = self.flush();
                    }
                }
                _ = tick.tick() => {
                    let _ = self.flush();
                    if last_budget.elapsed() >= Duration::from_secs(1) {
                        last_budget = Instant::now();
                        self.store().enforce_budget();
                    }
                    self.publish();
                }
            }
        };
        // Take what is still queued, then the final flush.
        while let Ok(bodies) = appends.try_recv() {
            for body in bodies {
                self.append(&body);
            }
        }
        let _ = self.flush();
        self.publish();
        drop(self.store.take());
        if let Some(reply) = close_reply {
            let _ = reply.send(());
        }
    }

    fn append(&mut self, body: &RecordBody) {
        match self.store().append(body) {
            Ok(_) => self.since_flush += 1,
            // Only a record too large for any message: refused loudly (it can never be sent).
            Err(e) => {
                tracing::error!(error = %e, stream = %body.stream(), "record refused by the outbox")
            }
        }
    }

    fn handle(&mut self, c: Ctl) {
        match c {
            Ctl::Append { body, reply } => {
                let r = self.store().append(&body);
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
                let r = self
                    .store()
                    .read_batch(stream, from, upto, max_json_bytes, max_records);
                let _ = reply.send(r);
            }
            Ctl::Ack {
                stream,
                first,
                last,
            } => {
                self.store().ack(stream, first, last);
            }
            Ctl::Session { reply } => {
                let s = self.store();
                let first = STREAMS.map(|st| s.first_stored(st));
                let durable = STREAMS.map(|st| s.durable_seq(st));
                let _ = reply.send((first, durable));
            }
            Ctl::Flush { reply } => {
                let r = self.flush();
                self.publish();
                let _ = reply.send(r);
            }
            Ctl::Budget { reply } => {
                let e = self.store().enforce_budget();
                self.publish();
                let _ = reply.send(e);
            }
            Ctl::Close { .. } => unreachable!("handled by the loop"),
        }
    }

    fn flush(&mut self) -> Result<(), OutboxError> {
        self.since_flush = 0;
        match self.store().flush() {
            Ok(wrote) => {
                if let Some((since, _)) = self.failing.take() {
                    tracing::warn!(after = ?since.elapsed(), "outbox writes again");
                }
                if wrote {
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
                        ts: std::time::SystemTime::now(),
                        kind: "outbox_write_failed".into(),
                        severity: Severity::Critical,
                        source: "cabinetd".into(),
                        message: format!("the outbox cannot write ({message}); records wait and polls are held back"),
                        data: serde_json::json!({"error": message}),
                    });
                    let _ = self.store().append(&event);
                }
                let since = self.failing.as_ref().map_or(now, |f| f.0);
                if !e.is_transient() || now.duration_since(since) >= FATAL_AFTER {
                    if self.fatal_tx.borrow().is_none() {
                        tracing::error!(error = %message, failing_for = ?now.duration_since(since), "outbox store failed for good");
                        let _ = self.fatal_tx.send(Some(format!(
                            "the outbox cannot write ({message}) for {} s",
                            now.duration_since(since).as_secs()
                        )));
                    }
                } else if now.duration_since(self.last_reopen) >= REOPEN_EVERY {
                    // sled refuses every write after an I/O error: start it again.
                    self.last_reopen = now;
                    if let Err(e) = self.store().reopen() {
                        tracing::warn!(error = %e, "outbox reopen failed");
                    }
                }
                Err(e)
            }
        }
    }

    fn publish(&mut self) {
        let mut stats = self.store().stats();
        stats.error = self.failing.as_ref().map(|f| f.1.clone());
        self.lock().stats = stats;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}
