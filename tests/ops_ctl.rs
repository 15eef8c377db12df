//! `cabinetd ctl` against a real Mosquitto and a tiny fake cabinet that verifies the signed
//! command with `auth::verify` and answers on `P/C/cmd/result`; `ctl fleet` from retained
//! statuses.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use cabinetd::auth::key::SigningKey;
use cabinetd::auth::{verify, ActionPattern, SecurityPolicy, TopicKind, TrustedKey, TrustedKeys};
use support::{Mosquitto, MqttProbe};

/// A fake cabinet `cab-a`: verifies each command and answers `succeeded` for `light.*`, `failed`
/// otherwise, `rejected` (with the reason) when the signature check fails.
fn fake_cabinet(port: u16, key: [u8; 32]) {
    let keys = TrustedKeys::new(vec![TrustedKey {
        kid: "ops".into(),
        public_key: key,
        actions: vec![ActionPattern::Any],
        desired_config: false,
    }]);
    let mut o = rumqttc::MqttOptions::new("fake-cab-a", "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = rumqttc::Client::new(o, 16);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    client
                        .try_subscribe("cabinets/v1/cab-a/cmd", rumqttc::QoS::AtLeastOnce)
                        .unwrap();
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let (id, status, reason) = match verify(
                        &p.payload,
                        TopicKind::Cabinet,
                        &keys,
                        &SecurityPolicy::default(),
                        "cab-a",
                        SystemTime::now(),
                    ) {
                        Ok(v) if v.action.as_deref().is_some_and(|a| a.starts_with("light.")) => {
                            (v.id.unwrap(), "succeeded", String::new())
                        }
                        Ok(v) => (v.id.unwrap(), "failed", "no such device".into()),
                        // SPEC: a result only for an authentic message whose id parsed.
                        Err(r) => match r.result_id() {
                            Some(id) => (id.to_owned(), "rejected", r.to_string()),
                            None => continue,
                        },
                    };
                    let env = serde_json::json!({"cabinet": "cab-a", "stream": "results", "replay": false,
                        "records": [{"seq": 1, "ts": "2026-11-26T08:00:00.000Z", "id": id, "status": status, "reason": reason}]});
                    client
                        .try_publish(
                            "cabinets/v1/cab-a/cmd/result",
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            env.to_string(),
                        )
                        .unwrap();
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("fake cabinet subscribed");
}

fn ctl(port: u16, args: &[&str]) -> Output {
    Command::new(support::cabinetd_bin())
        .args(["ctl", "--broker", &format!("mqtt://127.0.0.1:{port}")])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn send_waits_for_the_result_and_exits_by_its_status() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ops.pem");
    let key = SigningKey::generate().unwrap();
    key.write_new(&pem).unwrap();
    fake_cabinet(broker.port, key.public_key());
    let pem = pem.to_str().unwrap();

    let out = ctl(
        broker.port,
        &[
            "send",
            "cab-a",
            "light.set",
            "--args",
            r#"{"target":"all","level_percent":100}"#,
            "--key",
            pem,
            "--kid",
            "ops",
            "--id",
            "ops-cmd-1",
            "--timeout",
            "20s",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(line["cabinet"], "cab-a");
    assert_eq!(line["id"], "ops-cmd-1");
    assert_eq!(line["status"], "succeeded");

    // Not succeeded → exit 1, the result printed.
    let out = ctl(
        broker.port,
        &[
            "send",
            "cab-a",
            "point.write",
            "--args",
            r#"{"point":"x/y","value":1}"#,
            "--key",
            pem,
            "--kid",
            "ops",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"failed\""));

    // Authentic but refused (already expired): a `rejected` result with the reason, exit 1.
    let out = ctl(
        broker.port,
        &[
            "send",
            "cab-a",
            "light.set",
            "--args",
            "{}",
            "--key",
            pem,
            "--kid",
            "ops",
            "--expires",
            "0s",
            "--timeout",
            "20s",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"rejected\"") && stdout.contains("expired"),
        "{stdout}"
    );

    // Nobody answers: exit 1 once the timeout is over, saying so.
    let out = ctl(
        broker.port,
        &[
            "send",
            "cab-z",
            "light.set",
            "--key",
            pem,
            "--kid",
            "ops",
            "--timeout",
            "1s",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no result"),
        "{out:?}"
    );
}

#[test]
fn fleet_lists_the_retained_statuses() {
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/+/status");
    probe.publish(
        "cabinets/v1/cab-a/status",
        br#"{"online":true,"cabinet":"cab-a","boot_id":"b1","version":"0.2.0","config_version":"v7","mode":"connected","ts":"2026-11-26T08:00:00.123Z"}"#,
        true,
    );
    probe.publish(
        "cabinets/v1/cab-b/status",
        br#"{"online":false,"cabinet":"cab-b","boot_id":"b2","since":"2026-11-25T07:00:00.000Z"}"#,
        true,
    );
    support::wait_until("both statuses retained", Duration::from_secs(10), || {
        (probe.on("/status").len() >= 2).then_some(())
    });
    let out = ctl(broker.port, &["fleet", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["cabinet"], "cab-a");
    assert_eq!(list[0]["online"], true);
    assert_eq!(list[0]["config_version"], "v7");
    assert_eq!(list[1]["cabinet"], "cab-b");
    assert_eq!(list[1]["online"], false);
    assert_eq!(list[1]["last_seen"], "2026-11-25T07:00:00.000Z");
    let out = ctl(broker.port, &["fleet"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("2 cabinet(s), 1 online"), "{table}");
    // An unreachable broker: exit 1 with the reason.
    let out = ctl(support::free_port(), &["fleet", "--wait", "2s"]);
    assert_eq!(out.status.code(), Some(1));
}
