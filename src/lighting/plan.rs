//! The night that starts on a date, and its `cabinetd plan` rendering (SPEC §1).
//!
//! A night is bounded by dusk on the local evening of its date (in `cabinet.timezone`) and dawn
//! the next morning, printed as UTC instants for the cabinet's latitude/longitude (how the local
//! date picks the solar day, and where clock steps outside the night go: [`super::programme`]).
//! Dates outside [`FIRST_NIGHT`]..=[`LAST_NIGHT`] are a [`PlanError::Date`] (exit 2 in
//! `cabinetd plan`, like a malformed `--date`). Polar cases, documented in the plan's first line:
//! - polar day (the sun does not set on the date): no night; `"dusk":null,"dawn":null,
//!   "polar":"day"` and a note; no step is planned (the luminaires stay off);
//! - polar night (the sun does not set because it never rose, or does not rise the next day):
//!   the missing bound is `null`, `"polar":"night"`, and the night runs from / to solar noon, so
//!   consecutive polar nights tile the whole period with the luminaires on; `dusk` steps happen
//!   at the night's start, `dawn` steps are skipped (with a note);
//! - the sun sets but does not go down again the next day (entering polar day): the night ends
//!   at solar midnight.
//!
//! Output: the first line `{"date":D,"dusk":T,"dawn":T}` (plus `"polar"`, `"day"` and `"notes"`
//! only when there is something to say: `"day"` is the night's day type — its weekday `mon`…`sun`,
//! or the `[[lighting.calendar]]` holding its date — when the programme has weekday variants or
//! calendars), then one line per step in time order
//! `{"at":T,"target":S,"level_percent":N,"reason":S}`, timestamps RFC 3339 UTC with
//! milliseconds. A clock step moved to dusk says so in its reason:
//! `"night dimming (22:00, applied at dusk)"`.

use std::io::Write;

use jiff::civil::Date;
use jiff::Timestamp;
use serde::Serialize;

use super::astro::SunEvent;
use super::programme::{FIRST_NIGHT, LAST_NIGHT};
use super::{PlanError, Programme};
use crate::config::Config;
use crate::light::{target_name, LightTarget};

/// Which polar case a night is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Polar {
    /// The sun does not set: no night.
    Day,
    /// The sun does not rise (at one end of the night at least).
    Night,
}

/// Dusk and dawn of the night that starts on `date`, and the span the luminaires are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Night {
    /// The date the night starts on.
    pub date: Date,
    /// Sunset (or civil dusk) on the local evening of `date`.
    pub dusk: SunEvent,
    /// Sunrise (or civil dawn) the next morning.
    pub dawn: SunEvent,
    /// `[start, end)` of the dark period; `None` in polar day.
    pub span: Option<(Timestamp, Timestamp)>,
}

impl Night {
    /// The polar case, if any.
    pub fn polar(&self) -> Option<Polar> {
        match (self.dusk, self.dawn) {
            (SunEvent::OutOfRange, _) | (_, SunEvent::OutOfRange) => None,
            (SunEvent::AlwaysUp, _) => Some(Polar::Day),
            (SunEvent::AlwaysDown, _) | (_, SunEvent::AlwaysDown) => Some(Polar::Night),
            _ => None,
        }
    }
}

/// One planned change.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// When.
    pub at: Timestamp,
    /// What.
    pub target: LightTarget,
    /// Level 0..=100.
    pub level_percent: f64,
    /// Why (the step's `reason`, default its `at` text, with `"(HH:MM, applied at dusk)"` for a
    /// clock step moved to dusk; `dawn` for the implicit switch-off).
    pub reason: String,
}

/// The plan of one night.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The date the night starts on.
    pub date: Date,
    /// Dusk, `None` if the sun does not set that day (polar day or night).
    pub dusk: Option<Timestamp>,
    /// Dawn, `None` if the sun does not rise the next day (or there is no night).
    pub dawn: Option<Timestamp>,
    /// The polar case, if any.
    pub polar: Option<Polar>,
    /// Planned changes in the order they apply (time, then clock steps moved to dusk after
    /// dusk's own, then all → group → gear, then config order).
    pub steps: Vec<Step>,
    /// What the plan could not do as written (skipped steps, polar cases).
    pub notes: Vec<String>,
    /// The night's day type (weekday `mon`…`sun`, or the calendar of exception holding the
    /// date) when the programme has weekday variants or calendars; `None` otherwise.
    pub day: Option<String>,
}

/// The plan of the night that starts on `date`, for the cabinet of `cfg`; a date outside
/// [`FIRST_NIGHT`]..=[`LAST_NIGHT`] is a [`PlanError::Date`].
pub fn plan_night(cfg: &Config, date: Date) -> Result<Plan, PlanError> {
    if !Programme::plans(date) {
        return Err(PlanError::Date {
            value: date.to_string(),
            reason: format!(
                "outside the dates the astronomical clock plans, {FIRST_NIGHT} to {LAST_NIGHT}"
            ),
        });
    }
    Ok(Programme::from_config(cfg)?.plan(date))
}

/// RFC 3339 UTC with milliseconds, as `record::format_ts` writes it, for any instant (that one
/// goes through `SystemTime` and cannot write a time before 1970).
fn ts(t: Timestamp) -> String {
    format!("{:.3}", t)
}

/// A level as JSON: integral levels print as integers (`70`, not `70.0`).
fn level_json(x: f64) -> serde_json::Value {
    if x.fract() == 0.0 && x.abs() <= 1e9 {
        serde_json::Value::from(x as i64)
    } else {
        serde_json::Value::from(x)
    }
}

#[derive(Serialize)]
struct Header<'a> {
    date: String,
    dusk: Option<String>,
    dawn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    polar: Option<Polar>,
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
}

#[derive(Serialize)]
struct Line<'a> {
    at: String,
    target: String,
    level_percent: serde_json::Value,
    reason: &'a str,
}

/// Prints `plan` as SPEC §1's JSON lines.
pub fn print_plan(plan: &Plan, out: &mut dyn Write) -> Result<(), PlanError> {
    let header = Header {
        date: plan.date.to_string(),
        dusk: plan.dusk.map(ts),
        dawn: plan.dawn.map(ts),
        polar: plan.polar,
        day: plan.day.as_deref(),
        notes: &plan.notes,
    };
    writeln!(
        out,
        "{}",
        serde_json::to_string(&header).expect("plain data")
    )?;
    for s in &plan.steps {
        let line = Line {
            at: ts(s.at),
            target: target_name(&s.target),
            level_percent: level_json(s.level_percent),
            reason: &s.reason,
        };
        writeln!(out, "{}", serde_json::to_string(&line).expect("plain data"))?;
    }
    out.flush()?;
    Ok(())
}

/// Parses `--date YYYY-MM-DD` strictly (no other ISO 8601 forms).
pub fn parse_date(value: &str) -> Result<Date, PlanError> {
    let bad = |reason: String| PlanError::Date {
        value: value.to_string(),
        reason,
    };
    let b = value.as_bytes();
    let shape = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !shape {
        return Err(bad("expected a date YYYY-MM-DD".into()));
    }
    value
        .parse::<Date>()
        .map_err(|e| bad(format!("not a calendar date: {e}")))
}

/// `cabinetd plan --date DATE`: parses the date and prints the plan of that night.
pub fn plan_cli(cfg: &Config, date: &str, out: &mut dyn Write) -> Result<(), PlanError> {
    let plan = plan_night(cfg, parse_date(date)?)?;
    print_plan(&plan, out)
}
