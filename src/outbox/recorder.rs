//! The recorder: takes the records the equipment produced (a bounded channel) and hands them to
//! the outbox thread in batches, in order. It never drops one: when the outbox takes no more
//! (its store cannot write, see [`super::Outbox`]), the recorder waits, the record channel
//! fills and the producers' `send().await` — the devices' polls — wait with it. The outbox
//! raises `outbox_write_failed` when that starts; the recorder logs how long it was held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::record::RecordBody;

use super::Outbox;

/// Records taken from the channel at once.
const BATCH: usize = 256;
/// How often the recorder proves it is alive when idle (and while held back).
pub const BEAT_EVERY: Duration = Duration::from_millis(500);

/// Run until the record channel closes (every producer stopped), then return once the outbox
/// has every record. `observe` sees each record first (the energy accountant); `beat` is called
/// at least every [`BEAT_EVERY`] (the watchdog's proof of progress).
pub async fn run(
    mut rx: mpsc::Receiver<RecordBody>,
    outbox: Arc<Outbox>,
    mut observe: impl FnMut(&RecordBody) + Send,
    beat: impl Fn() + Send,
) {
    let mut tick = tokio::time::interval(BEAT_EVERY);
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => {
                if n == 0 {
                    return;
                }
                buf.iter().for_each(&mut observe);
                let batch = std::mem::replace(&mut buf, Vec::with_capacity(BATCH));
                if let Err(batch) = outbox.try_push(batch) {
                    let held = Instant::now();
                    tracing::warn!("the outbox takes no more records for now: the devices are held back");
                    let push = outbox.push(batch);
                    tokio::pin!(push);
                    loop {
                        tokio::select! {
                            r = &mut push => {
                                if r.is_err() {
                                    tracing::error!("the outbox has stopped; records can no longer be stored");
                                    return;
                                }
                                break;
                            }
                            _ = tick.tick() => beat(),
                        }
                    }
                    tracing::warn!(held_for = ?held.elapsed(), "the outbox takes records again");
                }
                beat();
            }
            _ = tick.tick() => beat(),
        }
    }
}
