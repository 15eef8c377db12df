//! The life of one bus's line: open it (lock, interface), discover and program the gear, poll,
//! report down/up, and idle with backoff while it is down. See the module header of `dali`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::SystemTime;

use cabinetd_backoff::Backoff;
use cabinetd_dali::atx::AtxHat;
use cabinetd_dali::sim::SimBus;
use cabinetd_dali::{
    Bus, Event as DaliEvent, Fallback, GearSample, Interface, ShortAddress, Supervisor,
    SupervisorConfig,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::commanded::{Commanded, Groups, Scope};
use super::{fallbacks, points, resolve_target, try_lock, BusLock, BusOptions, SessionError};
use crate::config::{self, DaliBus, DaliInterface, ReportPolicy};
use crate::light::{check_set, LightAction, LightError, LightRequest};
use crate::metrics::Metrics;
use crate::record::{Event, Quality, RecordBody, Telemetry};
use crate::report::PointReporter;

use super::super::StatusTx;

pub(super) type Line = Bus<Interface>;

/// The state of one bus task, across sessions of its line.
pub(super) struct Runner {
    pub(super) name: String,
    pub(super) cfg: DaliBus,
    pub(super) opts: BusOptions,
    records: mpsc::Sender<RecordBody>,
    status: StatusTx,
    metrics: Metrics,
    closed: bool,
    lock: Option<BusLock>,
    sup: Supervisor,
    pub(super) groups: Groups,
    bitmaps: BTreeMap<u8, u16>,
    pub(super) fallbacks: BTreeMap<u8, Fallback>,
    configured: BTreeSet<u8>,
    pub(super) present: BTreeSet<u8>,
    pub(super) fade: BTreeMap<u8, u8>,
    energy: BTreeMap<u8, f64>,
    reporters: HashMap<String, PointReporter>,
    last: HashMap<String, Value>,
    pub(super) commanded: Commanded,
    last_poll: Option<SystemTime>,
    pub(super) poll_soon: bool,
}

/// The simulated line of bus `name` in storage `dir` (one per process and bus, so it outlives
/// the bus task like a physical line); without a storage directory (unit tests) a new one.
fn sim_line(dir: Option<std::path::PathBuf>, name: &str, luminaires: u8) -> SimBus {
    type Lines = std::sync::Mutex<HashMap<(std::path::PathBuf, String, u8), SimBus>>;
    static LINES: std::sync::OnceLock<Lines> = std::sync::OnceLock::new();
    let fresh = || SimBus::with_gear(luminaires.min(64), 0).0;
    let Some(dir) = dir else {
        return fresh();
    };
    let mut lines = LINES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    lines
        .entry((dir, name.to_owned(), luminaires))
        .or_insert_with(fresh)
        .clone()
}

async fn recv(rx: &mut Option<mpsc::Receiver<LightRequest>>) -> Option<LightRequest> {
    match rx.as_mut() {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Runner {
    pub(super) fn new(
        cfg: DaliBus,
        opts: BusOptions,
        records: mpsc::Sender<RecordBody>,
        metrics: Metrics,
        status: StatusTx,
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
        metrics.init_dali_bus(&name);
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
            commanded: Commanded::default(),
            last_poll: None,
            poll_soon: false,
        }
    }

    /// Sessions of the line until the record channel closes; between sessions the bus is down
    /// and waits a backoff (answering requests with `failed`).
    pub(super) async fn run(mut self, requests: mpsc::Receiver<LightRequest>) {
        let mut requests = Some(requests);
        let mut backoff = Backoff::new(self.opts.backoff_min, self.opts.backoff_max);
        while !self.closed {
            let (error, was_up) = match self.open_line() {
                Ok(bus) => self.session(bus, &mut requests).await,
                Err(e) => (e, false),
            };
            if self.closed {
                return;
            }
            if was_up {
                backoff.reset();
            }
            self.mark_down(&error.to_string()).await;
            let delay = backoff.next_delay(fastrand::f64());
            tracing::warn!(bus = %self.name, error = %error, retry_in = ?delay, "DALI bus down");
            self.idle_until(Instant::now() + delay, &mut requests).await;
        }
    }

    fn open_line(&mut self) -> Result<Line, SessionError> {
        if self.lock.is_none() {
            if let Some(dir) = &self.opts.lock_dir {
                let lock =
                    try_lock(dir, &self.name).map_err(|e| SessionError::LineLost(e.to_string()))?;
                self.lock = Some(lock);
            }
        }
        let iface = match &self.cfg.interface {
            DaliInterface::Sim { luminaires } => {
                // Built once: the simulated line keeps its state across a reopen, and — like a
                // physical line — across reloads and restarts within the process (its gear keep
                // their levels and energy counters).
                let (dir, name, n) = (self.opts.lock_dir.clone(), self.name.clone(), *luminaires);
                let sim = self.opts.sim.get_or_insert_with(|| sim_line(dir, &name, n));
                Interface::Sim(sim.clone())
            }
            DaliInterface::AtxHat { port } => {
                let port = port.to_str().ok_or_else(|| {
                    SessionError::LineLost(format!("port {} is not UTF-8", port.display()))
                })?;
                Interface::AtxHat(
                    AtxHat::open(port)
                        .map_err(SessionError::lost)?
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

    pub(super) async fn emit(&mut self, r: RecordBody) {
        if self.records.send(r).await.is_err() {
            self.closed = true;
        }
    }

    fn last_error(&mut self, error: &str) {
        self.status
            .update(|s| s.last_error = Some(error.to_owned()));
    }

    /// Offers one reading to its reporter; `None` repeats the last value (quality bad/uncertain).
    pub(super) async fn offer(&mut self, point: String, value: Option<Value>, quality: Quality) {
        let value = match value {
            Some(v) => {
                self.last.insert(point.clone(), v.clone());
                v
            }
            None => self.last.get(&point).cloned().unwrap_or(Value::Null),
        };
        self.opts.readings.offer(&point, &value, quality);
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
            .poll_errors_total
            .with_label_values(&[&self.name])
            .inc();
        // Status first: whoever sees the records finds the status already consistent.
        if let Some(ev) = self.status.down(error) {
            self.emit(RecordBody::Event(ev)).await;
            let mut points: Vec<String> = self.last.keys().cloned().collect();
            points.sort();
            for p in points {
                self.offer(p, None, Quality::Bad).await;
            }
        }
    }

    async fn mark_up(&mut self) {
        if let Some(ev) = self.status.up() {
            self.emit(RecordBody::Event(ev)).await;
        }
        tracing::info!(bus = %self.name, "DALI bus up");
    }

    /// While the line is down: answer requests (failed) until `until`.
    async fn idle_until(
        &mut self,
        until: Instant,
        requests: &mut Option<mpsc::Receiver<LightRequest>>,
    ) {
        loop {
            tokio::select! {
                req = recv(requests) => match req {
                    Some(req) => {
                        let down = self.status.get().last_error;
                        let r = self.check(&req).and_then(|_| {
                            Err(LightError::Failed(format!(
                                "DALI bus {} is down: {}",
                                self.name,
                                down.as_deref().unwrap_or("not open")
                            )))
                        });
                        let _ = req.reply.send(r.map(|_: Option<Scope>| ()));
                    }
                    None => *requests = None,
                },
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }

    /// Validates a request against this bus; `Ok(None)` = nothing to do here.
    pub(super) fn check(&self, req: &LightRequest) -> Result<Option<Scope>, LightError> {
        let LightAction::Set {
            level_percent,
            fade_s,
        } = req.action;
        check_set(level_percent, fade_s, None)?;
        resolve_target(&req.target, &self.name, &self.known(), &self.groups)
    }

    /// One session of an open line; returns why it ended and whether the line was up.
    async fn session(
        &mut self,
        mut bus: Line,
        requests: &mut Option<mpsc::Receiver<LightRequest>>,
    ) -> (SessionError, bool) {
        let events = match self.sup.discover(&mut bus).await {
            Ok(ev) => ev,
            Err(e) => return (SessionError::lost(e), false),
        };
        self.mark_up().await;
        if let Err(e) = self.transitions(&mut bus, events).await {
            return (e, true);
        }
        let mut next_poll = Instant::now();
        let mut next_scan = Instant::now() + self.cfg.energy_poll;
        loop {
            if self.closed {
                return (SessionError::LineLost("records closed".into()), true);
            }
            if self.poll_soon {
                self.poll_soon = false;
                next_poll = Instant::now();
            }
            let step = tokio::select! {
                biased;
                req = recv(requests) => match req {
                    Some(req) => self.request(&mut bus, req).await,
                    None => {
                        *requests = None;
                        Ok(())
                    }
                },
                _ = tokio::time::sleep_until(next_poll) => {
                    let started = Instant::now();
                    next_poll = started + self.cfg.poll;
                    let rescan = started >= next_scan;
                    if rescan {
                        next_scan = started + self.cfg.energy_poll;
                    }
                    self.cycle(&mut bus, rescan).await
                }
            };
            if let Err(e) = step {
                return (e, true);
            }
        }
    }

    /// One poll cycle (with a rescan first when due). `Err` = the line is lost.
    async fn cycle(&mut self, bus: &mut Line, rescan: bool) -> Result<(), SessionError> {
        let started = std::time::Instant::now();
        if rescan {
            let events = self.sup.discover(bus).await.map_err(SessionError::lost)?;
            self.transitions(bus, events).await?;
        }
        let result = self.sup.poll_cycle(bus, Instant::now()).await;
        self.metrics
            .poll_duration_seconds
            .with_label_values(&[&self.name])
            .observe(started.elapsed().as_secs_f64());
        let cycle = match result.map_err(SessionError::from) {
            Ok(c) => c,
            Err(e) if e.ends_session() => return Err(e),
            Err(e) => {
                self.metrics
                    .poll_errors_total
                    .with_label_values(&[&self.name])
                    .inc();
                tracing::warn!(bus = %self.name, error = %e, "DALI poll cycle failed");
                self.last_error(&e.to_string());
                return Ok(());
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
        let lamp_failures = cycle
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
            .set(lamp_failures as i64);
        self.transitions(bus, cycle.events).await?;
        let (gear, last_poll) = (self.present.len(), self.last_poll);
        self.status.update(|s| {
            // Each luminaire found carries its points (level, failures, present, …).
            s.points = gear;
            s.last_poll = last_poll;
        });
        Ok(())
    }

    async fn sample(&mut self, s: &GearSample) {
        let a = s.address.get();
        for (point, value, quality) in points::readings(s) {
            self.offer(points::point_name(&self.name, a, point), value, quality)
                .await;
        }
        if let Some(e) = s.energy_wh {
            let increase = points::meter_increase(self.energy.insert(a, e), e);
            if increase > 0.0 {
                self.metrics
                    .energy_wh_total
                    .with_label_values(&[&self.name])
                    .inc_by(increase);
            }
        }
    }

    /// Emits transition events and programs every gear found. `Err` = the line is lost.
    async fn transitions(
        &mut self,
        bus: &mut Line,
        events: Vec<DaliEvent>,
    ) -> Result<(), SessionError> {
        for ev in events {
            let rec = points::event_record(&self.name, &ev, SystemTime::now());
            tracing::info!(bus = %self.name, kind = %rec.kind, source = %rec.source, "DALI event");
            self.emit(RecordBody::Event(rec)).await;
            match ev {
                DaliEvent::GearFound { address } => {
                    self.present.insert(address.get());
                    match self.program(bus, address).await {
                        Err(e) if e.ends_session() => return Err(e),
                        _ => {}
                    }
                    self.resend(bus, address).await?;
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
    async fn program(&mut self, bus: &mut Line, address: ShortAddress) -> Result<(), SessionError> {
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
        match result.map_err(SessionError::from) {
            Ok(()) => Ok(()),
            Err(SessionError::GearRefused(e)) => {
                let source = points::gear_source(&self.name, a);
                tracing::warn!(gear = %source, error = %e, "DALI gear refused its configuration");
                let ev = Event::dali_config_error(&source, &self.name, a, &e);
                self.emit(RecordBody::Event(ev)).await;
                self.last_error(&e);
                Err(SessionError::GearRefused(e))
            }
            Err(e) => Err(e),
        }
    }
}
