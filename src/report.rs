//! Report by exception: decides which readings are worth publishing.
//!
//! A point's first reading after start is always published. After that a reading is published
//! when its quality changes, when its value moves beyond the point's deadband (or changes at all
//! without one), or when the heartbeat has passed since the last publication. The state is plain
//! data driven by explicit instants, so it is tested without clocks.

use std::time::{Duration, Instant};

use crate::config::ReportPolicy;
use crate::record::Quality;

/// What the filter remembers of the last published reading of one point.
#[derive(Debug, Clone)]
pub struct PointReporter {
    policy: ReportPolicy,
    last: Option<Published>,
}

#[derive(Debug, Clone)]
struct Published {
    value: serde_json::Value,
    quality: Quality,
    at: Instant,
}

impl PointReporter {
    /// A reporter that has published nothing yet.
    pub fn new(policy: ReportPolicy) -> Self {
        PointReporter { policy, last: None }
    }

    /// Whether to publish this reading; when it returns true the reading is remembered as published.
    pub fn offer(&mut self, value: &serde_json::Value, quality: Quality, now: Instant) -> bool {
        let publish = match &self.last {
            None => true,
            Some(last) => {
                last.quality != quality
                    || now.saturating_duration_since(last.at)
                        + heartbeat_slack(self.policy.heartbeat)
                        >= self.policy.heartbeat
                    || changed(&last.value, value, self.policy.deadband)
            }
        };
        if publish {
            self.last = Some(Published {
                value: value.clone(),
                quality,
                at: now,
            });
        }
        publish
    }
}

/// Readings arrive once per poll, a few milliseconds late or early; without slack a heartbeat equal
/// to the poll period would publish only every other poll. A tenth of the heartbeat, at most 1 s.
fn heartbeat_slack(heartbeat: Duration) -> Duration {
    (heartbeat / 10).min(Duration::from_secs(1))
}

fn changed(last: &serde_json::Value, new: &serde_json::Value, deadband: Option<f64>) -> bool {
    match (last.as_f64(), new.as_f64(), deadband) {
        (Some(a), Some(b), Some(db)) => (a - b).abs() > db,
        _ => last != new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(deadband: Option<f64>, heartbeat_s: u64) -> ReportPolicy {
        ReportPolicy {
            deadband,
            heartbeat: Duration::from_secs(heartbeat_s),
        }
    }

    #[test]
    fn first_reading_is_always_published_then_unchanged_ones_wait_for_heartbeat() {
        let t0 = Instant::now();
        let mut r = PointReporter::new(policy(None, 60));
        assert!(r.offer(&json!(5), Quality::Good, t0));
        assert!(!r.offer(&json!(5), Quality::Good, t0 + Duration::from_secs(1)));
        assert!(!r.offer(&json!(5), Quality::Good, t0 + Duration::from_millis(58_900)));
        assert!(r.offer(&json!(5), Quality::Good, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn heartbeat_equal_to_poll_publishes_every_poll_despite_jitter() {
        let t0 = Instant::now();
        let mut r = PointReporter::new(policy(None, 1));
        assert!(r.offer(&json!(1), Quality::Good, t0));
        // Polls land 1 s apart give or take a few ms.
        assert!(r.offer(&json!(1), Quality::Good, t0 + Duration::from_millis(997)));
        assert!(r.offer(&json!(1), Quality::Good, t0 + Duration::from_millis(1_999)));
    }

    #[test]
    fn any_change_is_published_without_deadband() {
        let t0 = Instant::now();
        let mut r = PointReporter::new(policy(None, 60));
        assert!(r.offer(&json!(true), Quality::Good, t0));
        assert!(r.offer(&json!(false), Quality::Good, t0));
    }

    #[test]
    fn deadband_suppresses_small_moves_relative_to_last_published_value() {
        let t0 = Instant::now();
        let mut r = PointReporter::new(policy(Some(1.0), 60));
        assert!(r.offer(&json!(230.0), Quality::Good, t0));
        assert!(!r.offer(&json!(230.6), Quality::Good, t0));
        assert!(!r.offer(&json!(229.2), Quality::Good, t0));
        // Drift accumulates against the last *published* value, not the last seen one.
        assert!(r.offer(&json!(231.1), Quality::Good, t0));
    }

    #[test]
    fn quality_change_is_published_even_with_same_value() {
        let t0 = Instant::now();
        let mut r = PointReporter::new(policy(Some(10.0), 60));
        assert!(r.offer(&json!(1), Quality::Good, t0));
        assert!(r.offer(&json!(1), Quality::Bad, t0));
        assert!(!r.offer(&json!(1), Quality::Bad, t0));
    }
}
