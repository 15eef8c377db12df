//! Issue 12 item 7 through the daemon binary, with a real Mosquitto and pymodbus devices: a
//! desired configuration that makes the cabinet unhealthy within `config.confirm_after` — it
//! removes the uplink-critical device, leaves a device that was up stuck down, or points the
//! uplink at an unreachable broker — is rolled back to the last good one, reported on
//! `config/reported` with the reason (event `config_rolled_back`), and not applied again when
//! the broker delivers the retained message again, even after a restart.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const DESIRED: &str = "cabinets/v1/test-cab/config/desired";

fn device(name: &str, port: &str) -> String {
    format!(
        "[[modbus]]\nname = \"{name}\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\npoll = \"200ms\"\ntimeout = \"300ms\"\n  [[modbus.point]]\n  name = \"v\"\n  table = \"holding\"\n  address = 0\n  type = \"u16\"\n"
    )
}

fn peer(dir: &Path, name: &str) -> (ChildGuard, String) {
    let contents = dir.join(format!("{name}.json"));
    std::fs::write(
        &contents,
        json!({"holding": [{"address": 0, "raw": 1}]}).to_string(),
    )
    .unwrap();
    python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    )
}

fn reports(probe: &MqttProbe, version: &str) -> Vec<Value> {
    probe
        .on("/config/reported")
        .into_iter()
        .map(|m| m.json())
        .filter(|j| j["version"] == version)
        .collect()
}

fn audit_has(d: &Daemon, version: &str, result: &str) -> bool {
    d.status()["audit"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["target"] == version && e["result"] == result)
}

fn publish(probe: &MqttProbe, version: &str, toml: &str) {
    let doc = json!({"version": version, "config": toml}).to_string();
    probe.publish(DESIRED, doc.as_bytes(), true);
}

/// Publishes `version`, sees it applied (`applied`: the report of it reaches the broker; not
/// when the change cuts the uplink first: the rollback report replaces it), then rolled back
/// within `confirm_after` (3 s) plus margin; returns the rollback report.
fn rolled_back(probe: &MqttProbe, d: &Daemon, version: &str, toml: &str, applied: bool) -> Value {
    publish(probe, version, toml);
    if applied {
        let r = wait_until(
            &format!("{version} applied"),
            Duration::from_secs(20),
            || reports(probe, version).into_iter().next(),
        );
        assert_eq!(r["status"], "applied", "{r}");
    }
    let report = wait_until(
        &format!("{version} rolled back"),
        Duration::from_secs(30),
        || {
            reports(probe, version)
                .into_iter()
                .find(|r| r["rolled_back"] == true)
        },
    );
    assert_eq!(report["status"], "rejected", "{report}");
    assert_eq!(report["running"], "v1", "{report}");
    wait_until("v1 running again", Duration::from_secs(10), || {
        (d.status()["config_version"] == "v1").then_some(())
    });
    assert!(audit_has(d, version, "rolled_back"));
    report
}

#[test]
fn unhealthy_desired_configs_are_rolled_back_to_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_panel, panel_port) = peer(dir.path(), "panel");
    let (_router, router_port) = peer(dir.path(), "router");
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/#");
    let local = format!(
        "[config]\nconfirm_after = \"3s\"\nuplink_critical = [\"router\"]\n\n{}",
        device("panel", &panel_port)
    );
    let mut daemon = Daemon::start(broker.port, &local);

    // v1 adds the router: healthy, confirmed.
    let v1 = device("router", &router_port);
    publish(&probe, "v1", &v1);
    wait_until("v1 confirmed", Duration::from_secs(20), || {
        audit_has(&daemon, "v1", "confirmed").then_some(())
    });
    let state =
        std::fs::read_to_string(daemon.dir.path().join("state/desired-config.json")).unwrap();
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        (state["format"].as_u64(), state["confirmed"].as_bool()),
        (Some(2), Some(true))
    );

    // v2 removes the uplink-critical router.
    let r = rolled_back(&probe, &daemon, "v2", "", true);
    assert_eq!(
        r["errors"],
        json!(["uplink-critical device router was up before and is no longer configured"])
    );
    let ev = wait_until("config_rolled_back event", Duration::from_secs(20), || {
        probe
            .records("/events")
            .into_iter()
            .map(|(r, _)| r)
            .find(|e| e["kind"] == "config_rolled_back" && e["data"]["version"] == "v2")
    });
    assert_eq!(ev["data"]["running"], "v1", "{ev}");
    assert_eq!(ev["data"]["restored"], true, "{ev}");
    wait_until("the router polled again", Duration::from_secs(20), || {
        let devices = daemon.status()["devices"].clone();
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "router" && d["up"] == true)
            .then_some(())
    });

    // v3 moves the panel to an address where nothing answers: stuck down.
    let dead = free_port().to_string();
    let v3 = format!(
        "{}{}",
        device("panel", &dead),
        device("router", &router_port)
    );
    let r = rolled_back(&probe, &daemon, "v3", &v3, true);
    let why = r["errors"][0].as_str().unwrap();
    assert!(
        why.starts_with("device panel was up before and stayed down for 3s"),
        "{r}"
    );

    // v4 points the uplink at a broker nobody runs: the uplink is not back, rolled back to
    // the real broker, and the report arrives once it is.
    let v4 = format!("{v1}\n[uplink]\nbroker = \"mqtt://127.0.0.1:{dead}\"\n");
    let r = rolled_back(&probe, &daemon, "v4", &v4, false);
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("uplink not back within 3s"),
        "{r}"
    );
    let st = daemon.status();
    assert_eq!(st["uplink"]["connected"], true, "{st}");
    assert_eq!(
        st["uplink"]["broker"],
        format!("mqtt://127.0.0.1:{}", broker.port)
    );

    // The retained v4 is delivered again at every connect: not applied again, not even after
    // a restart.
    let before = reports(&probe, "v4").len();
    assert!(daemon.stop().success());
    daemon.restart();
    wait_until(
        "the retained v4 seen again",
        Duration::from_secs(20),
        || audit_has(&daemon, "v4", "rejected").then_some(()),
    );
    assert_eq!(daemon.status()["config_version"], "v1");
    assert_eq!(reports(&probe, "v4").len(), before, "no new report of v4");
    assert!(daemon.stop().success());
}
