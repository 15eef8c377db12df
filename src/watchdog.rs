//! The systemd watchdog (SPEC §5): `WATCHDOG=1` is sent only while every loop of the daemon
//! makes progress — the main loop, the recorder, the outbox flusher, the uplink driver, the
//! equipment's polling and the HTTP endpoint. A stuck loop stops the feed and systemd restarts
//! the daemon; the stalled loops are logged by name.
//!
//! The decisions are pure ([`Liveness`], [`stalled_loops`], [`polling_window`]); [`run`] is the
//! task that samples the counters every watchdog period.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Config;
use crate::notify::Notifier;
use crate::outbox::Outbox;
use crate::uplink::UplinkHandle;

/// A loop must show progress within this window for the watchdog to be fed.
pub const PROGRESS_WINDOW: Duration = Duration::from_secs(5);

/// Decides whether a counter moved within a window (pure).
#[derive(Debug)]
pub struct Liveness {
    last_beats: u64,
    last_change: Instant,
    /// How long the counter may stand still.
    pub window: Duration,
}

impl Liveness {
    /// A counter last seen moving at `now`.
    pub fn new(now: Instant, window: Duration) -> Self {
        Liveness {
            last_beats: 0,
            last_change: now,
            window,
        }
    }

    /// True while the counter moved within the window.
    pub fn check(&mut self, beats: u64, now: Instant) -> bool {
        if beats != self.last_beats {
            self.last_beats = beats;
            self.last_change = now;
        }
        now.saturating_duration_since(self.last_change) < self.window
    }
}

/// Within how long the equipment must have reported: a Modbus task reports once per poll (a
/// reading or a failure), within poll + timeout; a DALI bus at the end of every cycle, and while
/// its interface is down at every retry (at most a minute apart). Three of the slowest. A camera
/// reports once per health poll, which may wait for a command holding the camera (up to
/// `camera::COMMAND_TIMEOUT`) and take a few round trips; cameras set the window only on a
/// cabinet with no Modbus or DALI equipment, whose faster beats say more.
pub fn polling_window(cfg: &Config) -> Duration {
    let modbus = cfg
        .modbus
        .iter()
        .map(|d| d.spec.poll + d.spec.timeout)
        .max()
        .unwrap_or_default();
    let dali = cfg
        .dali
        .iter()
        .map(|b| b.poll.max(Duration::from_secs(60)))
        .max()
        .unwrap_or_default();
    let cameras = cfg
        .cameras
        .iter()
        .map(|c| c.poll + c.timeout * 4 + crate::equipment::camera::COMMAND_TIMEOUT)
        .max()
        .unwrap_or_default();
    let slowest = if cfg.modbus.is_empty() && cfg.dali.is_empty() {
        cameras
    } else {
        modbus.max(dali)
    };
    PROGRESS_WINDOW.max(slowest * 3)
}

/// Names of the loops that made no progress within [`PROGRESS_WINDOW`] (pure).
pub fn stalled_loops(
    now: Instant,
    recorder_ok: bool,
    flusher_beat: Option<Instant>,
    uplink_beat: Instant,
    polling_ok: bool,
) -> Vec<&'static str> {
    let recent = |t: Instant| now.saturating_duration_since(t) < PROGRESS_WINDOW;
    let mut stalled = Vec::new();
    if !recorder_ok {
        stalled.push("recorder");
    }
    // The first flush round completes within one flush interval of start.
    if !flusher_beat.is_some_and(recent) {
        stalled.push("outbox flusher");
    }
    if !recent(uplink_beat) {
        stalled.push("uplink");
    }
    if !polling_ok {
        stalled.push("polling");
    }
    stalled
}

/// The counters and heartbeats the watchdog samples.
pub struct Probes {
    /// Bumped by the main loop on every turn (and once a second when idle).
    pub main_loop: Arc<AtomicU64>,
    /// Bumped by the recorder at least twice a second.
    pub recorder: Arc<AtomicU64>,
    /// Bumped by every equipment status update.
    pub polling: Arc<AtomicU64>,
    /// The HTTP endpoint's task (it must not have ended).
    pub http: tokio::task::AbortHandle,
    /// The outbox (its flusher's heartbeat).
    pub outbox: Arc<Outbox>,
    /// The uplink (its driver's heartbeat).
    pub uplink: UplinkHandle,
}

/// Feeds the watchdog every period while every loop makes progress, until `stop` resolves.
/// Returns at once when systemd asked for no watchdog.
pub async fn run(
    notifier: Arc<Notifier>,
    probes: Probes,
    running: watch::Receiver<Arc<Config>>,
    stop: impl Future<Output = ()> + Send,
) {
    let Some(period) = notifier.watchdog_period() else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    let start = Instant::now();
    let mut main_live = Liveness::new(start, PROGRESS_WINDOW);
    let mut recorder_live = Liveness::new(start, PROGRESS_WINDOW);
    let mut polling_live = Liveness::new(start, PROGRESS_WINDOW);
    let feed = async {
        loop {
            tick.tick().await;
            let now = Instant::now();
            let cfg = running.borrow().clone();
            polling_live.window = polling_window(&cfg);
            let polling_ok = polling_live.check(probes.polling.load(Ordering::Relaxed), now)
                || (cfg.modbus.is_empty() && cfg.dali.is_empty() && cfg.cameras.is_empty());
            let mut stalled = stalled_loops(
                now,
                recorder_live.check(probes.recorder.load(Ordering::Relaxed), now),
                probes.outbox.flusher_heartbeat(),
                probes.uplink.heartbeat(),
                polling_ok,
            );
            if !main_live.check(probes.main_loop.load(Ordering::Relaxed), now) {
                stalled.push("main loop");
            }
            if probes.http.is_finished() {
                stalled.push("http");
            }
            if stalled.is_empty() {
                let _ = notifier.notify("WATCHDOG=1");
            } else {
                tracing::error!(stalled = ?stalled, "a daemon loop stopped making progress; not feeding the watchdog");
            }
        }
    };
    tokio::select! {
        () = stop => {}
        () = feed => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_tolerates_idle_ticks_but_not_a_stalled_recorder() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, PROGRESS_WINDOW);
        assert!(l.check(1, t0 + Duration::from_millis(500)));
        assert!(l.check(1, t0 + Duration::from_secs(2)));
        assert!(l.check(2, t0 + Duration::from_secs(3)));
        assert!(!l.check(2, t0 + Duration::from_secs(9)));
    }

    /// A cabinet with only cameras was never watched (its polling counted as idle); a camera
    /// polled every 30 s must not trip a 5 s window either.
    #[test]
    fn camera_only_cabinets_are_watched_on_the_camera_poll() {
        let cfg = |extra: &str| {
            crate::config::load_sources(&[crate::config::Source {
                name: "c.toml".into(),
                text: format!("[cabinet]\nid = \"c1\"\nlatitude = 47.0\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n{extra}"),
            }])
            .unwrap()
        };
        let camera = "[[camera]]\nname = \"cam\"\naddress = \"http://10.0.0.5/onvif/device_service\"\nusername = \"u\"\npassword_file = \"/p\"\n";
        assert_eq!(polling_window(&cfg("")), PROGRESS_WINDOW);
        // (30 s poll + 4 × 5 s timeout + 30 s command) × 3.
        assert_eq!(polling_window(&cfg(camera)), Duration::from_secs(240));
        let meter = "[[modbus]]\nname = \"m\"\naddress = \"127.0.0.1:502\"\npoll = \"1s\"\ntimeout = \"500ms\"\n  [[modbus.point]]\n  name = \"p\"\n  table = \"input\"\n  address = 0\n";
        assert_eq!(
            polling_window(&cfg(&format!("{camera}{meter}"))),
            PROGRESS_WINDOW,
            "the Modbus device's beats set it"
        );
    }

    #[test]
    fn watchdog_names_every_stalled_loop() {
        let now = Instant::now();
        let fresh = now - Duration::from_secs(1);
        let old = now - Duration::from_secs(60);
        assert!(stalled_loops(now, true, Some(fresh), fresh, true).is_empty());
        assert_eq!(
            stalled_loops(now, true, None, fresh, true),
            ["outbox flusher"]
        );
        assert_eq!(
            stalled_loops(now, false, Some(old), old, false),
            ["recorder", "outbox flusher", "uplink", "polling"]
        );
    }
}
