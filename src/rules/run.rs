//! The rules task: the daemon's one owner of the [`Core`] (programme, usage-adaptive lighting,
//! rules, scenes, the mode, control arbitration, clock safety). Started by the daemon under its
//! root cancellation token, it outlives equipment reloads: a new running configuration is
//! taken over with [`Core::reconfigure`] (mode, outage, clock guard, central overrides, holds,
//! scenes, unchanged rules and who is in charge carried over).
//!
//! Inputs, all handled by this one task (so the core needs no lock):
//! - readings: a [`Subscription`] of the equipment's readings tap (`crate::readings`): every
//!   poll's value and quality *before* report by exception, coalesced per point, never blocking
//!   the equipment or the recorder. The task wants exactly [`Core::wanted_points`];
//! - the uplink's connected state, looked at every [`TICK`];
//! - central commands accepted by `command::exec` ([`Submitted`]): `light.*`, `point.write`,
//!   `scene.*`, `camera.*`, through [`Core::command`];
//! - time: a step at least every [`TICK`] (so a wall-clock step or an uplink change is seen
//!   within a second) and at [`Core::next_wakeup`].
//!
//! Each step ([`Core::step`]): when the core says so, the control state file is written
//! (`state::write`: temp, fsync, rename, fsync dir) *before* anything is acted on; then the
//! outputs in order: events go to the record channel (`rule_fired` `entered` counts in
//! `cabinetd_rule_firings_total{rule}`), actions to their *lane*.
//!
//! Lanes: one per equipment channel — `lights` (the light router: one step's light actions,
//! broadcast then the exceptions it overwrote, stay in order), `modbus:DEVICE`, `camera:NAME`.
//! Each lane is a task carrying out its actions one after the other through the running
//! equipment's `Controls` (`command::exec::execute`), bounded ([`LANE_QUEUE`]; an action that
//! finds its lane full fails at once and is retried like any failure). A failed action is
//! reported to the core ([`Core::failed`]) so the level or value is sent again, first after
//! [`RETRY_MIN`], doubling up to [`RETRY_MAX`] while it keeps failing. When a rule clears, its
//! entry actions still queued or running are cancelled (Home Assistant's "restart" mode) before
//! the clear's own actions are queued.
//!
//! Command results: an action carrying a command's id decides it (all such actions succeeded →
//! `Ok`; else the worst of rejected, failed); a command no action carries succeeded once its
//! step is done; one the core refuses is rejected with the core's reason (naming the field).
//!
//! What others read: a [`View`] (mode, rules, scenes, who is in charge, holds, clock trust),
//! published after every step that produced something and at least every [`TICK`];
//! `cabinetd_mode{mode}` follows the core's mode, and so does the uplink's retained online
//! status (`on_mode`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::clock::build_floor;
use super::control::{Controller, Target};
use super::state;
use super::{ActionOut, Core, Mode, Now, Output};
use crate::command::exec::{execute, CoreSender, Submitted};
use crate::command::{Action, CommandError};
use crate::config::Config;
use crate::equipment::Controls;
use crate::event::EventKind;
use crate::metrics::Metrics;
use crate::readings::Subscription;
use crate::record::{format_ts, RecordBody};
use crate::wall::WallClock;

/// Longest time between two steps.
pub const TICK: Duration = Duration::from_secs(1);
/// How far before the state file's `saved_at` the wall clock may be at start and still be
/// trusted (see `Task::boot`).
pub const SAVED_AT_SLACK_HOURS: i64 = 24;
/// Actions waiting in one lane, at most.
pub const LANE_QUEUE: usize = 256;
/// First retry of a failed action.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between retries of an action that keeps failing.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Central commands waiting for the core, at most (the executor's limit is lower).
pub const COMMAND_QUEUE: usize = 64;

/// What the rules task needs from the daemon.
pub struct Deps {
    /// The running configuration (a change is a reload).
    pub running: watch::Receiver<Arc<Config>>,
    /// The running equipment's controls.
    pub controls: watch::Receiver<Controls>,
    /// The readings tap subscription.
    pub readings: Arc<Subscription>,
    /// Whether the uplink is connected now.
    pub uplink_up: Arc<dyn Fn() -> bool + Send + Sync>,
    /// Called with the mode after each change (the retained online status follows it).
    pub on_mode: Arc<dyn Fn(Mode) + Send + Sync>,
    /// Where events go.
    pub records: mpsc::Sender<RecordBody>,
    /// The daemon's metrics.
    pub metrics: Metrics,
    /// The wall clock.
    pub clock: WallClock,
    /// The cameras' view of the clock guard's verdict (`camera.sync_time` pushes the cabinet's
    /// time to a camera only while the clock is trusted).
    pub camera_clock: crate::equipment::camera::ClockTrust,
}

/// A rule as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleView {
    /// Its name.
    pub name: String,
    /// `cleared`, `pending` or `entered`.
    pub state: &'static str,
}

/// A hold as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldView {
    /// A target, or `scene:NAME`.
    pub what: String,
    /// Who holds it.
    pub by: String,
    /// When it ends (RFC 3339, wall clock).
    pub until: String,
}

/// What the rules task shows of itself (`/status`, `cabinetd status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// `connected` or `autonomous`.
    pub mode: &'static str,
    /// Whether the wall clock is trusted (levels are held while it is not).
    pub clock_trusted: bool,
    /// Each rule and its state, in configuration order.
    pub rules: Vec<RuleView>,
    /// Active scenes and who runs them.
    pub scenes: BTreeMap<String, Vec<String>>,
    /// Who is in charge of each target.
    pub control: BTreeMap<String, String>,
    /// Holds in force.
    pub holds: Vec<HoldView>,
}

impl Default for View {
    fn default() -> Self {
        View {
            mode: Mode::Connected.as_str(),
            clock_trusted: true,
            rules: Vec::new(),
            scenes: BTreeMap::new(),
            control: BTreeMap::new(),
            holds: Vec::new(),
        }
    }
}

/// The running rules task, as the daemon holds it.
pub struct Rules {
    /// Where accepted central commands go.
    pub commands: CoreSender,
    /// Its view, updated after each step.
    pub view: watch::Receiver<Arc<View>>,
}

/// Starts the rules task (see the module docs); it runs until `stop` is cancelled.
pub fn start(deps: Deps, stop: CancellationToken) -> (Rules, impl Future<Output = ()> + Send) {
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let task = Task::new(deps, cmd_rx, view_tx);
    let fut = async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = task.run() => {}
        }
    };
    (
        Rules {
            commands: cmd_tx,
            view: view_rx,
        },
        fut,
    )
}

struct Job {
    action: ActionOut,
    cancel: Option<CancellationToken>,
}

struct Done {
    action: ActionOut,
    result: Result<(), CommandError>,
    cancelled: bool,
}

struct PendingCmd {
    reply: tokio::sync::oneshot::Sender<Result<(), CommandError>>,
    outstanding: usize,
    error: Option<CommandError>,
    stepped: bool,
}

struct Retry {
    due: Instant,
    backoff: Duration,
    /// Waiting to be sent again (false once handed to the core, until it fails again).
    armed: bool,
}

/// The lane an action runs in.
fn lane_of(a: &Action) -> String {
    match a {
        Action::LightSet { .. } | Action::LightRelease { .. } => "lights".into(),
        Action::PointWrite { point, .. } => {
            format!(
                "modbus:{}",
                point.split_once('/').map_or(point.as_str(), |p| p.0)
            )
        }
        Action::CameraGotoPreset { camera, .. }
        | Action::CameraReboot { camera }
        | Action::CameraSyncTime { camera } => format!("camera:{camera}"),
        Action::SceneRun { .. } | Action::SceneRelease { .. } => "core".into(),
    }
}

/// The core's target of an action that is sent again after a failure (lights and points).
fn target_of(a: &Action) -> Option<Target> {
    match a {
        Action::LightSet { target, .. } => Some(Target::light(target)),
        Action::PointWrite { point, .. } => Some(Target::Point(point.clone())),
        _ => None,
    }
}

fn worst(a: Option<CommandError>, b: CommandError) -> CommandError {
    match (a, b) {
        (Some(e @ CommandError::Rejected(_)), _) | (_, e @ CommandError::Rejected(_)) => e,
        (_, e) => e,
    }
}

async fn lane(
    mut jobs: mpsc::Receiver<Job>,
    controls: watch::Receiver<Controls>,
    done: mpsc::Sender<Done>,
) {
    while let Some(job) = jobs.recv().await {
        let cancelled = job.cancel.as_ref().is_some_and(|c| c.is_cancelled());
        let (result, cancelled) = if cancelled {
            (Ok(()), true)
        } else {
            let controls = controls.borrow().clone();
            // A write carries the command's id so an unknown outcome's `write_outcome` names it.
            let (action, command) = (&job.action.action, job.action.command.as_deref());
            match &job.cancel {
                Some(c) => tokio::select! {
                    r = execute(action, command, &controls) => (r, false),
                    () = c.cancelled() => (Ok(()), true),
                },
                None => (execute(action, command, &controls).await, false),
            }
        };
        let d = Done {
            action: job.action,
            result,
            cancelled,
        };
        if done.send(d).await.is_err() {
            return;
        }
    }
}

struct Task {
    deps: Deps,
    commands: mpsc::Receiver<Submitted>,
    view: watch::Sender<Arc<View>>,
    origin: Instant,
    cfg: Arc<Config>,
    storage: PathBuf,
    core: Option<Core>,
    lanes: HashMap<String, mpsc::Sender<Job>>,
    workers: JoinSet<()>,
    done_tx: mpsc::Sender<Done>,
    done_rx: mpsc::Receiver<Done>,
    pending: HashMap<String, PendingCmd>,
    cancels: HashMap<String, CancellationToken>,
    retries: BTreeMap<Target, Retry>,
    uplink_up: bool,
    mode: Option<Mode>,
    published: Instant,
}

impl Task {
    fn new(
        mut deps: Deps,
        commands: mpsc::Receiver<Submitted>,
        view: watch::Sender<Arc<View>>,
    ) -> Task {
        let cfg = deps.running.borrow_and_update().clone();
        let (done_tx, done_rx) = mpsc::channel(1024);
        Task {
            storage: cfg.storage.path.clone(),
            cfg,
            deps,
            commands,
            view,
            origin: Instant::now(),
            core: None,
            lanes: HashMap::new(),
            workers: JoinSet::new(),
            done_tx,
            done_rx,
            pending: HashMap::new(),
            cancels: HashMap::new(),
            retries: BTreeMap::new(),
            uplink_up: false,
            mode: None,
            published: Instant::now(),
        }
    }

    fn now(&self) -> Now {
        Now {
            mono: self.origin.elapsed(),
            wall: self.deps.clock.now(),
        }
    }

    /// Builds the core at start, from the state file.
    fn boot(&mut self) {
        let restored = match state::read(&self.storage) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "control state file not usable: central overrides, holds and scenes of the last run are lost");
                None
            }
        };
        // The floor of a plausible wall clock: the build date, and the last save less a day —
        // so an RTC reset is caught, but a clock that ran ahead when the file was written and
        // was corrected since is not distrusted (levels held) for hours after a restart.
        let floor = restored.as_ref().map_or(build_floor(), |s| {
            let slack = jiff::SignedDuration::from_hours(SAVED_AT_SLACK_HOURS);
            s.saved_at
                .saturating_sub(slack)
                .unwrap_or(s.saved_at)
                .max(build_floor())
        });
        self.uplink_up = (self.deps.uplink_up)();
        let now = self.now();
        match Core::new(&self.cfg, now, self.uplink_up, floor, restored.as_ref()) {
            Ok((core, notes)) => {
                for n in notes {
                    tracing::info!(note = %n, "control state restored");
                }
                if restored.is_some() {
                    tracing::info!(file = %state::path(&self.storage).display(), "control state restored (central overrides, holds, scenes)");
                }
                self.core = Some(core);
            }
            Err(e) => {
                tracing::error!(error = %e, "rules core not started: the cabinet does not act on its own");
            }
        }
        self.adopted();
    }

    /// After a (new) core: metrics series and the readings wanted.
    fn adopted(&mut self) {
        let Some(core) = &self.core else { return };
        for (name, _) in core.rules() {
            self.deps
                .metrics
                .rule_firings_total
                .with_label_values(&[&name]);
        }
        self.deps.readings.want(core.wanted_points());
    }

    fn reconfigure(&mut self) {
        let cfg = self.deps.running.borrow_and_update().clone();
        if Arc::ptr_eq(&cfg, &self.cfg) {
            return;
        }
        self.cfg = cfg;
        let now = self.now();
        let Some(old) = &self.core else {
            return self.boot();
        };
        match old.reconfigure(&self.cfg, now) {
            Ok((core, notes)) => {
                for n in notes {
                    tracing::info!(note = %n, "rules reconfigured");
                }
                tracing::info!("rules core follows the new configuration");
                self.core = Some(core);
                self.retries.clear();
            }
            Err(e) => {
                tracing::error!(error = %e, "new configuration not taken by the rules core; the previous one goes on");
            }
        }
        self.adopted();
    }

    async fn run(mut self) {
        self.boot();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut running_open = true;
        let mut stepped = true;
        loop {
            if stepped {
                self.step().await;
            }
            let wake = match &self.core {
                Some(c) => c.next_wakeup(self.now()).min(TICK),
                None => TICK,
            };
            let deadline = Instant::now() + wake;
            stepped = tokio::select! {
                biased;
                r = self.deps.running.changed(), if running_open => {
                    match r {
                        Ok(()) => self.reconfigure(),
                        Err(_) => running_open = false,
                    }
                    true
                }
                _ = tick.tick() => {
                    self.on_tick();
                    true
                }
                Some(d) = self.done_rx.recv() => {
                    self.on_done(d);
                    while let Ok(d) = self.done_rx.try_recv() {
                        self.on_done(d);
                    }
                    false
                }
                Some(s) = self.commands.recv() => {
                    self.on_command(s);
                    while let Ok(s) = self.commands.try_recv() {
                        self.on_command(s);
                    }
                    true
                }
                () = self.deps.readings.changed() => {
                    self.observe();
                    true
                }
                () = tokio::time::sleep_until(deadline) => true,
            };
        }
    }

    fn observe(&mut self) {
        let readings = self.deps.readings.drain();
        let Some(core) = &mut self.core else { return };
        let mono = self.origin.elapsed();
        for r in readings {
            core.observe(&r.point, &r.value, r.quality, mono);
        }
    }

    fn on_tick(&mut self) {
        let up = (self.deps.uplink_up)();
        if up != self.uplink_up {
            self.uplink_up = up;
            let now = self.now();
            if let Some(core) = &mut self.core {
                core.set_uplink(up, now);
            }
        }
        let now = Instant::now();
        if let Some(core) = &mut self.core {
            for (t, r) in self.retries.iter_mut() {
                if r.armed && r.due <= now {
                    core.failed(t);
                    r.armed = false;
                }
            }
        }
    }

    fn on_command(&mut self, s: Submitted) {
        let now = self.now();
        let Some(core) = &mut self.core else {
            let _ = s.reply.send(Err(CommandError::Failed(
                "the rules core is not running (see the log)".into(),
            )));
            return;
        };
        match core.command(s.action, Some(s.id.clone()), now) {
            Err(reason) => {
                let _ = s.reply.send(Err(CommandError::Rejected(reason)));
            }
            Ok(()) => {
                self.pending.insert(
                    s.id,
                    PendingCmd {
                        reply: s.reply,
                        outstanding: 0,
                        error: None,
                        stepped: false,
                    },
                );
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        let target = target_of(&d.action.action);
        match (&d.result, d.cancelled) {
            (_, true) => {
                tracing::debug!(target = %d.action.target(), by = %d.action.by, "action cancelled: its rule cleared");
            }
            (Ok(()), false) => {
                if let Some(t) = &target {
                    if self.retries.remove(t).is_some() {
                        tracing::info!(target = %t, "action carried out again after failures");
                    }
                }
            }
            (Err(e), false) => {
                let retry = match (&target, e) {
                    // A wrong action does not get better by repeating it.
                    (Some(t), CommandError::Failed(_)) => Some(t.clone()),
                    _ => None,
                };
                match retry {
                    Some(t) => {
                        let backoff = self
                            .retries
                            .get(&t)
                            .map_or(RETRY_MIN, |r| (r.backoff * 2).min(RETRY_MAX));
                        if backoff == RETRY_MIN {
                            tracing::warn!(target = %t, by = %d.action.by, error = %e, "action failed; it will be sent again");
                        } else {
                            tracing::debug!(target = %t, error = %e, retry_in = ?backoff, "action failed again");
                        }
                        self.retries.insert(
                            t,
                            Retry {
                                due: Instant::now() + backoff,
                                backoff,
                                armed: true,
                            },
                        );
                    }
                    None => {
                        tracing::warn!(target = %d.action.target(), by = %d.action.by, error = %e, "action refused")
                    }
                }
            }
        }
        let Some(id) = &d.action.command else { return };
        let Some(p) = self.pending.get_mut(id) else {
            return;
        };
        p.outstanding = p.outstanding.saturating_sub(1);
        if let Err(e) = d.result {
            p.error = Some(worst(p.error.take(), e));
        }
        if p.outstanding == 0 && p.stepped {
            let p = self.pending.remove(id).expect("present");
            let _ = p.reply.send(p.error.map_or(Ok(()), Err));
        }
    }

    fn submit(&mut self, action: ActionOut) {
        let key = lane_of(&action.action);
        let cancel = match &action.by {
            Controller::Rule(n) => Some(self.cancels.entry(n.clone()).or_default().clone()),
            _ => None,
        };
        if !self.lanes.contains_key(&key) {
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            self.workers
                .spawn(lane(rx, self.deps.controls.clone(), self.done_tx.clone()));
            self.lanes.insert(key.clone(), tx);
        }
        if let Some(id) = &action.command {
            if let Some(p) = self.pending.get_mut(id) {
                p.outstanding += 1;
            }
        }
        let job = Job { action, cancel };
        if let Err(e) = self.lanes[&key].try_send(job) {
            let job = match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
            };
            let d = Done {
                result: Err(CommandError::Failed(format!(
                    "{key}: {LANE_QUEUE} actions already waiting"
                ))),
                action: job.action,
                cancelled: false,
            };
            self.on_done(d);
        }
    }

    async fn step(&mut self) {
        let now = self.now();
        let Some(core) = &mut self.core else { return };
        let out = core.step(now);
        if out.persist {
            let snapshot = core.snapshot(now);
            if let Err(e) = state::write(&self.storage, &snapshot) {
                tracing::error!(error = %e, dir = %self.storage.display(), "control state NOT persisted: a restart now would forget central overrides, holds or scenes");
            }
        }
        let mode = core.mode();
        let produced = !out.outputs.is_empty();
        // A rule that clears cancels its entry actions still queued, before anything of this
        // step is queued.
        for o in &out.outputs {
            if let Output::Event(e) = o {
                if e.kind == EventKind::RuleFired && e.data["state"] == "cleared" {
                    if let Some(rule) = e.data["rule"].as_str() {
                        if let Some(t) = self.cancels.remove(rule) {
                            t.cancel();
                        }
                    }
                }
            }
        }
        for o in out.outputs {
            match o {
                Output::Event(e) => {
                    if e.kind == EventKind::RuleFired && e.data["state"] == "entered" {
                        if let Some(rule) = e.data["rule"].as_str() {
                            self.deps
                                .metrics
                                .rule_firings_total
                                .with_label_values(&[rule])
                                .inc();
                        }
                    }
                    tracing::info!(kind = %e.kind, message = %e.message, "rules: event");
                    let rec = RecordBody::Event(e.to_record(SystemTime::now()));
                    if self.deps.records.send(rec).await.is_err() {
                        tracing::warn!("record channel closed: rules event not recorded");
                    }
                }
                Output::Action(a) => {
                    tracing::debug!(target = %a.target(), action = a.action.name(), by = %a.by, reason = %a.reason, "rules: action");
                    self.submit(a);
                }
            }
        }
        // Commands of this step that no action carries succeeded.
        let finished: Vec<String> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| !p.stepped)
            .map(|(id, p)| {
                p.stepped = true;
                (id.clone(), p.outstanding)
            })
            .filter(|(_, n)| *n == 0)
            .map(|(id, _)| id)
            .collect();
        for id in finished {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p.reply.send(p.error.map_or(Ok(()), Err));
            }
        }
        if let Some(core) = &self.core {
            self.deps.camera_clock.set_trusted(core.clock_trusted());
        }
        if self.mode != Some(mode) {
            self.mode = Some(mode);
            self.deps.metrics.set_mode(mode.as_str());
            (self.deps.on_mode)(mode);
        }
        // The view is refreshed after a step that did something, and at least every tick (a
        // rule turning pending shows within a second); not after every reading.
        if produced || self.published.elapsed() >= TICK {
            self.publish(now);
        }
    }

    fn publish(&mut self, now: Now) {
        self.published = Instant::now();
        let Some(core) = &self.core else { return };
        let until = |rem: Duration| {
            let t = now.wall + jiff::SignedDuration::try_from(rem).unwrap_or_default();
            format_ts(SystemTime::try_from(t).unwrap_or(SystemTime::UNIX_EPOCH))
        };
        let view = View {
            mode: core.mode().as_str(),
            clock_trusted: core.clock_trusted(),
            rules: core
                .rules()
                .into_iter()
                .map(|(name, state)| RuleView { name, state })
                .collect(),
            scenes: core.scenes(),
            control: core.controllers(),
            holds: core
                .holds(now)
                .into_iter()
                .map(|(what, by, rem)| HoldView {
                    what,
                    by,
                    until: until(rem),
                })
                .collect(),
        };
        if **self.view.borrow() != view {
            self.view.send_replace(Arc::new(view));
        }
    }
}

#[cfg(test)]
mod tests;
