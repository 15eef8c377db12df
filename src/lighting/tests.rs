//! Plan and programme tests on fixed dates (no wall clock): Dijon winter and summer, the two DST
//! nights of 2026 in Europe/Paris, Tromsø's polar day and night, a Nordic summer night, ordering
//! and precedence, and the SPEC §1 output format read back.

use jiff::civil::{date, Date};
use jiff::Timestamp;
use serde_json::Value;

use super::*;
use crate::config::{load_sources, time_zone, Config, Source};
use crate::light::{target_name, LightTarget};

fn config(cabinet: &str, lighting: &str) -> Config {
    let text = format!(
        r#"{cabinet}
[storage]
path = "/tmp/cabinetd-test"

[uplink]
broker = "mqtt://127.0.0.1:1883"

[security]
require_signed = false

[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 8

  [[dali.group]]
  number = 1
  members = [4, 5]

{lighting}
"#
    );
    load_sources(&[Source {
        name: "t.toml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"))
}

const DIJON: &str = r#"[cabinet]
id = "dijon-017"
latitude = 47.322
longitude = 5.0415
timezone = "Europe/Paris"
"#;

const TROMSO: &str = r#"[cabinet]
id = "tromso-001"
latitude = 69.649
longitude = 18.956
timezone = "Europe/Oslo"
"#;

const OSLO: &str = r#"[cabinet]
id = "oslo-001"
latitude = 59.913
longitude = 10.752
timezone = "Europe/Oslo"
"#;

/// Dijon's practice: full light at dusk, 70 % from 22 h to 5 h.
const DIJON_PROGRAMME: &str = r#"[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100

[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70

[[lighting.step]]
target = "all"
at = "05:00"
level_percent = 100
"#;

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

#[track_caller]
fn near(got: Option<Timestamp>, want: &str) {
    let got = got.expect("an instant");
    let diff = (got - utc(want)).as_secs().abs();
    assert!(diff <= 120, "got {got}, want {want} ±2 min");
}

/// (at, target, level, reason) of every step.
fn steps(p: &Plan) -> Vec<(Timestamp, String, f64, String)> {
    p.steps
        .iter()
        .map(|s| {
            (
                s.at,
                target_name(&s.target),
                s.level_percent,
                s.reason.clone(),
            )
        })
        .collect()
}

fn printed(p: &Plan) -> Vec<Value> {
    let mut out = Vec::new();
    print_plan(p, &mut out).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn dijon_winter_night() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    near(p.dusk, "2026-12-21T15:52:00Z");
    near(p.dawn, "2026-12-22T07:24:00Z");
    assert_eq!(p.polar, None);
    assert!(p.notes.is_empty(), "{:?}", p.notes);
    let s = steps(&p);
    assert_eq!(s.len(), 4, "{s:?}");
    assert_eq!(
        (s[0].0, s[0].2, s[0].3.as_str()),
        (p.dusk.unwrap(), 100.0, "dusk")
    );
    // 22:00 and 05:00 CET (UTC+1).
    assert_eq!(
        s[1],
        (
            utc("2026-12-21T21:00:00Z"),
            "all".into(),
            70.0,
            "22:00".into()
        )
    );
    assert_eq!(
        s[2],
        (
            utc("2026-12-22T04:00:00Z"),
            "all".into(),
            100.0,
            "05:00".into()
        )
    );
    // The implicit end of night.
    assert_eq!(s[3], (p.dawn.unwrap(), "all".into(), 0.0, "dawn".into()));
}

#[test]
fn dijon_summer_night() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 6, 21)).unwrap();
    near(p.dusk, "2026-06-21T19:40:00Z");
    near(p.dawn, "2026-06-22T03:43:00Z");
    let s = steps(&p);
    // 22:00 and 05:00 CEST (UTC+2); 05:00 CEST is 03:00Z, before the 03:43Z dawn.
    assert_eq!(s[1].0, utc("2026-06-21T20:00:00Z"));
    assert_eq!(s[2].0, utc("2026-06-22T03:00:00Z"));
    assert_eq!(s.len(), 4);
}

#[test]
fn civil_twilight_widens_the_night() {
    let cfg = config(
        DIJON,
        &DIJON_PROGRAMME.replace("[lighting]", "[lighting]\ntwilight = \"civil\""),
    );
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    near(p.dusk, "2026-12-21T16:27:00Z");
    near(p.dawn, "2026-12-22T06:48:00Z");
}

const DST_PROGRAMME: &str = r#"[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100

[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70

[[lighting.step]]
target = "group:1"
at = "02:30"
level_percent = 40

[[lighting.step]]
target = "all"
at = "05:00"
level_percent = 100
"#;

fn at_of(p: &Plan, reason: &str) -> Timestamp {
    p.steps
        .iter()
        .find(|s| s.reason == reason)
        .unwrap_or_else(|| panic!("no step {reason}: {:?}", p.steps))
        .at
}

#[test]
fn spring_forward_night() {
    // 29 Mar 2026, 02:00 CET → 03:00 CEST.
    let cfg = config(DIJON, DST_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 3, 28)).unwrap();
    assert_eq!(at_of(&p, "22:00"), utc("2026-03-28T21:00:00Z"));
    // 02:30 does not exist: moved forward by the gap, 03:30 CEST.
    assert_eq!(at_of(&p, "02:30"), utc("2026-03-29T01:30:00Z"));
    assert_eq!(at_of(&p, "05:00"), utc("2026-03-29T03:00:00Z"));
    // The next night is on summer time.
    let p = plan_night(&cfg, date(2026, 3, 29)).unwrap();
    assert_eq!(at_of(&p, "22:00"), utc("2026-03-29T20:00:00Z"));
    assert_eq!(at_of(&p, "02:30"), utc("2026-03-30T00:30:00Z"));
}

#[test]
fn fall_back_night() {
    // 25 Oct 2026, 03:00 CEST → 02:00 CET.
    let cfg = config(DIJON, DST_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 10, 24)).unwrap();
    assert_eq!(at_of(&p, "22:00"), utc("2026-10-24T20:00:00Z"));
    // 02:30 happens twice: the first occurrence (CEST).
    assert_eq!(at_of(&p, "02:30"), utc("2026-10-25T00:30:00Z"));
    assert_eq!(at_of(&p, "05:00"), utc("2026-10-25T04:00:00Z"));
    let p = plan_night(&cfg, date(2026, 10, 25)).unwrap();
    assert_eq!(at_of(&p, "22:00"), utc("2026-10-25T21:00:00Z"));
    let times: Vec<Timestamp> = p.steps.iter().map(|s| s.at).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

#[test]
fn polar_day_has_no_night() {
    let cfg = config(TROMSO, DIJON_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 6, 21)).unwrap();
    assert_eq!((p.dusk, p.dawn, p.polar), (None, None, Some(Polar::Day)));
    assert!(p.steps.is_empty());
    assert!(p.notes[0].starts_with("polar day"), "{:?}", p.notes);
    let lines = printed(&p);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["date"], "2026-06-21");
    assert_eq!(lines[0]["dusk"], Value::Null);
    assert_eq!(lines[0]["dawn"], Value::Null);
    assert_eq!(lines[0]["polar"], "day");
    assert!(lines[0]["notes"][0]
        .as_str()
        .unwrap()
        .contains("does not set"));
}

#[test]
fn polar_night_runs_noon_to_noon() {
    let cfg = config(
        TROMSO,
        &format!("{DIJON_PROGRAMME}\n[[lighting.step]]\ntarget = \"all\"\nat = \"dawn-30min\"\nlevel_percent = 0\n"),
    );
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    assert_eq!((p.dusk, p.dawn, p.polar), (None, None, Some(Polar::Night)));
    let noon = astro::solar_noon(date(2026, 12, 21), 18.956).unwrap();
    let s = steps(&p);
    // Dusk at the night's start (solar noon), 22:00 and 05:00 CET, no dawn step, no implicit off.
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!((s[0].0, s[0].2), (noon, 100.0));
    assert_eq!(s[1].0, utc("2026-12-21T21:00:00Z"));
    assert_eq!(s[2].0, utc("2026-12-22T04:00:00Z"));
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("lighting.step[3]") && n.contains("skipped")),
        "{:?}",
        p.notes
    );
    // The luminaires stay on through the polar "day".
    let prog = Programme::from_config(&cfg).unwrap();
    let day_after = utc("2026-12-22T11:00:00Z");
    assert_eq!(prog.level_at(&LightTarget::All, day_after), Some(100.0));
}

#[test]
fn clock_time_before_dusk_applies_at_dusk_and_after_dawn_is_skipped() {
    // Oslo, 21 Jun: sunset ≈ 22:44 CEST, so 22:00 is before the night starts and applies at
    // dusk; sunrise ≈ 03:54 CEST, so 05:00 is after it ends and does not apply.
    let cfg = config(OSLO, DIJON_PROGRAMME);
    let prog = Programme::from_config(&cfg).unwrap();
    let p = plan_night(&cfg, date(2026, 6, 21)).unwrap();
    near(p.dusk, "2026-06-21T20:44:00Z");
    let reasons: Vec<&str> = p.steps.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons, ["dusk", "22:00 (applied at dusk)", "dawn"]);
    let dusk = p.dusk.unwrap();
    assert_eq!((p.steps[1].at, p.steps[1].level_percent), (dusk, 70.0));
    assert_eq!(
        p.notes,
        ["lighting.step[2] (05:00 all) skipped: 05:00 Europe/Oslo is at or after dawn; the level before dawn is the last step's before it"]
    );
    // The dimmed level holds from dusk until dawn switches off.
    let second = jiff::SignedDuration::from_secs(1);
    assert_eq!(prog.level_at(&LightTarget::All, dusk), Some(70.0));
    assert_eq!(
        prog.level_at(&LightTarget::All, p.dawn.unwrap() - second),
        Some(70.0)
    );
    assert_eq!(prog.level_at(&LightTarget::All, p.dawn.unwrap()), Some(0.0));
}

/// Local date and time of `t` in `tz`.
fn local(t: Timestamp, tz: &str) -> jiff::civil::DateTime {
    t.to_zoned_datetime(time_zone(tz).unwrap()).datetime()
}

/// Dijon's programme with the dimming step first and a reason of its own: a deferred step must
/// still apply after the dusk step.
const CIVIL_DIMMING: &str = r#"[lighting]
twilight = "civil"
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70
reason = "night dimming"

[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100

[[lighting.step]]
target = "all"
at = "05:00"
level_percent = 100
"#;

/// Issue 13 item 11: with civil twilight, dusk at Dijon falls after 22:00 CEST on ~60 summer
/// nights; the 22:00 dimming used to be skipped and the lights stayed at 100 % until 05:00.
#[test]
fn civil_twilight_keeps_the_night_dimming_in_summer() {
    let cfg = config(DIJON, CIVIL_DIMMING);
    let prog = Programme::from_config(&cfg).unwrap();
    let mut deferred = Vec::new();
    let mut d = date(2026, 1, 1);
    while d.year() == 2026 {
        let p = prog.plan(d);
        assert!(p.notes.is_empty(), "{d}: {:?}", p.notes);
        let dusk = p.dusk.unwrap();
        let s = steps(&p);
        assert_eq!(s.len(), 4, "{d}: {s:?}");
        assert_eq!((s[0].0, s[0].2, s[0].3.as_str()), (dusk, 100.0, "dusk"));
        let ten_pm = local(s[1].0, "Europe/Paris");
        if s[1].3 == "night dimming (22:00, applied at dusk)" {
            assert_eq!(s[1].0, dusk, "{d}");
            assert!(local(dusk, "Europe/Paris").time() > jiff::civil::time(22, 0, 0, 0));
            deferred.push(d);
        } else {
            assert_eq!(s[1].3, "night dimming", "{d}");
            assert_eq!(ten_pm, d.at(22, 0, 0, 0), "{d}");
        }
        assert_eq!(s[1].2, 70.0);
        // From the dimming on, 70 % until 05:00; dusk's 100 % only lasts where dusk is earlier.
        assert_eq!(prog.level_at(&LightTarget::All, s[1].0), Some(70.0), "{d}");
        let want_at_dusk = if s[1].0 == dusk { 70.0 } else { 100.0 };
        assert_eq!(prog.level_at(&LightTarget::All, dusk), Some(want_at_dusk));
        assert_eq!(
            (local(s[2].0, "Europe/Paris"), s[2].2),
            (d.tomorrow().unwrap().at(5, 0, 0, 0), 100.0)
        );
        assert_eq!((s[3].0, s[3].3.as_str()), (p.dawn.unwrap(), "dawn"));
        d = d.tomorrow().unwrap();
    }
    // The issue counted 60 nights, 27 May to 25 Jul.
    eprintln!(
        "{} nights dimmed at dusk: {} to {}",
        deferred.len(),
        deferred[0],
        deferred[deferred.len() - 1]
    );
    assert!((55..=65).contains(&deferred.len()), "{deferred:?}");
    assert!(deferred.iter().all(|d| d.month() >= 5 && d.month() <= 7));
    // The plan prints why the step is at dusk.
    let lines = printed(&prog.plan(date(2026, 6, 21)));
    assert_eq!(lines[2]["reason"], "night dimming (22:00, applied at dusk)");
    assert_eq!(lines[2]["at"], lines[0]["dusk"]);
}

#[test]
fn clock_steps_moved_to_dusk_apply_in_clock_order_after_dusk_steps() {
    let cfg = config(
        DIJON,
        r#"[lighting]
twilight = "civil"
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70
[[lighting.step]]
target = "group:1"
at = "21:30"
level_percent = 80
[[lighting.step]]
target = "all"
at = "21:00"
level_percent = 90
[[lighting.step]]
target = "group:1"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
"#,
    );
    let prog = Programme::from_config(&cfg).unwrap();
    let p = prog.plan(date(2026, 6, 21));
    let dusk = p.dusk.unwrap();
    let order: Vec<(String, &str, f64)> = p
        .steps
        .iter()
        .filter(|s| s.at == dusk)
        .map(|s| (target_name(&s.target), s.reason.as_str(), s.level_percent))
        .collect();
    let row = |t: &str, r: &'static str, l| (t.to_string(), r, l);
    assert_eq!(
        order,
        [
            row("all", "dusk", 100.0),
            row("group:1", "dusk", 100.0),
            row("all", "21:00 (applied at dusk)", 90.0),
            row("group:1", "21:30 (applied at dusk)", 80.0),
            row("all", "22:00 (applied at dusk)", 70.0),
        ]
    );
    // As if the evening had run through 21:00, 21:30 and 22:00: all at 70 %, the group too.
    let gear = |a| LightTarget::Gear {
        bus: "bus-a".into(),
        address: a,
    };
    assert_eq!(prog.level_at(&gear(4), dusk), Some(70.0));
    assert_eq!(prog.level_at(&LightTarget::Group(1), dusk), Some(70.0));
    assert_eq!(prog.level_at(&gear(0), dusk), Some(70.0));
    let (t, s) = prog
        .next_change_after(dusk - jiff::SignedDuration::from_secs(1))
        .unwrap();
    assert_eq!((t, s.len()), (dusk, 5));
}

const TIES: &str = r#"[lighting]
[[lighting.step]]
target = "bus-a/4"
at = "dusk"
level_percent = 20

[[lighting.step]]
target = "group:1"
at = "dusk"
level_percent = 50

[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100

[[lighting.step]]
target = "group:1"
at = "dusk+1h"
level_percent = 60
reason = "school out"

[[lighting.step]]
target = "all"
at = "23:00"
level_percent = 70

[[lighting.step]]
target = "all"
at = "dawn-30min"
level_percent = 0
"#;

#[test]
fn steps_order_time_then_specificity() {
    let cfg = config(DIJON, TIES);
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    let s = steps(&p);
    let order: Vec<(&str, f64)> = s.iter().map(|x| (x.1.as_str(), x.2)).collect();
    // Same instant: all, then group, then gear; the night ends with all off before dawn, so
    // no implicit switch-off is added.
    assert_eq!(
        order,
        [
            ("all", 100.0),
            ("group:1", 50.0),
            ("bus-a/4", 20.0),
            ("group:1", 60.0),
            ("all", 70.0),
            ("all", 0.0)
        ]
    );
    assert_eq!(s[3].0 - s[0].0, jiff::SignedDuration::from_hours(1));
    assert_eq!(s[3].3, "school out");
    assert_eq!(
        s[5].0,
        p.dawn.unwrap() - jiff::SignedDuration::from_mins(30)
    );
    assert!(p.notes.is_empty(), "{:?}", p.notes);
}

#[test]
fn most_recent_step_wins() {
    let cfg = config(DIJON, TIES);
    let prog = Programme::from_config(&cfg).unwrap();
    let p = prog.plan(date(2026, 12, 21));
    let dusk = p.dusk.unwrap();
    let min = jiff::SignedDuration::from_mins;
    let gear = |a| LightTarget::Gear {
        bus: "bus-a".into(),
        address: a,
    };
    let level = |t: &LightTarget, at| prog.level_at(t, at);
    // Noon before the night: day, off.
    let noon = utc("2026-12-21T12:00:00Z");
    assert_eq!(level(&LightTarget::All, noon), Some(0.0));
    assert_eq!(level(&gear(4), noon), Some(0.0));
    // At dusk the most specific step of the instant wins.
    assert_eq!(level(&gear(4), dusk), Some(20.0));
    assert_eq!(level(&gear(5), dusk), Some(50.0));
    assert_eq!(level(&gear(0), dusk), Some(100.0));
    assert_eq!(level(&LightTarget::Group(1), dusk), Some(50.0));
    assert_eq!(level(&LightTarget::All, dusk), Some(100.0));
    // One second before dusk it is still day.
    assert_eq!(
        level(&gear(0), dusk - jiff::SignedDuration::from_secs(1)),
        Some(0.0)
    );
    // dusk+1h: the group step is more recent than the gear's own.
    assert_eq!(level(&gear(4), dusk + min(61)), Some(60.0));
    assert_eq!(level(&gear(0), dusk + min(61)), Some(100.0));
    // 23:00 CET: all → 70 is the most recent for everyone.
    let late = utc("2026-12-21T22:00:00Z");
    assert_eq!(level(&gear(4), late), Some(70.0));
    assert_eq!(level(&LightTarget::Group(1), late), Some(70.0));
    // After dawn-30min: off, and still off the next noon.
    assert_eq!(level(&gear(4), p.dawn.unwrap()), Some(0.0));
    assert_eq!(level(&gear(4), utc("2026-12-22T12:00:00Z")), Some(0.0));
    // level_of with membership the caller knows agrees.
    let lum = prog.luminaire("bus-a", 4);
    assert_eq!(lum.groups, [1]);
    assert_eq!(prog.level_of(&lum, dusk + min(61)), Some(60.0));
    let stranger = Luminaire {
        bus: "bus-a".into(),
        address: 4,
        groups: vec![],
    };
    assert_eq!(prog.level_of(&stranger, dusk + min(61)), Some(20.0));
}

#[test]
fn next_change_walks_the_nights() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    let prog = Programme::from_config(&cfg).unwrap();
    let p = prog.plan(date(2026, 12, 21));
    let dusk = p.dusk.unwrap();
    let (t, s) = prog.next_change_after(utc("2026-12-21T12:00:00Z")).unwrap();
    assert_eq!((t, s.len(), s[0].level_percent), (dusk, 1, 100.0));
    // Strictly after: from the dusk instant, the next is 22:00.
    let (t, _) = prog.next_change_after(dusk).unwrap();
    assert_eq!(t, utc("2026-12-21T21:00:00Z"));
    let (t, s) = prog.next_change_after(utc("2026-12-22T04:00:00Z")).unwrap();
    assert_eq!((t, s[0].reason.as_str()), (p.dawn.unwrap(), "dawn"));
    // After dawn: the next night's dusk.
    let next = prog.plan(date(2026, 12, 22));
    let (t, _) = prog.next_change_after(p.dawn.unwrap()).unwrap();
    assert_eq!(t, next.dusk.unwrap());
    // Several steps at one instant come together, in application order.
    let ties = Programme::from_config(&config(DIJON, TIES)).unwrap();
    let (t, s) = ties.next_change_after(utc("2026-12-21T12:00:00Z")).unwrap();
    assert_eq!(t, dusk);
    let targets: Vec<String> = s.iter().map(|x| target_name(&x.target)).collect();
    assert_eq!(targets, ["all", "group:1", "bus-a/4"]);
}

#[test]
fn next_change_crosses_a_polar_day() {
    let cfg = config(TROMSO, DIJON_PROGRAMME);
    let prog = Programme::from_config(&cfg).unwrap();
    let (t, s) = prog.next_change_after(utc("2026-06-21T12:00:00Z")).unwrap();
    // The midnight sun ends late July; the first dusk comes then.
    let d = t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    assert!(d > date(2026, 7, 15) && d < date(2026, 8, 1), "{t}");
    assert_eq!(s[0].reason, "dusk");
    assert_eq!(
        prog.level_at(&LightTarget::All, utc("2026-06-21T23:00:00Z")),
        Some(0.0)
    );
    // The last night before the midnight sun ends at solar midnight with everything off.
    let last = (1..=31)
        .map(|d| prog.plan(date(2026, 5, d)))
        .rfind(|p| p.polar.is_none() || p.dusk.is_some())
        .unwrap();
    let end = last.steps.last().unwrap();
    assert_eq!((end.level_percent, end.reason.as_str()), (0.0, "dawn"));
}

#[test]
fn no_programme_plans_nothing() {
    let cfg = config(DIJON, "");
    assert_eq!(cfg.lighting, crate::config::LightingConfig::default());
    let prog = Programme::from_config(&cfg).unwrap();
    let p = prog.plan(date(2026, 12, 21));
    assert!(p.steps.is_empty() && p.notes.is_empty());
    let lines = printed(&p);
    assert_eq!(lines.len(), 1);
    let at = utc("2026-12-21T20:00:00Z");
    assert_eq!(prog.level_at(&LightTarget::All, at), None);
    assert_eq!(prog.next_change_after(at), None);
}

#[test]
fn steps_after_dawn_own_the_morning() {
    let cfg = config(
        DIJON,
        r#"[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "group:1"
at = "dawn+15min"
level_percent = 0
"#,
    );
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    assert_eq!(p.steps.len(), 2);
    assert!(p.notes[0].contains("no step after dawn switches all luminaires off"));
}

/// The SPEC §1 format: first line `{"date","dusk","dawn"}`, then `{"at","target",
/// "level_percent","reason"}`, RFC 3339 UTC with milliseconds.
#[test]
fn plan_cli_prints_spec_json_lines() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    let mut out = Vec::new();
    plan_cli(&cfg, "2026-12-21", &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines[0].starts_with(r#"{"date":"2026-12-21","dusk":"2026-12-21T15:5"#),
        "{}",
        lines[0]
    );
    let head: Value = serde_json::from_str(lines[0]).unwrap();
    let keys: Vec<&String> = head.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "{head}");
    let ts_shape = |v: &Value| {
        let s = v.as_str().unwrap();
        // 2026-12-21T15:52:07.000Z
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && &s[19..20] == ".", "{s}");
        s.parse::<Timestamp>().unwrap()
    };
    let dusk = ts_shape(&head["dusk"]);
    let dawn = ts_shape(&head["dawn"]);
    assert!(dusk < dawn);
    assert_eq!(
        lines[2],
        r#"{"at":"2026-12-21T21:00:00.000Z","target":"all","level_percent":70,"reason":"22:00"}"#
    );
    let mut prev = dusk;
    for l in &lines[1..] {
        let v: Value = serde_json::from_str(l).unwrap();
        let obj = v.as_object().unwrap();
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, ["at", "level_percent", "reason", "target"]);
        let at = ts_shape(&v["at"]);
        assert!(at >= prev && at <= dawn, "{l}");
        prev = at;
        assert!(v["level_percent"].as_f64().unwrap() <= 100.0);
        assert_eq!(v["target"], "all");
    }
}

#[test]
fn plan_cli_names_a_bad_date() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    for bad in [
        "2026-13-01",
        "2026-02-30",
        "21/12/2026",
        "20261221",
        "2026-12-21T00:00",
        "",
    ] {
        let mut out = Vec::new();
        let e = plan_cli(&cfg, bad, &mut out).unwrap_err();
        assert!(matches!(e, PlanError::Date { .. }), "{bad}: {e}");
        assert!(
            e.to_string().starts_with(&format!("--date {bad:?}: ")),
            "{e}"
        );
        assert!(out.is_empty());
    }
    let d: Date = plan::parse_date("2024-02-29").unwrap();
    assert_eq!(d, date(2024, 2, 29));
}

#[test]
fn fractional_levels_print_as_numbers() {
    let cfg = config(
        DIJON,
        "[lighting]\n[[lighting.step]]\ntarget = \"group:1\"\nat = \"dusk\"\nlevel_percent = 72.5\n",
    );
    let p = plan_night(&cfg, date(2026, 12, 21)).unwrap();
    let lines = printed(&p);
    assert_eq!(lines[1]["level_percent"], 72.5);
    assert_eq!(lines[1]["target"], "group:1");
}

/// (cabinet table, time zone) of places where the UTC date is not the local one: Apia (UTC+13),
/// Nuku'alofa (UTC+13), Kiritimati (UTC+14), Adak (UTC−10/−9) and Attu (173° E, on Adak's time
/// west of the date line).
const DATE_LINE: &[(&str, &str)] = &[
    (
        "[cabinet]\nid = \"apia\"\nlatitude = -13.83\nlongitude = -171.76\ntimezone = \"Pacific/Apia\"\n",
        "Pacific/Apia",
    ),
    (
        "[cabinet]\nid = \"tonga\"\nlatitude = -21.14\nlongitude = -175.2\ntimezone = \"Pacific/Tongatapu\"\n",
        "Pacific/Tongatapu",
    ),
    (
        "[cabinet]\nid = \"kiritimati\"\nlatitude = 1.87\nlongitude = -157.4\ntimezone = \"Pacific/Kiritimati\"\n",
        "Pacific/Kiritimati",
    ),
    (
        "[cabinet]\nid = \"adak\"\nlatitude = 51.88\nlongitude = -176.66\ntimezone = \"America/Adak\"\n",
        "America/Adak",
    ),
    (
        "[cabinet]\nid = \"attu\"\nlatitude = 52.85\nlongitude = 173.18\ntimezone = \"America/Adak\"\n",
        "America/Adak",
    ),
];

/// Issue 13 item 4: the night of date D used to be the UTC/solar date's, so at Apia the 05:00
/// step was skipped on every night (and at Attu the 22:00 one). The night of D starts on the
/// local evening of D; the plan and the daemon's evaluator agree on every night of a year.
#[test]
fn nights_past_the_date_line_keep_every_step() {
    for (cabinet, tz) in DATE_LINE {
        let cfg = config(cabinet, DIJON_PROGRAMME);
        let prog = Programme::from_config(&cfg).unwrap();
        let mut all_steps = Vec::new();
        let mut d = date(2026, 1, 1);
        while d.year() == 2026 {
            let p = prog.plan(d);
            assert!(p.notes.is_empty(), "{tz} {d}: {:?}", p.notes);
            let s = steps(&p);
            let reasons: Vec<&str> = s.iter().map(|x| x.3.as_str()).collect();
            assert!(
                reasons == ["dusk", "22:00", "05:00", "dawn"]
                    || reasons == ["dusk", "22:00 (applied at dusk)", "05:00", "dawn"],
                "{tz} {d}: {s:?}"
            );
            let next = d.tomorrow().unwrap();
            // Dusk on the local evening of D, dawn on the local morning of D + 1.
            let dusk = local(p.dusk.unwrap(), tz);
            assert!(
                dusk.date() == d && dusk.hour() >= 12,
                "{tz} {d}: dusk {dusk}"
            );
            let dawn = local(p.dawn.unwrap(), tz);
            assert!(
                dawn.date() == next && dawn.hour() < 12,
                "{tz} {d}: dawn {dawn}"
            );
            if s[1].3 == "22:00" {
                assert_eq!(local(s[1].0, tz), d.at(22, 0, 0, 0), "{tz}");
            } else {
                assert_eq!(s[1].0, s[0].0, "{tz} {d}");
            }
            assert_eq!(local(s[2].0, tz), next.at(5, 0, 0, 0), "{tz} {d}");
            // The daemon's evaluator: at each step, the level the plan says.
            for (i, step) in s.iter().enumerate() {
                let last_at_instant = s.iter().rposition(|x| x.0 == step.0).unwrap();
                if i == last_at_instant {
                    assert_eq!(
                        prog.level_at(&LightTarget::All, step.0),
                        Some(step.2),
                        "{tz} {d} {step:?}"
                    );
                }
            }
            all_steps.extend(s.into_iter().map(|x| (x.0, x.3)));
            d = next;
        }
        // Walking next_change_after through the year meets the same steps, none skipped.
        let first = all_steps[0].0;
        let last = all_steps[all_steps.len() - 1].0;
        let mut walked = Vec::new();
        let mut t = first - jiff::SignedDuration::from_secs(1);
        while let Some((at, s)) = prog.next_change_after(t) {
            if at > last {
                break;
            }
            walked.extend(s.into_iter().map(|x| (x.at, x.reason)));
            t = at;
        }
        assert_eq!(walked.len(), all_steps.len(), "{tz}");
        assert_eq!(walked, all_steps, "{tz}");
    }
}

/// Issue 13 item 5: `cabinetd plan` panicked for dates before 1970 (formatting through
/// `SystemTime`) and for 9999-12-30 (UTC midnight past jiff's last instant). Out-of-range dates
/// are an error; no date or instant panics the evaluator.
#[test]
fn extreme_dates_are_errors_not_panics() {
    let cfg = config(DIJON, DIJON_PROGRAMME);
    for d in [
        Date::MIN,
        date(0, 1, 1),
        date(1799, 12, 31),
        date(2101, 1, 1),
        date(9999, 12, 30),
        Date::MAX,
    ] {
        let e = plan_night(&cfg, d).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "outside the dates the astronomical clock plans, 1800-01-01 to 2100-12-31"
            ),
            "{d}: {e}"
        );
        assert!(matches!(e, PlanError::Date { .. }));
        let mut out = Vec::new();
        assert!(plan_cli(&cfg, &d.to_string(), &mut out).is_err() && out.is_empty());
    }
    // Before 1970 is fine: Dijon, 20 Jul 1969 (CET all year then: 22:00 is 21:00Z).
    let mut out = Vec::new();
    plan_cli(&cfg, "1969-07-20", &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with(r#"{"date":"1969-07-20","dusk":"1969-07-20T19:"#),
        "{text}"
    );
    assert!(text.contains(r#"{"at":"1969-07-20T21:00:00.000Z","target":"all","level_percent":70"#));
    for d in [date(1800, 1, 1), date(2100, 12, 31)] {
        let p = plan_night(&cfg, d).unwrap();
        assert_eq!(p.steps.len(), 4, "{d}: {:?}", p.steps);
    }
    // The evaluator at the ends of time: no night, nothing planned, no panic.
    let prog = Programme::from_config(&cfg).unwrap();
    for t in [Timestamp::MIN, Timestamp::MAX] {
        assert_eq!(prog.level_at(&LightTarget::All, t), Some(0.0));
        assert_eq!(prog.next_change_after(t), None);
    }
    for d in [Date::MIN, Date::MAX, date(9999, 12, 30)] {
        let n = prog.night(d);
        assert_eq!((n.span, n.polar()), (None, None));
        let p = prog.plan(d);
        assert!(
            p.steps.is_empty() && p.notes[0].contains("outside"),
            "{p:?}"
        );
    }
    // A cabinet whose clock restarts at the epoch (no RTC) still follows the programme.
    let epoch = Timestamp::UNIX_EPOCH;
    assert_eq!(prog.level_at(&LightTarget::All, epoch), Some(70.0));
}

/// Issue 10 item 5: weekday variants and calendar exceptions (holidays, city events).
const VARIANTS: &str = r#"
[lighting]
  [[lighting.calendar]]
  name = "holiday"
  dates = ["12-25", "01-01", "2026-07-14"]
  [[lighting.calendar]]
  name = "festival"
  dates = ["2026-06-19..2026-06-21"]

  [[lighting.step]]
  target = "all"
  at = "dusk"
  level_percent = 100
  [[lighting.step]]
  target = "all"
  at = "22:00"
  level_percent = 70
  reason = "night dimming"
  nights = ["sun", "mon", "tue", "wed", "thu"]
  [[lighting.step]]
  target = "all"
  at = "23:30"
  level_percent = 70
  reason = "late dimming"
  nights = ["fri", "sat", "holiday"]
"#;

#[test]
fn weekday_variants_and_calendar_exceptions_pick_the_steps_of_the_night() {
    let c = config(DIJON, VARIANTS);
    let p = Programme::from_config(&c).unwrap();
    let dimming = |d: Date| -> Vec<String> {
        p.plan(d)
            .steps
            .iter()
            .filter(|s| s.level_percent == 70.0)
            .map(|s| format!("{} {}", s.at, s.reason))
            .collect()
    };
    // Thursday 2026-12-17: 22:00 Paris (21:00Z); Friday 18: 23:30 (22:30Z).
    assert_eq!(
        dimming(date(2026, 12, 17)),
        ["2026-12-17T21:00:00Z night dimming [thu]"]
    );
    assert_eq!(
        dimming(date(2026, 12, 18)),
        ["2026-12-18T22:30:00Z late dimming [fri]"]
    );
    // Christmas (a Friday in 2026 anyway) and 14 July 2026 (a Tuesday): the holiday variant.
    assert_eq!(
        dimming(date(2026, 7, 14)),
        ["2026-07-14T21:30:00Z late dimming [holiday]"]
    );
    assert_eq!(p.plan(date(2026, 7, 14)).day.as_deref(), Some("holiday"));
    // The festival calendar names no step: on its nights, only the steps for every night.
    assert_eq!(dimming(date(2026, 6, 20)), Vec::<String>::new());
    assert_eq!(p.plan(date(2026, 6, 20)).day.as_deref(), Some("festival"));
    assert_eq!(p.plan(date(2026, 6, 22)).day.as_deref(), Some("mon"));
    // The evaluator follows the same variants: 22:30 Paris on a Thursday is dimmed, on a
    // holiday not yet.
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    assert_eq!(
        p.level_at(&LightTarget::All, at("2026-12-17T21:30:00Z")),
        Some(70.0)
    );
    assert_eq!(
        p.level_at(&LightTarget::All, at("2026-07-14T20:45:00Z")),
        Some(100.0)
    );
    // The plan says which day type the night is; without variants nothing changes.
    let v = printed(&p.plan(date(2026, 12, 18)));
    assert_eq!(v[0]["day"], "fri");
    let plain = Programme::from_config(&config(DIJON, LIGHTING_SIMPLE)).unwrap();
    assert!(printed(&plain.plan(date(2026, 12, 18)))[0]
        .get("day")
        .is_none());
}

const LIGHTING_SIMPLE: &str = r#"
[lighting]
  [[lighting.step]]
  target = "all"
  at = "dusk"
  level_percent = 100
"#;

#[test]
fn calendar_dates_every_year_once_and_over_the_year_end() {
    use crate::config::CalendarDates;
    let yearly = CalendarDates::Yearly {
        from: (12, 24),
        to: (1, 2),
    };
    assert!(yearly.contains(date(2026, 12, 31)));
    assert!(yearly.contains(date(2027, 1, 2)));
    assert!(!yearly.contains(date(2027, 1, 3)));
    assert!(!yearly.contains(date(2026, 12, 23)));
    let once = CalendarDates::Once {
        from: date(2026, 6, 19),
        to: date(2026, 6, 21),
    };
    assert!(once.contains(date(2026, 6, 21)));
    assert!(!once.contains(date(2027, 6, 20)));
}
