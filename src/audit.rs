//! What every remote order leaves behind (issue 12): each command and each desired configuration
//! — executed, rejected, expired, replayed, refused by the signature check, applied, rolled
//! back — is one [`AuditEntry`]: logged (target `cabinetd::audit`) and kept in a ring of the last
//! [`KEEP`] for `/status` (`audit`) and `cabinetd status`.
//!
//! # Invariants
//! - An entry names the id, action, target, signer `kid` and result, never the payload nor an
//!   argument value (a value written to a point is not a secret, but a desired config may hold
//!   anything): `target` is the point, light target, camera, scene or config version only.
//! - Every string in an entry is bounded ([`MAX_FIELD`] characters): ids, actions and reasons
//!   can come from an unauthenticated sender.
//! - Bounded: the ring holds [`KEEP`] entries; refused messages are logged one by one only as
//!   far as the [`AuthGate`]'s throttle lets them (a flood is counted, not logged line by line).
//!
//! [`AuthGate`] is the one place a refused signed message is answered: the metric
//! `cabinetd_auth_rejected_total{reason}` (every one), a warning and an `auth_rejected` event
//! (throttled, with the number suppressed since the last one).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::{Rejected, RejectionThrottle};
use crate::metrics::Metrics;
use crate::record::{ts_millis, Event, RecordBody};

/// Entries kept for `/status`.
pub const KEEP: usize = 100;
/// Longest string of an entry (characters).
pub const MAX_FIELD: usize = 200;

/// One remote order and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// When it was decided.
    #[serde(with = "ts_millis")]
    pub ts: SystemTime,
    /// Where it came from: `cmd` (`P/C/cmd`), `all/cmd` (`P/all/cmd`), `config/desired`, or
    /// `confirm` (the confirmation window of a desired configuration).
    pub via: &'static str,
    /// The command id (commands).
    pub id: Option<String>,
    /// The action (commands), `config` for a desired configuration.
    pub action: Option<String>,
    /// What it acts on: a point, a light target, a camera, a scene; the version of a desired
    /// configuration.
    pub target: Option<String>,
    /// The signer (none for plain JSON, or when the header named no sane kid).
    pub kid: Option<String>,
    /// `succeeded`, `failed`, `rejected`, `expired`, `replayed`, `auth_rejected`, `applied`,
    /// `confirmed`, `rolled_back`.
    pub result: &'static str,
    /// Why (empty on success).
    pub reason: String,
}

fn bounded(s: &str) -> String {
    if s.chars().count() <= MAX_FIELD {
        s.to_owned()
    } else {
        let mut b: String = s.chars().take(MAX_FIELD - 1).collect();
        b.push('…');
        b
    }
}

impl AuditEntry {
    /// An entry of now, every field bounded.
    pub fn new(
        via: &'static str,
        id: Option<&str>,
        action: Option<&str>,
        target: Option<&str>,
        kid: Option<&str>,
        result: &'static str,
        reason: &str,
    ) -> AuditEntry {
        AuditEntry {
            ts: SystemTime::now(),
            via,
            id: id.map(bounded),
            action: action.map(bounded),
            target: target.map(bounded),
            kid: kid.map(bounded),
            result,
            reason: bounded(reason),
        }
    }
}

/// The ring of the last [`KEEP`] entries, shared with `/status`.
#[derive(Debug, Clone, Default)]
pub struct AuditLog(Arc<Mutex<VecDeque<AuditEntry>>>);

impl AuditLog {
    /// Keeps `e` and logs it (unless `log` is false: a throttled refusal, counted elsewhere).
    pub fn record(&self, e: AuditEntry, log: bool) {
        if log {
            tracing::info!(
                target: "cabinetd::audit",
                via = e.via,
                id = e.id.as_deref().unwrap_or("-"),
                action = e.action.as_deref().unwrap_or("-"),
                target = e.target.as_deref().unwrap_or("-"),
                kid = e.kid.as_deref().unwrap_or("-"),
                result = e.result,
                reason = %e.reason,
                "audit"
            );
        }
        let mut ring = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() >= KEEP {
            ring.pop_front();
        }
        ring.push_back(e);
    }

    /// The entries, oldest first.
    pub fn snapshot(&self) -> Vec<AuditEntry> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What a command acts on, from its action and arguments (never a value).
pub fn target_of(action: &str, args: Option<&Value>) -> Option<String> {
    let key = match action.split('.').next()? {
        "point" => "point",
        "light" => "target",
        "camera" => "camera",
        "scene" => "scene",
        _ => return None,
    };
    let v = args?.get(key)?;
    match v {
        Value::String(s) => Some(bounded(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Answers refused signed messages: metric (every one), warning and `auth_rejected` event
/// (throttled).
pub struct AuthGate {
    throttle: RejectionThrottle,
    metrics: Metrics,
    records: mpsc::Sender<RecordBody>,
}

impl AuthGate {
    /// Events go to `records`.
    pub fn new(metrics: Metrics, records: mpsc::Sender<RecordBody>) -> AuthGate {
        AuthGate {
            throttle: RejectionThrottle::default(),
            metrics,
            records,
        }
    }

    /// Counts `r` (received on topic `via`); logs and reports it unless throttled. Returns
    /// whether it was logged.
    pub async fn rejected(&mut self, r: &Rejected, via: &'static str) -> bool {
        self.metrics
            .auth_rejected_total
            .with_label_values(&[r.reason()])
            .inc();
        let Some(suppressed) = self.throttle.admit(Instant::now()) else {
            return false;
        };
        tracing::warn!(
            via,
            kid = r.kid.as_deref().unwrap_or("-"),
            id = r.id.as_deref().unwrap_or("-"),
            reason = r.reason(),
            suppressed,
            "refused: {r}"
        );
        let ev = auth_rejected_event(r, via, suppressed);
        let _ = self.records.send(RecordBody::Event(ev)).await;
        true
    }

    /// A signed command whose id was seen before: `auth_rejected_total{reason="replayed"}`.
    /// Returns whether to log it (the same throttle: a captured command replayed in a loop is
    /// counted, not logged line by line).
    pub fn replayed(&mut self) -> bool {
        self.metrics
            .auth_rejected_total
            .with_label_values(&["replayed"])
            .inc();
        self.throttle.admit(Instant::now()).is_some()
    }
}

/// The `auth_rejected` event (major; SPEC §3): data `{kid, reason, id, via, suppressed}`, never
/// the payload. `suppressed`: refusals since the previous event that were counted only. (Built
/// here, its one place, so `record` stays free of `auth`.)
pub fn auth_rejected_event(r: &Rejected, via: &str, suppressed: u64) -> Event {
    let mut data = r.event_data();
    data["via"] = serde_json::json!(via);
    data["suppressed"] = serde_json::json!(suppressed);
    Event::new(
        crate::event::EventKind::AuthRejected,
        crate::record::Severity::Major,
        crate::record::DAEMON_SOURCE,
        format!("message on {via} refused ({}): {r}", r.reason()),
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_100_and_bounds_every_field() {
        let log = AuditLog::default();
        for i in 0..150 {
            log.record(
                AuditEntry::new(
                    "cmd",
                    Some(&format!("c{i}")),
                    Some("point.write"),
                    Some("panel/setpoint"),
                    Some("ops"),
                    "succeeded",
                    "",
                ),
                false,
            );
        }
        let s = log.snapshot();
        assert_eq!(s.len(), KEEP);
        assert_eq!(s[0].id.as_deref(), Some("c50"));
        let long = "x".repeat(10_000);
        let e = AuditEntry::new("cmd", Some(&long), None, None, None, "rejected", &long);
        assert_eq!(e.id.unwrap().chars().count(), MAX_FIELD);
        assert_eq!(e.reason.chars().count(), MAX_FIELD);
    }

    #[test]
    fn targets_never_carry_values() {
        let args = serde_json::json!({"point": "panel/setpoint", "value": 42});
        assert_eq!(
            target_of("point.write", Some(&args)).as_deref(),
            Some("panel/setpoint")
        );
        let args = serde_json::json!({"target": "group:1", "level_percent": 10});
        assert_eq!(
            target_of("light.set", Some(&args)).as_deref(),
            Some("group:1")
        );
        assert_eq!(target_of("door.open", Some(&args)), None);
        assert_eq!(target_of("point.write", None), None);
    }
}
