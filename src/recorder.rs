//! The recorder: the one task that hands produced records to the outbox (which numbers them
//! and makes them durable by group commit on its own thread: `outbox::recorder`).
//!
//! Equipment, commands and the energy accountant send [`RecordBody`]s on one bounded channel;
//! when it is full they wait (backpressure), nothing is dropped — also while the outbox takes
//! no more (its store cannot write). The recorder appends each in
//! arrival order and shares every good telemetry reading on a broadcast channel with whoever
//! subscribed (the energy accountant), without waiting for them. It ends when every sender is
//! gone — the stop order drops them after the equipment and commands stopped — so what was
//! produced is appended before the final flush. It beats at least twice a second (watchdog).
//! When the outbox had to start fresh, its first record is the `store_recovered` event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::outbox::{Outbox, Recovery};
use crate::record::{Event, Quality, RecordBody, Telemetry};

/// Records produced but not yet appended; producers wait (backpressure) when it is full.
pub const CHANNEL: usize = 4096;

/// The record path's own task: the recorder (the outbox's thread does the group commit).
pub struct Recorder {
    outbox: Arc<Outbox>,
    task: JoinHandle<()>,
    /// Bumped at least twice a second while the recorder lives (watchdog).
    pub beats: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the recorder: returns it and the channel producers send on. A `recovery` (the
    /// store started fresh) becomes the first record, a `store_recovered` event.
    pub fn start(
        outbox: Arc<Outbox>,
        recovery: Option<Recovery>,
        tap: broadcast::Sender<Telemetry>,
    ) -> (Recorder, mpsc::Sender<RecordBody>) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        if let Some(rec) = recovery {
            let moved_to = rec.moved_to.as_ref().map(|p| p.display().to_string());
            tracing::error!(moved_to = ?moved_to, reason = %rec.reason, "outbox store lost (unreadable: moved aside; or missing); started fresh");
            let event = Event::store_recovered(moved_to.as_deref(), &rec.reason);
            // The channel is new and empty: this cannot fail.
            let _ = tx.try_send(RecordBody::Event(event));
        }
        let beats = Arc::new(AtomicU64::new(0));
        let beat = beats.clone();
        // Good readings are shown to whoever subscribed (the energy accountant), never waited for.
        let observe = move |body: &RecordBody| {
            if let RecordBody::Telemetry(t) = body {
                if t.quality == Quality::Good && tap.receiver_count() > 0 {
                    let _ = tap.send(t.clone());
                }
            }
        };
        let task = tokio::spawn(crate::outbox::recorder::run(
            rx,
            outbox.clone(),
            observe,
            move || {
                beat.fetch_add(1, Ordering::Relaxed);
            },
        ));
        let recorder = Recorder {
            outbox,
            task,
            beats,
        };
        (recorder, tx)
    }

    /// Once every sender is gone: waits until `until` for the recorder to hand what was
    /// produced to the outbox (then aborts it, loudly), and flushes the outbox.
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

    /// The outbox's last flush and close (its thread releases the store) until `until`.
    pub async fn close(&mut self, until: Instant) {
        match tokio::time::timeout_at(until, self.outbox.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "outbox close at stop failed"),
            Err(_) => tracing::warn!("outbox: did not close within the stop budget"),
        }
    }

    /// The outbox it appends to.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// A handle to abort the recorder (a second stop signal).
    pub fn abort_handle(&self) -> AbortHandle {
        self.task.abort_handle()
    }
}
