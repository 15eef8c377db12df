//! The front of the command path (issue 12, issue 13 item 1): what happens to a message of
//! `P/C/cmd` or `P/all/cmd` before anything is executed. One call, [`Commands::accept`], turns a
//! payload into `Some(Command)` — verified, parsed, new, not expired, its id durably recorded —
//! or into its answer; [`Commands::submit`] executes what it lets through.
//!
//! In order:
//! 1. `auth::accept` (SPEC §3 "Signed messages"): a refusal executes nothing. It is counted
//!    (`cabinetd_auth_rejected_total{reason}`), reported (event `auth_rejected`, throttled) and
//!    audited; only an authentic message (valid signature, failed claim) gets a result —
//!    `expired` when it expired, `rejected` otherwise — through the id window, so a forger can
//!    never occupy an id.
//! 2. `parse`: bad JSON, an unknown action, bad arguments or a missing `expires_at` are
//!    `rejected`, naming the field.
//! 3. The watermark of a lost id window ([`Ledger::not_before`]): a signed command issued before
//!    it, and not in the window, is `rejected` (it may have run already).
//! 4. The id window ([`Ledger::begin`], persisted and fsynced before returning `New`): an id
//!    still running is ignored; an id seen before gets its first result published again (for a
//!    signed command, `auth_rejected_total{reason="replayed"}`); a new id past its `expires_at`
//!    is `expired`.
//!
//! Every outcome is one audit entry (`crate::audit`).

use std::time::SystemTime;

use serde_json::Value;

use super::exec::{Commands, Origin};
use super::{ledger, parse, result, Command, CommandError, Rejection, Seen};
use crate::audit::{target_of, AuditEntry};
use crate::auth::{self, AuthError, Rejected, TopicKind};
use crate::config::Config;
use crate::equipment::Controls;
use crate::metrics::{SPEC_ACTIONS, UNKNOWN_ACTION};
use crate::record::{format_ts, CommandStatus, Event, RecordBody, Severity};

/// The audit's name of a topic kind.
pub fn via(kind: TopicKind) -> &'static str {
    match kind {
        TopicKind::Cabinet => "cmd",
        TopicKind::All => "all/cmd",
        TopicKind::Desired => "config/desired",
    }
}

/// The bounded `action` label of a name as sent.
fn label(action: Option<&str>) -> &'static str {
    SPEC_ACTIONS
        .into_iter()
        .find(|a| Some(*a) == action)
        .unwrap_or(UNKNOWN_ACTION)
}

fn time_of(doc: Option<&Value>, key: &str) -> Option<SystemTime> {
    doc?.get(key)?
        .as_str()
        .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

impl Commands {
    /// The answer to refused signed messages, shared with the desired-configuration path.
    pub fn gate(&mut self) -> &mut crate::audit::AuthGate {
        &mut self.gate
    }

    /// A message from `P/C/cmd` or `P/all/cmd`: [`Commands::accept`], then
    /// [`Commands::submit`].
    pub async fn on_message(
        &mut self,
        kind: TopicKind,
        payload: &[u8],
        cfg: &Config,
        controls: &Controls,
    ) {
        if let Some(cmd) = self.accept(kind, payload, cfg).await {
            self.submit(cmd, controls).await;
        }
    }

    /// The front (module docs): `Some` is a new command to execute now; `None` means it was
    /// answered (or ignored) here.
    pub async fn accept(
        &mut self,
        kind: TopicKind,
        payload: &[u8],
        cfg: &Config,
    ) -> Option<Command> {
        let via = via(kind);
        let now = SystemTime::now();
        let accepted = match auth::accept(payload, kind, &cfg.security, &cfg.cabinet.id, now) {
            Ok(a) => a,
            Err(r) => {
                self.refused(&r, via, now).await;
                return None;
            }
        };
        let kid = accepted.kid().map(str::to_owned);
        let doc: Option<Value> = serde_json::from_slice(accepted.payload()).ok();
        let cmd = match parse(accepted.payload()) {
            Ok(cmd) => cmd,
            Err(rej) => {
                self.unparsable(rej, via, kid, doc.as_ref(), now).await;
                return None;
            }
        };
        let action = cmd.action.name();
        let origin = Origin {
            via,
            kid: kid.clone(),
            action: action.to_owned(),
            target: target_of(action, doc.as_ref().and_then(|d| d.get("args"))),
        };
        let expires = cmd.expires_at.unwrap_or(now);
        if let (Some(not_before), auth::Accepted::Signed(v)) = (self.ledger.not_before(), &accepted)
        {
            if v.issued_at < not_before && !self.ledger.contains(&cmd.id) {
                let reason = format!(
                    "issued at {} before {}, when the command-id window was lost: it may have run already; send it again with a new id",
                    format_ts(v.issued_at),
                    format_ts(not_before)
                );
                self.origins.insert(cmd.id.clone(), origin);
                self.finish(action, CommandError::Rejected(reason).result(&cmd.id))
                    .await;
                return None;
            }
        }
        let expired = expires <= now;
        match self.ledger.begin(&cmd.id, expires, now, !expired) {
            Err(e) => {
                // Not recorded, so not executed: an id that cannot be remembered could run twice.
                tracing::error!(error = %e, id = %cmd.id, "command not executed: its id cannot be recorded");
                let r = result(
                    &cmd.id,
                    CommandStatus::Rejected,
                    format!("not executed: the command id cannot be recorded ({e})"),
                );
                self.count(action, r.status);
                self.audit_origin(&origin, &cmd.id, "rejected", &r.reason);
                self.publish(r).await;
                None
            }
            Ok(Seen::New) if expired => {
                self.origins.insert(cmd.id.clone(), origin);
                let e =
                    CommandError::Expired("field `expires_at`: already past when received".into());
                self.finish(action, e.result(&cmd.id)).await;
                None
            }
            Ok(Seen::New) => {
                self.origins.insert(cmd.id.clone(), origin);
                Some(cmd)
            }
            Ok(Seen::Running) => {
                self.replay(
                    &origin,
                    &cmd.id,
                    kid.is_some(),
                    "seen before and still running; its result will come",
                );
                None
            }
            Ok(Seen::Done(prev)) => {
                let reason = format!(
                    "seen before; its first result ({}) is published again",
                    prev.status.as_str()
                );
                self.replay(&origin, &cmd.id, kid.is_some(), &reason);
                self.publish(prev).await;
                None
            }
        }
    }

    /// At start: the ids the window holds without a result (the daemon died while they ran) get
    /// their final result, `failed` with an unknown outcome; a lost window is announced.
    pub async fn recover(&mut self, opened: &ledger::Opened) {
        if let Some(why) = &opened.recovered {
            let not_before = self.ledger.not_before().map(format_ts);
            tracing::error!(reason = %why, not_before = ?not_before, "command-id window recovered: signed commands issued before not_before and not remembered are refused");
            let ev = Event::new(
                crate::event::EventKind::StoreRecovered,
                Severity::Critical,
                crate::record::DAEMON_SOURCE,
                format!("command-id window recovered ({why}): commands issued before {} are refused unless remembered", not_before.as_deref().unwrap_or("-")),
                serde_json::json!({"store": "command-ids", "reason": why, "not_before": not_before}),
            );
            let _ = self.records.send(RecordBody::Event(ev)).await;
        }
        for id in &opened.interrupted {
            let r = ledger::interrupted_result(id);
            tracing::warn!(%id, "command interrupted by the last stop: reported failed, not run again");
            if let Err(e) = self.ledger.finish(&r) {
                tracing::error!(error = %e, %id, "result not recorded in the id window");
            }
            self.audit.record(
                AuditEntry::new("cmd", Some(id), None, None, None, "failed", &r.reason),
                true,
            );
            self.publish(r).await;
        }
    }

    /// The `auth::accept` refusal of a command (module docs, step 1).
    async fn refused(&mut self, r: &Rejected, via: &'static str, now: SystemTime) {
        let logged = self.gate.rejected(r, via).await;
        let claims = r.claims.as_deref().map(|c| Value::Object(c.clone()));
        let action = claims
            .as_ref()
            .and_then(|c| c.get("action"))
            .and_then(Value::as_str);
        let target = action.and_then(|a| target_of(a, claims.as_ref().and_then(|c| c.get("args"))));
        self.audit.record(
            AuditEntry::new(
                via,
                r.id.as_deref(),
                action,
                target.as_deref(),
                r.kid.as_deref(),
                "auth_rejected",
                &format!("{}: {r}", r.reason()),
            ),
            logged,
        );
        let Some(id) = r.result_id() else {
            return;
        };
        // Authentic: its id may be answered, through the window (replays republish).
        let expires = time_of(claims.as_ref(), "expires_at")
            .unwrap_or(now)
            .max(now);
        match self.ledger.begin(id, expires, now, false) {
            Ok(Seen::New) => {
                let status = match r.error {
                    AuthError::Expired { .. } => CommandStatus::Expired,
                    _ => CommandStatus::Rejected,
                };
                let res = result(id, status, format!("auth: {r}"));
                self.finish(label(action), res).await;
            }
            Ok(Seen::Done(prev)) => self.publish(prev).await,
            Ok(Seen::Running) => {}
            Err(e) => tracing::error!(error = %e, %id, "refused command not recorded"),
        }
    }

    /// A payload that passed the signature checks (or needed none) but is not a valid command.
    async fn unparsable(
        &mut self,
        rej: Rejection,
        via: &'static str,
        kid: Option<String>,
        doc: Option<&Value>,
        now: SystemTime,
    ) {
        let action = label(Some(rej.action.as_str()));
        let raw_action = doc.and_then(|d| d.get("action")).and_then(Value::as_str);
        let origin = Origin {
            via,
            kid,
            action: raw_action.unwrap_or(UNKNOWN_ACTION).to_owned(),
            target: raw_action.and_then(|a| target_of(a, doc.and_then(|d| d.get("args")))),
        };
        let Some(id) = rej.id.clone() else {
            // No usable id: no result can name it. Counted, audited, and answered with a
            // `command_rejected` event (throttled; the metric counts every one).
            self.count(action, CommandStatus::Rejected);
            self.audit_origin(&origin, "", "rejected", &rej.reason);
            if let Some(suppressed) = self.idless.admit(std::time::Instant::now()) {
                let event = super::rejected_event(&rej, suppressed);
                let _ = self.records.send(RecordBody::Event(event)).await;
            }
            return;
        };
        let expires = time_of(doc, "expires_at").unwrap_or(now).max(now);
        match self.ledger.begin(&id, expires, now, false) {
            Ok(Seen::Done(prev)) => {
                self.replay(
                    &origin,
                    &id,
                    origin.kid.is_some(),
                    "seen before; its first result is published again",
                );
                self.publish(prev).await;
            }
            Ok(Seen::Running) => {}
            Ok(Seen::New) | Err(_) => {
                self.origins.insert(id.clone(), origin);
                self.finish(action, CommandError::Rejected(rej.reason).result(&id))
                    .await;
            }
        }
    }

    fn replay(&mut self, origin: &Origin, id: &str, signed: bool, reason: &str) {
        let log = !signed || self.gate.replayed();
        self.audit_logged(origin, id, "replayed", reason, log);
    }

    fn audit_origin(&self, o: &Origin, id: &str, result: &'static str, reason: &str) {
        self.audit_logged(o, id, result, reason, true);
    }

    fn audit_logged(&self, o: &Origin, id: &str, result: &'static str, reason: &str, log: bool) {
        self.audit.record(
            AuditEntry::new(
                o.via,
                (!id.is_empty()).then_some(id),
                Some(&o.action),
                o.target.as_deref(),
                o.kid.as_deref(),
                result,
                reason,
            ),
            log,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::audit::AuditLog;
    use crate::auth::key::SigningKey;
    use crate::command::Ledger;
    use crate::config::{load_sources, Source};
    use crate::metrics::Metrics;
    use crate::record::RecordBody;

    fn config(key: &SigningKey) -> Config {
        let text = format!(
            "[cabinet]\nid = \"c-1\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n[security]\n[[security.trusted_key]]\nkid = \"ops\"\npublic_key = \"{}\"\nactions = [\"light.*\"]\n",
            key.public_key_b64()
        );
        load_sources(&[Source {
            name: "c.toml".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn token(key: &SigningKey, id: &str, issued: SystemTime) -> Vec<u8> {
        let doc = format!(r#"{{"id":"{id}","action":"light.release","args":{{"target":"all"}}}}"#);
        crate::ops::sign_document(
            doc.as_bytes(),
            key,
            "ops",
            Some("c-1"),
            Some(Duration::from_secs(600)),
            issued,
        )
        .unwrap()
        .into_bytes()
    }

    fn commands(ledger: Ledger) -> (Commands, mpsc::Receiver<RecordBody>, Metrics) {
        let (tx, rx) = mpsc::channel(64);
        let metrics = Metrics::new("test");
        // These tests stop at the front: nothing reaches the rules core.
        let (core, _) = mpsc::channel(1);
        let c = Commands::new(tx, metrics.clone(), ledger, AuditLog::default(), core);
        (c, rx, metrics)
    }

    fn replayed(m: &Metrics) -> u64 {
        m.auth_rejected_total.with_label_values(&["replayed"]).get()
    }

    /// A forged message naming an id must not occupy it: the real command with that id still
    /// runs (SPEC: a result only when the signature was valid).
    #[tokio::test]
    async fn a_forgery_never_occupies_an_id_and_a_replay_never_runs() {
        let key = SigningKey::generate().unwrap();
        let cfg = config(&key);
        let (mut c, mut rx, m) = commands(Ledger::memory());
        let now = SystemTime::now();
        let forged = token(&SigningKey::generate().unwrap(), "x", now);
        assert!(c.accept(TopicKind::Cabinet, &forged, &cfg).await.is_none());
        assert!(!c.ledger.contains("x"));
        assert!(matches!(rx.try_recv(), Ok(RecordBody::Event(e)) if e.kind == "auth_rejected"));
        let real = token(&key, "x", now);
        let cmd = c.accept(TopicKind::Cabinet, &real, &cfg).await.unwrap();
        assert_eq!(cmd.id, "x");
        assert!(c.ledger.contains("x"));
        // Still running: ignored; finished: its result again, counted as replayed.
        assert!(c.accept(TopicKind::Cabinet, &real, &cfg).await.is_none());
        c.finish("light.release", result("x", CommandStatus::Succeeded, ""))
            .await;
        let _ = rx.try_recv();
        assert!(c.accept(TopicKind::All, &real, &cfg).await.is_none());
        assert!(
            matches!(rx.try_recv(), Ok(RecordBody::Result(r)) if r.status == CommandStatus::Succeeded)
        );
        assert_eq!(replayed(&m), 2);
    }

    /// After the window was lost, a signed command issued before the loss may have run: refused
    /// unless remembered; one issued after runs.
    #[tokio::test]
    async fn after_a_lost_window_older_commands_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("outbox-marks"), "x").unwrap();
        let (ledger, opened) = Ledger::open(dir.path(), SystemTime::now()).unwrap();
        assert!(opened.recovered.is_some());
        let key = SigningKey::generate().unwrap();
        let cfg = config(&key);
        let (mut c, mut rx, _) = commands(ledger);
        let old = token(&key, "old", SystemTime::now() - Duration::from_secs(60));
        assert!(c.accept(TopicKind::Cabinet, &old, &cfg).await.is_none());
        let Ok(RecordBody::Result(r)) = rx.try_recv() else {
            panic!("no result")
        };
        assert_eq!((r.id.as_str(), r.status), ("old", CommandStatus::Rejected));
        assert!(r.reason.contains("window was lost"), "{}", r.reason);
        let new = token(&key, "new", SystemTime::now() + Duration::from_secs(1));
        assert!(c.accept(TopicKind::Cabinet, &new, &cfg).await.is_some());
    }
}
