//! Capped exponential backoff with "equal jitter", the one reconnect pacing of cabinetd: the
//! MQTT uplink, Modbus devices and DALI buses all wait [`Backoff::next_delay`] between attempts.
//!
//! Quick at first (a broker restart or a re-plugged USB adapter is usually short), then doubling
//! up to a cap, with jitter so a street of cabinets (or the devices of one) does not retry in
//! lockstep. Pure: the caller supplies the randomness, so tests pass fixed values.
#![warn(missing_docs)]

use std::time::Duration;

/// Capped exponential backoff with jitter: each delay is drawn from `[d/2, d]` where `d` doubles
/// from `first` up to `cap`.
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
    /// of the current step (1.0 gives the step itself).
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// An attempt succeeded: the next failure retries quickly again.
    pub fn reset(&mut self) {
        self.attempt = 0;
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
        for j in [0.0, 0.3, 0.999] {
            let d = b.next_delay(j);
            assert!(d >= Duration::from_millis(2500) && d <= Duration::from_secs(5));
        }
        b.reset();
        assert!(b.next_delay(0.3) <= Duration::from_millis(100));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(200));
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            assert!(b.next_delay(1.0) <= Duration::from_secs(60));
        }
    }
}
