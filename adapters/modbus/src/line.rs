//! The line owner: one task per line — a serial port, or a TCP endpoint (`host:port`) such as a
//! Modbus TCP→RTU gateway — serving every unit on it, one exchange at a time.
//!
//! An RS-485 line opens exclusively and carries one frame at a time; a gateway in front of one
//! often accepts only 1–4 connections and forwards one request at a time. So each line has one
//! owner ([`Line::run`]), the only code that opens, reads or writes its connection; the units'
//! tasks ([`crate::run_unit`]) hand it exchanges through a [`LineHandle`].
//!
//! Invariants:
//! - exchanges are strictly sequential and served in arrival order. A unit's task is sequential
//!   too, so a unit has at most one exchange waiting: among units with work, service is
//!   round-robin, and an exchange waits at most for one exchange of each other unit of the line;
//! - each exchange names its unit (`set_slave` before the call) and runs under that unit's own
//!   timeout: a silent unit costs the others at most its own timeout per exchange, and its
//!   unit task backs off while it is down (the per-unit circuit breaker), so it rarely does;
//! - on a serial line the inter-frame silence ([`crate::session::inter_frame_gap`], 3.5
//!   characters) is kept between the end of one frame — or of a timeout — and the next request;
//! - any timeout, transport or protocol error drops the connection (tokio-modbus cannot
//!   resynchronise: a late answer would be taken for the next request's); the next exchange
//!   reopens it after the gap (a serial port is flushed on open). A Modbus exception leaves it
//!   in place: the unit answered, the link is fine;
//! - a line that cannot be opened is retried with capped, jittered backoff
//!   ([`OPEN_BACKOFF_BASE`] … [`OPEN_BACKOFF_CAP`]); exchanges arriving meanwhile fail at once with
//!   the reason (`Failure::NotSent`), they never queue behind reopen attempts;
//! - an exchange whose requester is gone (its unit stopped) is skipped, or abandoned mid-way
//!   (which drops the connection); the task ends when every handle is dropped or at shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cabinetd_backoff::Backoff;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::slave::SlaveContext as _;
use tokio_modbus::{Request, Response, Slave};

use crate::error::Error;
use crate::session::{describe, AnyConnector, Connector};
use crate::Transport;

/// First delay before opening again a line that could not be opened.
pub const OPEN_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest delay between two attempts to open a line.
pub const OPEN_BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Exchanges waiting for a line. Each unit has at most one waiting, so this bounds nothing in
/// practice; a full queue makes the unit wait.
const QUEUE: usize = 64;

/// What became of one exchange: `Ok(Ok(_))` answered, `Ok(Err(code))` answered with a Modbus
/// exception, `Err(_)` no usable answer.
pub(crate) type Outcome = Result<Result<Response, u8>, Failure>;

/// Why an exchange brought no answer, and whether the device may have seen the request (which
/// makes a write's outcome unknown rather than failed).
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The request never left: the line could not be opened, or is gone.
    NotSent(Error),
    /// The request was (or may have been) sent: no answer within the timeout, or a broken one.
    Sent(Error),
}

impl Failure {
    /// The error, whichever it was.
    pub(crate) fn error(self) -> Error {
        match self {
            Failure::NotSent(e) | Failure::Sent(e) => e,
        }
    }
}

/// One request for one unit, and where its outcome goes.
struct Exchange {
    /// The unit's device name, for errors.
    device: Arc<str>,
    unit: u8,
    timeout: Duration,
    request: Request<'static>,
    reply: oneshot::Sender<Outcome>,
}

/// Hands exchanges to a line's owner. Cheap to clone: one per unit of the line.
#[derive(Debug, Clone)]
pub struct LineHandle {
    tx: mpsc::Sender<Exchange>,
}

impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("device", &self.device)
            .field("unit", &self.unit)
            .field("request", &describe(&self.request))
            .finish()
    }
}

impl LineHandle {
    /// Sends `request` to `unit` under `timeout` and waits for the outcome.
    pub(crate) async fn call(
        &self,
        device: &Arc<str>,
        unit: u8,
        timeout: Duration,
        request: Request<'static>,
    ) -> Outcome {
        let (reply, answer) = oneshot::channel();
        let exchange = Exchange {
            device: device.clone(),
            unit,
            timeout,
            request,
            reply,
        };
        if self.tx.send(exchange).await.is_err() {
            return Err(Failure::NotSent(Error::Stopped));
        }
        // The owner took it, then stopped: it may have been on the wire.
        answer.await.unwrap_or(Err(Failure::Sent(Error::Stopped)))
    }
}

/// The owner of one line and its one connection (see the module docs).
pub struct Line<C: Connector = AnyConnector> {
    connector: C,
    rx: mpsc::Receiver<Exchange>,
    ctx: Option<Context>,
    gap: Duration,
    /// No request is sent before this instant (the inter-frame silence).
    quiet_until: Instant,
    backoff: Backoff,
    /// While the line cannot be opened: why, and when to try again.
    open_failed: Option<(Error, Instant)>,
    /// For logs: the address or serial path.
    name: String,
}

impl<C: Connector> std::fmt::Debug for Line<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("name", &self.name)
            .field("open", &self.ctx.is_some())
            .finish()
    }
}

/// A line reached through `connector`, named `name` in logs: the handle for its units, and the
/// owner to run ([`Line::run`]).
pub fn line<C: Connector>(name: impl Into<String>, connector: C) -> (LineHandle, Line<C>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let gap = connector.frame_gap();
    let line = Line {
        connector,
        rx,
        ctx: None,
        gap,
        quiet_until: Instant::now(),
        backoff: Backoff::new(OPEN_BACKOFF_BASE, OPEN_BACKOFF_CAP),
        open_failed: None,
        name: name.into(),
    };
    (LineHandle { tx }, line)
}

/// The line of `transport` (see [`LineKey`] for which devices share one).
pub fn line_for(transport: &Transport) -> (LineHandle, Line<AnyConnector>) {
    line(
        LineKey::of(transport).to_string(),
        AnyConnector::new(transport),
    )
}

/// What makes devices share a line: the same serial device path, or the same TCP `host:port`
/// (as written, after the default port; the host compared without regard to case). Devices with
/// the same key must be served by one [`Line`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LineKey {
    /// A Modbus TCP endpoint.
    Tcp(String),
    /// A serial line.
    Serial(std::path::PathBuf),
}

impl LineKey {
    /// The line `transport` reaches.
    pub fn of(transport: &Transport) -> LineKey {
        match transport {
            Transport::Tcp { address } => LineKey::Tcp(address.to_ascii_lowercase()),
            Transport::Rtu(s) => LineKey::Serial(s.path.clone()),
        }
    }
}

impl std::fmt::Display for LineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineKey::Tcp(a) => write!(f, "tcp {a}"),
            LineKey::Serial(p) => write!(f, "serial {}", p.display()),
        }
    }
}

/// How an exchange on an open connection ended.
enum Ended {
    Answered(Result<Result<Response, tokio_modbus::ExceptionCode>, tokio_modbus::Error>),
    TimedOut,
    Abandoned,
}

impl<C: Connector> Line<C> {
    /// Serves exchanges until `shutdown` resolves or every [`LineHandle`] is dropped.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let exchange = tokio::select! {
                biased;
                () = &mut shutdown => break,
                ex = self.rx.recv() => match ex {
                    Some(ex) => ex,
                    None => break,
                },
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = self.serve(exchange) => {}
            }
        }
        tracing::debug!(line = %self.name, "modbus line closed");
    }

    fn drop_connection(&mut self) {
        // Dropping the stream closes it; a graceful `disconnect()` could itself hang.
        self.ctx = None;
        self.quiet_until = Instant::now() + self.gap;
    }

    /// Opens the connection if needed; `Err` is the outcome to reply.
    async fn open(&mut self, ex: &mut Exchange) -> Result<(), Option<Failure>> {
        if self.ctx.is_some() {
            return Ok(());
        }
        if let Some((error, retry_at)) = &self.open_failed {
            if Instant::now() < *retry_at {
                return Err(Some(Failure::NotSent(error.clone())));
            }
        }
        tokio::time::sleep_until(self.quiet_until).await;
        let opened = tokio::select! {
            r = tokio::time::timeout(ex.timeout, self.connector.connect()) => r,
            () = ex.reply.closed() => return Err(None),
        };
        let error = match opened {
            Ok(Ok(ctx)) => {
                if self.open_failed.take().is_some() {
                    tracing::info!(line = %self.name, "modbus line open again");
                }
                self.backoff.reset();
                self.ctx = Some(ctx);
                return Ok(());
            }
            Ok(Err(e)) => e,
            Err(_) => Error::Timeout {
                device: ex.device.to_string(),
                request: "connect".into(),
                after: ex.timeout,
            },
        };
        if self.open_failed.is_none() {
            tracing::warn!(line = %self.name, %error, "cannot open the modbus line; retrying with backoff");
        }
        let retry_at = Instant::now() + self.gap + self.backoff.next_delay(fastrand::f64());
        self.open_failed = Some((error.clone(), retry_at));
        Err(Some(Failure::NotSent(error)))
    }

    async fn serve(&mut self, mut ex: Exchange) {
        if ex.reply.is_closed() {
            return;
        }
        match self.open(&mut ex).await {
            Ok(()) => {}
            Err(Some(failure)) => {
                let _ = ex.reply.send(Err(failure));
                return;
            }
            Err(None) => return,
        }
        tokio::time::sleep_until(self.quiet_until).await;
        let what = describe(&ex.request);
        let ended = {
            let Some(ctx) = self.ctx.as_mut() else {
                return;
            };
            ctx.set_slave(Slave(ex.unit));
            tokio::select! {
                r = tokio::time::timeout(ex.timeout, ctx.call(ex.request)) => match r {
                    Ok(answer) => Ended::Answered(answer),
                    Err(_) => Ended::TimedOut,
                },
                () = ex.reply.closed() => Ended::Abandoned,
            }
        };
        self.quiet_until = Instant::now() + self.gap;
        let outcome = match ended {
            Ended::Abandoned => {
                self.drop_connection();
                return;
            }
            Ended::Answered(Ok(Ok(response))) => Ok(Ok(response)),
            Ended::Answered(Ok(Err(code))) => Ok(Err(u8::from(code))),
            Ended::Answered(Err(e)) => Err(Failure::Sent(Error::from(e))),
            Ended::TimedOut => Err(Failure::Sent(Error::Timeout {
                device: ex.device.to_string(),
                request: what,
                after: ex.timeout,
            })),
        };
        if outcome.is_err() {
            tracing::debug!(line = %self.name, unit = ex.unit, "modbus exchange failed; dropping the connection");
            self.drop_connection();
        }
        let _ = ex.reply.send(outcome);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the fake line saw: (instant, unit) of each request received, instants of answers.
    #[derive(Default)]
    pub(crate) struct Trace {
        pub requests: Vec<(Instant, u8)>,
        pub answers: Vec<Instant>,
    }

    /// In-memory Modbus TCP line over `tokio::io::duplex`, answering FC3 for every unit except
    /// the `silent` ones with registers holding the unit id (or what FC6 wrote); FC6 is echoed.
    /// A silent unit still applies writes (a frozen device that processes them later); an
    /// `absent` unit gets a gateway's exception 0x0B.
    #[derive(Clone)]
    pub(crate) struct FakeLine {
        pub connects: Arc<AtomicUsize>,
        pub silent: Arc<Mutex<HashSet<u8>>>,
        pub absent: Arc<Mutex<HashSet<u8>>>,
        pub trace: Arc<Mutex<Trace>>,
        pub gap: Duration,
        /// Register values written with FC6, by (unit, address).
        pub holding: Arc<Mutex<std::collections::HashMap<(u8, u16), u16>>>,
    }

    impl FakeLine {
        pub(crate) fn new(silent: &[u8]) -> FakeLine {
            FakeLine {
                connects: Arc::default(),
                silent: Arc::new(Mutex::new(silent.iter().copied().collect())),
                absent: Arc::default(),
                trace: Arc::default(),
                gap: Duration::ZERO,
                holding: Arc::default(),
            }
        }
    }

    impl Connector for FakeLine {
        async fn connect(&mut self) -> Result<Context, Error> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            let (client, mut server) = tokio::io::duplex(4096);
            let me = self.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 12];
                while server.read_exact(&mut req).await.is_ok() {
                    let unit = req[6];
                    me.trace
                        .lock()
                        .unwrap()
                        .requests
                        .push((Instant::now(), unit));
                    let addr = u16::from_be_bytes([req[8], req[9]]);
                    let arg = u16::from_be_bytes([req[10], req[11]]);
                    if req[7] == 6 {
                        me.holding.lock().unwrap().insert((unit, addr), arg);
                    }
                    if me.silent.lock().unwrap().contains(&unit) {
                        continue;
                    }
                    let resp = if me.absent.lock().unwrap().contains(&unit) {
                        let mut r = vec![req[0], req[1], 0, 0, 0, 3, unit, req[7] | 0x80, 0x0B];
                        r.truncate(9);
                        r
                    } else {
                        match req[7] {
                            3 => {
                                let n = usize::from(arg) * 2;
                                let mut r = vec![req[0], req[1], 0, 0];
                                r.extend_from_slice(&((n as u16) + 3).to_be_bytes());
                                r.extend_from_slice(&[unit, 3, n as u8]);
                                let holding = me.holding.lock().unwrap();
                                for a in addr..addr + arg {
                                    let v =
                                        holding.get(&(unit, a)).copied().unwrap_or(u16::from(unit));
                                    r.extend_from_slice(&v.to_be_bytes());
                                }
                                r
                            }
                            6 => req.to_vec(),
                            _ => continue,
                        }
                    };
                    me.trace.lock().unwrap().answers.push(Instant::now());
                    if server.write_all(&resp).await.is_err() {
                        break;
                    }
                }
            });
            Ok(tokio_modbus::client::tcp::attach_slave(client, Slave(0)))
        }

        fn frame_gap(&self) -> Duration {
            self.gap
        }
    }

    fn read(n: u16) -> Request<'static> {
        Request::ReadHoldingRegisters(0, n)
    }

    #[tokio::test(start_paused = true)]
    async fn each_request_names_its_unit_on_one_connection() {
        let fake = FakeLine::new(&[]);
        let (handle, line) = line("fake", fake.clone());
        let task = tokio::spawn(line.run(std::future::pending()));
        let dev: Arc<str> = "d".into();
        for unit in [1u8, 2, 3, 2, 1] {
            match handle
                .call(&dev, unit, Duration::from_millis(100), read(2))
                .await
            {
                Ok(Ok(Response::ReadHoldingRegisters(words))) => {
                    assert_eq!(words, vec![u16::from(unit); 2])
                }
                other => panic!("unit {unit}: {other:?}"),
            }
        }
        assert_eq!(fake.connects.load(Ordering::SeqCst), 1, "one connection");
        drop(handle);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_unit_times_out_alone_and_the_line_reopens_for_the_next() {
        let fake = FakeLine::new(&[3]);
        let (handle, line) = line("fake", fake.clone());
        tokio::spawn(line.run(std::future::pending()));
        let dev: Arc<str> = "silent".into();
        let t0 = Instant::now();
        match handle
            .call(&dev, 3, Duration::from_millis(300), read(1))
            .await
        {
            Err(Failure::Sent(Error::Timeout { device, after, .. })) => {
                assert_eq!(
                    (device.as_str(), after),
                    ("silent", Duration::from_millis(300))
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(300), "its own timeout");
        // The next unit is served at once, on a fresh connection (no late answer can be taken
        // for its own).
        assert!(matches!(
            handle
                .call(&dev, 1, Duration::from_millis(300), read(1))
                .await,
            Ok(Ok(_))
        ));
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        assert_eq!(fake.connects.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_inter_frame_silence_is_kept_between_units() {
        let mut fake = FakeLine::new(&[9]);
        fake.gap = Duration::from_millis(4);
        let (handle, line) = line("fake", fake.clone());
        tokio::spawn(line.run(std::future::pending()));
        let dev: Arc<str> = "d".into();
        let timeout = Duration::from_millis(50);
        for unit in [1u8, 2, 9, 1, 2] {
            let _ = handle.call(&dev, unit, timeout, read(1)).await;
        }
        let trace = fake.trace.lock().unwrap();
        let units: Vec<u8> = trace.requests.iter().map(|(_, u)| *u).collect();
        assert_eq!(units, [1, 2, 9, 1, 2]);
        // Each request starts at least one gap after the previous frame ended (an answer, or
        // the silent unit's timeout).
        let at = |i: usize| trace.requests[i].0;
        assert!(at(1) >= trace.answers[0] + fake.gap);
        assert!(at(2) >= trace.answers[1] + fake.gap);
        assert!(at(3) >= at(2) + timeout + fake.gap);
        assert!(at(4) >= trace.answers[2] + fake.gap);
    }

    /// A connector that cannot open its line.
    struct Unplugged(Arc<AtomicUsize>);

    impl Connector for Unplugged {
        async fn connect(&mut self) -> Result<Context, Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Error::Serial("/dev/ttyUSB9: no such file".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_that_cannot_open_fails_fast_and_retries_with_backoff() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let (handle, line) = line("unplugged", Unplugged(attempts.clone()));
        tokio::spawn(line.run(std::future::pending()));
        let dev: Arc<str> = "d".into();
        let t0 = Instant::now();
        for _ in 0..10 {
            match handle.call(&dev, 1, Duration::from_secs(1), read(1)).await {
                Err(Failure::NotSent(Error::Serial(m))) => assert!(m.contains("ttyUSB9")),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "no exchange waited");
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            1,
            "one attempt per backoff"
        );
        tokio::time::sleep(OPEN_BACKOFF_CAP).await;
        let _ = handle.call(&dev, 1, Duration::from_secs(1), read(1)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn devices_share_a_line_by_path_or_endpoint() {
        let tcp = |a: &str| Transport::Tcp { address: a.into() };
        assert_eq!(
            LineKey::of(&tcp("GW.local:502")),
            LineKey::of(&tcp("gw.local:502"))
        );
        assert_ne!(
            LineKey::of(&tcp("gw.local:502")),
            LineKey::of(&tcp("gw.local:503"))
        );
        assert_eq!(
            LineKey::of(&tcp("10.0.0.5:502")).to_string(),
            "tcp 10.0.0.5:502"
        );
    }
}
