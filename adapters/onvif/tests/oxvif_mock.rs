//! cabinetd-onvif against an independent peer: the `oxvif` crate's `MockServer` (real HTTP on
//! 127.0.0.1, port 0, WS-Security enforced; routes on the Content-Type `action=` only).

use std::time::Duration;

use cabinetd_onvif::{CameraConfig, Credentials, ErrorClass, EventKind, Supervisor, UtcDateTime};
use oxvif::mock::{AckOnlyOperation, MockServer};

async fn mock() -> MockServer {
    MockServer::builder()
        .port(0)
        .enforce_auth(true)
        .with_acknowledgment_only(AckOnlyOperation::DeviceReboot)
        .with_acknowledgment_only(AckOnlyOperation::EventsSynchronizationPoint)
        .with_acknowledgment_only(AckOnlyOperation::EventsUnsubscribe)
        .start()
        .await
        .expect("oxvif mock starts")
}

fn sup(m: &MockServer, user: &str, pw: &str) -> Supervisor {
    let mut c = CameraConfig::new(m.device_url(), Some(Credentials::new(user, pw)));
    c.timeout = Duration::from_secs(10);
    Supervisor::new(c).unwrap()
}

fn pan_tilt(m: &MockServer) -> (f64, f64) {
    let s = m.device().read();
    let ch = s.ptz.channel("PTZNode_1").expect("seeded PTZ head");
    (f64::from(ch.pan), f64::from(ch.tilt))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_identity_presets_goto_and_time() {
    let m = mock().await;
    let mut s = sup(&m, "operator", "operator");
    let h = s.poll_health().await;
    assert!(h.online, "{:?}", h.error);
    assert!(h.error.is_none(), "{:?}", h.error);
    assert!(
        h.clock_offset_s.unwrap().abs() < 5.0,
        "{:?}",
        h.clock_offset_s
    );
    assert!(h.response_ms.is_some());
    let id = h.identity.unwrap();
    assert!(
        !id.manufacturer.is_empty() && !id.model.is_empty() && !id.firmware.is_empty(),
        "{id:?}"
    );

    let profile = s.client().ptz_profile().await.unwrap();
    let presets = s.client().get_presets(&profile).await.unwrap();
    let names: Vec<_> = presets.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"Door"), "{names:?}");

    // camera.goto_preset by name: the peer's PTZ head moves to the preset's position.
    let (pan0, tilt0) = pan_tilt(&m);
    assert_eq!(s.goto_preset("Door").await.unwrap(), "Preset_2");
    let (pan1, tilt1) = pan_tilt(&m);
    assert!((pan1, tilt1) != (pan0, tilt0), "the head moved");
    assert!(
        (pan1 - 0.5).abs() < 1e-6 && (tilt1 - 0.2).abs() < 1e-6,
        "{pan1} {tilt1}"
    );
    let pos = s.client().ptz_position(&profile).await.unwrap();
    assert!((pos.pan - 0.5).abs() < 1e-6, "{pos:?}");
    // and by token, back home.
    assert_eq!(s.goto_preset("Preset_1").await.unwrap(), "Preset_1");
    assert_eq!(pan_tilt(&m), (0.0, 0.0));

    // camera.sync_time and camera.reboot need an Administrator account.
    let mut admin = sup(&m, "admin", "admin");
    let offset = admin
        .sync_time(UtcDateTime::from_system(std::time::SystemTime::now()))
        .await
        .unwrap();
    assert!(offset.abs() < 5.0);
    admin.reboot().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_auth_error() {
    let m = mock().await;
    let mut s = sup(&m, "operator", "not-the-password");
    let h = s.poll_health().await;
    assert!(h.online, "GetSystemDateAndTime is PRE_AUTH");
    let e = h.error.expect("identity refused");
    assert!(e.is_auth() && e.class() == ErrorClass::Device, "{e}");
    assert!(h.auth_failed);
    // The gate is closed: commands fail at once, without another failed login.
    let e = s.goto_preset("Door").await.unwrap_err();
    assert!(
        e.is_auth() && e.to_string().contains("next attempt in"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_point_events_become_motion_transitions() {
    let m = mock().await;
    let s = sup(&m, "operator", "operator");
    let mut pump = s.event_pump().unwrap();
    let first = pump.step().await;
    assert!(first.subscribed, "{:?}", first.failure);
    let mut motion = Vec::new();
    let mut notifications = 0;
    for _ in 0..6 {
        let out = pump.step().await;
        assert!(out.failure.is_none(), "{:?}", out.failure);
        notifications += out.notifications;
        motion.extend(
            out.transitions
                .into_iter()
                .filter(|t| t.kind == EventKind::Motion),
        );
    }
    assert!(notifications >= 6, "{notifications}");
    assert!(
        !motion.is_empty(),
        "the mock's VideoSource/MotionAlarm (IsMotion) mapped to motion"
    );
    for w in motion.windows(2) {
        assert_ne!(
            w[0].active, w[1].active,
            "one transition per change: {motion:?}"
        );
    }
    pump.shutdown().await;
}
