//! Clock safety (pure): wall-clock steps and an implausible wall clock.
//!
//! - A *step* is a change of the wall clock that the monotonic clock did not see: between two
//!   observations, `Δwall − Δmono` beyond [`JUMP_THRESHOLD`] (10 s) raises `clock_jump
//!   {offset_s}`. 10 s is far above NTP slewing and RTC drift over the longest wait between two
//!   observations (the core steps at least every minute: ±20 ppm is 1.2 ms), and below anything
//!   that moves a lighting step visibly. After a step the caller re-plans from now: everything
//!   wall-based (programme, windows, nights) is decided afresh for the new time, as a state,
//!   never by replaying the steps in between (nothing of the night is replayed or skipped on
//!   top of that: levels converge to what the programme wants now). `for` delays and holds run
//!   on monotonic time and are not moved.
//! - The wall clock is *untrusted* while it is before the floor: the build date (embedded by
//!   `build.rs`: `SOURCE_DATE_EPOCH` or the commit time, never before [`MIN_PLAUSIBLE`]) and
//!   the last timestamp the cabinet persisted (`state.rs`'s `saved_at`). An RTC reset to 1970 is
//!   caught this way. Entering that state raises `clock_untrusted` once; while it lasts the
//!   caller holds current levels (programme frozen, windows frozen; the DALI gear keep their own
//!   fallbacks). The floor is not raised while running, so an NTP correction backwards (an RTC
//!   that ran ahead) is a step, not an untrusted clock.

use std::time::Duration;

use jiff::Timestamp;

use super::Now;

/// Smallest wall-clock step reported as `clock_jump`.
pub const JUMP_THRESHOLD: Duration = Duration::from_secs(10);

/// No cabinet runs this code before this date (the year it was written).
pub const MIN_PLAUSIBLE: Timestamp = Timestamp::constant(1_767_225_600, 0); // 2026-01-01T00:00:00Z

/// The build date, never before [`MIN_PLAUSIBLE`].
pub fn build_floor() -> Timestamp {
    let secs: i64 = env!("CABINETD_BUILD_EPOCH").parse().unwrap_or(0);
    Timestamp::from_second(secs)
        .unwrap_or(MIN_PLAUSIBLE)
        .max(MIN_PLAUSIBLE)
}

/// What the guard noticed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockEvent {
    /// The wall clock stepped by this many seconds (positive: forward).
    Jump {
        /// `Δwall − Δmono`, seconds.
        offset_s: f64,
    },
    /// The wall clock went (or started) before the floor.
    Untrusted {
        /// The wall clock as read.
        wall: Timestamp,
        /// The floor.
        floor: Timestamp,
    },
    /// The wall clock is at or after the floor again.
    Trusted,
}

/// Watches the wall clock against the monotonic one.
#[derive(Debug, Clone)]
pub struct ClockGuard {
    floor: Timestamp,
    last: Option<Now>,
    trusted: Option<bool>,
}

impl ClockGuard {
    /// A guard with this floor (see the module docs).
    pub fn new(floor: Timestamp) -> ClockGuard {
        ClockGuard {
            floor,
            last: None,
            trusted: None,
        }
    }

    /// Whether the wall clock was plausible at the last observation (false before the first).
    pub fn trusted(&self) -> bool {
        self.trusted == Some(true)
    }

    /// One reading of both clocks; events in the order: jump, then trust change.
    pub fn observe(&mut self, now: Now) -> Vec<ClockEvent> {
        let mut out = Vec::new();
        if let Some(last) = self.last {
            let dwall = now.wall.duration_since(last.wall).as_secs_f64();
            let dmono = now.mono.saturating_sub(last.mono).as_secs_f64();
            let offset = dwall - dmono;
            if offset.abs() > JUMP_THRESHOLD.as_secs_f64() {
                out.push(ClockEvent::Jump {
                    offset_s: (offset * 1000.0).round() / 1000.0,
                });
            }
        }
        self.last = Some(now);
        let ok = now.wall >= self.floor;
        match (self.trusted, ok) {
            (Some(true) | None, false) => out.push(ClockEvent::Untrusted {
                wall: now.wall,
                floor: self.floor,
            }),
            (Some(false), true) => out.push(ClockEvent::Trusted),
            _ => {}
        }
        self.trusted = Some(ok);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mono_s: u64, wall: &str) -> Now {
        Now {
            mono: Duration::from_secs(mono_s),
            wall: wall.parse().unwrap(),
        }
    }

    #[test]
    fn build_floor_is_plausible() {
        assert!(build_floor() >= MIN_PLAUSIBLE);
        assert_eq!(MIN_PLAUSIBLE.to_string(), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn steps_of_six_hours_either_way_are_reported_small_drift_is_not() {
        let mut g = ClockGuard::new(MIN_PLAUSIBLE);
        assert!(g.observe(at(0, "2026-12-21T18:00:00Z")).is_empty());
        assert!(g.trusted());
        // 60 s later by both clocks, 5 s of drift: nothing.
        assert!(g.observe(at(60, "2026-12-21T18:01:05Z")).is_empty());
        assert_eq!(
            g.observe(at(120, "2026-12-22T00:02:05Z")),
            vec![ClockEvent::Jump { offset_s: 21600.0 }]
        );
        assert_eq!(
            g.observe(at(180, "2026-12-21T18:03:05Z")),
            vec![ClockEvent::Jump { offset_s: -21600.0 }]
        );
        assert!(g.trusted());
    }

    #[test]
    fn a_reset_to_1970_is_a_jump_and_untrusted_until_corrected() {
        let mut g = ClockGuard::new(MIN_PLAUSIBLE);
        assert!(g.observe(at(0, "2026-12-21T18:00:00Z")).is_empty());
        let ev = g.observe(at(10, "1970-01-01T00:00:10Z"));
        assert!(matches!(ev[0], ClockEvent::Jump { offset_s } if offset_s < -1.7e9));
        assert!(matches!(ev[1], ClockEvent::Untrusted { .. }));
        assert!(!g.trusted());
        // Raised once, not at every observation.
        assert!(g.observe(at(20, "1970-01-01T00:00:20Z")).is_empty());
        let ev = g.observe(at(30, "2026-12-21T18:00:30Z"));
        assert!(matches!(ev[0], ClockEvent::Jump { offset_s } if offset_s > 1.7e9));
        assert_eq!(ev[1], ClockEvent::Trusted);
    }

    #[test]
    fn a_boot_before_the_floor_is_untrusted_from_the_start() {
        let floor: Timestamp = "2026-12-21T00:00:00Z".parse().unwrap();
        let mut g = ClockGuard::new(floor);
        assert!(!g.trusted());
        assert!(matches!(
            g.observe(at(0, "2026-12-20T23:00:00Z"))[..],
            [ClockEvent::Untrusted { .. }]
        ));
        assert_eq!(
            g.observe(at(3600, "2026-12-21T00:00:00Z")),
            vec![ClockEvent::Trusted]
        );
    }
}
