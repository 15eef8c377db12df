//! The per-unit task: polls on a fixed period, executes writes, survives a dead unit — on a line
//! it shares with other units ([`mod@crate::line`]).
//!
//! Invariants:
//! - one task per unit (a `[[modbus]]` device), strictly sequential: at most one exchange of it
//!   waits for the line, so a unit that never answers delays each other unit of its line by at
//!   most its own timeout, and delays nothing on other lines;
//! - polls start on a fixed period ([`MissedTickBehavior::Delay`]): a slow poll postpones the
//!   next one instead of bursting to catch up; [`PollReport::started`] is the poll's own instant,
//!   on which report-by-exception heartbeats are measured (not when the report is processed);
//! - every failed poll yields one [`DeviceEvent::PollFailed`]; the unit's state changes are
//!   reported once per transition: [`DeviceEvent::Down`] after the first failure (also when the
//!   unit was never reachable), [`DeviceEvent::Up`] before the first [`DeviceEvent::Poll`] after
//!   a successful poll. A gateway's "target device failed to respond" or "path unavailable"
//!   exception to a read is such a failure (the unit is down, not one of its points);
//! - while down, the unit is not polled but probed, after a capped exponential backoff with
//!   jitter ([`BACKOFF_BASE`] … [`BACKOFF_CAP`]) reset by a successful poll: the per-unit
//!   circuit breaker that keeps a dead unit from taking its line's time from the others;
//! - writes are validated before touching the bus; while the unit is down they fail
//!   immediately with [`Error::DeviceDown`] instead of queueing behind probes, and a write whose
//!   requester has given up is not sent;
//! - a write that may have reached the unit unconfirmed (timeout, broken link, gateway target
//!   silent) is answered [`Error::OutcomeUnknown`], never plain failure; the first poll after the
//!   unit answers again reads the point and reports [`DeviceEvent::WriteOutcome`] with the value
//!   actually there. At most one such write is remembered per point (the task's memory only: a
//!   restart or reload forgets it).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cabinetd_backoff::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::decode::{decode_bit, decode_registers, encode_write, same_value, Value};
use crate::error::{Error, PointError, GATEWAY_PATH_UNAVAILABLE, GATEWAY_TARGET_FAILED};
use crate::line::{line, line_for, Failure, LineHandle};
use crate::plan::{plan, point_width, ReadRequest};
use crate::session::{read_data, read_request, write_request, Connector, ReadData};
use crate::DeviceSpec;

/// First probe delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest probe delay: keeps recovery within a few seconds of the unit coming back.
pub const BACKOFF_CAP: Duration = Duration::from_secs(5);

/// The outcome of one complete poll.
#[derive(Debug, Clone)]
pub struct PollReport {
    /// When the poll started (wall clock: the records' `ts`).
    pub at: SystemTime,
    /// When the poll started (monotonic: the report-by-exception clock).
    pub started: Instant,
    /// How long it took.
    pub duration: Duration,
    /// One entry per point, by index into [`DeviceSpec::points`], in index order.
    pub readings: Vec<(usize, Result<Value, PointError>)>,
}

/// The value found at a point after a write whose outcome was unknown.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Index into [`DeviceSpec::points`].
    pub point: usize,
    /// What the write asked for (engineering units).
    pub requested: Value,
    /// What the point reads now.
    pub read: Result<Value, PointError>,
    /// Whether `read` is the requested value (within the point's resolution).
    pub applied: bool,
    /// The requester's id of the write ([`WriteRequest::id`]).
    pub id: Option<String>,
}

/// What a device task reports.
#[derive(Debug, Clone)]
pub enum DeviceEvent {
    /// A poll completed (the unit answered every request, possibly with exceptions).
    Poll(PollReport),
    /// A poll failed (count these as poll errors).
    PollFailed {
        /// Why.
        error: Error,
    },
    /// The unit became unreachable (once per transition; follows a `PollFailed`).
    Down {
        /// The failure that took it down.
        error: Error,
    },
    /// The unit answers again (once per transition; precedes the first `Poll`).
    Up,
    /// A write answered [`Error::OutcomeUnknown`] was resolved by reading the point back
    /// (follows the first `Poll` after the unit answers again).
    WriteOutcome(WriteOutcome),
}

/// A write command for one point of the device.
#[derive(Debug)]
pub struct WriteRequest {
    /// Point name, as in [`crate::PointSpec::name`].
    pub point: String,
    /// Engineering value (booleans for coils; numbers are scaled back to raw).
    pub value: Value,
    /// The requester's id (a command id), echoed in [`WriteOutcome::id`].
    pub id: Option<String>,
    /// Receives the outcome: `Ok` once the device acknowledged the write.
    pub reply: oneshot::Sender<Result<(), Error>>,
}

/// Runs one device on a line of its own until `shutdown` resolves, or `events` is closed.
/// Devices sharing a line (one serial path, one TCP `host:port`) must instead share one
/// [`crate::line::Line`] and run with [`run_unit`]. The stop trigger is any future (a
/// cancellation token's `cancelled_owned()`, a oneshot receiver…), as in mini-redis'
/// `server::run`.
pub async fn run_device(
    spec: DeviceSpec,
    events: mpsc::Sender<DeviceEvent>,
    writes: mpsc::Receiver<WriteRequest>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (handle, line) = line_for(&spec.transport);
    // The line ends when the unit does (its handle drops).
    tokio::join!(
        line.run(std::future::pending()),
        run_unit(spec, handle, events, writes, shutdown)
    );
}

/// [`run_device`] with an explicit connector (tests use in-memory transports).
pub async fn run_device_with<C: Connector>(
    spec: DeviceSpec,
    connector: C,
    events: mpsc::Sender<DeviceEvent>,
    writes: mpsc::Receiver<WriteRequest>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let (handle, line) = line(spec.name.clone(), connector);
    tokio::join!(
        line.run(std::future::pending()),
        run_unit(spec, handle, events, writes, shutdown)
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Unknown,
    Up,
    Down,
}

/// A write sent but not confirmed, waiting for the unit to answer again.
#[derive(Debug)]
struct Unconfirmed {
    point: usize,
    requested: Value,
    id: Option<String>,
}

struct Unit {
    spec: DeviceSpec,
    device: Arc<str>,
    requests: Vec<ReadRequest>,
    line: LineHandle,
    link: Link,
    backoff: Backoff,
    retry_at: Instant,
    unconfirmed: Vec<Unconfirmed>,
    events: mpsc::Sender<DeviceEvent>,
}

/// Runs one unit of a shared line (see [`mod@crate::line`]) until `shutdown` resolves, or `events`
/// is closed.
pub async fn run_unit(
    spec: DeviceSpec,
    line: LineHandle,
    events: mpsc::Sender<DeviceEvent>,
    mut writes: mpsc::Receiver<WriteRequest>,
    shutdown: impl Future<Output = ()> + Send,
) {
    // Polled from two `select!`s below; each leaves the loop as soon as it resolves, so it is
    // never polled again after completion.
    let mut shutdown = std::pin::pin!(shutdown);
    let mut unit = Unit {
        requests: plan(&spec.points),
        device: spec.name.as_str().into(),
        line,
        link: Link::Unknown,
        backoff: Backoff::new(BACKOFF_BASE, BACKOFF_CAP),
        retry_at: Instant::now(),
        unconfirmed: Vec::new(),
        events,
        spec,
    };
    let mut interval = tokio::time::interval(unit.spec.poll);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut writes_open = true;

    loop {
        let down = unit.link == Link::Down;
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
            () = tokio::time::sleep_until(unit.retry_at), if down => Step::Probe,
            _ = interval.tick(), if !down => Step::Poll,
        };
        // Each step is bounded by request timeouts, but several in a row can add up: shutdown
        // interrupts them (an interrupted write's requester sees its reply channel closed).
        let work = async {
            match step {
                Step::Write(w) => unit.write(w).await,
                Step::Poll => unit.poll().await,
                Step::Probe => {
                    let alive = unit.poll().await;
                    // Back up, the next poll is one period after this one, not an immediate
                    // tick for every period missed while down.
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
    Probe,
    Poll,
}

impl Unit {
    /// Sends an event; false when nobody listens any more (the task then ends).
    fn emit(&self, ev: DeviceEvent) -> impl Future<Output = bool> + Send + 'static {
        // Owns a sender clone: a `&self` held across the await would tie the future to `self`.
        let events = self.events.clone();
        async move { events.send(ev).await.is_ok() }
    }

    async fn failed(&mut self, error: Error) -> bool {
        tracing::debug!(device = %self.spec.name, %error, "modbus poll failed");
        self.retry_at = Instant::now() + self.backoff.next_delay(fastrand::f64());
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
                let outcomes = self.resolve(&report);
                if !self.emit(DeviceEvent::Poll(report)).await {
                    return false;
                }
                for outcome in outcomes {
                    if !self.emit(DeviceEvent::WriteOutcome(outcome)).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => self.failed(e).await,
        }
    }

    /// The outcomes of the unconfirmed writes, from a poll that read their points.
    fn resolve(&mut self, report: &PollReport) -> Vec<WriteOutcome> {
        std::mem::take(&mut self.unconfirmed)
            .into_iter()
            .map(|u| {
                let read = report
                    .readings
                    .iter()
                    .find(|(i, _)| *i == u.point)
                    .map_or(Err(PointError::NotFinite), |(_, r)| r.clone());
                let applied = read
                    .as_ref()
                    .is_ok_and(|v| same_value(&self.spec.points[u.point], u.requested, *v));
                tracing::info!(device = %self.spec.name, point = %self.spec.points[u.point].name, applied, "unconfirmed write read back");
                WriteOutcome {
                    point: u.point,
                    requested: u.requested,
                    read,
                    applied,
                    id: u.id,
                }
            })
            .collect()
    }

    /// One exchange with this unit through its line, under its timeout.
    async fn call(&self, request: tokio_modbus::Request<'static>) -> crate::line::Outcome {
        self.line
            .call(&self.device, self.spec.unit_id, self.spec.timeout, request)
            .await
    }

    async fn read_all(&mut self) -> Result<PollReport, Error> {
        let at = SystemTime::now();
        let started = Instant::now();
        let mut readings = Vec::with_capacity(self.spec.points.len());
        for req in &self.requests {
            match self.call(read_request(req)).await.map_err(Failure::error)? {
                Ok(response) => {
                    let data = read_data(req, response)?;
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
                // A gateway speaking for a unit that does not answer: the unit is down.
                Err(code @ (GATEWAY_PATH_UNAVAILABLE | GATEWAY_TARGET_FAILED)) => {
                    return Err(Error::Exception { code })
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
            started,
            duration: started.elapsed(),
            readings,
        })
    }

    async fn write(&mut self, w: WriteRequest) -> bool {
        let Some(idx) = self.spec.points.iter().position(|p| p.name == w.point) else {
            let _ = w.reply.send(Err(Error::Rejected {
                field: "point",
                reason: format!("no point `{}` on device `{}`", w.point, self.spec.name),
            }));
            return true;
        };
        let op = match encode_write(&self.spec.points[idx], w.value) {
            Err(e) => {
                let _ = w.reply.send(Err(e));
                return true;
            }
            Ok(_) if self.link == Link::Down => {
                let _ = w.reply.send(Err(Error::DeviceDown));
                return true;
            }
            // The requester gave up while the write waited: never apply it behind its back.
            Ok(_) if w.reply.is_closed() => return true,
            Ok(op) => op,
        };
        let answer = self.call(write_request(&op)).await;
        let mut alive = true;
        let unknown = |cause: Error| Error::OutcomeUnknown {
            cause: Box::new(cause),
        };
        let result = match answer {
            Ok(Ok(_)) => Ok(()),
            // The gateway sent it and its target did not answer: it may have been applied.
            Ok(Err(code @ GATEWAY_TARGET_FAILED)) => {
                let e = Error::Exception { code };
                self.remember(idx, &w);
                alive = self.failed(e.clone()).await;
                Err(unknown(e))
            }
            Ok(Err(code)) => Err(Error::Exception { code }),
            Err(Failure::Sent(e)) => {
                self.remember(idx, &w);
                alive = self.failed(e.clone()).await;
                Err(unknown(e))
            }
            Err(Failure::NotSent(e)) => {
                alive = self.failed(e.clone()).await;
                Err(e)
            }
        };
        // The requester may have given up; that is not the device's problem.
        let _ = w.reply.send(result);
        alive
    }

    fn remember(&mut self, point: usize, w: &WriteRequest) {
        self.unconfirmed.retain(|u| u.point != point);
        self.unconfirmed.push(Unconfirmed {
            point,
            requested: w.value,
            id: w.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::tests::FakeLine;
    use crate::line::Line;
    use crate::{DataType, PointSpec, Table};
    use std::sync::atomic::Ordering;

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

    fn unit(name: &str, unit_id: u8, poll_ms: u64, timeout_ms: u64) -> DeviceSpec {
        let mut s = spec();
        s.name = name.into();
        s.unit_id = unit_id;
        s.poll = Duration::from_millis(poll_ms);
        s.timeout = Duration::from_millis(timeout_ms);
        s.points[0].writable = true;
        s
    }

    /// A unit running on `line`, with its channels.
    struct Running {
        events: mpsc::Receiver<DeviceEvent>,
        writes: mpsc::Sender<WriteRequest>,
        _stop: oneshot::Sender<()>,
    }

    fn start(spec: DeviceSpec, line: &LineHandle) -> Running {
        let (ev_tx, events) = mpsc::channel(256);
        let (writes, w_rx) = mpsc::channel(4);
        let (stop, stop_rx) = oneshot::channel();
        tokio::spawn(run_unit(spec, line.clone(), ev_tx, w_rx, stopper(stop_rx)));
        Running {
            events,
            writes,
            _stop: stop,
        }
    }

    fn spawn_line(fake: &FakeLine) -> LineHandle {
        let (handle, line): (LineHandle, Line<FakeLine>) = line("fake", fake.clone());
        tokio::spawn(line.run(std::future::pending()));
        handle
    }

    fn write_req(
        point: &str,
        value: Value,
        id: Option<&str>,
    ) -> (WriteRequest, oneshot::Receiver<Result<(), Error>>) {
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            point: point.into(),
            value,
            id: id.map(Into::into),
            reply,
        };
        (req, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn silent_device_goes_down_once_then_recovers() {
        let fake = FakeLine::new(&[1]);
        let (ev_tx, mut ev_rx) = mpsc::channel(64);
        let (_w_tx, w_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_device_with(
            spec(),
            fake.clone(),
            ev_tx,
            w_rx,
            stopper(stop_rx),
        ));

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
        assert!(fake.connects.load(Ordering::SeqCst) >= 6);
        // Six timeouts of 300 ms plus backoff delays of at most 0.1+0.2+0.4+0.8+1.6 s.
        assert!(start.elapsed() <= Duration::from_millis(6 * 300 + 3100));

        fake.silent.lock().unwrap().clear();
        let recovered = Instant::now();
        let mut saw_up = false;
        loop {
            match ev_rx.recv().await.expect("device task alive") {
                DeviceEvent::Up => saw_up = true,
                DeviceEvent::Poll(r) => {
                    assert!(saw_up, "Up precedes the first poll");
                    assert_eq!(r.readings, vec![(0, Ok(Value::UInt(1)))]);
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
        let fake = FakeLine::new(&[1]);
        let mut spec = spec();
        spec.timeout = Duration::from_secs(60);
        let (ev_tx, _ev_rx) = mpsc::channel(64);
        let (_w_tx, w_rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_device_with(
            spec,
            fake.clone(),
            ev_tx,
            w_rx,
            stopper(stop_rx),
        ));
        // Virtual time: the sleep lets the task connect and send its first request.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fake.connects.load(Ordering::SeqCst), 1);
        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_millis(10), task)
            .await
            .expect("stops without waiting for the 60 s request timeout")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_validated_and_fail_fast_while_down() {
        let fake = FakeLine::new(&[1]);
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
        let (req, rx) = write_req("x", Value::Int(70_000), None);
        w_tx.send(req).await.unwrap();
        assert!(matches!(
            rx.await.unwrap(),
            Err(Error::Rejected { field: "value", .. })
        ));
        let (req, rx) = write_req("x", Value::Int(7), None);
        w_tx.send(req).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(1), rx).await;
        match r.expect("answered at once").unwrap() {
            Err(Error::DeviceDown) => {}
            other => panic!("{other:?}"),
        }
        stop_tx.send(()).unwrap();
        task.await.unwrap();
    }

    /// Issue 13 item 0: three units on one line, one silent. The two others keep their poll
    /// rate within their own timeouts; the silent one is down, once; each has its own events.
    #[tokio::test(start_paused = true)]
    async fn a_silent_unit_does_not_starve_the_others_of_its_line() {
        let fake = FakeLine::new(&[3]);
        let line = spawn_line(&fake);
        let (poll, timeout) = (200, 150);
        let mut units: Vec<Running> = (1..=3)
            .map(|u| start(unit(&format!("u{u}"), u, poll, timeout), &line))
            .collect();
        tokio::time::sleep(Duration::from_secs(20)).await;

        for (i, u) in units.iter_mut().enumerate().take(2) {
            let mut polls = Vec::new();
            while let Ok(ev) = u.events.try_recv() {
                match ev {
                    DeviceEvent::Poll(r) => {
                        assert_eq!(r.readings, vec![(0, Ok(Value::UInt(i as u64 + 1)))]);
                        polls.push(r.started);
                    }
                    DeviceEvent::Up => {}
                    other => panic!("unit {}: {other:?}", i + 1),
                }
            }
            assert!(
                polls.len() >= 20_000 / (poll + timeout) as usize,
                "{}",
                polls.len()
            );
            let worst = polls.windows(2).map(|w| w[1] - w[0]).max().unwrap();
            assert!(
                worst <= Duration::from_millis(poll + timeout),
                "unit {}: a poll came {worst:?} after the previous one",
                i + 1
            );
        }
        let (mut downs, mut failures) = (0, 0);
        while let Ok(ev) = units[2].events.try_recv() {
            match ev {
                DeviceEvent::Down { error } => {
                    assert!(matches!(error, Error::Timeout { ref device, .. } if device == "u3"));
                    downs += 1;
                }
                DeviceEvent::PollFailed { .. } => failures += 1,
                other => panic!("silent unit: {other:?}"),
            }
        }
        assert_eq!(downs, 1);
        // The breaker: probes back off to one every few seconds, not one per poll period.
        assert!((5..=20).contains(&failures), "{failures} probes in 20 s");
        let requests = fake.trace.lock().unwrap().requests.clone();
        let silent = requests.iter().filter(|(_, u)| *u == 3).count();
        // Every probe sent was reported as failed, but the last one may still be waiting for its
        // timeout when the 20 s end (it flaked as 11 requests vs 10 failures).
        assert!(
            silent == failures || silent == failures + 1,
            "{silent} probes sent, {failures} reported"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_gateway_reporting_its_target_silent_takes_the_unit_down_not_the_line() {
        let fake = FakeLine::new(&[]);
        fake.absent.lock().unwrap().insert(2);
        let line = spawn_line(&fake);
        let mut present = start(unit("u1", 1, 100, 100), &line);
        let mut absent = start(unit("u2", 2, 100, 100), &line);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut polls = 0;
        while let Ok(ev) = present.events.try_recv() {
            if let DeviceEvent::Poll(_) = ev {
                polls += 1;
            }
        }
        assert!(polls >= 25, "{polls}");
        match absent.events.try_recv().unwrap() {
            DeviceEvent::PollFailed { error } => {
                assert_eq!(error.exception_code(), Some(GATEWAY_TARGET_FAILED))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            absent.events.try_recv().unwrap(),
            DeviceEvent::Down { .. }
        ));
        assert_eq!(
            fake.connects.load(Ordering::SeqCst),
            1,
            "the line stays open"
        );
    }

    /// Issue 13 item 12: a write that timed out is an unknown outcome; once the unit answers
    /// again the point is read back and the value found reported with the write's id.
    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_write_is_read_back_when_the_unit_answers_again() {
        let fake = FakeLine::new(&[]);
        let line = spawn_line(&fake);
        let mut u = start(unit("meter", 1, 200, 300), &line);
        assert!(matches!(u.events.recv().await, Some(DeviceEvent::Up)));
        assert!(matches!(u.events.recv().await, Some(DeviceEvent::Poll(_))));

        // Frozen: takes the write, applies it, answers nothing.
        fake.silent.lock().unwrap().insert(1);
        let (req, rx) = write_req("x", Value::UInt(42), Some("c-7"));
        u.writes.send(req).await.unwrap();
        let err = rx.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::OutcomeUnknown { .. }));
        assert_eq!(
            err.to_string(),
            "unknown: no response from meter to write holding register 0 within 300ms; the device may still apply it"
        );
        fake.silent.lock().unwrap().clear();
        let outcome = loop {
            match u.events.recv().await.unwrap() {
                DeviceEvent::WriteOutcome(o) => break o,
                DeviceEvent::Poll(r) => assert_eq!(r.readings[0].1, Ok(Value::UInt(42))),
                _ => {}
            }
        };
        assert_eq!(
            outcome,
            WriteOutcome {
                point: 0,
                requested: Value::UInt(42),
                read: Ok(Value::UInt(42)),
                applied: true,
                id: Some("c-7".into()),
            }
        );
        // Resolved once.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while let Ok(ev) = u.events.try_recv() {
            assert!(!matches!(ev, DeviceEvent::WriteOutcome(_)), "{ev:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_whose_requester_gave_up_is_not_sent() {
        let fake = FakeLine::new(&[]);
        let line = spawn_line(&fake);
        let mut u = start(unit("meter", 1, 60_000, 300), &line);
        assert!(matches!(u.events.recv().await, Some(DeviceEvent::Up)));
        let (req, rx) = write_req("x", Value::UInt(5), None);
        drop(rx);
        u.writes.send(req).await.unwrap();
        let (req, rx) = write_req("x", Value::UInt(6), None);
        u.writes.send(req).await.unwrap();
        rx.await.unwrap().unwrap();
        let holding = fake.holding.lock().unwrap();
        assert_eq!(holding.get(&(1, 0)), Some(&6));
        let writes = fake.trace.lock().unwrap().requests.len();
        assert_eq!(writes, 2, "one poll and one write, not two");
    }
}
