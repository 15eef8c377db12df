//! Secrets never reach logs, metrics, `/status` or MQTT, whatever the log level or format.
//! The MQTT password and a camera password live in files; the daemon runs at `trace` level.

mod support;

use std::time::Duration;

use support::*;

const MQTT_SECRET: &str = "mqtt-S3cr3t-pa55-7f3a";
const CAMERA_SECRET: &str = "cam-S3cr3t-pa55-91c2";

fn assert_clean(what: &str, text: &str) {
    for secret in [MQTT_SECRET, CAMERA_SECRET] {
        assert!(!text.contains(secret), "{what} contains a secret");
    }
}

fn run_with(log_format: &str) {
    let broker = Mosquitto::start_with_user("dijon-017", MQTT_SECRET);
    let probe = MqttProbe::start(broker.port, "#");
    let secrets = tempfile::tempdir().unwrap();
    let mqtt_pw = secrets.path().join("mqtt");
    let cam_pw = secrets.path().join("cam");
    std::fs::write(&mqtt_pw, format!("{MQTT_SECRET}\n")).unwrap();
    std::fs::write(&cam_pw, CAMERA_SECRET).unwrap();
    let extra = format!(
        "[[camera]]\nname = \"cam-darcy\"\naddress = \"http://127.0.0.1:9/onvif/device_service\"\nusername = \"gateway\"\npassword_file = \"{}\"\n",
        cam_pw.display()
    );
    let mut daemon = Daemon::start_logged(broker.port, &extra, &["--log-format", log_format]);
    // Log everything there is.
    let cfg = std::fs::read_to_string(&daemon.config)
        .unwrap()
        .replace("filter = \"info,cabinetd=debug\"", "filter = \"trace\"")
        .replace(
            "keep_alive = \"5s\"",
            &format!(
                "keep_alive = \"5s\"\nusername = \"dijon-017\"\npassword_file = \"{}\"",
                mqtt_pw.display()
            ),
        );
    std::fs::write(&daemon.config, cfg).unwrap();
    assert!(daemon.stop().success());
    daemon.restart();

    // The password works: the cabinet is online (so it was read and sent to the broker).
    wait_until("online with credentials", Duration::from_secs(20), || {
        probe
            .on("/status")
            .into_iter()
            .map(|m| m.json())
            .find(|j| j["online"] == true)
    });
    assert_clean("/status", &daemon.get("/status").1);
    assert_clean("/metrics", &daemon.get("/metrics").1);
    assert!(daemon.stop().success());

    // A wrong password: refused by the broker; the error is reported without the secret.
    std::fs::write(
        &mqtt_pw,
        "wrong-one-but-still-secret-mqtt-S3cr3t-pa55-7f3a-x",
    )
    .unwrap();
    daemon.restart();
    wait_until("the refusal in /status", Duration::from_secs(20), || {
        let st = daemon.status();
        st["uplink"]["last_error"].as_str().map(str::to_owned)
    });
    assert_clean("/status after a refusal", &daemon.get("/status").1);
    assert!(daemon.stop().success());

    let log = daemon.log_text();
    assert!(
        log.len() > 1000,
        "the log was captured ({} bytes)",
        log.len()
    );
    assert_clean("the log", &log);
    for m in probe.messages() {
        assert_clean(
            &format!("MQTT message on {}", m.topic),
            &String::from_utf8_lossy(&m.payload),
        );
    }
}

#[test]
fn no_secret_in_plain_logs_status_metrics_or_mqtt() {
    run_with("plain");
}

#[test]
fn no_secret_in_json_logs_either() {
    run_with("json");
}
