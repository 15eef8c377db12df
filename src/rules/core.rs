//! The one pure core that `cabinetd simulate` and the daemon drive: lighting programme, rules,
//! scenes, usage-adaptive lighting, the mode, control arbitration and clock safety.
//!
//! How a driver uses it (the daemon's `run.rs`, and `simulate.rs`):
//! 1. At start: [`Core::new`] with the validated config, the current [`Now`], whether the uplink
//!    is up, the clock floor (`clock::build_floor()` and the state file's `saved_at`), and the
//!    state file read with `state::read` (central overrides, holds, scenes). At a reload:
//!    [`Core::reconfigure`], which carries over what must not be lost.
//! 2. Inputs, as they come: every telemetry reading ([`Core::observe`]: every poll, before
//!    report by exception), uplink up/down ([`Core::set_uplink`]), central commands
//!    `light.*`/`point.write`/`camera.*`/`scene.*` ([`Core::command`], after the command's own
//!    checks: signature, expiry, ledger).
//! 3. After each batch of inputs, and when [`Core::next_wakeup`] says so (at most a minute
//!    apart, so a wall-clock step is seen): [`Core::step`]. It returns [`StepOut`]: when
//!    `persist` is set, write [`Core::snapshot`] with `state::write` first; then carry out
//!    `outputs` in order: each [`super::ActionOut`] on the equipment (one step's light actions
//!    form a batch per bus), each [`super::EventOut`] into the events stream. An action that
//!    carries a central command's id decides that command's result; a command none carries
//!    (e.g. releasing what was not overridden) succeeded. When an action fails, report it with
//!    [`Core::failed`] so it is sent again at the next step.
//! 4. `/status` and metrics read [`Core::mode`], [`Core::controllers`], [`Core::rules`];
//!    `cabinetd_rule_firings_total{rule}` counts the `rule_fired` events with state `entered`.
//!
//! 5. Overlap: a rule's `then` actions are outputs of the step where it entered. If a later step
//!    clears the rule while some of them are still being carried out (a slow bus), the executor
//!    cancels the rule's outstanding actions (keyed by their `by`) before carrying out that
//!    step's outputs (`on_clear`, the levels re-applied by the next controller): Home
//!    Assistant's "restart" mode. A step never reads its own outputs, so it cannot cascade.
//!
//! Order within a step: clock (jump / untrusted), mode change, expired holds and scenes,
//! adaptive lighting, rule transitions in configuration order (each: `rule_fired`, then its
//! actions), then arbitration's outputs (`control_changed` and the actions on targets).
//! While the wall clock is untrusted, the programme, windows and nights are frozen; holds and
//! rules without windows keep working on monotonic time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value as Json};

use super::adaptive::{AdaptiveRt, Change};
use super::clock::{ClockEvent, ClockGuard};
use super::control::{Control, Controller, Target, Want};
use super::engine::{ClearCause, Engine, RuleState};
use super::expr::Sample;
use super::mode::{Mode, ModeTracker};
use super::state::{SavedOverride, SavedRunner, SavedScene, State};
use super::window::Sky;
use super::{ActionOut, EventOut, Now, Output};
use crate::command::Action;
use crate::config::{Config, PointCatalog, Rule, RuleAction, Scene};
use crate::event::EventKind;
use crate::light::LightTarget;
use crate::lighting::PlanError;
use crate::record::{Quality, Severity};

/// Longest time between two steps: a wall-clock step is noticed within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);

/// What one step produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOut {
    /// In order.
    pub outputs: Vec<Output>,
    /// The state file must be written ([`Core::snapshot`]) before the outputs are acted on.
    pub persist: bool,
}

#[derive(Debug, Clone)]
struct SceneRt {
    spec: Scene,
    /// Who keeps it running, until when (monotonic; `None`: until released / rule cleared).
    runners: BTreeMap<Controller, Option<Duration>>,
}

/// The core. See the module docs for how to drive it.
#[derive(Debug, Clone)]
pub struct Core {
    rules: Vec<Rule>,
    scenes: BTreeMap<String, SceneRt>,
    engine: Engine,
    control: Control,
    mode: ModeTracker,
    clock: ClockGuard,
    adaptive: Vec<AdaptiveRt>,
    usage: HashMap<String, Vec<usize>>,
    sky: Sky,
    catalog: PointCatalog,
    buses: BTreeSet<String>,
    groups: BTreeSet<u8>,
    cameras: BTreeSet<String>,
    pending: Vec<Output>,
    persist: bool,
}

fn event(kind: EventKind, severity: Severity, message: String, data: Json) -> EventOut {
    EventOut {
        kind,
        severity,
        source: "cabinetd".into(),
        message,
        data,
        by: None,
    }
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl Core {
    /// A core at `now`, with the uplink `up` or not, the wall-clock `floor`, and the state file
    /// if there was one. Entries of the state that no longer fit the configuration (an unknown
    /// scene or target) or whose hold ended while the cabinet was down are dropped, each with a
    /// note in the returned list (for the log).
    pub fn new(
        cfg: &Config,
        now: Now,
        uplink_up: bool,
        floor: Timestamp,
        restored: Option<&State>,
    ) -> Result<(Core, Vec<String>), PlanError> {
        let sky = Sky::new(cfg)?;
        let a = &cfg.automation;
        let mut usage: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, ad) in a.adaptive.iter().enumerate() {
            usage.entry(ad.usage.clone()).or_default().push(i);
        }
        let mut core = Core {
            rules: a.rules.clone(),
            scenes: a
                .scenes
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        SceneRt {
                            spec: s.clone(),
                            runners: BTreeMap::new(),
                        },
                    )
                })
                .collect(),
            engine: Engine::new(&a.rules, sky.clone()),
            control: Control::new(cfg, sky.programme().clone()),
            mode: ModeTracker::new(a.autonomous_after, uplink_up, now.mono),
            clock: ClockGuard::new(floor),
            adaptive: a.adaptive.iter().cloned().map(AdaptiveRt::new).collect(),
            usage,
            catalog: PointCatalog::new(&cfg.modbus, &cfg.dali, &cfg.cameras),
            buses: cfg.dali.iter().map(|b| b.name.clone()).collect(),
            groups: cfg
                .dali
                .iter()
                .flat_map(|b| b.groups.iter().map(|g| g.number))
                .collect(),
            cameras: cfg.cameras.iter().map(|c| c.name.clone()).collect(),
            sky,
            pending: Vec::new(),
            persist: false,
        };
        let events = core.clock.observe(now);
        core.clock_events(events);
        let notes = match restored {
            Some(s) => core.restore(s, now),
            None => Vec::new(),
        };
        Ok((core, notes))
    }

    fn restore(&mut self, s: &State, now: Now) -> Vec<String> {
        let mut notes = Vec::new();
        let trusted = self.clock.trusted();
        // Time spent powered off is known only with a trusted clock; otherwise a hold resumes
        // with what remained when the file was written.
        let remaining = |until: Timestamp| {
            let from = if trusted { now.wall } else { s.saved_at };
            Duration::try_from(until.duration_since(from)).unwrap_or(Duration::ZERO)
        };
        for o in &s.overrides {
            let target = match crate::light::parse_target(&o.target) {
                Ok(t) if self.check_light(&t).is_ok() => Target::light(&t),
                _ => {
                    notes.push(format!(
                        "override on {:?} dropped: not a target of this configuration",
                        o.target
                    ));
                    continue;
                }
            };
            let until = match o.until.map(remaining) {
                Some(r) if r.is_zero() => {
                    notes.push(format!("override on {} ended while stopped", o.target));
                    continue;
                }
                r => r.map(|r| now.mono + r),
            };
            match o.level_percent {
                Some(percent) => self.control.claim(
                    Controller::Central,
                    target,
                    Want::Level {
                        percent,
                        fade_s: o.fade_s,
                    },
                    until,
                    "central override (restored)".into(),
                    None,
                ),
                None => self.control.release(&Controller::Central, &target, None),
            }
        }
        for sc in &s.scenes {
            if !self.scenes.contains_key(&sc.scene) {
                notes.push(format!("scene {:?} dropped: not configured", sc.scene));
                continue;
            }
            for r in &sc.runners {
                let Some(by) = Controller::parse(&r.by) else {
                    continue;
                };
                let until = match r.until.map(remaining) {
                    Some(x) if x.is_zero() => {
                        notes.push(format!("scene {} ({}) ended while stopped", sc.scene, r.by));
                        continue;
                    }
                    x => x.map(|x| now.mono + x),
                };
                self.run_scene(&sc.scene, by, until, None, true, now);
            }
        }
        self.control.take_central_changed();
        self.persist = false;
        notes
    }

    /// The core of a new configuration `cfg` (a reload), taking over what must not be lost:
    /// the mode and the outage in progress, the clock guard, the last reading of every point,
    /// the central overrides, the rules that are the same in both configurations (entered or
    /// pending, with their claims: they do not fire again), the scenes still configured (their
    /// runners and holds), usage-adaptive lighting whose configuration did not change, and who
    /// is shown in charge of each target (so `control_changed` reports only real changes). An
    /// entered rule that changed or was removed is `cleared` (a `rule_fired` event, without its
    /// `on_clear`: the configuration ended it, not its condition); a changed rule is evaluated
    /// again from `cleared` with the last readings. Everything decided is sent again once to
    /// the new equipment. Holds keep their
    /// deadlines: monotonic time continues across the reload.
    pub fn reconfigure(&self, cfg: &Config, now: Now) -> Result<(Core, Vec<String>), PlanError> {
        let (mut new, _) = Core::new(cfg, now, self.mode.uplink_up(), Timestamp::MIN, None)?;
        let mut notes = Vec::new();
        new.pending.clear();
        new.mode = self
            .mode
            .clone()
            .with_after(cfg.automation.autonomous_after);
        new.clock = self.clock.clone();
        new.control.set_frozen(!new.clock.trusted());
        new.engine.set_mode(new.mode.mode());
        for (point, sample) in self.engine.samples() {
            new.engine.observe(&point, sample);
        }
        let mut carried: BTreeSet<String> = BTreeSet::new();
        for (i, rule) in new.rules.iter().enumerate() {
            let Some(j) = self.rules.iter().position(|r| r == rule) else {
                if self.rules.iter().any(|r| r.name == rule.name) {
                    notes.push(format!(
                        "rule {} changed: it is evaluated again from cleared",
                        rule.name
                    ));
                }
                continue;
            };
            let c = self.engine.carry(j);
            new.engine.adopt(i, c);
            if matches!(c.state(), RuleState::Entered { .. }) {
                carried.insert(rule.name.clone());
            }
        }
        for (i, old) in self.adaptive.iter().enumerate() {
            if let Some(k) = new.adaptive.iter().position(|a| a.config() == old.config()) {
                new.adaptive[k] = self.adaptive[i].clone();
            }
        }
        let adaptive: BTreeSet<String> = new
            .adaptive
            .iter()
            .zip(0..)
            .filter(|(a, _)| self.adaptive.iter().any(|o| o.config() == a.config()))
            .map(|(a, _)| a.config().name.clone())
            .collect();
        // Scenes: runners that still mean something; a scene whose actions changed is run again
        // from its new actions (its old claims are not carried).
        let mut rerun: Vec<(String, Controller, Option<Duration>)> = Vec::new();
        let mut same_scenes: BTreeSet<String> = BTreeSet::new();
        for (name, old) in &self.scenes {
            let Some(sc) = new.scenes.get_mut(name) else {
                if !old.runners.is_empty() {
                    notes.push(format!("scene {name} is no longer configured: released"));
                }
                continue;
            };
            for (by, until) in &old.runners {
                let valid = match by {
                    Controller::Rule(r) => until.is_some() || carried.contains(r),
                    _ => true,
                };
                if !valid {
                    continue;
                }
                if sc.spec == old.spec {
                    sc.runners.insert(by.clone(), *until);
                } else {
                    rerun.push((name.clone(), by.clone(), *until));
                }
            }
            if sc.spec == old.spec {
                same_scenes.insert(name.clone());
            }
        }
        let (buses, groups) = (new.buses.clone(), new.groups.clone());
        let catalog = new.catalog.clone();
        new.control.adopt(self.control.carry(), |by, target| {
            let target_ok = match target {
                Target::All => !buses.is_empty(),
                Target::Group(g) => groups.contains(g),
                Target::Gear(bus, _) => buses.contains(bus),
                Target::Point(p) => catalog.get(p).is_some_and(|i| i.writable),
            };
            let by_ok = match by {
                Controller::Central => true,
                Controller::Rule(r) => carried.contains(r),
                Controller::Scene(n) => same_scenes.contains(n),
                Controller::Adaptive(n) => adaptive.contains(n),
                Controller::Programme | Controller::None => false,
            };
            target_ok && by_ok
        });
        for (name, by, until) in rerun {
            new.run_scene(&name, by, until, None, true, now);
        }
        new.pending.clear();
        // An entered rule that changed or is gone ends here (its claims are not carried; its
        // on_clear is not run: the configuration, not the condition, ended it).
        for (j, old) in self.rules.iter().enumerate() {
            let entered = matches!(self.engine.state(j), RuleState::Entered { .. });
            if entered && !carried.contains(&old.name) {
                new.pending.push(Output::Event(event(
                    EventKind::RuleFired,
                    Severity::Info,
                    format!("rule {} cleared: its configuration changed", old.name),
                    json!({ "rule": old.name, "state": "cleared" }),
                )));
            }
        }
        new.persist = true;
        Ok((new, notes))
    }

    /// The points the core wants readings of (rules' inputs and usage points).
    pub fn wanted_points(&self) -> Vec<String> {
        let mut v: Vec<String> = self.engine.points().cloned().collect();
        v.extend(self.usage.keys().cloned());
        v.sort();
        v.dedup();
        v
    }

    /// What holds now: `(target or "scene:NAME", who, remaining)`: claims with a hold (central
    /// overrides with `hold_s`, rules' timed levels) and scenes run with a hold.
    pub fn holds(&self, now: Now) -> Vec<(String, String, Duration)> {
        let mut out: Vec<(String, String, Duration)> = self
            .control
            .holds(now.mono)
            .into_iter()
            .map(|(t, by, rem)| (t.to_string(), by.to_string(), rem))
            .collect();
        for (name, sc) in &self.scenes {
            for (by, until) in &sc.runners {
                if let Some(u) = until {
                    out.push((
                        format!("scene:{name}"),
                        by.to_string(),
                        u.saturating_sub(now.mono),
                    ));
                }
            }
        }
        out
    }

    /// The cabinet's mode.
    pub fn mode(&self) -> Mode {
        self.mode.mode()
    }

    /// Whether the wall clock is trusted.
    pub fn clock_trusted(&self) -> bool {
        self.clock.trusted()
    }

    /// Who is in charge of each known target (as of the last step).
    pub fn controllers(&self) -> BTreeMap<String, String> {
        self.control.controllers()
    }

    /// Each rule and its state (`cleared`, `pending`, `entered`), in configuration order.
    pub fn rules(&self) -> Vec<(String, &'static str)> {
        (0..self.engine.len())
            .map(|i| {
                let s = match self.engine.state(i) {
                    RuleState::Cleared => "cleared",
                    RuleState::Pending { .. } => "pending",
                    RuleState::Entered { .. } => "entered",
                };
                (self.engine.name(i).to_string(), s)
            })
            .collect()
    }

    /// Who decides `target` now and the level it wants (lights), `None` for nobody.
    pub fn decision(&self, target: &Target) -> Option<(Controller, Option<f64>)> {
        self.control.decision(target)
    }

    /// Active scenes and who runs them.
    pub fn scenes(&self) -> BTreeMap<String, Vec<String>> {
        self.scenes
            .iter()
            .filter(|(_, s)| !s.runners.is_empty())
            .map(|(n, s)| (n.clone(), s.runners.keys().map(|c| c.to_string()).collect()))
            .collect()
    }

    /// Whether readings of `point` matter to the core (a rule or adaptive lighting reads it).
    pub fn wants(&self, point: &str) -> bool {
        self.engine.reads(point) || self.usage.contains_key(point)
    }

    /// A reading of `point` (JSON bool or number) at `now` (monotonic).
    pub fn observe(&mut self, point: &str, value: &Json, quality: Quality, now: Duration) {
        let sample = Sample::from_json(value, quality);
        self.engine.observe(point, sample);
        let Some(ids) = self.usage.get(point) else {
            return;
        };
        for i in ids.clone() {
            let change = self.adaptive[i].observe(sample, now);
            let why = format!("{point} = {value} ({quality:?})").to_lowercase();
            self.apply_adaptive(i, change, &why);
        }
    }

    /// The uplink went up or down.
    pub fn set_uplink(&mut self, up: bool, now: Now) {
        self.mode.set_uplink(up, now.mono);
    }

    /// An action could not be carried out on `target`: it is sent again at the next step.
    pub fn failed(&mut self, target: &Target) {
        self.control.forget_sent(target);
    }

    fn check_light(&self, t: &LightTarget) -> Result<(), String> {
        let ok = match t {
            LightTarget::All => !self.buses.is_empty(),
            LightTarget::Group(g) => self.groups.contains(g),
            LightTarget::Gear { bus, .. } => self.buses.contains(bus),
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "field `args.target`: {} is not a light target of this cabinet",
                crate::light::target_name(t)
            ))
        }
    }

    /// A central command (already checked for signature, expiry and duplicates) with its id;
    /// `Err` is the rejection reason, naming the field. Its effects are in the next step's
    /// outputs (actions carrying `id`).
    pub fn command(
        &mut self,
        action: RuleAction,
        id: Option<String>,
        now: Now,
    ) -> Result<(), String> {
        let central = Controller::Central;
        let reason = "central command".to_string();
        let action = match action {
            RuleAction::Command(a) => RuleAction::from_command(a),
            other => other,
        };
        match action {
            RuleAction::Command(Action::LightSet {
                target,
                level_percent,
                fade_s,
                hold_s,
            }) => {
                self.check_light(&target)?;
                self.control.claim(
                    central,
                    Target::light(&target),
                    Want::Level {
                        percent: level_percent,
                        fade_s,
                    },
                    hold_s.map(|h| now.mono + secs(h)),
                    reason,
                    id,
                );
            }
            RuleAction::Command(Action::LightRelease { target }) => {
                self.check_light(&target)?;
                let t = Target::light(&target);
                self.control.release(&central, &t, None);
                if let Some(id) = id {
                    self.control.attribute(t, id);
                }
            }
            RuleAction::Command(Action::PointWrite { point, value }) => {
                match self.catalog.get(&point) {
                    Some(i) if i.writable => {}
                    Some(_) => return Err(format!("field `args.point`: {point} is not writable")),
                    None => return Err(format!("field `args.point`: unknown point {point:?}")),
                }
                self.control.claim(
                    central,
                    Target::Point(point),
                    Want::Write(value),
                    None,
                    reason,
                    id,
                );
            }
            RuleAction::Command(a) => {
                let camera = match &a {
                    Action::CameraGotoPreset { camera, .. }
                    | Action::CameraReboot { camera }
                    | Action::CameraSyncTime { camera } => camera.clone(),
                    // Light and point actions are handled above, scenes by `from_command`.
                    _ => return Err(format!("field `action`: {} is not a command", a.name())),
                };
                if !self.cameras.contains(&camera) {
                    return Err(format!("field `args.camera`: no camera {camera:?}"));
                }
                self.pending.push(Output::Action(ActionOut {
                    action: a,
                    by: central,
                    reason,
                    command: id,
                }));
            }
            RuleAction::SceneRun { scene, hold_s } => {
                let Some(s) = self.scenes.get(&scene) else {
                    return Err(format!("field `args.scene`: unknown scene {scene:?}"));
                };
                let hold = hold_s.map(secs).or(s.spec.hold);
                self.run_scene(&scene, central, hold.map(|h| now.mono + h), id, false, now);
            }
            RuleAction::SceneRelease { scene } => {
                if !self.scenes.contains_key(&scene) {
                    return Err(format!("field `args.scene`: unknown scene {scene:?}"));
                }
                if let Some(id) = id {
                    for t in self.control.claimed_by(&Controller::Scene(scene.clone())) {
                        self.control.attribute(t, id.clone());
                    }
                }
                self.release_scene(&scene, &central);
            }
            RuleAction::Event(_) => return Err("field `action`: event is not a command".into()),
        }
        Ok(())
    }

    /// Starts (or refreshes) scene `name` for `runner` until `until` (monotonic).
    fn run_scene(
        &mut self,
        name: &str,
        runner: Controller,
        until: Option<Duration>,
        command: Option<String>,
        restoring: bool,
        now: Now,
    ) {
        let Some(s) = self.scenes.get_mut(name) else {
            return;
        };
        if runner == Controller::Central || until.is_some() {
            self.persist = true;
        }
        s.runners.insert(runner.clone(), until);
        let by = Controller::Scene(name.to_string());
        let reason = match &runner {
            Controller::Central => format!("scene {name} run by the central post"),
            r => format!("scene {name} run by {r}"),
        };
        for a in s.spec.actions.clone() {
            self.act(&by, &a, &reason, command.clone(), restoring, false, now);
        }
    }

    /// `who` stops running scene `name`: the central post ends it for everyone, a rule only its
    /// own run. A scene nobody runs any more lets go of its targets.
    fn release_scene(&mut self, name: &str, who: &Controller) {
        let Some(s) = self.scenes.get_mut(name) else {
            return;
        };
        if s.runners.is_empty() {
            return;
        }
        let before = s.runners.len();
        if *who == Controller::Central {
            s.runners.clear();
        } else {
            s.runners.remove(who);
        }
        if s.runners.len() != before {
            self.persist = true;
        }
        if s.runners.is_empty() {
            self.control
                .release_all(&Controller::Scene(name.to_string()));
        }
    }

    /// Carries out one action of a rule or scene.
    #[allow(clippy::too_many_arguments)]
    fn act(
        &mut self,
        by: &Controller,
        a: &RuleAction,
        reason: &str,
        command: Option<String>,
        restoring: bool,
        on_clear: bool,
        now: Now,
    ) {
        match a {
            RuleAction::Command(Action::LightSet {
                target,
                level_percent,
                fade_s,
                hold_s,
            }) => self.control.claim(
                by.clone(),
                Target::light(target),
                Want::Level {
                    percent: *level_percent,
                    fade_s: *fade_s,
                },
                hold_s.map(|h| now.mono + secs(h)),
                reason.to_string(),
                command,
            ),
            RuleAction::Command(Action::LightRelease { target }) => {
                self.control.release(by, &Target::light(target), None)
            }
            RuleAction::Command(Action::PointWrite { point, value }) if on_clear => {
                if let Some(o) =
                    self.control
                        .write_once(by.clone(), point, *value, reason.to_string())
                {
                    self.pending.push(Output::Action(o));
                }
            }
            RuleAction::Command(Action::PointWrite { point, value }) => self.control.claim(
                by.clone(),
                Target::Point(point.clone()),
                Want::Write(*value),
                None,
                reason.to_string(),
                command,
            ),
            RuleAction::Command(other) if !restoring => {
                self.pending.push(Output::Action(ActionOut {
                    action: other.clone(),
                    by: by.clone(),
                    reason: reason.to_string(),
                    command,
                }))
            }
            RuleAction::Command(_) => {}
            RuleAction::SceneRun { scene, hold_s } => {
                let hold = hold_s
                    .map(secs)
                    .or_else(|| self.scenes.get(scene).and_then(|s| s.spec.hold));
                self.run_scene(
                    scene,
                    by.clone(),
                    hold.map(|h| now.mono + h),
                    None,
                    restoring,
                    now,
                );
            }
            RuleAction::SceneRelease { scene } => self.release_scene(scene, by),
            RuleAction::Event(e) if !restoring => {
                let mut data = json!({});
                match by {
                    Controller::Rule(n) => data["rule"] = json!(n),
                    Controller::Scene(n) => data["scene"] = json!(n),
                    _ => {}
                }
                self.pending.push(Output::Event(EventOut {
                    kind: EventKind::Custom(e.kind.clone()),
                    severity: e.severity,
                    source: e.source.clone().unwrap_or_else(|| "cabinetd".into()),
                    message: e.message.clone(),
                    data,
                    by: Some(by.clone()),
                }));
            }
            RuleAction::Event(_) => {}
        }
    }

    fn apply_adaptive(&mut self, i: usize, change: Change, why: &str) {
        let ad = self.adaptive[i].config();
        let by = Controller::Adaptive(ad.name.clone());
        let target = Target::light(&ad.target);
        match change {
            Change::None => {}
            Change::Raise(l) => self.control.claim(
                by,
                target,
                Want::Raise { percent: l },
                None,
                format!("usage {why}: at least {} %", super::number(l)),
                None,
            ),
            Change::Release(f) => self.control.release(&by, &target, (f > 0.0).then_some(f)),
        }
    }

    fn clock_events(&mut self, events: Vec<ClockEvent>) {
        for ev in events {
            match ev {
                ClockEvent::Jump { offset_s } => {
                    self.engine.replan();
                    self.control.replan();
                    for a in &mut self.adaptive {
                        a.replan();
                    }
                    self.pending.push(Output::Event(event(
                        EventKind::ClockJump,
                        Severity::Minor,
                        format!(
                            "the wall clock stepped by {offset_s} s; plans made again from now"
                        ),
                        json!({ "offset_s": offset_s }),
                    )));
                }
                ClockEvent::Untrusted { wall, floor } => {
                    self.pending.push(Output::Event(event(
                        EventKind::ClockUntrusted,
                        Severity::Major,
                        format!("the wall clock reads {wall}, before {floor}: holding the current levels until it is set"),
                        json!({ "wall": wall.to_string(), "floor": floor.to_string() }),
                    )));
                }
                ClockEvent::Trusted => {
                    self.engine.replan();
                    self.control.replan();
                    for a in &mut self.adaptive {
                        a.replan();
                    }
                }
            }
        }
        self.control.set_frozen(!self.clock.trusted());
    }

    /// Runs everything due at `now` (see the module docs for the order).
    pub fn step(&mut self, now: Now) -> StepOut {
        let events = self.clock.observe(now);
        self.clock_events(events);
        let trusted = self.clock.trusted();
        if let Some((from, to)) = self.mode.step(now.mono) {
            self.engine.set_mode(to);
            let severity = if to == Mode::Autonomous {
                Severity::Minor
            } else {
                Severity::Info
            };
            self.pending.push(Output::Event(event(
                EventKind::ModeChanged,
                severity,
                format!("mode {from} → {to}"),
                json!({ "from": from.as_str(), "to": to.as_str() }),
            )));
        }
        self.control.expire(now.mono);
        let names: Vec<String> = self.scenes.keys().cloned().collect();
        for name in names {
            let s = self.scenes.get_mut(&name).expect("listed");
            let before = s.runners.len();
            s.runners.retain(|_, u| u.is_none_or(|u| u > now.mono));
            if s.runners.len() != before {
                self.persist = true;
                if s.runners.is_empty() {
                    self.control.release_all(&Controller::Scene(name.clone()));
                }
            }
        }
        for i in 0..self.adaptive.len() {
            let change = self.adaptive[i].step(now, &self.sky, trusted);
            self.apply_adaptive(i, change, "hold or night over");
        }
        for tr in self.engine.step(now, trusted) {
            let rule = self.rules[tr.rule].clone();
            let by = Controller::Rule(rule.name.clone());
            let state = if tr.cleared.is_some() {
                "cleared"
            } else {
                "entered"
            };
            self.pending.push(Output::Event(event(
                EventKind::RuleFired,
                Severity::Info,
                format!("rule {} {state}", rule.name),
                json!({ "rule": rule.name, "state": state }),
            )));
            match tr.cleared {
                None => {
                    let reason = format!("rule {} entered: {}", rule.name, rule.when.text());
                    for a in &rule.then {
                        self.act(&by, a, &reason, None, false, false, now);
                    }
                }
                Some(cause) => {
                    self.control.release_all(&by);
                    let names: Vec<String> = self.scenes.keys().cloned().collect();
                    for name in names {
                        let runs_without_hold = self.scenes[&name].runners.get(&by) == Some(&None);
                        if runs_without_hold {
                            self.release_scene(&name, &by);
                        }
                    }
                    let why = match cause {
                        ClearCause::Condition => "its condition stopped holding",
                        ClearCause::ClearWhen => "clear_when held",
                        ClearCause::Disarmed => "disarmed (mode or time window)",
                    };
                    let reason = format!("rule {} cleared: {why}", rule.name);
                    for a in &rule.on_clear {
                        self.act(&by, a, &reason, None, false, true, now);
                    }
                }
            }
        }
        let mut outputs = std::mem::take(&mut self.pending);
        outputs.extend(self.control.sync(now));
        let persist = std::mem::take(&mut self.persist) | self.control.take_central_changed();
        StepOut { outputs, persist }
    }

    /// How long until [`Core::step`] must run again, at most [`MAX_SLEEP`] (zero: now).
    pub fn next_wakeup(&self, now: Now) -> Duration {
        let trusted = self.clock.trusted();
        let mut best = MAX_SLEEP;
        let mut mono = |t: Option<Duration>| {
            if let Some(t) = t {
                best = best.min(t.saturating_sub(now.mono));
            }
        };
        let (e_mono, e_wall) = self.engine.next_deadline();
        let (c_mono, c_wall) = self.control.next_deadline();
        mono(e_mono);
        mono(c_mono);
        mono(self.mode.next_deadline());
        for s in self.scenes.values() {
            for u in s.runners.values() {
                mono(*u);
            }
        }
        let mut walls = vec![e_wall, c_wall];
        for a in &self.adaptive {
            let (m, w) = a.next_deadline();
            mono(m);
            walls.push(w);
        }
        if trusted {
            for w in walls.into_iter().flatten() {
                let d = Duration::try_from(w.duration_since(now.wall)).unwrap_or(Duration::ZERO);
                best = best.min(d);
            }
        }
        best
    }

    /// The state file's content at `now`: central overrides and the scenes that must survive a
    /// restart (run by the central post, or with a hold), deadlines as wall-clock times.
    pub fn snapshot(&self, now: Now) -> State {
        let wall = |rem: Duration| {
            now.wall + jiff::SignedDuration::try_from(rem).unwrap_or(jiff::SignedDuration::ZERO)
        };
        State {
            saved_at: now.wall,
            overrides: self
                .control
                .central(now.mono)
                .into_iter()
                .map(|o| SavedOverride {
                    target: o.target,
                    level_percent: o.level_percent,
                    fade_s: o.fade_s,
                    until: o.remaining.map(wall),
                })
                .collect(),
            scenes: self
                .scenes
                .iter()
                .filter_map(|(name, s)| {
                    let runners: Vec<SavedRunner> = s
                        .runners
                        .iter()
                        .filter(|(by, u)| **by == Controller::Central || u.is_some())
                        .map(|(by, u)| SavedRunner {
                            by: by.to_string(),
                            until: u.map(|u| wall(u.saturating_sub(now.mono))),
                        })
                        .collect();
                    (!runners.is_empty()).then(|| SavedScene {
                        scene: name.clone(),
                        runners,
                    })
                })
                .collect(),
        }
    }
}

/// Parses a central command's action and arguments (see [`RuleAction::parse`]).
pub fn parse_command(
    name: &str,
    args: &serde_json::Map<String, Json>,
) -> Result<RuleAction, String> {
    RuleAction::parse(name, args)
}

#[cfg(test)]
mod tests;
