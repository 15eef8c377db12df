//! Arbitration tests: precedence per target, broad and narrow claims, release markers, points,
//! raises, and the outputs of `sync`.

use super::*;
use crate::rules::testutil::{config, evening};
use crate::rules::window::Sky;

fn control() -> Control {
    let cfg = config("");
    let sky = Sky::new(&cfg).unwrap();
    Control::new(&cfg, sky.programme().clone())
}

fn gear(a: u8) -> Target {
    Target::Gear("bus-a".into(), a)
}

fn rule(n: &str) -> Controller {
    Controller::Rule(n.into())
}

fn scene(n: &str) -> Controller {
    Controller::Scene(n.into())
}

fn level(p: f64) -> Want {
    Want::Level {
        percent: p,
        fade_s: None,
    }
}

/// The actions of `out` as `(target, level or value, by)`.
fn actions(out: &[Output]) -> Vec<(String, String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Action(a) => Some((
                a.target(),
                match &a.action {
                    Action::LightSet { level_percent, .. } => level_percent.to_string(),
                    Action::PointWrite { value, .. } => value_json(*value).to_string(),
                    _ => String::new(),
                },
                a.by.to_string(),
            )),
            _ => None,
        })
        .collect()
}

fn changes(out: &[Output]) -> Vec<(String, String, String)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) if e.kind == "control_changed" => Some((
                e.data["target"].as_str().unwrap().to_string(),
                e.data["from"].as_str().unwrap().to_string(),
                e.data["to"].as_str().unwrap().to_string(),
            )),
            _ => None,
        })
        .collect()
}

fn s(a: &str, b: &str, c: &str) -> (String, String, String) {
    (a.into(), b.into(), c.into())
}

#[test]
fn the_first_sync_applies_the_programme_broad_to_narrow_without_events() {
    let mut c = control();
    let out = c.sync(evening(0));
    assert_eq!(actions(&out), vec![s("all", "100", "programme")]);
    assert!(changes(&out).is_empty());
    assert_eq!(c.controller(&Target::Group(1)), Controller::Programme);
    assert_eq!(
        c.controller(&Target::Point("tc/plan".into())),
        Controller::None
    );
    // Nothing changed: nothing to do.
    assert!(c.sync(evening(1)).is_empty());
}

#[test]
fn precedence_per_target_and_release_to_the_next_controller() {
    let mut c = control();
    c.sync(evening(0));
    c.claim(
        rule("r"),
        Target::Group(1),
        level(50.0),
        None,
        "r".into(),
        None,
    );
    let out = c.sync(evening(1));
    assert_eq!(actions(&out), vec![s("group:1", "50", "rule:r")]);
    // One event for the group, not one per member.
    assert_eq!(changes(&out), vec![s("group:1", "programme", "rule:r")]);
    c.claim(
        scene("x"),
        Target::Group(1),
        level(100.0),
        None,
        "x".into(),
        None,
    );
    c.claim(
        Controller::Central,
        gear(2),
        level(10.0),
        None,
        "c".into(),
        Some("cmd-1".into()),
    );
    let out = c.sync(evening(2));
    assert_eq!(
        actions(&out),
        vec![
            s("group:1", "100", "scene:x"),
            s("bus-a/2", "10", "central")
        ]
    );
    let cmd = out.iter().find_map(|o| match o {
        Output::Action(a) if a.command.is_some() => Some(a.command.clone().unwrap()),
        _ => None,
    });
    assert_eq!(cmd.as_deref(), Some("cmd-1"));
    // The scene lets go: the rule is next (its value re-applied), the central gear stays.
    c.release_all(&scene("x"));
    let out = c.sync(evening(3));
    assert_eq!(
        actions(&out),
        vec![s("group:1", "50", "rule:r"), s("bus-a/2", "10", "central")]
    );
    c.release(&rule("r"), &Target::Group(1), None);
    c.release(&Controller::Central, &gear(2), None);
    let out = c.sync(evening(4));
    assert_eq!(actions(&out), vec![s("group:1", "100", "programme")]);
    assert_eq!(c.controller(&gear(2)), Controller::Programme);
}

#[test]
fn a_broad_claim_is_followed_by_the_narrower_ones_it_overwrote() {
    let mut c = control();
    c.sync(evening(0));
    c.claim(scene("x"), gear(3), level(20.0), None, "x".into(), None);
    c.sync(evening(1));
    c.claim(rule("r"), Target::All, level(60.0), None, "r".into(), None);
    let out = c.sync(evening(2));
    // The scene keeps bus-a/3 against the rule's all: re-sent right after the broadcast.
    assert_eq!(
        actions(&out),
        vec![s("all", "60", "rule:r"), s("bus-a/3", "20", "scene:x")]
    );
    // Same precedence: the newer claim wins, the more specific at equal age.
    c.claim(rule("q"), gear(5), level(5.0), None, "q".into(), None);
    c.sync(evening(3));
    c.claim(rule("r"), Target::All, level(61.0), None, "r".into(), None);
    let out = c.sync(evening(4));
    assert_eq!(
        actions(&out),
        vec![s("all", "61", "rule:r"), s("bus-a/3", "20", "scene:x")]
    );
    assert_eq!(c.controller(&gear(5)), rule("r"));
}

#[test]
fn releasing_part_of_a_central_override_leaves_the_rest() {
    let mut c = control();
    c.sync(evening(0));
    c.claim(
        Controller::Central,
        Target::All,
        level(30.0),
        None,
        "c".into(),
        None,
    );
    c.sync(evening(1));
    c.release(&Controller::Central, &Target::Group(1), None);
    c.attribute(Target::Group(1), "cmd-2".into());
    let out = c.sync(evening(2));
    assert_eq!(actions(&out), vec![s("group:1", "100", "programme")]);
    assert!(
        matches!(&out.last(), Some(Output::Action(a)) if a.command.as_deref() == Some("cmd-2"))
    );
    assert_eq!(c.controller(&Target::All), Controller::Central);
    assert_eq!(c.controller(&gear(4)), Controller::Central);
    assert_eq!(c.controller(&gear(1)), Controller::Programme);
    // A new central set on a member wins over the marker.
    c.claim(
        Controller::Central,
        gear(1),
        level(90.0),
        None,
        "c".into(),
        None,
    );
    assert_eq!(
        actions(&c.sync(evening(3))),
        vec![s("bus-a/1", "90", "central")]
    );
    // Releasing all removes everything central.
    c.release(&Controller::Central, &Target::All, None);
    let out = c.sync(evening(4));
    assert_eq!(
        actions(&out),
        vec![s("all", "100", "programme")],
        "{out:#?}"
    );
    assert!(c.central(Duration::ZERO).is_empty());
}

#[test]
fn holds_expire_and_the_programme_comes_back() {
    let mut c = control();
    c.sync(evening(0));
    c.claim(
        Controller::Central,
        Target::Group(2),
        level(40.0),
        Some(Duration::from_secs(60)),
        "c".into(),
        None,
    );
    c.sync(evening(1));
    assert_eq!(c.next_deadline().0, Some(Duration::from_secs(60)));
    c.expire(Duration::from_secs(59));
    assert!(c.sync(evening(59)).is_empty());
    c.expire(Duration::from_secs(60));
    let out = c.sync(evening(60));
    assert_eq!(actions(&out), vec![s("group:2", "100", "programme")]);
    assert_eq!(changes(&out), vec![s("group:2", "central", "programme")]);
}

#[test]
fn points_claimed_one_shot_and_left_alone() {
    let mut c = control();
    let plan = Target::Point("tc/plan".into());
    let v = |x: i64| Want::Write(cabinetd_modbus::Value::Int(x));
    c.sync(evening(0));
    c.claim(rule("fallback"), plan.clone(), v(1), None, "r".into(), None);
    assert_eq!(
        actions(&c.sync(evening(1))),
        vec![s("tc/plan", "1", "rule:fallback")]
    );
    // A central write wins at once…
    c.claim(
        Controller::Central,
        plan.clone(),
        v(3),
        None,
        "c".into(),
        None,
    );
    assert_eq!(
        actions(&c.sync(evening(2))),
        vec![s("tc/plan", "3", "central")]
    );
    // …until the point's claims change: a scene takes it, and when the scene goes the rule is
    // back in charge with its value.
    c.claim(scene("route"), plan.clone(), v(7), None, "s".into(), None);
    assert_eq!(
        actions(&c.sync(evening(3))),
        vec![s("tc/plan", "7", "scene:route")]
    );
    c.release_all(&scene("route"));
    assert_eq!(
        actions(&c.sync(evening(4))),
        vec![s("tc/plan", "1", "rule:fallback")]
    );
    // Nobody left: the point keeps its value, controller none, nothing written.
    c.release_all(&rule("fallback"));
    let out = c.sync(evening(5));
    assert!(actions(&out).is_empty());
    assert_eq!(changes(&out), vec![s("tc/plan", "rule:fallback", "none")]);
    // A one-shot write under a scene is refused; with nobody in charge it is written.
    c.claim(scene("route"), plan.clone(), v(7), None, "s".into(), None);
    c.sync(evening(6));
    let lower = rule("x");
    assert!(c
        .write_once(
            lower.clone(),
            "tc/plan",
            cabinetd_modbus::Value::Int(2),
            "x".into()
        )
        .is_none());
    c.release_all(&scene("route"));
    c.sync(evening(7));
    assert!(c
        .write_once(lower, "tc/plan", cabinetd_modbus::Value::Int(2), "x".into())
        .is_some());
}

#[test]
fn a_raise_wins_only_above_the_programme() {
    let mut c = control();
    let ad = Controller::Adaptive("a".into());
    c.sync(evening(0));
    // The programme is at 100 % before 22:00: a 75 % raise changes nothing.
    c.claim(
        ad.clone(),
        Target::Group(2),
        Want::Raise { percent: 75.0 },
        None,
        "a".into(),
        None,
    );
    assert!(actions(&c.sync(evening(1))).is_empty());
    assert_eq!(c.controller(&Target::Group(2)), Controller::Programme);
    // After 22:00 Paris (21:00Z) the programme says 70 %: the raise takes over, group 2 stays at 75.
    let late = evening(3 * 3600 + 60);
    let out = c.sync(late);
    assert_eq!(
        actions(&out),
        vec![
            s("all", "70", "programme"),
            s("group:2", "75", "adaptive:a")
        ]
    );
    c.release(&ad, &Target::Group(2), Some(30.0));
    let out = c.sync(late);
    assert_eq!(actions(&out), vec![s("group:2", "70", "programme")]);
    assert!(
        matches!(&out.last(), Some(Output::Action(ActionOut { action: Action::LightSet { fade_s: Some(f), .. }, .. })) if *f == 30.0)
    );
}

#[test]
fn controllers_round_trip_their_names() {
    for c in [
        Controller::None,
        Controller::Programme,
        Controller::Central,
        rule("a"),
        scene("b"),
        Controller::Adaptive("c".into()),
    ] {
        assert_eq!(Controller::parse(&c.to_string()), Some(c));
    }
    assert!(Controller::Central.rank() > scene("x").rank());
    assert!(scene("x").rank() > rule("x").rank());
    assert!(rule("x").rank() > Controller::Adaptive("x".into()).rank());
    assert!(Controller::Adaptive("x".into()).rank() > Controller::Programme.rank());
}
