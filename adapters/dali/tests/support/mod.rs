//! Spawns the ATX DALI HAT emulator (`tests/peers/atx_hat_emulator.py`, python-dali
//! fake gear) on a pty and talks to its control channel. The child is killed
//! on drop; every wait has a deadline.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use cabinetd_dali::atx::AtxHat;
use tokio_serial::SerialStream;

/// Deadline for the emulator to start or answer a control line.
pub const DEADLINE: Duration = Duration::from_secs(20);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$CABINETD_TEST_PYTHON`, else `<workspace>/tests/.venv/bin/python`; fails
/// loudly when missing (these tests need the real python-dali peer).
pub fn python() -> PathBuf {
    let p = std::env::var_os("CABINETD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("tests/.venv/bin/python"));
    assert!(
        p.exists(),
        "python for the DALI peer not found at {} — create tests/.venv with \
         tests/requirements.txt (python-dali 0.16, pyserial) or set CABINETD_TEST_PYTHON",
        p.display()
    );
    p
}

/// A running emulator.
pub struct Emulator {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// The pty to open.
    pub port: String,
}

impl Emulator {
    /// Starts the emulator with the given CLI flags and waits for `READY`.
    pub fn spawn(args: &[&str]) -> Emulator {
        let script = workspace_root().join("tests/peers/atx_hat_emulator.py");
        let mut child = Command::new(python())
            .arg(&script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut emu = Emulator {
            child,
            stdin,
            lines,
            port: String::new(),
        };
        let ready = emu.next_line();
        emu.port = ready
            .strip_prefix("READY ")
            .unwrap_or_else(|| panic!("emulator said {ready:?} instead of READY"))
            .to_string();
        emu
    }

    fn next_line(&mut self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line from the emulator within {DEADLINE:?}: {e}"))
    }

    /// Sends one control line and returns what follows `OK `.
    pub fn control(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write to emulator");
        self.stdin.flush().expect("flush emulator stdin");
        let reply = self.next_line();
        match reply.strip_prefix("OK") {
            Some(rest) => rest.trim_start().to_string(),
            None => panic!("emulator refused {line:?}: {reply}"),
        }
    }

    /// One field of `state A` (the emulator's own view of a gear), as JSON text.
    pub fn state_field(&mut self, short: u8, field: &str) -> String {
        let json = self.control(&format!("state {short}"));
        let key = format!("\"{field}\": ");
        let start = json
            .find(&key)
            .unwrap_or_else(|| panic!("no {field} in {json}"))
            + key.len();
        let rest = &json[start..];
        let end = if rest.starts_with('[') {
            rest.find(']').map(|i| i + 1)
        } else {
            rest.find([',', '}'])
        }
        .unwrap_or(rest.len());
        rest[..end].to_string()
    }

    /// Opens the HAT on the emulator's pty, through tokio-serial as in
    /// production. The reply deadline is generous: the peer is a Python
    /// process on a shared, busy machine, not a microcontroller.
    pub fn hat(&self) -> AtxHat<SerialStream> {
        AtxHat::open(&self.port)
            .expect("open the emulator pty")
            .with_reply_timeout(Duration::from_secs(5))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
