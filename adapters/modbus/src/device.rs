//! The per-device task: polls on a fixed period, executes writes, survives a dead device.
//!
//! Invariants:
//! - one task per device, owning its one connection; requests are strictly sequential, so a
//!   device that never answers delays nobody but itself;
//! - polls start on a fixed period ([`MissedTickBehavior::Delay`]): a slow poll postpones the
//!   next one instead of bursting to catch up;
//! - every failed poll or connect attempt yields one [`DeviceEvent::PollFailed`]; the link
//!   state changes are reported once per transition: [`DeviceEvent::Down`] after the first
//!   failure (also when the device was never reachable), [`DeviceEvent::Up`] before the first
//!   [`DeviceEvent::Poll`] after a successful poll (a connection alone proves nothing: a hung
//!   device may still accept TCP connections);
//! - while down, reconnects follow a capped exponential backoff with jitter
//!   ([`BACKOFF_BASE`] … [`BACKOFF_CAP`]), independent of the poll period, and are reset by a
//!   successful poll; on serial lines an inter-frame gap is left first;
//! - writes are validated before touching the bus; while the device is down they fail
//!   immediately with [`Error::DeviceDown`] instead of queueing behind reconnects.

use std::future::Future;
use std::time::{Duration, SystemTime};

use cabinetd_backoff::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::decode::{decode_bit, decode_registers, encode_write, Value};
use crate::error::{Error, PointError};
use crate::plan::{plan, point_width, ReadRequest};
use crate::session::{Connector, ReadData, RtuConnector, Session, TcpConnector};
use crate::{DeviceSpec, Transport};

/// First reconnect delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay: keeps recovery within a few seconds of the device coming back.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The outcome of one complete poll.
#[derive(Debug, Clone)]
pub struct PollReport {
    /// When the poll started.
    pub at: SystemTime,
    /// How long it took.
    pub duration: Duration,
    /// One entry per point, by index into [`DeviceSpec::points`], in index order.
    pub readings: Vec<(usize, Result<Value, PointError>)>,
}

/// What a device task reports.
#[derive(Debug, Clone)]
pub enum DeviceEvent {
    /// A poll completed (the device answered every request, possibly with exceptions).
    Poll(PollReport),
    /// A poll or connect attempt failed (count these as poll errors).
    PollFailed {
        /// Why.
        error: Error,
    },
    /// The device became unreachable (once per transition; follows a `PollFailed`).
    Down {
        /// The failure that took it down.
        error: Error,
    },
    /// The device answers again (once per transition; precedes the first `Poll`).
    Up,
}

/// A write command for one point of the device.
#[derive(Debug)]
pub struct WriteRequest {
    /// Point name, as in [`crate::PointSpec::name`].
    pub point: String,
    /// Engineering value (booleans for coils; numbers are scaled back to raw).
    pub value: Value,
    /// Receives the outcome: `Ok` once the device acknowledged the write.
    pub reply: oneshot::Sender<Result<(), Error>>,
}

/// Runs a device until `shutdown` resolves, or `events` is closed. Picks the connector from
/// [`DeviceSpec::transport`]. The stop trigger is any future (a cancellation token's
/// `cancelled_owned()`, a oneshot receiver…), as in mini-redis' `server::run`.
pub async fn run_device(
    spec: DeviceSpec,
    events: mpsc::Sender<DeviceEvent>,
    writes: mpsc::Receiver<WriteRequest>,
    shutdown: impl Future<Output = ()> + Send,
) {
    match spec.transport.clone() {
        Transport::Tcp { address } => {
            let connector = TcpConnector::new(address, spec.unit_id);
            run_device_with(spec, connector, events, writes, shutdown).await
        }
        Transport::Rtu(settings) => {
            let connector = RtuConnector::new(settings, spec.unit_id);
            run_device_with(spec, connector, events, writes, shutdown).await
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Up,
    Down,
}

struct Device<C> {
    spec: DeviceSpec,
    requests: Vec<ReadRequest>,
    connector: C,
    session: Session,
    link: Link,
    backoff: Backoff,
    retry_at: Instant,
    events: mpsc::Sender<DeviceEvent>,
}

/// [`run_device`] with an explicit connector (tests use in-memory transports).
pub async fn run_device_with<C: Connector>(
    spec: DeviceSpec,
    connector: C,
    events: mpsc::Sender<DeviceEvent>,
    mut writes: mpsc::Receiver<WriteRequest>,
    shutdown: impl Future<Output = ()> + Send,
) {
    // Polled from two `select!`s below; each leaves the loop as soon as it resolves, so it is
    // never polled again after completion.
    let mut shutdown = std::pin::pin!(shutdown);
    let mut dev = Device {
        requests: plan(&spec.points),
        session: Session::new(&spec.name, spec.timeout),
        connector,
        link: Link::Unknown,
        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
        retry_at: Instant::now(),
        events,
        spec,
    };
    let mut interval = tokio::time::interval(dev.spec.poll);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut writes_open = true;

    loop {
        let connected = dev.session.is_connected();
        let step = tokio::select! {
            biased;
            () = &mut shutdown => break,
            w = writes.recv(), if writes_open => match w {
                Some(w) => Step::Write(w),
                None => {
                    writes_open = false;
                    continue;
                }
            },
            () = tokio::time::sleep_until(dev.retry_at), if !connected => Step::Reconnect,
            _ = interval.tick(), if connected => Step::Poll,
        };
        // Each step is bounded by request timeouts, but several in a row can add up: shutdown
        // interrupts them (an interrupted write's requester sees its reply channel closed).
        let work = async {
            match step {
                Step::Write(w) => dev.write(w).await,
                Step::Poll => dev.poll().await,
                Step::Reconnect => {
                    let alive = match dev.session.connect(&mut dev.connector).await {
                        Ok(()) => dev.poll().await,
                        Err(e) => dev.failed(e).await,
                    };
                    // The next poll is one period after this one, not an immediate tick.
                    interval.reset();
                    alive
                }
            }
        };
        let alive = tokio::select! {
            biased;
            () = &mut shutdown => false,
            alive = work => alive,
        };
        if !alive {
            break;
        }
    }
}

enum Step {
    Write(WriteRequest),
    Reconnect,
    Poll,
}

impl<C: Connector> Device<C> {
    /// Sends an event; false when nobody listens any more (the task then ends).
    fn emit(&self, ev: DeviceEvent) -> impl Future<Output = bool> + Send + 'static {
        // Owns a sender clone: a `&self` held across the await would make the task `!Send`
        // (the connection is not `Sync`).
        let events = self.events.clone();
        async move { events.send(ev).await.is_ok() }
    }

    async fn failed(&mut self, error: Error) -> bool {
        tracing::debug!(device = %self.spec.name, %error, "modbus poll failed");
        self.session.disconnect();
        self.retry_at =
            Instant::now() + self.connector.frame_gap() + self.backoff.next_delay(fastrand::f64());
        if !self
            .emit(DeviceEvent::PollFailed {
                error: error.clone(),
            })
            .await
        {
            return false;
        }
        if self.link != Link::Down {
            self.link = Link::Down;
            tracing::warn!(device = %self.spec.name, %error, "modbus device down");
            return self.emit(DeviceEvent::Down { error }).await;
        }
        true
    }

    async fn poll(&mut self) -> bool {
        match self.read_all().await {
            Ok(report) => {
                self.backoff.reset();
                if self.link != Link::Up {
                    self.link = Link::Up;
                    tracing::info!(device = %self.spec.name, "modbus device up");
                    if !self.emit(DeviceEvent::Up).await {
                        return false;
                    }
                }
                self.emit(DeviceEvent::Poll(report)).await
            }
            Err(e) => self.failed(e).await,
        }
    }

    async fn read_all(&mut self) -> Result<PollReport, Error> {
        let at = SystemTime::now();
        let started = Instant::now();
        let gap = self.connector.frame_gap();
        let mut readings = Vec::with_capacity(self.spec.points.len());
        for (n, req) in self.requests.iter().enumerate() {
            if n > 0 && !gap.is_zero() {
                tokio::time::sleep(gap).await;
            }
            match self.session.read(req).await? {
                Ok(data) => {
                    for slot in &req.slots {
                        let point = &self.spec.points[slot.point];
                        let off = usize::from(slot.offset);
                        let value = match &data {
                            ReadData::Bits(bits) => Ok(decode_bit(bits[off])),
                            ReadData::Words(words) => decode_registers(
                                point,
                                &words[off..off + usize::from(point_width(point))],
                            ),
                        };
                        readings.push((slot.point, value));
                    }
                }
                Err(code) => {
                    readings.extend(
                        req.slots
                            .iter()
                            .map(|s| (s.point, Err(PointError::Exception(code)))),
                    );
                }
            }
        }
        readings.sort_by_key(|(i, _)| *i);
        Ok(PollReport {
            at,
            duration: started.elapsed(),
            readings,
        })
    }

    async fn write(&mut self, w: WriteRequest) -> bool {
        let mut alive = true;
        let result = match self.spec.points.iter().find(|p| p.name == w.point) {
            None => Err(Error::Rejected {
                field: "point",
                reason: format!("no point `{}` on device `{}`", w.point, self.spec.name),
            }),
            Some(point) => match encode_write(point, w.value) {
                Err(e) => Err(e),
                Ok(_) if !self.session.is_connected() => Err(Error::DeviceDown),
                Ok(op) => match self.session.write(&op).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(code)) => Err(Error::Exception { code }),
                    Err(e) => {
                        alive = self.failed(e.clone()).await;
                        Err(e)
                    }
                },
            },
        };
        // The requester may have given up; that is not the device's problem.
        let _ = w.reply.send(result);
        alive
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataType, PointSpec, Table};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_modbus::client::Context;

    /// In-memory device over `tokio::io::duplex`: answers FC3 with zeros unless `silent`.
    struct Fake {
        connects: Arc<AtomicUsize>,
        silent: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Connector for Fake {
        async fn connect(&mut self) -> Result<Context, Error> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            let (client, mut server) = tokio::io::duplex(1024);
            let silent = self.silent.load(Ordering::SeqCst);
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while server.read_exact(&mut req).await.is_ok() {
                    if silent {
                        continue;
                    }
                    let count = u16::from_be_bytes([req[10], req[11]]);
                    let n = usize::from(count) * 2;
                    let mut resp = vec![req[0], req[1], 0, 0];
                    resp.extend_from_slice(&((n as u16) + 3).to_be_bytes());
                    resp.extend_from_slice(&[req[6], 3, n as u8]);
                    resp.resize(resp.len() + n, 0);
                    if server.write_all(&resp).await.is_err() {
                        break;
                    }
                }
            });
            Ok(tokio_modbus::client::tcp::attach_slave(
                client,
                tokio_modbus::Slave(1),
            ))
        }
    }

    /// The stop trigger of a test: resolves when `stop_tx` sends (or is dropped).
    async fn stopper(rx: oneshot::Receiver<()>) {
        let _ = rx.await;
    }

    fn spec() -> DeviceSpec {
        let point = PointSpec::new("x", Table::Holding, 0, DataType::U16);
        let mut spec = DeviceSpec::tcp("fake", "unused:0", vec![point]);
        spec.timeout = Duration::from_millis(300);
        spec
    }

    #[tokio::test(start_paused = true)]
    async fn silent_device_goes_down_once_then_recovers() {
        let connects = Arc::new(AtomicUsize::new(0));
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let fake = Fake {
            connects: connects.clone(),
            silent: silent.clone(),
        };
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let (_w_tx, w_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_device_with(spec(), fake, ev_tx, w_rx, stopper(stop_rx)));

        let mut downs = 0;
        let mut failures = 0;
        let start = Instant::now();
        while failures < 6 {
            match ev_rx.recv().await.expect("device task alive") {
                DeviceEvent::Down { error } => {
                    assert!(matches!(error, Error::Timeout { .. }), "{error}");
                    downs += 1;
                }
                DeviceEvent::PollFailed { .. } => failures += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(downs, 1);
        assert!(connects.load(Ordering::SeqCst) >= 6);
        // Six timeouts of 300 ms plus backoff delays of at most 0.1+0.2+0.4+0.8+1.6 s.
        assert!(start.elapsed() <= Duration::from_millis(6 * 300 + 3100));

        silent.store(false, Ordering::SeqCst);
        let recovered = Instant::now();
        let mut saw_up = false;
        loop {
            match ev_rx.recv().await.expect("device task alive") {
                DeviceEvent::Up => saw_up = true,
                DeviceEvent::Poll(r) => {
                    assert!(saw_up, "Up precedes the first poll");
                    assert_eq!(r.readings, vec![(0, Ok(Value::UInt(0)))]);
                    break;
                }
                DeviceEvent::PollFailed { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        // The backoff never exceeds its cap, plus one pending timeout.
        assert!(recovered.elapsed() <= BACKOFF_CAP + Duration::from_millis(300));
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_hung_request() {
        let connects = Arc::new(AtomicUsize::new(0));
        let fake = Fake {
            connects: connects.clone(),
            silent: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let mut spec = spec();
        spec.timeout = Duration::from_secs(60);
        let (ev_tx, _ev_rx) = mpsc::channel(64);
        let (_w_tx, w_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_device_with(spec, fake, ev_tx, w_rx, stopper(stop_rx)));
        // Virtual time: the sleep lets the task connect and send its first request.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(connects.load(Ordering::SeqCst), 1);
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("stops without waiting for the 60 s request timeout")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_validated_and_fail_fast_while_down() {
        let fake = Fake {
            connects: Arc::new(AtomicUsize::new(0)),
            silent: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        };
        let mut spec = spec();
        spec.points[0].writable = true;
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let (w_tx, w_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_device_with(spec, fake, ev_tx, w_rx, stopper(stop_rx)));
        loop {
            if let DeviceEvent::Down { .. } = ev_rx.recv().await.unwrap() {
                break;
            }
        }
        let write = |point: &str, value| {
            let (reply, rx) = oneshot::channel();
            let req = WriteRequest {
                point: point.into(),
                value,
                reply,
            };
            (req, rx)
        };
        let (req, rx) = write("x", Value::Int(70_000));
        w_tx.send(req).await.unwrap();
        assert!(matches!(
            rx.await.unwrap(),
            Err(Error::Rejected { field: "value", .. })
        ));
        let (req, rx) = write("x", Value::Int(7));
        w_tx.send(req).await.unwrap();
        // The reconnect may be in progress when the write arrives; either way it is refused
        // quickly as a link problem, never queued.
        let r = tokio::time::timeout(Duration::from_secs(1), rx).await;
        match r.expect("answered promptly").unwrap() {
            Err(Error::DeviceDown) | Err(Error::Timeout { .. }) => {}
            other => panic!("{other:?}"),
        }
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }
}
