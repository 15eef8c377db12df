//! The confirmation window of a desired configuration (issue 12 item 7): pure judgement of
//! whether a newly applied configuration keeps the daemon healthy. The daemon feeds
//! [`Probation::observe`] once a second with what it sees; the verdict decides between
//! confirming the configuration and rolling it back to the last good one.
//!
//! # The rule
//! Something that worked before the change must work again at some moment within
//! `config.confirm_after` of it:
//! - **the uplink**: connected before the change → must be connected (to a broker of the new
//!   configuration, in a session established after the change) at least once within the window
//!   — "uplink not back" otherwise;
//! - **the devices**: each device up before the change and still configured must be up at least
//!   once within the window — "stuck down" otherwise;
//! - **the uplink-critical devices** (`config.uplink_critical`, e.g. the 4G router the uplink
//!   runs through): up before → must be up within the window even if the new configuration
//!   removed it (a removed device is never up again: removing one is rolled back). Any other
//!   device may be removed.
//!
//! Once everything watched has been seen working, the verdict is [`Verdict::Healthy`] at once:
//! later failures are not the change's (a broker outage an hour later must not roll back a
//! good configuration). At the end of the window whatever was never seen working is the reason
//! of [`Verdict::Unhealthy`]. (`confirm_after = "0s"` opens no window at all: the daemon
//! confirms at once.)
//!
//! After a restart during the window (the daemon runs a configuration still on probation),
//! nothing is known of the state before: the baseline is "the uplink must come up".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

/// What worked just before the change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// The uplink was connected.
    pub uplink_up: bool,
    /// Devices that were up.
    pub devices_up: BTreeSet<String>,
}

/// What the daemon sees now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// Connected to a broker of the new configuration, in a session established after the
    /// change.
    pub uplink_up: bool,
    /// The uplink's last error (for the reason).
    pub uplink_error: Option<String>,
    /// Every configured device: up or not, and its last error.
    pub devices: BTreeMap<String, (bool, Option<String>)>,
}

/// The judgement so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not decided yet.
    Pending,
    /// Everything that worked before has worked since: confirm.
    Healthy,
    /// The window ended with these failures: roll back.
    Unhealthy(Vec<String>),
}

/// One configuration in its confirmation window.
#[derive(Debug, Clone)]
pub struct Probation {
    version: String,
    window: Duration,
    deadline: Instant,
    uplink_needed: bool,
    uplink_seen: bool,
    uplink_error: Option<String>,
    watched: BTreeSet<String>,
    seen_up: BTreeSet<String>,
    errors: BTreeMap<String, Option<String>>,
    baseline: Baseline,
}

impl Probation {
    /// `version` was applied at `now`, configuring the devices `configured`; `critical` is
    /// `config.uplink_critical`.
    pub fn new(
        version: &str,
        baseline: Baseline,
        configured: &BTreeSet<String>,
        critical: &[String],
        now: Instant,
        window: Duration,
    ) -> Probation {
        let watched = baseline
            .devices_up
            .iter()
            .filter(|d| configured.contains(*d) || critical.contains(d))
            .cloned()
            .collect();
        Probation {
            version: version.to_owned(),
            window,
            deadline: now + window,
            uplink_needed: baseline.uplink_up,
            uplink_seen: false,
            uplink_error: None,
            watched,
            seen_up: BTreeSet::new(),
            errors: BTreeMap::new(),
            baseline,
        }
    }

    /// The version on probation.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What worked before the change (kept when a newer configuration replaces this one
    /// within its window: it is judged against the last good state, not a broken one).
    pub fn baseline(&self) -> &Baseline {
        &self.baseline
    }

    /// Takes one observation at `now`.
    pub fn observe(&mut self, now: Instant, obs: &Observation) -> Verdict {
        if obs.uplink_up {
            self.uplink_seen = true;
        } else if obs.uplink_error.is_some() {
            self.uplink_error.clone_from(&obs.uplink_error);
        }
        for d in &self.watched {
            match obs.devices.get(d) {
                Some((true, _)) => {
                    self.seen_up.insert(d.clone());
                }
                Some((false, e)) => {
                    self.errors.insert(d.clone(), e.clone());
                }
                None => {}
            }
        }
        let uplink_ok = !self.uplink_needed || self.uplink_seen;
        if uplink_ok && self.seen_up.len() == self.watched.len() {
            return Verdict::Healthy;
        }
        if now < self.deadline {
            return Verdict::Pending;
        }
        let window = humantime::format_duration(self.window);
        let mut why = Vec::new();
        if !uplink_ok {
            why.push(match &self.uplink_error {
                Some(e) => format!("uplink not back within {window} ({e})"),
                None => format!("uplink not back within {window}"),
            });
        }
        for d in self.watched.difference(&self.seen_up) {
            why.push(match (obs.devices.contains_key(d), self.errors.get(d)) {
                (false, _) => {
                    format!("uplink-critical device {d} was up before and is no longer configured")
                }
                (true, Some(Some(e))) => {
                    format!("device {d} was up before and stayed down for {window} ({e})")
                }
                (true, _) => format!("device {d} was up before and stayed down for {window}"),
            });
        }
        Verdict::Unhealthy(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn obs(uplink: bool, up: &[&str], down: &[&str]) -> Observation {
        let mut devices = BTreeMap::new();
        for d in up {
            devices.insert(d.to_string(), (true, None));
        }
        for d in down {
            devices.insert(d.to_string(), (false, Some("timeout".into())));
        }
        Observation {
            uplink_up: uplink,
            uplink_error: (!uplink).then(|| "connection refused".into()),
            devices,
        }
    }

    const W: Duration = Duration::from_secs(120);

    fn baseline(uplink: bool, up: &[&str]) -> Baseline {
        Baseline {
            uplink_up: uplink,
            devices_up: set(up),
        }
    }

    #[test]
    fn everything_back_confirms_at_once() {
        let t0 = Instant::now();
        let mut p = Probation::new(
            "v2",
            baseline(true, &["meter"]),
            &set(&["meter"]),
            &[],
            t0,
            W,
        );
        // Right after the reload the device is starting: pending.
        assert_eq!(p.observe(t0, &obs(true, &[], &["meter"])), Verdict::Pending);
        assert_eq!(
            p.observe(t0 + Duration::from_secs(3), &obs(true, &["meter"], &[])),
            Verdict::Healthy
        );
    }

    #[test]
    fn a_device_stuck_down_rolls_back_at_the_end_of_the_window() {
        let t0 = Instant::now();
        let mut p = Probation::new(
            "v2",
            baseline(true, &["meter", "panel"]),
            &set(&["meter", "panel"]),
            &[],
            t0,
            W,
        );
        for s in 0..120 {
            let v = p.observe(
                t0 + Duration::from_secs(s),
                &obs(true, &["panel"], &["meter"]),
            );
            assert_eq!(v, Verdict::Pending, "at {s} s");
        }
        let Verdict::Unhealthy(why) = p.observe(t0 + W, &obs(true, &["panel"], &["meter"])) else {
            panic!("not unhealthy");
        };
        assert_eq!(
            why,
            ["device meter was up before and stayed down for 2m (timeout)"]
        );
    }

    #[test]
    fn the_uplink_must_come_back() {
        let t0 = Instant::now();
        let mut p = Probation::new("v2", baseline(true, &[]), &set(&[]), &[], t0, W);
        assert_eq!(p.observe(t0, &obs(false, &[], &[])), Verdict::Pending);
        let Verdict::Unhealthy(why) = p.observe(t0 + W, &obs(false, &[], &[])) else {
            panic!()
        };
        assert_eq!(why, ["uplink not back within 2m (connection refused)"]);
        // Back once within the window is enough, even if it drops again later.
        let mut p = Probation::new("v2", baseline(true, &[]), &set(&[]), &[], t0, W);
        assert_eq!(
            p.observe(t0 + Duration::from_secs(30), &obs(true, &[], &[])),
            Verdict::Healthy
        );
        // Down before the change: not judged.
        let mut p = Probation::new("v2", baseline(false, &[]), &set(&[]), &[], t0, W);
        assert_eq!(p.observe(t0, &obs(false, &[], &[])), Verdict::Healthy);
    }

    #[test]
    fn removing_a_device_is_fine_unless_it_is_uplink_critical() {
        let t0 = Instant::now();
        let critical = vec!["router".to_string()];
        let mut p = Probation::new(
            "v2",
            baseline(true, &["meter"]),
            &set(&[]),
            &critical,
            t0,
            W,
        );
        assert_eq!(p.observe(t0, &obs(true, &[], &[])), Verdict::Healthy);
        let mut p = Probation::new(
            "v2",
            baseline(true, &["router", "meter"]),
            &set(&[]),
            &critical,
            t0,
            W,
        );
        assert_eq!(p.observe(t0, &obs(true, &[], &[])), Verdict::Pending);
        let Verdict::Unhealthy(why) = p.observe(t0 + W, &obs(true, &[], &[])) else {
            panic!()
        };
        assert_eq!(
            why,
            ["uplink-critical device router was up before and is no longer configured"]
        );
        // A critical device that was down before the change is not the change's fault.
        let mut p = Probation::new("v2", baseline(true, &[]), &set(&[]), &critical, t0, W);
        assert_eq!(p.observe(t0, &obs(true, &[], &[])), Verdict::Healthy);
    }

    #[test]
    fn a_zero_window_decides_at_the_first_observation() {
        let t0 = Instant::now();
        let mut p = Probation::new(
            "v2",
            baseline(true, &["m"]),
            &set(&["m"]),
            &[],
            t0,
            Duration::ZERO,
        );
        assert!(matches!(
            p.observe(t0, &obs(true, &[], &["m"])),
            Verdict::Unhealthy(_)
        ));
        let mut p = Probation::new(
            "v2",
            baseline(true, &["m"]),
            &set(&["m"]),
            &[],
            t0,
            Duration::ZERO,
        );
        assert_eq!(p.observe(t0, &obs(true, &["m"], &[])), Verdict::Healthy);
    }
}
