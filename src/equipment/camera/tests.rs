//! The camera bridge (health → records, one event per transition), command error mapping,
//! clock trust and discovery matching. The tasks against real peers: `tests/camera_e2e.rs`.

use std::sync::atomic::AtomicU64;

use cabinetd_onvif::{DeviceInformation, Error as CamError};

use super::*;
use crate::equipment::Health;

fn cam() -> config::Camera {
    config::Camera {
        name: "cam-1".into(),
        address: "http://10.0.0.5/onvif/device_service".into(),
        username: "operator".into(),
        password_file: "/p".into(),
        poll: Duration::from_secs(30),
        timeout: Duration::from_secs(5),
        events: true,
        clock_drift_threshold: Duration::from_secs(5),
        auth_retry: Duration::from_secs(300),
        heartbeat: Duration::from_secs(60),
    }
}

struct Harness {
    bridge: Bridge,
    status: tokio::sync::watch::Receiver<super::super::Status>,
    metrics: Metrics,
    t0: Instant,
}

fn harness() -> Harness {
    let metrics = Metrics::new("test");
    let (tx, status) = StatusTx::channel(
        "cam-1",
        EquipmentKind::Onvif,
        3,
        &metrics,
        Arc::new(AtomicU64::new(0)),
    );
    Harness {
        bridge: Bridge::new(cam(), tx, &metrics),
        status,
        metrics,
        t0: Instant::now(),
    }
}

fn health(online: bool, offset: Option<f64>) -> CamHealth {
    CamHealth {
        online,
        clock_offset_s: offset,
        response_ms: online.then_some(12),
        identity: Some(DeviceInformation {
            manufacturer: "Axis".into(),
            model: "Q6045-E".into(),
            firmware: "5.55".into(),
            serial: "ACCC8E".into(),
            hardware_id: "1".into(),
        }),
        auth_failed: false,
        auth_refusals: 0,
        auth_accepted: 0,
        error: (!online).then(|| CamError::Timeout {
            op: "GetSystemDateAndTime",
            after: Duration::from_secs(5),
        }),
    }
}

impl Harness {
    fn poll(&mut self, h: &CamHealth, at_s: u64) -> Vec<RecordBody> {
        self.bridge.on_health(
            h,
            Duration::from_millis(12),
            self.t0 + Duration::from_secs(at_s),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + at_s),
        )
    }
}

fn events(out: &[RecordBody]) -> Vec<&Event> {
    out.iter()
        .filter_map(|r| match r {
            RecordBody::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn points(out: &[RecordBody]) -> Vec<(&str, &Value, Quality)> {
    out.iter()
        .filter_map(|r| match r {
            RecordBody::Telemetry(t) => Some((&*t.point, &t.value, t.quality)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_healthy_camera_reports_its_points_and_identity_without_events() {
    let mut h = harness();
    let out = h.poll(&health(true, Some(0.4567)), 0);
    assert!(events(&out).is_empty(), "no camera_online after a start");
    assert_eq!(
        points(&out),
        [
            ("cam-1/online", &Value::Bool(true), Quality::Good),
            ("cam-1/clock_offset_s", &json!(0.457), Quality::Good),
            ("cam-1/response_ms", &json!(12), Quality::Good),
        ]
    );
    let st = h.status.borrow().clone();
    assert_eq!(st.health, Health::Up);
    assert_eq!(st.identity.unwrap().model, "Q6045-E");
    assert!(st.last_poll.is_some());
    // Unchanged (within the deadbands) before the heartbeat: nothing; a 2 s clock step: the
    // offset only.
    assert!(points(&h.poll(&health(true, Some(0.9)), 1)).is_empty());
    let out = h.poll(&health(true, Some(2.5)), 2);
    assert_eq!(
        points(&out),
        [("cam-1/clock_offset_s", &json!(2.5), Quality::Good)]
    );
    let m = h.metrics.render();
    assert!(
        m.contains("cabinetd_device_up{device=\"cam-1\",protocol=\"onvif\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cabinetd_poll_duration_seconds_count{device=\"cam-1\"} 3"),
        "{m}"
    );
}

#[test]
fn offline_and_online_are_one_event_each_and_the_points_go_bad() {
    let mut h = harness();
    h.poll(&health(true, Some(0.2)), 0);
    let out = h.poll(&health(false, None), 1);
    let ev = events(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (&ev[0].kind, ev[0].severity),
        (&EventKind::CameraOffline, Severity::Major)
    );
    assert!(ev[0]
        .message
        .starts_with("cam-1 stopped answering: GetSystemDateAndTime: no answer"));
    assert_eq!(ev[0].data["protocol"], "onvif");
    assert_eq!(
        points(&out),
        [
            ("cam-1/online", &Value::Bool(false), Quality::Good),
            ("cam-1/clock_offset_s", &json!(0.2), Quality::Bad),
            ("cam-1/response_ms", &json!(12), Quality::Bad),
        ]
    );
    assert!(
        events(&h.poll(&health(false, None), 2)).is_empty(),
        "not twice"
    );
    assert_eq!(h.status.borrow().up(), Some(false));
    assert!(h
        .metrics
        .render()
        .contains("cabinetd_poll_errors_total{device=\"cam-1\"} 2"));
    let out = h.poll(&health(true, Some(0.2)), 3);
    let ev = events(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (&ev[0].kind, ev[0].severity),
        (&EventKind::CameraOnline, Severity::Info)
    );
    assert!(
        !events(&out).iter().any(|e| e.kind == EventKind::DeviceUp),
        "cameras say camera_online, not device_up"
    );
    assert_eq!(h.status.borrow().last_error, None);
}

#[test]
fn a_camera_never_reached_is_offline_with_null_bad_points() {
    let mut h = harness();
    let out = h.poll(&health(false, None), 0);
    assert_eq!(events(&out)[0].kind, EventKind::CameraOffline);
    assert_eq!(
        points(&out)[1..],
        [
            ("cam-1/clock_offset_s", &Value::Null, Quality::Bad),
            ("cam-1/response_ms", &Value::Null, Quality::Bad),
        ]
    );
}

#[test]
fn clock_drift_starts_once_and_ends_within_half_the_threshold() {
    let mut h = harness();
    let out = h.poll(&health(true, Some(7200.46)), 0);
    let ev = events(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (&ev[0].kind, ev[0].severity),
        (&EventKind::CameraClockDrift, Severity::Minor)
    );
    assert_eq!(
        ev[0].data,
        json!({"offset_s": 7200.5, "threshold_s": 5.0, "active": true})
    );
    assert!(
        ev[0].message.contains("7200.5 s ahead of"),
        "{}",
        ev[0].message
    );
    assert!(events(&h.poll(&health(true, Some(7199.0)), 1)).is_empty());
    // Back under the threshold but not under half of it: still drifting (no flapping).
    assert!(events(&h.poll(&health(true, Some(4.0)), 2)).is_empty());
    // A poll without a clock reading changes nothing.
    assert!(events(&h.poll(&health(true, None), 3)).is_empty());
    let ev = h.poll(&health(true, Some(-1.0)), 4);
    let ev = events(&ev);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].data["active"], false);
    assert_eq!(ev[0].severity, Severity::Info);
    let out = h.poll(&health(true, Some(-30.0)), 5);
    assert!(events(&out)[0].message.contains("30.0 s behind"));
}

#[test]
fn one_auth_failed_event_per_refusal_episode() {
    let mut h = harness();
    let refused = |refusals, accepted| CamHealth {
        auth_failed: true,
        auth_refusals: refusals,
        auth_accepted: accepted,
        error: Some(CamError::Auth {
            op: "GetDeviceInformation",
            reason: "fault env:Sender/ter:NotAuthorized".into(),
        }),
        ..health(true, Some(0.0))
    };
    let out = h.poll(&refused(1, 0), 0);
    let ev = events(&out);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (&ev[0].kind, ev[0].severity),
        (&EventKind::CameraAuthFailed, Severity::Major)
    );
    assert_eq!(ev[0].data["username"], "operator");
    assert!(ev[0].data["reason"]
        .as_str()
        .unwrap()
        .contains("authentication refused"));
    // The gate stays closed (anonymous polls succeed, the status still says why), then a slow
    // retry is refused again: the same episode.
    let paused = CamHealth {
        error: None,
        ..refused(1, 0)
    };
    assert!(events(&h.poll(&paused, 1)).is_empty());
    let last = h.status.borrow().last_error.clone().unwrap();
    assert!(
        last.contains("authentication refused") && last.contains("paused"),
        "{last}"
    );
    let gate_open = CamHealth {
        auth_failed: false,
        ..refused(1, 0)
    };
    assert!(events(&h.poll(&gate_open, 2)).is_empty());
    assert!(events(&h.poll(&refused(2, 0), 3)).is_empty());
    // Credentials accepted (the password was fixed), then refused again: a new episode.
    let ok = CamHealth {
        auth_accepted: 5,
        ..health(true, Some(0.0))
    };
    assert!(events(&h.poll(&ok, 4)).is_empty());
    assert_eq!(events(&h.poll(&refused(3, 5), 5)).len(), 1);
    assert_eq!(
        h.status.borrow().up(),
        Some(true),
        "a refusing camera is online"
    );
    assert!(h
        .status
        .borrow()
        .last_error
        .as_deref()
        .unwrap()
        .contains("authentication refused"));
}

#[test]
fn transitions_are_motion_and_tamper_events() {
    let t = |kind, active| Transition {
        kind,
        topic: "RuleEngine/CellMotionDetector/Motion".into(),
        source: "VideoSourceConfigurationToken=vs".into(),
        active,
        at: UtcDateTime::parse_xsd("2026-11-26T09:05:00Z"),
    };
    let e = camera_transition("cam-1", &t(CamEventKind::Motion, true));
    assert_eq!((&e.kind, e.severity), (&EventKind::Motion, Severity::Info));
    assert_eq!(
        e.data,
        json!({"active": true, "topic": "RuleEngine/CellMotionDetector/Motion",
               "source": "VideoSourceConfigurationToken=vs", "camera_time": "2026-11-26T09:05:00Z"})
    );
    assert_eq!(e.source, "cam-1");
    let e = camera_transition("cam-1", &t(CamEventKind::Tamper, true));
    assert_eq!((&e.kind, e.severity), (&EventKind::Tamper, Severity::Major));
    let e = camera_transition("cam-1", &t(CamEventKind::Tamper, false));
    assert_eq!(e.severity, Severity::Info);
    assert!(e.message.contains("ended"));
    // Camera-given text is bounded.
    let mut long = t(CamEventKind::Motion, false);
    long.topic = "x".repeat(10_000);
    let e = camera_transition("cam-1", &long);
    assert_eq!(e.data["topic"].as_str().unwrap().len(), MAX_EVENT_TEXT);
}

#[test]
fn command_errors_name_the_field_when_permanent() {
    let r = camera_error(
        "cam-1",
        &CamError::InvalidArgument {
            field: "preset",
            reason: "no preset with token or name \"x\"".into(),
        },
    );
    assert_eq!(
        r,
        CameraError::Rejected("field `args.preset`: no preset with token or name \"x\"".into())
    );
    let r = camera_error(
        "cam-1",
        &CamError::Unsupported {
            op: "GotoPreset",
            reason: "no PTZ".into(),
        },
    );
    assert!(
        matches!(&r, CameraError::Rejected(m) if m.starts_with("field `args.camera`: cam-1 does not support GotoPreset")),
        "{r:?}"
    );
    for e in [
        CamError::Auth {
            op: "GotoPreset",
            reason: "HTTP 401".into(),
        },
        CamError::Timeout {
            op: "GotoPreset",
            after: Duration::from_secs(5),
        },
    ] {
        assert!(
            matches!(camera_error("cam-1", &e), CameraError::Failed(m) if m.starts_with("cam-1: "))
        );
    }
}

#[test]
fn the_clock_is_pushed_only_when_trusted() {
    let floor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let trust = ClockTrust::with_floor(floor);
    let before = floor - Duration::from_secs(1);
    let e = trust.check(before).unwrap_err();
    assert!(e.contains("before this build's date"), "{e}");
    assert!(trust.check(floor).is_ok());
    // The clock guard's verdict wins over the floor (the hook for the rules core).
    let shared = trust.clone();
    shared.set_trusted(false);
    assert!(trust.check(floor).unwrap_err().contains("not trusted"));
    shared.set_trusted(true);
    assert!(trust.check(before).is_ok());
}

#[test]
fn discovered_devices_match_configured_cameras_by_host_and_port() {
    let configured: BTreeSet<String> = [
        "http://10.0.0.5/onvif/device_service",
        "http://Cam-B:8080/x",
    ]
    .iter()
    .filter_map(|a| authority(a))
    .collect();
    let dev = |xaddrs: &[&str]| discovery::Device {
        endpoint: "urn:uuid:1".into(),
        types: vec!["dn:NetworkVideoTransmitter".into()],
        scopes: (0..40)
            .map(|i| format!("onvif://www.onvif.org/s{i}"))
            .collect(),
        xaddrs: xaddrs.iter().map(|s| s.to_string()).collect(),
    };
    assert!(is_configured(
        &dev(&["http://10.0.0.5:80/onvif/device_service"]),
        &configured
    ));
    assert!(is_configured(
        &dev(&[
            "http://169.254.1.1/x",
            "http://cam-b:8080/onvif/device_service"
        ]),
        &configured
    ));
    assert!(!is_configured(
        &dev(&["http://10.0.0.5:8080/onvif/device_service"]),
        &configured
    ));
    assert!(!is_configured(&dev(&["garbage"]), &configured));
    let e = camera_unknown(&dev(&["http://10.0.0.9/onvif/device_service"]));
    assert_eq!(
        (&e.kind, e.severity),
        (&EventKind::CameraUnknown, Severity::Minor)
    );
    assert_eq!(e.data["scopes"].as_array().unwrap().len(), UNKNOWN_LIST);
    assert!(e.message.contains("http://10.0.0.9/onvif/device_service"));
}
