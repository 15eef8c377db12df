//! The cabinet's mode (`connected` / `autonomous`) from the uplink state, with
//! `uplink.autonomous_after` (SPEC §2 v1.1): pure, on explicit monotonic time.
//!
//! Invariants:
//! - the mode becomes `autonomous` only once the uplink has been down for `autonomous_after`
//!   without interruption (a blip is not a crisis), and `connected` at the first reconnect;
//! - each change is reported once, by [`ModeTracker::step`], as `(from, to)`;
//! - the tracker starts `connected`; when the uplink is not up yet at start (the daemon), the
//!   outage counts from the start, so a cabinet that boots without its broker turns autonomous
//!   after `autonomous_after`. `cabinetd simulate` starts with the uplink up (SPEC §1).

use std::fmt;
use std::time::Duration;

/// Connected to the central post, or running on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// The uplink is up (or has been down for less than `autonomous_after`).
    Connected,
    /// The uplink has been down for at least `autonomous_after`.
    Autonomous,
}

impl Mode {
    /// The SPEC name: `connected` or `autonomous`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Connected => "connected",
            Mode::Autonomous => "autonomous",
        }
    }

    /// Parses the SPEC name.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "connected" => Some(Mode::Connected),
            "autonomous" => Some(Mode::Autonomous),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Follows the uplink and decides the mode.
#[derive(Debug, Clone)]
pub struct ModeTracker {
    after: Duration,
    up: bool,
    down_since: Option<Duration>,
    mode: Mode,
}

impl ModeTracker {
    /// A tracker in mode `connected`; `up` says whether the uplink is up at `now` (monotonic).
    pub fn new(autonomous_after: Duration, up: bool, now: Duration) -> ModeTracker {
        ModeTracker {
            after: autonomous_after,
            up,
            down_since: (!up).then_some(now),
            mode: Mode::Connected,
        }
    }

    /// The same tracker with another `autonomous_after` (a reload): an outage in progress
    /// keeps counting from when it started.
    pub fn with_after(mut self, autonomous_after: Duration) -> ModeTracker {
        self.after = autonomous_after;
        self
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the uplink is up.
    pub fn uplink_up(&self) -> bool {
        self.up
    }

    /// The uplink went up or down at `now`.
    pub fn set_uplink(&mut self, up: bool, now: Duration) {
        if up == self.up {
            return;
        }
        self.up = up;
        self.down_since = (!up).then_some(now);
    }

    /// The mode change due at `now`, if any, as `(from, to)`.
    pub fn step(&mut self, now: Duration) -> Option<(Mode, Mode)> {
        let want = match self.down_since {
            Some(since) if now.saturating_sub(since) >= self.after => Mode::Autonomous,
            Some(_) => self.mode,
            None => Mode::Connected,
        };
        (want != self.mode).then(|| {
            let from = std::mem::replace(&mut self.mode, want);
            (from, want)
        })
    }

    /// When [`ModeTracker::step`] must run next (monotonic), if a change is pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.mode, self.down_since) {
            (Mode::Connected, Some(since)) => Some(since + self.after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_blip_is_not_a_crisis_and_reconnect_is_immediate() {
        let mut m = ModeTracker::new(S(60), true, S(0));
        m.set_uplink(false, S(10));
        assert_eq!(m.next_deadline(), Some(S(70)));
        assert_eq!(m.step(S(69)), None);
        m.set_uplink(true, S(69));
        assert_eq!(m.step(S(80)), None);
        assert_eq!(m.next_deadline(), None);
        m.set_uplink(false, S(100));
        assert_eq!(m.step(S(160)), Some((Mode::Connected, Mode::Autonomous)));
        assert_eq!(m.step(S(161)), None, "reported once");
        assert_eq!(m.next_deadline(), None);
        m.set_uplink(true, S(200));
        assert_eq!(m.step(S(200)), Some((Mode::Autonomous, Mode::Connected)));
        assert_eq!(m.mode(), Mode::Connected);
    }

    #[test]
    fn a_start_without_uplink_counts_from_the_start() {
        let mut m = ModeTracker::new(S(60), false, S(5));
        assert_eq!(m.step(S(64)), None);
        assert_eq!(m.step(S(65)), Some((Mode::Connected, Mode::Autonomous)));
        // Repeated "down" reports do not restart the outage.
        m.set_uplink(false, S(70));
        assert_eq!(m.mode(), Mode::Autonomous);
    }

    #[test]
    fn names() {
        for m in [Mode::Connected, Mode::Autonomous] {
            assert_eq!(Mode::parse(m.as_str()), Some(m));
        }
        assert_eq!(Mode::parse("offline"), None);
    }
}
