//! Commands from the central post, end to end: Mosquitto → cabinetd → pymodbus, results back on
//! `P/C/cmd/result`. Every command gets exactly one final result; an id is executed at most once.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const DEVICE: &str = r#"
[[modbus]]
name = "panel"
transport = "tcp"
address = "127.0.0.1:PORT"
unit_id = 1
poll = "200ms"
timeout = "500ms"

  [[modbus.point]]
  name = "setpoint"
  table = "holding"
  address = 0
  type = "u16"
  scale = 0.1
  writable = true
  min = 0
  max = 500

  [[modbus.point]]
  name = "relay"
  table = "coil"
  address = 0
  type = "bool"
  writable = true

  [[modbus.point]]
  name = "status"
  table = "input"
  address = 0
  type = "u16"
"#;

fn result_for(probe: &MqttProbe, id: &str) -> Vec<serde_json::Value> {
    probe
        .records("/cmd/result")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["id"] == id)
        .collect()
}

fn send(probe: &MqttProbe, topic: &str, cmd: serde_json::Value) {
    probe.publish(topic, cmd.to_string().as_bytes(), false);
}

fn await_result(probe: &MqttProbe, id: &str) -> serde_json::Value {
    wait_until(&format!("result of {id}"), Duration::from_secs(20), || {
        result_for(probe, id).into_iter().next()
    })
}

#[test]
fn commands_execute_once_and_every_one_gets_a_final_result() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("c.json");
    std::fs::write(&contents, json!({"holding": [{"address": 0, "raw": 100}], "coils": [{"address": 0, "raw": false}], "input": [{"address": 0, "raw": 7}]}).to_string()).unwrap();
    let (_peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start(broker.port, &DEVICE.replace("PORT", &port));
    wait_until("first reading", Duration::from_secs(20), || {
        point_records(&probe, "panel/setpoint").into_iter().next()
    });
    let cmd = "cabinets/v1/test-cab/cmd";

    // A valid write reaches the device and its new value comes back as telemetry.
    send(
        &probe,
        cmd,
        json!({"id": "w1", "action": "point.write", "args": {"point": "panel/setpoint", "value": 42.5}, "expires_at": "2099-01-01T00:00:00Z"}),
    );
    let r = await_result(&probe, "w1");
    assert_eq!(r["status"], "succeeded", "{r}");
    wait_until(
        "the written value read back",
        Duration::from_secs(20),
        || {
            point_records(&probe, "panel/setpoint")
                .into_iter()
                .find(|t| (t["value"].as_f64().unwrap_or(0.0) - 42.5).abs() < 1e-9)
        },
    );

    // The same id again (even with another value) is not executed; its result is published again.
    send(
        &probe,
        cmd,
        json!({"id": "w1", "action": "point.write", "args": {"point": "panel/setpoint", "value": 7.0}, "expires_at": "2099-01-01T00:00:00Z"}),
    );
    wait_until("w1 result republished", Duration::from_secs(20), || {
        (result_for(&probe, "w1").len() == 2).then_some(())
    });
    let both = result_for(&probe, "w1");
    assert_eq!(both[1]["status"], "succeeded");
    assert_ne!(
        both[0]["seq"], both[1]["seq"],
        "a republished result is a new record"
    );

    // Broadcast topic works the same; coils take booleans.
    send(
        &probe,
        "cabinets/v1/all/cmd",
        json!({"id": "w2", "action": "point.write", "args": {"point": "panel/relay", "value": true}, "expires_at": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(await_result(&probe, "w2")["status"], "succeeded");
    wait_until("relay on", Duration::from_secs(20), || {
        point_records(&probe, "panel/relay")
            .into_iter()
            .find(|t| t["value"] == true)
    });

    // Rejections name the field; nothing reaches the device.
    for (id, args, field) in [
        (
            "r1",
            json!({"point": "panel/setpoint", "value": 900}),
            "value",
        ),
        ("r2", json!({"point": "panel/status", "value": 1}), "status"),
        (
            "r3",
            json!({"point": "nowhere/x", "value": 1}),
            "args.point",
        ),
    ] {
        send(
            &probe,
            cmd,
            json!({"id": id, "action": "point.write", "args": args, "expires_at": "2099-01-01T00:00:00Z"}),
        );
        let r = await_result(&probe, id);
        assert_eq!(r["status"], "rejected", "{id}: {r}");
        assert!(
            r["reason"].as_str().unwrap().contains(field),
            "{id}: reason should name {field}: {r}"
        );
    }
    send(
        &probe,
        cmd,
        json!({"id": "u1", "action": "door.open", "args": {}, "expires_at": "2099-01-01T00:00:00Z"}),
    );
    let r = await_result(&probe, "u1");
    assert_eq!(r["status"], "rejected");
    assert!(
        r["reason"].as_str().unwrap().contains("field `action`"),
        "{r}"
    );

    // Past expires_at: expired, not run.
    send(
        &probe,
        cmd,
        json!({"id": "e1", "action": "point.write", "args": {"point": "panel/setpoint", "value": 1.0}, "expires_at": "2020-01-01T00:00:00Z"}),
    );
    assert_eq!(await_result(&probe, "e1")["status"], "expired");
    assert!(point_records(&probe, "panel/setpoint")
        .iter()
        .all(|t| t["value"].as_f64() != Some(1.0)));

    // Results are numbered on their own stream without gaps; metrics count them by status.
    let (missing, dups) = seq_gaps(&seqs(&probe, "/cmd/result"));
    assert!(
        missing.is_empty() && dups.is_empty(),
        "missing {missing:?}, dups {dups:?}"
    );
    let (_, metrics) = daemon.get("/metrics");
    assert!(
        metrics.contains(r#"cabinetd_commands_total{action="point.write",status="succeeded"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cabinetd_commands_total{action="point.write",status="expired"} 1"#),
        "{metrics}"
    );
    assert!(daemon.stop().success());
}
