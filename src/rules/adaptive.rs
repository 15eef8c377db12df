//! Usage-adaptive lighting (`[[lighting.adaptive]]`), the pure part: from the usage point's
//! readings, the level a target is raised to above its programme, the hold, and the fade back.
//!
//! Controller `adaptive:NAME`, just above the programme: it loses to rules, scenes and the
//! central post, and it only ever *raises* (the target gets the higher of the programme's level
//! and the raise; a raise at or below the programme leaves the programme in charge).
//!
//! Behaviour:
//! - armed only at night (dusk → dawn, the programme's twilight): in daytime, and at dawn, any
//!   raise ends at once (the programme switches off at dawn and a raise must not keep it lit);
//! - a good reading `v` (a rate, or a presence boolean counted as 1) maps through the flow table
//!   to a level: the row with the highest `flow ≤ v` (none: no activity). A level at or above
//!   the current raise takes effect at once and restarts the hold; a lower one is remembered;
//! - when the hold ends, the level steps down to the latest reading's level (hold restarted), or
//!   with no activity fades back to the programme over `fade` (the release carries the fade, so
//!   the programme's level is applied with `fade_s`);
//! - a non-good reading counts as no activity (a dead sensor does not keep the street lit).

use std::time::Duration;

use jiff::Timestamp;

use super::expr::{Sample, Scalar};
use super::window::{Sky, Window, RECHECK};
use super::Now;
use crate::config::Adaptive;
use crate::record::Quality;

/// What changed for the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Nothing to do.
    None,
    /// Raise to this level (percent), now.
    Raise(f64),
    /// Back to the programme, fading over this many seconds.
    Release(f64),
}

/// The state of one `[[lighting.adaptive]]`.
#[derive(Debug, Clone)]
pub struct AdaptiveRt {
    cfg: Adaptive,
    level: Option<f64>,
    hold_until: Option<Duration>,
    latest: f64,
    night: bool,
    night_next: Option<Timestamp>,
    night_fresh: bool,
}

impl AdaptiveRt {
    /// Not raised, night state unknown until the first step with a trusted clock.
    pub fn new(cfg: Adaptive) -> AdaptiveRt {
        AdaptiveRt {
            cfg,
            level: None,
            hold_until: None,
            latest: 0.0,
            night: false,
            night_next: None,
            night_fresh: false,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &Adaptive {
        &self.cfg
    }

    /// The level the table gives a sample (0: no activity).
    pub fn table(&self, s: Sample) -> f64 {
        if s.quality != Quality::Good {
            return 0.0;
        }
        let v = match s.value {
            Some(Scalar::Num(x)) => x,
            Some(Scalar::Bool(b)) => f64::from(u8::from(b)),
            None => return 0.0,
        };
        self.cfg
            .levels
            .iter()
            .rev()
            .find(|r| v >= r.flow)
            .map_or(0.0, |r| r.level_percent)
    }

    /// A reading of the usage point at `now` (monotonic).
    pub fn observe(&mut self, s: Sample, now: Duration) -> Change {
        let l = if self.night { self.table(s) } else { 0.0 };
        self.latest = l;
        if l <= 0.0 || self.level.is_some_and(|cur| l < cur) {
            return Change::None;
        }
        self.hold_until = Some(now + self.cfg.hold);
        if self.level == Some(l) {
            return Change::None;
        }
        self.level = Some(l);
        Change::Raise(l)
    }

    /// Night boundaries and the hold's end at `now`; `trusted = false` keeps the night state.
    pub fn step(&mut self, now: Now, sky: &Sky, trusted: bool) -> Change {
        if trusted && (!self.night_fresh || self.night_next.is_some_and(|n| now.wall >= n)) {
            let (open, next) = Window::NIGHT.state(sky, now.wall);
            self.night = open;
            self.night_next = Some(next.unwrap_or(now.wall + RECHECK));
            self.night_fresh = true;
            if !open && self.level.is_some() {
                self.level = None;
                self.hold_until = None;
                self.latest = 0.0;
                return Change::Release(0.0);
            }
        }
        match self.hold_until {
            Some(h) if h <= now.mono => {
                if self.latest > 0.0 {
                    self.hold_until = Some(now.mono + self.cfg.hold);
                    if self.level == Some(self.latest) {
                        return Change::None;
                    }
                    self.level = Some(self.latest);
                    Change::Raise(self.latest)
                } else {
                    self.level = None;
                    self.hold_until = None;
                    Change::Release(self.cfg.fade.as_secs_f64())
                }
            }
            _ => Change::None,
        }
    }

    /// The hold's end (monotonic) and the next night boundary (wall).
    pub fn next_deadline(&self) -> (Option<Duration>, Option<Timestamp>) {
        (self.hold_until, self.night_next)
    }

    /// A clock step: the night is evaluated again.
    pub fn replan(&mut self) {
        self.night_fresh = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FlowLevel, DEFAULT_FLOW_LEVELS};
    use crate::light::LightTarget;

    fn rt() -> AdaptiveRt {
        let mut a = AdaptiveRt::new(Adaptive {
            name: "a".into(),
            target: LightTarget::Group(1),
            usage: "c/flow".into(),
            hold: Duration::from_secs(300),
            fade: Duration::from_secs(30),
            levels: DEFAULT_FLOW_LEVELS.to_vec(),
        });
        a.night = true;
        a.night_fresh = true;
        a.night_next = Some(Timestamp::MAX);
        a
    }

    fn flow(x: f64) -> Sample {
        Sample {
            value: Some(Scalar::Num(x)),
            quality: Quality::Good,
        }
    }

    fn now(s: u64) -> Now {
        Now {
            mono: Duration::from_secs(s),
            wall: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_table_picks_the_highest_row_reached() {
        let a = rt();
        assert_eq!(a.table(flow(0.0)), 0.0);
        assert_eq!(a.table(flow(1.0)), 30.0);
        assert_eq!(a.table(flow(399.0)), 50.0);
        assert_eq!(a.table(flow(5000.0)), 100.0);
        let presence = Sample {
            value: Some(Scalar::Bool(true)),
            quality: Quality::Good,
        };
        assert_eq!(a.table(presence), 30.0);
        let bad = Sample {
            quality: Quality::Bad,
            ..flow(5000.0)
        };
        assert_eq!(a.table(bad), 0.0);
        let _ = FlowLevel {
            flow: 1.0,
            level_percent: 1.0,
        };
    }

    #[test]
    fn rises_at_once_holds_steps_down_then_fades_back() {
        let mut a = rt();
        let sky_free = |a: &mut AdaptiveRt, s: u64| {
            // Night state is fixed in these tests; only the hold matters.
            a.step(now(s), &dummy_sky(), false)
        };
        assert_eq!(
            a.observe(flow(450.0), Duration::from_secs(0)),
            Change::Raise(75.0)
        );
        // Lower activity does not lower the level during the hold.
        assert_eq!(
            a.observe(flow(120.0), Duration::from_secs(100)),
            Change::None
        );
        assert_eq!(sky_free(&mut a, 299), Change::None);
        assert_eq!(sky_free(&mut a, 300), Change::Raise(50.0));
        assert_eq!(a.next_deadline().0, Some(Duration::from_secs(600)));
        // Activity at the same level keeps the hold going.
        assert_eq!(
            a.observe(flow(150.0), Duration::from_secs(500)),
            Change::None
        );
        assert_eq!(sky_free(&mut a, 600), Change::None);
        assert_eq!(a.observe(flow(0.0), Duration::from_secs(700)), Change::None);
        assert_eq!(sky_free(&mut a, 799), Change::None);
        assert_eq!(sky_free(&mut a, 800), Change::Release(30.0));
        assert_eq!(a.next_deadline().0, None);
        // Higher activity rises at once.
        assert_eq!(
            a.observe(flow(20.0), Duration::from_secs(1200)),
            Change::Raise(30.0)
        );
        assert_eq!(
            a.observe(flow(2000.0), Duration::from_secs(1201)),
            Change::Raise(100.0)
        );
    }

    fn dummy_sky() -> Sky {
        let cfg = crate::config::load_sources(&[crate::config::Source {
            name: "t".into(),
            text: "[cabinet]\nid = \"c\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n".into(),
        }])
        .unwrap();
        Sky::new(&cfg).unwrap()
    }

    #[test]
    fn daytime_ends_a_raise_at_once_and_ignores_activity() {
        let sky = dummy_sky();
        let mut a = rt();
        a.night_fresh = false;
        let night: Timestamp = "2026-12-21T20:00:00Z".parse().unwrap();
        let day: Timestamp = "2026-12-22T10:00:00Z".parse().unwrap();
        let at = |mono: u64, wall: Timestamp| Now {
            mono: Duration::from_secs(mono),
            wall,
        };
        assert_eq!(a.step(at(0, night), &sky, true), Change::None);
        assert_eq!(
            a.observe(flow(2000.0), Duration::from_secs(1)),
            Change::Raise(100.0)
        );
        let dawn = a.next_deadline().1.unwrap();
        assert!(dawn > night && dawn < day, "{dawn}");
        assert_eq!(a.step(at(2, dawn), &sky, true), Change::Release(0.0));
        assert_eq!(
            a.observe(flow(2000.0), Duration::from_secs(3)),
            Change::None
        );
    }
}
