//! Carrying light levels to the DALI buses.
//!
//! [`LightRouter`] sends a target to the buses it concerns: `all` to every bus, `group:N` to the
//! buses that configure group N, `BUS/ADDR` to that bus. Who decides the levels — the lighting
//! programme, usage-adaptive lighting, rules, scenes, the central post — is the rules core's
//! (`rules::control`), whose light lane is the router's one user; a bus that was down or a gear
//! that came back gets its level again (the lane retries failed actions, the bus re-sends to a
//! gear found again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::light::{LightAction, LightError, LightRequest, LightTarget};

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
