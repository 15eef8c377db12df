//! Store and forward through the whole daemon (issue #3): outages of the broker (stopped, frozen),
//! a crash of the daemon during an outage, a tiny outbox budget, a full filesystem (a real 2 MiB
//! tmpfs: the test needs root, as in CI), a corrupt store. Real Mosquitto, real pymodbus, the
//! cabinetd binary. Every seq must arrive or be named by an `outbox_evicted` event; duplicates
//! only where stated.

mod support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::*;

/// A busy device: 20 registers every 100 ms, every value published every poll (~200 records/s).
fn busy_device(dir: &Path) -> (ChildGuard, String) {
    device(dir, 20, 100)
}

/// A device of `registers` holding registers polled every `poll_ms`, every value published.
fn device(dir: &Path, registers: u16, poll_ms: u64) -> (ChildGuard, String) {
    let contents = dir.join("regs.json");
    std::fs::write(
        &contents,
        json!({"holding": [{"address": 0, "raw": (0..registers).collect::<Vec<u16>>()}]})
            .to_string(),
    )
    .unwrap();
    let (peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    );
    let mut cfg = format!(
        "[[modbus]]\nname = \"busy\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\npoll = \"{poll_ms}ms\"\ntimeout = \"500ms\"\nheartbeat = \"{poll_ms}ms\"\n"
    );
    for r in 0..registers {
        cfg.push_str(&format!("  [[modbus.point]]\n  name = \"r{r:02}\"\n  table = \"holding\"\n  address = {r}\n  type = \"u16\"\n"));
    }
    (peer, cfg)
}

/// A busy device polled by a daemon, publishing through a broker to a probe.
struct Busy {
    _dir: tempfile::TempDir,
    _peer: ChildGuard,
    broker: Mosquitto,
    probe: MqttProbe,
    daemon: Daemon,
}

impl Busy {
    /// Everything started and telemetry flowing.
    fn start() -> Busy {
        let dir = tempfile::tempdir().unwrap();
        let (peer, device) = busy_device(dir.path());
        let broker = Mosquitto::start();
        let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
        let daemon = Daemon::start(broker.port, &device);
        wait_until("telemetry flowing", Duration::from_secs(20), || {
            (seqs(&probe, "/telemetry").len() > 100).then_some(())
        });
        Busy {
            _dir: dir,
            _peer: peer,
            broker,
            probe,
            daemon,
        }
    }
}

/// The telemetry seqs that may have been published but not acknowledged when the broker went
/// away: from the oldest unacknowledged to the last numbered (call it once the daemon saw the
/// broker go). Not "the highest the probe received": its persistent session gets what the
/// broker held only after the restart.
fn in_flight_at_outage(daemon: &Daemon) -> std::ops::RangeInclusive<u64> {
    let t = telemetry_stream(daemon);
    let last = t["last_seq"].as_u64().unwrap();
    last + 1 - t["records"].as_u64().unwrap()..=last
}

/// QoS 1 cannot tell a lost PUBACK from a lost PUBLISH: records in flight when the broker went
/// away may arrive twice (the central post removes them by seq). Nothing else may.
fn assert_only_in_flight_doubled(dups: &[u64], in_flight: &std::ops::RangeInclusive<u64>) {
    assert!(
        dups.iter().all(|d| in_flight.contains(d)),
        "duplicates {dups:?} outside the records in flight at the outage ({in_flight:?})"
    );
}

fn outbox_records(d: &Daemon) -> u64 {
    let st = d.status();
    ["telemetry", "events", "results"]
        .iter()
        .map(|s| st["outbox"]["records"][s].as_u64().unwrap_or(0))
        .sum()
}

fn wait_connected(d: &Daemon, connected: bool) {
    wait_until(
        &format!("uplink connected = {connected}"),
        Duration::from_secs(30),
        || (d.status()["uplink"]["connected"] == connected).then_some(()),
    );
}

/// Let an outage last `secs` while polling goes on (the outage length is the test's input).
fn outage_for(secs: u64) {
    let start = Instant::now();
    wait_until("the outage to last", Duration::from_secs(secs + 5), || {
        (start.elapsed() >= Duration::from_secs(secs)).then_some(())
    });
}

/// Wait until the outbox is empty and every telemetry seq up to the highest seen has arrived.
fn drained(d: &Daemon, probe: &MqttProbe) -> Vec<u64> {
    wait_until("the outbox to drain", Duration::from_secs(60), || {
        (outbox_records(d) == 0).then_some(())
    });
    wait_until(
        "every telemetry seq at the subscriber",
        Duration::from_secs(30),
        || {
            let s = seqs(probe, "/telemetry");
            seq_gaps(&s).0.is_empty().then_some(s)
        },
    )
}

#[test]
fn broker_stopped_30_s_nothing_missing_nothing_doubled_fresh_data_within_1_s() {
    let Busy {
        _dir,
        _peer,
        mut broker,
        probe,
        mut daemon,
    } = Busy::start();

    broker.stop();
    wait_connected(&daemon, false);
    let in_flight = in_flight_at_outage(&daemon);
    outage_for(30);
    let backlog = outbox_records(&daemon);
    broker.start_again();
    let back_wall = SystemTime::now();
    let back = Instant::now();

    // Fresh (replay:false) records acquired after the broker came back arrive within 1 s, while
    // the backlog drains beside them.
    let first_fresh = wait_until("a fresh record", Duration::from_secs(20), || {
        probe.on("/telemetry").into_iter().find(|m| {
            let env = m.json();
            env["replay"] == false
                && env["records"].as_array().unwrap().iter().any(|r| {
                    humantime::parse_rfc3339(r["ts"].as_str().unwrap()).unwrap() >= back_wall
                })
        })
    });
    let fresh_after = first_fresh.at.duration_since(back);
    eprintln!("first fresh record {fresh_after:?} after the broker was back");
    assert!(
        fresh_after <= Duration::from_secs(1),
        "first fresh record {fresh_after:?} after the broker was back"
    );

    let s = drained(&daemon, &probe);
    let (missing, _) = seq_gaps(&s);
    let (_, dups) = seq_gaps(&published_seqs(&probe, "/telemetry"));
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_only_in_flight_doubled(&dups, &in_flight);
    assert!(
        backlog > 30 * 150,
        "the outage produced a backlog ({backlog} records)"
    );
    let replayed = probe
        .records("/telemetry")
        .iter()
        .filter(|(_, replay)| *replay)
        .count();
    assert!(
        replayed as u64 >= backlog / 2,
        "backlog records are marked replay: {replayed} of {backlog}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn broker_frozen_30_s_nothing_missing() {
    let Busy {
        _dir,
        _peer,
        broker,
        probe,
        mut daemon,
    } = Busy::start();

    // SIGSTOP: TCP stays open, nothing answers. The keep-alive (5 s here) must notice.
    broker.freeze();
    wait_connected(&daemon, false);
    outage_for(30);
    broker.thaw();
    wait_connected(&daemon, true);
    let s = drained(&daemon, &probe);
    let (missing, _) = seq_gaps(&s);
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(
        s.len() > 30 * 150,
        "the outage's records arrived: {}",
        s.len()
    );
    assert!(daemon.stop().success());
}

#[test]
fn kill_9_during_an_outage_loses_nothing_that_was_stored() {
    let Busy {
        _dir,
        _peer,
        mut broker,
        probe,
        mut daemon,
    } = Busy::start();
    broker.stop();
    wait_connected(&daemon, false);
    let in_flight = in_flight_at_outage(&daemon);
    wait_until("a backlog", Duration::from_secs(20), || {
        (outbox_records(&daemon) > 1000).then_some(())
    });
    let stored_before_kill = telemetry_durable_seq(&daemon);

    daemon.kill9();
    daemon.restart();
    // The backlog kept from before the crash already counts as records: wait for records
    // numbered after the restart, or a slow first poll (CPU load) makes the assertion below race.
    wait_until(
        "records numbered after the restart",
        Duration::from_secs(20),
        || (telemetry_durable_seq(&daemon) > stored_before_kill + 500).then_some(()),
    );
    broker.start_again();
    let s = drained(&daemon, &probe);
    let (missing, _) = seq_gaps(&s);
    let (_, dups) = seq_gaps(&published_seqs(&probe, "/telemetry"));
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(
        *s.iter().max().unwrap() > stored_before_kill,
        "numbering continued after the crash"
    );
    assert_only_in_flight_doubled(&dups, &in_flight);
    assert!(daemon.stop().success());
}

/// The highest telemetry seq the daemon has made durable (from `/status`).
fn telemetry_durable_seq(daemon: &Daemon) -> u64 {
    daemon.status()["outbox"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "telemetry")
        .map(|s| s["durable_seq"].as_u64().unwrap())
        .unwrap()
}

fn dir_bytes(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

#[test]
fn a_tiny_budget_evicts_oldest_telemetry_names_the_range_and_keeps_events() {
    let dir = tempfile::tempdir().unwrap();
    // Blocks compress the records ~20×: it takes a flood (~2,000 records/s) to fill even the
    // smallest budget the configuration accepts within the test's time.
    let (_peer, device) = device(dir.path(), 100, 50);
    let mut broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let budget: u64 = 1024 * 1024;
    let mut daemon = Daemon::start_edited(broker.port, &device, |base| {
        base.replace("max_bytes = \"64MiB\"", "max_bytes = \"1MiB\"")
    });
    wait_connected(&daemon, true);

    broker.stop();
    wait_connected(&daemon, false);
    // Records sent before the broker stopped and never acknowledged may later be evicted and
    // named although the broker had them: the cabinet cannot know.
    let in_flight = in_flight_at_outage(&daemon);
    let state = daemon.dir.path().join("state");
    let mut peak = 0;
    wait_until("evictions", Duration::from_secs(120), || {
        peak = peak.max(dir_bytes(&state));
        let (_, metrics) = daemon.get("/metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cabinetd_evicted_records_total{stream=\"telemetry\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 2000)
    });
    // Keep the outage going a while with the store full; sample the disk use meanwhile.
    let full_since = Instant::now();
    wait_until("10 s at the budget", Duration::from_secs(20), || {
        peak = peak.max(dir_bytes(&state));
        (full_since.elapsed() >= Duration::from_secs(10)).then_some(())
    });
    // A hard budget: the store's files (sled's and seq-marks) never pass it.
    assert!(
        peak <= budget,
        "disk use peaked at {peak} bytes for a {budget} budget"
    );
    assert!(daemon.proc.is_running());

    broker.start_again();
    wait_until("the outbox to drain", Duration::from_secs(60), || {
        (outbox_records(&daemon) == 0).then_some(())
    });
    // Every telemetry seq is either delivered or named by an outbox_evicted event.
    let events: Vec<serde_json::Value> =
        wait_until("eviction events", Duration::from_secs(20), || {
            let ev: Vec<_> = probe
                .records("/events")
                .into_iter()
                .map(|(r, _)| r)
                .filter(|r| r["kind"] == "outbox_evicted")
                .collect();
            (!ev.is_empty()).then_some(ev)
        });
    let mut evicted = std::collections::BTreeSet::new();
    for e in &events {
        assert_eq!(e["data"]["stream"], "telemetry", "{e}");
        let (first, last) = (
            e["data"]["first_seq"].as_u64().unwrap(),
            e["data"]["last_seq"].as_u64().unwrap(),
        );
        evicted.extend(first..=last);
    }
    let delivered: std::collections::BTreeSet<u64> =
        seqs(&probe, "/telemetry").into_iter().collect();
    let top = *delivered.iter().next_back().unwrap();
    assert!(
        top < 100_000_000,
        "telemetry seqs numbered from 1, got {top}"
    );
    let missing: std::collections::BTreeSet<u64> =
        (1..=top).filter(|s| !delivered.contains(s)).collect();
    assert!(!missing.is_empty(), "the budget forced evictions");
    let named: std::collections::BTreeSet<u64> =
        evicted.iter().copied().filter(|&s| s <= top).collect();
    let unnamed: Vec<u64> = missing.difference(&named).take(10).copied().collect();
    let delivered_anyway: Vec<u64> = named
        .difference(&missing)
        .filter(|s| !in_flight.contains(*s))
        .take(10)
        .copied()
        .collect();
    assert!(
        unnamed.is_empty() && delivered_anyway.is_empty(),
        "outbox_evicted must name exactly the missing seqs (or ones in flight when the broker stopped): missing but not named {unnamed:?}…, named but delivered {delivered_anyway:?}… ({} missing, {} named)",
        missing.len(),
        named.len()
    );
    // Events were not evicted: their stream has no gap.
    let (ev_missing, _) = seq_gaps(&seqs(&probe, "/events"));
    assert!(ev_missing.is_empty(), "events lost: {ev_missing:?}");
    assert!(daemon.stop().success());
}

#[test]
fn a_corrupt_store_is_moved_aside_reported_and_polling_goes_on() {
    let Busy {
        _dir,
        _peer,
        broker: _broker,
        probe,
        mut daemon,
    } = Busy::start();
    assert!(daemon.stop().success());

    // Power loss on a worn SD card: every file of the sled store is garbage now.
    let store = daemon.dir.path().join("state/outbox");
    fn garble(p: &Path) {
        for entry in std::fs::read_dir(p).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                garble(&path);
            } else {
                let len = std::fs::metadata(&path).unwrap().len().max(64) as usize;
                std::fs::write(&path, vec![0xA5u8; len]).unwrap();
            }
        }
    }
    garble(&store);
    let before = seqs(&probe, "/telemetry").into_iter().max().unwrap();

    daemon.restart();
    let ev = wait_until("store_recovered", Duration::from_secs(30), || {
        probe
            .records("/events")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["kind"] == "store_recovered")
    });
    assert_eq!(ev["severity"], "critical");
    let kept = std::fs::read_dir(daemon.dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("outbox.corrupt-")
        });
    assert!(kept, "the corrupt store is kept for forensics");
    // Polling goes on, and numbering continues above anything the central post could have seen.
    let after = wait_until("fresh telemetry", Duration::from_secs(20), || {
        seqs(&probe, "/telemetry")
            .into_iter()
            .filter(|&s| s > before)
            .min()
    });
    assert!(after > before);
    assert!(daemon.proc.is_running());
    assert!(daemon.stop().success());
}

/// SPEC v1.1: with `uplink.compression = "zstd"` every record message is one zstd frame whose
/// content is the v1 envelope; nothing is missing.
#[test]
fn zstd_payloads_are_one_frame_of_the_v1_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, device) = busy_device(dir.path());
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start_edited(broker.port, &device, |base| {
        base.replace(
            "keep_alive = \"5s\"",
            "keep_alive = \"5s\"\ncompression = \"zstd\"",
        )
    });
    wait_until("telemetry flowing", Duration::from_secs(20), || {
        (seqs(&probe, "/telemetry").len() > 500).then_some(())
    });
    let msgs = probe.on("/telemetry");
    let mut raw = 0;
    let mut points = 0;
    for m in &msgs {
        assert_eq!(&m.payload[..4], &[0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
        let env = m.json();
        assert_eq!(env["cabinet"], "test-cab");
        assert_eq!(env["stream"], "telemetry");
        raw += m.payload.len();
        points += env["records"].as_array().unwrap().len();
    }
    let (missing, _) = seq_gaps(&seqs(&probe, "/telemetry"));
    assert!(missing.is_empty(), "missing {missing:?}");
    // The status and its retained document stay plain JSON.
    let status = probe.on("/status");
    assert!(status.iter().all(|m| m.payload.starts_with(b"{")));
    eprintln!("{} bytes a point on the wire", raw as f64 / points as f64);
    assert!(daemon.stop().success());
}

/// A tmpfs mounted for one test on a fresh directory, unmounted on drop. Mounting needs root: CI
/// runs the suite as root; anywhere else this fails, loudly — the test must not be skipped.
struct Tmpfs {
    mount: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        // Effective uid: the second field of `Uid:` in /proc/self/status.
        let euid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            });
        assert!(
            euid.as_deref() == Some("0"),
            "this test mounts a {size} tmpfs (`mount -t tmpfs`) and must run as root, as CI does: \
             run the suite as root (e.g. `sudo -E cargo test --test store_forward_e2e`)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("mount(8)");
        assert!(ok.success(), "mount -t tmpfs -o size={size} failed");
        Tmpfs { mount, _dir: dir }
    }

    fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.mount).unwrap();
        #[allow(clippy::useless_conversion)]
        let free = u64::from(s.blocks_available()) * u64::from(s.fragment_size());
        free
    }

    /// Another writer takes the filesystem until at most `leave` bytes are free.
    fn fill(&self, name: &str, leave: u64) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.mount.join(name))
            .unwrap();
        let page = [0u8; 4096];
        while self.free() > leave {
            if f.write_all(&page).is_err() {
                break;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .status();
    }
}

fn telemetry_stream(d: &Daemon) -> serde_json::Value {
    d.status()["outbox"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stream"] == "telemetry")
        .unwrap()
        .clone()
}

/// Issue 9 item 7: a 2 MiB filesystem, a 64 MiB budget, a flood with the broker down.
#[test]
fn a_full_filesystem_is_an_outage_not_a_data_loss() {
    let fs = Tmpfs::mount("2m");
    let dir = tempfile::tempdir().unwrap();
    let (_peer, device) = device(dir.path(), 100, 50);
    let mut broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let state = fs.mount.join("state");
    let mut daemon = Daemon::start_edited(broker.port, &device, |base| {
        base.lines()
            .map(|l| match l.starts_with("path = ") {
                true => format!("path = \"{}\"", state.display()),
                false => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    // Other files (the OS, logs) take part of the filesystem: the store has about 1.3 MiB.
    fs.fill("other-files", 1300 * 1024);
    wait_connected(&daemon, true);
    broker.stop();
    wait_connected(&daemon, false);
    // Records sent before the broker stopped and never acknowledged may later be evicted and
    // named although the broker had them: the cabinet cannot know.
    let in_flight = in_flight_at_outage(&daemon);

    // The store takes what the filesystem has, evicting the oldest telemetry as for the budget.
    wait_until("storage_full", Duration::from_secs(120), || {
        (daemon.status()["outbox"]["storage_full"] == true).then_some(())
    });
    assert_eq!(
        daemon.get("/readyz").0,
        503,
        "/readyz says the store is full"
    );
    let o = daemon.status()["outbox"].clone();
    assert!(
        o["limit_bytes"].as_u64().unwrap() < o["budget_bytes"].as_u64().unwrap(),
        "/status shows the budget in force: {o}"
    );
    assert!(daemon
        .get("/metrics")
        .1
        .lines()
        .any(|l| l == "cabinetd_outbox_storage_full 1"));
    wait_until("evictions", Duration::from_secs(60), || {
        daemon
            .get("/metrics")
            .1
            .lines()
            .find_map(|l| l.strip_prefix("cabinetd_evicted_records_total{stream=\"telemetry\"} "))
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&n| n > 0)
    });

    // Something else takes the filesystem down to less than the store's reserve: new telemetry
    // is numbered but not stored; the store never takes the last bytes.
    fs.fill("more-files", 128 * 1024);
    let numbered = telemetry_stream(&daemon)["last_seq"].as_u64().unwrap();
    wait_until(
        "telemetry numbered on the nearly full disk",
        Duration::from_secs(30),
        || {
            (telemetry_stream(&daemon)["last_seq"].as_u64().unwrap() > numbered + 5000)
                .then_some(())
        },
    );
    assert!(fs.free() > 0, "room stays reserved");
    assert!(daemon.proc.is_running());

    // Restart on a filesystem with no byte left: the daemon starts and runs without its store.
    assert!(daemon.stop().success());
    fs.fill("last-bytes", 0);
    assert_eq!(fs.free(), 0);
    daemon.respawn();
    let o = wait_until("records held, no store", Duration::from_secs(30), || {
        let o = daemon.status()["outbox"].clone();
        (o["available"] == false && o["held_records"].as_u64().unwrap() > 1000).then_some(o)
    });
    let why = o["error"].as_str().unwrap_or_default();
    assert!(why.contains("No space left"), "/status says why: {o}");
    assert_eq!(daemon.get("/readyz").0, 503);
    assert!(daemon.proc.is_running(), "no exit-1 loop");

    // Room again: the store opens (its backlog intact) within its retry interval.
    for f in ["last-bytes", "more-files", "other-files"] {
        std::fs::remove_file(fs.mount.join(f)).unwrap();
    }
    wait_until("the store open again", Duration::from_secs(30), || {
        (daemon.status()["outbox"]["available"] == true).then_some(())
    });

    // The broker back: the backlog drains and readiness returns.
    broker.start_again();
    wait_connected(&daemon, true);
    wait_until("ready again", Duration::from_secs(90), || {
        (daemon.get("/readyz").0 == 200).then_some(())
    });
    let events = wait_until("the announcements", Duration::from_secs(60), || {
        let ev: Vec<serde_json::Value> = probe
            .records("/events")
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let has = |kind: &str| ev.iter().any(|e| e["kind"] == kind);
        (has("storage_full") && has("outbox_unavailable")).then_some(ev)
    });
    let full = events.iter().find(|e| e["kind"] == "storage_full").unwrap();
    assert_eq!(full["severity"], "critical");
    let reasons: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["kind"] == "outbox_evicted")
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.contains("budget") && reasons.contains("storage_full"),
        "oldest evicted and newest not stored, both announced: {reasons:?}"
    );
    // Seq stays contiguous: every telemetry seq was delivered or named, exactly.
    let (unnamed, delivered_anyway) = wait_until(
        "every telemetry seq delivered or named",
        Duration::from_secs(60),
        || {
            let mut evicted = std::collections::BTreeSet::new();
            for (e, _) in probe.records("/events") {
                if e["kind"] == "outbox_evicted" && e["data"]["stream"] == "telemetry" {
                    let (a, b) = (
                        e["data"]["first_seq"].as_u64().unwrap(),
                        e["data"]["last_seq"].as_u64().unwrap(),
                    );
                    evicted.extend(a..=b);
                }
            }
            let delivered: std::collections::BTreeSet<u64> =
                seqs(&probe, "/telemetry").into_iter().collect();
            let top = *delivered.iter().next_back()?;
            // Numbered from 1 on a fresh cabinet: a seq from the wall clock (~1.8e15) means
            // the first start was taken for a lost store, and the scan below would never end.
            assert!(
                top < 100_000_000,
                "telemetry seqs numbered from 1, got {top}"
            );
            let missing: Vec<u64> = (1..=top).filter(|s| !delivered.contains(s)).collect();
            let unnamed: Vec<u64> = missing
                .iter()
                .copied()
                .filter(|s| !evicted.contains(s))
                .take(10)
                .collect();
            let delivered_anyway: Vec<u64> = evicted
                .iter()
                .copied()
                .filter(|s| *s <= top && delivered.contains(s))
                .filter(|s| !in_flight.contains(s))
                .take(10)
                .collect();
            (unnamed.is_empty() || !delivered_anyway.is_empty())
                .then_some((unnamed, delivered_anyway))
        },
    );
    assert!(
        unnamed.is_empty() && delivered_anyway.is_empty(),
        "missing but not named {unnamed:?}…, named but delivered {delivered_anyway:?}…"
    );
    let (ev_missing, _) = seq_gaps(&seqs(&probe, "/events"));
    assert!(ev_missing.is_empty(), "events lost: {ev_missing:?}");
    assert!(daemon.stop().success());
}
