//! cabinetd-onvif against an independent peer: PyPI's `ipycam` virtual camera, WS-Security on.
//!
//! ipycam binds 0.0.0.0 (HTTP 8080, UDP 3702) and multicasts a Hello, so each test starts it in
//! a private network namespace (`unshare -n`, loopback only) and the test thread joins that
//! namespace (`setns`) before opening any socket: nothing leaves the machine, tests do not
//! collide. Python: `$CABINETD_TEST_PYTHON`, else `<root>/tests/.venv/bin/python` (with ipycam
//! from tests/requirements.txt).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cabinetd_onvif::discovery::{discover, DiscoveryOptions, MULTICAST};
use cabinetd_onvif::{CameraConfig, Credentials, ErrorClass, Supervisor, UtcDateTime};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const START_DEADLINE: Duration = Duration::from_secs(60);

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CABINETD_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/.venv/bin/python");
    assert!(
        p.exists(),
        "no Python for the ipycam peer at {}: python3 -m venv tests/.venv && tests/.venv/bin/pip install -r tests/requirements.txt",
        p.display()
    );
    p
}

struct Cam {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Cam {
    /// Starts ipycam in a new network namespace and moves this thread into it.
    async fn start(password: &str) -> Cam {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cam.json"),
            format!(
                r#"{{"name":"cab-test","manufacturer":"IPyCam","model":"Virtual PTZ","username":"operator","password":"{password}","local_ip":"127.0.0.1","onvif_port":8080}}"#
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ptz_presets.json"),
            r#"{"home":{"token":"home","name":"Home","pan":0.0,"tilt":0.0,"zoom":0.0},"gate":{"token":"gate","name":"Gate","pan":0.5,"tilt":-0.25,"zoom":0.1}}"#,
        )
        .unwrap();
        let py = python();
        let script = format!(
            "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec '{}' -m ipycam --source video --config cam.json",
            py.display()
        );
        let child = Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("unshare (util-linux) runs");
        let pid = child.id().unwrap();
        // Join the namespace once unshare has made it (until then the child's link names ours);
        // this (current-thread runtime) thread opens every socket below.
        let deadline = Instant::now() + START_DEADLINE;
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let theirs = format!("/proc/{pid}/ns/net");
        while std::fs::read_link(&theirs).expect("child alive") == ours {
            assert!(Instant::now() < deadline, "unshare made no namespace");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ns = std::fs::File::open(&theirs).expect("child netns");
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("setns (root or CAP_SYS_ADMIN)");
        loop {
            if tokio::net::TcpStream::connect("127.0.0.1:8080")
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ipycam did not listen on 8080 within {START_DEADLINE:?}: {}",
                std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Cam { child, _dir: dir }
    }
}

impl Drop for Cam {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

const URL: &str = "http://127.0.0.1:8080/onvif/device_service";

fn sup(password: &str) -> Supervisor {
    let mut c = CameraConfig::new(URL, Some(Credentials::new("operator", password)));
    c.timeout = Duration::from_secs(10);
    Supervisor::new(c).unwrap()
}

#[tokio::test]
async fn online_identity_clock_presets_goto_and_discovery() {
    let _cam = Cam::start("cam-pw-1").await;
    let mut s = sup("cam-pw-1");
    let h = s.poll_health().await;
    assert!(h.online && h.error.is_none(), "{:?}", h.error);
    assert!(!h.auth_failed);
    let off = h.clock_offset_s.unwrap();
    assert!(off.abs() < 3.0, "same host clock: {off}");
    let id = h.identity.unwrap();
    assert_eq!(
        (id.manufacturer.as_str(), id.model.as_str()),
        ("IPyCam", "Virtual PTZ")
    );

    let profile = s.client().ptz_profile().await.unwrap();
    let presets = s.client().get_presets(&profile).await.unwrap();
    let mut names: Vec<_> = presets
        .iter()
        .map(|p| (p.token.as_str(), p.name.as_str()))
        .collect();
    names.sort();
    assert_eq!(names, [("gate", "Gate"), ("home", "Home")]);

    // camera.goto_preset by name: ipycam's PTZ position changes (its GetStatus).
    let before = s.client().ptz_position(&profile).await.unwrap();
    assert_eq!(s.goto_preset("Gate").await.unwrap(), "gate");
    let after = s.client().ptz_position(&profile).await.unwrap();
    assert_ne!(before, after);
    assert!(
        (after.pan - 0.5).abs() < 1e-6 && (after.tilt + 0.25).abs() < 1e-6,
        "{after:?}"
    );
    // An unknown preset is refused here (ipycam itself would accept any token silently).
    assert!(s.goto_preset("nowhere").await.unwrap_err().class() == ErrorClass::Permanent);

    // ipycam does not implement SetSystemDateAndTime: a device fault, said as "not supported".
    let e = s
        .sync_time(UtcDateTime::from_system(std::time::SystemTime::now()))
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::Device, "{e}");
    assert!(e.fault().is_some_and(|f| f.is_not_supported()), "{e}");

    // WS-Discovery: unicast Probe to the camera, then the multicast group on the namespace's
    // loopback.
    for target in [
        "127.0.0.1:3702".parse().unwrap(),
        std::net::SocketAddr::V4(MULTICAST),
    ] {
        let opts = DiscoveryOptions {
            timeout: Duration::from_secs(2),
            target,
            ..DiscoveryOptions::default()
        };
        let found = discover(&opts).await.unwrap();
        assert_eq!(found.len(), 1, "{target}: {found:?}");
        let d = &found[0];
        assert!(d.endpoint.starts_with("urn:uuid:"), "{d:?}");
        assert!(d
            .types
            .iter()
            .any(|t| t.ends_with("NetworkVideoTransmitter")));
        assert!(
            d.scopes.iter().any(|s| s.contains("name/cab-test")),
            "{d:?}"
        );
        assert_eq!(d.xaddrs, ["http://127.0.0.1:8080/onvif/device_service"]);
    }
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_without_a_storm() {
    let _cam = Cam::start("right-pw").await;
    let mut s = sup("wrong-pw");
    let h = s.poll_health().await;
    assert!(h.online, "a refusing camera is online");
    let e = h.error.unwrap();
    assert!(e.is_auth() && e.class() == ErrorClass::Device, "{e}");
    assert!(h.auth_failed);
    // Further polls only probe anonymously (ipycam answers 401: online, no failed login) and
    // commands are refused without asking the camera.
    for _ in 0..3 {
        let h = s.poll_health().await;
        assert!(h.online && h.auth_failed);
        assert_eq!(h.auth_refusals, 1);
    }
    assert!(s.goto_preset("Gate").await.unwrap_err().is_auth());
}
