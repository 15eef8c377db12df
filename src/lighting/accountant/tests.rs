use super::*;
use crate::lighting::energy::Source;
use serde_json::json;

fn cfg_tz(rated: Option<f64>, meter: Option<&str>, tz: &str, lat: f64, lon: f64) -> Config {
    let mut text = format!(
        "[cabinet]\nid = \"c\"\nlatitude = {lat}\nlongitude = {lon}\ntimezone = \"{tz}\"\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 2\npoll = \"30s\"\n",
    );
    if let Some(w) = rated {
        text.push_str(&format!("rated_power_w = {w}\n"));
    }
    if let Some(m) = meter {
        text.push_str(&format!(
            "[[modbus]]\nname = \"meter\"\naddress = \"127.0.0.1:502\"\npoll = \"60s\"\n  [[modbus.point]]\n  name = \"energy\"\n  table = \"input\"\n  address = 0\n  type = \"u32\"\n[lighting]\nenergy_meter = \"{m}\"\n"
        ));
    }
    crate::config::load_sources(&[crate::config::Source {
        name: "t".into(),
        text,
    }])
    .unwrap()
}

fn cfg(rated: Option<f64>, meter: Option<&str>) -> Config {
    cfg_tz(rated, meter, "UTC", 47.322, 5.0415)
}

fn night(c: &Config, d: Date) -> (Timestamp, Timestamp) {
    Programme::from_config(c).unwrap().night(d).span.unwrap()
}

fn mins(m: i64) -> SignedDuration {
    SignedDuration::from_mins(m)
}

/// Feeds both luminaires every 30 s from `from` to `to` with `level(t)`, asking `due` each
/// minute; returns the reports.
fn feed(
    acc: &mut EnergyAccountant,
    from: Timestamp,
    to: Timestamp,
    level: impl Fn(Timestamp) -> f64,
) -> Vec<EnergyDaily> {
    let mut out = Vec::new();
    let mut t = from;
    let mut i = 0;
    while t < to {
        for g in ["bus-a/0", "bus-a/1"] {
            acc.observe(&format!("{g}/level"), &json!(level(t)), t);
        }
        if i % 2 == 0 {
            if let Due::Report(e) = acc.due(t) {
                out.push(e);
            }
        }
        i += 1;
        t += SignedDuration::from_secs(30);
    }
    out
}

/// Regression (issue 13 item 2, "a made-up energy_daily after a reload"): a desired config
/// changing `[[dali]]` during the day made a fresh accountant, which then reported the night
/// before from levels sampled 16 h after its dawn. A night the accountant did not see is never
/// reported with a figure.
#[test]
fn a_fresh_accountant_never_reports_a_night_it_did_not_see() {
    let c = cfg(Some(40.0), None);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let (_, dawn) = night(&c, jiff::civil::date(2026, 12, 21));
    let reload = dawn + SignedDuration::from_hours(16);
    for minute in 0..120 {
        let t = reload + mins(minute);
        acc.observe("bus-a/0/level", &json!(80.0), t);
        acc.observe("bus-a/1/level", &json!(80.0), t);
        if let Due::Report(e) = acc.due(t) {
            panic!("reported a night it did not see: {:?}", e);
        }
    }
}

#[test]
fn a_whole_night_matches_the_hand_computation_and_is_reported_once() {
    let c = cfg(Some(40.0), None);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let d = jiff::civil::date(2026, 12, 21);
    let (dusk, dawn) = night(&c, d);
    let dimming = dusk + SignedDuration::from_hours(5);
    // On 15 min before dusk, 100 % until dimming, 50 % until dawn, off after.
    let level = |t: Timestamp| {
        if t < dusk - mins(15) || t >= dawn {
            0.0
        } else if t < dimming {
            100.0
        } else {
            50.0
        }
    };
    let reports = feed(
        &mut acc,
        dusk - SignedDuration::from_hours(3),
        dawn + SignedDuration::from_hours(3),
        level,
    );
    assert_eq!(reports.len(), 1, "{reports:?}");
    let e = &reports[0];
    assert_eq!(e.date, d);
    let h = |a: Timestamp, b: Timestamp| (b - a).as_secs_f64() / 3600.0;
    let hand = 2.0 * 40.0 * (h(dusk - mins(15), dimming) + 0.5 * h(dimming, dawn)) / 1000.0;
    let baseline = 2.0 * 40.0 * h(dusk, dawn) / 1000.0;
    assert!(
        (e.kwh.unwrap() - hand).abs() < hand * 0.001,
        "{e:?} vs {hand}"
    );
    assert!((e.baseline_kwh - baseline).abs() < 1e-9);
    assert_eq!(e.source, Source::Estimated);
    assert!(e.coverage > 0.99, "{e:?}");
    assert_eq!(e.window, (dusk - BRACKET_H, dawn + BRACKET_H));
    assert_eq!(acc.last().unwrap()["date"], "2026-12-21");
}

const BRACKET_H: SignedDuration = crate::lighting::energy::BRACKET;

#[test]
fn the_state_survives_a_restart_in_the_middle_of_the_night() {
    let c = cfg(Some(40.0), None);
    let d = jiff::civil::date(2026, 12, 21);
    let (dusk, dawn) = night(&c, d);
    let level = |t: Timestamp| if t >= dusk && t < dawn { 70.0 } else { 0.0 };
    let start = dusk - SignedDuration::from_hours(2);
    let mid = dusk + SignedDuration::from_hours(4);
    let end = dawn + SignedDuration::from_hours(2);
    // Uninterrupted.
    let mut whole = EnergyAccountant::new(&c).unwrap();
    let expected = feed(&mut whole, start, end, level);
    // Stopped at `mid` for 20 s (saved at the stop), started again from the file.
    let mut first = EnergyAccountant::new(&c).unwrap();
    assert!(feed(&mut first, start, mid, level).is_empty());
    let text = first.render_state(mid);
    let mut second = EnergyAccountant::new(&c).unwrap();
    second.restore(&text).unwrap();
    let got = feed(&mut second, mid + SignedDuration::from_secs(20), end, level);
    assert_eq!(got.len(), 1);
    let (a, b) = (expected[0].kwh.unwrap(), got[0].kwh.unwrap());
    assert!((a - b).abs() < a * 0.001, "{a} vs {b}");
    assert!(got[0].coverage > 0.99);
    // The file is refused whole when it is not ours, or newer.
    let mut third = EnergyAccountant::new(&c).unwrap();
    assert!(third
        .restore(&text.replace("\"version\":1", "\"version\":2"))
        .is_err());
    assert!(third.restore("{").is_err());
    assert!(third.restore(&text.replace(FORMAT, "x")).is_err());
}

#[test]
fn a_night_seen_in_part_is_reported_with_its_coverage_and_no_figure() {
    let c = cfg(Some(40.0), None);
    let d = jiff::civil::date(2026, 12, 21);
    let (dusk, dawn) = night(&c, d);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    // Started (without state) in the middle of the night.
    let mid = dusk + (dawn - dusk) / 2;
    let reports = feed(&mut acc, mid, dawn + SignedDuration::from_hours(2), |_| {
        70.0
    });
    assert_eq!(reports.len(), 1);
    let e = &reports[0];
    assert_eq!((e.kwh, e.savings_percent), (None, None));
    assert!(e.coverage > 0.3 && e.coverage < 0.7, "{e:?}");
    let data = e.data();
    assert_eq!(data["kwh"], Value::Null);
    assert!(data["coverage"].as_f64().unwrap() < 0.9);
    // A bus down for two hours of a night (readings bad): uncovered, not filled in.
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let down = (
        dusk + SignedDuration::from_hours(2),
        dusk + SignedDuration::from_hours(4),
    );
    let mut t = dusk - SignedDuration::from_hours(2);
    let mut report = None;
    while t < dawn + SignedDuration::from_hours(2) {
        let q = if t >= down.0 && t < down.1 {
            Quality::Bad
        } else {
            Quality::Good
        };
        for g in ["bus-a/0", "bus-a/1"] {
            acc.observe_reading(&format!("{g}/level"), &json!(70.0), q, t);
        }
        if let Due::Report(e) = acc.due(t) {
            report = Some(e);
        }
        t += SignedDuration::from_secs(30);
    }
    let e = report.unwrap();
    let window = (dawn - dusk).as_secs_f64() + 7200.0;
    let expected = 1.0 - 7200.0 / window;
    assert!((e.coverage - expected).abs() < 0.01, "{e:?} vs {expected}");
}

#[test]
fn the_night_is_picked_by_the_local_date() {
    // Apia (UTC+13): the night of local 2026-07-01 starts on the local evening of 1 July,
    // which is 1 July ~05:20 UTC; a UTC date would name it 30 June or 2 July.
    let c = cfg_tz(Some(40.0), None, "Pacific/Apia", -13.83, -171.76);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let d = jiff::civil::date(2026, 7, 1);
    let (dusk, dawn) = night(&c, d);
    let reports = feed(
        &mut acc,
        dusk - SignedDuration::from_hours(2),
        dawn + SignedDuration::from_hours(2),
        |_| 50.0,
    );
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].date, d, "{:?}", reports[0]);
    assert_eq!(reports[0].data()["date"], "2026-07-01");
}

#[test]
fn a_lighting_meter_covering_the_night_is_preferred_and_counts_the_same_window() {
    let c = cfg(Some(40.0), Some("meter/energy"));
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let d = jiff::civil::date(2026, 12, 21);
    let (dusk, dawn) = night(&c, d);
    // The meter counts 100 W while lit, read every minute.
    let mut t = dusk - SignedDuration::from_hours(2);
    let mut wh = 5000.0;
    let mut report = None;
    while t < dawn + SignedDuration::from_hours(2) {
        acc.observe(
            "bus-a/0/level",
            &json!(if t >= dusk && t < dawn { 100.0 } else { 0.0 }),
            t,
        );
        acc.observe("meter/energy", &json!(wh), t);
        if t >= dusk && t < dawn {
            wh += 100.0 / 60.0;
        }
        if let Due::Report(e) = acc.due(t) {
            report = Some(e);
        }
        t += SignedDuration::from_secs(60);
    }
    let e = report.unwrap();
    assert_eq!(e.source, Source::Metered);
    let hours = (dawn - dusk).as_secs_f64() / 3600.0;
    assert!((e.kwh.unwrap() - 0.1 * hours).abs() < 0.002, "{e:?}");
    assert_eq!(e.data()["window"]["from"], ts(dusk - BRACKET_H));
}

#[test]
fn a_reconfiguration_keeps_the_night_and_drops_what_is_gone() {
    let c = cfg(Some(40.0), None);
    let d = jiff::civil::date(2026, 12, 21);
    let (dusk, dawn) = night(&c, d);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let mid = dusk + SignedDuration::from_hours(3);
    feed(&mut acc, dusk - SignedDuration::from_hours(2), mid, |_| {
        60.0
    });
    // A reload with another poll period and rated power: same night, same readings so far.
    let mut c2 = cfg(Some(40.0), None);
    c2.dali[0].poll = Duration::from_secs(20);
    acc.reconfigure(&c2);
    let reports = feed(&mut acc, mid, dawn + SignedDuration::from_hours(2), |_| {
        60.0
    });
    assert_eq!(reports.len(), 1);
    assert!(reports[0].coverage > 0.99, "{:?}", reports[0]);
    assert!(reports[0].kwh.is_some());
}

#[test]
fn no_rated_power_no_baseline_no_event() {
    let c = cfg(None, None);
    let mut acc = EnergyAccountant::new(&c).unwrap();
    let (dusk, dawn) = night(&c, jiff::civil::date(2026, 12, 21));
    let mut got = Vec::new();
    let mut t = dusk - mins(90);
    while t < dawn + mins(90) {
        acc.observe("bus-a/0/level", &json!(100.0), t);
        got.push(acc.due(t));
        t += SignedDuration::from_secs(60);
    }
    assert!(got.iter().any(|d| matches!(d, Due::Unaccountable(_, _))));
    assert!(!got.iter().any(|d| matches!(d, Due::Report(_))));
}
