//! Plan and programme tests on fixed dates (no wall clock): Dijon winter and summer, the two DST
//! nights of 2026 in Europe/Paris, Tromsø's polar day and night, a Nordic summer night, ordering
//! and precedence, and the SPEC §1 output format read back.

use jiff::civil::{date, Date};
use jiff::Timestamp;
use serde_json::Value;

use super::*;
use crate::config::{load_sources, Config, Source};
use crate::light::{target_name, LightTarget};

fn config(cabinet: &str, lighting: &str) -> Config {
    let text = format!(
        r#"{cabinet}
[storage]
path = "/tmp/cabinetd-test"

[uplink]
broker = "mqtt://127.0.0.1:1883"

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
    let noon = astro::solar_noon(date(2026, 12, 21), 18.956);
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
fn clock_time_outside_a_short_night_is_skipped() {
    // Oslo, 21 Jun: sunset ≈ 22:44 CEST, so 22:00 is before the night starts; sunrise ≈ 03:54
    // CEST, so 05:00 is after it ends.
    let cfg = config(OSLO, DIJON_PROGRAMME);
    let p = plan_night(&cfg, date(2026, 6, 21)).unwrap();
    near(p.dusk, "2026-06-21T20:44:00Z");
    let reasons: Vec<&str> = p.steps.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons, ["dusk", "dawn"]);
    assert_eq!(
        p.notes,
        [
            "lighting.step[1] (22:00 all) skipped: 22:00 Europe/Oslo is not between dusk and dawn",
            "lighting.step[2] (05:00 all) skipped: 05:00 Europe/Oslo is not between dusk and dawn"
        ]
    );
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
