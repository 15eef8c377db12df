//! UTC calendar arithmetic for the few timestamps ONVIF needs (pure).
//!
//! Cameras speak two shapes: the `tt:DateTime` structure of GetSystemDateAndTime (Year, Month,
//! Day, Hour, Minute, Second as separate integers) and `xs:dateTime` strings (`CurrentTime`,
//! `TerminationTime`, `UtcTime`). We write `xs:dateTime` in exactly one form,
//! `YYYY-MM-DDThh:mm:ssZ` (UTC, literal `Z`: Hikvision rejects `+00:00`), and read any
//! reasonable one: fractional seconds, `Z`, `±hh:mm`, or no zone at all (a common quirk, taken
//! as UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A civil UTC date and time, second resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcDateTime {
    /// Year (e.g. 2026).
    pub year: i32,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    /// 0–23.
    pub hour: u8,
    /// 0–59.
    pub minute: u8,
    /// 0–60 (a leap second is accepted and folded into the next minute's arithmetic).
    pub second: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u8, d: u8) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    ((yoe + era * 400 + i64::from(m <= 2)) as i32, m, d)
}

fn days_in_month(y: i32, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

impl UtcDateTime {
    /// Builds a checked value (None when a field is out of range).
    pub fn new(year: i32, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<Self> {
        let ok = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month)
            && hour < 24
            && minute < 60
            && second <= 60;
        ok.then_some(UtcDateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Seconds since the Unix epoch.
    pub fn unix(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    /// The civil time of a Unix timestamp (seconds).
    pub fn from_unix(secs: i64) -> Self {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        UtcDateTime {
            year,
            month,
            day,
            hour: (s / 3600) as u8,
            minute: (s / 60 % 60) as u8,
            second: (s % 60) as u8,
        }
    }

    /// The civil time of a [`SystemTime`] (truncated to the second).
    pub fn from_system(t: SystemTime) -> Self {
        Self::from_unix(unix_seconds(t).floor() as i64)
    }

    /// `YYYY-MM-DDThh:mm:ssZ`, the only form this crate writes.
    pub fn to_xsd(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// Parses an `xs:dateTime`: optional fraction, then `Z`, `±hh:mm` or nothing (taken as
    /// UTC). The zone offset is applied, so the result is UTC.
    pub fn parse_xsd(s: &str) -> Option<Self> {
        let s = s.trim();
        let b = s.as_bytes();
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let t = s.get(r)?;
            t.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| t.parse().ok())?
        };
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let dt = UtcDateTime::new(
            num(0..4)? as i32,
            num(5..7)? as u8,
            num(8..10)? as u8,
            num(11..13)? as u8,
            num(14..16)? as u8,
            num(17..19)? as u8,
        )?;
        let mut rest = &s[19..];
        if let Some(frac) = rest.strip_prefix('.') {
            let n = frac.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return None;
            }
            rest = &frac[n..];
        }
        let offset = match rest {
            "" | "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let (h, m) = rest[1..].split_once(':')?;
                if h.len() != 2 || m.len() != 2 {
                    return None;
                }
                let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
                if h > 14 || m > 59 {
                    return None;
                }
                sign * (h * 3600 + m * 60)
            }
        };
        Some(Self::from_unix(dt.unix() - offset))
    }
}

/// Seconds since the Unix epoch, fractional, negative before it.
pub fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// `PT<n>S`: durations are written in whole seconds only (some cameras misread minutes).
pub fn xsd_duration(d: Duration) -> String {
    format!("PT{}S", d.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for secs in [
            0i64,
            951_782_400,
            1_284_623_445,
            4_102_444_800,
            -86_400,
            1_709_164_800,
        ] {
            assert_eq!(UtcDateTime::from_unix(secs).unix(), secs);
        }
        let d = UtcDateTime::from_unix(1_284_623_445);
        assert_eq!(d.to_xsd(), "2010-09-16T07:50:45Z");
        assert_eq!(
            UtcDateTime::from_unix(951_782_400).to_xsd(),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn parses_the_shapes_cameras_send() {
        let want = UtcDateTime::new(2018, 2, 11, 13, 37, 1).unwrap();
        for s in [
            "2018-02-11T13:37:01Z",
            " 2018-02-11T13:37:01.123Z\n",
            "2018-02-11T13:37:01",
            "2018-02-11T14:37:01+01:00",
            "2018-02-11T11:07:01.5-02:30",
        ] {
            assert_eq!(UtcDateTime::parse_xsd(s), Some(want), "{s}");
        }
        for s in [
            "",
            "2018-02-30T00:00:00Z",
            "2018-02-11T25:00:00Z",
            "2018-02-11T13:37:01+0100",
            "x018-02-11T13:37:01Z",
            "2018-02-11T13:37:01.Z",
        ] {
            assert_eq!(UtcDateTime::parse_xsd(s), None, "{s}");
        }
    }

    #[test]
    fn durations_in_seconds() {
        assert_eq!(xsd_duration(Duration::from_secs(600)), "PT600S");
        assert_eq!(xsd_duration(Duration::from_millis(10)), "PT1S");
    }
}
