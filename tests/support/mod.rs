//! Shared test support: real peers (Mosquitto, Python peers, the daemon binary) started per test
//! on free loopback ports, an MQTT probe that records what reaches the broker, and waits on
//! conditions with deadlines. Every child process is killed when its guard drops.
//!
//! Adapter crates include this file with `#[path = "../../../tests/support/mod.rs"] mod support;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The workspace root (the directory holding `tests/run.sh`).
pub fn root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("tests/support/mod.rs").exists() {
        assert!(dir.pop(), "workspace root with tests/support not found");
    }
    dir
}

/// The Python interpreter of the test venv: `$CABINETD_TEST_PYTHON`, else `tests/.venv/bin/python`.
/// Panics (fails the test) when missing: run `tests/run.sh`, which installs it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("CABINETD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("tests/.venv/bin/python"));
    assert!(
        p.exists(),
        "Python test venv not found at {} — run tests/run.sh (it installs the peers)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound then released).
///
/// Never the same port twice in one test process: the kernel may hand a just-released port out
/// again, and a test that asks for two ports (a simulator's and the HTTP endpoint's) got the
/// same one twice (metrics_scrape failed in CI: "listening address … is already used by
/// http.listen").
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no loopback port left that this test process has not handed out already");
}

/// Poll `f` every 20 ms until it returns `Some`, or panic naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) and reaped on drop. When it writes a log file, that log is
/// printed only if the test fails (the guard is dropped while the test panics): passing tests
/// stay quiet, a failing one shows what its peers said.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
    /// The file its stderr (and, for the daemon, stdout) goes to.
    pub log: Option<PathBuf>,
    /// Removes a log file of its own (peers without a test directory) on drop.
    _own_log: Option<tempfile::TempPath>,
}

/// Lines of a log printed for a failing test (the rest stays in the file, which is kept).
const LOG_TAIL_LINES: usize = 300;

/// Prints (the end of) `path` for a failing test.
pub fn dump_log(name: &str, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES);
    eprintln!(
        "---- {name}: {} log lines{} ({}) ----",
        lines.len(),
        if skip > 0 {
            format!(", the last {LOG_TAIL_LINES}")
        } else {
            String::new()
        },
        path.display()
    );
    for line in &lines[skip..] {
        eprintln!("{line}");
    }
    eprintln!("---- end of {name} log ----");
}

/// A log file for a peer: `stderr` of `cmd` goes to a temporary file, removed on a pass.
fn temp_log(name: &str, cmd: &mut Command) -> tempfile::TempPath {
    let file = tempfile::Builder::new()
        .prefix(&format!("{}-", name.replace(['/', ' '], "_")))
        .suffix(".log")
        .tempfile()
        .expect("a temporary log file");
    let (handle, path) = file.into_parts();
    cmd.stderr(handle);
    path
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_owned(),
            log: None,
            _own_log: None,
        }
    }

    /// Spawn with stderr in a temporary log file, printed only if the test fails.
    pub fn spawn_quiet(name: &str, cmd: &mut Command) -> Self {
        let path = temp_log(name, cmd);
        let mut g = Self::spawn(name, cmd);
        g.log = Some(path.to_path_buf());
        g._own_log = Some(path);
        g
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// Send a signal (`nix::sys::signal::Signal`).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }
    /// Wait for exit with a deadline; returns the exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_until(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().unwrap()
        })
    }
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            if let Some(log) = &self.log {
                dump_log(&self.name, log);
                if let Some(own) = self._own_log.take() {
                    // Keep the whole file for whoever debugs the failure.
                    let _ = own.keep();
                }
            }
        }
    }
}

/// Start a Python peer script from `tests/peers/` and wait for its `READY <arg>` line; returns the
/// guard and what followed READY (a port, a pty path…). Its further stdout is discarded.
pub fn python_peer(script: &str, args: &[&str]) -> (ChildGuard, String) {
    let (guard, ready, _) = spawn_peer(script, args, false);
    (guard, ready)
}

/// Like [`python_peer`], but every later stdout line is kept (e.g. the Modbus peer's `WRITE …`
/// lines: proof from the device's side that a write arrived).
pub fn python_peer_recorded(
    script: &str,
    args: &[&str],
) -> (ChildGuard, String, Arc<Mutex<Vec<String>>>) {
    spawn_peer(script, args, true)
}

fn spawn_peer(
    script: &str,
    args: &[&str],
    keep: bool,
) -> (ChildGuard, String, Arc<Mutex<Vec<String>>>) {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/peers").join(script))
        .args(args)
        .stdout(Stdio::piped());
    let mut guard = ChildGuard::spawn_quiet(script, &mut cmd);
    let stdout = guard.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let kept = lines.clone();
    std::thread::spawn(move || {
        let mut ready = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            match (line.strip_prefix("READY"), ready.take()) {
                (Some(rest), Some(tx)) => {
                    let _ = tx.send(rest.trim().to_owned());
                }
                (_, r) => {
                    ready = r;
                    if keep {
                        kept.lock().unwrap().push(line);
                    }
                }
            }
        }
    });
    let ready = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{script} did not print READY within 30 s"));
    (guard, ready, lines)
}

/// Runs `openssl ARGS` in `dir` (test certificates); fails the test on error.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is required for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh self-signed EC CA in `dir`: `ca.key`, `ca.pem` (subject `CN=cn`).
pub fn make_ca(dir: &Path, cn: &str) {
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &subject,
        ],
    );
}

/// A Mosquitto broker on a free loopback port, with persistence in a temp dir so a subscriber's
/// persistent session (and its queued QoS 1 messages) survives a broker restart.
pub struct Mosquitto {
    pub port: u16,
    /// The TLS listener of [`Mosquitto::start_tls`].
    pub tls_port: Option<u16>,
    dir: tempfile::TempDir,
    proc: Option<ChildGuard>,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_conf("")
    }

    /// A broker that checks `user`'s password (anonymous clients, like the probe, still allowed).
    pub fn start_with_user(user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        let ok = Command::new("mosquitto_passwd")
            .arg("-c")
            .arg("-b")
            .arg(&passwd)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd (Debian package mosquitto)");
        assert!(ok.success());
        let m = Self::start_conf(&format!("password_file {}\n", passwd.display()));
        // Keep the password file alive as long as the broker.
        std::mem::forget(dir);
        m
    }

    fn start_conf(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Started as root, mosquitto drops to its own user: it must be able to write its
        // persistence there, or subscribers' sessions do not survive a broker restart.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_inflight_messages 0\nmax_queued_messages 0\nlog_dest none\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut m = Mosquitto {
            port,
            tls_port: None,
            dir,
            proc: None,
        };
        m.start_again();
        m
    }

    /// A broker with a plain listener (for probes) and a TLS listener whose server certificate
    /// (for `localhost` and 127.0.0.1) is signed by a fresh CA, [`Mosquitto::ca_file`].
    pub fn start_tls() -> Self {
        let mut m = Self::start();
        m.stop();
        let d = m.dir.path().to_owned();
        make_ca(&d, "test-ca");
        openssl(
            &d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        openssl(
            &d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        for f in ["ca.pem", "server.pem", "server.key"] {
            std::fs::set_permissions(
                d.join(f),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .unwrap();
        }
        let tls_port = free_port();
        let mut conf = std::fs::read_to_string(d.join("mosquitto.conf")).unwrap();
        conf.push_str(&format!(
            "listener {tls_port} 127.0.0.1\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\n",
            d.display()
        ));
        std::fs::write(d.join("mosquitto.conf"), conf).unwrap();
        m.tls_port = Some(tls_port);
        m.start_again();
        m
    }

    /// The CA that signed the TLS listener's certificate ([`Mosquitto::start_tls`]).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Clean stop (persistent sessions are saved), then start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn binary() -> &'static str {
        for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
            if Path::new(p).exists() {
                return p;
            }
        }
        panic!("mosquitto not installed — run tests/run.sh (it installs Debian's mosquitto)");
    }

    /// (Re)start the broker on the same port and wait until it accepts connections.
    pub fn start_again(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let mut cmd = Command::new(Self::binary());
        cmd.arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.proc = Some(ChildGuard::spawn("mosquitto", &mut cmd));
        let port = self.port;
        wait_until("mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// Stop cleanly (SIGTERM: persistence is written) and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.signal(nix::sys::signal::Signal::SIGTERM);
            p.wait_exit(Duration::from_secs(10));
        }
    }

    /// Freeze the process (SIGSTOP): TCP stays open, nothing answers.
    pub fn freeze(&self) {
        self.proc
            .as_ref()
            .unwrap()
            .signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Resume after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.proc
            .as_ref()
            .unwrap()
            .signal(nix::sys::signal::Signal::SIGCONT);
    }
}

/// One message seen by the probe.
#[derive(Debug, Clone)]
pub struct Msg {
    /// The broker's DUP flag: a redelivery of its own to this subscriber (QoS 1 after a session
    /// resumed), not a second publish by the daemon (rumqttc never sets DUP).
    pub dup: bool,
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Msg {
    /// The payload as JSON; a zstd frame (`uplink.compression = "zstd"`, SPEC v1.1) is
    /// decompressed first.
    pub fn json(&self) -> serde_json::Value {
        let payload = cabinetd::uplink::decode_payload(&self.payload, 64 * 1024 * 1024)
            .unwrap_or_else(|e| panic!("payload on {} is not a zstd frame: {e}", self.topic));
        serde_json::from_slice(&payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A subscriber on the broker recording every message on `filter`, with a persistent session
/// (re-subscribing after each reconnect) so nothing published while it reconnects is missed.
pub struct MqttProbe {
    msgs: Arc<Mutex<Vec<Msg>>>,
    client: rumqttc::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl MqttProbe {
    pub fn start(port: u16, filter: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = format!(
            "probe-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(16 * 1024 * 1024, 16 * 1024 * 1024);
        let (client, mut conn) = rumqttc::Client::new(opts, 64);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let msgs = msgs.clone();
            let client = client.clone();
            let filter = filter.to_owned();
            let stop = stop.clone();
            std::thread::spawn(move || {
                for ev in conn.iter() {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    match ev {
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                            let _ = client.try_subscribe(filter.clone(), rumqttc::QoS::AtLeastOnce);
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                            let _ = ready_tx.send(());
                        }
                        Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                            msgs.lock().unwrap().push(Msg {
                                dup: p.dup,
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                                at: Instant::now(),
                            });
                        }
                        Ok(_) => {}
                        // Broker away (test stopped it): retry calmly until it is back.
                        Err(_) => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            });
        }
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("probe subscribed within 10 s");
        MqttProbe { msgs, client, stop }
    }

    pub fn messages(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Waits (≤ 20 s) for the cabinet's retained status to say online. The daemon subscribes to
    /// its command topics before it publishes that status: from then on a command reaches it.
    /// (The probe must listen to `…/status`.)
    pub fn wait_online(&self) {
        wait_until("the cabinet online", Duration::from_secs(20), || {
            self.on("/status")
                .into_iter()
                .find(|m| m.json()["online"] == true)
        });
    }

    /// Messages whose topic ends with `suffix`.
    pub fn on(&self, suffix: &str) -> Vec<Msg> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Every record of every envelope on topics ending with `suffix`, in arrival order,
    /// with the envelope's `replay` flag.
    pub fn records(&self, suffix: &str) -> Vec<(serde_json::Value, bool)> {
        let mut out = Vec::new();
        for m in self.on(suffix) {
            let env = m.json();
            let replay = env["replay"].as_bool().unwrap_or(false);
            for r in env["records"].as_array().cloned().unwrap_or_default() {
                out.push((r, replay));
            }
        }
        out
    }

    /// Publish (e.g. a command) through the probe's own connection.
    pub fn publish(&self, topic: &str, payload: &[u8], retain: bool) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload.to_vec())
            .unwrap();
    }
}

impl Drop for MqttProbe {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

/// Check a sequence of seqs: returns (missing, duplicates) against 1..=max.
pub fn seq_gaps(seqs: &[u64]) -> (Vec<u64>, Vec<u64>) {
    let mut seen = std::collections::BTreeMap::<u64, u32>::new();
    for &s in seqs {
        *seen.entry(s).or_default() += 1;
    }
    let max = seen.keys().next_back().copied().unwrap_or(0);
    let missing = (1..=max).filter(|s| !seen.contains_key(s)).collect();
    let dups = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&s, _)| s)
        .collect();
    (missing, dups)
}

/// A plain blocking HTTP GET: (status code, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

/// The `cabinetd` binary under test.
pub fn cabinetd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cabinetd"))
}

/// A running daemon with its own state directory and config file. Its log goes to
/// `dir/daemon.log`, printed only when the test fails (then `dir` is kept, too).
pub struct Daemon {
    pub proc: ChildGuard,
    pub http: String,
    pub config: PathBuf,
    pub dir: tempfile::TempDir,
    /// Where stdout and stderr (the log) go, across restarts.
    pub log: Option<PathBuf>,
    /// Extra arguments of `cabinetd run`.
    pub args: Vec<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "---- cabinetd state and config kept in {} ----",
                self.dir.path().display()
            );
        }
    }
}

/// The base config every test daemon shares: cabinet `test-cab`, storage and HTTP in `dir`.
pub fn base_config(dir: &Path, broker_port: u16, http_port: u16) -> String {
    format!(
        r#"[cabinet]
id = "test-cab"
latitude = 47.3220
longitude = 5.0415
timezone = "Europe/Paris"

[storage]
path = "{}"
max_bytes = "64MiB"

[uplink]
broker = "mqtt://127.0.0.1:{broker_port}"
topic_prefix = "cabinets/v1"
keep_alive = "5s"

[http]
listen = "127.0.0.1:{http_port}"

[log]
filter = "info,cabinetd=debug"

[security]
# Signed commands are tested in tests/signed_*.rs; the other tests send plain v1 JSON.
require_signed = false
"#,
        dir.join("state").display()
    )
}

impl Daemon {
    /// Start with the base config plus `extra` TOML, and wait until `/readyz` answers 200.
    pub fn start(broker_port: u16, extra: &str) -> Daemon {
        Self::start_env(broker_port, extra, &[])
    }

    pub fn start_env(broker_port: u16, extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_full(broker_port, extra, env, |base| base)
    }

    /// Start with the base config edited by `edit` (e.g. another budget), plus `extra`.
    pub fn start_edited(
        broker_port: u16,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Daemon {
        Self::start_full(broker_port, extra, &[], edit)
    }

    fn start_full(
        broker_port: u16,
        extra: &str,
        env: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let config = dir.path().join("cabinetd.toml");
        let base = edit(base_config(dir.path(), broker_port, http_port));
        std::fs::write(&config, format!("{base}\n{extra}")).unwrap();
        let log = dir.path().join("daemon.log");
        let mut d = Daemon {
            proc: Self::spawn(&config, env, Some(&log), &[]),
            http: format!("127.0.0.1:{http_port}"),
            config,
            dir,
            log: Some(log),
            args: Vec::new(),
        };
        d.wait_ready();
        d
    }

    /// Start with extra `run` arguments.
    pub fn start_logged(broker_port: u16, extra: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let config = dir.path().join("cabinetd.toml");
        std::fs::write(
            &config,
            format!(
                "{}\n{extra}",
                base_config(dir.path(), broker_port, http_port)
            ),
        )
        .unwrap();
        let log = dir.path().join("daemon.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut d = Daemon {
            proc: Self::spawn(&config, &[], Some(&log), &args),
            http: format!("127.0.0.1:{http_port}"),
            config,
            dir,
            log: Some(log),
            args,
        };
        d.wait_ready();
        d
    }

    /// The captured log so far (empty when not captured).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .unwrap_or_default()
    }

    fn spawn(
        config: &Path,
        env: &[(&str, &str)],
        log: Option<&Path>,
        args: &[String],
    ) -> ChildGuard {
        let mut cmd = Command::new(cabinetd_bin());
        cmd.arg("run").arg("--config").arg(config).args(args);
        match log {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                cmd.stdout(file.try_clone().unwrap()).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null());
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut guard = ChildGuard::spawn("cabinetd", &mut cmd);
        guard.log = log.map(Path::to_path_buf);
        guard
    }

    /// Start again on the same state directory and config (after a kill or stop).
    pub fn restart(&mut self) {
        self.respawn();
        self.wait_ready();
    }

    /// Start again without waiting for `/readyz` (a daemon that runs degraded answers 503);
    /// waits until `/status` answers.
    pub fn respawn(&mut self) {
        self.proc = Self::spawn(&self.config, &[], self.log.as_deref(), &self.args);
        let http = self.http.clone();
        let proc = &mut self.proc;
        wait_until("cabinetd /status", Duration::from_secs(30), || {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("cabinetd exited during start-up: {status}");
            }
            http_get(&http, "/status").ok().filter(|(c, _)| *c == 200)
        });
    }

    pub fn wait_ready(&mut self) {
        let http = self.http.clone();
        let proc = &mut self.proc;
        wait_until("cabinetd /readyz", Duration::from_secs(30), || {
            if let Some(status) = proc.child.try_wait().unwrap() {
                panic!("cabinetd exited during start-up: {status}");
            }
            match http_get(&http, "/readyz") {
                Ok((200, _)) => Some(()),
                _ => None,
            }
        });
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/status").1).unwrap()
    }

    /// SIGTERM and wait (≤ 15 s) for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM);
        self.proc.wait_exit(Duration::from_secs(15))
    }

    /// SIGKILL, like a crash or power loss of the process.
    pub fn kill9(&mut self) {
        self.proc.signal(nix::sys::signal::Signal::SIGKILL);
        self.proc.wait_exit(Duration::from_secs(10));
    }
}

/// A connected pair of pseudo-terminals made by socat (a null-modem cable in software):
/// returns the guard and the two `/dev/pts/N` paths.
pub fn pty_pair() -> (ChildGuard, String, String) {
    let mut cmd = Command::new("socat");
    cmd.args(["-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn("socat", &mut cmd);
    let stderr = guard.child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut paths = Vec::new();
        let mut lines = BufReader::new(stderr).lines();
        for line in lines.by_ref().map_while(Result::ok) {
            // "... N PTY is /dev/pts/7"
            if let Some(idx) = line.find("PTY is ") {
                paths.push(line[idx + 7..].trim().to_owned());
                if paths.len() == 2 {
                    let _ = tx.send(paths.clone());
                }
            }
        }
    });
    let paths = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("socat made two ptys within 10 s");
    (guard, paths[0].clone(), paths[1].clone())
}

/// Telemetry records (value, quality, ts) of one point, in arrival order.
pub fn point_records(probe: &MqttProbe, point: &str) -> Vec<serde_json::Value> {
    probe
        .records("/telemetry")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["point"] == point)
        .collect()
}

/// Seqs of the records the daemon published, as first delivered by the broker (the broker's own
/// redeliveries, flagged DUP, left out): duplicates here are the daemon's.
pub fn published_seqs(probe: &MqttProbe, suffix: &str) -> Vec<u64> {
    probe
        .on(suffix)
        .into_iter()
        .filter(|m| !m.dup)
        .flat_map(|m| m.json()["records"].as_array().cloned().unwrap_or_default())
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect()
}

/// Seqs of every record seen on a stream's topic.
pub fn seqs(probe: &MqttProbe, suffix: &str) -> Vec<u64> {
    probe
        .records(suffix)
        .iter()
        .map(|(r, _)| r["seq"].as_u64().expect("seq"))
        .collect()
}

/// The ATX DALI HAT emulator (python-dali fake gear on a pty) with its control channel (stdin commands, stdout answers).
pub struct AtxEmulator {
    _child: ChildGuard,
    stdin: ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
    pub port: String,
}

impl AtxEmulator {
    pub fn spawn(args: &[&str]) -> AtxEmulator {
        let mut cmd = Command::new(python());
        cmd.arg(root().join("tests/peers/atx_hat_emulator.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut child = ChildGuard::spawn_quiet("atx_hat_emulator.py", &mut cmd);
        let stdin = child.child.stdin.take().expect("piped stdin");
        let stdout = child.child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(60))
            .expect("emulator prints READY within the deadline");
        let port = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("emulator said {ready:?} instead of READY"))
            .to_owned();
        AtxEmulator {
            _child: child,
            stdin,
            lines,
            port,
        }
    }

    /// One control command; returns what follows `OK `.
    pub fn control(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to the emulator");
        self.stdin.flush().expect("flush the emulator's stdin");
        let reply = self
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("the emulator answers its control channel");
        match reply.strip_prefix("OK") {
            Some(rest) => rest.trim_start().to_owned(),
            None => panic!("emulator refused {line:?}: {reply}"),
        }
    }

    /// The emulator's own view of one gear.
    pub fn state(&mut self, short: u8) -> serde_json::Value {
        serde_json::from_str(&self.control(&format!("state {short}"))).expect("state is JSON")
    }
}

/// A pymodbus device with its control channel (`modbus_server.py --control`): the test sets
/// registers and bits the way the device itself would (a sensor crossing a threshold) and sees
/// every write the device received.
pub struct ModbusPeer {
    _child: ChildGuard,
    stdin: ChildStdin,
    replies: std::sync::mpsc::Receiver<String>,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    pub port: u16,
}

impl ModbusPeer {
    /// A TCP device with the tables of `json` (see `modbus_server.py`).
    pub fn spawn(json: &serde_json::Value) -> ModbusPeer {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), json.to_string()).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(root().join("tests/peers/modbus_server.py"))
            .args(["--tcp", "127.0.0.1:0", "--control", "--json"])
            .arg(file.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = ChildGuard::spawn("modbus_server.py", &mut cmd);
        let stdin = child.child.stdin.take().unwrap();
        let stdout = child.child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                // Keeps the JSON file until the peer has read it.
                let _file = file;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(port) = line.strip_prefix("READY ") {
                        let _ = ready_tx.send(port.trim().to_owned());
                    } else if line.starts_with("OK") || line.starts_with("ERR") {
                        let _ = tx.send(line);
                    } else {
                        lines.lock().unwrap().push((Instant::now(), line));
                    }
                }
            });
        }
        let port = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("modbus_server.py READY within 30 s")
            .parse()
            .unwrap();
        ModbusPeer {
            _child: child,
            stdin,
            replies,
            lines,
            port,
        }
    }

    fn control(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let reply = self
            .replies
            .recv_timeout(Duration::from_secs(10))
            .expect("the peer answers its control channel");
        assert!(reply.starts_with("OK"), "{line}: {reply}");
        reply
    }

    /// Sets `table` (coils, discrete, input, holding) at `addr` to `value` (bits: 0/1).
    pub fn set(&mut self, table: &str, addr: u16, value: i64) {
        self.control(&format!("set {table} {addr} {value}"));
    }

    /// The raw value of `table` at `addr`.
    pub fn get(&mut self, table: &str, addr: u16) -> i64 {
        let r = self.control(&format!("get {table} {addr}"));
        r.trim_start_matches("OK ").trim().parse().unwrap()
    }

    /// Writes the device received from a client (function codes 5, 6, 15, 16), in order:
    /// `(when, address, values)`.
    pub fn writes(&self) -> Vec<(Instant, u16, Vec<i64>)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, l)| {
                let rest = l.strip_prefix("WRITE fc=")?;
                let mut it = rest.split_whitespace();
                let fc: u8 = it.next()?.parse().ok()?;
                if ![5, 6, 15, 16].contains(&fc) {
                    return None;
                }
                let addr = it.next()?.strip_prefix("addr=")?.parse().ok()?;
                let values = it
                    .next()?
                    .strip_prefix("values=")?
                    .split(',')
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some((*at, addr, values))
            })
            .collect()
    }
}
