//! Core tests with a fake clock: clock steps of ±6 h and to 1970, the mode and autonomous rules,
//! a central scene with a hold across a restart, usage-adaptive lighting, and a model test of
//! the persisted central overrides (set, hold, release, expiry, restart).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::rules::clock::MIN_PLAUSIBLE;
use crate::rules::testutil::config;

fn now(mono_s: u64, wall: &str) -> Now {
    Now {
        mono: Duration::from_secs(mono_s),
        wall: wall.parse().unwrap(),
    }
}

fn core(extra: &str, at: Now) -> Core {
    Core::new(&config(extra), at, true, MIN_PLAUSIBLE, None)
        .unwrap()
        .0
}

/// `(target, level/value, by)` of the actions, and the kinds of the events.
fn summary(out: &StepOut) -> (Vec<String>, Vec<String>) {
    let mut acts = Vec::new();
    let mut events = Vec::new();
    for o in &out.outputs {
        match o {
            Output::Action(a) => acts.push(format!("{} {} {}", a.target(), a.args(), a.by)),
            Output::Event(e) => events.push(e.kind.as_str().to_owned()),
        }
    }
    (acts, events)
}

const FIRE: &str = r#"
[[rule]]
name = "fire"
when = "w/door == true"
  [[rule.then]]
  action = "light.set"
  args = { target = "group:1", level_percent = 100 }
"#;

#[test]
fn clock_steps_replan_from_now_without_replaying_or_skipping() {
    // 18:00Z, before the 22:00 Paris step (21:00Z).
    let mut c = core("", now(0, "2026-12-21T18:00:00Z"));
    let (a, e) = summary(&c.step(now(0, "2026-12-21T18:00:00Z")));
    assert_eq!(a, vec![r#"all {"level_percent":100} programme"#]);
    assert!(e.is_empty());
    // +6 h step: 00:01Z, after 22:00 Paris: one action to the level of now, no replay.
    let (a, e) = summary(&c.step(now(60, "2026-12-22T00:01:00Z")));
    assert_eq!(a, vec![r#"all {"level_percent":70} programme"#]);
    assert_eq!(e, vec!["clock_jump"]);
    let jump = c.step(now(61, "2026-12-22T00:01:01Z"));
    assert!(jump.outputs.is_empty(), "{jump:?}");
    // −6 h back to the truth: the programme's level for 18:02Z again, once.
    let out = c.step(now(120, "2026-12-21T18:02:00Z"));
    let (a, e) = summary(&out);
    assert_eq!(a, vec![r#"all {"level_percent":100} programme"#]);
    assert_eq!(e, vec!["clock_jump"]);
    let Output::Event(ev) = &out.outputs[0] else {
        panic!()
    };
    assert_eq!(ev.data["offset_s"], json!(-21600.0));
    // The next wake-up is the 22:00 step (or the minute cap), not something in the past.
    assert_eq!(c.next_wakeup(now(120, "2026-12-21T18:02:00Z")), MAX_SLEEP);
    // From 03:00Z, a +6 h step passes 05:00 Paris and dawn: one action, the day's level.
    let mut c = core("", now(0, "2026-12-22T03:00:00Z"));
    let (a, _) = summary(&c.step(now(0, "2026-12-22T03:00:00Z")));
    assert_eq!(a, vec![r#"all {"level_percent":70} programme"#]);
    let (a, e) = summary(&c.step(now(30, "2026-12-22T09:00:30Z")));
    assert_eq!(a, vec![r#"all {"level_percent":0} programme"#]);
    assert_eq!(e, vec!["clock_jump"]);
}

#[test]
fn a_clock_reset_to_1970_holds_the_levels_but_local_reflexes_work() {
    let mut c = core(FIRE, now(0, "2026-12-21T20:50:00Z"));
    c.step(now(0, "2026-12-21T20:50:00Z"));
    // The RTC resets: untrusted, nothing from the programme (whose 22:00 step would be due).
    let (a, e) = summary(&c.step(now(60, "1970-01-01T00:00:00Z")));
    assert!(a.is_empty());
    assert_eq!(e, vec!["clock_jump", "clock_untrusted"]);
    assert!(!c.clock_trusted());
    let (a, e) = summary(&c.step(now(900, "1970-01-01T00:14:00Z")));
    assert!(a.is_empty() && e.is_empty());
    // A wake-up is never computed from the bogus wall clock.
    assert!(c.next_wakeup(now(900, "1970-01-01T00:14:00Z")) <= MAX_SLEEP);
    // The fire alarm still acts (no time window, monotonic time only).
    c.observe(
        "w/door",
        &json!(true),
        Quality::Good,
        Duration::from_secs(901),
    );
    let (a, e) = summary(&c.step(now(901, "1970-01-01T00:14:01Z")));
    assert_eq!(a, vec![r#"group:1 {"level_percent":100} rule:fire"#]);
    assert_eq!(e, vec!["rule_fired", "control_changed"]);
    // NTP sets the clock: a jump, and the programme's level for now (70 % after 22:00 Paris).
    let (a, e) = summary(&c.step(now(960, "2026-12-21T21:06:00Z")));
    assert_eq!(
        a,
        vec![
            r#"all {"level_percent":70} programme"#,
            r#"group:1 {"level_percent":100} rule:fire"#
        ]
    );
    assert_eq!(e, vec!["clock_jump"]);
    assert!(c.clock_trusted());
}

#[test]
fn autonomous_after_the_outage_and_back_nothing_replayed() {
    let rules = r#"
[uplink]
autonomous_after = "60s"
[[rule]]
name = "fallback"
mode = "autonomous"
when = 'mode == "autonomous"'
  [[rule.then]]
  action = "point.write"
  args = { point = "tc/plan", value = 1 }
"#;
    let t = |s: u64| {
        let w: Timestamp = "2026-12-21T10:00:00Z".parse().unwrap();
        Now {
            mono: Duration::from_secs(s),
            wall: w + SignedDuration::from_secs(s as i64),
        }
    };
    let mut c = core(rules, t(0));
    c.step(t(0));
    c.set_uplink(false, t(10));
    assert!(c.step(t(10)).outputs.is_empty());
    assert_eq!(c.next_wakeup(t(10)), Duration::from_secs(60));
    assert!(c.step(t(69)).outputs.is_empty());
    let (a, e) = summary(&c.step(t(70)));
    assert_eq!(a, vec![r#"tc/plan {"value":1} rule:fallback"#]);
    assert_eq!(e, vec!["mode_changed", "rule_fired", "control_changed"]);
    assert_eq!(c.mode(), Mode::Autonomous);
    assert!(c.step(t(80)).outputs.is_empty());
    c.set_uplink(true, t(100));
    let (a, e) = summary(&c.step(t(100)));
    // Back: the rule lets go, the register keeps its value, nothing is written again.
    assert!(a.is_empty());
    assert_eq!(e, vec!["mode_changed", "rule_fired", "control_changed"]);
    assert_eq!(c.controllers()["tc/plan"], "none");
}

const ROUTE: &str = r#"
[[scene]]
name = "route"
  [[scene.action]]
  action = "point.write"
  args = { point = "tc/plan", value = 7 }
  [[scene.action]]
  action = "light.set"
  args = { target = "group:2", level_percent = 100 }
"#;

fn evening(s: u64) -> Now {
    let w: Timestamp = "2026-12-21T22:00:00Z".parse().unwrap();
    Now {
        mono: Duration::from_secs(s),
        wall: w + SignedDuration::from_secs(s as i64),
    }
}

#[test]
fn a_central_scene_with_hold_survives_a_restart_and_reverts_at_its_deadline() {
    let mut c = core(ROUTE, evening(0));
    c.step(evening(0));
    let run = parse_command(
        "scene.run",
        json!({"scene": "route", "hold_s": 600})
            .as_object()
            .unwrap(),
    )
    .unwrap();
    c.command(run, Some("cmd-7".into()), evening(10)).unwrap();
    let out = c.step(evening(10));
    assert!(out.persist);
    let (a, e) = summary(&out);
    assert_eq!(
        a,
        vec![
            r#"group:2 {"level_percent":100} scene:route"#,
            r#"tc/plan {"value":7} scene:route"#
        ]
    );
    assert_eq!(e, vec!["control_changed", "control_changed"]);
    assert!(out.outputs.iter().all(|o| match o {
        Output::Action(a) => a.command.as_deref() == Some("cmd-7"),
        _ => true,
    }));
    // Restart at +300 s: the file round-trips, the scene keeps its wall-clock deadline.
    let saved = State::parse(&c.snapshot(evening(300)).render()).unwrap();
    assert_eq!(saved.scenes[0].runners[0].until, Some(evening(610).wall));
    let (mut c, notes) = Core::new(
        &config(ROUTE),
        Now {
            mono: Duration::ZERO,
            ..evening(400)
        },
        false,
        MIN_PLAUSIBLE,
        Some(&saved),
    )
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let after = |s: u64| Now {
        mono: Duration::from_secs(s - 400),
        wall: evening(s).wall,
    };
    let (a, e) = summary(&c.step(after(400)));
    // The restarted cabinet re-applies the scene's targets (its first step sets everything).
    assert!(
        a.contains(&r#"group:2 {"level_percent":100} scene:route"#.to_string()),
        "{a:?}"
    );
    assert!(
        a.contains(&r#"tc/plan {"value":7} scene:route"#.to_string()),
        "{a:?}"
    );
    assert!(e.is_empty());
    assert_eq!(c.next_wakeup(after(400)), Duration::from_secs(60));
    assert!(c
        .step(after(609))
        .outputs
        .iter()
        .all(|o| matches!(o, Output::Event(_))));
    let out = c.step(after(610));
    let (a, e) = summary(&out);
    assert_eq!(a, vec![r#"group:2 {"level_percent":70} programme"#]);
    assert_eq!(e, vec!["control_changed", "control_changed"]);
    assert_eq!(c.controllers()["tc/plan"], "none");
    assert!(out.persist);
    assert!(c.snapshot(after(610)).scenes.is_empty());
}

#[test]
fn rejected_commands_name_the_field() {
    let mut c = core(ROUTE, evening(0));
    let p = |n: &str, a: serde_json::Value| parse_command(n, a.as_object().unwrap());
    assert!(p("scene.run", json!({"scene": "route", "x": 1}))
        .unwrap_err()
        .contains("args.x"));
    assert!(p("scene.run", json!({"scene": "route", "hold_s": -1}))
        .unwrap_err()
        .contains("args.hold_s"));
    assert!(p("scene.release", json!({}))
        .unwrap_err()
        .contains("args.scene"));
    let e = c
        .command(
            p("scene.run", json!({"scene": "nope"})).unwrap(),
            None,
            evening(0),
        )
        .unwrap_err();
    assert!(e.contains("field `args.scene`"), "{e}");
    let e = c
        .command(
            p(
                "light.set",
                json!({"target": "bus-z/1", "level_percent": 5}),
            )
            .unwrap(),
            None,
            evening(0),
        )
        .unwrap_err();
    assert!(e.contains("field `args.target`"), "{e}");
    let e = c
        .command(
            p("point.write", json!({"point": "w/t", "value": 5})).unwrap(),
            None,
            evening(0),
        )
        .unwrap_err();
    assert!(e.contains("not writable"), "{e}");
}

#[test]
fn a_presence_burst_raises_holds_and_fades_back() {
    let extra = r#"
[[lighting.adaptive]]
name = "street"
target = "group:2"
usage = "w/h"
hold = "5min"
fade = "30s"
"#;
    let mut c = core(extra, evening(0));
    c.step(evening(0));
    // 22:00Z is after 22:00 Paris: the programme is at 70 %.
    c.observe("w/h", &json!(450), Quality::Good, Duration::from_secs(60));
    let (a, _) = summary(&c.step(evening(60)));
    assert_eq!(a, vec![r#"group:2 {"level_percent":75} adaptive:street"#]);
    c.observe("w/h", &json!(0), Quality::Good, Duration::from_secs(120));
    assert!(summary(&c.step(evening(120))).0.is_empty());
    assert_eq!(c.next_wakeup(evening(120)), Duration::from_secs(60));
    assert!(summary(&c.step(evening(359))).0.is_empty());
    let (a, _) = summary(&c.step(evening(360)));
    assert_eq!(
        a,
        vec![r#"group:2 {"fade_s":30,"level_percent":70} programme"#]
    );
}

// ---------------------------------------------------------------------------------------------
// Model test of the central overrides and their persistence.

#[derive(Debug, Clone)]
enum Op {
    Set(usize, u8, Option<u64>),
    Release(usize),
    Advance(u64),
    Restart,
}

const TARGETS: [&str; 6] = ["all", "group:1", "group:2", "bus-a/1", "bus-a/4", "bus-a/7"];

fn covers(a: &str, b: &str) -> bool {
    match (a, b) {
        ("all", _) => true,
        ("group:1", "group:1") | ("group:2", "group:2") => true,
        ("group:1", g) => ["bus-a/0", "bus-a/1", "bus-a/2", "bus-a/3"].contains(&g),
        ("group:2", g) => ["bus-a/4", "bus-a/5"].contains(&g),
        _ => a == b,
    }
}

/// The model: active central commands, oldest first: (target, level or release, until second).
#[derive(Default)]
struct Model {
    entries: Vec<(&'static str, Option<u8>, Option<u64>)>,
}

impl Model {
    fn prune(&mut self) {
        let levels: Vec<&str> = self
            .entries
            .iter()
            .filter(|e| e.1.is_some())
            .map(|e| e.0)
            .collect();
        self.entries
            .retain(|e| e.1.is_some() || levels.iter().any(|l| covers(l, e.0)));
    }

    fn central(&self, t: &str) -> Option<u8> {
        self.entries
            .iter()
            .rev()
            .find(|e| covers(e.0, t))
            .and_then(|e| e.1)
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..TARGETS.len(), 0u8..=100, proptest::option::of(1u64..120))
            .prop_map(|(t, l, h)| Op::Set(t, l, h)),
        (0..TARGETS.len()).prop_map(Op::Release),
        (1u64..90).prop_map(Op::Advance),
        Just(Op::Restart),
    ]
}

proptest! {
    #[test]
    fn central_overrides_match_the_model_across_restarts(ops in proptest::collection::vec(op(), 1..40)) {
        let cfg = config("");
        let t0: Timestamp = "2026-12-21T22:00:00Z".parse().unwrap();
        let mut secs = 0u64;
        let mut boot = 0u64;
        let at = |secs: u64, boot: u64| Now {
            mono: Duration::from_secs(secs - boot),
            wall: t0 + SignedDuration::from_secs(secs as i64),
        };
        let mut c = Core::new(&cfg, at(0, 0), true, MIN_PLAUSIBLE, None).unwrap().0;
        c.step(at(0, 0));
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Set(t, level, hold) => {
                    let target = crate::light::parse_target(TARGETS[t]).unwrap();
                    let action = RuleAction::Command(Action::LightSet {
                        target,
                        level_percent: f64::from(level),
                        fade_s: None,
                        hold_s: hold.map(|h| h as f64),
                    });
                    c.command(action, None, at(secs, boot)).unwrap();
                    m.entries.retain(|e| !covers(TARGETS[t], e.0));
                    m.entries.push((TARGETS[t], Some(level), hold.map(|h| secs + h)));
                }
                Op::Release(t) => {
                    let target = crate::light::parse_target(TARGETS[t]).unwrap();
                    c.command(RuleAction::Command(Action::LightRelease { target }), None, at(secs, boot)).unwrap();
                    m.entries.retain(|e| !covers(TARGETS[t], e.0));
                    if m.entries.iter().any(|e| e.1.is_some() && covers(e.0, TARGETS[t])) {
                        m.entries.push((TARGETS[t], None, None));
                    }
                }
                Op::Advance(s) => {
                    secs += s;
                    m.entries.retain(|e| e.2.is_none_or(|u| u > secs));
                }
                Op::Restart => {
                    let text = c.snapshot(at(secs, boot)).render();
                    let saved = State::parse(&text).unwrap();
                    boot = secs;
                    c = Core::new(&cfg, at(secs, boot), true, MIN_PLAUSIBLE, Some(&saved)).unwrap().0;
                }
            }
            m.prune();
            c.step(at(secs, boot));
            for t in TARGETS.iter().chain(&["bus-a/0", "bus-a/5"]) {
                let target = Target::light(&crate::light::parse_target(t).unwrap());
                let real = match c.decision(&target) {
                    Some((Controller::Central, Some(l))) => Some(l as u8),
                    _ => None,
                };
                prop_assert_eq!(real, m.central(t), "target {} at {}s", t, secs);
            }
        }
    }
}

/// A reload: what must not be lost is carried over (mode, the outage, central overrides and
/// their holds, an entered rule that did not change, who is shown in charge); a rule that
/// changed starts again from cleared without firing; everything decided is sent again once.
#[test]
fn a_reload_carries_over_mode_overrides_holds_and_unchanged_rules() {
    let auto = "[uplink]\nautonomous_after = \"60s\"\n";
    let other = r#"
[[rule]]
name = "other"
when = "w/t > 10"
  [[rule.then]]
  action = "light.set"
  args = { target = "group:2", level_percent = 10 }
"#;
    let cfg = config(&format!("{auto}{FIRE}{other}"));
    let t0 = now(0, "2026-12-21T18:00:00Z");
    let mut c = Core::new(&cfg, t0, true, MIN_PLAUSIBLE, None).unwrap().0;
    c.step(t0);
    c.set_uplink(false, now(1, "2026-12-21T18:00:01Z"));
    c.observe(
        "w/door",
        &json!(true),
        Quality::Good,
        Duration::from_secs(2),
    );
    c.observe("w/t", &json!(20), Quality::Good, Duration::from_secs(2));
    let set = RuleAction::Command(Action::LightSet {
        target: LightTarget::Gear {
            bus: "bus-a".into(),
            address: 6,
        },
        level_percent: 20.0,
        fade_s: None,
        hold_s: Some(300.0),
    });
    c.command(set, Some("c1".into()), now(2, "2026-12-21T18:00:02Z"))
        .unwrap();
    c.step(now(2, "2026-12-21T18:00:02Z"));
    assert_eq!(c.controllers()["group:1"], "rule:fire");
    assert_eq!(c.controllers()["group:2"], "rule:other");
    // The new configuration: `other` changed (its level), `fire` did not; a new poll period
    // somewhere else.
    let cfg2 = config(&format!("{auto}{FIRE}{}", other.replace("10 }", "15 }")));
    let at = now(30, "2026-12-21T18:00:30Z");
    let (mut n, notes) = c.reconfigure(&cfg2, at).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("rule other changed")),
        "{notes:?}"
    );
    let out = n.step(at);
    let (acts, _) = summary(&out);
    // The unchanged rule does not fire again; the changed one ends, then enters anew from the
    // last readings with its new level.
    let fired: Vec<serde_json::Value> = out
        .outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) if e.kind == EventKind::RuleFired => Some(e.data.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        fired,
        vec![
            json!({"rule": "other", "state": "cleared"}),
            json!({"rule": "other", "state": "entered"})
        ]
    );
    assert_eq!(n.controllers()["group:1"], "rule:fire");
    assert_eq!(n.controllers()["bus-a/6"], "central");
    assert_eq!(n.controllers()["group:2"], "rule:other");
    // Everything decided is sent again once to the new equipment (group 1's 100 % by the
    // broadcast that carries the same level).
    assert!(
        acts.iter()
            .any(|a| a.starts_with("all {\"level_percent\":100}")),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| a.starts_with("bus-a/6 {\"level_percent\":20}")),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| a.starts_with("group:2 {\"level_percent\":15}")),
        "{acts:?}"
    );
    assert!(out.persist, "the state file is written after a reload");
    // The outage keeps counting from its start: autonomous at 61 s, not 90 s.
    let (_, e) = summary(&n.step(now(61, "2026-12-21T18:01:01Z")));
    assert_eq!(e, vec!["mode_changed"]);
    // The hold keeps its deadline: 300 s after 18:00:02.
    let holds = n.holds(now(100, "2026-12-21T18:01:40Z"));
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].2, Duration::from_secs(202));
    // A reload that removes the rule ends it and lets go of group 2.
    let at = now(110, "2026-12-21T18:01:50Z");
    let (mut m, _) = n
        .reconfigure(&config(&format!("{auto}{FIRE}")), at)
        .unwrap();
    let out = m.step(at);
    let cleared = out.outputs.iter().any(|o| {
        matches!(o, Output::Event(e) if e.kind == EventKind::RuleFired && e.data["state"] == "cleared")
    });
    assert!(cleared, "{out:?}");
    assert_eq!(m.controllers()["group:2"], "programme");
}
