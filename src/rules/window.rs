//! Time windows: `during` (`night`, `"HH:MM-HH:MM"`) and `weekdays`, evaluated on wall time.
//!
//! - `night` is dusk → dawn of the astronomical clock ([`Programme::night`], the programme's
//!   twilight and the cabinet's latitude/longitude); polar cases follow the programme's nights.
//! - `"HH:MM-HH:MM"` is local time in `cabinet.timezone`, start included, end excluded; an end
//!   before the start crosses midnight (`"22:00-05:00"`). DST: a clock time in the spring gap
//!   moves forward by the gap, one in the autumn overlap takes its first occurrence (jiff's
//!   compatible disambiguation, as the programme does).
//! - `weekdays` filters by the local weekday on which the window *starts*: Friday's
//!   `22:00-05:00` runs into Saturday morning, and the night of Friday is the one whose dusk is
//!   on Friday. Without `during`, `weekdays` arms the rule for those whole local days.
//!
//! [`Window::state`] gives whether the window is open at an instant and when that may next
//! change, so callers only re-evaluate at boundaries.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use crate::config::time_zone;
use crate::config::{Config, During, Weekdays};
use crate::lighting::{PlanError, Programme};

/// What windows need to know of the sky and the clock: the nights and the time zone.
#[derive(Debug, Clone)]
pub struct Sky {
    programme: Programme,
    tz: TimeZone,
}

impl Sky {
    /// The cabinet's sky: its programme's nights and `cabinet.timezone`.
    pub fn new(cfg: &Config) -> Result<Sky, PlanError> {
        let tz = time_zone(&cfg.cabinet.timezone).map_err(|reason| PlanError::TimeZone {
            name: cfg.cabinet.timezone.clone(),
            reason,
        })?;
        Ok(Sky {
            programme: Programme::from_config(cfg)?,
            tz,
        })
    }

    /// The lighting programme (also the source of the nights).
    pub fn programme(&self) -> &Programme {
        &self.programme
    }

    /// `cabinet.timezone`.
    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    fn local_date(&self, at: Timestamp) -> Date {
        at.to_zoned_datetime(self.tz.clone()).date()
    }

    fn local(&self, d: Date, minutes: u16) -> Option<Timestamp> {
        d.at((minutes / 60) as i8, (minutes % 60) as i8, 0, 0)
            .to_zoned_datetime(self.tz.clone())
            .ok()
            .map(|z| z.timestamp())
    }
}

fn add_days(d: Date, n: i32) -> Option<Date> {
    d.checked_add(jiff::Span::new().days(n)).ok()
}

fn weekday(d: Date) -> u8 {
    d.weekday().to_monday_zero_offset() as u8
}

/// A rule's (or adaptive lighting's) time window; both parts optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// `during`.
    pub during: Option<During>,
    /// `weekdays`.
    pub weekdays: Option<Weekdays>,
}

impl Window {
    /// The night, every day.
    pub const NIGHT: Window = Window {
        during: Some(During::Night),
        weekdays: None,
    };

    /// True when the window is always open.
    pub fn is_always(&self) -> bool {
        self.during.is_none() && self.weekdays.is_none()
    }

    fn day_ok(&self, d: Date) -> bool {
        self.weekdays.is_none_or(|w| w.contains(weekday(d)))
    }

    /// The window's intervals `[start, end)` that may matter around `at`.
    fn intervals(&self, sky: &Sky, at: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        match self.during {
            Some(During::Night) => {
                let d0 = at.to_zoned_datetime(TimeZone::UTC).date();
                for n in -3..=9 {
                    let Some(d) = add_days(d0, n) else { continue };
                    if let Some((s, e)) = sky.programme.night(d).span {
                        if self.day_ok(sky.local_date(s)) {
                            out.push((s, e));
                        }
                    }
                }
            }
            Some(During::Clock { start, end }) => {
                let d0 = sky.local_date(at);
                for n in -2..=8 {
                    let Some(d) = add_days(d0, n).filter(|d| self.day_ok(*d)) else {
                        continue;
                    };
                    let end_day = if end > start { Some(d) } else { add_days(d, 1) };
                    if let (Some(s), Some(e)) = (
                        sky.local(d, start),
                        end_day.and_then(|ed| sky.local(ed, end)),
                    ) {
                        out.push((s, e));
                    }
                }
            }
            None => {
                let d0 = sky.local_date(at);
                for n in -2..=8 {
                    let Some(d) = add_days(d0, n).filter(|d| self.day_ok(*d)) else {
                        continue;
                    };
                    if let (Some(s), Some(e)) = (
                        sky.local(d, 0),
                        add_days(d, 1).and_then(|t| sky.local(t, 0)),
                    ) {
                        out.push((s, e));
                    }
                }
            }
        }
        out
    }

    /// Whether the window is open at `at`, and the next instant after `at` where that may change
    /// (`None`: not within the next week; look again later).
    pub fn state(&self, sky: &Sky, at: Timestamp) -> (bool, Option<Timestamp>) {
        if self.is_always() {
            return (true, None);
        }
        let iv = self.intervals(sky, at);
        let open = iv.iter().any(|(s, e)| *s <= at && at < *e);
        let next = iv
            .iter()
            .flat_map(|(s, e)| [*s, *e])
            .filter(|t| *t > at)
            .min();
        (open, next)
    }
}

/// A day's worth of waiting, for callers whose window gave no next boundary.
pub const RECHECK: SignedDuration = SignedDuration::from_hours(24);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_sources, Source};

    fn sky(tz: &str) -> Sky {
        let text = format!(
            "[cabinet]\nid = \"c\"\nlatitude = 47.322\nlongitude = 5.0415\ntimezone = \"{tz}\"\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n"
        );
        let cfg = load_sources(&[Source {
            name: "t".into(),
            text,
        }])
        .unwrap();
        Sky::new(&cfg).unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn clock_window_crosses_midnight_in_local_time() {
        let sky = sky("Europe/Paris");
        let w = Window {
            during: Some(During::Clock {
                start: 22 * 60,
                end: 5 * 60,
            }),
            weekdays: None,
        };
        // 21:59 Paris (CET, UTC+1) = 20:59Z: closed, opens at 21:00Z.
        assert_eq!(
            w.state(&sky, ts("2026-12-21T20:59:00Z")),
            (false, Some(ts("2026-12-21T21:00:00Z")))
        );
        assert_eq!(
            w.state(&sky, ts("2026-12-21T21:00:00Z")),
            (true, Some(ts("2026-12-22T04:00:00Z")))
        );
        assert!(w.state(&sky, ts("2026-12-22T03:59:59Z")).0);
        assert!(!w.state(&sky, ts("2026-12-22T04:00:00Z")).0);
    }

    #[test]
    fn weekdays_follow_the_day_the_window_starts() {
        let sky = sky("Europe/Paris");
        let fri = Window {
            during: Some(During::Clock {
                start: 22 * 60,
                end: 5 * 60,
            }),
            weekdays: Some(Weekdays(1 << 4)),
        };
        // 2026-12-18 is a Friday: its window runs into Saturday 05:00 local.
        assert!(fri.state(&sky, ts("2026-12-19T03:00:00Z")).0);
        // Thursday night is closed; the next opening is Friday 22:00 local.
        assert_eq!(
            fri.state(&sky, ts("2026-12-18T03:00:00Z")),
            (false, Some(ts("2026-12-18T21:00:00Z")))
        );
        let weekend = Window {
            during: None,
            weekdays: Some(Weekdays(0b110_0000)),
        };
        assert!(weekend.state(&sky, ts("2026-12-19T12:00:00Z")).0);
        assert!(!weekend.state(&sky, ts("2026-12-18T22:59:00Z")).0);
        assert!(weekend.state(&sky, ts("2026-12-18T23:00:00Z")).0);
    }

    #[test]
    fn night_is_dusk_to_dawn() {
        let sky = sky("UTC");
        let (open, next) = Window::NIGHT.state(&sky, ts("2026-12-21T12:00:00Z"));
        assert!(!open);
        let dusk = next.unwrap();
        // Dijon, winter solstice: sunset ≈ 15:52 UTC.
        assert!(
            (dusk - ts("2026-12-21T15:52:00Z")).as_secs().abs() < 180,
            "{dusk}"
        );
        let (open, dawn) = Window::NIGHT.state(&sky, dusk);
        assert!(open);
        assert!((dawn.unwrap() - ts("2026-12-22T07:24:00Z")).as_secs().abs() < 180);
        assert_eq!(Window::default().state(&sky, dusk), (true, None));
    }
}
