//! `[[camera]]`s and `[onvif]`.

use super::*;

const CAMERA_KEYS: &[&str] = &[
    "name",
    "address",
    "username",
    "password_file",
    "poll",
    "timeout",
    "events",
    "clock_drift_threshold",
    "auth_retry",
    "heartbeat",
];

const ONVIF_KEYS: &[&str] = &[
    "discovery",
    "discovery_interval",
    "discovery_timeout",
    "discovery_interface",
];

/// The camera health poll: faster than a second is no supervision a person needs (tests use
/// 100 ms); slower than an hour is no supervision at all.
const CAMERA_POLL_MIN: Duration = Duration::from_millis(100);
const CAMERA_POLL_MAX: Duration = Duration::from_secs(3600);
const CAMERA_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const CAMERA_TIMEOUT_MAX: Duration = Duration::from_secs(60);
const AUTH_RETRY_MIN: Duration = Duration::from_secs(1);
const DISCOVERY_INTERVAL_MIN: Duration = Duration::from_secs(1);
const DISCOVERY_TIMEOUT_MIN: Duration = Duration::from_millis(100);
const DISCOVERY_TIMEOUT_MAX: Duration = Duration::from_secs(60);

pub(super) fn camera(cx: &mut Cx, t: &Tbl, i: usize, devices: &mut Unique) -> Option<Camera> {
    let (name, p) = named(cx, t, "camera", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, CAMERA_KEYS);
    let address = cx.req_str(t, p, "address").and_then(|(a, loc)| {
        let has_userinfo = a
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or("").contains('@'))
            .unwrap_or(false);
        if has_userinfo {
            // Secrets live in files: never `http://user:pass@…` in the TOML.
            cx.err(loc, format!("{p}.address must not carry credentials (user:password@): set username and password_file"));
            return None;
        }
        match cabinetd_onvif::http::Url::parse(a) {
            Ok(_) => Some(a.to_string()),
            Err(why) => {
                let hint = if a.to_ascii_lowercase().starts_with("https://") {
                    " (this build reaches cameras over http:// only)"
                } else {
                    ""
                };
                cx.err(loc, format!("{p}.address must be the ONVIF device service URL, like \"http://10.0.0.50/onvif/device_service\", found {a:?}: {why}{hint}"));
                None
            }
        }
    });
    let username = cx.req_str(t, p, "username").map(|(u, _)| u.to_string());
    if t.get("password_file").is_none() {
        cx.err(t.loc, format!("missing required key {p}.password_file (the camera's password, in a file readable only by cabinetd)"));
    }
    let password_file = cx.opt_path(t, p, "password_file");
    let poll = cx
        .opt_dur(t, p, "poll", CAMERA_POLL_MIN, CAMERA_POLL_MAX)
        .unwrap_or(DEFAULT_CAMERA_POLL);
    let timeout = cx
        .opt_dur(t, p, "timeout", CAMERA_TIMEOUT_MIN, CAMERA_TIMEOUT_MAX)
        .unwrap_or(DEFAULT_CAMERA_TIMEOUT);
    let events = cx.opt_bool(t, p, "events").is_none_or(|(b, _)| b);
    let clock_drift_threshold = cx
        .opt_dur(
            t,
            p,
            "clock_drift_threshold",
            Duration::from_millis(100),
            DAY,
        )
        .unwrap_or(DEFAULT_CLOCK_DRIFT_THRESHOLD);
    let auth_retry = cx
        .opt_dur(t, p, "auth_retry", AUTH_RETRY_MIN, DAY)
        .unwrap_or(DEFAULT_CAMERA_AUTH_RETRY);
    let heartbeat = cx
        .opt_dur(t, p, "heartbeat", HEARTBEAT_MIN, DAY)
        .unwrap_or(DEFAULT_HEARTBEAT);
    Some(Camera {
        name: name?,
        address: address?,
        username: username?,
        password_file: password_file?,
        poll,
        timeout,
        events,
        clock_drift_threshold,
        auth_retry,
        heartbeat,
    })
}

pub(super) fn onvif(cx: &mut Cx, root: &Tbl) -> OnvifConfig {
    let mut o = OnvifConfig::default();
    let Some(t) = cx.opt_table(root, "onvif", "onvif") else {
        return o;
    };
    let p = "onvif";
    cx.check_keys(t, p, ONVIF_KEYS);
    if let Some((b, _)) = cx.opt_bool(t, p, "discovery") {
        o.discovery = b;
    }
    if let Some(d) = cx.opt_dur(t, p, "discovery_interval", DISCOVERY_INTERVAL_MIN, WEEK) {
        o.discovery_interval = d;
    }
    if let Some(d) = cx.opt_dur(
        t,
        p,
        "discovery_timeout",
        DISCOVERY_TIMEOUT_MIN,
        DISCOVERY_TIMEOUT_MAX,
    ) {
        o.discovery_timeout = d;
    }
    if o.discovery_timeout >= o.discovery_interval {
        if let Some(e) = t.get("discovery_timeout") {
            cx.err(
                e.node.loc,
                "onvif.discovery_timeout must be shorter than onvif.discovery_interval",
            );
        }
    }
    if let Some((s, loc)) = cx.opt_str(t, p, "discovery_interface") {
        let ok = !s.is_empty() && s.len() <= 15 && !s.contains(['/', ' ', '\0']);
        if ok {
            o.discovery_interface = Some(s.to_string());
        } else {
            cx.err(loc, format!("onvif.discovery_interface must be an interface name (eth1) or its IPv4 address, found {s:?}"));
        }
    }
    o
}
