//! ONVIF cameras in the daemon: per `[[camera]]`, a health task driving the
//! `cabinetd_onvif::Supervisor` every `poll`, an event task driving its `EventPump`, and a
//! [`CameraHandle`] in [`Controls`](super::Controls) for `camera.*` commands (from the central
//! post, and from rules and scenes); plus WS-Discovery ([`start_discovery`]).
//!
//! # What the health task reports ([`Bridge::on_health`])
//! - points `CAM/online` (bool), `CAM/clock_offset_s` (camera minus cabinet, s, 3 decimals) and
//!   `CAM/response_ms` through report-by-exception (`report::PointReporter`: first reading, a
//!   change beyond [`CLOCK_DEADBAND_S`] / [`RESPONSE_DEADBAND_MS`], or the camera's
//!   `heartbeat`); a value the poll could not measure repeats its last value with quality `bad`;
//! - the status: up while the camera answers HTTP at all (a refusal or a fault is an answer),
//!   its identity (manufacturer, model, firmware, serial: `/status` `devices[].identity`), the
//!   last error; `cabinetd_device_up{device,protocol="onvif"}`, `cabinetd_poll_duration_seconds`
//!   and `cabinetd_poll_errors_total` like the other kinds;
//! - events, each once per transition: `camera_offline` (major) / `camera_online` (info) —
//!   **instead of** the generic `device_down` / `device_up` (which a camera never raises: one
//!   event per fact, under the name SPEC §2 gives cameras; the transition rules are
//!   [`StatusTx`]'s, so no `camera_online` after a start, `camera_offline` when a camera is
//!   never reached); `camera_clock_drift` when |offset| exceeds `clock_drift_threshold` (minor,
//!   `data.active = true`) and again when it is back within half of it (info, `active =
//!   false`); `camera_auth_failed` (major) once per refusal episode — from the first refusal
//!   until credentials are accepted again (the crate's auth gate keeps the retries slow:
//!   `auth_retry`, doubling to an hour; health keeps probing anonymously meanwhile).
//!
//! # Events ([`run_events`])
//! Motion and tamper transitions of the pull point become `motion` (info) and `tamper` (major
//! when active, info when cleared) events with `data {active, topic, source, camera_time}`, one
//! per transition (the crate's `EventMapper` keeps the states). Steps are at least
//! [`MIN_PULL_INTERVAL`] apart, so a camera answering PullMessages at once (or flooding) is not
//! pulled in a loop. The subscription is removed (Unsubscribe, ≤ 1 s) when the task stops.
//!
//! # Commands ([`CameraHandle`])
//! `goto_preset` (token or name), `reboot`, `sync_time` (to the cabinet's clock, only while
//! [`ClockTrust`] says it is trusted). Each waits for a running health poll (one supervisor per
//! camera, behind a mutex), is bounded by [`COMMAND_TIMEOUT`] and fails at once when the camera's
//! entry stops (reload, stop). Errors: a wrong preset, a camera without PTZ or without the
//! operation are [`CameraError::Rejected`] naming the field; anything else (offline, refused
//! credentials, timeouts, device faults) is [`CameraError::Failed`].
//!
//! # Privacy
//! The password is read from `password_file` at start (`config::read_secret`) and handed to the
//! crate; it is never logged (`Credentials`' `Debug` redacts it). No request for video,
//! snapshots or stream URIs exists in the crate; nothing the camera sends beyond identity,
//! clock and event states (topic, source tokens, active) is kept or published.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cabinetd_onvif::{
    discovery, CameraConfig, Credentials, EventKind as CamEventKind, EventPump,
    Health as CamHealth, Supervisor, Transition, UtcDateTime,
};
use prometheus::{Histogram, IntCounter};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Equipment, EquipmentError, Identity, Starter, StatusTx};
use crate::config::{self, Config, Resource};
use crate::event::{EquipmentKind, EventKind};
use crate::metrics::Metrics;
use crate::record::{Event, Quality, RecordBody, Severity, Telemetry, DAEMON_SOURCE};
use crate::report::PointReporter;

/// The points of a camera, in order (SPEC §2).
pub const POINTS: [&str; 3] = ["online", "clock_offset_s", "response_ms"];
/// Cameras give their clock in whole seconds: a smaller change of the offset is noise.
pub const CLOCK_DEADBAND_S: f64 = 1.0;
/// Response times on a LAN wander by milliseconds; 100 ms is a change worth publishing.
pub const RESPONSE_DEADBAND_MS: f64 = 100.0;
/// The longest a camera command may take end to end (it may wait for a health poll, then make
/// a few round trips: services, profiles, presets, the operation).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Least time between two event steps (see the module docs).
pub const MIN_PULL_INTERVAL: Duration = Duration::from_secs(1);
/// How long the stop waits for the Unsubscribe (the camera expires it anyway).
const UNSUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Unknown devices remembered (and so reported once) per run.
pub const MAX_UNKNOWN: usize = 256;
/// Entries of each list (types, scopes, addresses) carried by a `camera_unknown` event.
const UNKNOWN_LIST: usize = 8;
/// Longest camera-given text copied into an event.
const MAX_EVENT_TEXT: usize = 256;

/// Whether the cabinet's wall clock may be pushed to a camera (`camera.sync_time`).
///
/// Until the rules core's clock guard runs in the daemon, the daemon builds it with
/// [`ClockTrust::with_floor`] (the build date: a cabinet whose RTC reset to 1970 never resets
/// its cameras); the core then calls [`ClockTrust::set_trusted`] on every change of its
/// `ClockGuard::trusted()` — the hook — and its verdict wins over the floor.
#[derive(Debug, Clone)]
pub struct ClockTrust {
    floor: SystemTime,
    verdict: Arc<AtomicU8>,
}

const VERDICT_NONE: u8 = 0;
const VERDICT_TRUSTED: u8 = 1;
const VERDICT_UNTRUSTED: u8 = 2;

impl Default for ClockTrust {
    /// No floor (tests); the daemon uses [`ClockTrust::with_floor`].
    fn default() -> Self {
        ClockTrust::with_floor(SystemTime::UNIX_EPOCH)
    }
}

impl ClockTrust {
    /// A clock is plausible from `floor` on.
    pub fn with_floor(floor: SystemTime) -> ClockTrust {
        ClockTrust {
            floor,
            verdict: Arc::new(AtomicU8::new(VERDICT_NONE)),
        }
    }

    /// The clock guard's verdict (shared by every clone).
    pub fn set_trusted(&self, trusted: bool) {
        let v = if trusted {
            VERDICT_TRUSTED
        } else {
            VERDICT_UNTRUSTED
        };
        self.verdict.store(v, Ordering::Relaxed);
    }

    /// `Ok` when `now` may be pushed to a camera; else why not.
    pub fn check(&self, now: SystemTime) -> Result<(), String> {
        match self.verdict.load(Ordering::Relaxed) {
            VERDICT_UNTRUSTED => Err("the cabinet's clock is not trusted (clock_untrusted)".into()),
            VERDICT_TRUSTED => Ok(()),
            _ if now < self.floor => Err(format!(
                "the cabinet's clock ({}) is before this build's date: not plausible",
                crate::record::format_ts(now)
            )),
            _ => Ok(()),
        }
    }
}

/// What cameras share for as long as the daemon runs (part of [`super::Context`]).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    /// See [`ClockTrust`].
    pub clock: ClockTrust,
    /// Endpoints already reported by `camera_unknown` (at most [`MAX_UNKNOWN`]): once per run,
    /// across reloads.
    unknown: Arc<Mutex<BTreeSet<String>>>,
}

impl Shared {
    /// With this clock trust.
    pub fn new(clock: ClockTrust) -> Shared {
        Shared {
            clock,
            unknown: Arc::default(),
        }
    }
}

/// Why a camera command did not succeed (the executor maps it to the result: rejected or
/// failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CameraError {
    /// The command can never succeed as sent; the text names the field (`args.preset`,
    /// `args.camera`).
    #[error("{0}")]
    Rejected(String),
    /// Tried and failed (offline, refused credentials, fault, timeout, stopped).
    #[error("{0}")]
    Failed(String),
}

fn camera_error(camera: &str, e: &cabinetd_onvif::Error) -> CameraError {
    use cabinetd_onvif::Error as E;
    match e {
        E::InvalidArgument {
            field: "preset",
            reason,
        } => CameraError::Rejected(format!("field `args.preset`: {reason}")),
        E::Unsupported { op, reason } => CameraError::Rejected(format!(
            "field `args.camera`: {camera} does not support {op}: {reason}"
        )),
        E::Fault { op, fault } if fault.is_not_supported() => CameraError::Rejected(format!(
            "field `args.camera`: {camera} does not support {op} (camera fault {fault})"
        )),
        e => CameraError::Failed(format!("{camera}: {e}")),
    }
}

/// What commands (and rules, scenes) can do to one camera. Cheap to clone; every method is
/// bounded by [`COMMAND_TIMEOUT`] and fails when the camera's entry stops.
#[derive(Clone)]
pub struct CameraHandle {
    name: String,
    sup: Arc<tokio::sync::Mutex<Supervisor>>,
    stop: CancellationToken,
    clock: ClockTrust,
}

impl std::fmt::Debug for CameraHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CameraHandle {
    /// The camera's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = Result<T, CameraError>>,
    ) -> Result<T, CameraError> {
        // Biased: a handle kept past its generation (a reload, the stop) never touches the
        // camera, even when the operation would be ready at once.
        tokio::select! {
            biased;
            () = self.stop.cancelled() => Err(CameraError::Failed(format!(
                "{}: the camera's supervision stopped (reload or stop) before the command completed",
                self.name
            ))),
            r = tokio::time::timeout(COMMAND_TIMEOUT, op) => r.unwrap_or_else(|_| {
                Err(CameraError::Failed(format!(
                    "{}: not completed within {COMMAND_TIMEOUT:?}",
                    self.name
                )))
            }),
        }
    }

    /// `camera.goto_preset`: moves to the preset with this token, else this unique name.
    /// Returns the token used.
    pub async fn goto_preset(&self, preset: &str) -> Result<String, CameraError> {
        self.bounded(async {
            let r = self.sup.lock().await.goto_preset(preset).await;
            r.map_err(|e| camera_error(&self.name, &e))
        })
        .await
    }

    /// `camera.reboot`: returns the camera's message ("Rebooting in 90 seconds").
    pub async fn reboot(&self) -> Result<String, CameraError> {
        self.bounded(async {
            let r = self.sup.lock().await.reboot().await;
            r.map_err(|e| camera_error(&self.name, &e))
        })
        .await
    }

    /// `camera.sync_time`: sets the camera's clock to the cabinet's (refused while
    /// [`ClockTrust`] says the cabinet's clock is not trusted). Returns the camera's offset
    /// measured afterwards, in seconds.
    pub async fn sync_time(&self) -> Result<f64, CameraError> {
        self.bounded(async {
            let mut sup = self.sup.lock().await;
            // Read the clock once the camera is ours: a health poll may have held it.
            let now = SystemTime::now();
            self.clock.check(now).map_err(|why| {
                CameraError::Failed(format!("{}: not synchronised: {why}", self.name))
            })?;
            let r = sup.sync_time(UtcDateTime::from_system(now)).await;
            r.map_err(|e| camera_error(&self.name, &e))
        })
        .await
    }
}

/// Identity as `/status` shows it.
fn identity(i: &cabinetd_onvif::DeviceInformation) -> Identity {
    Identity {
        manufacturer: i.manufacturer.clone(),
        model: i.model.clone(),
        firmware: i.firmware.clone(),
        serial: i.serial.clone(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_EVENT_TEXT).collect()
}

/// `camera_offline` (major).
pub fn camera_offline(camera: &str, error: &str) -> Event {
    Event::new(
        EventKind::CameraOffline,
        Severity::Major,
        camera,
        format!("{camera} stopped answering: {error}"),
        json!({"protocol": EquipmentKind::Onvif, "error": error}),
    )
}

/// `camera_online` (info).
pub fn camera_online(camera: &str) -> Event {
    Event::new(
        EventKind::CameraOnline,
        Severity::Info,
        camera,
        format!("{camera} answers again"),
        json!({"protocol": EquipmentKind::Onvif}),
    )
}

/// `camera_clock_drift`: minor when it starts, info when it ends.
pub fn camera_clock_drift(camera: &str, offset_s: f64, threshold_s: f64, active: bool) -> Event {
    let (severity, message) = if active {
        let dir = if offset_s > 0.0 { "ahead of" } else { "behind" };
        (
            Severity::Minor,
            format!(
                "{camera}'s clock is {:.1} s {dir} the cabinet's (threshold {threshold_s} s)",
                offset_s.abs()
            ),
        )
    } else {
        (
            Severity::Info,
            format!("{camera}'s clock is within {threshold_s} s of the cabinet's again"),
        )
    };
    Event::new(
        EventKind::CameraClockDrift,
        severity,
        camera,
        message,
        json!({"offset_s": offset_s, "threshold_s": threshold_s, "active": active}),
    )
}

/// `camera_auth_failed` (major).
pub fn camera_auth_failed(camera: &str, username: &str, reason: &str, refusals: u64) -> Event {
    Event::new(
        EventKind::CameraAuthFailed,
        Severity::Major,
        camera,
        format!(
            "{camera} refused the credentials of user {username:?} ({reason}); retrying slowly"
        ),
        json!({"username": username, "reason": reason, "refusals": refusals}),
    )
}

/// `motion` (info) or `tamper` (major when it starts, info when it ends) for one transition.
pub fn camera_transition(camera: &str, t: &Transition) -> Event {
    let (kind, what) = match t.kind {
        CamEventKind::Motion => (EventKind::Motion, "motion"),
        CamEventKind::Tamper => (EventKind::Tamper, "tampering"),
    };
    let severity = match (t.kind, t.active) {
        (CamEventKind::Tamper, true) => Severity::Major,
        _ => Severity::Info,
    };
    let state = if t.active { "detected" } else { "ended" };
    Event::new(
        kind,
        severity,
        camera,
        format!("{what} {state} on {camera} ({})", clip(&t.topic)),
        json!({
            "active": t.active,
            "topic": clip(&t.topic),
            "source": clip(&t.source),
            "camera_time": t.at.map(|a| a.to_xsd()),
        }),
    )
}

/// Turns one camera's health polls into records and keeps its status and metrics (pure but
/// for the metrics and the status channel).
pub struct Bridge {
    cam: config::Camera,
    status: StatusTx,
    reporters: Vec<PointReporter>,
    last: Vec<Value>,
    drifting: bool,
    /// While a refusal episode lasts: the accepted count at the refusal, and its reason.
    auth_episode: Option<(u64, String)>,
    errors: IntCounter,
    durations: Histogram,
}

impl Bridge {
    /// A bridge for `cam`, publishing its status on `status`.
    pub fn new(cam: config::Camera, status: StatusTx, metrics: &Metrics) -> Bridge {
        let policy = |deadband| config::ReportPolicy {
            deadband,
            heartbeat: cam.heartbeat,
        };
        Bridge {
            reporters: vec![
                PointReporter::new(policy(None)),
                PointReporter::new(policy(Some(CLOCK_DEADBAND_S))),
                PointReporter::new(policy(Some(RESPONSE_DEADBAND_MS))),
            ],
            last: vec![Value::Null; POINTS.len()],
            drifting: false,
            auth_episode: None,
            errors: metrics.poll_errors_total.with_label_values(&[&cam.name]),
            durations: metrics
                .poll_duration_seconds
                .with_label_values(&[&cam.name]),
            status,
            cam,
        }
    }

    /// The records one health poll makes, in order; updates the status and metrics. `took` is
    /// the poll's duration, `now` the report-by-exception clock, `ts` the readings' time.
    pub fn on_health(
        &mut self,
        h: &CamHealth,
        took: Duration,
        now: Instant,
        ts: SystemTime,
    ) -> Vec<RecordBody> {
        let name = self.cam.name.clone();
        self.durations.observe(took.as_secs_f64());
        let error = h.error.as_ref().map(ToString::to_string);
        if error.is_some() {
            self.errors.inc();
        }
        let auth_event = self.auth(h);
        // While the camera refuses the credentials, the status keeps saying so (the polls in
        // between are anonymous and succeed).
        let error = error.or_else(|| {
            let (_, reason) = self.auth_episode.as_ref().filter(|_| h.auth_failed)?;
            Some(format!("{reason} (credentialed requests paused)"))
        });
        let mut out = Vec::new();
        if h.online {
            if self.status.up().is_some() {
                tracing::info!(camera = %name, "camera answers again");
                out.push(RecordBody::Event(camera_online(&name)));
            }
            let id = h.identity.as_ref().map(identity);
            self.status.update(|s| {
                s.last_poll = Some(ts);
                s.last_error.clone_from(&error);
                if id.is_some() {
                    s.identity = id;
                }
            });
        } else {
            let why = error.as_deref().unwrap_or("no answer");
            if self.status.down(why).is_some() {
                tracing::warn!(camera = %name, error = %why, "camera offline");
                out.push(RecordBody::Event(camera_offline(&name, why)));
            }
        }

        let readings = [
            (Some(Value::Bool(h.online))),
            h.clock_offset_s
                .and_then(|o| serde_json::Number::from_f64((o * 1000.0).round() / 1000.0))
                .map(Value::Number),
            h.response_ms.map(Value::from),
        ];
        for (idx, reading) in readings.into_iter().enumerate() {
            let (value, quality) = match reading {
                Some(v) => {
                    self.last[idx] = v.clone();
                    (v, Quality::Good)
                }
                None => (self.last[idx].clone(), Quality::Bad),
            };
            if self.reporters[idx].offer(&value, quality, now) {
                out.push(RecordBody::Telemetry(Telemetry {
                    ts,
                    point: format!("{name}/{}", POINTS[idx]).into(),
                    value,
                    quality,
                }));
            }
        }

        if let Some(offset) = h.clock_offset_s {
            let threshold = self.cam.clock_drift_threshold.as_secs_f64();
            let rounded = (offset * 10.0).round() / 10.0;
            if !self.drifting && offset.abs() > threshold {
                self.drifting = true;
                tracing::warn!(camera = %name, offset_s = rounded, "camera clock drift");
                out.push(RecordBody::Event(camera_clock_drift(
                    &name, rounded, threshold, true,
                )));
            } else if self.drifting && offset.abs() <= threshold / 2.0 {
                self.drifting = false;
                out.push(RecordBody::Event(camera_clock_drift(
                    &name, rounded, threshold, false,
                )));
            }
        }

        out.extend(auth_event.map(RecordBody::Event));
        out
    }

    /// Follows the refusal episodes; the `camera_auth_failed` event of a new one.
    fn auth(&mut self, h: &CamHealth) -> Option<Event> {
        let name = &self.cam.name;
        if self
            .auth_episode
            .as_ref()
            .is_some_and(|(at_refusal, _)| h.auth_accepted > *at_refusal)
        {
            tracing::info!(camera = %name, "credentials accepted again");
            self.auth_episode = None;
        }
        if !h.auth_failed || self.auth_episode.is_some() {
            return None;
        }
        let reason = match &h.error {
            Some(e) if e.is_auth() => e.to_string(),
            _ => "credentials refused".to_owned(),
        };
        tracing::warn!(camera = %name, username = %self.cam.username, reason = %reason, "camera refused the credentials");
        let event = camera_auth_failed(name, &self.cam.username, &reason, h.auth_refusals);
        self.auth_episode = Some((h.auth_accepted, reason));
        Some(event)
    }
}

impl Equipment for config::Camera {
    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }

    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError> {
        let password =
            config::read_secret(&self.password_file).map_err(|reason| EquipmentError::Secret {
                entry: format!("camera {}", self.name),
                path: self.password_file.clone(),
                reason,
            })?;
        let mut cc = CameraConfig::new(
            &self.address,
            Some(Credentials::new(&self.username, password)),
        );
        cc.timeout = self.timeout;
        cc.pull.auth_retry_min = self.auth_retry;
        cc.pull.auth_retry_max = self.auth_retry.max(Duration::from_secs(3600));
        let invalid = |e: cabinetd_onvif::Error| EquipmentError::Camera {
            entry: self.name.clone(),
            reason: e.to_string(),
        };
        let sup = Supervisor::new(cc).map_err(invalid)?;
        let pump = if self.events {
            Some(sup.event_pump().map_err(invalid)?)
        } else {
            None
        };
        let name = self.name.clone();
        let status = s.status(&name, EquipmentKind::Onvif, POINTS.len());
        let token = s.entry_token();
        let sup = Arc::new(tokio::sync::Mutex::new(sup));
        let handle = CameraHandle {
            name: name.clone(),
            sup: sup.clone(),
            stop: token.clone(),
            clock: s.context().onvif.clock.clone(),
        };
        s.controls().cameras.insert(name.clone(), handle);
        let records = s.context().records.clone();
        let bridge = Bridge::new(self.clone(), status, &s.context().metrics);
        s.spawn(
            format!("camera {name}"),
            run_health(sup, bridge, self.poll, records.clone(), token.clone()),
        );
        if let Some(pump) = pump {
            s.spawn(
                format!("camera {name} events"),
                run_events(pump, name, records, token),
            );
        }
        Ok(())
    }
}

/// The health task: one poll every `poll` (missed ticks skipped), until `stop`.
pub async fn run_health(
    sup: Arc<tokio::sync::Mutex<Supervisor>>,
    mut bridge: Bridge,
    poll: Duration,
    records: mpsc::Sender<RecordBody>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let health = tokio::select! {
            () = stop.cancelled() => return,
            h = async { sup.lock().await.poll_health().await } => h,
        };
        let out = bridge.on_health(
            &health,
            started.elapsed(),
            Instant::now(),
            SystemTime::now(),
        );
        for r in out {
            if records.send(r).await.is_err() {
                return;
            }
        }
    }
}

/// The event task: pull-point steps (at least [`MIN_PULL_INTERVAL`] apart) until `stop`, then
/// Unsubscribe.
pub async fn run_events(
    mut pump: EventPump,
    camera: String,
    records: mpsc::Sender<RecordBody>,
    stop: CancellationToken,
) {
    let mut last: Option<tokio::time::Instant> = None;
    'steps: loop {
        let mut due = pump.next_at().unwrap_or_else(tokio::time::Instant::now);
        if let Some(l) = last {
            due = due.max(l + MIN_PULL_INTERVAL);
        }
        tokio::select! {
            () = stop.cancelled() => break 'steps,
            () = tokio::time::sleep_until(due) => {}
        }
        last = Some(tokio::time::Instant::now());
        let out = tokio::select! {
            () = stop.cancelled() => break 'steps,
            out = pump.step() => out,
        };
        if out.subscribed {
            tracing::debug!(camera = %camera, "event subscription created");
        }
        if let Some((failure, e)) = &out.failure {
            tracing::debug!(camera = %camera, ?failure, error = %e, "event step failed");
        }
        for t in &out.transitions {
            let r = RecordBody::Event(camera_transition(&camera, t));
            if records.send(r).await.is_err() {
                break 'steps;
            }
        }
    }
    let _ = tokio::time::timeout(UNSUBSCRIBE_TIMEOUT, pump.shutdown()).await;
}

/// `camera_unknown` (minor): a device answered WS-Discovery but is not configured.
pub fn camera_unknown(d: &discovery::Device) -> Event {
    let list =
        |v: &[String]| -> Vec<String> { v.iter().take(UNKNOWN_LIST).map(|s| clip(s)).collect() };
    let at = d.xaddrs.first().map_or(d.endpoint.as_str(), String::as_str);
    Event::new(
        EventKind::CameraUnknown,
        Severity::Minor,
        DAEMON_SOURCE,
        format!(
            "an ONVIF device answers at {} but is not configured as a [[camera]]; it is not polled",
            clip(at)
        ),
        json!({
            "endpoint": clip(&d.endpoint),
            "xaddrs": list(&d.xaddrs),
            "types": list(&d.types),
            "scopes": list(&d.scopes),
        }),
    )
}

/// `host:port` of a device service URL, lower-cased (how discovery answers are matched to
/// configured cameras).
fn authority(url: &str) -> Option<String> {
    cabinetd_onvif::http::Url::parse(url)
        .ok()
        .map(|u| u.authority().to_ascii_lowercase())
}

/// Whether a discovered device is one of the configured cameras (one of its addresses has a
/// configured camera's host and port).
pub fn is_configured(d: &discovery::Device, configured: &BTreeSet<String>) -> bool {
    d.xaddrs
        .iter()
        .filter_map(|x| authority(x))
        .any(|a| configured.contains(&a))
}

/// Starts WS-Discovery when `[onvif] discovery = true`: a Probe every `discovery_interval`;
/// each device that answers, is not configured, and was not reported before in this run
/// raises one `camera_unknown`. Nothing found is ever polled.
pub fn start_discovery(cfg: &Config, s: &mut Starter<'_>) {
    let o = &cfg.onvif;
    if !o.discovery {
        return;
    }
    let configured: BTreeSet<String> = cfg
        .cameras
        .iter()
        .filter_map(|c| authority(&c.address))
        .collect();
    let interface = o.discovery_interface.as_ref().map(|i| match i.parse() {
        Ok(addr) => discovery::Interface::Addr(addr),
        Err(_) => discovery::Interface::Name(i.clone()),
    });
    let opts = discovery::DiscoveryOptions {
        timeout: o.discovery_timeout,
        interface,
        ..discovery::DiscoveryOptions::default()
    };
    let seen = s.context().onvif.unknown.clone();
    let records = s.context().records.clone();
    let stop = s.entry_token();
    let interval = o.discovery_interval;
    s.spawn("onvif discovery", async move {
        let mut failing = false;
        let mut full = false;
        loop {
            let found = tokio::select! {
                () = stop.cancelled() => return,
                r = discovery::discover(&opts) => r,
            };
            match found {
                Ok(devices) => {
                    failing = false;
                    tracing::debug!(devices = devices.len(), "ONVIF discovery round");
                    for d in devices.iter().filter(|d| !is_configured(d, &configured)) {
                        let new = {
                            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                            if seen.contains(&d.endpoint) {
                                false
                            } else if seen.len() >= MAX_UNKNOWN {
                                if !full {
                                    tracing::warn!(limit = MAX_UNKNOWN, "more unknown ONVIF devices than remembered; further ones are not reported in this run");
                                }
                                full = true;
                                false
                            } else {
                                seen.insert(d.endpoint.clone())
                            }
                        };
                        if new {
                            tracing::info!(endpoint = %d.endpoint, "unknown ONVIF device answers discovery");
                            if records.send(RecordBody::Event(camera_unknown(d))).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "ONVIF discovery failed (said once until it works again)");
                }
                Err(e) => tracing::debug!(error = %e, "ONVIF discovery failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests;
