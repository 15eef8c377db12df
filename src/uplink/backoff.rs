//! Reconnect pacing and broker failover (pure, no I/O).
//!
//! rumqttc reconnects immediately on the next `poll` after an error (pitfall 3), so the uplink
//! sleeps [`Backoff::next_delay`] first: quick at first (a broker restart is usually short), then
//! doubling up to a cap, with jitter so a street of cabinets does not reconnect in lockstep.

use std::time::Duration;

/// Capped exponential backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start near `first` and never exceed `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        Backoff {
            first,
            cap,
            attempt: 0,
        }
    }

    /// The delay before the next attempt. `jitter` in `[0, 1)` picks a point in the upper half
    /// of the current step.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// A session was established: the next failure retries quickly again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Which broker of the failover list to try next.
#[derive(Debug, Clone)]
pub struct Failover {
    brokers: usize,
    current: usize,
}

impl Failover {
    /// Start with the first of `brokers` (at least one).
    pub fn new(brokers: usize) -> Self {
        Failover {
            brokers: brokers.max(1),
            current: 0,
        }
    }

    /// Index of the broker to try.
    pub fn current(&self) -> usize {
        self.current
    }

    /// A connection attempt failed: try the next broker in order, wrapping around.
    pub fn attempt_failed(&mut self) {
        self.current = (self.current + 1) % self.brokers;
    }

    /// An established session was lost: prefer the first broker again.
    pub fn session_lost(&mut self) {
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_quick_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(d[0], Duration::from_millis(100));
        assert_eq!(d[1], Duration::from_millis(200));
        assert_eq!(d[5], Duration::from_millis(3200));
        assert_eq!(d[9], Duration::from_secs(5));
        // Jitter only shortens, down to half the step.
        assert_eq!(b.next_delay(0.0), Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay(0.3) <= Duration::from_millis(100));
    }

    #[test]
    fn failover_walks_the_list_and_returns_to_the_primary_after_a_session() {
        let mut f = Failover::new(3);
        assert_eq!(f.current(), 0);
        f.attempt_failed();
        f.attempt_failed();
        assert_eq!(f.current(), 2);
        f.attempt_failed();
        assert_eq!(f.current(), 0);
        f.attempt_failed();
        f.session_lost();
        assert_eq!(f.current(), 0);
        let mut single = Failover::new(1);
        single.attempt_failed();
        assert_eq!(single.current(), 0);
    }
}
