//! Pure mapping of the DALI supervisor's output to cabinetd records: point names (SPEC §2,
//! `BUS/ADDR/POINT`), readings with their quality, and transitions to event records.
//!
//! Invariant: every record produced here names its source `BUS/ADDR`, so the central post can
//! join events and telemetry of one luminaire without knowing DALI.

use std::time::SystemTime;

use cabinetd_dali::{Drift, Event as DaliEvent, GearSample, ShortAddress};
use serde_json::{json, Value};

use crate::event::EventKind;
use crate::record::{Event, Quality, Severity};

/// The points of one gear, in publication order.
pub const POINTS: [&str; 7] = [
    "level",
    "lamp_failure",
    "gear_failure",
    "present",
    "power_w",
    "energy_wh",
    "operating_hours",
];

/// `BUS/ADDR`: the source of a gear's events.
pub fn gear_source(bus: &str, address: u8) -> String {
    format!("{bus}/{address}")
}

/// `BUS/ADDR/POINT`: a gear's full point name.
pub fn point_name(bus: &str, address: u8, point: &str) -> String {
    format!("{bus}/{address}/{point}")
}

/// A float as a JSON number rounded to `decimals` (levels on the log curve are irrational;
/// rounding keeps the payload short and the change detection free of float noise).
pub fn number(x: f64, decimals: i32) -> Value {
    let f = 10f64.powi(decimals);
    serde_json::Number::from_f64((x * f).round() / f).map_or(Value::Null, Value::Number)
}

/// The readings of one sample: `(point, value, quality)`. A reading the cycle did not produce is
/// `None` and is left out, except the status points which, when the gear is absent, repeat their
/// last value with quality `bad` (the caller supplies the last value). `present` is always a good
/// reading: the bus answered the cycle, so "no gear there" is a fact, not a failure.
pub fn readings(sample: &GearSample) -> Vec<(&'static str, Option<Value>, Quality)> {
    let good_or_bad = |v: Option<Value>| match v {
        Some(v) => (Some(v), Quality::Good),
        None => (None, Quality::Bad),
    };
    let mut out = Vec::with_capacity(7);
    let (v, q) = good_or_bad(sample.level_percent.map(|l| number(l, 2)));
    out.push(("level", v, q));
    let (v, q) = good_or_bad(sample.lamp_failure.map(Value::Bool));
    out.push(("lamp_failure", v, q));
    let (v, q) = good_or_bad(sample.gear_failure.map(Value::Bool));
    out.push(("gear_failure", v, q));
    out.push(("present", Some(Value::Bool(sample.present)), Quality::Good));
    for (name, x, decimals) in [
        ("power_w", sample.power_w, 1),
        ("energy_wh", sample.energy_wh, 1),
        ("operating_hours", sample.operating_hours, 2),
    ] {
        if let Some(x) = x {
            out.push((name, Some(number(x, decimals)), Quality::Good));
        }
    }
    out
}

/// What a cumulative energy meter (D4i bank 202) adds to the `cabinetd_energy_wh_total` counter
/// when it reads `now` after `previous`: the first reading is the baseline (0: the counter counts
/// from the daemon's start, so a restart is a counter reset, never a jump by the gear's lifetime
/// energy); a reading below the previous one is a meter that restarted (gear replaced or reset)
/// and counts from zero. Non-finite or negative readings add nothing.
pub fn meter_increase(previous: Option<f64>, now: f64) -> f64 {
    if !now.is_finite() || now < 0.0 {
        return 0.0;
    }
    match previous {
        Some(p) if p.is_finite() && now >= p => now - p,
        Some(_) => now,
        None => 0.0,
    }
}

/// The event record for one supervisor transition on bus `bus`. An appearing fault is `major`
/// (`minor` for a collision); its clearing is the same `kind` with `active: false`, severity `info`.
pub fn event_record(bus: &str, event: &DaliEvent, ts: SystemTime) -> Event {
    use EventKind::*;
    let (kind, address, active) = match *event {
        DaliEvent::GearFound { address } => (GearFound, address, None),
        DaliEvent::GearMissing { address } => (GearMissing, address, None),
        DaliEvent::LampFailure { address, active } => (LampFailure, address, Some(active)),
        DaliEvent::GearFailure { address, active } => (GearFailure, address, Some(active)),
        DaliEvent::Collision { address, active } => (DaliCollision, address, Some(active)),
    };
    let a = address.get();
    let source = gear_source(bus, a);
    let (severity, message) = match (&kind, active) {
        (GearFound, _) => (Severity::Info, format!("luminaire {source} answers")),
        (GearMissing, _) => (
            Severity::Major,
            format!("luminaire {source} stopped answering"),
        ),
        (LampFailure, Some(true)) => (Severity::Major, format!("lamp failure on {source}")),
        (GearFailure, Some(true)) => (Severity::Major, format!("control gear failure on {source}")),
        (DaliCollision, Some(true)) => (
            Severity::Minor,
            format!("several gear answer on {source} (duplicate short address)"),
        ),
        (_, _) => (
            Severity::Info,
            format!("{} cleared on {source}", kind.as_str().replace('_', " ")),
        ),
    };
    let mut data = json!({ "bus": bus, "address": a });
    if let Some(active) = active {
        data["active"] = Value::Bool(active);
    }
    Event {
        ts,
        kind,
        severity,
        source,
        message,
        data,
    }
}

/// The `dali_config_drift` event of one gear: what was found different and corrected.
pub fn drift_record(
    bus: &str,
    address: ShortAddress,
    drifts: &[DriftItem],
    ts: SystemTime,
) -> Event {
    let a = address.get();
    let source = gear_source(bus, a);
    let names: Vec<&str> = drifts.iter().map(|d| d.parameter).collect();
    let items: Vec<Value> = drifts
        .iter()
        .map(|d| json!({ "parameter": d.parameter, "wanted": d.wanted, "found": d.found }))
        .collect();
    Event {
        ts,
        kind: EventKind::DaliConfigDrift,
        severity: Severity::Minor,
        source: source.clone(),
        message: format!(
            "{source}: {} differed from the configuration and was reprogrammed",
            names.join(", ")
        ),
        data: json!({ "bus": bus, "address": a, "drift": items }),
    }
}

/// One parameter found different from the configuration (groups included, which the crate's
/// [`Drift`] does not cover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriftItem {
    /// `groups`, `power_on_level`, … (raw DALI values: arc levels, fade code, group bitmap).
    pub parameter: &'static str,
    /// Value programmed.
    pub wanted: u16,
    /// Value found before (`None` = no answer).
    pub found: Option<u16>,
}

impl From<Drift> for DriftItem {
    fn from(d: Drift) -> Self {
        DriftItem {
            parameter: d.parameter.name(),
            wanted: u16::from(d.wanted),
            found: d.found.map(u16::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14: `cabinetd_energy_wh_total` was a gauge (the summed meters) with a counter's
    /// name, which `promtool check metrics` flags; it is now a counter of metered increases.
    #[test]
    fn meter_increases_count_from_the_first_reading_and_survive_a_reset() {
        assert_eq!(meter_increase(None, 1500.0), 0.0);
        assert_eq!(meter_increase(Some(1500.0), 1512.5), 12.5);
        assert_eq!(meter_increase(Some(1512.5), 1512.5), 0.0);
        // A replaced gear starts again near zero: what it metered since counts.
        assert_eq!(meter_increase(Some(1512.5), 3.0), 3.0);
        assert_eq!(meter_increase(Some(10.0), f64::NAN), 0.0);
        assert_eq!(meter_increase(Some(10.0), -1.0), 0.0);
    }

    fn sa(n: u8) -> ShortAddress {
        ShortAddress::new(n).unwrap()
    }

    fn sample(n: u8) -> GearSample {
        GearSample {
            address: sa(n),
            present: true,
            level_percent: Some(50.527_3),
            lamp_failure: Some(false),
            gear_failure: Some(false),
            power_w: None,
            energy_wh: None,
            operating_hours: None,
        }
    }

    #[test]
    fn point_names_follow_the_spec() {
        assert_eq!(point_name("bus-a", 12, "level"), "bus-a/12/level");
        assert_eq!(gear_source("bus-a", 0), "bus-a/0");
    }

    #[test]
    fn readings_of_a_present_gear_without_banks() {
        let r = readings(&sample(3));
        let names: Vec<_> = r.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(
            names,
            vec!["level", "lamp_failure", "gear_failure", "present"]
        );
        assert_eq!(r[0].1, Some(json!(50.53)));
        assert!(r.iter().all(|(_, _, q)| *q == Quality::Good));
    }

    #[test]
    fn readings_with_banks_and_of_an_absent_gear() {
        let mut s = sample(1);
        s.power_w = Some(50.53);
        s.energy_wh = Some(1234.0);
        s.operating_hours = Some(1000.0);
        let r = readings(&s);
        assert_eq!(r.len(), 7);
        assert_eq!(r[4], ("power_w", Some(json!(50.5)), Quality::Good));
        assert_eq!(r[5], ("energy_wh", Some(json!(1234.0)), Quality::Good));

        let absent = GearSample {
            present: false,
            level_percent: None,
            lamp_failure: None,
            gear_failure: None,
            ..sample(2)
        };
        let r = readings(&absent);
        assert_eq!(r[0], ("level", None, Quality::Bad));
        assert_eq!(r[1], ("lamp_failure", None, Quality::Bad));
        assert_eq!(r[3], ("present", Some(json!(false)), Quality::Good));
    }

    #[test]
    fn transitions_map_to_kinds_severities_and_sources() {
        let ts = SystemTime::UNIX_EPOCH;
        let cases = [
            (
                DaliEvent::GearFound { address: sa(4) },
                "gear_found",
                Severity::Info,
                None,
            ),
            (
                DaliEvent::GearMissing { address: sa(4) },
                "gear_missing",
                Severity::Major,
                None,
            ),
            (
                DaliEvent::LampFailure {
                    address: sa(4),
                    active: true,
                },
                "lamp_failure",
                Severity::Major,
                Some(true),
            ),
            (
                DaliEvent::LampFailure {
                    address: sa(4),
                    active: false,
                },
                "lamp_failure",
                Severity::Info,
                Some(false),
            ),
            (
                DaliEvent::GearFailure {
                    address: sa(4),
                    active: true,
                },
                "gear_failure",
                Severity::Major,
                Some(true),
            ),
            (
                DaliEvent::Collision {
                    address: sa(4),
                    active: true,
                },
                "dali_collision",
                Severity::Minor,
                Some(true),
            ),
        ];
        for (ev, kind, severity, active) in cases {
            let r = event_record("bus-a", &ev, ts);
            assert_eq!(r.kind, kind);
            assert_eq!(r.severity, severity, "{kind}");
            assert_eq!(r.source, "bus-a/4");
            assert_eq!(r.data["address"], json!(4));
            assert_eq!(r.data.get("active").and_then(Value::as_bool), active);
        }
    }

    #[test]
    fn drift_event_lists_parameters() {
        let d = [
            DriftItem {
                parameter: "groups",
                wanted: 1,
                found: Some(0),
            },
            DriftItem {
                parameter: "power_on_level",
                wanted: 254,
                found: None,
            },
        ];
        let r = drift_record("bus-a", sa(2), &d, SystemTime::UNIX_EPOCH);
        assert_eq!(r.kind, "dali_config_drift");
        assert_eq!(r.severity, Severity::Minor);
        assert_eq!(r.data["drift"][1]["parameter"], json!("power_on_level"));
        assert_eq!(r.data["drift"][1]["found"], Value::Null);
        assert!(
            r.message.contains("groups, power_on_level"),
            "{}",
            r.message
        );
    }
}
