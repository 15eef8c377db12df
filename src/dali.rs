//! DALI buses in the daemon: one task per `[[dali]]` bus ([`run_bus`]) turning the
//! `cabinetd-dali` supervisor's polls into telemetry and events, applying `light.set` /
//! `light.release`, and the `commission` CLI helper ([`commission_cli`]).
//!
//! # What a bus task does
//! 1. Takes the bus lock `<storage.path>/dali-<bus>.lock` (see [`lock`]) and opens the interface
//!    (`atx-hat` on `port`, or the built-in `sim`). Failures (port missing, lock held by the
//!    commissioning CLI, transport errors later) mark the bus down: one `device_down` event
//!    (major), `cabinetd_device_up{device,protocol="dali"} 0`, every known point republished with
//!    quality `bad`; the task retries with a capped exponential backoff and emits `device_up`
//!    (info) when the line answers again. It never panics and stops only on shutdown.
//! 2. Discovers the gear (and watches the configured group members even if absent, so a missing
//!    one is reported `gear_missing`), then **programs each gear found** — at start and after
//!    every later `gear_found`: group membership (exactly the configured groups, verified by
//!    QUERY GROUPS — when the bus configures any group the configuration is authoritative, and a
//!    gear in no configured group is removed from all groups; a bus without groups is left
//!    alone) and the fallback of its group (`power_on_level`, `system_failure_level`,
//!    `min_level`, `max_level`, `fade_time`; field by field from the first configured group of
//!    the gear that sets it). Anything found different is corrected and reported as one
//!    `dali_config_drift` event (minor) per gear, with the raw DALI values in `data.drift`; a
//!    value the gear refuses (e.g. a minimum below its physical minimum) is a
//!    `dali_config_error` event (minor).
//! 3. Polls every `poll` (≤ 2 queries per gear), reads the D4i banks 202/205 every
//!    `energy_poll` (spread over cycles), and rescans the line every `energy_poll` for gear that
//!    appeared. Points `BUS/ADDR/{level,lamp_failure,gear_failure,present}` and, when read,
//!    `power_w`, `energy_wh`, `operating_hours` go through a [`PointReporter`] (first reading
//!    always, then on change or heartbeat [`config::DEFAULT_HEARTBEAT`]). Transitions become
//!    events once each, source `BUS/ADDR`: `lamp_failure` / `gear_failure` / `gear_missing`
//!    (major), `dali_collision` (minor), `gear_found` (info); a cleared fault is the same kind
//!    with `data.active = false`, severity info.
//!
//! # Light commands and "back to the programme"
//! [`LightRequest`]s arrive on a channel. `All` and `Group` requests are sent by the daemon to
//! every bus; a bus that has **no such group configured replies `Ok(())` without touching the
//! line**. `Gear` requests go to the named bus only; an address that is neither found nor
//! configured is rejected naming `args.target`. `Set` sends DAPC (the fade time is programmed
//! first only when `fade_s` maps to a code different from the one the gear holds) and, for a
//! single gear, verifies it with QUERY ACTUAL LEVEL (a running fade or a level clamped to the
//! gear's MIN/MAX also counts as applied). `hold_s` releases automatically after that time.
//!
//! **There is no lighting programme in the daemon yet.** `Release` therefore restores, per
//! gear, the level it had *before the first override* that reached it (read just before that
//! override), and the configured fade time if an override changed it; a gear never overridden
//! is left as it is. See [`overrides`] for the exact rules (which later command cancels which
//! hold). Overrides are kept in memory only: a daemon restart forgets them, and the gear keep
//! the level they were last set to.
//!
//! Invariants: one task owns one line (every transaction on it is serialised through one
//! [`Bus`]); every request gets exactly one reply; records are only produced by this task, so
//! events are never duplicated by a reconnect (the supervisor's state survives it).

mod cli;
pub mod lock;
pub mod overrides;
pub mod points;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cabinetd_dali::atx::AtxHat;
use cabinetd_dali::command::{fade_code_for_seconds, Command, Query};
use cabinetd_dali::sim::SimBus;
use cabinetd_dali::{
    percent_to_arc, Address, Bus, ErrorClass, Event as DaliEvent, Fallback, GearSample, Interface,
    ShortAddress, Status, Supervisor, SupervisorConfig,
};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::command::LightTarget;
use crate::config::{self, DaliBus, DaliInterface, ReportPolicy};
use crate::metrics::Metrics;
use crate::record::{Event, Quality, RecordBody, Severity, Telemetry};
use crate::report::PointReporter;

pub use cli::commission_cli;
pub use lock::{lock_path, try_lock, BusLock, LockError};
use overrides::{Groups, Overrides, Scope};

/// A `light.set` / `light.release` for one bus, answered on `reply`.
#[derive(Debug)]
pub struct LightRequest {
    /// What to act on.
    pub target: LightTarget,
    /// What to do.
    pub action: LightAction,
    /// Exactly one reply per request.
    pub reply: oneshot::Sender<Result<(), LightError>>,
}

/// The lighting action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LightAction {
    /// Override the level.
    Set {
        /// 0..=100 % of full output (standard DALI curve).
        level_percent: f64,
        /// Fade duration; `None` keeps the gear's fade time.
        fade_s: Option<f64>,
        /// Release automatically after this many seconds.
        hold_s: Option<f64>,
    },
    /// Back to the programme's level (or, where the programme has not spoken yet, to the level
    /// before the first override).
    Release,
    /// The lighting programme's level for the target. Gear under a central override keep the
    /// override; the programme level becomes what a release returns them to.
    Programme {
        /// 0..=100 % of full output.
        level_percent: f64,
    },
}

/// Why a light request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    /// The request is wrong for this bus (result `rejected`); the text names the field.
    #[error("{0}")]
    Rejected(String),
    /// The bus could not carry it out (result `failed`).
    #[error("{0}")]
    Failed(String),
}

impl LightError {
    /// True for [`LightError::Rejected`].
    pub fn is_rejection(&self) -> bool {
        matches!(self, LightError::Rejected(_))
    }
}

/// What `/status` shows of a bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BusStatus {
    /// `None` until the first open attempt settled.
    pub up: Option<bool>,
    /// Gear answering at the last poll.
    pub gear: usize,
    /// Gear reporting a lamp failure at the last poll.
    pub lamp_failures: usize,
    /// End of the last successful poll cycle (RFC 3339 in JSON).
    #[serde(serialize_with = "opt_ts")]
    pub last_poll: Option<SystemTime>,
    /// Last error seen (transport, refused configuration…); cleared when the bus comes back up.
    pub last_error: Option<String>,
}

fn opt_ts<S: serde::Serializer>(ts: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(t) => s.collect_str(&crate::record::format_ts(*t)),
        None => s.serialize_none(),
    }
}

/// Runtime knobs of a bus task that are not in the configuration.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Directory of the bus lock file (`storage.path`); `None` = no lock (tests).
    pub lock_dir: Option<PathBuf>,
    /// Reply deadline of the ATX HAT.
    pub reply_timeout: Duration,
    /// First reconnect delay; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Use this simulated line for `interface = "sim"` instead of building one (tests keep its
    /// `SimHandle` to inject faults).
    pub sim: Option<SimBus>,
}

impl Default for BusOptions {
    fn default() -> Self {
        BusOptions {
            lock_dir: None,
            reply_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            sim: None,
        }
    }
}

impl BusOptions {
    /// Production options: the bus lock lives in `storage.path`.
    pub fn with_storage(storage: &std::path::Path) -> Self {
        BusOptions {
            lock_dir: Some(storage.to_path_buf()),
            ..BusOptions::default()
        }
    }
}

/// Runs one DALI bus until `shutdown` turns true (or its sender is dropped) or `records` closes.
pub async fn run_bus(
    cfg: DaliBus,
    opts: BusOptions,
    records: mpsc::Sender<RecordBody>,
    metrics: Metrics,
    requests: mpsc::Receiver<LightRequest>,
    status: watch::Sender<BusStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut runner = Runner::new(cfg, opts, records, metrics, status);
    let mut requests = Some(requests);
    let mut backoff = runner.opts.backoff_min;
    loop {
        if *shutdown.borrow() || runner.closed {
            return;
        }
        let error = match runner.open_line() {
            Ok(bus) => match runner.session(bus, &mut requests, &mut shutdown).await {
                End::Stop => return,
                End::Lost { error, was_up } => {
                    if was_up {
                        backoff = runner.opts.backoff_min;
                    }
                    error
                }
            },
            Err(e) => e,
        };
        runner.mark_down(&error).await;
        tracing::warn!(bus = %runner.name, error = %error, retry_in = ?backoff, "DALI bus down");
        let until = Instant::now() + backoff;
        if runner.idle_until(until, &mut requests, &mut shutdown).await {
            return;
        }
        backoff = (backoff * 2).min(runner.opts.backoff_max);
    }
}

enum End {
    Stop,
    Lost { error: String, was_up: bool },
}

/// A bus operation's failure: transport (the session is lost) or anything else (the gear
/// refused, a collision…: reported, the session goes on).
enum OpError {
    Transport(String),
    Other(String),
}

impl From<cabinetd_dali::Error> for OpError {
    fn from(e: cabinetd_dali::Error) -> Self {
        match e.class() {
            ErrorClass::Device => OpError::Other(e.to_string()),
            // Permanent errors mid-session (a protocol violation by the HAT) mean the line
            // cannot be trusted either: reopen it.
            ErrorClass::Transient | ErrorClass::Permanent => OpError::Transport(e.to_string()),
        }
    }
}

type Line = Bus<Interface>;

struct Runner {
    name: String,
    cfg: DaliBus,
    opts: BusOptions,
    records: mpsc::Sender<RecordBody>,
    status: watch::Sender<BusStatus>,
    metrics: Metrics,
    closed: bool,
    lock: Option<BusLock>,
    sup: Supervisor,
    groups: Groups,
    bitmaps: BTreeMap<u8, u16>,
    fallbacks: BTreeMap<u8, Fallback>,
    configured: BTreeSet<u8>,
    present: BTreeSet<u8>,
    fade: BTreeMap<u8, u8>,
    energy: BTreeMap<u8, f64>,
    reporters: HashMap<String, PointReporter>,
    last: HashMap<String, Value>,
    overrides: Overrides,
    up: Option<bool>,
    last_error: Option<String>,
    last_poll: Option<SystemTime>,
    lamp_failures: usize,
    poll_soon: bool,
}

/// The configured fallback of each member, field by field from its first group setting it.
fn fallbacks(cfg: &DaliBus) -> BTreeMap<u8, Fallback> {
    let mut out: BTreeMap<u8, Fallback> = BTreeMap::new();
    for g in &cfg.groups {
        for &a in &g.members {
            let f = out.entry(a).or_default();
            let arc = |p: Option<f64>| p.map(percent_to_arc);
            f.power_on_level = f.power_on_level.or(arc(g.power_on_level));
            f.system_failure_level = f.system_failure_level.or(arc(g.system_failure_level));
            // MIN LEVEL 0 does not exist (0 is "off"): the lowest settable minimum is 1.
            f.min_level = f.min_level.or(arc(g.min_level).map(|l| l.max(1)));
            f.max_level = f.max_level.or(arc(g.max_level));
            f.fade_time = f.fade_time.or(g.fade_time);
        }
    }
    out.retain(|_, f| *f != Fallback::default());
    out
}

/// `fade_s` → FADE TIME code: below half the shortest fade (0.7 s) it is 0, "no fade".
pub fn fade_code(fade_s: f64) -> u8 {
    if fade_s < 0.35 {
        0
    } else {
        fade_code_for_seconds(fade_s)
    }
}

/// The fade code to program before a DAPC reaching `reached`: `None` when no fade is asked or
/// every gear reached is known to hold it already (the fade time is stored in the gear, often in
/// non-volatile memory, so it is not rewritten needlessly). A target reaching no known gear
/// (e.g. a broadcast before discovery) programs it.
pub fn fade_to_program(code: Option<u8>, reached: &[u8], known: &BTreeMap<u8, u8>) -> Option<u8> {
    code.filter(|c| reached.is_empty() || reached.iter().any(|a| known.get(a) != Some(c)))
}

/// Resolves a target for bus `bus`: `Ok(None)` = a group this bus does not have (nothing to do).
pub fn resolve_target(
    target: &LightTarget,
    bus: &str,
    known: &BTreeSet<u8>,
    groups: &Groups,
) -> Result<Option<Scope>, LightError> {
    match target {
        LightTarget::All => Ok(Some(Scope::All)),
        LightTarget::Group(g) => Ok(groups.contains_key(g).then_some(Scope::Group(*g))),
        LightTarget::Gear { bus: b, address } if b == bus => {
            if known.contains(address) {
                Ok(Some(Scope::Gear(*address)))
            } else {
                let list: Vec<String> = known.iter().map(u8::to_string).collect();
                Err(LightError::Rejected(format!(
                    "field `args.target`: no luminaire at {bus}/{address} (known short addresses: {})",
                    if list.is_empty() { "none".into() } else { list.join(", ") }
                )))
            }
        }
        LightTarget::Gear { bus: b, address } => Err(LightError::Rejected(format!(
            "field `args.target`: {b}/{address} is not on DALI bus {bus}"
        ))),
    }
}

/// Checks the arguments of a `Set`.
pub fn check_set(
    level_percent: f64,
    fade_s: Option<f64>,
    hold_s: Option<f64>,
) -> Result<(), LightError> {
    let bad = |f: &str, why: String| Err(LightError::Rejected(format!("field `args.{f}`: {why}")));
    if !(0.0..=100.0).contains(&level_percent) {
        return bad(
            "level_percent",
            format!("{level_percent} is outside 0..=100"),
        );
    }
    if let Some(f) = fade_s {
        if !(0.0..=3600.0).contains(&f) {
            return bad("fade_s", format!("{f} is outside 0..=3600 s"));
        }
    }
    if let Some(h) = hold_s {
        if !(h > 0.0 && h <= 7.0 * 86_400.0) {
            return bad(
                "hold_s",
                format!("{h} must be more than 0 and at most a week"),
            );
        }
    }
    Ok(())
}

async fn recv(rx: &mut Option<mpsc::Receiver<LightRequest>>) -> Option<LightRequest> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Runner {
    fn new(
        cfg: DaliBus,
        opts: BusOptions,
        records: mpsc::Sender<RecordBody>,
        metrics: Metrics,
        status: watch::Sender<BusStatus>,
    ) -> Self {
        let mut groups = Groups::new();
        let mut bitmaps: BTreeMap<u8, u16> = BTreeMap::new();
        let mut configured = BTreeSet::new();
        for g in &cfg.groups {
            groups.insert(g.number, g.members.clone());
            for &a in &g.members {
                *bitmaps.entry(a).or_default() |= 1 << g.number;
                configured.insert(a);
            }
        }
        let mut sup = Supervisor::new(SupervisorConfig {
            energy_interval: cfg.energy_poll,
            ..SupervisorConfig::default()
        });
        sup.watch(configured.iter().filter_map(|a| ShortAddress::new(*a).ok()));
        let name = cfg.name.clone();
        metrics.device_up.with_label_values(&[&name, "dali"]).set(0);
        metrics.dali_gear_present.with_label_values(&[&name]).set(0);
        metrics
            .dali_lamp_failures
            .with_label_values(&[&name])
            .set(0);
        metrics.poll_errors_total.with_label_values(&[&name]);
        Runner {
            fallbacks: fallbacks(&cfg),
            name,
            cfg,
            opts,
            records,
            status,
            metrics,
            closed: false,
            lock: None,
            sup,
            groups,
            bitmaps,
            configured,
            present: BTreeSet::new(),
            fade: BTreeMap::new(),
            energy: BTreeMap::new(),
            reporters: HashMap::new(),
            last: HashMap::new(),
            overrides: Overrides::default(),
            up: None,
            last_error: None,
            last_poll: None,
            lamp_failures: 0,
            poll_soon: false,
        }
    }

    fn open_line(&mut self) -> Result<Line, String> {
        if self.lock.is_none() {
            if let Some(dir) = &self.opts.lock_dir {
                self.lock = Some(try_lock(dir, &self.name).map_err(|e| e.to_string())?);
            }
        }
        let iface = match &self.cfg.interface {
            DaliInterface::Sim { luminaires } => {
                // Built once: the simulated line keeps its state across a (theoretical) reopen.
                let sim = self
                    .opts
                    .sim
                    .get_or_insert_with(|| SimBus::with_gear((*luminaires).min(64), 0).0);
                Interface::Sim(sim.clone())
            }
            DaliInterface::AtxHat { port } => {
                let port = port
                    .to_str()
                    .ok_or_else(|| format!("port {} is not UTF-8", port.display()))?;
                Interface::AtxHat(
                    AtxHat::open(port)
                        .map_err(|e| e.to_string())?
                        .with_reply_timeout(self.opts.reply_timeout),
                )
            }
        };
        Ok(Bus::new(iface))
    }

    fn known(&self) -> BTreeSet<u8> {
        let mut k: BTreeSet<u8> = self.sup.watched().iter().map(|a| a.get()).collect();
        k.extend(&self.configured);
        k
    }

    async fn emit(&mut self, r: RecordBody) {
        if self.records.send(r).await.is_err() {
            self.closed = true;
        }
    }

    async fn event(&mut self, kind: &str, severity: Severity, message: String, data: Value) {
        let ev = Event {
            ts: SystemTime::now(),
            kind: kind.into(),
            severity,
            source: self.name.clone(),
            message,
            data,
        };
        self.emit(RecordBody::Event(ev)).await;
    }

    fn publish_status(&self) {
        self.status.send_replace(BusStatus {
            up: self.up,
            gear: self.present.len(),
            lamp_failures: self.lamp_failures,
            last_poll: self.last_poll,
            last_error: self.last_error.clone(),
        });
    }

    /// Offers one reading to its reporter; `None` repeats the last value (quality bad/uncertain).
    async fn offer(&mut self, point: String, value: Option<Value>, quality: Quality) {
        let value = match value {
            Some(v) => {
                self.last.insert(point.clone(), v.clone());
                v
            }
            None => self.last.get(&point).cloned().unwrap_or(Value::Null),
        };
        let reporter = self.reporters.entry(point.clone()).or_insert_with(|| {
            PointReporter::new(ReportPolicy {
                deadband: None,
                heartbeat: config::DEFAULT_HEARTBEAT,
            })
        });
        if reporter.offer(&value, quality, Instant::now().into_std()) {
            let t = Telemetry {
                ts: SystemTime::now(),
                point: point.into(),
                value,
                quality,
            };
            self.emit(RecordBody::Telemetry(t)).await;
        }
    }

    async fn mark_down(&mut self, error: &str) {
        self.metrics
            .device_up
            .with_label_values(&[&self.name, "dali"])
            .set(0);
        self.metrics
            .poll_errors_total
            .with_label_values(&[&self.name])
            .inc();
        self.last_error = Some(error.to_owned());
        let was = self.up.replace(false);
        // Status first: whoever sees the records finds the status already consistent.
        self.publish_status();
        if was != Some(false) {
            let msg = format!("DALI bus {} is down: {error}", self.name);
            self.event(
                "device_down",
                Severity::Major,
                msg,
                json!({"protocol": "dali", "error": error}),
            )
            .await;
            let mut points: Vec<String> = self.last.keys().cloned().collect();
            points.sort();
            for p in points {
                self.offer(p, None, Quality::Bad).await;
            }
        }
    }

    async fn mark_up(&mut self) {
        self.metrics
            .device_up
            .with_label_values(&[&self.name, "dali"])
            .set(1);
        let was_down = self.up.replace(true) == Some(false);
        self.last_error = None;
        self.publish_status();
        if was_down {
            let msg = format!("DALI bus {} answers again", self.name);
            self.event(
                "device_up",
                Severity::Info,
                msg,
                json!({"protocol": "dali"}),
            )
            .await;
        }
        tracing::info!(bus = %self.name, "DALI bus up");
    }

    /// While the line is down: answer requests (failed) until `until`; true = stop.
    async fn idle_until(
        &mut self,
        until: Instant,
        requests: &mut Option<mpsc::Receiver<LightRequest>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        loop {
            tokio::select! {
                biased;
                _ = crate::stopped(shutdown) => return true,
                req = recv(requests) => match req {
                    Some(req) => {
                        let r = self.check(&req).and_then(|_| {
                            Err(LightError::Failed(format!(
                                "DALI bus {} is down: {}",
                                self.name,
                                self.last_error.as_deref().unwrap_or("not open")
                            )))
                        });
                        let _ = req.reply.send(r.map(|_: Option<Scope>| ()));
                    }
                    None => *requests = None,
                },
                _ = tokio::time::sleep_until(until) => return self.closed,
            }
        }
    }

    /// Validates a request against this bus; `Ok(None)` = nothing to do here.
    fn check(&self, req: &LightRequest) -> Result<Option<Scope>, LightError> {
        if let LightAction::Set {
            level_percent,
            fade_s,
            hold_s,
        } = req.action
        {
            check_set(level_percent, fade_s, hold_s)?;
        }
        resolve_target(&req.target, &self.name, &self.known(), &self.groups)
    }

    async fn session(
        &mut self,
        mut bus: Line,
        requests: &mut Option<mpsc::Receiver<LightRequest>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let lost = |error: String, was_up| End::Lost { error, was_up };
        let found = tokio::select! {
            r = self.sup.discover(&mut bus) => r,
            _ = crate::stopped(shutdown) => return End::Stop,
        };
        let events = match found {
            Ok(ev) => ev,
            Err(e) => return lost(e.to_string(), false),
        };
        self.mark_up().await;
        let done = tokio::select! {
            r = self.transitions(&mut bus, events) => r,
            _ = crate::stopped(shutdown) => return End::Stop,
        };
        if let Err(e) = done {
            return lost(e, true);
        }
        let mut next_poll = Instant::now();
        let mut next_scan = Instant::now() + self.cfg.energy_poll;
        loop {
            if self.closed {
                return End::Stop;
            }
            if self.poll_soon {
                self.poll_soon = false;
                next_poll = Instant::now();
            }
            let hold = self.overrides.next_deadline();
            let step = tokio::select! {
                biased;
                _ = crate::stopped(shutdown) => return End::Stop,
                req = recv(requests) => match req {
                    Some(req) => self.request(&mut bus, req).await,
                    None => {
                        *requests = None;
                        Ok(())
                    }
                },
                _ = sleep_until_opt(hold) => {
                    let mut r = Ok(());
                    for scope in self.overrides.expired(Instant::now()) {
                        tracing::info!(bus = %self.name, ?scope, "light hold expired, releasing");
                        r = self.release(&mut bus, scope).await.map(|_| ());
                        if r.is_err() {
                            break;
                        }
                    }
                    r
                }
                _ = tokio::time::sleep_until(next_poll) => {
                    let started = Instant::now();
                    next_poll = started + self.cfg.poll;
                    let rescan = started >= next_scan;
                    if rescan {
                        next_scan = started + self.cfg.energy_poll;
                    }
                    tokio::select! {
                        r = self.cycle(&mut bus, rescan) => r,
                        _ = crate::stopped(shutdown) => return End::Stop,
                    }
                }
            };
            if let Err(e) = step {
                return lost(e, true);
            }
        }
    }

    /// One poll cycle (with a rescan first when due). `Err` = the line is lost.
    async fn cycle(&mut self, bus: &mut Line, rescan: bool) -> Result<(), String> {
        let started = std::time::Instant::now();
        if rescan {
            let events = self.sup.discover(bus).await.map_err(|e| e.to_string())?;
            self.transitions(bus, events).await?;
        }
        let result = self.sup.poll_cycle(bus, Instant::now()).await;
        self.metrics
            .poll_duration_seconds
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let cycle = match result {
            Ok(c) => c,
            Err(e) => {
                return match OpError::from(e) {
                    OpError::Transport(e) => Err(e),
                    OpError::Other(e) => {
                        self.metrics
                            .poll_errors_total
                            .with_label_values(&[&self.name])
                            .inc();
                        tracing::warn!(bus = %self.name, error = %e, "DALI poll cycle failed");
                        self.last_error = Some(e);
                        self.publish_status();
                        Ok(())
                    }
                };
            }
        };
        for s in &cycle.samples {
            self.sample(s).await;
        }
        self.present = cycle
            .samples
            .iter()
            .filter(|s| s.present)
            .map(|s| s.address.get())
            .collect();
        self.lamp_failures = cycle
            .samples
            .iter()
            .filter(|s| s.lamp_failure == Some(true))
            .count();
        self.last_poll = Some(SystemTime::now());
        let m = &self.metrics;
        m.dali_gear_present
            .with_label_values(&[&self.name])
            .set(self.present.len() as i64);
        m.dali_lamp_failures
            .with_label_values(&[&self.name])
            .set(self.lamp_failures as i64);
        self.transitions(bus, cycle.events).await?;
        self.publish_status();
        Ok(())
    }

    async fn sample(&mut self, s: &GearSample) {
        let a = s.address.get();
        for (point, value, quality) in points::readings(s) {
            self.offer(points::point_name(&self.name, a, point), value, quality)
                .await;
        }
        if let Some(e) = s.energy_wh {
            self.energy.insert(a, e);
            self.metrics
                .energy_wh_total
                .with_label_values(&[&self.name])
                .set(self.energy.values().sum());
        }
    }

    /// Emits transition events and programs every gear found. `Err` = the line is lost.
    async fn transitions(&mut self, bus: &mut Line, events: Vec<DaliEvent>) -> Result<(), String> {
        for ev in events {
            let rec = points::event_record(&self.name, &ev, SystemTime::now());
            tracing::info!(bus = %self.name, kind = %rec.kind, source = %rec.source, "DALI event");
            self.emit(RecordBody::Event(rec)).await;
            match ev {
                DaliEvent::GearFound { address } => {
                    self.present.insert(address.get());
                    if let Err(OpError::Transport(e)) = self.program(bus, address).await {
                        return Err(e);
                    }
                }
                DaliEvent::GearMissing { address } => {
                    self.present.remove(&address.get());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Audits and programs groups and fallback of one gear, reporting drift.
    async fn program(&mut self, bus: &mut Line, address: ShortAddress) -> Result<(), OpError> {
        let a = address.get();
        let mut drift: Vec<points::DriftItem> = Vec::new();
        let result = async {
            if !self.groups.is_empty() {
                let wanted = self.bitmaps.get(&a).copied().unwrap_or(0);
                let found = bus.groups(address).await?;
                if found != Some(wanted) {
                    drift.push(points::DriftItem {
                        parameter: "groups",
                        wanted,
                        found,
                    });
                    bus.program_groups(address, wanted).await?;
                }
            }
            if let Some(fb) = self.fallbacks.get(&a) {
                let d = bus.program_fallback(address, fb).await?;
                drift.extend(d.into_iter().map(points::DriftItem::from));
                if let Some(code) = fb.fade_time {
                    self.fade.insert(a, code);
                }
            }
            Ok::<(), cabinetd_dali::Error>(())
        }
        .await;
        if !drift.is_empty() {
            let rec = points::drift_record(&self.name, address, &drift, SystemTime::now());
            tracing::info!(bus = %self.name, address = a, message = %rec.message, "DALI configuration drift corrected");
            self.emit(RecordBody::Event(rec)).await;
        }
        match result.map_err(OpError::from) {
            Ok(()) => Ok(()),
            Err(OpError::Other(e)) => {
                let source = points::gear_source(&self.name, a);
                tracing::warn!(gear = %source, error = %e, "DALI gear refused its configuration");
                let ev = Event {
                    ts: SystemTime::now(),
                    kind: "dali_config_error".into(),
                    severity: Severity::Minor,
                    message: format!("{source} refused its configuration: {e}"),
                    source,
                    data: json!({"bus": self.name, "address": a, "error": e}),
                };
                self.emit(RecordBody::Event(ev)).await;
                self.last_error = Some(e.clone());
                Err(OpError::Other(e))
            }
            Err(e) => Err(e),
        }
    }

    /// Handles one request on an open line. `Err` = the line is lost.
    async fn request(&mut self, bus: &mut Line, req: LightRequest) -> Result<(), String> {
        let scope = match self.check(&req) {
            Ok(Some(s)) => s,
            Ok(None) => {
                let _ = req.reply.send(Ok(()));
                return Ok(());
            }
            Err(e) => {
                let _ = req.reply.send(Err(e));
                return Ok(());
            }
        };
        let outcome = match req.action {
            LightAction::Set {
                level_percent,
                fade_s,
                hold_s,
            } => self.set(bus, scope, level_percent, fade_s, hold_s).await,
            LightAction::Release => self.release(bus, scope).await,
            LightAction::Programme { level_percent } => {
                self.programme(bus, scope, level_percent).await
            }
        };
        self.poll_soon = true;
        match outcome {
            Ok(r) => {
                let _ = req.reply.send(r);
                Ok(())
            }
            Err(e) => {
                let _ = req.reply.send(Err(LightError::Failed(format!(
                    "DALI bus {} failed: {e}",
                    self.name
                ))));
                Err(e)
            }
        }
    }

    /// `Ok(reply)` keeps the session; `Err` = the line is lost.
    async fn set(
        &mut self,
        bus: &mut Line,
        scope: Scope,
        level_percent: f64,
        fade_s: Option<f64>,
        hold_s: Option<f64>,
    ) -> Result<Result<(), LightError>, String> {
        let present: Vec<u8> = self.present.iter().copied().collect();
        let reached = scope.addresses(&present, &self.groups);
        let transport = |e: cabinetd_dali::Error| match OpError::from(e) {
            OpError::Transport(e) => Err(e),
            OpError::Other(e) => Ok(e),
        };
        // The level before the first override, for release.
        for a in self.overrides.unsaved(&reached) {
            match bus.query_value(short(a), Query::ActualLevel).await {
                Ok(Some(arc)) if arc != 255 => self.overrides.save(a, arc),
                Ok(_) => {}
                Err(e) => {
                    transport(e)?;
                }
            }
        }
        let code = fade_s.map(fade_code);
        let program_fade = fade_to_program(code, &reached, &self.fade).is_some();
        let target = match scope {
            Scope::All => Address::Broadcast,
            Scope::Group(g) => Address::group(g).map_err(|e| e.to_string())?,
            Scope::Gear(a) => short(a),
        };
        let arc = match bus
            .set_level(target, level_percent, code.filter(|_| program_fade))
            .await
        {
            Ok(arc) => arc,
            Err(e) => {
                let e = transport(e)?;
                return Ok(Err(LightError::Failed(e)));
            }
        };
        if let (true, Some(c)) = (program_fade, code) {
            for a in &reached {
                self.fade.insert(*a, c);
            }
        }
        if let Scope::Gear(a) = scope {
            match self.verify(bus, a, arc).await {
                Ok(Ok(level)) => {
                    let p = points::point_name(&self.name, a, "level");
                    self.offer(p, Some(points::number(level, 2)), Quality::Good)
                        .await;
                }
                Ok(Err(reason)) => return Ok(Err(LightError::Failed(reason))),
                Err(e) => {
                    let e = transport(e)?;
                    return Ok(Err(LightError::Failed(e)));
                }
            }
        }
        let hold_until = hold_s.map(|h| Instant::now() + Duration::from_secs_f64(h));
        self.overrides.set(scope, hold_until, &self.groups);
        tracing::info!(bus = %self.name, ?scope, level_percent, arc, ?fade_s, ?hold_s, "light set");
        Ok(Ok(()))
    }

    /// A programme step: overridden gear only remember the level for their release; the others
    /// get it now, in one frame when none of the scope is overridden.
    async fn programme(
        &mut self,
        bus: &mut Line,
        scope: Scope,
        level_percent: f64,
    ) -> Result<Result<(), LightError>, String> {
        let present: Vec<u8> = self.present.iter().copied().collect();
        let reached = scope.addresses(&present, &self.groups);
        let arc = percent_to_arc(level_percent);
        let (overridden, free): (Vec<u8>, Vec<u8>) = reached
            .iter()
            .partition(|a| self.overrides.saved(**a).is_some());
        for a in &overridden {
            self.overrides.replace_saved(*a, arc);
        }
        let targets: Vec<Address> = if overridden.is_empty() {
            vec![match scope {
                Scope::All => Address::Broadcast,
                Scope::Group(g) => Address::group(g).map_err(|e| e.to_string())?,
                Scope::Gear(a) => short(a),
            }]
        } else {
            free.iter().map(|a| short(*a)).collect()
        };
        for target in targets {
            if let Err(e) = bus.set_level(target, level_percent, None).await {
                return match OpError::from(e) {
                    OpError::Transport(e) => Err(e),
                    OpError::Other(e) => Ok(Err(LightError::Failed(e))),
                };
            }
        }
        tracing::info!(bus = %self.name, ?scope, level_percent, kept_overrides = overridden.len(), "programme step");
        Ok(Ok(()))
    }

    /// QUERY ACTUAL LEVEL after a DAPC to one gear: the level in percent, or why it is not set.
    async fn verify(
        &mut self,
        bus: &mut Line,
        a: u8,
        arc: u8,
    ) -> Result<Result<f64, String>, cabinetd_dali::Error> {
        let source = points::gear_source(&self.name, a);
        let actual = bus.query_value(short(a), Query::ActualLevel).await?;
        let Some(actual) = actual else {
            return Ok(Err(format!("{source} did not answer QUERY ACTUAL LEVEL")));
        };
        if actual == arc {
            return Ok(Ok(cabinetd_dali::arc_to_percent(arc).unwrap_or(0.0)));
        }
        let status = bus
            .query_value(short(a), Query::Status)
            .await?
            .map(Status::from_byte);
        match status {
            Some(s) if s.lamp_failure => Ok(Err(format!(
                "{source} has a lamp failure: level not reached"
            ))),
            // Still fading towards it, or clamped to the gear's own MIN/MAX: applied.
            Some(s) if s.fade_running || s.limit_error => {
                Ok(Ok(cabinetd_dali::arc_to_percent(actual).unwrap_or(0.0)))
            }
            Some(_) => {
                // Not every gear flags a clamped level (LIMIT ERROR is optional in practice):
                // compare with its limits directly.
                let min = bus.query_value(short(a), Query::MinLevel).await?;
                let max = bus.query_value(short(a), Query::MaxLevel).await?;
                match (min, max) {
                    (Some(lo), Some(hi)) if arc > 0 && lo <= hi && actual == arc.clamp(lo, hi) => {
                        Ok(Ok(cabinetd_dali::arc_to_percent(actual).unwrap_or(0.0)))
                    }
                    _ => Ok(Err(format!(
                        "{source} reads back arc level {actual} after DAPC {arc}"
                    ))),
                }
            }
            None => Ok(Err(format!(
                "{source} did not answer QUERY STATUS after DAPC {arc}"
            ))),
        }
    }

    /// Restores the saved levels `scope` covers. `Err` = the line is lost.
    async fn release(
        &mut self,
        bus: &mut Line,
        scope: Scope,
    ) -> Result<Result<(), LightError>, String> {
        let restore = self.overrides.release(scope, &self.groups);
        let mut failures = Vec::new();
        for (a, arc) in restore {
            let result = async {
                let wanted = self.fallbacks.get(&a).and_then(|f| f.fade_time);
                if let Some(code) = wanted.filter(|c| self.fade.get(&a) != Some(c)) {
                    bus.send(Command::Dtr0(code)).await?;
                    bus.send(Command::SetFadeTime(short(a))).await?;
                    self.fade.insert(a, code);
                }
                bus.send(Command::Dapc(short(a), arc)).await
            }
            .await;
            if let Err(e) = result {
                match OpError::from(e) {
                    OpError::Transport(e) => return Err(e),
                    OpError::Other(e) => failures.push(format!("{a}: {e}")),
                }
            }
        }
        tracing::info!(bus = %self.name, ?scope, "light released");
        if failures.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(LightError::Failed(failures.join("; "))))
        }
    }
}

fn short(a: u8) -> Address {
    // Addresses here come from validated configuration (0..=63) or from the bus itself; the mask
    // makes the conversion total.
    Address::short(a & 0x3F).expect("a 6-bit value is a short address")
}
