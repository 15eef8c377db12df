//! Engine tests on explicit time: `for`, clear, hysteresis, mode and windows, start-up, and a
//! property test over random timelines.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::*;
use crate::record::Quality;
use crate::rules::expr::Scalar;
use crate::rules::testutil::config;

fn engine(extra: &str) -> Engine {
    let cfg = config(extra);
    Engine::new(&cfg.automation.rules, Sky::new(&cfg).unwrap())
}

const T0: &str = "2026-12-21T12:00:00Z";

fn at(s: u64) -> Now {
    let t0: Timestamp = T0.parse().unwrap();
    Now {
        mono: Duration::from_secs(s),
        wall: t0 + jiff::SignedDuration::from_secs(s as i64),
    }
}

fn num(x: f64) -> Sample {
    Sample {
        value: Some(Scalar::Num(x)),
        quality: Quality::Good,
    }
}

/// (rule, "entered"|"cleared")
fn fired(tr: &[Transition]) -> Vec<(usize, &'static str)> {
    tr.iter()
        .map(|t| {
            (
                t.rule,
                if t.cleared.is_some() {
                    "cleared"
                } else {
                    "entered"
                },
            )
        })
        .collect()
}

#[test]
fn for_delays_entry_only_and_a_clear_is_immediate() {
    let mut e = engine("[[rule]]\nname = \"cold\"\nwhen = \"w/t < 1\"\nfor = \"10min\"\n");
    assert!(e.step(at(0), true).is_empty());
    e.observe("w/t", num(0.0));
    assert!(e.step(at(10), true).is_empty());
    assert_eq!(
        e.state(0),
        RuleState::Pending {
            since: Duration::from_secs(10)
        }
    );
    assert_eq!(e.next_deadline().0, Some(Duration::from_secs(610)));
    assert!(e.step(at(609), true).is_empty());
    assert_eq!(fired(&e.step(at(610), true)), vec![(0, "entered")]);
    // Still holding: nothing more.
    e.observe("w/t", num(-1.0));
    assert!(e.step(at(700), true).is_empty());
    e.observe("w/t", num(1.0));
    let tr = e.step(at(701), true);
    assert_eq!(fired(&tr), vec![(0, "cleared")]);
    assert_eq!(tr[0].cleared, Some(ClearCause::Condition));
    assert_eq!(e.next_deadline().0, None);
}

#[test]
fn flapping_shorter_than_for_never_enters() {
    let mut e = engine("[[rule]]\nname = \"cold\"\nwhen = \"w/t < 1\"\nfor = \"60s\"\n");
    for k in 0..20 {
        e.observe("w/t", num(if k % 2 == 0 { 0.0 } else { 2.0 }));
        assert!(e.step(at(k * 30), true).is_empty(), "k={k}");
    }
    assert_eq!(e.next_deadline().0, None);
}

#[test]
fn hysteresis_jitter_inside_the_band_does_nothing() {
    let mut e = engine(
        "[[rule]]\nname = \"cold\"\nwhen = \"w/t < 1\"\nclear_when = \"w/t > 2\"\nclear_for = \"30s\"\n",
    );
    e.observe("w/t", num(0.5));
    assert_eq!(fired(&e.step(at(0), true)), vec![(0, "entered")]);
    for (k, x) in [1.2, 0.9, 1.9, 0.8, 2.0, 1.5].into_iter().enumerate() {
        e.observe("w/t", num(x));
        assert!(e.step(at(1 + k as u64), true).is_empty());
    }
    // Above 2 but not for 30 s: still entered.
    e.observe("w/t", num(2.5));
    assert!(e.step(at(10), true).is_empty());
    e.observe("w/t", num(1.5));
    assert!(e.step(at(20), true).is_empty());
    e.observe("w/t", num(2.5));
    assert!(e.step(at(30), true).is_empty());
    assert_eq!(e.next_deadline().0, Some(Duration::from_secs(60)));
    let tr = e.step(at(60), true);
    assert_eq!(fired(&tr), vec![(0, "cleared")]);
    assert_eq!(tr[0].cleared, Some(ClearCause::ClearWhen));
}

#[test]
fn overlapping_clear_when_does_not_loop() {
    // Misconfigured: both conditions hold at 0.5. One entry, one clear, then nothing until `when`
    // has stopped holding once.
    let mut e = engine("[[rule]]\nname = \"x\"\nwhen = \"w/t < 1\"\nclear_when = \"w/t < 5\"\n");
    e.observe("w/t", num(0.5));
    assert_eq!(fired(&e.step(at(0), true)), vec![(0, "entered")]);
    let mut all = Vec::new();
    for k in 1..10 {
        all.extend(fired(&e.step(at(k), true)));
        e.observe("w/t", num(0.5 + k as f64 * 0.01));
    }
    assert_eq!(all, vec![(0, "cleared")]);
    e.observe("w/t", num(3.0));
    assert!(e.step(at(20), true).is_empty());
    e.observe("w/t", num(0.5));
    assert_eq!(fired(&e.step(at(21), true)), vec![(0, "entered")]);
}

#[test]
fn missing_or_bad_data_never_enters_even_under_not() {
    let mut e = engine(
        "[[rule]]\nname = \"a\"\nwhen = \"not (w/t > 5)\"\n[[rule]]\nname = \"b\"\nwhen = 'quality(w/h) != \"good\"'\nfor = \"1min\"\n",
    );
    assert!(e.step(at(0), true).is_empty());
    assert_eq!(fired(&e.step(at(60), true)), vec![(1, "entered")]);
    e.observe(
        "w/t",
        Sample {
            value: Some(Scalar::Num(0.0)),
            quality: Quality::Bad,
        },
    );
    assert!(e.step(at(61), true).is_empty());
    e.observe("w/t", num(0.0));
    e.observe("w/h", num(50.0));
    assert_eq!(
        fired(&e.step(at(62), true)),
        vec![(0, "entered"), (1, "cleared")]
    );
}

#[test]
fn a_condition_true_at_start_enters_after_for_from_the_first_good_reading() {
    let mut e = engine("[[rule]]\nname = \"open\"\nwhen = \"w/door == true\"\nfor = \"5s\"\n");
    assert!(e.step(at(0), true).is_empty());
    e.observe(
        "w/door",
        Sample::from_json(&serde_json::json!(true), Quality::Good),
    );
    assert!(e.step(at(3), true).is_empty());
    assert_eq!(fired(&e.step(at(8), true)), vec![(0, "entered")]);
}

#[test]
fn mode_arms_and_disarms() {
    let mut e = engine(
        "[[rule]]\nname = \"fallback\"\nmode = \"autonomous\"\nwhen = 'mode == \"autonomous\"'\n[[rule]]\nname = \"normal\"\nmode = \"connected\"\nwhen = \"w/t > 0\"\n",
    );
    e.observe("w/t", num(1.0));
    assert_eq!(fired(&e.step(at(0), true)), vec![(1, "entered")]);
    e.set_mode(Mode::Autonomous);
    let tr = e.step(at(1), true);
    assert_eq!(fired(&tr), vec![(0, "entered"), (1, "cleared")]);
    assert_eq!(tr[1].cleared, Some(ClearCause::Disarmed));
    e.set_mode(Mode::Connected);
    assert_eq!(
        fired(&e.step(at(2), true)),
        vec![(0, "cleared"), (1, "entered")]
    );
}

#[test]
fn windows_arm_on_wall_time_and_freeze_while_untrusted() {
    // 22:00-05:00 Paris = 21:00Z-04:00Z in December.
    let mut e = engine("[[rule]]\nname = \"late\"\nwhen = \"w/t > 0\"\nduring = \"22:00-05:00\"\n");
    e.observe("w/t", num(1.0));
    let t = |h: u64, m: u64| at((h * 60 + m) * 60 - 12 * 3600);
    assert!(e.step(t(20, 59), true).is_empty());
    assert_eq!(
        e.next_deadline().1,
        Some("2026-12-21T21:00:00Z".parse().unwrap())
    );
    assert_eq!(fired(&e.step(t(21, 0), true)), vec![(0, "entered")]);
    // The clock is untrusted at 04:00Z: the window state is kept.
    assert!(e.step(t(28, 0), false).is_empty());
    let tr = e.step(t(28, 1), true);
    assert_eq!(fired(&tr), vec![(0, "cleared")]);
    assert_eq!(tr[0].cleared, Some(ClearCause::Disarmed));
}

#[test]
fn unchanged_readings_do_not_reevaluate() {
    let mut e = engine("[[rule]]\nname = \"a\"\nwhen = \"w/t > 0\"\n");
    assert!(e.observe("w/t", num(1.0)));
    assert!(!e.observe("w/t", num(1.0)));
    assert!(!e.observe("w/other", num(1.0)));
    assert!(e.reads("w/t") && !e.reads("w/h"));
}

/// Drives the engine over `(second, value)` changes like the daemon: observe, step, and steps at
/// the deadlines in between. Returns (second, rule, entered) transitions.
fn drive(e: &mut Engine, changes: &[(u64, f64)], end: u64) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    let mut t = 0;
    let mut k = 0;
    loop {
        while let Some((s, x)) = changes.get(k).filter(|(s, _)| *s <= t) {
            let _ = s;
            e.observe("w/t", num(*x));
            k += 1;
        }
        for tr in e.step(at(t), true) {
            out.push((t, tr.cleared.is_none()));
        }
        let next_change = changes.get(k).map(|(s, _)| *s);
        let deadline = e.next_deadline().0.map(|d| d.as_secs().max(t + 1));
        let Some(next) = [next_change, deadline, Some(end)]
            .into_iter()
            .flatten()
            .min()
        else {
            break;
        };
        if t >= end {
            break;
        }
        t = next;
    }
    out
}

proptest! {
    #[test]
    fn random_timelines(
        gaps in proptest::collection::vec((1u64..200, -5.0f64..5.0), 0..60),
        for_s in 0u64..120,
    ) {
        let mut changes = Vec::new();
        let mut t = 0;
        for (g, x) in gaps {
            t += g;
            changes.push((t, x));
        }
        let rule = format!("[[rule]]\nname = \"r\"\nwhen = \"w/t < 0\"\nfor = \"{for_s}s\"\n");
        let mut e = engine(&rule);
        let out = drive(&mut e, &changes, t + 500);
        // Entries and clears alternate, starting with an entry.
        for (i, (_, entered)) in out.iter().enumerate() {
            prop_assert_eq!(*entered, i % 2 == 0);
        }
        // No entry before the condition held for `for` without interruption.
        for (s, entered) in &out {
            if !entered { continue; }
            let since = changes
                .iter()
                .take_while(|(c, _)| c <= s)
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .take_while(|(_, x)| *x < 0.0)
                .last()
                .map(|(c, _)| *c);
            prop_assert!(since.is_some(), "entered at {} without holding", s);
            prop_assert!(s - since.unwrap() >= for_s, "entered at {} held since {:?}", s, since);
        }
        // Every clear happens at the change that stopped the condition.
        for (s, entered) in &out {
            if *entered { continue; }
            prop_assert!(changes.iter().any(|(c, x)| c == s && *x >= 0.0));
        }
        // Same timeline, same output.
        let mut again = engine(&rule);
        prop_assert_eq!(drive(&mut again, &changes, t + 500), out);
    }
}
