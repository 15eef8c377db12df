//! Issue 12 acceptance, through the daemon binary with a real Mosquitto, a real pymodbus device
//! and an independent signer (PyPI joserfc, `tests/peers/jose_peer.py`): signed commands run;
//! every forgery, downgrade, replay and out-of-scope command is refused with its reason, touches
//! nothing (the device's own log shows no write) and leaves the daemon unaffected; desired
//! configurations need a `desired_config` key and stay within the local `[safety]` envelope.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cabinetd::auth::key::SigningKey;
use cabinetd::record::format_ts;
use serde_json::{json, Value};
use support::*;

const CMD: &str = "cabinets/v1/test-cab/cmd";
const ALL: &str = "cabinets/v1/all/cmd";
const DESIRED: &str = "cabinets/v1/test-cab/config/desired";

/// A signing key written as PKCS#8 PEM (as `cabinetd key generate` writes it).
fn key(dir: &Path, name: &str) -> (PathBuf, SigningKey) {
    let path = dir.join(format!("{name}.pem"));
    let k = SigningKey::generate().unwrap();
    k.write_new(&path).unwrap();
    (path, k)
}

/// Every token of a test, made by joserfc in one process (see jose_peer.py `batch`).
fn sign_all(specs: &[Value]) -> Vec<String> {
    let mut child = Command::new(python())
        .arg(root().join("tests/peers/jose_peer.py"))
        .arg("batch")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(specs.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "jose_peer.py batch failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn spec(key: &Path, kid: &str, payload: Value) -> Value {
    json!({"alg": "EdDSA", "key": key, "kid": kid, "payload": payload})
}

fn ts(t: SystemTime) -> String {
    format_ts(t)
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A `point.write` of `value` with id `id`, valid for ten minutes from now.
fn write_cmd(id: &str, value: u64, cabinet: &str, now: SystemTime) -> Value {
    json!({"id": id, "action": "point.write", "args": {"point": "panel/setpoint", "value": value},
        "cabinet": cabinet, "issued_at": ts(now), "expires_at": ts(now + mins(10))})
}

/// The value of one metric line (`name{labels}`), 0 when absent.
fn metric(d: &Daemon, series: &str) -> f64 {
    d.get("/metrics")
        .1
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn results(probe: &MqttProbe, id: &str) -> Vec<Value> {
    probe
        .records("/cmd/result")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["id"] == id)
        .collect()
}

fn await_result(probe: &MqttProbe, id: &str) -> Value {
    wait_until(&format!("result of {id}"), Duration::from_secs(20), || {
        results(probe, id).into_iter().next()
    })
}

fn events(probe: &MqttProbe, kind: &str) -> Vec<Value> {
    probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == kind)
        .collect()
}

fn writes(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("WRITE"))
        .cloned()
        .collect()
}

const PANEL: &str = r#"
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
  writable = true
  min = 0
  max = 1000

  [[modbus.point]]
  name = "limit"
  table = "holding"
  address = 1
  type = "u16"
"#;

/// The base config with `require_signed = true`, a one-hour maximum validity and `keys`.
fn signed_daemon(broker: u16, extra: &str, keys: &str) -> Daemon {
    Daemon::start_edited(broker, &format!("{keys}\n{extra}"), |base| {
        base.replace(
            "require_signed = false",
            "require_signed = true\nmax_clock_skew = \"5min\"\nmax_validity = \"1h\"",
        )
    })
}

fn trusted(kid: &str, key: &SigningKey, actions: &str, desired: bool) -> String {
    format!(
        "[[security.trusted_key]]\nkid = \"{kid}\"\npublic_key = \"{}\"\nactions = {actions}\ndesired_config = {desired}\n",
        key.public_key_b64()
    )
}

fn modbus_peer(dir: &Path) -> (ChildGuard, String, Arc<Mutex<Vec<String>>>) {
    let contents = dir.join("c.json");
    std::fs::write(
        &contents,
        json!({"holding": [{"address": 0, "raw": [100, 5]}]}).to_string(),
    )
    .unwrap();
    python_peer_recorded(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    )
}

#[test]
fn signed_commands_run_and_every_forgery_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port, device) = modbus_peer(dir.path());
    let (ops_pem, ops) = key(dir.path(), "ops");
    let (lights_pem, lights) = key(dir.path(), "lights");
    let (stranger_pem, _) = key(dir.path(), "stranger");
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/#");
    let keys = format!(
        "{}{}",
        trusted("ops", &ops, "[\"point.write\"]", false),
        trusted("lights", &lights, "[\"light.*\"]", false)
    );
    let mut daemon = signed_daemon(broker.port, &PANEL.replace("PORT", &port), &keys);
    wait_until("first reading", Duration::from_secs(20), || {
        point_records(&probe, "panel/setpoint").into_iter().next()
    });

    let now = SystemTime::now();
    let with = |id: &str, f: &dyn Fn(&mut Value)| {
        let mut c = write_cmd(id, 1, "test-cab", now);
        f(&mut c);
        c
    };
    let good = write_cmd("s1", 42, "test-cab", now);
    let specs = vec![
        spec(&ops_pem, "ops", good.clone()), // 0 good
        spec(&ops_pem, "ops", write_cmd("all1", 43, "all", now)), // 1 all on P/all/cmd
        json!({"alg": "none", "kid": "ops", "payload": with("n1", &|_| {})}), // 2 alg none
        json!({"alg": "HS256", "kid": "ops", "secret": ops.public_key_b64(), "payload": with("h1", &|_| {})}), // 3
        spec(&ops_pem, "nobody", with("k1", &|_| {})), // 4 unknown kid
        spec(&stranger_pem, "ops", with("w1", &|_| {})), // 5 wrong key
        spec(&ops_pem, "ops", with("f1", &|_| {})),    // 6 to be flipped
        spec(
            &ops_pem,
            "ops",
            with("c1", &|c| c["cabinet"] = json!("other-cab")),
        ), // 7
        spec(
            &ops_pem,
            "ops",
            with("a1", &|c| c["cabinet"] = json!("all")),
        ), // 8 on P/C/cmd
        spec(
            &ops_pem,
            "ops",
            with("e1", &|c| {
                c["issued_at"] = json!(ts(now - mins(20)));
                c["expires_at"] = json!(ts(now - mins(10)));
            }),
        ), // 9 expired
        spec(
            &ops_pem,
            "ops",
            with("t1", &|c| {
                c["issued_at"] = json!(ts(now + mins(30)));
                c["expires_at"] = json!(ts(now + mins(40)));
            }),
        ), // 10 issued in the future
        spec(
            &ops_pem,
            "ops",
            with("v1", &|c| c["expires_at"] = json!(ts(now + mins(120)))),
        ), // 11
        spec(&lights_pem, "lights", with("x1", &|_| {})), // 12 out of scope
        spec(&ops_pem, "ops", write_cmd("s1", 7, "test-cab", now)), // 13 same id, new value
    ];
    let tokens = sign_all(&specs);

    // An independent signer's command runs: the device itself saw the write.
    probe.publish(CMD, tokens[0].as_bytes(), false);
    let r = await_result(&probe, "s1");
    assert_eq!(r["status"], "succeeded", "{r}");
    wait_until("the write at the device", Duration::from_secs(10), || {
        (writes(&device) == ["WRITE fc=6 addr=0 values=42"]).then_some(())
    });
    probe.publish(ALL, tokens[1].as_bytes(), false);
    assert_eq!(await_result(&probe, "all1")["status"], "succeeded");

    // Refused, each with its reason.
    let mut flipped = tokens[6].clone().into_bytes();
    let dot = flipped.iter().position(|b| *b == b'.').unwrap();
    let i = dot + 10;
    flipped[i] = if flipped[i] == b'A' { b'B' } else { b'A' };
    let plain = with("u1", &|_| {}).to_string();
    let malformed = "this is not a JWS".to_owned();
    let refused: Vec<(&str, Vec<u8>)> = vec![
        (CMD, plain.into_bytes()),
        (CMD, tokens[2].clone().into_bytes()),
        (CMD, tokens[3].clone().into_bytes()),
        (CMD, tokens[4].clone().into_bytes()),
        (CMD, tokens[5].clone().into_bytes()),
        (CMD, flipped),
        (CMD, tokens[7].clone().into_bytes()),
        (CMD, tokens[8].clone().into_bytes()),
        (CMD, tokens[9].clone().into_bytes()),
        (CMD, tokens[10].clone().into_bytes()),
        (CMD, tokens[11].clone().into_bytes()),
        (CMD, tokens[12].clone().into_bytes()),
        (CMD, malformed.into_bytes()),
        // A replay of the same token, and the same id signed again with another value.
        (CMD, tokens[0].clone().into_bytes()),
        (CMD, tokens[13].clone().into_bytes()),
        // 10 MB: dropped unread by uplink.max_incoming_bytes.
        (CMD, vec![b'x'; 10_000_000]),
    ];
    for (topic, payload) in &refused {
        probe.publish(topic, payload, false);
    }
    let expected = [
        ("unsigned", 1),
        ("bad_alg", 2),
        ("unknown_kid", 1),
        ("bad_signature", 2),
        ("wrong_cabinet", 2),
        ("expired", 1),
        ("issued_in_future", 1),
        ("validity_too_long", 1),
        ("action_not_allowed", 1),
        ("malformed", 1),
        ("replayed", 2),
    ];
    wait_until("every refusal counted", Duration::from_secs(30), || {
        expected
            .iter()
            .all(|(reason, n)| {
                metric(
                    &daemon,
                    &format!("cabinetd_auth_rejected_total{{reason=\"{reason}\"}}"),
                ) == f64::from(*n)
            })
            .then_some(())
    });
    wait_until(
        "the oversized message dropped",
        Duration::from_secs(20),
        || (!events(&probe, "message_dropped").is_empty()).then_some(()),
    );

    // Authentic but refused: a result naming why; expired is `expired`.
    for (id, status, why) in [
        ("c1", "rejected", "other-cab"),
        ("a1", "rejected", "\"all\" only on P/all/cmd"),
        ("e1", "expired", "expired"),
        ("t1", "rejected", "in the future"),
        ("v1", "rejected", "max_validity"),
        ("x1", "rejected", "may not sign action \"point.write\""),
    ] {
        let r = await_result(&probe, id);
        assert_eq!(r["status"], status, "{id}: {r}");
        assert!(r["reason"].as_str().unwrap().contains(why), "{id}: {r}");
    }
    // Not authentic: never a result (a forger cannot occupy an id), only the event.
    for id in ["u1", "n1", "h1", "k1", "w1", "f1"] {
        assert!(results(&probe, id).is_empty(), "{id} got a result");
    }
    let refusals = wait_until("the auth_rejected events", Duration::from_secs(20), || {
        let e = events(&probe, "auth_rejected");
        (e.len() >= 13).then_some(e)
    });
    let mut reasons: Vec<&str> = refusals
        .iter()
        .map(|e| e["data"]["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "action_not_allowed",
            "bad_alg",
            "bad_alg",
            "bad_signature",
            "bad_signature",
            "expired",
            "issued_in_future",
            "malformed",
            "unknown_kid",
            "unsigned",
            "validity_too_long",
            "wrong_cabinet",
            "wrong_cabinet"
        ]
    );
    for e in &refusals {
        assert!(!e.to_string().contains("panel/setpoint"), "no payload: {e}");
    }
    let k1 = refusals
        .iter()
        .find(|e| e["data"]["reason"] == "unknown_kid")
        .unwrap();
    // The kid is reported; the payload of an unknown key is not even decoded.
    assert_eq!(k1["data"]["kid"], "nobody");

    // The replays: the first result published again, nothing executed again.
    wait_until(
        "s1's result published again twice",
        Duration::from_secs(20),
        || (results(&probe, "s1").len() == 3).then_some(()),
    );
    assert!(results(&probe, "s1")
        .iter()
        .all(|r| r["status"] == "succeeded"));

    // Nothing touched: the device saw exactly the two signed writes.
    assert_eq!(
        writes(&device),
        ["WRITE fc=6 addr=0 values=42", "WRITE fc=6 addr=0 values=43"]
    );
    // The daemon is unaffected: same session, still executing signed commands.
    let st = daemon.status();
    assert_eq!(st["uplink"]["connected"], true, "{st}");
    assert_eq!(st["uplink"]["reconnects"], 0, "{st}");
    let later = sign_all(&[spec(
        &ops_pem,
        "ops",
        write_cmd("s2", 44, "test-cab", SystemTime::now()),
    )]);
    probe.publish(CMD, later[0].as_bytes(), false);
    assert_eq!(await_result(&probe, "s2")["status"], "succeeded");
    assert_eq!(
        metric(
            &daemon,
            "cabinetd_commands_total{action=\"point.write\",status=\"succeeded\"}"
        ),
        3.0
    );

    // The audit trail: every outcome, with id, action, target, signer and result; no values.
    let audit = daemon.status()["audit"].as_array().unwrap().clone();
    let find = |id: &str, result: &str| {
        audit
            .iter()
            .find(|e| e["id"] == id && e["result"] == result)
            .unwrap_or_else(|| panic!("no audit entry {id} {result}: {audit:#?}"))
            .clone()
    };
    let s1 = find("s1", "succeeded");
    assert_eq!(
        (
            s1["action"].as_str(),
            s1["target"].as_str(),
            s1["kid"].as_str(),
            s1["via"].as_str()
        ),
        (
            Some("point.write"),
            Some("panel/setpoint"),
            Some("ops"),
            Some("cmd")
        )
    );
    assert_eq!(find("all1", "succeeded")["via"], "all/cmd");
    assert_eq!(find("s1", "replayed")["kid"], "ops");
    assert_eq!(find("x1", "auth_rejected")["kid"], "lights");
    assert_eq!(find("e1", "auth_rejected")["target"], "panel/setpoint");
    assert!(
        audit.iter().any(|e| e["result"] == "auth_rejected"
            && e["kid"].is_null()
            && e["reason"].as_str().unwrap().starts_with("unsigned")),
        "{audit:#?}"
    );
    for e in &audit {
        let text = e.to_string();
        assert!(
            !text.contains("\"value\"") && !text.contains("42}"),
            "{text}"
        );
    }
    // `cabinetd status` prints the last ones, one line each.
    let out = Command::new(cabinetd_bin())
        .args(["status", "--http", &daemon.http])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("audit    last 10 of"), "{text}");
    assert!(
        text.contains("s2 point.write panel/setpoint by ops: succeeded"),
        "{text}"
    );
    assert!(daemon.stop().success());
}

/// A desired configuration `{version, config}` signed as `kid` with `pem`, valid ten minutes.
fn desired(pem: &Path, kid: &str, version: &str, toml: &str) -> Value {
    let now = SystemTime::now();
    spec(
        pem,
        kid,
        json!({"version": version, "config": toml, "cabinet": "test-cab",
            "issued_at": ts(now), "expires_at": ts(now + mins(10))}),
    )
}

fn reported(probe: &MqttProbe, version: &str) -> Option<Value> {
    probe
        .on("/config/reported")
        .into_iter()
        .map(|m| m.json())
        .find(|j| j["version"] == version)
}

const BUS: &str = r#"
[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 2
poll = "1s"
  [[dali.group]]
  number = 1
  members = [0, 1]
  system_failure_level = 80
"#;

#[test]
fn desired_configs_need_a_desired_config_key_and_stay_within_the_safety_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let (_peer, port, device) = modbus_peer(dir.path());
    let (central_pem, central) = key(dir.path(), "central");
    let (ops_pem, ops) = key(dir.path(), "ops");
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/#");
    let keys = format!(
        "{}{}",
        trusted("central", &central, "[]", true),
        trusted("ops", &ops, "[\"*\"]", false)
    );
    let panel = PANEL.replace("PORT", &port);
    let local = format!("[safety]\ndali_min_system_failure_level = 50\n{panel}{BUS}");
    let mut daemon = signed_daemon(broker.port, &local, &keys);
    let version = daemon.status()["config_version"].clone();

    let lowered = BUS.replace("system_failure_level = 80", "system_failure_level = 10");
    let widened = panel.replace(
        "  address = 1\n  type = \"u16\"\n",
        "  address = 1\n  type = \"u16\"\n  writable = true\n",
    );
    assert_ne!(widened, panel);
    let extra_device = format!(
        "{panel}{BUS}\n[[modbus]]\nname = \"spare\"\naddress = \"127.0.0.1:{port}\"\npoll = \"200ms\"\n  [[modbus.point]]\n  name = \"v\"\n  table = \"holding\"\n  address = 1\n  type = \"u16\"\n"
    );
    let tokens = sign_all(&[
        desired(&ops_pem, "ops", "d-ops", &extra_device),
        desired(
            &central_pem,
            "central",
            "d-dark",
            &format!("{panel}{lowered}"),
        ),
        desired(
            &central_pem,
            "central",
            "d-write",
            &format!("{widened}{BUS}"),
        ),
        desired(&central_pem, "central", "d-good", &extra_device),
    ]);

    // Unsigned: refused, not answered on config/reported (a forger cannot overwrite it).
    let unsigned = json!({"version": "d-plain", "config": extra_device}).to_string();
    probe.publish(DESIRED, unsigned.as_bytes(), true);
    wait_until("unsigned refused", Duration::from_secs(20), || {
        (metric(&daemon, "cabinetd_auth_rejected_total{reason=\"unsigned\"}") == 1.0).then_some(())
    });
    // Signed by a key that may not sign desired configs: refused and reported.
    probe.publish(DESIRED, tokens[0].as_bytes(), true);
    let r = wait_until("d-ops reported", Duration::from_secs(20), || {
        reported(&probe, "d-ops")
    });
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .contains("desired_config = false"),
        "{r}"
    );
    // Signed by the right key but crossing [safety]: rejected whole, naming the rule.
    probe.publish(DESIRED, tokens[1].as_bytes(), true);
    let r = wait_until("d-dark reported", Duration::from_secs(20), || {
        reported(&probe, "d-dark")
    });
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(r["errors"][0].as_str().unwrap().starts_with("safety.dali_min_system_failure_level: [[dali]] bus-a group 1: system_failure_level = 10 %"), "{r}");
    probe.publish(DESIRED, tokens[2].as_bytes(), true);
    let r = wait_until("d-write reported", Duration::from_secs(20), || {
        reported(&probe, "d-write")
    });
    assert_eq!(r["status"], "rejected", "{r}");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("safety.desired_may_write: panel/limit"),
        "{r}"
    );
    assert!(reported(&probe, "d-plain").is_none());
    assert_eq!(
        daemon.status()["config_version"],
        version,
        "nothing applied"
    );
    let names = |d: &Daemon| -> Vec<String> {
        d.status()["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&daemon), ["bus-a", "panel"]);

    // The right key, within the envelope: applied, audited with its signer.
    probe.publish(DESIRED, tokens[3].as_bytes(), true);
    let r = wait_until("d-good reported", Duration::from_secs(20), || {
        reported(&probe, "d-good")
    });
    assert_eq!(r["status"], "applied", "{r}");
    assert_eq!(daemon.status()["config_version"], "d-good");
    wait_until("the new device polled", Duration::from_secs(20), || {
        point_records(&probe, "spare/v").into_iter().next()
    });
    let audit = daemon.status()["audit"].as_array().unwrap().clone();
    let entry = |v: &str| {
        audit
            .iter()
            .find(|e| e["target"] == v)
            .cloned()
            .unwrap_or_else(|| panic!("{v}: {audit:#?}"))
    };
    assert_eq!(
        (
            entry("d-good")["result"].as_str(),
            entry("d-good")["kid"].as_str()
        ),
        (Some("applied"), Some("central"))
    );
    assert_eq!(entry("d-dark")["result"], "rejected");
    assert_eq!(entry("d-ops")["result"], "auth_rejected");
    // What an unknown sender claims (its version) is not trusted, so not shown.
    assert!(
        audit.iter().any(|e| e["result"] == "auth_rejected"
            && e["kid"].is_null()
            && e["reason"].as_str().unwrap().starts_with("unsigned")),
        "{audit:#?}"
    );
    assert!(writes(&device).is_empty(), "nothing written");

    // After a restart the stored one is checked against [safety] again and restored; the
    // retained message (same version) is not applied twice.
    assert!(daemon.stop().success());
    daemon.restart();
    assert_eq!(daemon.status()["config_version"], "d-good");
    assert!(daemon.stop().success());
}
