//! Astronomical clock: sunrise/sunset (or civil dawn/dusk) in UTC, after the NOAA solar
//! calculator's *spreadsheet* algorithm (Meeus, *Astronomical Algorithms*, ch. 25): Julian
//! century, geometric mean longitude and anomaly, equation of centre, apparent longitude with the
//! nutation term, corrected obliquity, declination and the equation of time.
//!
//! Invariants:
//! - a `date` here is a *solar* day at the given longitude: its events are counted from that
//!   date's UTC midnight and may fall on the previous or next UTC date far from Greenwich. Which
//!   solar day belongs to the cabinet's *local* date is the programme's business
//!   ([`super::Programme::night`]);
//! - the sun's position is evaluated at the event's own instant: guess, compute, recompute at the
//!   new estimate until two estimates agree within [`CONVERGED_SECS`] (at most
//!   [`MAX_ITERATIONS`]; 3 passes for most events of 2026 at Dijon, 60° N and Tromsø, 5 at
//!   most). Measured against Python `astral` 3.2 (`time_of_transit` at the same zenith, no extra
//!   refraction) for every day of 2026, sunrise and sunset: at Dijon (47.322 N, 5.0415 E) max
//!   0.62 s, mean 0.25 s at 90.833° (0.61 s / 0.25 s at 96°); at 60° N max 0.78 s, mean 0.27 s
//!   (0.85 s / 0.30 s at 96°), most of it our rounding to whole seconds. At Tromsø (69.65 N)
//!   within 1 s of the instant astral's own solar position crosses the altitude, where
//!   `time_of_transit`'s two fixed passes are off by up to a minute near the polar transitions
//!   (test `tests/astro_reference.rs`). The low-accuracy series used before was up to 154 s off
//!   (mean 82 s) at Dijon. Real sunsets differ from any formula by a minute or so (refraction
//!   varies with the weather): the point is a clock that does not drift with the season;
//! - whether there is an event at all is decided at the day's extremes, not at the guess: the sun
//!   rises on a date when it is below the altitude at the solar midnight before that date's solar
//!   noon and above it at noon; it sets when it is above at noon and below at the following solar
//!   midnight. Otherwise the result says which way it missed ([`SunEvent::AlwaysUp`] /
//!   [`SunEvent::AlwaysDown`]) instead of inventing a time, so polar transitions fall on the day
//!   the sun really stops (or starts) crossing the altitude;
//! - dates outside [`FIRST_DATE`]..=[`LAST_DATE`] (where NOAA calls these approximations
//!   "sufficiently accurate") are not computed: [`SunEvent::OutOfRange`]. Nothing here panics
//!   for any `Date`.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use crate::config::Twilight;

/// Official sunrise/sunset: centre of the sun 0.833° below the horizon (refraction and the solar
/// disc's radius).
pub const OFFICIAL_ZENITH: f64 = 90.833;
/// Civil twilight: centre of the sun 6° below the horizon.
pub const CIVIL_ZENITH: f64 = 96.0;

/// First date the clock computes: NOAA calls its approximations "sufficiently accurate" from
/// −1000 to 3000 ("very good" from 1800 to 2100, the range the programme plans: see
/// [`super::programme::FIRST_NIGHT`]).
pub const FIRST_DATE: Date = jiff::civil::date(-1000, 1, 1);
/// Last date the clock computes; see [`FIRST_DATE`].
pub const LAST_DATE: Date = jiff::civil::date(3000, 12, 31);

/// The iteration stops when two estimates of an event agree this closely (seconds).
pub const CONVERGED_SECS: f64 = 0.05;
/// At most this many passes per event (3 are typical, 5 the most seen in 2026 up to 69.65° N).
pub const MAX_ITERATIONS: usize = 12;

impl Twilight {
    /// The solar zenith angle, in degrees, that defines dusk and dawn.
    pub fn zenith(self) -> f64 {
        match self {
            Twilight::Official => OFFICIAL_ZENITH,
            Twilight::Civil => CIVIL_ZENITH,
        }
    }
}

/// A sunrise or sunset, or why there is none that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SunEvent {
    /// The sun crosses the altitude at this instant.
    At(Timestamp),
    /// The sun stays above the altitude all day (polar day).
    AlwaysUp,
    /// The sun stays below the altitude all day (polar night).
    AlwaysDown,
    /// The date is outside [`FIRST_DATE`]..=[`LAST_DATE`]: nothing was computed.
    OutOfRange,
}

impl SunEvent {
    /// The instant, if the sun crosses the altitude that day.
    pub fn instant(self) -> Option<Timestamp> {
        match self {
            SunEvent::At(t) => Some(t),
            _ => None,
        }
    }
}

/// Whether the clock computes `date`.
pub fn in_range(date: Date) -> bool {
    (FIRST_DATE..=LAST_DATE).contains(&date)
}

/// Julian day of `date` at 0h UTC (the proleptic Gregorian calendar, as jiff's).
fn julian_day(date: Date) -> f64 {
    const J2000_MIDNIGHT: f64 = 2451544.5; // 2000-01-01T00:00Z
    let days = date
        .duration_since(jiff::civil::date(2000, 1, 1))
        .as_secs()
        .div_euclid(86_400);
    J2000_MIDNIGHT + days as f64
}

/// The sun seen from the earth at one instant: declination (radians) and equation of time
/// (minutes), from the NOAA spreadsheet's formulas (the `T` of Meeus is taken in UT: ΔT moves
/// the sun by well under a second of event time).
struct SunPosition {
    declination: f64,
    eqtime: f64,
}

fn sun_position(jd: f64) -> SunPosition {
    let t = (jd - 2451545.0) / 36525.0;
    let l0 = (280.46646 + t * (36000.76983 + 0.0003032 * t)).rem_euclid(360.0);
    let m = 357.52911 + t * (35999.05029 - 0.0001537 * t);
    let e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t);
    let mr = m.to_radians();
    let centre = mr.sin() * (1.914602 - t * (0.004817 + 0.000014 * t))
        + (2.0 * mr).sin() * (0.019993 - 0.000101 * t)
        + (3.0 * mr).sin() * 0.000289;
    let omega = (125.04 - 1934.136 * t).to_radians();
    let apparent = (l0 + centre - 0.00569 - 0.00478 * omega.sin()).to_radians();
    let seconds = 21.448 - t * (46.815 + t * (0.00059 - t * 0.001813));
    let mean_obliquity = 23.0 + (26.0 + seconds / 60.0) / 60.0;
    let obliquity = (mean_obliquity + 0.00256 * omega.cos()).to_radians();
    let declination = (obliquity.sin() * apparent.sin()).asin();
    let y = (obliquity / 2.0).tan().powi(2);
    let l0r = l0.to_radians();
    let eq = y * (2.0 * l0r).sin() - 2.0 * e * mr.sin()
        + 4.0 * e * y * mr.sin() * (2.0 * l0r).cos()
        - 0.5 * y * y * (4.0 * l0r).sin()
        - 1.25 * e * e * (2.0 * mr).sin();
    SunPosition {
        declination,
        eqtime: 4.0 * eq.to_degrees(),
    }
}

/// Cosine of the hour angle at which the sun's centre is at `zenith` (degrees); outside
/// [-1, 1] when it never gets there that day.
fn cos_hour_angle(lat: f64, declination: f64, zenith: f64) -> f64 {
    let phi = lat.to_radians();
    (zenith.to_radians().cos() - phi.sin() * declination.sin()) / (phi.cos() * declination.cos())
}

/// `minutes` after `date`'s UTC midnight, to the whole second.
fn at_minutes(date: Date, minutes: f64) -> Option<Timestamp> {
    let midnight = date
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .ok()?
        .timestamp();
    // Whole seconds: the algorithm is good to about a second, more digits would be noise.
    midnight
        .checked_add(SignedDuration::from_secs((minutes * 60.0).round() as i64))
        .ok()
}

/// Minutes after `date`'s UTC midnight of its solar noon at longitude `lon`, iterated on the
/// equation of time at noon itself.
fn noon_minutes(jd0: f64, lon: f64) -> f64 {
    let mut t = 720.0 - 4.0 * lon;
    for _ in 0..MAX_ITERATIONS {
        let next = 720.0 - 4.0 * lon - sun_position(jd0 + t / 1440.0).eqtime;
        let done = (next - t).abs() * 60.0 < CONVERGED_SECS;
        t = next;
        if done {
            break;
        }
    }
    t
}

fn event(date: Date, lat: f64, lon: f64, zenith: f64, rising: bool) -> SunEvent {
    if !in_range(date) {
        return SunEvent::OutOfRange;
    }
    let jd0 = julian_day(date);
    let at = |minutes: f64| sun_position(jd0 + minutes / 1440.0);
    let noon = noon_minutes(jd0, lon);
    // The day's extremes: the sun is highest at noon, lowest at the solar midnight on the
    // event's side of it.
    if cos_hour_angle(lat, at(noon).declination, zenith) > 1.0 {
        return SunEvent::AlwaysDown;
    }
    let midnight = if rising { noon - 720.0 } else { noon + 720.0 };
    if cos_hour_angle(lat, at(midnight).declination, zenith) < -1.0 {
        return SunEvent::AlwaysUp;
    }
    // The sun crosses the altitude between the two: iterate on the event's own instant. Near a
    // polar transition an estimate may land where the altitude is not reached; the clamp then
    // pulls the next estimate to noon or midnight, on the crossing's side.
    let side = if rising { -1.0 } else { 1.0 };
    let mut t = noon + side * 360.0;
    for _ in 0..MAX_ITERATIONS {
        let sun = at(t);
        let cos_ha = cos_hour_angle(lat, sun.declination, zenith).clamp(-1.0, 1.0);
        let ha = cos_ha.acos().to_degrees();
        let next = 720.0 - 4.0 * (lon - side * ha) - sun.eqtime;
        let done = (next - t).abs() * 60.0 < CONVERGED_SECS;
        t = next;
        if done {
            break;
        }
    }
    at_minutes(date, t).map_or(SunEvent::OutOfRange, SunEvent::At)
}

/// Sunrise (or dawn, with the civil zenith) of the solar day `date` at latitude/longitude in
/// degrees (north and east positive), for the sun's centre at `zenith` degrees.
pub fn sunrise(date: Date, lat: f64, lon: f64, zenith: f64) -> SunEvent {
    event(date, lat, lon, zenith, true)
}

/// Sunset (or dusk, with the civil zenith) of the solar day `date`; see [`sunrise`].
pub fn sunset(date: Date, lat: f64, lon: f64, zenith: f64) -> SunEvent {
    event(date, lat, lon, zenith, false)
}

/// Solar noon of `date` at longitude `lon` (degrees east); `None` outside
/// [`FIRST_DATE`]..=[`LAST_DATE`].
pub fn solar_noon(date: Date, lon: f64) -> Option<Timestamp> {
    if !in_range(date) {
        return None;
    }
    at_minutes(date, noon_minutes(julian_day(date), lon))
}
#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const DIJON: (f64, f64) = (47.322, 5.0415);

    /// Asserts `ev` is within 2 minutes of `hh:mm` UTC on `day`.
    #[track_caller]
    fn near(ev: SunEvent, day: Date, hh: i8, mm: i8) {
        let want = day
            .at(hh, mm, 0, 0)
            .to_zoned_datetime(jiff::tz::TimeZone::UTC)
            .unwrap()
            .timestamp();
        let got = ev.instant().unwrap_or_else(|| panic!("no event: {ev:?}"));
        let diff = (got - want).as_secs().abs();
        assert!(diff <= 120, "got {got}, want {want} (±2 min)");
    }

    #[test]
    fn dijon_winter_solstice() {
        let d = date(2026, 12, 21);
        let (lat, lon) = DIJON;
        near(sunrise(d, lat, lon, OFFICIAL_ZENITH), d, 7, 24);
        near(sunset(d, lat, lon, OFFICIAL_ZENITH), d, 15, 52);
        near(sunrise(d, lat, lon, CIVIL_ZENITH), d, 6, 48);
        near(sunset(d, lat, lon, CIVIL_ZENITH), d, 16, 27);
    }

    #[test]
    fn dijon_summer_solstice() {
        let d = date(2026, 6, 21);
        let (lat, lon) = DIJON;
        near(sunrise(d, lat, lon, OFFICIAL_ZENITH), d, 3, 43);
        near(sunset(d, lat, lon, OFFICIAL_ZENITH), d, 19, 40);
        near(sunrise(d, lat, lon, CIVIL_ZENITH), d, 3, 2);
        near(sunset(d, lat, lon, CIVIL_ZENITH), d, 20, 20);
    }

    #[test]
    fn dijon_burn_hours_per_year() {
        // lighting.md: sunset-to-sunrise ≈ 4,291 h a year, civil dusk-to-dawn ≈ 3,877 h.
        let (lat, lon) = DIJON;
        let hours = |zenith: f64| {
            let mut total = 0.0;
            let mut d = date(2026, 1, 1);
            while d.year() == 2026 {
                let dusk = sunset(d, lat, lon, zenith).instant().unwrap();
                let dawn = sunrise(d.tomorrow().unwrap(), lat, lon, zenith)
                    .instant()
                    .unwrap();
                total += (dawn - dusk).as_secs_f64() / 3600.0;
                d = d.tomorrow().unwrap();
            }
            total
        };
        let official = hours(OFFICIAL_ZENITH);
        let civil = hours(CIVIL_ZENITH);
        assert!((official - 4291.0).abs() < 10.0, "{official}");
        assert!((civil - 3877.0).abs() < 10.0, "{civil}");
    }

    #[test]
    fn western_longitude_sunset_falls_on_the_next_utc_date() {
        // Honolulu (21.31 N, 157.86 W), 21 Dec 2026: sunset ≈ 17:55 HST = 03:55 UTC on 22 Dec.
        let d = date(2026, 12, 21);
        near(
            sunset(d, 21.31, -157.86, OFFICIAL_ZENITH),
            date(2026, 12, 22),
            3,
            55,
        );
    }

    #[test]
    fn polar_guard() {
        // Tromsø (69.65 N, 18.96 E): midnight sun in June, polar night in late December.
        let (lat, lon) = (69.65, 18.96);
        let june = date(2026, 6, 21);
        assert_eq!(sunset(june, lat, lon, OFFICIAL_ZENITH), SunEvent::AlwaysUp);
        assert_eq!(sunrise(june, lat, lon, OFFICIAL_ZENITH), SunEvent::AlwaysUp);
        let dec = date(2026, 12, 21);
        assert_eq!(
            sunrise(dec, lat, lon, OFFICIAL_ZENITH),
            SunEvent::AlwaysDown
        );
        // Civil twilight still happens at noon in Tromsø's polar night.
        assert!(matches!(
            sunrise(dec, lat, lon, CIVIL_ZENITH),
            SunEvent::At(_)
        ));
        assert_eq!(SunEvent::AlwaysDown.instant(), None);
    }

    /// A few of the reference times `tests/astro_reference.rs` compares every day of 2026
    /// with (astral 3.2 `time_of_transit`, no extra refraction), so the accuracy shows without
    /// Python: the March equinox is where the low-accuracy series was worst (declination
    /// −0.42°).
    #[test]
    fn within_two_seconds_of_astral_on_sample_days() {
        let cases = [
            (
                DIJON,
                OFFICIAL_ZENITH,
                "2026-03-20T05:43:03.90Z",
                "2026-03-20T17:52:20.45Z",
            ),
            (
                DIJON,
                CIVIL_ZENITH,
                "2026-03-20T05:12:32.97Z",
                "2026-03-20T18:22:56.40Z",
            ),
            (
                DIJON,
                OFFICIAL_ZENITH,
                "2026-06-21T03:43:17.27Z",
                "2026-06-21T19:40:01.16Z",
            ),
            (
                DIJON,
                CIVIL_ZENITH,
                "2026-12-21T06:48:07.92Z",
                "2026-12-21T16:27:40.12Z",
            ),
            (
                (60.0, 10.0),
                OFFICIAL_ZENITH,
                "2026-03-20T05:21:54.37Z",
                "2026-03-20T17:34:21.71Z",
            ),
            (
                (60.0, 10.0),
                CIVIL_ZENITH,
                "2026-06-21T00:09:03.79Z",
                "2026-06-21T22:34:32.38Z",
            ),
            (
                (60.0, 10.0),
                OFFICIAL_ZENITH,
                "2026-12-21T08:21:56.46Z",
                "2026-12-21T14:14:10.50Z",
            ),
        ];
        for ((lat, lon), z, rise, set) in cases {
            let rise: Timestamp = rise.parse().unwrap();
            let set: Timestamp = set.parse().unwrap();
            let d = rise.to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
            for (ev, want) in [
                (sunrise(d, lat, lon, z), rise),
                (sunset(d, lat, lon, z), set),
            ] {
                let got = ev.instant().unwrap();
                let e = (got - want).as_secs_f64().abs();
                assert!(e <= 2.0, "{lat} {lon} {z}: got {got}, astral {want}");
            }
        }
    }

    #[test]
    fn out_of_range_dates_are_not_computed() {
        let (lat, lon) = DIJON;
        for d in [Date::MIN, date(-1001, 12, 31), date(3001, 1, 1), Date::MAX] {
            assert_eq!(sunrise(d, lat, lon, OFFICIAL_ZENITH), SunEvent::OutOfRange);
            assert_eq!(sunset(d, lat, lon, CIVIL_ZENITH), SunEvent::OutOfRange);
            assert_eq!(solar_noon(d, lon), None);
            assert_eq!(SunEvent::OutOfRange.instant(), None);
        }
        for d in [FIRST_DATE, LAST_DATE] {
            assert!(matches!(
                sunrise(d, lat, lon, OFFICIAL_ZENITH),
                SunEvent::At(_)
            ));
            assert!(matches!(
                sunset(d, lat, lon, OFFICIAL_ZENITH),
                SunEvent::At(_)
            ));
            assert!(solar_noon(d, lon).is_some());
        }
    }

    #[test]
    fn solar_noon_dijon() {
        // 21 Dec: eqtime ≈ +1.7 min, so noon ≈ 12:00 − 20.2 − 1.7 min ≈ 11:38 UTC.
        let d = date(2026, 12, 21);
        near(SunEvent::At(solar_noon(d, DIJON.1).unwrap()), d, 11, 38);
    }
}
