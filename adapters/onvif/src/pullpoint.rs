//! The pull-point subscription lifecycle as a plain state machine (no I/O, time passed in).
//!
//! The driver asks [`PullPoint::next`] what to do at `now` ([`Step`]), does it, and reports the
//! outcome. Invariants:
//! - only an explicit "unknown subscription" fault (or an expired termination time) drops a
//!   live subscription; a timeout keeps it and retries the pull after a short backoff;
//! - every failure to create a subscription backs off exponentially with jitter
//!   ([`Backoff`], 5 s → 5 min by default), so a broken camera never sees a storm of
//!   CreatePullPointSubscription (Reolink exhausts its heap, agsh/onvif#501);
//! - authentication failures back off far more slowly (5 min → 1 h): cameras lock accounts;
//! - a camera that does not support pull points is asked again only hourly;
//! - Renew is sent ahead of the termination time (default: 8 min into a 10 min window), never
//!   more often (renewing too often crashes some cameras); a camera that does not support
//!   Renew is kept alive by its pulls alone (Core ≥ 25.06).

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorClass};
use crate::model::Subscription;

/// Exponential backoff with ±20 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// From `min` doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The next delay (and doubles the one after).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let jitter = 0.8 + 0.4 * fastrand::f64();
        base.mul_f64(jitter).min(self.max)
    }

    /// Back to `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Timing of the pull-point lifecycle.
#[derive(Debug, Clone)]
pub struct PullPointConfig {
    /// InitialTerminationTime and Renew duration.
    pub termination: Duration,
    /// Renew this long before the termination time.
    pub renew_margin: Duration,
    /// PullMessages `Timeout` (the camera holds the request up to this long).
    pub pull_wait: Duration,
    /// PullMessages `MessageLimit`.
    pub message_limit: u32,
    /// Backoff after ordinary failures.
    pub retry_min: Duration,
    /// Cap of that backoff.
    pub retry_max: Duration,
    /// Backoff after an authentication failure.
    pub auth_retry_min: Duration,
    /// Cap of that backoff.
    pub auth_retry_max: Duration,
    /// Delay before asking again a camera that has no pull point.
    pub unsupported_retry: Duration,
}

impl Default for PullPointConfig {
    fn default() -> Self {
        PullPointConfig {
            termination: Duration::from_secs(600),
            renew_margin: Duration::from_secs(120),
            pull_wait: Duration::from_secs(10),
            message_limit: 32,
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            auth_retry_min: Duration::from_secs(300),
            auth_retry_max: Duration::from_secs(3600),
            unsupported_retry: Duration::from_secs(3600),
        }
    }
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing before this instant.
    Wait(Instant),
    /// CreatePullPointSubscription (then SetSynchronizationPoint).
    Create,
    /// Renew the subscription.
    Renew,
    /// PullMessages.
    Pull,
}

/// What a failure did to the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The subscription is gone; it will be recreated (after `Wait`).
    Lost,
    /// Kept; the same step is retried later.
    Retry,
    /// Credentials refused: long wait, subscription dropped.
    Auth,
    /// The camera has no pull point: hourly retry.
    Unsupported,
}

#[derive(Debug)]
enum State {
    None,
    Live {
        sub: Subscription,
        renew_at: Option<Instant>,
        expires_at: Instant,
    },
}

/// The lifecycle of one camera's pull point.
#[derive(Debug)]
pub struct PullPoint {
    cfg: PullPointConfig,
    state: State,
    not_before: Option<Instant>,
    retry: Backoff,
    auth: Backoff,
    renew_supported: bool,
    recreated: u64,
}

impl PullPoint {
    /// A lifecycle with no subscription yet.
    pub fn new(cfg: PullPointConfig) -> Self {
        PullPoint {
            retry: Backoff::new(cfg.retry_min, cfg.retry_max),
            auth: Backoff::new(cfg.auth_retry_min, cfg.auth_retry_max),
            cfg,
            state: State::None,
            not_before: None,
            renew_supported: true,
            recreated: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PullPointConfig {
        &self.cfg
    }

    /// The live subscription.
    pub fn subscription(&self) -> Option<&Subscription> {
        match &self.state {
            State::Live { sub, .. } => Some(sub),
            State::None => None,
        }
    }

    /// How many subscriptions were created (first included).
    pub fn created_count(&self) -> u64 {
        self.recreated
    }

    /// What to do at `now`.
    pub fn next(&self, now: Instant) -> Step {
        if let Some(t) = self.not_before {
            if now < t {
                return Step::Wait(t);
            }
        }
        match &self.state {
            State::None => Step::Create,
            State::Live { expires_at, .. } if now >= *expires_at => Step::Create,
            State::Live {
                renew_at: Some(r), ..
            } if now >= *r && self.renew_supported => Step::Renew,
            State::Live { .. } => Step::Pull,
        }
    }

    fn window(
        &self,
        sub: &Subscription,
        now: Instant,
        renewed_to: Option<Duration>,
    ) -> (Option<Instant>, Instant) {
        // The camera's own termination time, relative to its current time, when both are
        // given and sane; else what we asked for. Cameras answering TerminationTime ==
        // CurrentTime (the oxvif mock) get what we asked for.
        let asked = self.cfg.termination;
        let life = renewed_to
            .or_else(|| match (sub.current_time, sub.termination_time) {
                (Some(c), Some(t)) if t.unix() > c.unix() => {
                    Some(Duration::from_secs((t.unix() - c.unix()) as u64))
                }
                _ => None,
            })
            .unwrap_or(asked)
            .min(asked * 4);
        let renew_at = life
            .checked_sub(self.cfg.renew_margin)
            .filter(|d| !d.is_zero())
            .map(|d| now + d)
            .or(Some(now + life / 2));
        // Pulls keep modern cameras alive: only drop on an explicit fault, not at expiry, when
        // Renew is unsupported.
        let expires = if self.renew_supported {
            now + life
        } else {
            now + Duration::from_secs(86_400 * 365)
        };
        (renew_at, expires)
    }

    /// A subscription was created at `now`.
    pub fn created(&mut self, sub: Subscription, now: Instant) {
        let (renew_at, expires_at) = self.window(&sub, now, None);
        self.state = State::Live {
            sub,
            renew_at,
            expires_at,
        };
        self.not_before = None;
        self.recreated += 1;
        self.auth.reset();
    }

    /// A pull succeeded.
    pub fn pulled(&mut self) {
        self.not_before = None;
        self.retry.reset();
        self.auth.reset();
    }

    /// A renew succeeded at `now` (the new termination time relative to the camera's clock is
    /// not needed: we renew for our own window).
    pub fn renewed(&mut self, now: Instant) {
        let termination = self.cfg.termination;
        if let State::Live { sub, .. } = &self.state {
            let (renew_at, expires_at) = self.window(&sub.clone(), now, Some(termination));
            if let State::Live {
                renew_at: r,
                expires_at: e,
                ..
            } = &mut self.state
            {
                *r = renew_at;
                *e = expires_at;
            }
        }
    }

    /// `step` failed with `err` at `now`.
    pub fn failed(&mut self, step: &Step, err: &Error, now: Instant) -> Failure {
        if err.is_auth() {
            self.state = State::None;
            self.not_before = Some(now + self.auth.next_delay());
            return Failure::Auth;
        }
        let not_supported = err.fault().is_some_and(|f| f.is_not_supported())
            || err.class() == ErrorClass::Permanent;
        match step {
            Step::Renew
                if not_supported
                    || err.class() == ErrorClass::Device && !err.is_resource_unknown() =>
            {
                // Renew unsupported: rely on pulls to keep the subscription alive.
                self.renew_supported = false;
                if let State::Live {
                    renew_at,
                    expires_at,
                    ..
                } = &mut self.state
                {
                    *renew_at = None;
                    *expires_at = now + Duration::from_secs(86_400 * 365);
                }
                Failure::Retry
            }
            Step::Create if not_supported => {
                self.state = State::None;
                self.not_before = Some(now + self.cfg.unsupported_retry);
                Failure::Unsupported
            }
            Step::Pull | Step::Renew if err.is_resource_unknown() => {
                // The camera forgot the subscription (reboot, eviction): recreate at once the
                // first time; the create path backs off if that keeps failing.
                self.state = State::None;
                self.not_before = None;
                Failure::Lost
            }
            Step::Pull | Step::Renew if err.class() == ErrorClass::Device => {
                // Any other refusal of a pull: the subscription is unusable; recreate later.
                self.state = State::None;
                self.not_before = Some(now + self.retry.next_delay());
                Failure::Lost
            }
            _ => {
                // Transient, or Create failed: keep what we have, try again later.
                if let (Step::Create, State::Live { .. }) = (step, &self.state) {
                    self.state = State::None;
                }
                self.not_before = Some(now + self.retry.next_delay());
                Failure::Retry
            }
        }
    }

    /// Forget the subscription (camera rebooted, shutting down).
    pub fn reset(&mut self) {
        self.state = State::None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soap::{Fault, QName};

    fn sub() -> Subscription {
        Subscription {
            address: "http://cam/sub".into(),
            reference_parameters: vec![],
            current_time: None,
            termination_time: None,
        }
    }

    fn fault(local: &str) -> Error {
        Error::Fault {
            op: "PullMessages",
            fault: Box::new(Fault {
                code: QName {
                    ns: None,
                    local: "Sender".into(),
                },
                subcodes: vec![QName {
                    ns: None,
                    local: local.into(),
                }],
                reason: String::new(),
                detail: vec![],
            }),
        }
    }

    fn timeout() -> Error {
        Error::Timeout {
            op: "PullMessages",
            after: Duration::from_secs(1),
        }
    }

    #[test]
    fn lifecycle_create_pull_renew() {
        let t0 = Instant::now();
        let mut pp = PullPoint::new(PullPointConfig::default());
        assert_eq!(pp.next(t0), Step::Create);
        pp.created(sub(), t0);
        assert_eq!(pp.next(t0), Step::Pull);
        assert_eq!(pp.next(t0 + Duration::from_secs(479)), Step::Pull);
        assert_eq!(pp.next(t0 + Duration::from_secs(480)), Step::Renew);
        pp.renewed(t0 + Duration::from_secs(480));
        assert_eq!(pp.next(t0 + Duration::from_secs(900)), Step::Pull);
        assert_eq!(
            pp.next(t0 + Duration::from_secs(481 + 600)),
            Step::Create,
            "expired"
        );
    }

    #[test]
    fn lost_subscription_is_recreated_at_once_then_backs_off() {
        let t0 = Instant::now();
        let mut pp = PullPoint::new(PullPointConfig::default());
        pp.created(sub(), t0);
        assert_eq!(
            pp.failed(&Step::Pull, &fault("ResourceUnknownFault"), t0),
            Failure::Lost
        );
        assert_eq!(pp.next(t0), Step::Create);
        // Creating keeps failing: the delays grow and never go below 4 s or above 5 min.
        let mut now = t0;
        let mut last = Duration::ZERO;
        let mut creates = 0;
        while now < t0 + Duration::from_secs(3600) {
            match pp.next(now) {
                Step::Wait(t) => {
                    let d = t - now;
                    assert!(d >= Duration::from_secs(4) && d <= Duration::from_secs(300));
                    assert!(d >= last.mul_f64(0.6) || d >= Duration::from_secs(240));
                    last = d;
                    now = t;
                }
                Step::Create => {
                    creates += 1;
                    pp.failed(&Step::Create, &timeout(), now);
                }
                s => panic!("{s:?}"),
            }
        }
        assert!(creates <= 20, "{creates} creates in an hour");
    }

    #[test]
    fn timeouts_keep_the_subscription_and_auth_waits_long() {
        let t0 = Instant::now();
        let mut pp = PullPoint::new(PullPointConfig::default());
        pp.created(sub(), t0);
        assert_eq!(pp.failed(&Step::Pull, &timeout(), t0), Failure::Retry);
        assert!(pp.subscription().is_some());
        let Step::Wait(t) = pp.next(t0) else { panic!() };
        assert_eq!(pp.next(t), Step::Pull);
        let auth = Error::Auth {
            op: "PullMessages",
            reason: "x".into(),
        };
        assert_eq!(pp.failed(&Step::Pull, &auth, t), Failure::Auth);
        let Step::Wait(w) = pp.next(t) else { panic!() };
        assert!(w - t >= Duration::from_secs(240));
        assert!(pp.subscription().is_none());
    }

    #[test]
    fn unsupported_renew_and_create() {
        let t0 = Instant::now();
        let mut pp = PullPoint::new(PullPointConfig::default());
        pp.created(sub(), t0);
        let at = t0 + Duration::from_secs(480);
        assert_eq!(
            pp.failed(&Step::Renew, &fault("ActionNotSupported"), at),
            Failure::Retry
        );
        assert_eq!(
            pp.next(at + Duration::from_secs(10_000)),
            Step::Pull,
            "kept alive by pulls"
        );
        pp.reset();
        assert_eq!(
            pp.failed(&Step::Create, &fault("ActionNotSupported"), at),
            Failure::Unsupported
        );
        assert_eq!(
            pp.next(at + Duration::from_secs(3000)),
            Step::Wait(at + Duration::from_secs(3600))
        );
    }
}
