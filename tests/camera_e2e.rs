//! ONVIF cameras through the daemon binary, against the quirk camera of
//! `adapters/onvif/tests/support` (a real HTTP peer on loopback that checks WS-Security digests
//! with its own code and records every request): Mosquitto → cabinetd → camera and back.
//! The independent peer ipycam is driven in `tests/camera_ipycam_e2e.rs`.

#[path = "support/cameras.rs"]
mod cameras;
#[path = "support/quirk_peer.rs"]
mod quirk_peer;
mod support;

use std::time::{Duration, Instant};

use cameras::*;
use quirk_peer::{Hostile, QuirkPeer, Quirks};
use serde_json::json;
use support::*;

const PASSWORD: &str = "s3cret-pw";

fn password_file(dir: &std::path::Path, pw: &str) -> std::path::PathBuf {
    let p = dir.join("cam-pw");
    std::fs::write(&p, format!("{pw}\n")).unwrap();
    p
}

/// Online, identity, points, clock drift and sync_time, presets, reboot, motion events, offline
/// and back, metrics; and privacy: no media request, no URI or password anywhere.
#[test]
fn a_camera_supervised_end_to_end() {
    let peer = QuirkPeer::start(Quirks {
        password: PASSWORD.into(),
        clock_offset_s: 7200, // a camera two hours off
        skew_tolerance_s: 5,
        uri_in_profiles: true,
        ..Quirks::default()
    });
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let secrets = tempfile::tempdir().unwrap();
    let pw = password_file(secrets.path(), PASSWORD);
    let mut daemon = Daemon::start_logged(
        broker.port,
        &camera_toml(
            "cam-1",
            &peer.url(),
            "operator",
            &pw,
            "poll = \"200ms\"\nclock_drift_threshold = \"5s\"",
        ),
        &[],
    );

    // Online, identity in /status.
    let dev = wait_until(
        "cam-1 up with its identity",
        Duration::from_secs(20),
        || {
            let d = device(&daemon.status(), "cam-1");
            (d["up"] == true && d["identity"].is_object()).then_some(d)
        },
    );
    assert_eq!(dev["protocol"], "onvif");
    assert_eq!(
        dev["identity"],
        json!({"manufacturer": "QuirkCam", "model": "QC-1 PTZ", "firmware": "5.5.1 build 180227", "serial": "QC0001"})
    );
    // Points: online, the clock two hours ahead, the response time.
    let online = wait_until("cam-1/online", Duration::from_secs(10), || {
        point_records(&probe, "cam-1/online").into_iter().next()
    });
    assert_eq!(
        (&online["value"], &online["quality"]),
        (&json!(true), &json!("good"))
    );
    let offset = point_records(&probe, "cam-1/clock_offset_s");
    let off = offset[0]["value"].as_f64().unwrap();
    assert!((off - 7200.0).abs() < 2.0, "{off}");
    assert!(point_records(&probe, "cam-1/response_ms")[0]["value"].is_u64());
    let drift = wait_events(&probe, "camera_clock_drift", 1, Duration::from_secs(10));
    assert_eq!(drift[0]["data"]["active"], true);
    assert_eq!(drift[0]["severity"], "minor");
    assert_eq!(drift[0]["source"], "cam-1");

    // Motion: the camera toggles its cell motion detector on every pull; one event per
    // transition, alternating; its CPU-usage topic raises nothing.
    let motion = wait_events(&probe, "motion", 4, Duration::from_secs(30));
    for pair in motion.windows(2) {
        assert_ne!(
            pair[0]["data"]["active"], pair[1]["data"]["active"],
            "{motion:#?}"
        );
    }
    assert_eq!(
        motion[0]["data"]["topic"],
        "RuleEngine/CellMotionDetector/Motion"
    );
    assert!(motion[0]["data"]["source"]
        .as_str()
        .unwrap()
        .contains("VideoSourceConfigurationToken=vs"));
    assert!(events(&probe, "tamper", None).is_empty());
    // This camera answers PullMessages at once instead of holding it: pulled at most once a
    // second all the same (no busy loop against a camera).
    let pulls: Vec<Instant> = peer
        .cam
        .log()
        .into_iter()
        .filter(|l| l.action == "PullMessages")
        .map(|l| l.at)
        .collect();
    assert!(pulls.len() >= 3, "{}", pulls.len());
    for pair in pulls.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(gap >= Duration::from_millis(900), "pulls {gap:?} apart");
    }

    // Commands over MQTT: presets by name and by token move the head; wrong ones are
    // rejected naming the field.
    let goto = |id: &str, camera: &str, preset: serde_json::Value, status: &str| {
        let args = json!({"camera": camera, "preset": preset});
        expect_result(&probe, id, "camera.goto_preset", args, status)
    };
    goto("p1", "cam-1", json!("Parking"), "succeeded");
    assert_eq!(peer.cam.preset().as_deref(), Some("2"));
    goto("p2", "cam-1", json!(1), "succeeded");
    assert_eq!(peer.cam.preset().as_deref(), Some("1"));
    let why = goto("p3", "cam-1", json!("Nowhere"), "rejected");
    assert!(why.starts_with("field `args.preset`"), "{why}");
    let why = goto("p4", "cam-9", json!("1"), "rejected");
    assert!(why.starts_with("field `args.camera`"), "{why}");

    // sync_time: the camera takes the cabinet's clock; the offset point follows and the drift
    // ends.
    let cam = json!({"camera": "cam-1"});
    expect_result(&probe, "t1", "camera.sync_time", cam.clone(), "succeeded");
    let drift = wait_events(&probe, "camera_clock_drift", 2, Duration::from_secs(10));
    assert_eq!(drift[1]["data"]["active"], false);
    let back = wait_until("the offset back near 0", Duration::from_secs(10), || {
        point_records(&probe, "cam-1/clock_offset_s")
            .into_iter()
            .find(|r| r["value"].as_f64().is_some_and(|v| v.abs() < 2.0))
    });
    assert_eq!(back["quality"], "good");
    expect_result(&probe, "r1", "camera.reboot", cam, "succeeded");

    let metrics = daemon.get("/metrics").1;
    assert!(
        metrics.contains("cabinetd_device_up{device=\"cam-1\",protocol=\"onvif\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("cabinetd_poll_duration_seconds_count{device=\"cam-1\"}"));
    assert!(metrics
        .contains("cabinetd_commands_total{action=\"camera.goto_preset\",status=\"succeeded\"} 2"));

    // The camera goes away, then comes back: one camera_offline, one camera_online.
    peer.cam.set(|q| q.offline = true);
    let off = wait_events(&probe, "camera_offline", 1, Duration::from_secs(20));
    assert_eq!(off[0]["severity"], "major");
    wait_until("online false", Duration::from_secs(10), || {
        point_records(&probe, "cam-1/online")
            .into_iter()
            .find(|r| r["value"] == false)
    });
    assert!(daemon
        .get("/metrics")
        .1
        .contains("cabinetd_device_up{device=\"cam-1\",protocol=\"onvif\"} 0"));
    assert_eq!(device(&daemon.status(), "cam-1")["up"], false);
    peer.cam.set(|q| q.offline = false);
    wait_events(&probe, "camera_online", 1, Duration::from_secs(20));
    wait_until("up again", Duration::from_secs(10), || {
        (device(&daemon.status(), "cam-1")["up"] == true).then_some(())
    });
    assert_eq!(events(&probe, "camera_offline", None).len(), 1);
    assert_eq!(events(&probe, "camera_online", None).len(), 1);
    assert!(
        events(&probe, "device_down", None).is_empty(),
        "cameras say camera_offline"
    );
    assert!(events(&probe, "camera_auth_failed", None).is_empty());

    let status = daemon.get("/status").1;
    assert!(daemon.stop().success());
    assert_eq!(peer.cam.live_subscriptions(), 0, "unsubscribed at the stop");

    // Privacy: nothing but supervision was asked; no URI, token or password went anywhere.
    assert!(
        peer.media_requests().is_empty(),
        "{:?}",
        peer.media_requests()
    );
    let log = daemon.log_text();
    for (what, text) in [("the log", log.as_str()), ("/status", status.as_str())] {
        for secret in [PASSWORD, "rtsp://", "stream-tok-42", "token=abc"] {
            assert!(!text.contains(secret), "{what} contains {secret:?}");
        }
    }
    for m in probe.messages() {
        let text = String::from_utf8_lossy(&m.payload);
        for secret in [PASSWORD, "rtsp://", "stream-tok-42", "token=abc"] {
            assert!(
                !text.contains(secret),
                "MQTT {} contains {secret:?}",
                m.topic
            );
        }
    }
}

/// Issue 11: a wrong password gives one `camera_auth_failed` and slow retries — never a storm
/// of failed logins (cameras lock accounts). Fixed by a new password file and SIGHUP.
#[test]
fn a_wrong_password_is_one_event_and_slow_retries() {
    let peer = QuirkPeer::start(Quirks {
        password: PASSWORD.into(),
        ..Quirks::default()
    });
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let secrets = tempfile::tempdir().unwrap();
    let pw = password_file(secrets.path(), "not-the-password");
    let daemon = Daemon::start_logged(
        broker.port,
        &camera_toml(
            "cam-1",
            &peer.url(),
            "operator",
            &pw,
            "poll = \"200ms\"\nauth_retry = \"2s\"",
        ),
        &[],
    );
    let ev = wait_events(&probe, "camera_auth_failed", 1, Duration::from_secs(20));
    assert_eq!(ev[0]["severity"], "major");
    assert_eq!(ev[0]["data"]["username"], "operator");
    // Let the retries come (the gate opens after ~2 s, then ~4 s): at least two more attempts.
    let start = Instant::now();
    let logins = wait_until(
        "two retries after the backoff",
        Duration::from_secs(30),
        || {
            let l: Vec<Instant> = peer
                .cam
                .log()
                .into_iter()
                .filter(|l| l.auth.failed_login())
                .map(|l| l.at)
                .collect();
            let bursts = bursts(&l);
            (bursts.len() >= 3).then_some(l)
        },
    );
    let took = start.elapsed();
    let b = bursts(&logins);
    for burst in &b {
        assert!(
            burst.len() <= 2,
            "one refusal costs at most two failed logins: {b:?}"
        );
    }
    for pair in b.windows(2) {
        let gap = pair[1][0].duration_since(*pair[0].last().unwrap());
        assert!(
            gap >= Duration::from_millis(1500),
            "retries {gap:?} apart: {b:?}"
        );
    }
    // 200 ms polls with events on would have tried ~5 times a second without the gate.
    assert!(
        logins.len() <= 2 * b.len(),
        "{} failed logins in {took:?}",
        logins.len()
    );
    assert_eq!(
        events(&probe, "camera_auth_failed", None).len(),
        1,
        "one per episode"
    );
    let dev = device(&daemon.status(), "cam-1");
    assert_eq!(dev["up"], true, "a refusing camera is online");
    assert!(
        dev["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("authentication refused"),
        "{dev}"
    );

    // A reload whose password file is gone is refused whole, naming the key's position.
    std::fs::remove_file(&pw).unwrap();
    daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
    let reload = wait_until("the reload refused", Duration::from_secs(20), || {
        let r = daemon.status()["last_reload"].clone();
        (r["status"] == "rejected").then_some(r)
    });
    let why = reload["errors"][0].as_str().unwrap().to_owned();
    assert!(
        why.contains(":17: camera[cam-1].password_file") && why.contains("does not exist"),
        "{why}"
    );
    // The right password and a reload: identity is read, no further event.
    std::fs::write(&pw, PASSWORD).unwrap();
    daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(
        "identity with the right password",
        Duration::from_secs(20),
        || {
            device(&daemon.status(), "cam-1")["identity"]["manufacturer"]
                .as_str()
                .map(str::to_owned)
        },
    );
    assert_eq!(events(&probe, "camera_auth_failed", None).len(), 1);
}

/// Failed logins grouped: those less than a second apart are one refusal.
fn bursts(logins: &[Instant]) -> Vec<Vec<Instant>> {
    let mut out: Vec<Vec<Instant>> = Vec::new();
    for &t in logins {
        match out.last_mut() {
            Some(b) if t.duration_since(*b.last().unwrap()) < Duration::from_secs(1) => b.push(t),
            _ => out.push(vec![t]),
        }
    }
    out
}

/// Hostile XML from a camera (billion laughs, external entity, 10,000-deep nesting, 50 MB
/// bodies with and without a length): refused, the daemon stays up with bounded memory.
#[test]
fn hostile_xml_from_a_camera_leaves_the_daemon_up() {
    // The identity request is answered with garbage from the start, so every poll asks again.
    let peer = QuirkPeer::start(Quirks {
        password: PASSWORD.into(),
        hostile: Some(Hostile::BillionLaughs),
        ..Quirks::default()
    });
    let broker = Mosquitto::start();
    let secrets = tempfile::tempdir().unwrap();
    let pw = password_file(secrets.path(), PASSWORD);
    let mut daemon = Daemon::start_logged(
        broker.port,
        &camera_toml(
            "cam-1",
            &peer.url(),
            "operator",
            &pw,
            "poll = \"100ms\"\nevents = false",
        ),
        &[],
    );
    wait_until("cam-1 up", Duration::from_secs(20), || {
        (device(&daemon.status(), "cam-1")["up"] == true).then_some(())
    });
    let pid = daemon.proc.pid();
    let rss0 = proc_kib(pid, "VmRSS:");
    for h in [
        Hostile::BillionLaughs,
        Hostile::ExternalEntity,
        Hostile::DeepNesting,
        Hostile::HugeLength,
        Hostile::HugeChunked,
    ] {
        peer.cam.set(|q| q.hostile = Some(h));
        peer.cam.clear_log();
        wait_until(
            &format!("3 answers of {h:?} read"),
            Duration::from_secs(60),
            || {
                let n = peer
                    .cam
                    .actions()
                    .iter()
                    .filter(|a| *a == "GetDeviceInformation")
                    .count();
                (n >= 3).then_some(())
            },
        );
        let dev = device(&daemon.status(), "cam-1");
        assert_eq!(dev["up"], true, "{h:?}: {dev}");
        assert!(
            dev["identity"].is_null(),
            "{h:?}: nothing read from garbage"
        );
        assert!(daemon.proc.is_running());
        assert_eq!(daemon.get("/readyz").0, 200);
    }
    let (rss, hwm) = (proc_kib(pid, "VmRSS:"), proc_kib(pid, "VmHWM:"));
    eprintln!(
        "daemon RSS: {rss0} KiB before, {rss} KiB after the hostile answers (peak {hwm} KiB)"
    );
    // 50 MB bodies were sent: bounded reading keeps the peak far below that.
    assert!(hwm < rss0 + 32 * 1024, "peak {hwm} KiB from {rss0} KiB");
    let last = device(&daemon.status(), "cam-1")["last_error"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(last.contains("GetDeviceInformation"), "{last}");
    assert!(daemon.stop().success());
}
