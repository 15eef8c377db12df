//! The programme evaluator: which level the programme wants, and when it next changes. The
//! daemon ([`Programme::level_at`], [`Programme::next_change_after`]) and `cabinetd plan`
//! ([`Programme::plan`]) resolve nights with the same code.
//!
//! The night of date D starts on the *local* evening of D in `cabinet.timezone` and ends on the
//! morning of D + 1, wherever the cabinet is: its dusk and dawn are those of the solar day whose
//! noon is nearest local noon of D (local mean solar time, so Apia at UTC+13 or Attu at UTC−10
//! west of the date line get their own evening, not the one a UTC date would give).
//!
//! Day types: each night has one, the first `[[lighting.calendar]]` (configuration order) that
//! holds its date (holidays, city events), else its weekday `mon`…`sun` (the local date the
//! night starts on). A step with `nights` applies only on the nights of those day types (its
//! reason then says which: `"late dimming [holiday]"`); a step without `nights` applies every
//! night. So a calendar replaces the weekday variants on its dates.
//!
//! Resolution of a night's steps (see [`Programme::plan`]):
//! - `dusk±X` / `dawn±X`: that night's dusk / dawn plus the offset;
//! - `HH:MM`: a local clock time in `cabinet.timezone`, taken on the night's date from 12:00 to
//!   23:59 and on the next date from 00:00 to 11:59. A time that falls *before dusk* (the 22:00
//!   dimming on a summer night with civil twilight, or a short northern night) applies at dusk,
//!   right after the steps that are due at dusk itself and in the order of the clock times, so the
//!   night is dimmed as if the evening had run through those times; its plan reason says
//!   `"…, applied at dusk"`. A time that falls *at or after dawn* does not apply that night (a
//!   note in the plan says so): the level before dawn is that of the last step before dawn, and
//!   dawn switches off. DST: a time in the spring gap moves forward by the gap (02:30 → 03:30
//!   CEST), a time in the autumn overlap takes its first occurrence (jiff's "compatible"
//!   disambiguation, as cron does);
//! - end of night: when the programme has steps, an implicit `all → 0 %` (reason `dawn`) is added
//!   at dawn, unless a step already happens at or after dawn (the programme then owns the morning;
//!   a note says so if none of those switches everything off) or the night's last step already
//!   switches `all` off.
//!
//! Precedence: the most recent step wins. For a luminaire, the level is that of the latest step
//! at or before the instant whose target covers it: `all` covers everything, `group:N` covers the
//! group's members (membership from `[[dali.group]]`), `BUS/ADDR` covers that gear. Steps at the
//! same instant apply in order: steps due then before clock steps moved to dusk (those by clock
//! time), then all → group → gear, then configuration order, so the most specific one wins a tie.
//! A group target's own level follows only `all` and that group's steps. Day time is off: before
//! any step, the level is 0 %. An empty programme wants nothing (`None`).
//!
//! Range: nights from [`FIRST_NIGHT`] to [`LAST_NIGHT`] (where NOAA calls its approximations
//! "very good"). A night outside it has no dark period and no step (`cabinetd plan` refuses the
//! date); nothing panics whatever the instant or date.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::astro::{self, SunEvent};
use super::plan::{Night, Plan, Step};
use super::PlanError;
use crate::config::{time_zone, Config, LightingConfig, LightingStep, Twilight};
use crate::light::{LightTarget, StepTime};

/// How far [`Programme::level_at`] and [`Programme::next_change_after`] look for a step: a year
/// covers the longest polar day or night.
const HORIZON_DAYS: i32 = 400;

/// One luminaire and the groups it belongs to (for callers that know membership themselves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Luminaire {
    /// Bus (device) name.
    pub bus: String,
    /// Short address.
    pub address: u8,
    /// DALI groups it is a member of.
    pub groups: Vec<u8>,
}

/// First night the programme plans.
pub const FIRST_NIGHT: Date = jiff::civil::date(1800, 1, 1);
/// Last night the programme plans.
pub const LAST_NIGHT: Date = jiff::civil::date(2100, 12, 31);

/// The order steps apply in (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Order {
    at: Timestamp,
    /// The clock time of a step that fell before dusk and applies at dusk; `None` (first) for a
    /// step at its own time.
    deferred_from: Option<Timestamp>,
    specificity: u8,
    index: usize,
}

/// A step with the key that orders it.
type Keyed = (Order, Step);

/// The cabinet's programme, ready to evaluate any night.
#[derive(Debug, Clone)]
pub struct Programme {
    latitude: f64,
    longitude: f64,
    twilight: Twilight,
    tz: TimeZone,
    steps: Vec<LightingStep>,
    /// (bus, group, members) from `[[dali.group]]`.
    groups: Vec<(String, u8, Vec<u8>)>,
    /// `[lighting]` (calendars and steps' `nights`: the day type of each night).
    lighting: LightingConfig,
}

/// `t` moved by a step's offset (at most 12 h), saturating at jiff's range: a `SignedDuration`
/// has no calendar unit, so `saturating_add` has no error case.
fn offset(t: Timestamp, secs: i64) -> Timestamp {
    t.saturating_add(SignedDuration::from_secs(secs))
        .unwrap_or(t)
}

impl Programme {
    /// The programme of `cfg`: its `[lighting]`, location, time zone and DALI groups.
    pub fn from_config(cfg: &Config) -> Result<Programme, PlanError> {
        let tz = time_zone(&cfg.cabinet.timezone).map_err(|reason| PlanError::TimeZone {
            name: cfg.cabinet.timezone.clone(),
            reason,
        })?;
        let groups = cfg
            .dali
            .iter()
            .flat_map(|b| {
                b.groups
                    .iter()
                    .map(|g| (b.name.clone(), g.number, g.members.clone()))
            })
            .collect();
        Ok(Programme {
            latitude: cfg.cabinet.latitude,
            longitude: cfg.cabinet.longitude,
            twilight: cfg.lighting.twilight,
            tz,
            steps: cfg.lighting.steps.clone(),
            groups,
            lighting: cfg.lighting.clone(),
        })
    }

    /// True when there is no `[[lighting.step]]`: the programme drives nothing.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The luminaire `bus/address` with its groups from the configuration.
    pub fn luminaire(&self, bus: &str, address: u8) -> Luminaire {
        let groups = self
            .groups
            .iter()
            .filter(|(b, _, m)| b == bus && m.contains(&address))
            .map(|(_, g, _)| *g)
            .collect();
        Luminaire {
            bus: bus.to_string(),
            address,
            groups,
        }
    }

    /// Whether the programme plans the night of `date` ([`FIRST_NIGHT`]..=[`LAST_NIGHT`]).
    pub fn plans(date: Date) -> bool {
        (FIRST_NIGHT..=LAST_NIGHT).contains(&date)
    }

    /// The solar day (the `date` of [`astro`]) whose sunset starts the night of the local date
    /// `date`: the UTC date of local noon moved by the longitude (4 min a degree), i.e. the date
    /// in local mean solar time. `None` where the time zone cannot place noon (range edges).
    fn solar_date(&self, date: Date) -> Option<Date> {
        let noon = date
            .at(12, 0, 0, 0)
            .to_zoned_datetime(self.tz.clone())
            .ok()?
            .timestamp();
        let shift = SignedDuration::from_secs((self.longitude * 240.0).round() as i64);
        let mean = noon.checked_add(shift).ok()?;
        Some(mean.to_zoned_datetime(TimeZone::UTC).date())
    }

    /// Dusk on the local evening of `date`, dawn the next morning, and the dark span between
    /// them. Outside [`FIRST_NIGHT`]..=[`LAST_NIGHT`] both are [`SunEvent::OutOfRange`] and
    /// there is no span.
    pub fn night(&self, date: Date) -> Night {
        let solar = Some(date)
            .filter(|d| Self::plans(*d))
            .and_then(|d| self.solar_date(d))
            .and_then(|s| Some((s, s.tomorrow().ok()?)));
        let Some((solar, next)) = solar else {
            return Night {
                date,
                dusk: SunEvent::OutOfRange,
                dawn: SunEvent::OutOfRange,
                span: None,
            };
        };
        let z = self.twilight.zenith();
        let (lat, lon) = (self.latitude, self.longitude);
        let dusk = astro::sunset(solar, lat, lon, z);
        let dawn = astro::sunrise(next, lat, lon, z);
        let start = match dusk {
            SunEvent::At(t) => Some(t),
            SunEvent::AlwaysDown => astro::solar_noon(solar, lon),
            SunEvent::AlwaysUp | SunEvent::OutOfRange => None,
        };
        let end = match dawn {
            SunEvent::At(t) => Some(t),
            SunEvent::AlwaysDown => astro::solar_noon(next, lon),
            SunEvent::AlwaysUp => astro::solar_noon(solar, lon)
                .and_then(|t| t.checked_add(SignedDuration::from_hours(12)).ok()),
            SunEvent::OutOfRange => None,
        };
        let span = start.zip(end).filter(|(s, e)| s < e);
        Night {
            date,
            dusk,
            dawn,
            span,
        }
    }

    /// `hour:minute` local time on `date` (jiff's "compatible" disambiguation for DST).
    fn clock(&self, date: Date, hour: u8, minute: u8) -> Option<Timestamp> {
        let dt = date.at(hour as i8, minute as i8, 0, 0);
        dt.to_zoned_datetime(self.tz.clone())
            .ok()
            .map(|z| z.timestamp())
    }

    /// The reason of a clock step moved to dusk: `"night dimming (22:00, applied at dusk)"`, or
    /// `"22:00 (applied at dusk)"` when the reason is the default.
    fn deferred_reason(s: &LightingStep) -> String {
        let at = s.at.to_string();
        if s.reason == at {
            format!("{at} (applied at dusk)")
        } else {
            format!("{} ({at}, applied at dusk)", s.reason)
        }
    }

    /// Every step of the night starting on `date`, ordered, with notes.
    fn resolve(&self, date: Date) -> (Night, Vec<Keyed>, Vec<String>) {
        let night = self.night(date);
        let mut notes = Vec::new();
        let mut out: Vec<Keyed> = Vec::new();
        let Some((start, end)) = night.span else {
            notes.push(match night.polar() {
                Some(super::Polar::Day) => format!(
                    "polar day: the sun does not set on {date} at latitude {}; no night, the luminaires stay off",
                    self.latitude
                ),
                _ if night.dusk == SunEvent::OutOfRange => format!(
                    "{date} is outside the nights the programme plans ({FIRST_NIGHT} to {LAST_NIGHT})"
                ),
                _ => format!("no dark period in the night of {date}"),
            });
            return (night, out, notes);
        };
        match (night.dusk, night.dawn) {
            (SunEvent::AlwaysDown, _) => notes.push(format!(
                "polar night: the sun does not set on {date} because it does not rise; the night runs from solar noon and dusk steps happen then"
            )),
            (_, SunEvent::AlwaysDown) => notes.push(
                "polar night: the sun does not rise the next day; the night runs to solar noon and dawn steps are skipped".to_string(),
            ),
            (_, SunEvent::AlwaysUp) => notes.push(
                "the sun does not set the next day; the night ends at solar midnight and dawn steps are skipped".to_string(),
            ),
            _ => {}
        }
        let zone = self.tz.iana_name().unwrap_or("local");
        let day_type = self.lighting.day_type(date);
        for (i, s) in self.steps.iter().enumerate() {
            if s.nights
                .as_ref()
                .is_some_and(|n| !n.iter().any(|x| x == day_type))
            {
                continue;
            }
            let mut order = Order {
                at: start,
                deferred_from: None,
                specificity: s.target.specificity(),
                index: i,
            };
            let mut reason = match &s.nights {
                // Said in the plan and in `simulate`: which night's variant applies.
                Some(_) => format!("{} [{day_type}]", s.reason),
                None => s.reason.clone(),
            };
            let skipped = match s.at {
                StepTime::Dusk(off) => {
                    order.at = match night.dusk {
                        SunEvent::At(t) => offset(t, off),
                        _ => start,
                    };
                    None
                }
                StepTime::Dawn(off) => match night.dawn {
                    SunEvent::At(t) => {
                        order.at = offset(t, off);
                        None
                    }
                    _ => Some("there is no dawn".to_string()),
                },
                StepTime::Clock { hour, minute } => {
                    let day = if hour >= 12 {
                        Some(date)
                    } else {
                        date.tomorrow().ok()
                    };
                    match day.and_then(|d| self.clock(d, hour, minute)) {
                        None => Some(format!("{} {zone} cannot be placed", s.at)),
                        Some(t) if t >= end => Some(format!(
                            "{} {zone} is at or after dawn; the level before dawn is the last step's before it",
                            s.at
                        )),
                        Some(t) if t < start => {
                            order.deferred_from = Some(t);
                            reason = Self::deferred_reason(s);
                            if s.nights.is_some() {
                                reason = format!("{reason} [{day_type}]");
                            }
                            None
                        }
                        Some(t) => {
                            order.at = t;
                            None
                        }
                    }
                }
            };
            if let Some(why) = skipped {
                notes.push(format!(
                    "lighting.step[{i}] ({} {}) skipped: {why}",
                    s.at, s.target
                ));
                continue;
            }
            out.push((
                order,
                Step {
                    at: order.at,
                    target: s.target.clone(),
                    level_percent: s.level_percent,
                    reason,
                },
            ));
        }
        out.sort_by_key(|a| a.0);
        // The night ends at dawn, or at solar midnight when the sun stops setting (polar day
        // begins); only a polar night continues into the next one with the luminaires on.
        let night_end = match night.dawn {
            SunEvent::At(t) => Some(t),
            SunEvent::AlwaysUp => Some(end),
            SunEvent::AlwaysDown | SunEvent::OutOfRange => None,
        };
        if let (Some(dawn), false) = (night_end, out.is_empty()) {
            let morning = out.iter().any(|(_, s)| s.at >= dawn);
            let last = &out[out.len() - 1].1;
            let all_off = |s: &Step| s.target == LightTarget::All && s.level_percent == 0.0;
            if !morning && !all_off(last) {
                out.push((
                    Order {
                        at: dawn,
                        deferred_from: None,
                        specificity: 0,
                        index: usize::MAX,
                    },
                    Step {
                        at: dawn,
                        target: LightTarget::All,
                        level_percent: 0.0,
                        reason: "dawn".into(),
                    },
                ));
            } else if morning && !out.iter().any(|(_, s)| s.at >= dawn && all_off(s)) {
                notes.push(
                    "steps after dawn: no implicit switch-off at dawn, and no step after dawn switches all luminaires off".to_string(),
                );
            }
        }
        (night, out, notes)
    }

    /// The plan of the night that starts on `date`.
    pub fn plan(&self, date: Date) -> Plan {
        let (night, steps, notes) = self.resolve(date);
        Plan {
            date,
            dusk: night.dusk.instant(),
            dawn: night.dawn.instant(),
            polar: night.polar(),
            steps: steps.into_iter().map(|(_, s)| s).collect(),
            notes,
            day: self
                .lighting
                .has_day_types()
                .then(|| self.lighting.day_type(date).to_string()),
        }
    }

    /// Whether a step for `step` applies to `target`.
    fn covers(&self, step: &LightTarget, target: &LightTarget) -> bool {
        match (step, target) {
            (LightTarget::All, _) => true,
            (LightTarget::Group(g), LightTarget::Group(h)) => g == h,
            (LightTarget::Group(g), LightTarget::Gear { bus, address }) => self
                .groups
                .iter()
                .any(|(b, n, m)| b == bus && n == g && m.contains(address)),
            (a @ LightTarget::Gear { .. }, b) => a == b,
            _ => false,
        }
    }

    /// The local date of `at`: the night of that date, or of the day before, holds it.
    fn local_date(&self, at: Timestamp) -> Date {
        at.to_zoned_datetime(self.tz.clone()).date()
    }

    fn nth(d: Date, days: i32) -> Option<Date> {
        d.checked_add(jiff::Span::new().days(days)).ok()
    }

    /// The level the programme wants for `target` at `at` (see the module docs for precedence);
    /// `None` when the programme is empty.
    pub fn level_at(&self, target: &LightTarget, at: Timestamp) -> Option<f64> {
        self.latest(at, |s| self.covers(s, target))
    }

    /// [`Programme::level_at`] for a luminaire whose groups the caller knows (e.g. read from the
    /// gear rather than the configuration).
    pub fn level_of(&self, lum: &Luminaire, at: Timestamp) -> Option<f64> {
        let gear = LightTarget::Gear {
            bus: lum.bus.clone(),
            address: lum.address,
        };
        self.latest(at, |t| match t {
            LightTarget::All => true,
            LightTarget::Group(g) => lum.groups.contains(g),
            g => *g == gear,
        })
    }

    /// The level of the latest step at or before `at` that `applies`; 0 % if none.
    fn latest(&self, at: Timestamp, applies: impl Fn(&LightTarget) -> bool) -> Option<f64> {
        if self.is_empty() {
            return None;
        }
        let d0 = self.local_date(at);
        let mut best: Option<Keyed> = None;
        let mut found_at = None;
        // A night's steps stay within a day of its dusk and dawn, so nights overlap little: once
        // a step is found, three older nights are enough to be sure none hides a later one.
        for back in -2..HORIZON_DAYS {
            let Some(d) = Self::nth(d0, -back) else { break };
            if found_at.is_some_and(|f: i32| back > f + 3) {
                break;
            }
            for k in self.resolve(d).1 {
                if k.0.at <= at && applies(&k.1.target) && best.as_ref().is_none_or(|b| k.0 > b.0) {
                    found_at.get_or_insert(back);
                    best = Some(k);
                }
            }
        }
        Some(best.map_or(0.0, |(_, s)| s.level_percent))
    }

    /// The first instant after `at` where the programme changes something, with the steps that
    /// apply then (in application order). `None` for an empty programme, or when nothing
    /// happens within a year (a polar day lasts less).
    pub fn next_change_after(&self, at: Timestamp) -> Option<(Timestamp, Vec<Step>)> {
        if self.is_empty() {
            return None;
        }
        let d0 = self.local_date(at);
        let mut found: Vec<Keyed> = Vec::new();
        let mut found_at = None;
        for fwd in -2..HORIZON_DAYS {
            let Some(d) = Self::nth(d0, fwd) else { break };
            if found_at.is_some_and(|f: i32| fwd > f + 3) {
                break;
            }
            for k in self.resolve(d).1 {
                if k.0.at <= at {
                    continue;
                }
                match found.first().map(|f| f.0.at) {
                    Some(t) if k.0.at > t => {}
                    // A local date that the time zone skipped (Samoa, 30 Dec 2011) resolves to
                    // the same night as the next one: each step once.
                    Some(t) if k.0.at == t => {
                        if !found.iter().any(|f| f.0 == k.0) {
                            found.push(k);
                        }
                    }
                    _ => {
                        found_at.get_or_insert(fwd);
                        found = vec![k];
                    }
                }
            }
        }
        found.sort_by_key(|a| a.0);
        let t = found.first()?.0.at;
        Some((t, found.into_iter().map(|(_, s)| s).collect()))
    }
}
