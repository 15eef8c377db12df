//! The recorder: the one task that appends produced records to the outbox (which numbers them),
//! beside the outbox's flusher that makes them durable.
//!
//! Equipment, commands and the energy accountant send [`RecordBody`]s on one bounded channel;
//! when it is full they wait (backpressure), nothing is dropped. The recorder appends each in
//! arrival order and shares every good telemetry reading on a broadcast channel with whoever
//! subscribed (the energy accountant), without waiting for them. It ends when every sender is
//! gone — the stop order drops them after the equipment and commands stopped — so what was
//! produced is appended before the final flush. It beats at least twice a second (watchdog).
//! When the outbox had to start fresh, its first record is the `store_recovered` event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::outbox::{Outbox, Recovery};
use crate::record::{Event, Quality, RecordBody, Telemetry};

/// Records produced but not yet appended; producers wait (backpressure) when it is full.
pub const CHANNEL: usize = 4096;

/// The record path's own tasks: the recorder and the outbox's flusher (group commit).
pub struct Recorder {
    outbox: Arc<Outbox>,
    task: JoinHandle<()>,
    flusher_stop: watch::Sender<bool>,
    flusher: JoinHandle<()>,
    /// Bumped at least twice a second while the recorder lives (watchdog).
    pub beats: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the recorder and the flusher (every `flush_interval`): returns them and the
    /// channel producers send on. A `recovery` (the store started fresh) becomes the first
    /// record, a `store_recovered` event.
    pub fn start(
        outbox: Arc<Outbox>,
        recovery: Option<Recovery>,
        tap: broadcast::Sender<Telemetry>,
        flush_interval: Duration,
    ) -> (Recorder, mpsc::Sender<RecordBody>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        if let Some(rec) = recovery {
            let moved_to = rec.moved_to.as_ref().map(|p| p.display().to_string());
            tracing::error!(moved_to = ?moved_to, reason = %rec.reason, "outbox store lost (unreadable: moved aside; or missing); started fresh");
            let event = Event::store_recovered(moved_to.as_deref(), &rec.reason);
            // The channel is new and empty: this cannot fail.
            let _ = tx.try_send(RecordBody::Event(event));
        }
        let (flusher_stop, stop_rx) = watch::channel(false);
        let flusher = tokio::spawn(outbox.clone().run_flusher(flush_interval, stop_rx));
        let beats = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(rx, outbox.clone(), tap, beats.clone()));
        let recorder = Recorder {
            outbox,
            task,
            flusher_stop,
            flusher,
            beats,
        };
        (recorder, tx)
    }

    /// Once every sender is gone: waits until `until` for the recorder to append what was
    /// produced (then aborts it, loudly), and flushes the outbox.
    pub async fn drain(&mut self, until: Instant) {
        if tokio::time::timeout_at(until, &mut self.task)
            .await
            .is_err()
        {
            tracing::error!("recorder: still appending at its stop deadline; aborted (records not yet appended are lost)");
            self.task.abort();
        }
        if let Err(e) = self.outbox.flush().await {
            tracing::error!(error = %e, "outbox flush at stop failed");
        }
    }

    /// Stops the flusher (which flushes a last time) until `until`, then aborts it.
    pub async fn close(&mut self, until: Instant) {
        let _ = self.flusher_stop.send(true);
        if tokio::time::timeout_at(until, &mut self.flusher)
            .await
            .is_err()
        {
            tracing::warn!("outbox flusher: did not finish within the stop budget; aborted");
            self.flusher.abort();
        }
    }

    /// The outbox it appends to.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Handles to abort both tasks (a second stop signal).
    pub fn abort_handles(&self) -> [AbortHandle; 2] {
        [self.task.abort_handle(), self.flusher.abort_handle()]
    }
}

/// Runs until every sender of `records` is dropped.
async fn run(
    mut records: mpsc::Receiver<RecordBody>,
    outbox: Arc<Outbox>,
    tap: broadcast::Sender<Telemetry>,
    beats: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            r = records.recv() => match r {
                Some(body) => {
                    if let RecordBody::Telemetry(t) = &body {
                        if t.quality == Quality::Good && tap.receiver_count() > 0 {
                            let _ = tap.send(t.clone());
                        }
                    }
                    if let Err(e) = outbox.append(&body) {
                        tracing::error!(error = %e, stream = %body.stream(), "cannot store a record");
                    }
                    beats.fetch_add(1, Ordering::Relaxed);
                }
                None => return,
            },
            _ = tick.tick() => { beats.fetch_add(1, Ordering::Relaxed); }
        }
    }
}
