//! ONVIF cameras through the daemon binary against an independent peer: PyPI's `ipycam` virtual
//! PTZ camera, WS-Security on.
//!
//! ipycam binds 0.0.0.0 (HTTP 8080, UDP 3702) and multicasts, so each test starts it in a
//! private network namespace (`unshare -n`, loopback only, multicast routed to `lo`) and the test
//! thread joins that namespace (`setns`) before starting anything else: Mosquitto, the MQTT
//! probe and the daemon all run in it, nothing leaves the machine, tests do not collide.
//! Needs root (CI runs as root) and ipycam in the test venv (`tests/requirements.txt`).

#[path = "support/cameras.rs"]
mod cameras;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cabinetd_onvif::{Client, Credentials};
use cameras::*;
use serde_json::json;
use support::*;

const URL: &str = "http://127.0.0.1:8080/onvif/device_service";
const PASSWORD: &str = "ipy-S3cret-7";

struct Ipycam {
    _proc: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Starts ipycam in a new network namespace and moves this thread into it.
fn ipycam() -> Ipycam {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cam.json"),
        format!(
            r#"{{"name":"cab-test","manufacturer":"IPyCam","model":"Virtual PTZ","username":"operator","password":"{PASSWORD}","local_ip":"127.0.0.1","onvif_port":8080}}"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ptz_presets.json"),
        r#"{"home":{"token":"home","name":"Home","pan":0.0,"tilt":0.0,"zoom":0.0},"gate":{"token":"gate","name":"Gate","pan":0.5,"tilt":-0.25,"zoom":0.1}}"#,
    )
    .unwrap();
    let script = format!(
        "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec '{}' -m ipycam --source video --config cam.json",
        python().display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-n", "sh", "-c", &script])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap());
    let proc = ChildGuard::spawn("ipycam", &mut cmd);
    let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let theirs = format!("/proc/{}/ns/net", proc.pid());
    wait_until(
        "unshare to make a namespace",
        Duration::from_secs(30),
        || (std::fs::read_link(&theirs).expect("ipycam alive") != ours).then_some(()),
    );
    let ns = std::fs::File::open(&theirs).unwrap();
    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("setns (root or CAP_SYS_ADMIN)");
    wait_until("ipycam to listen on 8080", Duration::from_secs(60), || {
        std::net::TcpStream::connect("127.0.0.1:8080").ok()
    });
    Ipycam {
        _proc: proc,
        _dir: dir,
    }
}

/// Asks ipycam its PTZ position (GetStatus), as an independent check of what the daemon did.
fn ptz_position() -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = Client::new(
            URL,
            Some(Credentials::new("operator", PASSWORD)),
            Duration::from_secs(10),
        )
        .unwrap();
        let profile = c.ptz_profile().await.unwrap();
        let p = c.ptz_position(&profile).await.unwrap();
        (p.pan, p.tilt)
    })
}

/// Waits until the daemon's log shows `n` discovery rounds that found `devices` device(s).
fn discovery_rounds(daemon: &Daemon, n: usize, devices: usize) {
    let needle = format!("ONVIF discovery round devices={devices}");
    wait_until(
        &format!("{n} discovery rounds"),
        Duration::from_secs(60),
        || (daemon.log_text().matches(&needle).count() >= n).then_some(()),
    );
}

#[test]
fn ipycam_online_identity_clock_goto_preset_and_no_unknown_camera() {
    let _cam = ipycam();
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, PASSWORD).unwrap();
    let daemon = Daemon::start_logged(
        broker.port,
        &format!(
            "{}[onvif]\ndiscovery = true\ndiscovery_interval = \"1s\"\ndiscovery_timeout = \"500ms\"\n",
            camera_toml("ipycam", URL, "operator", &pw, "poll = \"500ms\"\ntimeout = \"10s\"")
        ),
        &[],
    );
    let dev = wait_until(
        "ipycam up with its identity",
        Duration::from_secs(30),
        || {
            let d = device(&daemon.status(), "ipycam");
            (d["up"] == true && d["identity"].is_object()).then_some(d)
        },
    );
    assert_eq!(dev["identity"]["manufacturer"], "IPyCam");
    assert_eq!(dev["identity"]["model"], "Virtual PTZ");
    let offset = wait_until("a clock offset", Duration::from_secs(10), || {
        point_records(&probe, "ipycam/clock_offset_s")
            .into_iter()
            .find(|r| r["quality"] == "good")
    });
    assert!(
        offset["value"].as_f64().unwrap().abs() < 3.0,
        "same host clock: {offset}"
    );
    assert_eq!(point_records(&probe, "ipycam/online")[0]["value"], true);

    // camera.goto_preset over MQTT, by name then by token: ipycam's own PTZ status moves.
    let goto = |id: &str, preset: &str, status: &str| {
        let args = json!({"camera": "ipycam", "preset": preset});
        expect_result(&probe, id, "camera.goto_preset", args, status)
    };
    goto("g1", "Gate", "succeeded");
    let (pan, tilt) = ptz_position();
    assert!(
        (pan - 0.5).abs() < 1e-6 && (tilt + 0.25).abs() < 1e-6,
        "{pan} {tilt}"
    );
    goto("g2", "home", "succeeded");
    assert_eq!(ptz_position(), (0.0, 0.0));
    // ipycam accepts any token silently; the daemon checks the camera's list first.
    let why = goto("g3", "nowhere", "rejected");
    assert!(why.starts_with("field `args.preset`"), "{why}");
    // ipycam does not implement SetSystemDateAndTime: rejected, naming the camera.
    let args = json!({"camera": "ipycam"});
    let why = expect_result(&probe, "s1", "camera.sync_time", args, "rejected");
    assert!(
        why.contains("does not support SetSystemDateAndTime"),
        "{why}"
    );

    // Discovery finds ipycam, which is configured: no camera_unknown.
    discovery_rounds(&daemon, 3, 1);
    assert!(events(&probe, "camera_unknown", None).is_empty());
    assert!(daemon
        .get("/metrics")
        .1
        .contains("cabinetd_device_up{device=\"ipycam\",protocol=\"onvif\"} 1"));
    assert!(events(&probe, "camera_auth_failed", None).is_empty());
    assert!(!daemon.log_text().contains(PASSWORD));
}

#[test]
fn an_unconfigured_camera_answering_discovery_is_reported_once_and_never_polled() {
    let _cam = ipycam();
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let started = Instant::now();
    let daemon = Daemon::start_logged(
        broker.port,
        "[onvif]\ndiscovery = true\ndiscovery_interval = \"1s\"\ndiscovery_timeout = \"500ms\"\n",
        &[],
    );
    let ev = wait_events(&probe, "camera_unknown", 1, Duration::from_secs(30));
    assert_eq!(ev[0]["source"], "cabinetd");
    assert_eq!(ev[0]["severity"], "minor");
    assert_eq!(ev[0]["data"]["xaddrs"], json!([URL]));
    assert!(ev[0]["data"]["endpoint"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));
    assert!(ev[0]["message"]
        .as_str()
        .unwrap()
        .contains("not configured"));
    // Found again and again: still one event in this run; nothing is supervised.
    discovery_rounds(&daemon, 4, 1);
    assert_eq!(
        events(&probe, "camera_unknown", None).len(),
        1,
        "after {:?}",
        started.elapsed()
    );
    assert!(daemon.status()["devices"].as_array().unwrap().is_empty());
    assert!(
        probe.records("/telemetry").is_empty(),
        "no camera point without configuration"
    );
}
