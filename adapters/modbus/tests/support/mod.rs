//! Test support: real Modbus peers (pymodbus, socat pty pairs) as child processes killed on
//! drop, and small builders for device specs.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cabinetd_modbus::{DataType, DeviceSpec, PointSpec, Table, WordOrder};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::{timeout_at, Instant};

/// How long a peer may take to start (python imports on a loaded machine).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// The interpreter with pymodbus: `$CABINETD_TEST_PYTHON`, else `<root>/tests/.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CABINETD_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "CABINETD_TEST_PYTHON={} does not exist",
            p.display()
        );
        return p;
    }
    let p = workspace_root().join("tests/.venv/bin/python");
    assert!(
        p.exists(),
        "no Python for the Modbus peer at {}: create the venv (python3 -m venv tests/.venv && \
         tests/.venv/bin/pip install -r tests/requirements.txt) or set CABINETD_TEST_PYTHON",
        p.display()
    );
    p
}

/// A child process whose stdout lines are collected; killed when dropped.
pub struct Proc {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Lines consumed so far.
    pub seen: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        let stdout_tx = tx.clone();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = stdout_tx.send(l);
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_buf = stderr.clone();
        let stderr_pipe = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let mut b = err_buf.lock().unwrap();
                b.push_str(&l);
                b.push('\n');
                // stderr lines also feed the line channel: socat reports its ptys there.
                let _ = tx.send(format!("stderr: {l}"));
            }
        });
        Proc {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a line matching `pred` (stdout, or stderr prefixed `stderr: `).
    pub async fn wait_line(&mut self, deadline: Instant, pred: impl Fn(&str) -> bool) -> String {
        loop {
            match timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Ok(None) => panic!(
                    "peer exited before the expected line; stderr:\n{}",
                    self.stderr()
                ),
                Err(_) => panic!(
                    "deadline waiting for a line; seen {:?}; stderr:\n{}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Moves every line available right now into `seen`.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Stops the process and waits for it to be gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends a signal by name (`STOP`, `CONT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("process running").to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {pid}");
    }
}

/// A pymodbus server from `tests/peers/modbus_server.py`.
pub struct Peer {
    pub proc: Proc,
    /// The port (TCP) or device path (RTU) from its `READY` line.
    pub ready: String,
    _json: Option<tempfile::NamedTempFile>,
}

impl Peer {
    /// Starts the peer with `args`, and `json` as its `--json` file when given.
    pub async fn start(args: &[&str], json: Option<&str>) -> Peer {
        let script = workspace_root().join("tests/peers/modbus_server.py");
        let mut cmd = Command::new(python());
        cmd.arg(script).args(args);
        let file = json.map(|j| {
            let f = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(f.path(), j).unwrap();
            cmd.arg("--json").arg(f.path());
            f
        });
        let mut proc = Proc::spawn(cmd);
        let line = proc
            .wait_line(Instant::now() + START_DEADLINE, |l| l.starts_with("READY "))
            .await;
        Peer {
            proc,
            ready: line["READY ".len()..].to_string(),
            _json: file,
        }
    }

    /// A TCP peer on 127.0.0.1 (port 0: any free port).
    pub async fn tcp(port: u16, extra: &[&str], json: Option<&str>) -> Peer {
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--tcp", addr.as_str()];
        args.extend_from_slice(extra);
        Peer::start(&args, json).await
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.ready)
    }

    /// `REQ`/`WRITE` lines seen so far, after draining what is available.
    pub fn requests(&mut self, prefix: &str) -> Vec<String> {
        self.proc.drain();
        self.proc
            .seen
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    }
}

/// A pty pair from `socat -d -d pty,raw,echo=0 pty,raw,echo=0`.
pub struct PtyPair {
    _proc: Proc,
    pub a: String,
    pub b: String,
}

impl PtyPair {
    pub async fn new() -> PtyPair {
        let mut cmd = Command::new("socat");
        cmd.args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"]);
        let mut proc = Proc::spawn(cmd);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ptys = Vec::new();
        while ptys.len() < 2 {
            let l = proc.wait_line(deadline, |l| l.contains("PTY is ")).await;
            ptys.push(l.rsplit("PTY is ").next().unwrap().trim().to_string());
        }
        proc.wait_line(deadline, |l| l.contains("starting data transfer loop"))
            .await;
        PtyPair {
            a: ptys.remove(0),
            b: ptys.remove(0),
            _proc: proc,
        }
    }
}

/// A read-only point with identity scaling.
pub fn pt(name: &str, table: Table, address: u16, data_type: DataType) -> PointSpec {
    PointSpec::new(name, table, address, data_type)
}

pub fn little(mut p: PointSpec) -> PointSpec {
    p.word_order = WordOrder::Little;
    p
}

pub fn scaled(mut p: PointSpec, scale: f64, offset: f64) -> PointSpec {
    p.scale = scale;
    p.offset = offset;
    p
}

pub fn writable(mut p: PointSpec) -> PointSpec {
    p.writable = true;
    p
}

pub fn tcp_device(
    name: &str,
    address: String,
    poll_ms: u64,
    timeout_ms: u64,
    points: Vec<PointSpec>,
) -> DeviceSpec {
    let mut spec = DeviceSpec::tcp(name, &address, points);
    spec.poll = Duration::from_millis(poll_ms);
    spec.timeout = Duration::from_millis(timeout_ms);
    spec
}

/// A line owner under test: its units start with [`Running::unit`]; stops when dropped.
pub struct SharedLine {
    pub handle: cabinetd_modbus::LineHandle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SharedLine {
    pub fn start(transport: &cabinetd_modbus::Transport) -> SharedLine {
        let (handle, line) = cabinetd_modbus::line_for(transport);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(line.run(async move {
            let _ = stop_rx.await;
        }));
        SharedLine {
            handle,
            _stop: stop,
        }
    }
}

/// Poll start instants (monotonic) and other events of a unit over `window`.
pub async fn collect(
    unit: &mut Running,
    until: Instant,
) -> (Vec<Instant>, Vec<cabinetd_modbus::DeviceEvent>) {
    let (mut polls, mut other) = (Vec::new(), Vec::new());
    while let Ok(Some(ev)) = timeout_at(until, unit.events.recv()).await {
        match ev {
            cabinetd_modbus::DeviceEvent::Poll(r) => polls.push(r.started),
            ev => other.push(ev),
        }
    }
    (polls, other)
}

/// The longest time between two consecutive polls.
pub fn worst_gap(polls: &[Instant]) -> Duration {
    polls
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX)
}

/// A device task under test.
pub struct Running {
    pub events: mpsc::Receiver<cabinetd_modbus::DeviceEvent>,
    writes: mpsc::Sender<cabinetd_modbus::WriteRequest>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// A unit on a shared line (see [`SharedLine`]).
    pub fn unit(spec: DeviceSpec, line: &SharedLine) -> Running {
        let handle = line.handle.clone();
        Running::spawn(|events, writes, stop| {
            cabinetd_modbus::run_unit(spec, handle, events, writes, stop)
        })
    }

    /// A device on a line of its own.
    pub fn start(spec: DeviceSpec) -> Running {
        Running::spawn(|events, writes, stop| {
            cabinetd_modbus::run_device(spec, events, writes, stop)
        })
    }

    fn spawn<F>(
        run: impl FnOnce(
            mpsc::Sender<cabinetd_modbus::DeviceEvent>,
            mpsc::Receiver<cabinetd_modbus::WriteRequest>,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ) -> F,
    ) -> Running
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (ev_tx, events) = mpsc::channel(256);
        let (writes, w_rx) = mpsc::channel(8);
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(
            ev_tx,
            w_rx,
            Box::pin(async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }),
        ));
        Running {
            events,
            writes,
            stop,
            task,
        }
    }

    pub async fn next(&mut self, deadline: Instant) -> cabinetd_modbus::DeviceEvent {
        timeout_at(deadline, self.events.recv())
            .await
            .expect("deadline waiting for a device event")
            .expect("device task ended")
    }

    /// Next poll report; `Up` is skipped, any failure panics.
    pub async fn next_poll(&mut self, deadline: Instant) -> cabinetd_modbus::PollReport {
        loop {
            match self.next(deadline).await {
                cabinetd_modbus::DeviceEvent::Poll(r) => return r,
                cabinetd_modbus::DeviceEvent::Up => {}
                other => panic!("expected a poll, got {other:?}"),
            }
        }
    }

    pub async fn write(
        &self,
        point: &str,
        value: cabinetd_modbus::Value,
    ) -> Result<(), cabinetd_modbus::Error> {
        self.write_with_id(point, value, None).await
    }

    pub async fn write_with_id(
        &self,
        point: &str,
        value: cabinetd_modbus::Value,
        id: Option<&str>,
    ) -> Result<(), cabinetd_modbus::Error> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.writes
            .send(cabinetd_modbus::WriteRequest {
                point: point.into(),
                value,
                id: id.map(Into::into),
                reply,
            })
            .await
            .expect("device task alive");
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("write answered in time")
            .expect("reply sent")
    }

    /// Requests shutdown and waits (bounded) for the task to end.
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("device task stops promptly")
            .unwrap();
    }
}

/// Reading of point `i` in `r`.
pub fn reading(
    r: &cabinetd_modbus::PollReport,
    i: usize,
) -> Result<cabinetd_modbus::Value, cabinetd_modbus::PointError> {
    r.readings
        .iter()
        .find(|(k, _)| *k == i)
        .unwrap_or_else(|| panic!("no reading for point {i}"))
        .1
        .clone()
}

pub fn float(v: Result<cabinetd_modbus::Value, cabinetd_modbus::PointError>) -> f64 {
    match v {
        Ok(cabinetd_modbus::Value::Float(f)) => f,
        other => panic!("expected a float, got {other:?}"),
    }
}
