//! Carrying light commands and the lighting programme to the DALI buses.
//!
//! [`LightRouter`] sends a target to the buses it concerns: `all` to every bus, `group:N` to the
//! buses that configure group N, `BUS/ADDR` to that bus. [`run_programme`] follows the
//! [`Programme`]: at start it applies the current level of every programmed target, then sleeps
//! until the next change and applies again. It also re-applies every [`REAPPLY_EVERY`], so a bus
//! that was down or a gear that was replaced comes back to the programme without waiting for the
//! next step (a DAPC frame per target; gear under a central override only note the level).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::Starter;
use crate::config::Config;
use crate::light::{LightAction, LightError, LightRequest, LightTarget};
use crate::lighting::Programme;

/// How often the programme's current levels are applied again even without a change.
pub const REAPPLY_EVERY: Duration = Duration::from_secs(300);
/// How long one bus may take to carry out a light request (a DALI bus serialises everything).
pub const LIGHT_TIMEOUT: Duration = Duration::from_secs(30);

/// The DALI buses of a configuration, by name, with the groups each configures.
#[derive(Clone, Default)]
pub struct LightRouter {
    buses: BTreeMap<String, mpsc::Sender<LightRequest>>,
    groups: BTreeMap<String, BTreeSet<u8>>,
}

impl LightRouter {
    /// Add a bus and its request channel.
    pub fn add(&mut self, cfg: &crate::config::DaliBus, requests: mpsc::Sender<LightRequest>) {
        self.groups.insert(
            cfg.name.clone(),
            cfg.groups.iter().map(|g| g.number).collect(),
        );
        self.buses.insert(cfg.name.clone(), requests);
    }

    /// Which buses a target concerns; `Err` names the field when none does.
    pub fn route(&self, target: &LightTarget) -> Result<Vec<String>, String> {
        let names: Vec<String> = match target {
            LightTarget::All => self.buses.keys().cloned().collect(),
            LightTarget::Group(g) => self
                .groups
                .iter()
                .filter(|(_, gs)| gs.contains(g))
                .map(|(name, _)| name.clone())
                .collect(),
            LightTarget::Gear { bus, .. } => {
                self.buses.keys().filter(|n| *n == bus).cloned().collect()
            }
        };
        if names.is_empty() {
            return Err(match target {
                LightTarget::All => {
                    "field `args.target`: no DALI bus is configured on this cabinet".into()
                }
                LightTarget::Group(g) => {
                    format!("field `args.target`: no DALI bus of this cabinet has group {g}")
                }
                LightTarget::Gear { bus, .. } => {
                    format!("field `args.target`: no DALI bus {bus:?} on this cabinet")
                }
            });
        }
        Ok(names)
    }

    /// Carry `action` to every bus the target concerns and combine the replies: rejected if any
    /// bus rejects, failed if any fails, succeeded otherwise.
    pub async fn send(&self, target: &LightTarget, action: LightAction) -> Result<(), LightError> {
        let names = self.route(target).map_err(LightError::Rejected)?;
        let mut replies = Vec::new();
        for name in names {
            let (reply, rx) = oneshot::channel();
            let req = LightRequest {
                target: target.clone(),
                action,
                reply,
            };
            match self.buses[&name].send(req).await {
                Ok(()) => replies.push((name, rx)),
                Err(_) => return Err(LightError::Failed(format!("DALI bus {name} has stopped"))),
            }
        }
        let mut outcome = Ok(());
        for (name, rx) in replies {
            let r = match tokio::time::timeout(LIGHT_TIMEOUT, rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err(LightError::Failed(format!("DALI bus {name} has stopped"))),
                Err(_) => Err(LightError::Failed(format!(
                    "DALI bus {name}: no answer within {LIGHT_TIMEOUT:?}"
                ))),
            };
            outcome = match (outcome, r) {
                (Err(e @ LightError::Rejected(_)), _) | (_, Err(e @ LightError::Rejected(_))) => {
                    Err(e)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
                (Ok(()), Ok(())) => Ok(()),
            };
        }
        outcome
    }
}

/// The programmed targets, broadest first (all, groups, gear), so that narrower ones win.
pub fn programmed_targets(cfg: &Config) -> Vec<LightTarget> {
    let mut targets: Vec<LightTarget> = Vec::new();
    for step in &cfg.lighting.steps {
        if !targets.contains(&step.target) {
            targets.push(step.target.clone());
        }
    }
    targets.sort_by_key(LightTarget::specificity);
    targets
}

/// Starts the lighting programme of `cfg` on the generation's buses, when it has steps and the
/// cabinet has a DALI bus. A programme that cannot be built (unknown time zone) is logged, not
/// fatal: the buses keep their fallback levels and still obey commands.
pub(super) fn start_programme(cfg: &Config, s: &mut Starter<'_>) {
    if cfg.dali.is_empty() {
        return;
    }
    match Programme::from_config(cfg) {
        Ok(programme) if !programme.is_empty() => {
            let router = s.controls().lights.clone();
            let stop = s.entry_token().cancelled_owned();
            let targets = programmed_targets(cfg);
            s.spawn(
                "lighting programme",
                run_programme(programme, targets, router, stop),
            );
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "lighting programme not started"),
    }
}

/// Follow the programme until `stop` resolves.
pub async fn run_programme(
    programme: Programme,
    targets: Vec<LightTarget>,
    router: LightRouter,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    tokio::select! {
        () = stop => {}
        () = follow(programme, targets, router) => {}
    }
}

async fn follow(programme: Programme, targets: Vec<LightTarget>, router: LightRouter) {
    loop {
        let now = jiff::Timestamp::now();
        for target in &targets {
            let Some(level_percent) = programme.level_at(target, now) else {
                continue;
            };
            if let Err(e) = router
                .send(target, LightAction::Programme { level_percent })
                .await
            {
                tracing::warn!(?target, level_percent, error = %e, "programme step not applied; retried at the next change or within 5 min");
            }
        }
        let wait = match programme.next_change_after(now) {
            Some((at, steps)) => {
                let until = Duration::try_from(at.duration_since(jiff::Timestamp::now()))
                    .unwrap_or_default();
                tracing::debug!(next = %at, steps = steps.len(), "next programme change");
                until.min(REAPPLY_EVERY)
            }
            None => REAPPLY_EVERY,
        };
        tokio::time::sleep(wait).await;
    }
}
