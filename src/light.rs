//! The lighting vocabulary that commands, the configuration, the lighting programme and the DALI
//! buses share: targets and their text form, step times, light requests and their answers, and
//! the one validation of `level_percent`, `fade_s` and `hold_s`.
//!
//! A leaf: it imports nothing of the crate, so everything above can use it without a cycle
//! (`light ← config ← equipment ← command ← daemon`).

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;

/// Lowest `level_percent` (off).
pub const LEVEL_MIN: f64 = 0.0;
/// Highest `level_percent` (full output).
pub const LEVEL_MAX: f64 = 100.0;
/// Longest `fade_s`: DALI's longest fade is 90.5 s; an hour is generous and still catches a
/// fade given in milliseconds by mistake.
pub const FADE_MAX_S: f64 = 3600.0;
/// Longest `hold_s`: a central override holds at most a day before the programme takes over.
pub const HOLD_MAX_S: f64 = 86_400.0;
/// Largest offset of a `dusk±…` / `dawn±…` step: more than half a day is certainly a typo, and
/// the programme relies on a night's steps staying within a day of its dusk and dawn.
pub const MAX_OFFSET_SECS: i64 = 12 * 3600;

/// What a light command or a programme step acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LightTarget {
    /// Every luminaire of every bus.
    All,
    /// A DALI group number 0..=15 (on every bus that has it).
    Group(u8),
    /// One luminaire `BUS/ADDR`.
    Gear {
        /// Bus (device) name.
        bus: String,
        /// Short address 0..=63.
        address: u8,
    },
}

impl LightTarget {
    /// 0 for `all`, 1 for a group, 2 for one gear: the narrower target wins a tie.
    pub fn specificity(&self) -> u8 {
        match self {
            LightTarget::All => 0,
            LightTarget::Group(_) => 1,
            LightTarget::Gear { .. } => 2,
        }
    }
}

impl fmt::Display for LightTarget {
    /// The text form [`parse_target`] reads: `all`, `group:N`, `BUS/ADDR`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LightTarget::All => f.write_str("all"),
            LightTarget::Group(g) => write!(f, "group:{g}"),
            LightTarget::Gear { bus, address } => write!(f, "{bus}/{address}"),
        }
    }
}

/// Parses a light target as `light.set` writes it: `all`, `group:N` (0..=15) or `BUS/ADDR`
/// (short address 0..=63). The error says what is wrong, without naming the field (the caller
/// knows whether it is `args.target` or `lighting.step[i].target`).
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
    t.to_string()
}

/// When a lighting step happens, relative to the night it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepTime {
    /// Dusk of the night, plus this many seconds (negative: before).
    Dusk(i64),
    /// Dawn ending the night, plus this many seconds (negative: before).
    Dawn(i64),
    /// A local clock time in `cabinet.timezone`, its occurrence between dusk and dawn.
    Clock {
        /// 0..=23.
        hour: u8,
        /// 0..=59.
        minute: u8,
    },
}

impl fmt::Display for StepTime {
    /// `dusk`, `dusk+15m`, `dawn-30m`, `22:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = |f: &mut fmt::Formatter<'_>, name: &str, s: i64| {
            f.write_str(name)?;
            if s != 0 {
                let sign = if s < 0 { '-' } else { '+' };
                let d = Duration::from_secs(s.unsigned_abs());
                write!(f, "{sign}{}", humantime::format_duration(d))?;
            }
            Ok(())
        };
        match *self {
            StepTime::Dusk(s) => offset(f, "dusk", s),
            StepTime::Dawn(s) => offset(f, "dawn", s),
            StepTime::Clock { hour, minute } => write!(f, "{hour:02}:{minute:02}"),
        }
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

/// A level for one bus to apply, answered on `reply`. The bus is a plain executor: who decides
/// the level (programme, rule, scene, central post) and how long it holds is the rules core's.
#[derive(Debug)]
pub struct LightRequest {
    /// What to act on.
    pub target: LightTarget,
    /// What to do.
    pub action: LightAction,
    /// Exactly one reply per request.
    pub reply: oneshot::Sender<Result<(), LightError>>,
}

/// The lighting action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LightAction {
    /// Set the level (DAPC); the bus remembers it per gear and sends it again to a gear that
    /// comes back (`gear_found`, a bus power return).
    Set {
        /// 0..=100 % of full output (standard DALI curve).
        level_percent: f64,
        /// Fade duration; `None` keeps the gear's fade time.
        fade_s: Option<f64>,
    },
}

/// Why a light request did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    /// The request is wrong (result `rejected`); the text names the field.
    #[error("{0}")]
    Rejected(String),
    /// The bus could not carry it out (result `failed`).
    #[error("{0}")]
    Failed(String),
}

impl LightError {
    /// True for [`LightError::Rejected`].
    pub fn is_rejection(&self) -> bool {
        matches!(self, LightError::Rejected(_))
    }
}

/// The one check of a `Set`'s arguments (commands, DALI buses): each error names its field as
/// `args.FIELD`. The configuration checks its levels against the same [`LEVEL_MIN`] /
/// [`LEVEL_MAX`].
pub fn check_set(
    level_percent: f64,
    fade_s: Option<f64>,
    hold_s: Option<f64>,
) -> Result<(), LightError> {
    let bad = |f: &str, why: String| Err(LightError::Rejected(format!("field `args.{f}`: {why}")));
    if !(LEVEL_MIN..=LEVEL_MAX).contains(&level_percent) {
        return bad(
            "level_percent",
            format!("{level_percent} is outside {LEVEL_MIN}..={LEVEL_MAX}"),
        );
    }
    if let Some(f) = fade_s {
        if !(0.0..=FADE_MAX_S).contains(&f) {
            return bad("fade_s", format!("{f} is outside 0..={FADE_MAX_S} s"));
        }
    }
    if let Some(h) = hold_s {
        if !(h > 0.0 && h <= HOLD_MAX_S) {
            return bad(
                "hold_s",
                format!("{h} must be more than 0 and at most {HOLD_MAX_S} s"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_times_parse_and_print() {
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
        for (text, shown) in [
            ("dusk", "dusk"),
            ("dusk+15min", "dusk+15m"),
            ("dawn-30min", "dawn-30m"),
            ("05:30", "05:30"),
        ] {
            let at = parse_step_time(text).unwrap();
            assert_eq!(at.to_string(), shown);
            assert_eq!(parse_step_time(shown), Ok(at));
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
        assert_eq!(
            parse_target("bus-a/12").unwrap(),
            LightTarget::Gear {
                bus: "bus-a".into(),
                address: 12
            }
        );
    }

    #[test]
    fn set_arguments_name_their_field() {
        assert!(check_set(100.0, Some(0.0), Some(1.0)).is_ok());
        assert!(check_set(0.0, Some(FADE_MAX_S), Some(HOLD_MAX_S)).is_ok());
        for (args, field) in [
            ((101.0, None, None), "level_percent"),
            ((f64::NAN, None, None), "level_percent"),
            ((50.0, Some(-1.0), None), "fade_s"),
            ((50.0, Some(FADE_MAX_S + 1.0), None), "fade_s"),
            ((50.0, None, Some(0.0)), "hold_s"),
            ((50.0, None, Some(HOLD_MAX_S + 1.0)), "hold_s"),
        ] {
            let e = check_set(args.0, args.1, args.2).unwrap_err();
            assert!(e.is_rejection());
            assert!(e.to_string().contains(&format!("args.{field}")), "{e}");
        }
    }
}
