//! The cabinet acting on its own: rules, scenes, usage-adaptive lighting, the mode, control
//! arbitration and clock safety, as one pure core ([`Core`]) on explicit time. `cabinetd
//! simulate` ([`simulate`]) and the daemon ([`run`], the rules task) drive the same core;
//! nothing here does I/O except the state file's reader and writer ([`state`]), the simulator's
//! CLI and the rules task.
//!
//! Layers (a module uses only those above it):
//! - [`mode`], [`expr`], [`graph`]: leaves. The config validator uses `expr` (conditions are
//!   parsed at load) and `graph` (loops are refused at load).
//! - [`window`] (`during`, `weekdays`, nights), [`clock`] (steps, plausibility), [`state`]
//!   (the persisted control state).
//! - [`engine`] (rule states), [`adaptive`] (usage-adaptive levels), [`control`] (who is in
//!   charge of each target; claims and the outputs that follow from them).
//! - [`core`]: routes inputs to those, runs actions of rules and scenes, and returns outputs.
//! - [`simulate`]: the CLI; [`run`]: the daemon's rules task (readings, uplink, commands, time
//!   in; state file, events and equipment actions out).
//!
//! Time: every call gets a [`Now`]: monotonic time (for `for`, holds, the mode's
//! `autonomous_after`) and wall time (programme, windows, nights); see [`core`] for how the
//! daemon drives it.

pub mod adaptive;
pub mod clock;
pub mod control;
pub mod core;
pub mod engine;
pub mod expr;
pub mod graph;
pub mod mode;
pub mod run;
pub mod simulate;
pub mod state;
#[cfg(test)]
mod testutil;
pub mod window;

use std::time::{Duration, SystemTime};

use jiff::Timestamp;
use serde_json::{json, Value as Json};

pub use self::core::{Core, StepOut};
pub use control::{Controller, Target};
pub use mode::Mode;

use crate::command::Action;
use crate::record::{Event, Severity};

/// The two clocks at one instant: `mono` is monotonic time since an arbitrary origin (the
/// daemon's start, the simulation's `--from`), `wall` the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic.
    pub mono: Duration,
    /// Wall clock.
    pub wall: Timestamp,
}

/// An action to carry out on equipment.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionOut {
    /// What: `light.set` (never with `hold_s`: holds are the core's), `point.write`,
    /// `camera.*`.
    pub action: Action,
    /// On whose behalf (the controller in charge of the target).
    pub by: Controller,
    /// Why, for people.
    pub reason: String,
    /// The central command this action carries out, if any: its result is this action's.
    pub command: Option<String>,
}

/// An event to record (outbox, events stream).
#[derive(Debug, Clone, PartialEq)]
pub struct EventOut {
    /// `kind`.
    pub kind: crate::event::EventKind,
    /// Severity.
    pub severity: Severity,
    /// `cabinetd`, or the device/point a rule's event names.
    pub source: String,
    /// One human sentence.
    pub message: String,
    /// Kind-specific data.
    pub data: Json,
    /// The rule or scene that raised it (custom events).
    pub by: Option<Controller>,
}

impl EventOut {
    /// The event record, stamped `ts`.
    pub fn to_record(&self, ts: SystemTime) -> Event {
        Event {
            ts,
            kind: self.kind.clone(),
            severity: self.severity,
            source: self.source.clone(),
            message: self.message.clone(),
            data: self.data.clone(),
        }
    }
}

/// One output of the core, in the order it must be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Act on equipment.
    Action(ActionOut),
    /// Record an event.
    Event(EventOut),
}

impl ActionOut {
    /// The target as a string (light target, point, or camera).
    pub fn target(&self) -> String {
        match &self.action {
            Action::LightSet { target, .. } | Action::LightRelease { target } => {
                crate::light::target_name(target)
            }
            Action::PointWrite { point, .. } => point.clone(),
            Action::CameraGotoPreset { camera, .. }
            | Action::CameraReboot { camera }
            | Action::CameraSyncTime { camera } => camera.clone(),
            Action::SceneRun { scene, .. } | Action::SceneRelease { scene } => {
                format!("scene:{scene}")
            }
        }
    }

    /// The arguments besides the target, as JSON.
    pub fn args(&self) -> Json {
        match &self.action {
            Action::LightSet {
                level_percent,
                fade_s,
                ..
            } => {
                let mut a = json!({ "level_percent": number(*level_percent) });
                if let Some(f) = fade_s {
                    a["fade_s"] = number(*f);
                }
                a
            }
            Action::PointWrite { value, .. } => json!({ "value": control::value_json(*value) }),
            Action::CameraGotoPreset { preset, .. } => json!({ "preset": preset }),
            _ => json!({}),
        }
    }
}

/// A number as JSON, integral values as integers (`70`, not `70.0`).
pub fn number(x: f64) -> Json {
    if x.fract() == 0.0 && x.abs() <= 1e15 {
        Json::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
    }
}
