//! When to remind the log that the central post is unreachable (pure): first after
//! [`FIRST_NOTICE`] (a broker that is merely slow to accept is not news), then every
//! [`REMINDER`] while the outage lasts. Counting starts at the daemon's start: a broker never
//! reached is an outage too. The uplink's driver asks every [`TICK`].

use std::time::{Duration, Instant};

/// Delay before the first "central post unreachable" line.
pub const FIRST_NOTICE: Duration = Duration::from_secs(5);
/// Interval of the reminders while the outage lasts.
pub const REMINDER: Duration = Duration::from_secs(60);
/// How often the driver asks.
pub const TICK: Duration = Duration::from_secs(1);

/// The reminder's state.
#[derive(Debug)]
pub struct OutageReminder {
    down_since: Option<Instant>,
    last_notice: Option<Instant>,
}

impl OutageReminder {
    /// Down since `now` (not connected yet).
    pub fn new(now: Instant) -> Self {
        OutageReminder {
            down_since: Some(now),
            last_notice: None,
        }
    }

    /// Returns how long the uplink has been down when a notice is due.
    pub fn observe(&mut self, connected: bool, now: Instant) -> Option<Duration> {
        if connected {
            self.down_since = None;
            self.last_notice = None;
            return None;
        }
        let since = *self.down_since.get_or_insert(now);
        let due = match self.last_notice {
            None => now.saturating_duration_since(since) >= FIRST_NOTICE,
            Some(last) => now.saturating_duration_since(last) >= REMINDER,
        };
        if due {
            self.last_notice = Some(now);
            Some(now.saturating_duration_since(since))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_come_after_5_s_then_every_minute_and_reset_on_connect() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut o = OutageReminder::new(t0);
        assert_eq!(o.observe(false, at(1)), None);
        assert_eq!(o.observe(false, at(5)), Some(Duration::from_secs(5)));
        assert_eq!(o.observe(false, at(30)), None);
        assert_eq!(o.observe(false, at(65)), Some(Duration::from_secs(65)));
        assert_eq!(o.observe(true, at(70)), None);
        assert_eq!(o.observe(false, at(71)), None);
        assert_eq!(o.observe(false, at(76)), Some(Duration::from_secs(5)));
    }
}
