//! A whole night through the daemon, in-process under paused tokio time (a night in seconds):
//! the simulated DALI bus (`interface = "sim"`, whose gear meter their energy in D4i bank 202
//! from their level over tokio time), the rules core following the programme, the energy
//! accountant — with a reload and a restart in the middle of the night — then the night's
//! `energy_daily` against a hand computation (issue 10 item 9, issue 13 item 2).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cabinetd::daemon::{Daemon, Signal};
use cabinetd::http::Endpoint;
use cabinetd::notify::Notifier;
use cabinetd::wall::WallClock;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tokio::sync::mpsc;

fn config(dir: &Path, poll: &str, unused: u16) -> String {
    format!(
        r#"[cabinet]
id = "test-cab"
latitude = 47.3220
longitude = 5.0415
timezone = "Europe/Paris"

[storage]
path = "{}"
flush_interval = "10s"

[uplink]
# No broker: the cabinet accounts its night on its own.
broker = "mqtt://127.0.0.1:{unused}"

[http]
listen = "127.0.0.1:0"

[security]
require_signed = false

[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 4
poll = "{poll}"
energy_poll = "5min"
rated_power_w = 100

# Dijon's practice.
[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70
[[lighting.step]]
target = "all"
at = "05:00"
level_percent = 100
"#,
        dir.join("state").display()
    )
}

struct Running {
    live: Arc<cabinetd::status::Live>,
    signals: mpsc::Sender<Signal>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(file: &Path, wall: Timestamp) -> Running {
    let cfg = cabinetd::config::load_files(&[file.to_path_buf()]).unwrap_or_else(|e| panic!("{e}"));
    let daemon = Daemon::build_with(
        vec![file.to_path_buf()],
        cfg,
        Notifier::disabled(),
        WallClock::tokio_from(wall),
    )
    .await
    .unwrap();
    let live = daemon.live();
    let (signals, rx) = mpsc::channel(4);
    let task = tokio::spawn(daemon.run(rx));
    Running {
        live,
        signals,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.signals.send(Signal::Stop).await.unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn hours(a: Timestamp, b: Timestamp) -> f64 {
    (b - a).as_secs_f64() / 3600.0
}

#[tokio::test(start_paused = true)]
async fn a_night_through_the_daemon_matches_the_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cabinetd.toml");
    let unused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(&file, config(dir.path(), "30s", unused)).unwrap();
    // Noon UTC on 21 December: the daemon starts by day; the night of the 21st follows.
    let noon = ts("2026-12-21T12:00:00Z");
    let d = start(&file, noon).await;

    // 20:00 UTC: the night running is live in /status and the metrics.
    tokio::time::sleep(Duration::from_secs(8 * 3600)).await;
    let st = d.live.status();
    let night = &st["energy"]["night"];
    assert_eq!(night["date"], "2026-12-21", "{st:#}");
    assert!(night["kwh"].as_f64().unwrap() > 1.0, "{night}");
    assert!(night["coverage"].as_f64().unwrap() > 0.99, "{night}");
    let metrics = d.live.metrics();
    assert!(metrics.contains("cabinetd_energy_night_kwh "), "{metrics}");
    assert!(
        !metrics.contains("cabinetd_energy_night_coverage_ratio 0\n"),
        "{metrics}"
    );

    // 23:00 UTC: a reload that changes [[dali]] (issue 13 item 2: it made a fresh accountant
    // that invented the night from what it saw afterwards).
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    std::fs::write(&file, config(dir.path(), "20s", unused)).unwrap();
    d.signals.send(Signal::Reload).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(d.live.status()["last_reload"]["status"], "applied");

    // 02:00 UTC: a restart (10 s without a daemon).
    tokio::time::sleep(Duration::from_secs(3 * 3600 - 60)).await;
    d.stop().await;
    let d = start(&file, ts("2026-12-22T02:00:10Z")).await;

    // Past dawn + 1 h: the report.
    tokio::time::sleep(Duration::from_secs(7 * 3600)).await;
    let st = d.live.status();
    let e: Value = st["energy"]["last"].clone();
    assert_eq!(e["date"], "2026-12-21", "{st:#}");

    // By hand: 4 luminaires of 100 W; 100 % from dusk to 22:00 Paris (21:00 UTC), 70 % (as
    // the DALI curve quantises it) until 05:00 Paris (04:00 UTC), 100 % until dawn. Dusk and
    // dawn at Dijon that night (astral: 15:52 and 07:24 UTC) from the report's own window.
    let from: Timestamp = e["window"]["from"].as_str().unwrap().parse().unwrap();
    let to: Timestamp = e["window"]["to"].as_str().unwrap().parse().unwrap();
    let (dusk, dawn) = (
        from + SignedDuration::from_hours(1),
        to - SignedDuration::from_hours(1),
    );
    assert!(
        (dusk - ts("2026-12-21T15:52:00Z")).as_secs().abs() < 120,
        "{dusk}"
    );
    assert!(
        (dawn - ts("2026-12-22T07:24:00Z")).as_secs().abs() < 120,
        "{dawn}"
    );
    let l70 = cabinetd_dali::arc_to_percent(cabinetd_dali::percent_to_arc(70.0)).unwrap() / 100.0;
    let (dim, up) = (ts("2026-12-21T21:00:00Z"), ts("2026-12-22T04:00:00Z"));
    let hand = 4.0 * 100.0 * (hours(dusk, dim) + l70 * hours(dim, up) + hours(up, dawn)) / 1000.0;
    let baseline = 4.0 * 100.0 * hours(dusk, dawn) / 1000.0;
    eprintln!("energy_daily {e}; by hand {hand:.3} kWh of {baseline:.3} kWh baseline");
    let kwh = e["kwh"]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure: {e}"));
    assert!(
        (kwh - hand).abs() <= hand * 0.01,
        "energy_daily {e} against the hand computation {hand:.3} kWh"
    );
    assert!(
        (e["baseline_kwh"].as_f64().unwrap() - baseline).abs() < 0.002,
        "{e}"
    );
    let savings = 100.0 * (1.0 - hand / baseline);
    assert!(
        (e["savings_percent"].as_f64().unwrap() - savings).abs() < 1.0,
        "{e} vs {savings:.1} %"
    );
    assert!(e["coverage"].as_f64().unwrap() >= 0.9, "{e}");
    assert_eq!(
        e["source"], "metered",
        "the D4i counters cover the night: {e}"
    );
    d.stop().await;
}
