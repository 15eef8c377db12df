//! Configuration changes on a running daemon: SIGHUP re-reads the files (plus the stored desired
//! document), `P/C/config/desired` comes from the central post. Either applied whole — the rack
//! swaps its equipment generation, then the running configuration is published to `/status`, the
//! watchdog, the energy accountant and the uplink (which republishes the retained online status
//! with the new `config_version`) — or refused whole with every reason, the running one kept.
//!
//! A desired configuration, in order (issue 12):
//! 1. `auth::accept` (SPEC §3): signed by a key with `desired_config = true`. A refusal is
//!    counted, reported (`auth_rejected`, throttled) and audited; only an authentic one is
//!    answered on `config/reported` (a forger cannot overwrite the retained report). An expired
//!    retained document of the running (or rolled-back) version is ignored quietly.
//! 2. Merged on top of the files and validated (every error, as `check-config` prints them).
//! 3. The local safety envelope: `safety::check` against the configuration of the LOCAL files
//!    alone; any violation rejects it whole, naming the rule.
//! 4. Applied; stored with the last good document (`config::desired`); its confirmation window
//!    opens (`confirm`, `config.confirm_after`). Healthy → confirmed; unhealthy → rolled back
//!    to the last good one (stored), reported on `config/reported` with the reason, event
//!    `config_rolled_back`. A version rolled back is not applied again when delivered again.
//!
//! The same envelope is checked on the stored document at start ([`restore`]) and on SIGHUP.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::confirm::{Baseline, Observation, Probation, Verdict};
use super::Daemon;
use crate::audit::AuditEntry;
use crate::auth::{self, AuthError, Rejected, TopicKind};
use crate::config::desired::{self, Desired, Stored};
use crate::config::{self, Config};
use crate::equipment::ReloadError;
use crate::record::{format_ts, Event, RecordBody};

const VIA: &str = "config/desired";

/// The files with `doc` merged last, validated, and within the local safety envelope: every
/// problem, one line each.
pub(super) fn check_desired(files: &[PathBuf], doc: &Desired) -> Result<Config, Vec<String>> {
    let merged = desired::merge(files, doc)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let local = config::load_files(files)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let violations = crate::safety::check(&local, &merged);
    if violations.is_empty() {
        Ok(merged)
    } else {
        Err(violations.iter().map(ToString::to_string).collect())
    }
}

/// At start: the files plus the stored desired document when it is still valid on top of them,
/// within the safety envelope, and changes nothing that needs a restart; otherwise the files
/// alone, the reason logged. `true` when the restored document is still in its confirmation
/// window (it runs on probation again).
pub(super) fn restore(files: &[PathBuf], cfg: Config) -> (Config, bool) {
    let state = match desired::load_state(&cfg.storage.path) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, file = %desired::path(&cfg.storage.path).display(), "stored desired configuration unreadable; not applied");
            return (cfg, false);
        }
    };
    let Some(doc) = &state.current else {
        return (cfg, false);
    };
    let version = doc.version.clone();
    match check_desired(files, doc) {
        Ok(merged) => match cfg.restart_section(&merged) {
            None => {
                tracing::info!(%version, confirmed = state.confirmed, "desired configuration restored");
                (merged, !state.confirmed)
            }
            Some(section) => {
                tracing::error!(%version, section, "stored desired configuration changes a section it may not; not applied");
                (cfg, false)
            }
        },
        Err(errors) => {
            tracing::error!(%version, errors = %errors.join("; "), "stored desired configuration invalid on top of the files (or outside [safety]); not applied");
            (cfg, false)
        }
    }
}

impl Daemon {
    /// SIGHUP: re-read the files (plus the stored desired document) and apply them if valid;
    /// otherwise keep the running configuration. The outcome shows in `/status.last_reload`.
    /// The TLS files are read again too.
    pub(super) async fn reload_files(&mut self) {
        tracing::info!("SIGHUP: re-reading configuration");
        let loaded = match desired::load(&self.cfg.storage.path) {
            Ok(Some(doc)) => check_desired(&self.files, &doc),
            Ok(None) => config::load_files(&self.files)
                .map_err(|e| e.0.iter().map(ToString::to_string).collect()),
            Err(e) => {
                tracing::error!(error = %e, "stored desired configuration unreadable; reloading the files alone");
                config::load_files(&self.files)
                    .map_err(|e| e.0.iter().map(ToString::to_string).collect())
            }
        };
        let outcome: Result<String, Vec<String>> = match loaded {
            Ok(new) => {
                let version = new.version.clone();
                self.apply(new)
                    .await
                    .map(|()| version)
                    .map_err(|e| e.messages())
            }
            Err(errors) => Err(errors),
        };
        if let Err(errors) = &outcome {
            tracing::error!(errors = %errors.join("; "), "configuration not applied; keeping the running one");
        }
        self.live
            .set_last_reload(outcome.as_deref().map_err(Vec::as_slice), &self.cfg.version);
        self.reload_tls("SIGHUP");
        if !self.cfg.security.require_signed {
            tracing::warn!("security.require_signed = false: UNSIGNED commands and desired configs are accepted from anyone who can publish on the broker; for demos only");
        }
    }

    /// Re-reads the TLS files (SIGHUP and every `uplink::tls::RELOAD_EVERY`).
    pub(super) fn reload_tls(&self, why: &str) {
        match self.uplink.handle.reload_tls() {
            Ok(Some(not_after)) => {
                tracing::info!(why, not_after = %format_ts(not_after), "TLS files re-read")
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(why, error = %e, "TLS files not re-read; the previous ones stay in use")
            }
        }
    }

    /// A `config/desired` message (module docs).
    pub(super) async fn on_desired(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // retained message cleared
        }
        let now = SystemTime::now();
        let accepted = match auth::accept(
            payload,
            TopicKind::Desired,
            &self.cfg.security,
            &self.cfg.cabinet.id,
            now,
        ) {
            Ok(a) => a,
            Err(r) => return self.desired_refused(&r).await,
        };
        let kid = accepted.kid().map(str::to_owned);
        let stored = desired::load_state(&self.cfg.storage.path).unwrap_or_else(|e| {
            tracing::error!(error = %e, "stored desired configuration state unreadable; starting it afresh");
            Stored::default()
        });
        let (version, outcome) = match Desired::from_message(accepted.payload()) {
            Err((version, reason)) => (version, Err(vec![reason])),
            Ok(doc) if doc.version == self.cfg.version => (doc.version, Ok(())),
            Ok(doc) => {
                if let Some(rb) = stored.was_rolled_back(&doc.version) {
                    // The retained message delivered again after its rollback: central sends
                    // a new version to try again.
                    tracing::info!(version = %doc.version, rolled_back = %rb.ts, "desired configuration rolled back earlier; not applied again");
                    self.audit_desired(
                        &doc.version,
                        kid.as_deref(),
                        "rejected",
                        &format!("rolled back at {}: {}", rb.ts, rb.reason),
                    );
                    return;
                }
                (doc.version.clone(), self.apply_desired(doc, stored).await)
            }
        };
        let (status, errors) = match outcome {
            Ok(()) => ("applied", Vec::new()),
            Err(errors) => ("rejected", errors),
        };
        tracing::info!(%version, status, ?errors, "desired configuration");
        self.audit_desired(&version, kid.as_deref(), status, &errors.join("; "));
        self.report(json!({
            "version": version,
            "status": status,
            "errors": errors,
            "ts": format_ts(SystemTime::now()),
        }))
        .await;
    }

    async fn desired_refused(&mut self, r: &Rejected) {
        let logged = self.commands.gate().rejected(r, VIA).await;
        let version = r
            .claims
            .as_deref()
            .and_then(|c| c.get("version"))
            .and_then(Value::as_str)
            .map(|v| v.chars().take(128).collect::<String>());
        self.audit.record(
            AuditEntry::new(
                VIA,
                None,
                Some("config"),
                version.as_deref(),
                r.kid.as_deref(),
                "auth_rejected",
                &format!("{}: {r}", r.reason()),
            ),
            logged,
        );
        if !r.authentic {
            return; // only what the central post signed is answered
        }
        let version = version.unwrap_or_default();
        if matches!(r.error, AuthError::Expired { .. }) {
            let stored = desired::load_state(&self.cfg.storage.path).unwrap_or_default();
            if version == self.cfg.version || stored.was_rolled_back(&version).is_some() {
                // The retained document seen again after it expired: nothing new.
                tracing::debug!(%version, "expired retained desired configuration ignored");
                return;
            }
        }
        self.report(json!({
            "version": version,
            "status": "rejected",
            "errors": [format!("auth: {r}")],
            "ts": format_ts(SystemTime::now()),
        }))
        .await;
    }

    async fn apply_desired(&mut self, doc: Desired, stored: Stored) -> Result<(), Vec<String>> {
        let new = check_desired(&self.files, &doc)?;
        // A newer document within the window of the previous one is judged against the state
        // before the first (the last good one), not against what the unconfirmed one broke.
        let baseline = match &self.probation {
            Some(p) => p.baseline().clone(),
            None => self.baseline(),
        };
        self.apply(new).await.map_err(|e| e.messages())?;
        let state = stored.applied(&doc);
        if let Err(e) = desired::store_state(&self.cfg.storage.path, &state) {
            tracing::error!(error = %e, "desired configuration applied but not persisted: a restart runs the previous one");
        }
        self.open_window(&doc.version, baseline, state);
        Ok(())
    }

    /// What works now: the baseline of a change.
    fn baseline(&self) -> Baseline {
        Baseline {
            uplink_up: self.uplink.handle.status().connected,
            devices_up: self
                .rack
                .board()
                .snapshot()
                .into_iter()
                .filter(|(_, s)| s.up() == Some(true))
                .map(|(name, _)| name)
                .collect(),
        }
    }

    /// Opens the confirmation window of `version` (or confirms at once with `confirm_after =
    /// 0`).
    pub(super) fn open_window(&mut self, version: &str, baseline: Baseline, state: Stored) {
        let window = self.cfg.rollback.confirm_after;
        if window.is_zero() {
            self.probation = None;
            self.confirm(state);
            return;
        }
        let configured: BTreeSet<String> = self
            .rack
            .board()
            .snapshot()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        tracing::info!(%version, window = %humantime::format_duration(window), "desired configuration on probation");
        self.probation = Some(Probation::new(
            version,
            baseline,
            &configured,
            &self.cfg.rollback.uplink_critical,
            Instant::now(),
            window,
        ));
    }

    fn observe(&self) -> Observation {
        let st = self.uplink.handle.status();
        let brokers: Vec<String> = self.cfg.uplink.brokers.iter().map(|b| b.url()).collect();
        // After a change of brokers: a session with one of the new ones, begun since.
        let uplink_up = st.connected
            && st.broker.as_ref().is_some_and(|b| brokers.contains(b))
            && self.sessions_before.is_none_or(|n| st.sessions > n);
        Observation {
            uplink_up,
            uplink_error: st.last_error,
            devices: self
                .rack
                .board()
                .snapshot()
                .into_iter()
                .map(|(name, s)| (name, (s.up() == Some(true), s.last_error)))
                .collect(),
        }
    }

    /// Once a second while a window is open: confirm or roll back when decided.
    pub(super) async fn check_window(&mut self) {
        let obs = self.observe();
        let Some(p) = &mut self.probation else {
            return;
        };
        match p.observe(Instant::now(), &obs) {
            Verdict::Pending => {}
            Verdict::Healthy => {
                let version = p.version().to_owned();
                self.probation = None;
                self.sessions_before = None;
                tracing::info!(%version, "desired configuration confirmed");
                self.audit_desired(&version, None, "confirmed", "");
                match desired::load_state(&self.cfg.storage.path) {
                    Ok(state) => self.confirm(state),
                    Err(e) => {
                        tracing::error!(error = %e, "desired configuration state unreadable; not marked confirmed")
                    }
                }
            }
            Verdict::Unhealthy(why) => {
                let version = p.version().to_owned();
                self.probation = None;
                self.sessions_before = None;
                self.roll_back(&version, why).await;
            }
        }
    }

    fn confirm(&self, state: Stored) {
        if let Err(e) = desired::store_state(&self.cfg.storage.path, &state.confirmed()) {
            tracing::error!(error = %e, "desired configuration confirmed but not persisted");
        }
    }

    /// `version` failed its window: the last good configuration runs again (module docs).
    async fn roll_back(&mut self, version: &str, why: Vec<String>) {
        let reason = why.join("; ");
        tracing::error!(%version, %reason, "desired configuration unhealthy: rolling back to the last good one");
        let state = match desired::load_state(&self.cfg.storage.path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "desired configuration state unreadable: rolling back to the files alone");
                Stored::default()
            }
        };
        let target = match &state.last_good {
            Some(doc) => check_desired(&self.files, doc),
            None => config::load_files(&self.files)
                .map_err(|e| e.0.iter().map(ToString::to_string).collect()),
        };
        let restored = match target {
            Ok(cfg) => match self.apply(cfg).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(errors = %e.messages().join("; "), "THE LAST GOOD CONFIGURATION COULD NOT BE APPLIED: the unhealthy one keeps running");
                    false
                }
            },
            Err(errors) => {
                tracing::error!(errors = %errors.join("; "), "THE LAST GOOD CONFIGURATION IS NO LONGER VALID: the unhealthy one keeps running");
                false
            }
        };
        self.sessions_before = None;
        if restored {
            let back = state.rolled_back(&reason, SystemTime::now());
            if let Err(e) = desired::store_state(&self.cfg.storage.path, &back) {
                tracing::error!(error = %e, "rollback not persisted: a restart runs the unhealthy configuration on probation again");
            }
        }
        let ev = Event::config_rolled_back(version, &self.cfg.version, &reason, restored);
        let _ = self.records.send(RecordBody::Event(ev)).await;
        self.audit_desired(version, None, "rolled_back", &reason);
        self.report(json!({
            "version": version,
            "status": "rejected",
            "errors": why,
            "rolled_back": restored,
            "running": self.cfg.version,
            "ts": format_ts(SystemTime::now()),
        }))
        .await;
    }

    fn audit_desired(&self, version: &str, kid: Option<&str>, result: &'static str, reason: &str) {
        let via = if matches!(result, "confirmed" | "rolled_back") {
            "confirm"
        } else {
            VIA
        };
        self.audit.record(
            AuditEntry::new(
                via,
                None,
                Some("config"),
                Some(version),
                kid,
                result,
                reason,
            ),
            true,
        );
    }

    async fn report(&self, doc: Value) {
        if self
            .uplink
            .handle
            .publish_config_reported(doc.to_string().into_bytes())
            .await
            .is_err()
        {
            tracing::warn!("uplink stopped; config/reported not published");
        }
    }

    /// Applies a validated configuration: refused whole if it changes what needs a restart; a
    /// failed start rolls back (`config_rolled_back`).
    pub(super) async fn apply(&mut self, new: Config) -> Result<(), ReloadError> {
        match self.rack.reload(&self.cfg, &new).await {
            Ok(()) => {
                tracing::info!(config_version = %new.version, "configuration applied");
                if new.uplink.brokers != self.cfg.uplink.brokers {
                    // The session restarts on the new list; the confirmation window needs a
                    // session established after this moment.
                    self.sessions_before = Some(self.uplink.handle.status().sessions);
                    self.uplink.handle.set_brokers(new.uplink.brokers.clone());
                }
                self.uplink.handle.set_config_version(&new.version);
                self.running.send_replace(Arc::new(new.clone()));
                self.cfg = new;
                Ok(())
            }
            Err(e) => {
                if e.rolled_back() {
                    let restored = matches!(e, ReloadError::RolledBack { .. });
                    let ev = Event::config_rolled_back(
                        &new.version,
                        &self.cfg.version,
                        &e.to_string(),
                        restored,
                    );
                    let _ = self.records.send(RecordBody::Event(ev)).await;
                }
                Err(e)
            }
        }
    }
}
