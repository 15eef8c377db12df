//! cabinetd-onvif against the quirk camera of `support/` (loopback TCP, or duplex streams
//! under a paused clock): one test per documented quirk.

mod support;

use std::time::Duration;

use cabinetd_onvif::{
    AuthScheme, CameraConfig, Client, Credentials, Error, ErrorClass, EventKind, Failure,
    Supervisor, UtcDateTime,
};
use support::*;

fn creds() -> Option<Credentials> {
    Some(Credentials::new("operator", "s3cret-pw"))
}

fn cfg(url: &str) -> CameraConfig {
    let mut c = CameraConfig::new(url, creds());
    c.timeout = Duration::from_secs(5);
    c
}

async fn cam(q: Quirks) -> QuirkCam {
    QuirkCam::new(q).listen().await
}

#[tokio::test]
async fn prefix_free_namespaces_and_odd_prefixes() {
    for prefix_free in [false, true] {
        let cam = cam(Quirks {
            prefix_free,
            ..Quirks::default()
        })
        .await;
        let mut sup = Supervisor::new(cfg(&cam.url())).unwrap();
        let h = sup.poll_health().await;
        assert!(
            h.online && h.error.is_none(),
            "{prefix_free}: {:?}",
            h.error
        );
        let id = h.identity.unwrap();
        assert_eq!(
            (
                id.manufacturer.as_str(),
                id.model.as_str(),
                id.serial.as_str()
            ),
            ("QuirkCam", "QC-1 PTZ", "QC0001")
        );
        assert!(h.clock_offset_s.unwrap().abs() < 2.0);
        let presets = sup.client().get_presets("main").await.unwrap();
        assert_eq!(presets.len(), 255);
        assert_eq!(sup.goto_preset("Parking").await.unwrap(), "2");
        assert_eq!(cam.preset().as_deref(), Some("2"));
        let mut pump = sup.event_pump().unwrap();
        assert!(pump.step().await.subscribed);
        let out = pump.step().await;
        assert!(out.failure.is_none(), "{:?}", out.failure);
        assert_eq!(out.notifications, 2);
        assert_eq!(out.transitions.len(), 1);
        let t = &out.transitions[0];
        assert_eq!(
            (t.kind, t.active, t.topic.as_str()),
            (
                EventKind::Motion,
                true,
                "RuleEngine/CellMotionDetector/Motion"
            )
        );
        assert_eq!(
            t.source,
            "VideoSourceConfigurationToken=vs,Rule=MyMotionDetectorRule"
        );
        // The reported XAddrs point at 192.0.2.1:8999: every request still went to our camera.
        assert!(cam.log().iter().any(|l| l.path == "/onvif/ptz"));
    }
}

#[tokio::test]
async fn timestamps_without_z() {
    let cam = cam(Quirks {
        no_z: true,
        ..Quirks::default()
    })
    .await;
    let sup = Supervisor::new(cfg(&cam.url())).unwrap();
    let mut pump = sup.event_pump().unwrap();
    assert!(pump.step().await.subscribed);
    let sub = pump.pull_point().subscription().unwrap().clone();
    let (c, t) = (sub.current_time.unwrap(), sub.termination_time.unwrap());
    assert_eq!(t.unix() - c.unix(), 600, "read as UTC");
    let out = pump.step().await;
    assert_eq!(out.transitions.len(), 1);
    assert!(out.transitions[0].at.is_some());
}

#[tokio::test]
async fn subscription_lost_mid_stream_is_recreated() {
    let cam = cam(Quirks {
        forget_on_pull: Some(2),
        ..Quirks::default()
    })
    .await;
    let sup = Supervisor::new(cfg(&cam.url())).unwrap();
    let mut pump = sup.event_pump().unwrap();
    assert!(pump.step().await.subscribed);
    assert_eq!(pump.step().await.transitions.len(), 1, "motion on");
    let lost = pump.step().await;
    let (f, e) = lost.failure.unwrap();
    assert_eq!(f, Failure::Lost);
    assert!(e.is_resource_unknown(), "{e}");
    assert_eq!(
        pump.next_at(),
        None,
        "recreated at once, not after a backoff"
    );
    assert!(pump.step().await.subscribed);
    let out = pump.step().await;
    assert!(out.failure.is_none());
    assert_eq!(
        out.transitions.len(),
        1,
        "motion off arrives on the new subscription"
    );
    assert!(!out.transitions[0].active);
    let creates = cam
        .actions()
        .iter()
        .filter(|a| *a == "CreatePullPointSubscription")
        .count();
    assert_eq!(creates, 2);
    // Reference parameters echoed and the query kept on every subscription call.
    pump.shutdown().await;
    assert_eq!(
        cam.live_subscriptions(),
        0,
        "Unsubscribe reached the camera"
    );
}

#[tokio::test(start_paused = true)]
async fn pull_messages_timeouts_keep_the_subscription() {
    let cam = QuirkCam::new(Quirks {
        hang_on_pull: Some(2),
        ..Quirks::default()
    });
    let mut c = cfg("http://cam.invalid/onvif/device_service");
    c.timeout = Duration::from_secs(2);
    c.pull.pull_wait = Duration::from_secs(3);
    let sup = Supervisor::with_connector(DuplexConnector(cam.clone()), c).unwrap();
    let mut pump = sup.event_pump().unwrap();
    assert!(pump.step().await.subscribed);
    assert!(pump.step().await.failure.is_none());
    let t0 = tokio::time::Instant::now();
    let out = pump.step().await;
    let (f, e) = out.failure.unwrap();
    assert_eq!(f, Failure::Retry);
    assert!(
        matches!(e, Error::Timeout { op: "PullMessages", after } if after == Duration::from_secs(5)),
        "{e}"
    );
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(5),
        "pull wait + call timeout"
    );
    assert!(
        pump.pull_point().subscription().is_some(),
        "a timeout is no reason to resubscribe"
    );
    let at = pump.next_at().unwrap();
    tokio::time::sleep_until(at).await;
    let out = pump.step().await;
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert_eq!(
        cam.actions()
            .iter()
            .filter(|a| *a == "CreatePullPointSubscription")
            .count(),
        1
    );
}

#[tokio::test]
async fn http_digest_after_401_is_remembered() {
    let cam = cam(Quirks {
        digest_only: true,
        ..Quirks::default()
    })
    .await;
    let mut c = Client::new(&cam.url(), creds(), Duration::from_secs(5)).unwrap();
    c.get_system_date_and_time().await.unwrap();
    let id = c.get_device_information().await.unwrap();
    assert_eq!(id.manufacturer, "QuirkCam");
    assert_eq!(c.exchange().scheme(), AuthScheme::HttpDigest);
    cam.clear_log();
    c.get_device_information().await.unwrap();
    let log = cam.log();
    let seen: Vec<_> = log.iter().map(|l| l.auth).collect();
    assert_eq!(
        seen,
        [AuthSeen::None, AuthSeen::DigestOk],
        "no token, no reused nonce"
    );
    assert_eq!(cam.failed_logins(), 0);
}

#[tokio::test]
async fn camera_two_hours_off() {
    let cam = cam(Quirks {
        clock_offset_s: 7200,
        skew_tolerance_s: 5,
        ..Quirks::default()
    })
    .await;
    let mut sup = Supervisor::new(cfg(&cam.url())).unwrap();
    let h = sup.poll_health().await;
    let off = h.clock_offset_s.unwrap();
    assert!((off - 7200.0).abs() < 2.0, "{off}");
    assert!(h.identity.is_some(), "{:?}", h.error);
    assert_eq!(
        cam.failed_logins(),
        0,
        "clock measured before any credentialed request"
    );

    // The camera's clock jumps (reboot to a wrong RTC time) after we measured: the first
    // request is refused, the clock re-measured, the request retried once and accepted.
    let mut c = Client::new(&cam.url(), creds(), Duration::from_secs(5)).unwrap();
    cam.set(|q| q.clock_offset_s = 0);
    c.get_system_date_and_time().await.unwrap();
    cam.set(|q| q.clock_offset_s = -7200);
    cam.clear_log();
    c.get_device_information().await.unwrap();
    let log: Vec<_> = cam.log().into_iter().map(|l| (l.action, l.auth)).collect();
    assert_eq!(
        log,
        [
            ("GetDeviceInformation".to_string(), AuthSeen::TokenBad),
            ("GetSystemDateAndTime".to_string(), AuthSeen::None),
            ("GetDeviceInformation".to_string(), AuthSeen::TokenOk),
        ]
    );
    assert!((c.exchange().clock_offset().unwrap() + 7200.0).abs() < 2.0);
}

#[tokio::test]
async fn html_401_pages() {
    // Hikvision PTZ firmware: an HTML 401 with a Digest challenge → Digest works.
    let cam1 = cam(Quirks {
        html_401: true,
        digest_only: true,
        ..Quirks::default()
    })
    .await;
    let mut c = Client::new(&cam1.url(), creds(), Duration::from_secs(5)).unwrap();
    assert_eq!(c.get_device_information().await.unwrap().model, "QC-1 PTZ");
    // No challenge at all: an authentication error, said as such, no body parsed as SOAP.
    let cam2 = cam(Quirks {
        html_401: true,
        digest_only: true,
        no_challenge: true,
        ..Quirks::default()
    })
    .await;
    let mut c = Client::new(&cam2.url(), creds(), Duration::from_secs(5)).unwrap();
    let e = c.get_device_information().await.unwrap_err();
    assert!(e.is_auth() && e.class() == ErrorClass::Device, "{e}");
    assert!(
        e.to_string().contains("non-SOAP body, no Digest challenge"),
        "{e}"
    );
}

#[tokio::test]
async fn get_services_falls_back_to_get_capabilities() {
    let cam = cam(Quirks {
        no_get_services: true,
        chunked: true,
        ..Quirks::default()
    })
    .await;
    let mut c = Client::new(&cam.url(), creds(), Duration::from_secs(5)).unwrap();
    let s = c.services().await.unwrap();
    assert_eq!(s.events.as_deref(), Some("http://cam/onvif/events"));
    assert_eq!(c.get_presets("main").await.unwrap().len(), 255);
    assert_eq!(
        cam.actions()[..2],
        ["GetServices".to_string(), "GetCapabilities".to_string()]
    );
}

#[tokio::test]
async fn commands_sync_time_and_reboot() {
    let cam = cam(Quirks::default()).await;
    let mut sup = Supervisor::new(cfg(&cam.url())).unwrap();
    let at = UtcDateTime::new(2026, 11, 26, 9, 5, 0).unwrap();
    sup.sync_time(at).await.unwrap();
    assert_eq!(cam.clock_set(), Some(2026 * 10_000 + 9));
    assert_eq!(sup.reboot().await.unwrap(), "Rebooting in 90 seconds");
    let e = sup.goto_preset("Nowhere").await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidArgument {
                field: "preset",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        cam.log().iter().all(|l| l.action != "GotoPreset"),
        "never sent for an unknown preset"
    );
}

/// A wrong password: an authentication error classified as such, then slow retries — never a
/// storm (cameras lock accounts). Two simulated hours under a paused clock.
#[tokio::test(start_paused = true)]
async fn wrong_password_backs_off_slowly() {
    for clock_needs_auth in [false, true] {
        let cam = QuirkCam::new(Quirks {
            clock_needs_auth,
            ..Quirks::default()
        });
        let mut c = cfg("http://cam.invalid/onvif/device_service");
        c.credentials = Some(Credentials::new("operator", "wrong"));
        let mut sup = Supervisor::with_connector(DuplexConnector(cam.clone()), c).unwrap();
        let mut pump = sup.event_pump().unwrap();
        let start = tokio::time::Instant::now();
        let mut next_health = start;
        let mut auth_reports = 0;
        let mut was_failed = false;
        let mut first_error = None;
        while start.elapsed() < Duration::from_secs(7200) {
            let now = tokio::time::Instant::now();
            if now >= next_health {
                let h = sup.poll_health().await;
                assert!(h.online, "a refusing camera is online");
                if h.auth_failed && !was_failed {
                    auth_reports += 1;
                }
                was_failed = h.auth_failed;
                if first_error.is_none() {
                    first_error = h.error.clone();
                }
                next_health = now + Duration::from_secs(30);
            }
            if pump.next_at().is_none_or(|t| t <= now) {
                pump.step().await;
            }
            let wake = pump.next_at().map_or(next_health, |t| t.min(next_health));
            tokio::time::sleep_until(wake.max(now + Duration::from_millis(10))).await;
        }
        let e = first_error.unwrap();
        assert!(e.is_auth() && e.class() == ErrorClass::Device, "{e}");
        // Gate windows ≈ 5, 10, 20, 40, 60 min (±20 %): at most 6 openings in 2 h, each costing
        // one failed login.
        let failed = cam.failed_logins();
        assert!(
            (3..=7).contains(&failed),
            "{clock_needs_auth}: {failed} failed logins in 2 h"
        );
        assert!(auth_reports >= 1);
        // Commands fail at once while the gate is closed, without a request.
        let before = cam.log().len();
        if sup.poll_health().await.auth_failed {
            let e = sup.goto_preset("1").await.unwrap_err();
            assert!(e.is_auth(), "{e}");
            assert!(
                cam.log().len() <= before + 1,
                "only the anonymous health probe was sent"
            );
        }
        assert!(cam
            .log()
            .iter()
            .all(|l| l.action != "CreatePullPointSubscription" || l.auth.failed_login()));
    }
}

#[tokio::test]
async fn hostile_answers_are_refused_and_the_client_recovers() {
    use support::Hostile::*;
    let cam = cam(Quirks::default()).await;
    let mut c = Client::new(&cam.url(), creds(), Duration::from_secs(20)).unwrap();
    c.get_system_date_and_time().await.unwrap();
    for (h, want) in [
        (BillionLaughs, "DOCTYPE"),
        (ExternalEntity, "DOCTYPE"),
        (DeepNesting, "nesting deeper than 64"),
        (HugeLength, "larger than 1048576"),
        (HugeChunked, "larger than 1048576"),
    ] {
        cam.set(|q| q.hostile = Some(h));
        let e = c.get_device_information().await.unwrap_err();
        assert_eq!(e.class(), ErrorClass::Device, "{h:?}: {e}");
        assert!(e.to_string().contains(want), "{h:?}: {e}");
    }
    cam.set(|q| q.hostile = None);
    assert_eq!(c.get_device_information().await.unwrap().serial, "QC0001");
}

#[tokio::test]
async fn privacy_no_video_no_secrets() {
    let cam = cam(Quirks::default()).await;
    let mut sup = Supervisor::new(cfg(&cam.url())).unwrap();
    let mut pump = sup.event_pump().unwrap();
    sup.poll_health().await;
    sup.client().get_profiles().await.unwrap();
    sup.goto_preset("Entrance").await.unwrap();
    for _ in 0..3 {
        pump.step().await;
    }
    sup.sync_time(UtcDateTime::new(2026, 1, 1, 0, 0, 0).unwrap())
        .await
        .unwrap();
    sup.reboot().await.unwrap();
    pump.shutdown().await;
    let actions = cam.actions();
    assert!(actions.len() > 10);
    for a in &actions {
        assert!(
            !a.contains("Stream") && !a.contains("Snapshot") && !a.contains("Uri"),
            "requested {a}"
        );
    }
    // Nothing printable carries the password or the subscription's query token.
    let dump = format!("{sup:?} {pump:?}");
    assert!(!dump.contains("s3cret-pw"), "{dump}");
    assert!(!dump.contains("token=abc"));
    let mut bad = Client::new(
        &format!(
            "http://admin:s3cret-pw@{}/onvif/device_service",
            cam.addr.unwrap()
        ),
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    let e = bad.get_device_information().await.unwrap_err();
    assert!(!format!("{e} {bad:?}").contains("s3cret-pw"));
}
