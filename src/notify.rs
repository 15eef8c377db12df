//! systemd readiness and watchdog notifications (`sd_notify(3)` protocol).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by `NOTIFY_SOCKET`
//! (a path, or an abstract socket when it starts with `@`). The daemon reads the variable once at
//! start ([`Notifier::from_env`]) and removes it so child processes do not inherit it.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends notifications to systemd; a no-op when not started by systemd.
#[derive(Debug)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Read `NOTIFY_SOCKET` and `WATCHDOG_USEC` (honouring `WATCHDOG_PID`), then unset them.
    pub fn from_env() -> Self {
        let target = std::env::var_os("NOTIFY_SOCKET").map(|s| {
            let bytes = s.as_encoded_bytes();
            match bytes.strip_prefix(b"@") {
                Some(name) => Target::Abstract(name.to_vec()),
                None => Target::Path(s.into()),
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0 && for_us)
            .map(Duration::from_micros);
        // SAFETY of intent: called once from main before any thread is spawned.
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            // `remove_var` is not `unsafe` on edition 2021; still only called single-threaded.
            std::env::remove_var(var);
        }
        Notifier { target, watchdog }
    }

    /// A notifier that sends nothing (tests, `check-config`).
    pub fn disabled() -> Self {
        Notifier {
            target: None,
            watchdog: None,
        }
    }

    /// Whether a notification socket was given.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1`: half the watchdog interval systemd set, or, when systemd
    /// set none but a socket exists, every 5 s (harmless, and lets tests observe the feed).
    pub fn watchdog_period(&self) -> Option<Duration> {
        match (&self.target, self.watchdog) {
            (None, _) => None,
            (Some(_), Some(w)) => Some(w / 2),
            (Some(_), None) => Some(Duration::from_secs(5)),
        }
    }

    /// Send one notification, e.g. `READY=1\nSTATUS=polling 3 devices`.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr).map(|_| ())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagram_to_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            target: Some(Target::Path(path)),
            watchdog: Some(Duration::from_secs(10)),
        };
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        assert_eq!(n.watchdog_period(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn disabled_sends_nothing_and_has_no_watchdog() {
        let n = Notifier::disabled();
        assert!(n.notify("READY=1").is_ok());
        assert_eq!(n.watchdog_period(), None);
    }
}
