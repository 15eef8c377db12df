//! Configuration changes on a running daemon: SIGHUP re-reads the files (plus the stored desired
//! document), `P/C/config/desired` comes from the central post. Either applied whole — the rack
//! swaps its equipment generation, then the running configuration is published to `/status`, the
//! watchdog, the energy accountant and the uplink (which republishes the retained online status
//! with the new `config_version`) — or refused whole with every reason, the running one kept.
//! A desired configuration is stored (`config::desired`) only once applied; `config/reported`
//! says `applied` or `rejected` with the same error lines `check-config` prints.

use std::sync::Arc;
use std::time::SystemTime;

use super::Daemon;
use crate::config::desired::{self, Desired};
use crate::config::{self, Config};
use crate::equipment::ReloadError;
use crate::record::{format_ts, Event, RecordBody};

impl Daemon {
    /// SIGHUP: re-read the files (plus the stored desired document) and apply them if valid;
    /// otherwise keep the running configuration. The outcome shows in `/status.last_reload`.
    pub(super) async fn reload_files(&mut self) {
        tracing::info!("SIGHUP: re-reading configuration");
        let loaded = match desired::load(&self.cfg.storage.path) {
            Ok(Some(doc)) => desired::merge(&self.files, &doc),
            Ok(None) => config::load_files(&self.files),
            Err(e) => {
                tracing::error!(error = %e, "stored desired configuration unreadable; reloading the files alone");
                config::load_files(&self.files)
            }
        };
        let outcome = match loaded {
            Ok(new) => {
                let version = new.version.clone();
                self.apply(new).await.map(|()| version)
            }
            Err(errors) => Err(ReloadError::Invalid(errors)),
        };
        if let Err(e) = &outcome {
            tracing::error!(errors = %e.messages().join("; "), "configuration not applied; keeping the running one");
        }
        self.live
            .set_last_reload(outcome.as_deref(), &self.cfg.version);
    }

    /// A `config/desired` message: validated on top of the files, applied whole or rejected
    /// whole, reported on `config/reported` (retained).
    pub(super) async fn on_desired(&mut self, payload: &[u8]) {
        if payload.is_empty() {
            return; // retained message cleared
        }
        let (version, outcome) = match Desired::from_message(payload) {
            Err((version, reason)) => (version, Err(vec![reason])),
            Ok(doc) if doc.version == self.cfg.version => (doc.version, Ok(())),
            Ok(doc) => (doc.version.clone(), self.apply_desired(doc).await),
        };
        let (status, errors) = match outcome {
            Ok(()) => ("applied", Vec::new()),
            Err(errors) => ("rejected", errors),
        };
        tracing::info!(%version, status, ?errors, "desired configuration");
        let report = serde_json::json!({
            "version": version,
            "status": status,
            "errors": errors,
            "ts": format_ts(SystemTime::now()),
        });
        if self
            .uplink
            .handle
            .publish_config_reported(report.to_string().into_bytes())
            .await
            .is_err()
        {
            tracing::warn!("uplink stopped; config/reported not published");
        }
    }

    async fn apply_desired(&mut self, doc: Desired) -> Result<(), Vec<String>> {
        let new =
            desired::merge(&self.files, &doc).map_err(|e| ReloadError::Invalid(e).messages())?;
        self.apply(new).await.map_err(|e| e.messages())?;
        if let Err(e) = desired::store(&self.cfg.storage.path, &doc) {
            tracing::error!(error = %e, "desired configuration applied but not persisted: a restart runs the files");
        }
        Ok(())
    }

    /// Applies a validated configuration: refused whole if it changes what needs a restart; a
    /// failed start rolls back (`config_rolled_back`).
    async fn apply(&mut self, new: Config) -> Result<(), ReloadError> {
        // The files it names (camera passwords…) are checked first, as `check-config` does.
        let files = config::check_files(&new);
        if !files.errors.is_empty() {
            return Err(ReloadError::Invalid(config::ConfigErrors(files.errors)));
        }
        match self.rack.reload(&self.cfg, &new).await {
            Ok(()) => {
                tracing::info!(config_version = %new.version, "configuration applied");
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
