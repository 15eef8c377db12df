//! Modbus to the central post, end to end against real peers: a pymodbus server (TCP, and RTU over
//! a socat pty pair) → cabinetd → Mosquitto → a subscriber in the test.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

/// Known register contents, encoded by the peer with Python's struct (independent of our decoder).
fn contents() -> serde_json::Value {
    json!({
        "holding": [
            {"address": 0, "raw": 1234},
            {"address": 1, "type": "i32", "value": -123456},
            {"address": 3, "type": "f32", "value": 1.5},
            {"address": 5, "type": "f32", "value": -2.25, "word_order": "little"},
            {"address": 7, "type": "u32", "value": 305419896, "word_order": "little"}
        ],
        "input": [
            {"address": 0, "type": "i16", "value": -5},
            {"address": 1, "type": "f64", "value": 6.02e23}
        ],
        "coils": [{"address": 0, "raw": [true, false, true]}],
        "discrete": [{"address": 0, "raw": true}]
    })
}

const POINTS: &str = r#"
  [[modbus.point]]
  name = "voltage"
  table = "holding"
  address = 0
  type = "u16"
  scale = 0.1
  unit = "V"

  [[modbus.point]]
  name = "counter"
  table = "holding"
  address = 1
  type = "i32"

  [[modbus.point]]
  name = "power_big"
  table = "holding"
  address = 3
  type = "f32"

  [[modbus.point]]
  name = "power_little"
  table = "holding"
  address = 5
  type = "f32"
  word_order = "little"

  [[modbus.point]]
  name = "energy"
  table = "holding"
  address = 7
  type = "u32"
  word_order = "little"
  scale = 0.001
  offset = 10.0

  [[modbus.point]]
  name = "temperature"
  table = "input"
  address = 0
  type = "i16"

  [[modbus.point]]
  name = "big"
  table = "input"
  address = 1
  type = "f64"

  [[modbus.point]]
  name = "relay_a"
  table = "coil"
  address = 0
  type = "bool"

  [[modbus.point]]
  name = "relay_b"
  table = "coil"
  address = 1
  type = "bool"

  [[modbus.point]]
  name = "relay_c"
  table = "coil"
  address = 2
  type = "bool"

  [[modbus.point]]
  name = "door"
  table = "discrete"
  address = 0
  type = "bool"
"#;

fn expected() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("voltage", json!(123.4)),
        ("counter", json!(-123456)),
        ("power_big", json!(1.5)),
        ("power_little", json!(-2.25)),
        ("energy", json!(305419.896 + 10.0)),
        ("temperature", json!(-5)),
        ("big", json!(6.02e23)),
        ("relay_a", json!(true)),
        ("relay_b", json!(false)),
        ("relay_c", json!(true)),
        ("door", json!(true)),
    ]
}

fn assert_values(probe: &MqttProbe, device: &str) {
    for (point, want) in expected() {
        let full = format!("{device}/{point}");
        let recs = wait_until(
            &format!("a reading of {full}"),
            Duration::from_secs(20),
            || Some(point_records(probe, &full)).filter(|r| !r.is_empty()),
        );
        let got = &recs[0];
        assert_eq!(got["quality"], "good", "{full}: {got}");
        match (want.as_f64(), got["value"].as_f64()) {
            (Some(w), Some(g)) => {
                assert!(
                    (w - g).abs() <= w.abs() * 1e-9 + 1e-9,
                    "{full}: want {w}, got {g}"
                )
            }
            _ => assert_eq!(got["value"], want, "{full}"),
        }
    }
}

/// Polls done so far, from the poll-duration histogram's count.
fn poll_count(d: &Daemon, device: &str) -> u64 {
    let (_, body) = d.get("/metrics");
    let prefix = format!("cabinetd_poll_duration_seconds_count{{device=\"{device}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn write_contents(dir: &std::path::Path) -> String {
    let path = dir.join("contents.json");
    std::fs::write(&path, contents().to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn tcp_values_arrive_scaled_named_and_numbered_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (_peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--unit", "3", "--json", &json],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "[[modbus]]\nname = \"meter\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 3\npoll = \"200ms\"\ntimeout = \"500ms\"\n{POINTS}"
    );
    let mut daemon = Daemon::start(broker.port, &extra);
    assert_values(&probe, "meter");
    // Telemetry seqs start at 1 and have no gap and no duplicate.
    let s = seqs(&probe, "/telemetry");
    assert_eq!(s.iter().min(), Some(&1));
    let (missing, dups) = seq_gaps(&s);
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?}, duplicates {dups:?}"
    );
    // Report by exception: unchanged values are not repeated before the heartbeat (60 s default),
    // however many polls happen meanwhile.
    let before = s.len();
    let polls = |d: &Daemon| poll_count(d, "meter");
    let start = polls(&daemon);
    wait_until("five more polls", Duration::from_secs(10), || {
        (polls(&daemon) >= start + 5).then_some(())
    });
    assert_eq!(
        seqs(&probe, "/telemetry").len(),
        before,
        "unchanged values were published again"
    );
    assert_eq!(daemon.status()["devices"][0]["up"], true);
    assert!(daemon.stop().success());
}

#[test]
fn rtu_over_a_pty_pair_gives_the_same_values() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (_socat, dev_side, peer_side) = pty_pair();
    let (_peer, _) = python_peer(
        "modbus_server.py",
        &[
            "--rtu", &peer_side, "--baud", "19200", "--parity", "N", "--unit", "7", "--json", &json,
        ],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "[[modbus]]\nname = \"rtu-meter\"\ntransport = \"rtu\"\naddress = \"{dev_side}\"\nbaud = 19200\nparity = \"none\"\ndata_bits = 8\nstop_bits = 1\nunit_id = 7\npoll = \"300ms\"\ntimeout = \"1s\"\n{POINTS}"
    );
    let mut daemon = Daemon::start(broker.port, &extra);
    assert_values(&probe, "rtu-meter");
    let (missing, dups) = seq_gaps(&seqs(&probe, "/telemetry"));
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?}, duplicates {dups:?}"
    );
    assert!(daemon.stop().success());
}

#[test]
fn a_dead_device_does_not_delay_a_healthy_one_and_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (_healthy, hport) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", &json],
    );
    let (_dead, dport) = python_peer("modbus_server.py", &["--tcp", "127.0.0.1:0", "--silent"]);
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    // Heartbeat = poll: the healthy point is published every poll, so gaps show the period.
    let extra = format!(
        r#"
[[modbus]]
name = "healthy"
transport = "tcp"
address = "127.0.0.1:{hport}"
unit_id = 1
poll = "500ms"
timeout = "300ms"
heartbeat = "500ms"

  [[modbus.point]]
  name = "voltage"
  table = "holding"
  address = 0
  type = "u16"

[[modbus]]
name = "dead"
transport = "tcp"
address = "127.0.0.1:{dport}"
unit_id = 1
poll = "500ms"
timeout = "300ms"

  [[modbus.point]]
  name = "voltage"
  table = "holding"
  address = 0
  type = "u16"
"#
    );
    let mut daemon = Daemon::start(broker.port, &extra);
    let healthy = wait_until("12 healthy readings", Duration::from_secs(30), || {
        Some(point_records(&probe, "healthy/voltage")).filter(|r| r.len() >= 12)
    });
    let times: Vec<std::time::SystemTime> = healthy
        .iter()
        .map(|r| humantime::parse_rfc3339(r["ts"].as_str().unwrap()).unwrap())
        .collect();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap();
        assert!(
            gap <= Duration::from_millis(550),
            "healthy device gap {gap:?} > poll + 10 %"
        );
    }
    let dead = wait_until("the dead point marked bad", Duration::from_secs(10), || {
        point_records(&probe, "dead/voltage")
            .into_iter()
            .find(|r| r["quality"] == "bad")
    });
    assert_eq!(dead["quality"], "bad");
    let downs: Vec<_> = probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == "device_down")
        .collect();
    assert_eq!(downs.len(), 1, "device_down exactly once: {downs:?}");
    assert_eq!(downs[0]["source"], "dead");
    assert_eq!(downs[0]["severity"], "major");
    assert!(daemon.stop().success());
}

#[test]
fn broker_stopped_for_10_s_loses_no_seq() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (_peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", &json],
    );
    let mut broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "[[modbus]]\nname = \"meter\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\npoll = \"200ms\"\ntimeout = \"500ms\"\nheartbeat = \"200ms\"\n{POINTS}"
    );
    let mut daemon = Daemon::start(broker.port, &extra);
    wait_until("telemetry flowing", Duration::from_secs(20), || {
        Some(seqs(&probe, "/telemetry")).filter(|s| s.len() > 20)
    });
    broker.stop();
    let stopped_at = std::time::Instant::now();
    wait_until(
        "the daemon to notice the outage",
        Duration::from_secs(20),
        || (daemon.status()["uplink"]["connected"] == false).then_some(()),
    );
    // Keep the broker away for 10 s while polling goes on (the outage itself is the test input).
    wait_until("10 s of outage", Duration::from_secs(15), || {
        (stopped_at.elapsed() >= Duration::from_secs(10)).then_some(())
    });
    let produced_during_outage = daemon.status()["outbox"].clone();
    broker.start_again();
    wait_until("the outbox to drain", Duration::from_secs(60), || {
        let st = daemon.status();
        (st["uplink"]["connected"] == true && st["outbox"]["records"]["telemetry"] == 0)
            .then_some(())
    });
    let s = wait_until(
        "every seq to reach the subscriber",
        Duration::from_secs(30),
        || {
            let s = seqs(&probe, "/telemetry");
            let (missing, _) = seq_gaps(&s);
            missing.is_empty().then_some(s)
        },
    );
    assert!(
        s.len() > 50 + 11,
        "outage produced records: {produced_during_outage}"
    );
    assert!(daemon.stop().success());
}

/// Issue 13 item 0: three `[[modbus]]` units on one RS-485 line (a pty pair), the third silent.
/// Before, the second entry found the port locked by the first and stayed down for good. Now
/// one line owner serves all three: the two answering units publish at their poll rate (every
/// gap within poll + their own timeout), the silent one is down, with its own `device_down`.
#[test]
fn three_units_on_one_rtu_line_one_silent() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (_socat, dev_side, peer_side) = pty_pair();
    let (_peer, _) = python_peer(
        "modbus_server.py",
        &[
            "--rtu", &peer_side, "--baud", "19200", "--parity", "N", "--unit", "1,2", "--json",
            &json,
        ],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let unit = |name: &str, id: u8, timeout: &str| {
        format!(
            "[[modbus]]\nname = \"{name}\"\ntransport = \"rtu\"\naddress = \"{dev_side}\"\nbaud = 19200\nparity = \"none\"\nunit_id = {id}\npoll = \"500ms\"\ntimeout = \"{timeout}\"\nheartbeat = \"500ms\"\n  [[modbus.point]]\n  name = \"voltage\"\n  table = \"holding\"\n  address = 0\n  type = \"u16\"\n  scale = 0.1\n"
        )
    };
    let extra = format!(
        "{}{}{}",
        unit("meter-1", 1, "500ms"),
        unit("meter-2", 2, "500ms"),
        unit("meter-3", 3, "400ms")
    );
    let mut daemon = Daemon::start_logged(broker.port, &extra, &[]);
    for device in ["meter-1", "meter-2"] {
        let recs = wait_until(
            &format!("12 readings of {device}"),
            Duration::from_secs(30),
            || Some(point_records(&probe, &format!("{device}/voltage"))).filter(|r| r.len() >= 12),
        );
        let times: Vec<std::time::SystemTime> = recs
            .iter()
            .map(|r| humantime::parse_rfc3339(r["ts"].as_str().unwrap()).unwrap())
            .collect();
        for pair in times.windows(2) {
            let gap = pair[1].duration_since(pair[0]).unwrap();
            assert!(
                gap < Duration::from_millis(500 + 500),
                "{device}: {gap:?} between two polls"
            );
        }
        assert!(recs
            .iter()
            .all(|r| r["quality"] == "good" && r["value"] == 123.4));
    }
    let status = wait_until("meter-3 down", Duration::from_secs(10), || {
        let st = daemon.status();
        let devices = st["devices"].as_array().unwrap().clone();
        devices
            .iter()
            .any(|d| d["name"] == "meter-3" && d["health"] == "down")
            .then_some(devices)
    });
    for d in &status {
        let up = d["name"] != "meter-3";
        assert_eq!(d["up"], up, "{d}");
    }
    let downs: Vec<_> = probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == "device_down")
        .collect();
    assert_eq!(downs.len(), 1, "{downs:?}");
    assert_eq!(downs[0]["source"], "meter-3");
    let log = daemon.log_text();
    assert!(log.contains("meter-3"), "the log is captured: {log}");
    assert!(
        !log.contains("exclusive lock"),
        "one owner for the line: {log}"
    );
    assert!(daemon.stop().success());
}

/// Issue 13 items 9, 12 and 14: through MQTT. A value the point cannot hold exactly, or a
/// boolean for a register, is rejected naming `args.value`. A write to a frozen device
/// (SIGSTOP) is answered `failed` with a reason saying the outcome is unknown; after SIGCONT
/// a `write_outcome` event reports what the device holds, with the command's id.
#[test]
fn a_write_to_a_frozen_device_is_unknown_then_its_outcome_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let json = write_contents(dir.path());
    let (peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", &json],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "[[modbus]]\nname = \"panel\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\npoll = \"1h\"\ntimeout = \"1s\"\n  [[modbus.point]]\n  name = \"plan\"\n  table = \"holding\"\n  address = 0\n  type = \"u16\"\n  writable = true\n"
    );
    // One poll at start, then none for an hour: the write below is the frozen device's first
    // exchange (a poll in flight would take the device down first, and the write would be
    // refused without being sent: `device is down`).
    let mut daemon = Daemon::start(broker.port, &extra);
    wait_until("first reading", Duration::from_secs(20), || {
        point_records(&probe, "panel/plan").into_iter().next()
    });
    let cmd = "cabinets/v1/test-cab/cmd";
    let send = |id: &str, value: serde_json::Value| {
        let c = json!({"id": id, "action": "point.write", "args": {"point": "panel/plan", "value": value}, "expires_at": "2099-01-01T00:00:00Z"});
        probe.publish(cmd, c.to_string().as_bytes(), false);
    };
    let result = |id: &str| {
        wait_until(&format!("result of {id}"), Duration::from_secs(20), || {
            probe
                .records("/cmd/result")
                .into_iter()
                .map(|(r, _)| r)
                .find(|r| r["id"] == id)
        })
    };
    for (id, value, reason) in [
        (
            "frac",
            json!(12.7),
            "field `args.value`: 12.7 cannot be written exactly",
        ),
        (
            "bool",
            json!(true),
            "field `args.value`: a boolean cannot be written",
        ),
    ] {
        send(id, value);
        let r = result(id);
        assert_eq!(r["status"], "rejected", "{r}");
        assert!(r["reason"].as_str().unwrap().starts_with(reason), "{r}");
    }

    peer.signal(nix::sys::signal::Signal::SIGSTOP);
    send("w-frozen", json!(42));
    let r = result("w-frozen");
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(
        r["reason"],
        "unknown: no response from panel to write holding register 0 within 1s; the device may still apply it"
    );
    peer.signal(nix::sys::signal::Signal::SIGCONT);
    let event = wait_until("the write_outcome event", Duration::from_secs(30), || {
        probe
            .records("/events")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["kind"] == "write_outcome")
    });
    assert_eq!(event["source"], "panel/plan");
    assert_eq!(event["data"]["id"], "w-frozen");
    assert_eq!(event["data"]["point"], "panel/plan");
    assert_eq!(event["data"]["requested"], 42);
    // What the event says is what telemetry shows the device holds: the probe that found the
    // device back read the point (its record precedes the event).
    let held = point_records(&probe, "panel/plan")
        .into_iter()
        .last()
        .unwrap();
    assert_eq!(held["quality"], "good", "{held}");
    assert_eq!(event["data"]["read"], held["value"], "{event} {held}");
    assert_eq!(event["data"]["applied"], held["value"] == 42);
    assert!(daemon.stop().success());
}
