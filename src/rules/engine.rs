//! The rules engine: pure (no clock, no tokio, no I/O), driven with explicit time like
//! [`crate::lighting::Programme`].
//!
//! Per rule, a level state with edge actions: `Cleared | Pending { since } | Entered { at }`.
//! - `when` is a level on the point table. Cleared → Pending when the rule is armed and `when`
//!   holds; Pending → Entered once it has held for `for`; Pending → Cleared as soon as it stops
//!   holding or the rule is disarmed (`for` delays entry only).
//! - Entered → Cleared at the first evaluation where `when` does not hold — or, with
//!   `clear_when` (hysteresis), once `clear_when` holds (for `clear_for` if given) — or where the
//!   rule is disarmed (`mode` or `during`/`weekdays` no longer apply).
//! - Each Entered and each Cleared is one [`Transition`]: the caller runs `then` / `on_clear`
//!   and raises `rule_fired` once per transition. A rule makes at most one transition per
//!   [`Engine::step`], and the engine never reads its own outputs, so nothing here can loop;
//!   loops through the equipment (an action that changes a rule's input) are refused at load
//!   (`graph.rs`).
//! - A rule cleared by `clear_when` re-enters only after `when` has been seen not holding: when
//!   the two conditions overlap (a configuration mistake), the rule would otherwise enter and
//!   clear on every reading.
//!
//! Time: `for` and `clear_for` run on monotonic time, windows on wall time; both are passed in
//! ([`Now`]), so a wall-clock step can neither shorten nor lengthen a `for`. While the wall
//! clock is untrusted ([`Engine::step`]'s `wall_trusted`), window states are frozen as they
//! were; a rule with a window starts disarmed until the clock is first trusted.
//!
//! Start-up (unlike Home Assistant's edge triggers, on purpose): every rule starts Cleared, and a
//! condition that already holds enters after `for` counted from the first good readings. A rule
//! claims targets while entered and nothing remembers the claim across a restart, so the
//! restarted cabinet must re-derive it; non-good or missing points make comparisons unknown
//! (`expr.rs`), so missing data never enters a rule.
//!
//! Inputs: the engine reads every poll's reading, before report by exception (`report.rs`
//! deadbands). Deadbands save uplink bandwidth; as control thresholds they would add up to a
//! heartbeat of latency to a reflex and hide a crossing within the band. Unchanged readings are
//! dropped by [`Engine::observe`], so polling fast costs a hash lookup per reading. Hysteresis
//! belongs to the rule (`clear_when`). Should field data flap across a threshold, the SPEC
//! addition to propose is a clear delay without `clear_when` (today `clear_for` needs it).
//!
//! Determinism: rules are evaluated in configuration order, state is in vectors and ordered
//! sets, and the same inputs at the same times give the same transitions.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use jiff::Timestamp;

use super::expr::{eval, Node, Sample};
use super::mode::Mode;
use super::window::{Sky, Window, RECHECK};
use super::Now;
use crate::config::{Rule, RuleMode};

/// Where a rule is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// Not entered.
    Cleared,
    /// `when` holds since `since` (monotonic); entry once it has held for `for`.
    Pending {
        /// When it started holding.
        since: Duration,
    },
    /// Entered at `at` (monotonic).
    Entered {
        /// Entry time.
        at: Duration,
        /// Since when `clear_when` holds (with `clear_for`).
        clearing_since: Option<Duration>,
    },
}

/// Why a rule cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearCause {
    /// `when` stopped holding.
    Condition,
    /// `clear_when` held (for `clear_for`).
    ClearWhen,
    /// `mode`, `during` or `weekdays` no longer apply.
    Disarmed,
}

/// A rule's state carried across a reload ([`Engine::carry`], [`Engine::adopt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleCarry {
    state: RuleState,
    open: bool,
    rearm: bool,
}

impl RuleCarry {
    /// The carried state.
    pub fn state(&self) -> RuleState {
        self.state
    }
}

/// A rule entered or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Index of the rule (configuration order).
    pub rule: usize,
    /// `None`: entered; `Some(cause)`: cleared.
    pub cleared: Option<ClearCause>,
}

#[derive(Debug, Clone)]
struct RuleRt {
    name: String,
    when: Node<u32>,
    clear_when: Option<Node<u32>>,
    for_: Duration,
    clear_for: Duration,
    mode: RuleMode,
    window: Window,
    open: bool,
    state: RuleState,
    timer: Option<Duration>,
    rearm: bool,
}

/// The rules of a configuration and their states.
#[derive(Debug, Clone)]
pub struct Engine {
    rules: Vec<RuleRt>,
    ids: HashMap<String, u32>,
    samples: Vec<Sample>,
    readers: Vec<Vec<u32>>,
    mode_readers: Vec<u32>,
    windowed: Vec<u32>,
    dirty: Vec<bool>,
    dirty_list: Vec<u32>,
    timers: BTreeSet<(Duration, u32)>,
    mode: Mode,
    window_next: Option<Timestamp>,
    windows_fresh: bool,
    sky: Sky,
}

impl Engine {
    /// The engine of `rules` (validated config), every rule Cleared, mode `connected`.
    pub fn new(rules: &[Rule], sky: Sky) -> Engine {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut readers: Vec<Vec<u32>> = Vec::new();
        let mut mode_readers = Vec::new();
        let mut windowed = Vec::new();
        let mut rts = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let i = i as u32;
            let mut id_of = |p: &str| {
                let next = ids.len() as u32;
                let id = *ids.entry(p.to_string()).or_insert(next);
                if id as usize == readers.len() {
                    readers.push(Vec::new());
                }
                if readers[id as usize].last() != Some(&i) {
                    readers[id as usize].push(i);
                }
                id
            };
            let when = r.when.compile(&mut id_of);
            let clear_when = r.clear_when.as_ref().map(|c| c.compile(&mut id_of));
            let reads_mode = r.when.reads_mode()
                || r.clear_when.as_ref().is_some_and(|c| c.reads_mode())
                || r.mode != RuleMode::Always;
            if reads_mode {
                mode_readers.push(i);
            }
            let window = Window {
                during: r.during,
                weekdays: r.weekdays,
            };
            if !window.is_always() {
                windowed.push(i);
            }
            rts.push(RuleRt {
                name: r.name.clone(),
                when,
                clear_when,
                for_: r.for_,
                clear_for: r.clear_for,
                mode: r.mode,
                open: window.is_always(),
                window,
                state: RuleState::Cleared,
                timer: None,
                rearm: false,
            });
        }
        let n = rts.len();
        Engine {
            rules: rts,
            samples: vec![Sample::NONE; ids.len()],
            ids,
            readers,
            mode_readers,
            windowed,
            // Every rule is evaluated at the first step (a rule on `mode` alone may hold at once).
            dirty: vec![true; n],
            dirty_list: (0..n as u32).collect(),
            timers: BTreeSet::new(),
            mode: Mode::Connected,
            window_next: None,
            windows_fresh: false,
            sky,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True without rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The name of rule `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.rules[i].name
    }

    /// The state of rule `i`.
    pub fn state(&self, i: usize) -> RuleState {
        self.rules[i].state
    }

    /// The state of rule `i` to carry into another engine (a reload).
    pub fn carry(&self, i: usize) -> RuleCarry {
        let r = &self.rules[i];
        RuleCarry {
            state: r.state,
            open: r.open,
            rearm: r.rearm,
        }
    }

    /// Rule `i` takes over a carried state (the same rule in the previous configuration); it
    /// is evaluated again at the next step, so its timers follow.
    pub fn adopt(&mut self, i: usize, c: RuleCarry) {
        let r = &mut self.rules[i];
        r.state = c.state;
        r.open = c.open;
        r.rearm = c.rearm;
        self.mark(i as u32);
    }

    /// Every point read and its last sample (to carry across a reload).
    pub fn samples(&self) -> Vec<(String, Sample)> {
        self.ids
            .iter()
            .map(|(p, id)| (p.clone(), self.samples[*id as usize]))
            .collect()
    }

    /// The points the rules read.
    pub fn points(&self) -> impl Iterator<Item = &String> {
        self.ids.keys()
    }

    /// Whether some rule reads `point`.
    pub fn reads(&self, point: &str) -> bool {
        self.ids.contains_key(point)
    }

    fn mark(&mut self, i: u32) {
        if !self.dirty[i as usize] {
            self.dirty[i as usize] = true;
            self.dirty_list.push(i);
        }
    }

    /// A reading of `point`; returns whether it changed what a rule sees (the rules reading it
    /// are then evaluated at the next [`Engine::step`]).
    pub fn observe(&mut self, point: &str, sample: Sample) -> bool {
        let Some(&id) = self.ids.get(point) else {
            return false;
        };
        let slot = &mut self.samples[id as usize];
        if *slot == sample {
            return false;
        }
        *slot = sample;
        for k in 0..self.readers[id as usize].len() {
            let r = self.readers[id as usize][k];
            self.mark(r);
        }
        true
    }

    /// The cabinet's mode changed.
    pub fn set_mode(&mut self, mode: Mode) {
        if mode == self.mode {
            return;
        }
        self.mode = mode;
        for k in 0..self.mode_readers.len() {
            let r = self.mode_readers[k];
            self.mark(r);
        }
    }

    /// The wall clock stepped: windows are evaluated again from the new time at the next step.
    pub fn replan(&mut self) {
        self.windows_fresh = false;
    }

    /// Evaluates what changed or fell due at `now`; returns the transitions in configuration
    /// order. `wall_trusted = false` freezes window states (see the module docs).
    pub fn step(&mut self, now: Now, wall_trusted: bool) -> Vec<Transition> {
        if wall_trusted && (!self.windows_fresh || self.window_next.is_some_and(|n| now.wall >= n))
        {
            self.windows_fresh = true;
            let mut next: Option<Timestamp> = None;
            for k in 0..self.windowed.len() {
                let i = self.windowed[k];
                let (open, n) = self.rules[i as usize].window.state(&self.sky, now.wall);
                let n = n.unwrap_or(now.wall + RECHECK);
                next = Some(next.map_or(n, |m| m.min(n)));
                if open != self.rules[i as usize].open {
                    self.rules[i as usize].open = open;
                    self.mark(i);
                }
            }
            self.window_next = next;
        }
        while let Some(&(at, i)) = self.timers.first() {
            if at > now.mono {
                break;
            }
            self.timers.pop_first();
            self.rules[i as usize].timer = None;
            self.mark(i);
        }
        let mut list = std::mem::take(&mut self.dirty_list);
        list.sort_unstable();
        let mut out = Vec::new();
        for &i in &list {
            self.dirty[i as usize] = false;
            let rule = &mut self.rules[i as usize];
            let (fired, timer) = evaluate(rule, &self.samples, self.mode, now.mono);
            if rule.timer != timer {
                if let Some(t) = rule.timer {
                    self.timers.remove(&(t, i));
                }
                if let Some(t) = timer {
                    self.timers.insert((t, i));
                }
                rule.timer = timer;
            }
            if let Some(cleared) = fired {
                out.push(Transition {
                    rule: i as usize,
                    cleared,
                });
            }
        }
        list.clear();
        self.dirty_list = list;
        out
    }

    /// The next monotonic deadline (`for`, `clear_for`) and the next wall-clock boundary of a
    /// window, if any.
    pub fn next_deadline(&self) -> (Option<Duration>, Option<Timestamp>) {
        (self.timers.first().map(|(t, _)| *t), self.window_next)
    }
}

/// One evaluation of `r` at `now`: `(transition, timer)`. The transition is `Some(None)` for an
/// entry, `Some(Some(cause))` for a clear; the timer is when the rule must be evaluated again
/// even without a change.
fn evaluate(
    r: &mut RuleRt,
    samples: &[Sample],
    mode: Mode,
    now: Duration,
) -> (Option<Option<ClearCause>>, Option<Duration>) {
    let get = |id: &u32| samples[*id as usize];
    let mode_ok = match r.mode {
        RuleMode::Always => true,
        RuleMode::Autonomous => mode == Mode::Autonomous,
        RuleMode::Connected => mode == Mode::Connected,
    };
    let armed = mode_ok && r.open;
    let holds = eval(&r.when, &get, mode) == Some(true);
    if !holds {
        r.rearm = false;
    }
    match r.state {
        RuleState::Cleared => {
            if !(armed && holds) || r.rearm {
                return (None, None);
            }
            if r.for_.is_zero() {
                r.state = RuleState::Entered {
                    at: now,
                    clearing_since: None,
                };
                return (Some(None), clearing_timer(r, samples, mode, now));
            }
            r.state = RuleState::Pending { since: now };
            (None, Some(now + r.for_))
        }
        RuleState::Pending { since } => {
            if !(armed && holds) {
                r.state = RuleState::Cleared;
                return (None, None);
            }
            if now.saturating_sub(since) < r.for_ {
                return (None, Some(since + r.for_));
            }
            r.state = RuleState::Entered {
                at: now,
                clearing_since: None,
            };
            (Some(None), clearing_timer(r, samples, mode, now))
        }
        RuleState::Entered { .. } => {
            if !armed {
                r.state = RuleState::Cleared;
                return (Some(Some(ClearCause::Disarmed)), None);
            }
            if r.clear_when.is_none() {
                if holds {
                    return (None, None);
                }
                r.state = RuleState::Cleared;
                return (Some(Some(ClearCause::Condition)), None);
            }
            match clearing_timer(r, samples, mode, now) {
                Some(t) if t <= now => {
                    r.state = RuleState::Cleared;
                    r.rearm = holds;
                    (Some(Some(ClearCause::ClearWhen)), None)
                }
                t => (None, t),
            }
        }
    }
}

/// For an entered rule with `clear_when`: updates `clearing_since` and returns when it clears
/// (`<= now`: now).
fn clearing_timer(
    r: &mut RuleRt,
    samples: &[Sample],
    mode: Mode,
    now: Duration,
) -> Option<Duration> {
    let get = |id: &u32| samples[*id as usize];
    let RuleState::Entered { at, .. } = r.state else {
        return None;
    };
    let cw = r.clear_when.as_ref()?;
    let clearing = eval(cw, &get, mode) == Some(true);
    let since = match (clearing, r.state) {
        (false, _) => None,
        (
            true,
            RuleState::Entered {
                clearing_since: Some(s),
                ..
            },
        ) => Some(s),
        (true, _) => Some(now),
    };
    r.state = RuleState::Entered {
        at,
        clearing_since: since,
    };
    since.map(|s| s + r.clear_for)
}

#[cfg(test)]
mod tests;
