//! Who is in charge of each target: control arbitration (pure, explicit time).
//!
//! Controllers, by precedence: `central` > `scene:NAME` > `rule:NAME` > `adaptive:NAME` >
//! `programme` (SPEC: central command > scene > rule > programme; usage-adaptive lighting sits
//! just above the programme, whose level it only ever raises). `none` is nobody.
//!
//! Targets are named as in commands: `all`, `group:N`, `BUS/ADDR` for lights, `DEVICE/POINT` for
//! a writable point. Controllers act through *claims* on targets; the controller of a target is
//! decided per target, among the claims that cover it:
//! - `all` covers every light target, `group:N` covers itself and its configured members
//!   (`[[dali.group]]`), `BUS/ADDR` and a point cover only themselves;
//! - the highest precedence wins; between claims of equal precedence the most recent wins, the
//!   most specific at equal age (as the programme's steps do). So a rule's `all → 100 %` made
//!   after another rule's `bus-a/3 → 20 %` takes bus-a/3 as well; a scene's `bus-a/3` keeps it
//!   against a rule's `all`;
//! - a controller's new claim replaces its own claims that the new target covers (a newer
//!   command wins over an older one and its timer); its release removes them. For the central
//!   post, releasing a part of a broader override (`light.release group:1` after
//!   `light.set all`) leaves a release marker on the part, so the rest stays overridden, as the
//!   DALI bus did before;
//! - the programme needs no claim: it decides every light target nobody else claims (with
//!   `Programme::level_at`), unless the programme is empty (then nobody: `none`);
//! - usage-adaptive claims are *raises*: they win only while above the programme's level;
//! - points: a scene's or rule's `point.write` claims the point while the scene is active or the
//!   rule entered. A central `point.write` is a one-shot command (SPEC has no `point.release`):
//!   it is written at once whatever the claims and shows `central` until the point's claims next
//!   change, which re-decides it. A point nobody claims keeps its last value, controller `none`.
//!
//! [`Control::sync`] turns the decisions into outputs, targets in order `all`, groups, gear,
//! points: a `control_changed` event when a target's controller changes (not at the first sync,
//! which only establishes them, `/status` reports that state; and not for a target whose
//! covering target made the same change in the same sync: a scene on `group:1` is one event, not
//! one per member), and a `light.set`/`point.write`
//! when the level the target should have differs from what was last sent to it or to a target
//! covering it, when a claim on exactly that target is new (every command gets its action), or
//! when a scene, rule or the central post let go (the next controller's value is re-applied).
//! A broad action is followed by the narrower ones it overwrote, in the same output batch: the
//! executor should apply a batch per bus as one unit (broadcast then exceptions), so the
//! exceptions do not flash.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value as Json};

use super::{ActionOut, EventOut, Now, Output};
use crate::command::Action;
use crate::config::{Config, RuleAction};
use crate::light::LightTarget;
use crate::lighting::Programme;
use crate::record::Severity;

/// Who decides a target's level or value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// Nobody.
    None,
    /// The lighting programme.
    Programme,
    /// Usage-adaptive lighting `[[lighting.adaptive]]` of this name.
    Adaptive(String),
    /// A rule.
    Rule(String),
    /// A scene.
    Scene(String),
    /// The central post.
    Central,
}

impl Controller {
    /// Precedence: higher wins.
    pub fn rank(&self) -> u8 {
        match self {
            Controller::None => 0,
            Controller::Programme => 1,
            Controller::Adaptive(_) => 2,
            Controller::Rule(_) => 3,
            Controller::Scene(_) => 4,
            Controller::Central => 5,
        }
    }

    /// Parses the text form ([`fmt::Display`]).
    pub fn parse(s: &str) -> Option<Controller> {
        Some(match s {
            "none" => Controller::None,
            "programme" => Controller::Programme,
            "central" => Controller::Central,
            _ => match s.split_once(':')? {
                ("adaptive", n) => Controller::Adaptive(n.into()),
                ("rule", n) => Controller::Rule(n.into()),
                ("scene", n) => Controller::Scene(n.into()),
                _ => return None,
            },
        })
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Controller::None => f.write_str("none"),
            Controller::Programme => f.write_str("programme"),
            Controller::Central => f.write_str("central"),
            Controller::Adaptive(n) => write!(f, "adaptive:{n}"),
            Controller::Rule(n) => write!(f, "rule:{n}"),
            Controller::Scene(n) => write!(f, "scene:{n}"),
        }
    }
}

/// A target, ordered broadest first: `all`, groups, gear (by bus then address), points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Every luminaire.
    All,
    /// A DALI group.
    Group(u8),
    /// One luminaire `BUS/ADDR`.
    Gear(String, u8),
    /// A writable point `DEVICE/POINT`.
    Point(String),
}

impl Target {
    /// A light target.
    pub fn light(t: &LightTarget) -> Target {
        match t {
            LightTarget::All => Target::All,
            LightTarget::Group(g) => Target::Group(*g),
            LightTarget::Gear { bus, address } => Target::Gear(bus.clone(), *address),
        }
    }

    /// The light target, `None` for a point.
    pub fn to_light(&self) -> Option<LightTarget> {
        Some(match self {
            Target::All => LightTarget::All,
            Target::Group(g) => LightTarget::Group(*g),
            Target::Gear(bus, address) => LightTarget::Gear {
                bus: bus.clone(),
                address: *address,
            },
            Target::Point(_) => return None,
        })
    }

    fn is_light(&self) -> bool {
        !matches!(self, Target::Point(_))
    }

    fn specificity(&self) -> u8 {
        match self {
            Target::All => 0,
            Target::Group(_) => 1,
            Target::Gear(..) | Target::Point(_) => 2,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Group(g) => write!(f, "group:{g}"),
            Target::Gear(bus, a) => write!(f, "{bus}/{a}"),
            Target::Point(p) => f.write_str(p),
        }
    }
}

/// What a claim wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Want {
    /// A light level.
    Level {
        /// Percent.
        percent: f64,
        /// Fade of the claim's own action.
        fade_s: Option<f64>,
    },
    /// At least this level (usage-adaptive lighting): wins only while above the programme.
    Raise {
        /// Percent.
        percent: f64,
    },
    /// Central release marker inside a broader central override.
    Release,
    /// A point value.
    Write(cabinetd_modbus::Value),
}

#[derive(Debug, Clone)]
struct Claim {
    seq: u64,
    by: Controller,
    target: Target,
    want: Want,
    until: Option<Duration>,
    reason: String,
    command: Option<String>,
    fresh: bool,
    /// A central `point.write`: dropped at the point's next claim change.
    sticky: bool,
}

/// The decision for one target.
#[derive(Debug, Clone)]
struct Decision {
    by: Controller,
    level: Option<f64>,
    value: Option<cabinetd_modbus::Value>,
    fade_s: Option<f64>,
    reason: String,
    command: Option<String>,
    fresh: bool,
}

/// A central override as persisted (see `state.rs`).
#[derive(Debug, Clone, PartialEq)]
pub struct CentralOverride {
    /// Target name.
    pub target: String,
    /// Level, `None` for a release marker.
    pub level_percent: Option<f64>,
    /// Fade of the original command.
    pub fade_s: Option<f64>,
    /// Remaining hold, if any.
    pub remaining: Option<Duration>,
}

/// Claims and shown controllers carried across a reload ([`Control::carry`]).
#[derive(Debug, Clone)]
pub struct Carried {
    claims: Vec<Claim>,
    shown: BTreeMap<Target, Controller>,
    started: bool,
}

/// Group membership: `(bus, group)` → short addresses.
pub type Groups = BTreeMap<(String, u8), Vec<u8>>;

fn covers(groups: &Groups, a: &Target, b: &Target) -> bool {
    match (a, b) {
        (Target::All, t) => t.is_light(),
        (Target::Group(g), Target::Group(h)) => g == h,
        (Target::Group(g), Target::Gear(bus, addr)) => groups
            .get(&(bus.clone(), *g))
            .is_some_and(|m| m.contains(addr)),
        (Target::Gear(..), Target::Gear(..)) | (Target::Point(_), Target::Point(_)) => a == b,
        _ => false,
    }
}

/// A JSON number or boolean for a point value.
pub fn value_json(v: cabinetd_modbus::Value) -> Json {
    match v {
        cabinetd_modbus::Value::Bool(b) => json!(b),
        cabinetd_modbus::Value::Int(i) => json!(i),
        cabinetd_modbus::Value::UInt(u) => json!(u),
        cabinetd_modbus::Value::Float(f) => json!(f),
    }
}

/// Arbitration state: claims, what was last sent, who was last shown in charge.
#[derive(Debug, Clone)]
pub struct Control {
    groups: Groups,
    programme: Option<Programme>,
    claims: Vec<Claim>,
    seq: u64,
    known: BTreeSet<Target>,
    shown: BTreeMap<Target, Controller>,
    sent_level: BTreeMap<Target, f64>,
    sent_value: BTreeMap<Target, cabinetd_modbus::Value>,
    prog: BTreeMap<Target, (f64, String)>,
    prog_next: Option<Timestamp>,
    prog_fresh: bool,
    frozen: bool,
    actors: Vec<(Target, Controller)>,
    fades: BTreeMap<Target, f64>,
    /// Central commands whose effect is a release: the actions re-applying the covered targets
    /// carry their id.
    released_by: Vec<(Target, String)>,
    /// Targets to decide again at the next sync (with every known target each one covers).
    dirty: BTreeSet<Target>,
    /// Every known target must be decided again (start, programme change).
    all_dirty: bool,
    /// The earliest `until` of the claims (so `expire` costs nothing between holds).
    next_until: Option<Duration>,
    started: bool,
    central_changed: bool,
}

impl Control {
    /// The arbitration of `cfg`, with `programme` (the lighting programme). Known targets from
    /// the start: `all` when there is a DALI bus or a programme step, every configured group and
    /// member, every target of a programme step, rule, scene or adaptive lighting.
    pub fn new(cfg: &Config, programme: Programme) -> Control {
        let mut groups = Groups::new();
        let mut known = BTreeSet::new();
        for b in &cfg.dali {
            known.insert(Target::All);
            for g in &b.groups {
                groups.insert((b.name.clone(), g.number), g.members.clone());
                known.insert(Target::Group(g.number));
                for m in &g.members {
                    known.insert(Target::Gear(b.name.clone(), *m));
                }
            }
        }
        for s in &cfg.lighting.steps {
            known.insert(Target::light(&s.target));
        }
        let a = &cfg.automation;
        let actions = a
            .rules
            .iter()
            .flat_map(|r| r.then.iter().chain(&r.on_clear))
            .chain(a.scenes.iter().flat_map(|s| &s.actions));
        for act in actions {
            match act {
                RuleAction::Command(Action::LightSet { target, .. })
                | RuleAction::Command(Action::LightRelease { target }) => {
                    known.insert(Target::light(target));
                }
                RuleAction::Command(Action::PointWrite { point, .. }) => {
                    known.insert(Target::Point(point.clone()));
                }
                _ => {}
            }
        }
        for ad in &a.adaptive {
            known.insert(Target::light(&ad.target));
        }
        Control {
            groups,
            programme: (!programme.is_empty()).then_some(programme),
            claims: Vec::new(),
            seq: 0,
            known,
            shown: BTreeMap::new(),
            sent_level: BTreeMap::new(),
            sent_value: BTreeMap::new(),
            prog: BTreeMap::new(),
            prog_next: None,
            prog_fresh: false,
            frozen: false,
            actors: Vec::new(),
            fades: BTreeMap::new(),
            released_by: Vec::new(),
            dirty: BTreeSet::new(),
            all_dirty: true,
            next_until: None,
            started: false,
            central_changed: false,
        }
    }

    fn covers(&self, a: &Target, b: &Target) -> bool {
        covers(&self.groups, a, b)
    }

    /// Adds `t` to the known targets (a central command may name a gear nothing else names),
    /// taking over what it is shown and was sent from the targets covering it.
    fn know(&mut self, t: &Target) {
        if self.known.contains(t) {
            return;
        }
        let cover: Vec<Target> = self
            .known
            .iter()
            .filter(|k| self.covers(k, t))
            .cloned()
            .collect();
        self.known.insert(t.clone());
        if let Some(k) = cover.last() {
            if let Some(l) = self.sent_level.get(k).copied() {
                self.sent_level.insert(t.clone(), l);
            }
            if let Some(c) = self.shown.get(k).cloned() {
                self.shown.insert(t.clone(), c);
            }
        }
        if t.is_light() && self.programme.is_some() {
            self.prog_fresh = false;
        }
        self.mark(t);
    }

    /// `t` and the known targets it covers are decided again at the next sync.
    fn mark(&mut self, t: &Target) {
        if !t.is_light() {
            self.dirty.insert(t.clone());
            return;
        }
        let covered = self.covered_by(t);
        self.dirty.extend(covered);
    }

    /// The known targets `t` covers (itself included when known).
    fn covered_by(&self, t: &Target) -> Vec<Target> {
        self.known
            .iter()
            .filter(|k| self.covers(t, k))
            .cloned()
            .collect()
    }

    fn touched(&mut self, t: &Target, by: &Controller) {
        self.actors.push((t.clone(), by.clone()));
        self.mark(t);
        self.next_until = self.claims.iter().filter_map(|c| c.until).min();
        if *by == Controller::Central {
            self.central_changed = true;
        }
    }

    /// Removes `by`'s claims covered by `target`, and on a point the central one-shot (the
    /// point's claims change).
    fn drop_own(&mut self, by: &Controller, target: &Target) {
        let groups = &self.groups;
        let is_point = !target.is_light();
        self.claims.retain(|c| {
            let own = c.by == *by && covers(groups, target, &c.target);
            let sticky = is_point && c.sticky && c.target == *target;
            !(own || sticky)
        });
    }

    /// `by` claims `target`. Its own claims covered by `target` are replaced; on a point, a
    /// central one-shot is dropped (the point's claims change).
    #[allow(clippy::too_many_arguments)]
    pub fn claim(
        &mut self,
        by: Controller,
        target: Target,
        want: Want,
        until: Option<Duration>,
        reason: String,
        command: Option<String>,
    ) {
        self.know(&target);
        let is_point = !target.is_light();
        self.drop_own(&by, &target);
        if by == Controller::Central && !is_point {
            self.prune_markers();
        }
        self.seq += 1;
        let sticky = by == Controller::Central && is_point;
        self.claims.push(Claim {
            seq: self.seq,
            by: by.clone(),
            target: target.clone(),
            want,
            until,
            reason,
            command,
            fresh: true,
            sticky,
        });
        self.touched(&target, &by);
    }

    /// `by` lets go of `target` (its claims covered by it). For the central post, a part of a
    /// broader override gets a release marker. `fade_s` fades the next controller's level in.
    pub fn release(&mut self, by: &Controller, target: &Target, fade_s: Option<f64>) {
        self.know(target);
        self.drop_own(by, target);
        if *by == Controller::Central && target.is_light() {
            let broader = self.claims.iter().any(|c| {
                c.by == Controller::Central
                    && matches!(c.want, Want::Level { .. })
                    && covers(&self.groups, &c.target, target)
            });
            if broader {
                self.seq += 1;
                self.claims.push(Claim {
                    seq: self.seq,
                    by: Controller::Central,
                    target: target.clone(),
                    want: Want::Release,
                    until: None,
                    reason: "released by the central post".into(),
                    command: None,
                    fresh: false,
                    sticky: false,
                });
            }
            self.prune_markers();
        }
        if let Some(f) = fade_s {
            for k in self.covered_by(target) {
                self.fades.insert(k, f);
            }
        }
        self.touched(target, by);
    }

    /// The actions that re-apply targets covered by `target` at the next sync carry `command`
    /// (a central `light.release` or `scene.release`: its result is theirs).
    pub fn attribute(&mut self, target: Target, command: String) {
        self.mark(&target);
        self.released_by.push((target, command));
    }

    /// The targets `by` claims.
    pub fn claimed_by(&self, by: &Controller) -> Vec<Target> {
        self.claims
            .iter()
            .filter(|c| c.by == *by)
            .map(|c| c.target.clone())
            .collect()
    }

    /// `by` lets go of everything it claims.
    pub fn release_all(&mut self, by: &Controller) {
        let targets: Vec<Target> = self
            .claims
            .iter()
            .filter(|c| c.by == *by)
            .map(|c| c.target.clone())
            .collect();
        for t in targets {
            self.release(by, &t, None);
        }
    }

    /// Release markers not inside a central override any more are pointless.
    fn prune_markers(&mut self) {
        let levels: Vec<Target> = self
            .claims
            .iter()
            .filter(|c| c.by == Controller::Central && matches!(c.want, Want::Level { .. }))
            .map(|c| c.target.clone())
            .collect();
        let groups = &self.groups;
        self.claims.retain(|c| {
            c.want != Want::Release || levels.iter().any(|l| covers(groups, l, &c.target))
        });
    }

    /// Removes the claims whose hold ended at `now` (monotonic).
    pub fn expire(&mut self, now: Duration) {
        if self.next_until.is_none_or(|u| u > now) {
            return;
        }
        let due: Vec<(Controller, Target)> = self
            .claims
            .iter()
            .filter(|c| c.until.is_some_and(|u| u <= now))
            .map(|c| (c.by.clone(), c.target.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        self.claims.retain(|c| c.until.is_none_or(|u| u > now));
        for (by, t) in due {
            if by == Controller::Central {
                self.prune_markers();
            }
            self.touched(&t, &by);
        }
    }

    /// The earliest hold end (monotonic) and the programme's next change (wall), if any.
    pub fn next_deadline(&self) -> (Option<Duration>, Option<Timestamp>) {
        let hold = self.next_until;
        let prog = if self.frozen { None } else { self.prog_next };
        (hold, prog)
    }

    /// While the wall clock is untrusted the programme is frozen at the levels last decided.
    pub fn set_frozen(&mut self, frozen: bool) {
        if self.frozen && !frozen {
            self.prog_fresh = false;
        }
        self.frozen = frozen;
    }

    /// The wall clock stepped: the programme is decided again from the new time.
    pub fn replan(&mut self) {
        self.prog_fresh = false;
    }

    /// The executor could not apply an action on `target`: it will be sent again at the next
    /// sync.
    pub fn forget_sent(&mut self, target: &Target) {
        self.sent_level.remove(target);
        self.sent_value.remove(target);
        self.mark(target);
    }

    /// Whether a central override, hold or release changed since the last call (the state file
    /// must then be written before the outputs are acted on).
    pub fn take_central_changed(&mut self) -> bool {
        std::mem::take(&mut self.central_changed)
    }

    /// Who is in charge of each known target, as shown by the last sync.
    pub fn controllers(&self) -> BTreeMap<String, String> {
        self.shown
            .iter()
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect()
    }

    /// Who decides `t` now and the level (lights) it wants, without syncing.
    pub fn decision(&self, t: &Target) -> Option<(Controller, Option<f64>)> {
        self.decide(t).map(|d| (d.by, d.level))
    }

    /// The controller of `t` as of the last sync.
    pub fn controller(&self, t: &Target) -> Controller {
        self.shown.get(t).cloned().unwrap_or(Controller::None)
    }

    /// The central overrides and release markers, oldest first, with their remaining holds at
    /// `now` (monotonic).
    pub fn central(&self, now: Duration) -> Vec<CentralOverride> {
        self.claims
            .iter()
            .filter(|c| c.by == Controller::Central && c.target.is_light())
            .map(|c| CentralOverride {
                target: c.target.to_string(),
                level_percent: match c.want {
                    Want::Level { percent, .. } => Some(percent),
                    _ => None,
                },
                fade_s: match c.want {
                    Want::Level { fade_s, .. } => fade_s,
                    _ => None,
                },
                remaining: c.until.map(|u| u.saturating_sub(now)),
            })
            .collect()
    }

    /// What a new configuration's arbitration takes over across a reload (see
    /// [`Control::adopt`]).
    pub fn carry(&self) -> Carried {
        Carried {
            claims: self.claims.clone(),
            shown: self.shown.clone(),
            started: self.started,
        }
    }

    /// Takes over `c`: the claims `keep` accepts (in their order, holds unchanged, no command
    /// attached any more) and who was shown in charge, so the next sync reports only real
    /// changes as `control_changed`. Nothing counts as sent: every decided level and value is
    /// sent again once (the new equipment generation starts without them).
    pub fn adopt(&mut self, c: Carried, keep: impl Fn(&Controller, &Target) -> bool) {
        for mut claim in c.claims {
            if !keep(&claim.by, &claim.target) {
                continue;
            }
            self.know(&claim.target);
            self.seq += 1;
            claim.seq = self.seq;
            claim.fresh = false;
            claim.command = None;
            let (target, by) = (claim.target.clone(), claim.by.clone());
            self.claims.push(claim);
            self.touched(&target, &by);
        }
        self.prune_markers();
        self.shown = c
            .shown
            .into_iter()
            .filter(|(t, _)| self.known.contains(t))
            .collect();
        self.started = c.started;
        self.all_dirty = true;
    }

    /// The claims with a hold: `(target, controller, remaining)` at `now` (monotonic).
    pub fn holds(&self, now: Duration) -> Vec<(Target, Controller, Duration)> {
        self.claims
            .iter()
            .filter_map(|c| {
                c.until
                    .map(|u| (c.target.clone(), c.by.clone(), u.saturating_sub(now)))
            })
            .collect()
    }

    /// A one-shot `point.write` by `by` (a rule's `on_clear`): written unless a controller of
    /// higher precedence holds the point, without claiming it.
    pub fn write_once(
        &mut self,
        by: Controller,
        point: &str,
        value: cabinetd_modbus::Value,
        reason: String,
    ) -> Option<ActionOut> {
        let t = Target::Point(point.to_string());
        self.know(&t);
        if let Some(d) = self.decide(&t) {
            if d.by.rank() > by.rank() {
                return None;
            }
        }
        self.mark(&t);
        self.sent_value.insert(t, value);
        Some(ActionOut {
            action: Action::PointWrite {
                point: point.to_string(),
                value,
            },
            by,
            reason,
            command: None,
        })
    }

    fn programme_level(&self, t: &Target) -> Option<(f64, String)> {
        self.programme.as_ref()?;
        self.prog.get(t).cloned()
    }

    fn decide(&self, t: &Target) -> Option<Decision> {
        let mine = |c: &Claim| Decision {
            by: c.by.clone(),
            level: match c.want {
                Want::Level { percent, .. } | Want::Raise { percent } => Some(percent),
                _ => None,
            },
            value: match c.want {
                Want::Write(v) => Some(v),
                _ => None,
            },
            fade_s: match c.want {
                Want::Level { fade_s, .. } if c.target == *t => fade_s,
                _ => None,
            },
            reason: c.reason.clone(),
            command: c.command.clone().filter(|_| c.target == *t && c.fresh),
            fresh: c.fresh && c.target == *t,
        };
        let covering = || self.claims.iter().filter(|c| self.covers(&c.target, t));
        if !t.is_light() {
            return covering().max_by_key(|c| (c.by.rank(), c.seq)).map(mine);
        }
        let central = covering()
            .filter(|c| c.by == Controller::Central)
            .max_by_key(|c| (c.seq, c.target.specificity()));
        if let Some(c) = central.filter(|c| matches!(c.want, Want::Level { .. })) {
            return Some(mine(c));
        }
        let prog = self.programme_level(t);
        let other = covering()
            .filter(|c| c.by != Controller::Central)
            .filter(|c| match c.want {
                Want::Raise { percent } => prog.as_ref().is_none_or(|(p, _)| percent > *p),
                _ => true,
            })
            .max_by_key(|c| (c.by.rank(), c.seq, c.target.specificity()));
        if let Some(c) = other {
            return Some(mine(c));
        }
        prog.map(|(level, reason)| Decision {
            by: Controller::Programme,
            level: Some(level),
            value: None,
            fade_s: None,
            reason,
            command: None,
            fresh: false,
        })
    }

    /// Refreshes the programme's levels when due (or after a clock step / new target).
    fn refresh_programme(&mut self, wall: Timestamp) {
        let Some(p) = self.programme.as_ref() else {
            return;
        };
        let due = !self.prog_fresh || self.prog_next.is_some_and(|n| wall >= n);
        if self.frozen || !due {
            return;
        }
        let reasons = step_reasons(p, wall);
        let mut prog = BTreeMap::new();
        for t in self.known.iter().filter(|t| t.is_light()) {
            let Some(level) = t.to_light().and_then(|lt| p.level_at(&lt, wall)) else {
                continue;
            };
            let reason = reasons
                .iter()
                .filter(|(st, _, _)| covers(&self.groups, st, t))
                .max_by_key(|(st, at, _)| (*at, st.specificity()))
                .map_or_else(|| "programme".to_string(), |(_, _, r)| r.clone());
            prog.insert(t.clone(), (level, reason));
        }
        if prog != self.prog {
            self.prog = prog;
            self.actors.push((Target::All, Controller::Programme));
            self.all_dirty = true;
        }
        self.prog_next = p.next_change_after(wall).map(|(t, _)| t);
        self.prog_fresh = true;
    }

    /// Decides every known target at `now` and returns what to do: `control_changed` events and
    /// actions, in target order (see the module docs).
    pub fn sync(&mut self, now: Now) -> Vec<Output> {
        self.refresh_programme(now.wall);
        if !self.all_dirty && self.dirty.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut emitted: Vec<(Target, f64)> = Vec::new();
        let mut changes: Vec<(Target, Controller, Controller)> = Vec::new();
        // In target order, broadest first; a dirty target's covered targets are dirty too.
        let targets: Vec<Target> = if self.all_dirty {
            self.known.iter().cloned().collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        for t in &targets {
            let d = self.decide(t);
            let ctrl = d.as_ref().map_or(Controller::None, |d| d.by.clone());
            let prev = self.shown.insert(t.clone(), ctrl.clone());
            let changed = prev.as_ref() != Some(&ctrl);
            let let_go = changed && prev.as_ref().is_some_and(|p| p.rank() > ctrl.rank());
            if changed && self.started {
                if let Some(prev) = &prev {
                    // Implied by the same change of a target covering this one: not repeated
                    // for every member of a group.
                    let implied = changes
                        .iter()
                        .any(|(c, f, to)| f == prev && *to == ctrl && self.covers(c, t));
                    if !implied {
                        let by = self.actor(t).unwrap_or_else(|| ctrl.clone());
                        out.push(Output::Event(control_changed(t, prev, &ctrl, &by)));
                    }
                    changes.push((t.clone(), prev.clone(), ctrl.clone()));
                }
            }
            let Some(d) = d else { continue };
            let reason = match (&prev, let_go) {
                (Some(p), true) => format!("{p} let go; {}", d.reason),
                _ => d.reason.clone(),
            };
            let command = d.command.clone().or_else(|| {
                self.released_by
                    .iter()
                    .find(|(r, _)| self.covers(r, t))
                    .map(|(_, id)| id.clone())
            });
            if let Some(level) = d.level {
                let covered = emitted
                    .iter()
                    .any(|(e, l)| *l == level && self.covers(e, t));
                let need = self.sent_level.get(t) != Some(&level)
                    || d.fresh
                    || (let_go && prev.as_ref().is_some_and(|p| p.rank() >= 3) && !covered);
                if !need {
                    continue;
                }
                let fade_s = d.fade_s.or_else(|| self.fades.get(t).copied());
                for k in self.covered_by(t) {
                    self.sent_level.insert(k, level);
                }
                emitted.push((t.clone(), level));
                let Some(target) = t.to_light() else { continue };
                out.push(Output::Action(ActionOut {
                    action: Action::LightSet {
                        target,
                        level_percent: level,
                        fade_s,
                        hold_s: None,
                    },
                    by: d.by.clone(),
                    reason,
                    command: command.clone(),
                }));
            } else if let (Some(v), Target::Point(p)) = (d.value, t) {
                let need = self.sent_value.get(t) != Some(&v) || d.fresh || changed;
                if !need {
                    continue;
                }
                self.sent_value.insert(t.clone(), v);
                out.push(Output::Action(ActionOut {
                    action: Action::PointWrite {
                        point: p.clone(),
                        value: v,
                    },
                    by: d.by.clone(),
                    reason,
                    command: command.clone(),
                }));
            }
        }
        for c in &mut self.claims {
            c.fresh = false;
        }
        self.actors.clear();
        self.fades.clear();
        self.released_by.clear();
        self.dirty.clear();
        self.all_dirty = false;
        self.started = true;
        out
    }

    /// Who caused the last change touching `t` (a claim or release on a target overlapping it).
    fn actor(&self, t: &Target) -> Option<Controller> {
        self.actors
            .iter()
            .rev()
            .find(|(a, _)| self.covers(a, t) || self.covers(t, a))
            .map(|(_, by)| by.clone())
    }
}

/// The `control_changed` event (SPEC §3: data `{target, from, to}`, plus `by`: who caused it).
pub fn control_changed(
    t: &Target,
    from: &Controller,
    to: &Controller,
    by: &Controller,
) -> EventOut {
    EventOut {
        kind: crate::event::EventKind::ControlChanged,
        severity: Severity::Info,
        source: "cabinetd".into(),
        message: format!("{t}: {from} → {to}"),
        data: json!({
            "target": t.to_string(),
            "from": from.to_string(),
            "to": to.to_string(),
            "by": by.to_string(),
        }),
        by: None,
    }
}

/// `(step target, instant, reason)` of the steps of the nights around `wall` that are at or
/// before it, for naming why the programme wants a level.
fn step_reasons(p: &Programme, wall: Timestamp) -> Vec<(Target, Timestamp, String)> {
    let d0 = wall.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let mut out = Vec::new();
    for back in 0..3 {
        let Some(d) = d0.checked_sub(jiff::Span::new().days(back)).ok() else {
            continue;
        };
        for s in p.plan(d).steps {
            if s.at <= wall {
                out.push((Target::light(&s.target), s.at, s.reason));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
