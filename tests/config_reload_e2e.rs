//! Configuration changes on a running cabinet: SIGHUP re-reads the files, `config/desired` comes
//! from the central post. Either applied whole or refused whole, with the running config kept.

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

fn meter(name: &str, port: &str) -> String {
    format!(
        "[[modbus]]\nname = \"{name}\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nunit_id = 1\npoll = \"200ms\"\n\n  [[modbus.point]]\n  name = \"v\"\n  table = \"holding\"\n  address = 0\n  type = \"u16\"\n"
    )
}

fn device_names(d: &Daemon) -> Vec<String> {
    d.status()["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sighup_applies_a_valid_change_and_keeps_the_running_config_on_an_invalid_one() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("c.json");
    std::fs::write(
        &contents,
        json!({"holding": [{"address": 0, "raw": 5}]}).to_string(),
    )
    .unwrap();
    let (_peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start(broker.port, &meter("first", &port));
    assert_eq!(device_names(&daemon), ["first"]);
    let base = std::fs::read_to_string(&daemon.config).unwrap();

    // Valid: a second device appears and is polled.
    std::fs::write(
        &daemon.config,
        format!("{base}\n{}", meter("second", &port)),
    )
    .unwrap();
    daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until("second device polled", Duration::from_secs(20), || {
        point_records(&probe, "second/v").into_iter().next()
    });
    assert_eq!(device_names(&daemon), ["first", "second"]);

    let version_before = daemon.status()["config_version"].clone();
    let reload_ts = |d: &Daemon| d.status()["last_reload"]["ts"].clone();

    // Invalid: an unknown key. Refused with the position; both devices keep being polled.
    let previous = reload_ts(&daemon);
    std::fs::write(
        &daemon.config,
        format!("{base}\n{}\nbogus_key = 1\n", meter("third", &port)),
    )
    .unwrap();
    daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let outcome = wait_until("the reload outcome", Duration::from_secs(10), || {
        let st = daemon.status();
        (st["last_reload"]["ts"] != previous).then(|| st["last_reload"].clone())
    });
    assert_eq!(outcome["status"], "rejected", "{outcome}");
    let config_path = daemon.config.display().to_string();
    assert!(
        outcome["errors"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{config_path}:")),
        "errors name FILE:LINE:COL: {outcome}"
    );
    assert!(
        outcome["errors"][0].as_str().unwrap().contains("bogus_key"),
        "{outcome}"
    );
    assert_eq!(device_names(&daemon), ["first", "second"]);
    assert_eq!(daemon.status()["config_version"], version_before);

    // A change that needs a restart is refused whole, naming the section.
    let previous = reload_ts(&daemon);
    std::fs::write(
        &daemon.config,
        format!(
            "{}\n{}",
            base.replace("test-cab", "other-cab"),
            meter("second", &port)
        ),
    )
    .unwrap();
    daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let outcome = wait_until("the reload outcome", Duration::from_secs(10), || {
        let st = daemon.status();
        (st["last_reload"]["ts"] != previous).then(|| st["last_reload"].clone())
    });
    assert_eq!(outcome["status"], "rejected", "{outcome}");
    assert!(
        outcome["errors"][0].as_str().unwrap().contains("[cabinet]"),
        "{outcome}"
    );
    assert_eq!(daemon.status()["cabinet"], "test-cab");
    assert_eq!(device_names(&daemon), ["first", "second"]);
    assert!(daemon.stop().success());
}

#[test]
fn desired_config_is_applied_or_rejected_whole_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("c.json");
    std::fs::write(
        &contents,
        json!({"holding": [{"address": 0, "raw": 5}]}).to_string(),
    )
    .unwrap();
    let (_peer, port) = python_peer(
        "modbus_server.py",
        &["--tcp", "127.0.0.1:0", "--json", contents.to_str().unwrap()],
    );
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start(broker.port, "");
    let desired = "cabinets/v1/test-cab/config/desired";
    let reported = |version: &str| {
        probe
            .on("/config/reported")
            .into_iter()
            .map(|m| m.json())
            .find(|j| j["version"] == version)
    };

    // Rejected: a broken document; errors name the position in the desired text, every one of
    // them, exactly as check-config prints them for the same text (issue 13 item 8).
    let bad = format!(
        "{}\n[[modbus.point]]\nname = 1\nbogus_key = 2\n",
        meter("remote", &port)
    );
    probe.publish(
        desired,
        json!({"version": "v1", "config": bad})
            .to_string()
            .as_bytes(),
        true,
    );
    let r = wait_until("v1 reported", Duration::from_secs(20), || reported("v1"));
    assert_eq!(r["status"], "rejected", "{r}");
    let errors = r["errors"].as_array().unwrap();
    assert!(
        !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.as_str().unwrap().starts_with("<desired>:")),
        "{r}"
    );
    assert!(device_names(&daemon).is_empty());
    let desired_file = dir.path().join("desired.toml");
    std::fs::write(&desired_file, &bad).unwrap();
    let check = std::process::Command::new(cabinetd_bin())
        .args(["check-config", "--config"])
        .arg(&daemon.config)
        .arg("--config")
        .arg(&desired_file)
        .output()
        .unwrap();
    let checked: Vec<String> = String::from_utf8_lossy(&check.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{}:", desired_file.display())))
        .map(|l| format!("<desired>:{l}"))
        .collect();
    let lines: Vec<&str> = errors.iter().map(|e| e.as_str().unwrap()).collect();
    assert!(lines.len() >= 3, "{r}");
    assert_eq!(lines, checked, "same lines as check-config");

    // Applied: the new device is polled; the status says which version runs.
    probe.publish(
        desired,
        json!({"version": "v2", "config": meter("remote", &port)})
            .to_string()
            .as_bytes(),
        true,
    );
    let r = wait_until("v2 reported", Duration::from_secs(20), || reported("v2"));
    assert_eq!(r["status"], "applied", "{r}");
    wait_until("remote device polled", Duration::from_secs(20), || {
        point_records(&probe, "remote/v").into_iter().next()
    });
    assert_eq!(daemon.status()["config_version"], "v2");
    // The online status is published again at once naming it, retained (issue 13 item 7): not
    // at the next reconnect. A subscriber arriving afterwards gets v2.
    wait_until("online status naming v2", Duration::from_secs(20), || {
        probe
            .on("/status")
            .into_iter()
            .map(|m| m.json())
            .find(|j| j["online"] == true && j["config_version"] == "v2")
    });
    let late = MqttProbe::start(broker.port, "cabinets/v1/test-cab/status");
    let retained = wait_until("retained status", Duration::from_secs(20), || {
        late.on("/status").into_iter().find(|m| m.retain)
    });
    assert_eq!(retained.json()["config_version"], "v2");

    // It survives a restart (persisted), and the online status names it.
    assert!(daemon.stop().success());
    let statuses_before = probe.on("/status").len();
    daemon.restart();
    assert_eq!(device_names(&daemon), ["remote"]);
    assert_eq!(daemon.status()["config_version"], "v2");
    let online = wait_until(
        "online status after the restart",
        Duration::from_secs(20),
        || {
            probe
                .on("/status")
                .into_iter()
                .skip(statuses_before)
                .map(|m| m.json())
                .find(|j| j["online"] == true)
        },
    );
    assert_eq!(online["config_version"], "v2", "{online}");
    assert!(daemon.stop().success());
}
