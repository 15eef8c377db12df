//! Light requests on an open line: `Set` (with its verification), programme steps and
//! `Release`. See the module header of `dali` for the rules.

use std::time::Duration;

use cabinetd_dali::command::{Command, Query};
use cabinetd_dali::{percent_to_arc, Address, Status};
use tokio::time::Instant;

use super::overrides::Scope;
use super::session::{Line, Runner};
use super::{fade_code, fade_to_program, points, short, SessionError};
use crate::light::{LightAction, LightError, LightRequest};
use crate::record::Quality;

impl Runner {
    /// Handles one request on an open line. `Err` = the line is lost.
    pub(super) async fn request(
        &mut self,
        bus: &mut Line,
        req: LightRequest,
    ) -> Result<(), SessionError> {
        let scope = match self.check(&req) {
            Ok(Some(s)) => s,
            Ok(None) => {
                let _ = req.reply.send(Ok(()));
                return Ok(());
            }
            Err(e) => {
                let _ = req.reply.send(Err(e));
                return Ok(());
            }
        };
        let outcome = match req.action {
            LightAction::Set {
                level_percent,
                fade_s,
                hold_s,
            } => self.set(bus, scope, level_percent, fade_s, hold_s).await,
            LightAction::Release => self.release(bus, scope).await,
            LightAction::Programme { level_percent } => {
                self.programme(bus, scope, level_percent).await
            }
        };
        self.poll_soon = true;
        match outcome {
            Ok(r) => {
                let _ = req.reply.send(r);
                Ok(())
            }
            Err(e) => {
                let _ = req.reply.send(Err(LightError::Failed(format!(
                    "DALI bus {} failed: {e}",
                    self.name
                ))));
                Err(e)
            }
        }
    }

    /// `Ok(reply)` keeps the session; `Err` = the line is lost.
    pub(super) async fn set(
        &mut self,
        bus: &mut Line,
        scope: Scope,
        level_percent: f64,
        fade_s: Option<f64>,
        hold_s: Option<f64>,
    ) -> Result<Result<(), LightError>, SessionError> {
        let present: Vec<u8> = self.present.iter().copied().collect();
        let reached = scope.addresses(&present, &self.groups);
        // A gear's refusal fails the request; anything else loses the line.
        let transport = |e: cabinetd_dali::Error| match SessionError::from(e) {
            SessionError::GearRefused(e) => Ok(e),
            e => Err(e),
        };
        // The level before the first override, for release.
        for a in self.overrides.unsaved(&reached) {
            match bus.query_value(short(a), Query::ActualLevel).await {
                Ok(Some(arc)) if arc != 255 => self.overrides.save(a, arc),
                Ok(_) => {}
                Err(e) => {
                    transport(e)?;
                }
            }
        }
        let code = fade_s.map(fade_code);
        let program_fade = fade_to_program(code, &reached, &self.fade).is_some();
        let target = match scope {
            Scope::All => Address::Broadcast,
            Scope::Group(g) => Address::group(g).map_err(SessionError::from)?,
            Scope::Gear(a) => short(a),
        };
        let arc = match bus
            .set_level(target, level_percent, code.filter(|_| program_fade))
            .await
        {
            Ok(arc) => arc,
            Err(e) => {
                let e = transport(e)?;
                return Ok(Err(LightError::Failed(e)));
            }
        };
        if let (true, Some(c)) = (program_fade, code) {
            for a in &reached {
                self.fade.insert(*a, c);
            }
        }
        if let Scope::Gear(a) = scope {
            match self.verify(bus, a, arc).await {
                Ok(Ok(level)) => {
                    let p = points::point_name(&self.name, a, "level");
                    self.offer(p, Some(points::number(level, 2)), Quality::Good)
                        .await;
                }
                Ok(Err(reason)) => return Ok(Err(LightError::Failed(reason))),
                Err(e) => {
                    let e = transport(e)?;
                    return Ok(Err(LightError::Failed(e)));
                }
            }
        }
        let hold_until = hold_s.map(|h| Instant::now() + Duration::from_secs_f64(h));
        self.overrides.set(scope, hold_until, &self.groups);
        tracing::info!(bus = %self.name, ?scope, level_percent, arc, ?fade_s, ?hold_s, "light set");
        Ok(Ok(()))
    }

    /// A programme step: overridden gear only remember the level for their release; the others
    /// get it now, in one frame when none of the scope is overridden.
    async fn programme(
        &mut self,
        bus: &mut Line,
        scope: Scope,
        level_percent: f64,
    ) -> Result<Result<(), LightError>, SessionError> {
        let present: Vec<u8> = self.present.iter().copied().collect();
        let reached = scope.addresses(&present, &self.groups);
        let arc = percent_to_arc(level_percent);
        let (overridden, free): (Vec<u8>, Vec<u8>) = reached
            .iter()
            .partition(|a| self.overrides.saved(**a).is_some());
        for a in &overridden {
            self.overrides.replace_saved(*a, arc);
        }
        let targets: Vec<Address> = if overridden.is_empty() {
            vec![match scope {
                Scope::All => Address::Broadcast,
                Scope::Group(g) => Address::group(g).map_err(SessionError::from)?,
                Scope::Gear(a) => short(a),
            }]
        } else {
            free.iter().map(|a| short(*a)).collect()
        };
        for target in targets {
            if let Err(e) = bus.set_level(target, level_percent, None).await {
                return match SessionError::from(e) {
                    SessionError::GearRefused(e) => Ok(Err(LightError::Failed(e))),
                    e => Err(e),
                };
            }
        }
        tracing::info!(bus = %self.name, ?scope, level_percent, kept_overrides = overridden.len(), "programme step");
        Ok(Ok(()))
    }

    /// QUERY ACTUAL LEVEL after a DAPC to one gear: the level in percent, or why it is not set.
    async fn verify(
        &mut self,
        bus: &mut Line,
        a: u8,
        arc: u8,
    ) -> Result<Result<f64, String>, cabinetd_dali::Error> {
        let source = points::gear_source(&self.name, a);
        let actual = bus.query_value(short(a), Query::ActualLevel).await?;
        let Some(actual) = actual else {
            return Ok(Err(format!("{source} did not answer QUERY ACTUAL LEVEL")));
        };
        if actual == arc {
            return Ok(Ok(cabinetd_dali::arc_to_percent(arc).unwrap_or(0.0)));
        }
        let status = bus
            .query_value(short(a), Query::Status)
            .await?
            .map(Status::from_byte);
        match status {
            Some(s) if s.lamp_failure => Ok(Err(format!(
                "{source} has a lamp failure: level not reached"
            ))),
            // Still fading towards it, or clamped to the gear's own MIN/MAX: applied.
            Some(s) if s.fade_running || s.limit_error => {
                Ok(Ok(cabinetd_dali::arc_to_percent(actual).unwrap_or(0.0)))
            }
            Some(_) => {
                // Not every gear flags a clamped level (LIMIT ERROR is optional in practice):
                // compare with its limits directly.
                let min = bus.query_value(short(a), Query::MinLevel).await?;
                let max = bus.query_value(short(a), Query::MaxLevel).await?;
                match (min, max) {
                    (Some(lo), Some(hi)) if arc > 0 && lo <= hi && actual == arc.clamp(lo, hi) => {
                        Ok(Ok(cabinetd_dali::arc_to_percent(actual).unwrap_or(0.0)))
                    }
                    _ => Ok(Err(format!(
                        "{source} reads back arc level {actual} after DAPC {arc}"
                    ))),
                }
            }
            None => Ok(Err(format!(
                "{source} did not answer QUERY STATUS after DAPC {arc}"
            ))),
        }
    }

    /// Restores the saved levels `scope` covers. `Err` = the line is lost.
    pub(super) async fn release(
        &mut self,
        bus: &mut Line,
        scope: Scope,
    ) -> Result<Result<(), LightError>, SessionError> {
        let restore = self.overrides.release(scope, &self.groups);
        let mut failures = Vec::new();
        for (a, arc) in restore {
            let result = async {
                let wanted = self.fallbacks.get(&a).and_then(|f| f.fade_time);
                if let Some(code) = wanted.filter(|c| self.fade.get(&a) != Some(c)) {
                    bus.send(Command::Dtr0(code)).await?;
                    bus.send(Command::SetFadeTime(short(a))).await?;
                    self.fade.insert(a, code);
                }
                bus.send(Command::Dapc(short(a), arc)).await
            }
            .await;
            if let Err(e) = result {
                match SessionError::from(e) {
                    SessionError::GearRefused(e) => failures.push(format!("{a}: {e}")),
                    e => return Err(e),
                }
            }
        }
        tracing::info!(bus = %self.name, ?scope, "light released");
        if failures.is_empty() {
            Ok(Ok(()))
        } else {
            Ok(Err(LightError::Failed(failures.join("; "))))
        }
    }
}
