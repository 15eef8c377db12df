//! Light requests on an open line: `Set` (DAPC, verified for a single gear), and the level a
//! gear that comes back must get again. See the module header of `dali` for the rules.

use cabinetd_dali::command::{Command, Query};
use cabinetd_dali::{percent_to_arc, Address, ShortAddress, Status};

use super::commanded::Scope;
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
            } => self.set(bus, scope, level_percent, fade_s).await,
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
    ) -> Result<Result<(), LightError>, SessionError> {
        let present: Vec<u8> = self.present.iter().copied().collect();
        let reached = scope.addresses(&present, &self.groups);
        // A gear's refusal fails the request; anything else loses the line.
        let transport = |e: cabinetd_dali::Error| match SessionError::from(e) {
            SessionError::GearRefused(e) => Ok(e),
            e => Err(e),
        };
        let code = fade_s.map(fade_code);
        let program_fade = fade_to_program(code, &reached, &self.fade).is_some();
        let target = match scope {
            Scope::All => Address::Broadcast,
            Scope::Group(g) => Address::group(g).map_err(SessionError::from)?,
            Scope::Gear(a) => short(a),
        };
        // Remembered before it is sent: a gear that misses it (absent, or the line lost) gets
        // it when it comes back.
        self.commanded.set(scope, percent_to_arc(level_percent));
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
        tracing::info!(bus = %self.name, ?scope, level_percent, arc, ?fade_s, "light set");
        Ok(Ok(()))
    }

    /// A gear came back (`gear_found`, also after a bus power return, when it sits at its
    /// SYSTEM FAILURE LEVEL): it gets the level it was last told at once. `Err` = the line is
    /// lost; a gear refusing is logged (the next poll shows its level).
    pub(super) async fn resend(
        &mut self,
        bus: &mut Line,
        address: ShortAddress,
    ) -> Result<(), SessionError> {
        let a = address.get();
        let Some(arc) = self.commanded.level_of(a, &self.groups) else {
            return Ok(());
        };
        match bus.send(Command::Dapc(short(a), arc)).await {
            Ok(_) => {
                tracing::info!(bus = %self.name, address = a, arc, "gear back: its level sent again");
                self.poll_soon = true;
                Ok(())
            }
            Err(e) => match SessionError::from(e) {
                SessionError::GearRefused(e) => {
                    tracing::warn!(bus = %self.name, address = a, error = %e, "gear back: level not sent again");
                    Ok(())
                }
                e => Err(e),
            },
        }
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
}
