//! Astronomical clock: NOAA sunrise/sunset (Global Monitoring Laboratory "General Solar Position
//! Calculations"), in UTC.
//!
//! Invariants:
//! - a `date` is a solar day at the given longitude: its events are minutes from that date's
//!   UTC midnight, and may fall on the previous or next UTC date far from Greenwich;
//! - the fractional year is evaluated at the event itself (one refinement pass), which keeps the
//!   result within about a minute of the NOAA calculator;
//! - when the sun does not cross the chosen altitude that day, the result says which way it
//!   missed ([`SunEvent::AlwaysUp`] / [`SunEvent::AlwaysDown`]) instead of inventing a time.

use std::f64::consts::PI;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};

use crate::config::Twilight;

/// Official sunrise/sunset: centre of the sun 0.833° below the horizon (refraction and the solar
/// disc's radius).
pub const OFFICIAL_ZENITH: f64 = 90.833;
/// Civil twilight: centre of the sun 6° below the horizon.
pub const CIVIL_ZENITH: f64 = 96.0;

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

/// Fractional year (radians), equation of time (minutes) and declination (radians) at `minutes`
/// after the date's UTC midnight.
fn solar(date: Date, minutes: f64) -> (f64, f64) {
    let days = if date.in_leap_year() { 366.0 } else { 365.0 };
    let hour = minutes / 60.0;
    let g = 2.0 * PI / days * (f64::from(date.day_of_year()) - 1.0 + (hour - 12.0) / 24.0);
    let eqtime = 229.18
        * (0.000075 + 0.001868 * g.cos()
            - 0.032077 * g.sin()
            - 0.014615 * (2.0 * g).cos()
            - 0.040849 * (2.0 * g).sin());
    let decl = 0.006918 - 0.399912 * g.cos() + 0.070257 * g.sin() - 0.006758 * (2.0 * g).cos()
        + 0.000907 * (2.0 * g).sin()
        - 0.002697 * (3.0 * g).cos()
        + 0.00148 * (3.0 * g).sin();
    (eqtime, decl)
}

fn at_minutes(date: Date, minutes: f64) -> Timestamp {
    let midnight = date
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .expect("a civil date at UTC midnight is always in range")
        .timestamp();
    // Whole seconds: the equations are good to about a minute, more digits would be noise.
    midnight + SignedDuration::from_secs((minutes * 60.0).round() as i64)
}

fn event(date: Date, lat: f64, lon: f64, zenith: f64, rising: bool) -> SunEvent {
    let phi = lat.to_radians();
    // First guess: local solar noon; then re-evaluate the year fraction at the event itself.
    let mut minutes = 720.0 - 4.0 * lon;
    let mut result = SunEvent::AlwaysDown;
    for _ in 0..2 {
        let (eqtime, decl) = solar(date, minutes);
        let cos_ha = zenith.to_radians().cos() / (phi.cos() * decl.cos()) - phi.tan() * decl.tan();
        if cos_ha > 1.0 {
            return SunEvent::AlwaysDown;
        }
        if cos_ha < -1.0 {
            return SunEvent::AlwaysUp;
        }
        let ha = cos_ha.acos().to_degrees();
        minutes = if rising {
            720.0 - 4.0 * (lon + ha) - eqtime
        } else {
            720.0 - 4.0 * (lon - ha) - eqtime
        };
        result = SunEvent::At(at_minutes(date, minutes));
    }
    result
}

/// Sunrise (or dawn, with the civil zenith) of `date` at latitude/longitude in degrees (north
/// and east positive), for the sun's centre at `zenith` degrees.
pub fn sunrise(date: Date, lat: f64, lon: f64, zenith: f64) -> SunEvent {
    event(date, lat, lon, zenith, true)
}

/// Sunset (or dusk, with the civil zenith) of `date`; see [`sunrise`].
pub fn sunset(date: Date, lat: f64, lon: f64, zenith: f64) -> SunEvent {
    event(date, lat, lon, zenith, false)
}

/// Solar noon of `date` at longitude `lon` (degrees east).
pub fn solar_noon(date: Date, lon: f64) -> Timestamp {
    let (eqtime, _) = solar(date, 720.0 - 4.0 * lon);
    let minutes = 720.0 - 4.0 * lon - eqtime;
    let (eqtime, _) = solar(date, minutes);
    at_minutes(date, 720.0 - 4.0 * lon - eqtime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    const DIJON: (f64, f64) = (47.322, 5.041);

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

    #[test]
    fn solar_noon_dijon() {
        // 21 Dec: eqtime ≈ +1.7 min, so noon ≈ 12:00 − 20.2 − 1.7 min ≈ 11:38 UTC.
        let d = date(2026, 12, 21);
        near(SunEvent::At(solar_noon(d, DIJON.1)), d, 11, 38);
    }
}
