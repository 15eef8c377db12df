//! Secrets never reach logs, metrics, `/status` or MQTT, whatever the log level or format.
//! The MQTT password and a camera password live in files; the daemon runs at `trace` level. The
//! camera is a real peer (the quirk camera) that accepts that password, so the daemon signs
//! every request with it (supervision, events, a command) — and refuses a wrong one later. A
//! stream URI with a token that the camera slips into its profiles never shows either.

#[path = "support/cameras.rs"]
mod cameras;
#[path = "support/quirk_peer.rs"]
mod quirk_peer;
mod support;

use std::time::Duration;

use quirk_peer::{QuirkPeer, Quirks};
use support::*;

const MQTT_SECRET: &str = "mqtt-S3cr3t-pa55-7f3a";
const CAMERA_SECRET: &str = "cam-S3cr3t-pa55-91c2";

fn assert_clean(what: &str, text: &str) {
    for secret in [MQTT_SECRET, CAMERA_SECRET, "stream-tok-42", "rtsp://"] {
        assert!(!text.contains(secret), "{what} contains a secret");
    }
}

fn run_with(log_format: &str) {
    let broker = Mosquitto::start_with_user("dijon-017", MQTT_SECRET);
    let probe = MqttProbe::start(broker.port, "#");
    let camera = QuirkPeer::start(Quirks {
        password: CAMERA_SECRET.into(),
        uri_in_profiles: true,
        ..Quirks::default()
    });
    let secrets = tempfile::tempdir().unwrap();
    let mqtt_pw = secrets.path().join("mqtt");
    let cam_pw = secrets.path().join("cam");
    std::fs::write(&mqtt_pw, format!("{MQTT_SECRET}\n")).unwrap();
    std::fs::write(&cam_pw, CAMERA_SECRET).unwrap();
    let extra = cameras::camera_toml(
        "cam-darcy",
        &camera.url(),
        "operator",
        &cam_pw,
        "poll = \"200ms\"\nauth_retry = \"1s\"",
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
    // The camera password works too: identity read, events pulled, a command executed.
    wait_until("the camera's identity", Duration::from_secs(20), || {
        cameras::device(&daemon.status(), "cam-darcy")["identity"]["serial"]
            .as_str()
            .map(str::to_owned)
    });
    cameras::wait_events(&probe, "motion", 1, Duration::from_secs(20));
    let r = cameras::command(
        &probe,
        "secret-goto",
        "camera.goto_preset",
        serde_json::json!({"camera": "cam-darcy", "preset": "Entrance"}),
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_clean("/status", &daemon.get("/status").1);
    assert_clean("/metrics", &daemon.get("/metrics").1);
    assert!(daemon.stop().success());

    // A wrong password: refused by the broker; the error is reported without the secret.
    std::fs::write(
        &mqtt_pw,
        "wrong-one-but-still-secret-mqtt-S3cr3t-pa55-7f3a-x",
    )
    .unwrap();
    // The camera changes its password: ours is refused (and reported) without being shown.
    camera.cam.set(|q| q.password = "another-one".into());
    daemon.restart();
    wait_until("the refusal in /status", Duration::from_secs(20), || {
        let st = daemon.status();
        st["uplink"]["last_error"].as_str().map(str::to_owned)
    });
    wait_until(
        "the camera's refusal in /status",
        Duration::from_secs(20),
        || {
            let d = cameras::device(&daemon.status(), "cam-darcy");
            d["last_error"]
                .as_str()
                .filter(|e| e.contains("authentication refused"))
                .map(str::to_owned)
        },
    );
    assert_clean("/status after a refusal", &daemon.get("/status").1);
    assert!(daemon.stop().success());

    let log = daemon.log_text();
    assert!(
        log.len() > 1000,
        "the log was captured ({} bytes)",
        log.len()
    );
    assert!(
        log.contains("cam-darcy"),
        "the camera's requests were logged (trace)"
    );
    assert!(camera.media_requests().is_empty());
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
