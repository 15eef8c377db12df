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
