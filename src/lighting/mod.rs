//! The lighting programme: astronomical clock, the night's plan, the programme evaluator the
//! executor follows, and the daily energy accounting.
//!
//! Everything here is pure (no I/O, no wall clock): callers pass the date or the instant.
//!
//! - [`astro`]: NOAA/Meeus sunrise/sunset in UTC for a latitude/longitude and a solar day,
//!   iterated on the event's instant, with the polar day/night guard ([`astro::SunEvent`]).
//! - [`plan`]: the night that starts on a date ([`plan_night`], [`Night`]), its JSON-lines
//!   rendering for `cabinetd plan` ([`print_plan`], [`plan_cli`]).
//! - [`programme`]: [`Programme::level_at`] and [`Programme::next_change_after`] over any number
//!   of nights.
//! - [`energy`]: the `energy_daily` event data, metered or estimated.
//!
//! Time zones: programme clock times (`"22:00"`) are local times in `cabinet.timezone`, resolved
//! with jiff. The system tzdb (`/usr/share/zoneinfo`, kept current by Debian's `tzdata`) is
//! preferred; a copy bundled in the binary is the fallback when the host has none or lacks the
//! zone, so a cabinet with a broken tzdata still keeps local time and tests do not depend on
//! the host.

pub mod accountant;
pub mod astro;
pub mod energy;
pub mod plan;
pub mod programme;
pub mod run;
#[cfg(test)]
mod tests;

pub use plan::{plan_cli, plan_night, print_plan, Night, Plan, Polar, Step};
pub use programme::{Luminaire, Programme};

use jiff::tz::{TimeZone, TimeZoneDatabase};

use crate::config::{LightTarget, StepTime};

/// Largest offset of a `dusk±…` / `dawn±…` step: more than half a day is certainly a typo, and
/// the evaluator relies on a night's steps staying within a day of its dusk and dawn.
pub const MAX_OFFSET_SECS: i64 = 12 * 3600;

/// Why a plan could not be made or written.
///
/// `Date` and `TimeZone` are permanent (fix the argument or the config); `Io` is the output's
/// own failure (a closed pipe), transient from the programme's point of view.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The `--date` argument is not a `YYYY-MM-DD` calendar date, or is outside the nights the
    /// programme plans (usage error, exit 2).
    #[error("--date {value:?}: {reason}")]
    Date {
        /// As given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `cabinet.timezone` is unknown to both the system and the bundled tzdb.
    #[error("cabinet.timezone {name:?}: {reason}")]
    TimeZone {
        /// As configured.
        name: String,
        /// Why it did not resolve.
        reason: String,
    },
    /// Writing the plan failed.
    #[error("writing the plan: {0}")]
    Io(#[from] std::io::Error),
}

/// Resolves an IANA time zone name: the system tzdb first, the bundled copy as fallback.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    match jiff::tz::db().get(name) {
        Ok(tz) => Ok(tz),
        Err(_) => TimeZoneDatabase::bundled()
            .get(name)
            .map_err(|_| format!("unknown IANA time zone {name:?}")),
    }
}

/// Parses a light target as `light.set` writes it: `all`, `group:N` (0..=15) or `BUS/ADDR`
/// (short address 0..=63).
pub fn parse_target(s: &str) -> Result<LightTarget, String> {
    if s == "all" {
        return Ok(LightTarget::All);
    }
    if let Some(n) = s.strip_prefix("group:") {
        return match n.parse::<u8>() {
            Ok(g) if g <= 15 => Ok(LightTarget::Group(g)),
            _ => Err(format!("group {n:?} in {s:?} is not a DALI group 0..15")),
        };
    }
    if let Some((bus, addr)) = s.split_once('/') {
        return match addr.parse::<u8>() {
            Ok(a) if a <= 63 && !bus.is_empty() => Ok(LightTarget::Gear {
                bus: bus.to_owned(),
                address: a,
            }),
            _ => Err(format!("{s:?} is not BUS/ADDR with ADDR 0..63")),
        };
    }
    Err(format!("{s:?} is not all, group:N or BUS/ADDR"))
}

/// The text form of a target, as [`parse_target`] reads it.
pub fn target_name(t: &LightTarget) -> String {
    match t {
        LightTarget::All => "all".into(),
        LightTarget::Group(g) => format!("group:{g}"),
        LightTarget::Gear { bus, address } => format!("{bus}/{address}"),
    }
}

/// Parses a step's `at`: `dusk`, `dawn`, `dusk+15min`, `dawn-30min` (any humantime duration up
/// to 12 h) or a local clock time `HH:MM`.
pub fn parse_step_time(s: &str) -> Result<StepTime, String> {
    let bad = || {
        format!(
            "must be \"dusk\", \"dawn\", an offset like \"dusk+15min\" or \"dawn-30min\", or a local clock time \"HH:MM\", found {s:?}"
        )
    };
    let t = s.trim();
    for (name, make) in [
        ("dusk", StepTime::Dusk as fn(i64) -> StepTime),
        ("dawn", StepTime::Dawn),
    ] {
        let Some(rest) = t.strip_prefix(name) else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(make(0));
        }
        let (sign, d) = match (rest.strip_prefix('+'), rest.strip_prefix('-')) {
            (Some(d), _) => (1, d),
            (_, Some(d)) => (-1, d),
            _ => return Err(bad()),
        };
        let d = humantime::parse_duration(d.trim())
            .map_err(|e| format!("offset in {s:?}: {e}; write e.g. \"dusk+15min\""))?;
        if d.subsec_nanos() != 0 || d.as_secs() > MAX_OFFSET_SECS as u64 {
            return Err(format!(
                "offset in {s:?} must be whole seconds, at most 12h"
            ));
        }
        return Ok(make(sign * d.as_secs() as i64));
    }
    let b = t.as_bytes();
    if b.len() == 5
        && b[2] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        let hour = (b[0] - b'0') * 10 + (b[1] - b'0');
        let minute = (b[3] - b'0') * 10 + (b[4] - b'0');
        if hour <= 23 && minute <= 59 {
            return Ok(StepTime::Clock { hour, minute });
        }
    }
    Err(bad())
}

#[cfg(test)]
mod parse_tests {
    use super::*;

    #[test]
    fn step_times_parse() {
        assert_eq!(parse_step_time("dusk"), Ok(StepTime::Dusk(0)));
        assert_eq!(parse_step_time(" dawn "), Ok(StepTime::Dawn(0)));
        assert_eq!(parse_step_time("dusk+15min"), Ok(StepTime::Dusk(900)));
        assert_eq!(parse_step_time("dawn-30min"), Ok(StepTime::Dawn(-1800)));
        assert_eq!(parse_step_time("dusk + 1h"), Ok(StepTime::Dusk(3600)));
        assert_eq!(
            parse_step_time("22:00"),
            Ok(StepTime::Clock {
                hour: 22,
                minute: 0
            })
        );
        assert_eq!(
            parse_step_time("05:30"),
            Ok(StepTime::Clock {
                hour: 5,
                minute: 30
            })
        );
        for bad in [
            "",
            "noon",
            "dusk15min",
            "dusk+",
            "dusk+13h",
            "dusk+1.5s",
            "24:00",
            "22:60",
            "2200",
            "9:00",
            "22:00:00",
            "dawn*2",
        ] {
            assert!(parse_step_time(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn targets_round_trip() {
        for s in ["all", "group:0", "group:15", "bus-a/0", "bus-a/63"] {
            assert_eq!(target_name(&parse_target(s).unwrap()), s);
        }
        for bad in ["", "group:16", "group:x", "bus-a/64", "/3", "bus-a", "All"] {
            assert!(parse_target(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn time_zones_resolve() {
        assert!(time_zone("Europe/Paris").is_ok());
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone("Europe/Dijon").is_err());
    }

    #[test]
    fn bundled_tzdb_knows_paris() {
        // The fallback must stand on its own when the host has no /usr/share/zoneinfo.
        let tz = TimeZoneDatabase::bundled().get("Europe/Paris").unwrap();
        let summer: jiff::Timestamp = "2026-07-01T12:00:00Z".parse().unwrap();
        assert_eq!(tz.to_offset(summer).seconds(), 7200);
    }
}
