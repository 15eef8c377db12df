//! Commands from the central post (SPEC §3 "Down"): parsing, validation and the ledger that makes
//! execution at-most-once per command id.
//!
//! Parsing is pure: a payload becomes either a [`Command`] to execute or a rejection whose reason
//! names the offending field. Every command gets exactly one final result; an id seen before is not
//! executed again — its earlier result is published again ([`Ledger`]). Execution is
//! [`exec`]'s: a bounded set of tasks, one per command in flight. Every way a command can end
//! badly is a [`CommandError`], mapped to its [`CommandStatus`] in one place.

pub mod exec;

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use serde_json::Value;

use crate::light::{self, LightError, LightTarget};
use crate::record::{CommandResult, CommandStatus};

/// How many command ids the ledger remembers (a day of busy crisis traffic).
pub const LEDGER_CAPACITY: usize = 4096;
/// Longest command id (bytes): longer ones are rejected without being stored or echoed.
pub const MAX_ID_BYTES: usize = crate::auth::MAX_ID_BYTES;

/// A validated action.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `point.write {point, value}`.
    PointWrite {
        /// `DEVICE/POINT`.
        point: String,
        /// Value in engineering units, as sent: booleans for coils, exact integers kept exact.
        value: cabinetd_modbus::Value,
    },
    /// `light.set {target, level_percent, fade_s?, hold_s?}`.
    LightSet {
        /// What to set.
        target: LightTarget,
        /// 0..=100.
        level_percent: f64,
        /// Fade duration in seconds.
        fade_s: Option<f64>,
        /// How long the override holds before the programme takes over again.
        hold_s: Option<f64>,
    },
    /// `light.release {target}`.
    LightRelease {
        /// What to release.
        target: LightTarget,
    },
    /// `camera.goto_preset {camera, preset}`.
    CameraGotoPreset {
        /// Camera name.
        camera: String,
        /// Preset token.
        preset: String,
    },
    /// `camera.reboot {camera}`.
    CameraReboot {
        /// Camera name.
        camera: String,
    },
    /// `camera.sync_time {camera}`.
    CameraSyncTime {
        /// Camera name.
        camera: String,
    },
    /// `scene.run {scene, hold_s?}` (v1.1). Whether the scene exists is the rules core's to say
    /// (it knows the running configuration).
    SceneRun {
        /// A scene name.
        scene: String,
        /// Overrides the scene's own `hold`.
        hold_s: Option<f64>,
    },
    /// `scene.release {scene}` (v1.1).
    SceneRelease {
        /// A scene name.
        scene: String,
    },
}

impl Action {
    /// The SPEC action name.
    pub fn name(&self) -> &'static str {
        match self {
            Action::PointWrite { .. } => "point.write",
            Action::LightSet { .. } => "light.set",
            Action::LightRelease { .. } => "light.release",
            Action::CameraGotoPreset { .. } => "camera.goto_preset",
            Action::CameraReboot { .. } => "camera.reboot",
            Action::CameraSyncTime { .. } => "camera.sync_time",
            Action::SceneRun { .. } => "scene.run",
            Action::SceneRelease { .. } => "scene.release",
        }
    }
}

/// A command ready to execute.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Its id.
    pub id: String,
    /// What to do.
    pub action: Action,
    /// Not to be executed after this instant.
    pub expires_at: Option<SystemTime>,
}

/// Why a payload cannot be executed, with as much of the command as could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The id, when the payload had one of 1 to 128 bytes (a payload without a usable id cannot
    /// get a result; a longer id is never stored nor echoed).
    pub id: Option<String>,
    /// The `action` label of `cabinetd_commands_total`: the SPEC action name, or `unknown` for
    /// anything else (never a label per name sent).
    pub action: String,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// Parse and validate a command payload.
pub fn parse(payload: &[u8]) -> Result<Command, Rejection> {
    let doc: Value = serde_json::from_slice(payload).map_err(|e| Rejection {
        id: None,
        action: "unknown".into(),
        reason: format!("payload is not JSON: {e}"),
    })?;
    let raw_id = doc.get("id").and_then(Value::as_str);
    let id = raw_id
        .filter(|id| (1..=MAX_ID_BYTES).contains(&id.len()))
        .map(str::to_owned);
    let action_name = doc
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let reject = |reason: String| Rejection {
        id: id.clone(),
        action: crate::metrics::Metrics::action_label(&action_name).to_owned(),
        reason,
    };
    let Some(obj) = doc.as_object() else {
        return Err(reject("payload must be a JSON object".into()));
    };
    let Some(id_str) = id.clone() else {
        return Err(reject(match raw_id {
            Some(_) => format!("field `id`: must be 1 to {MAX_ID_BYTES} bytes"),
            None => "field `id`: missing or not a string".into(),
        }));
    };
    let expires_at = match obj.get("expires_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            humantime::parse_rfc3339_weak(s)
                .map_err(|e| reject(format!("field `expires_at`: not an RFC 3339 time ({e})")))?,
        ),
        Some(_) => {
            return Err(reject(
                "field `expires_at`: must be an RFC 3339 string".into(),
            ))
        }
    };
    let empty = serde_json::Map::new();
    let args = match obj.get("args") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => return Err(reject("field `args`: must be an object".into())),
    };
    let action = parse_action(&action_name, args).map_err(reject)?;
    Ok(Command {
        id: id_str,
        action,
        expires_at,
    })
}

/// Validates the arguments of action `name` (SPEC §3), naming the field on error; shared with
/// the actions of rules and scenes, checked at load.
pub fn parse_action(name: &str, args: &serde_json::Map<String, Value>) -> Result<Action, String> {
    let string = |key: &str| -> Result<String, String> {
        match args.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) if key == "preset" => Ok(n.to_string()),
            Some(_) => Err(format!("field `args.{key}`: must be a non-empty string")),
            None => Err(format!("field `args.{key}`: missing")),
        }
    };
    let opt_number = |key: &str| -> Result<Option<f64>, String> {
        match args.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("field `args.{key}`: must be a number")),
        }
    };
    let target = |key: &str| -> Result<LightTarget, String> {
        light::parse_target(&string(key)?).map_err(|e| format!("field `args.{key}`: {e}"))
    };
    let allowed: &[&str] = match name {
        "point.write" => &["point", "value"],
        "light.set" => &["target", "level_percent", "fade_s", "hold_s"],
        "light.release" => &["target"],
        "camera.goto_preset" => &["camera", "preset"],
        "camera.reboot" | "camera.sync_time" => &["camera"],
        "scene.run" => &["scene", "hold_s"],
        "scene.release" => &["scene"],
        _ => {
            // The name as sent is echoed in the result: bounded.
            let shown: String = name.chars().take(64).collect();
            return Err(format!("field `action`: unknown action {shown:?}"));
        }
    };
    if let Some(extra) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("field `args.{extra}`: not an argument of {name}"));
    }
    Ok(match name {
        "point.write" => {
            let point = string("point")?;
            if !point.contains('/') {
                return Err("field `args.point`: must be DEVICE/POINT".into());
            }
            let value = match args.get("value") {
                Some(Value::Bool(b)) => cabinetd_modbus::Value::Bool(*b),
                Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => cabinetd_modbus::Value::Int(i),
                    (_, Some(u), _) => cabinetd_modbus::Value::UInt(u),
                    (_, _, Some(f)) if f.is_finite() => cabinetd_modbus::Value::Float(f),
                    _ => return Err("field `args.value`: not a finite number".into()),
                },
                Some(_) => return Err("field `args.value`: must be a number or a boolean".into()),
                None => return Err("field `args.value`: missing".into()),
            };
            Action::PointWrite { point, value }
        }
        "light.set" => {
            let target = target("target")?;
            let level_percent = args
                .get("level_percent")
                .and_then(Value::as_f64)
                .ok_or("field `args.level_percent`: missing or not a number")?;
            let (fade_s, hold_s) = (opt_number("fade_s")?, opt_number("hold_s")?);
            light::check_set(level_percent, fade_s, hold_s).map_err(|e| e.to_string())?;
            Action::LightSet {
                target,
                level_percent,
                fade_s,
                hold_s,
            }
        }
        "light.release" => Action::LightRelease {
            target: target("target")?,
        },
        "camera.goto_preset" => Action::CameraGotoPreset {
            camera: string("camera")?,
            preset: string("preset")?,
        },
        "camera.reboot" => Action::CameraReboot {
            camera: string("camera")?,
        },
        "scene.run" => {
            let scene = string("scene")?;
            let hold_s = opt_number("hold_s")?;
            if let Some(h) = hold_s {
                if !(h > 0.0 && h <= light::HOLD_MAX_S) {
                    return Err(format!(
                        "field `args.hold_s`: {h} must be more than 0 and at most {} s",
                        light::HOLD_MAX_S
                    ));
                }
            }
            Action::SceneRun { scene, hold_s }
        }
        "scene.release" => Action::SceneRelease {
            scene: string("scene")?,
        },
        _ => Action::CameraSyncTime {
            camera: string("camera")?,
        },
    })
}

/// Why a command did not succeed; [`CommandError::status`] is the one mapping to the result's
/// status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command is wrong (unknown action or target, bad argument, not writable, out of
    /// range): never retried. The text names the field.
    #[error("{0}")]
    Rejected(String),
    /// Too many commands in flight: not executed.
    #[error("busy: {0} commands are in flight; send it again later with a new id")]
    Busy(usize),
    /// Arrived after its `expires_at`: not executed.
    #[error("{0}")]
    Expired(String),
    /// Tried and failed (device error, timeout, the device or the daemon stopping).
    #[error("{0}")]
    Failed(String),
}

impl CommandError {
    /// The result status: wrong or refused → `rejected`, too late → `expired`, tried → `failed`.
    pub fn status(&self) -> CommandStatus {
        match self {
            CommandError::Rejected(_) | CommandError::Busy(_) => CommandStatus::Rejected,
            CommandError::Expired(_) => CommandStatus::Expired,
            CommandError::Failed(_) => CommandStatus::Failed,
        }
    }

    /// The result record of command `id`.
    pub fn result(&self, id: &str) -> CommandResult {
        result(id, self.status(), self.to_string())
    }
}

impl From<LightError> for CommandError {
    fn from(e: LightError) -> Self {
        match e {
            LightError::Rejected(r) => CommandError::Rejected(r),
            LightError::Failed(r) => CommandError::Failed(r),
        }
    }
}

impl From<cabinetd_modbus::Error> for CommandError {
    /// A write the adapter refused before touching the bus is `rejected` (naming the field);
    /// every other failure (link, device exception, device task stopped) is `failed`.
    fn from(e: cabinetd_modbus::Error) -> Self {
        match e {
            cabinetd_modbus::Error::Rejected { field, reason } => {
                CommandError::Rejected(format!("field `args.{field}`: {reason}"))
            }
            e => CommandError::Failed(e.to_string()),
        }
    }
}

/// The outcome of command `id` as its result record.
pub fn outcome(id: &str, r: Result<(), CommandError>) -> CommandResult {
    match r {
        Ok(()) => result(id, CommandStatus::Succeeded, ""),
        Err(e) => e.result(id),
    }
}

/// Build a result record.
pub fn result(id: &str, status: CommandStatus, reason: impl Into<String>) -> CommandResult {
    CommandResult {
        ts: SystemTime::now(),
        id: id.to_owned(),
        status,
        reason: reason.into(),
    }
}

/// What to do with a command id.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never seen: execute it.
    New,
    /// Seen and still executing: do nothing now, its result will come.
    Running,
    /// Seen and finished: publish this earlier result again.
    Done(CommandResult),
}

/// Remembers the last [`LEDGER_CAPACITY`] command ids and their results.
#[derive(Debug, Default)]
pub struct Ledger {
    entries: HashMap<String, Option<CommandResult>>,
    order: VecDeque<String>,
}

impl Ledger {
    /// Look an id up and, when new, mark it running.
    pub fn begin(&mut self, id: &str) -> Seen {
        match self.entries.get(id) {
            Some(None) => Seen::Running,
            Some(Some(r)) => Seen::Done(r.clone()),
            None => {
                if self.order.len() >= LEDGER_CAPACITY {
                    if let Some(old) = self.order.pop_front() {
                        self.entries.remove(&old);
                    }
                }
                self.order.push_back(id.to_owned());
                self.entries.insert(id.to_owned(), None);
                Seen::New
            }
        }
    }

    /// Record the final result of an id.
    pub fn finish(&mut self, result: &CommandResult) {
        if let Some(slot) = self.entries.get_mut(&result.id) {
            *slot = Some(result.clone());
        } else {
            self.order.push_back(result.id.clone());
            self.entries.insert(result.id.clone(), Some(result.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_point_write() {
        let c = parse(br#"{"id":"c1","action":"point.write","args":{"point":"meter-main/setpoint","value":42},"expires_at":"2030-01-01T00:00:00Z"}"#).unwrap();
        assert_eq!(c.id, "c1");
        assert_eq!(
            c.action,
            Action::PointWrite {
                point: "meter-main/setpoint".into(),
                value: cabinetd_modbus::Value::Int(42)
            }
        );
        assert!(c.expires_at.is_some());
    }

    #[test]
    fn rejections_name_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"id":"a","action":"fly"}"#, "field `action`"),
            (br#"{"action":"point.write"}"#, "field `id`"),
            (br#"{"id":"a","action":"point.write","args":{"point":"x/y"}}"#, "field `args.value`"),
            (br#"{"id":"a","action":"point.write","args":{"point":"xy","value":1}}"#, "field `args.point`"),
            (br#"{"id":"a","action":"light.set","args":{"target":"all","level_percent":120}}"#, "field `args.level_percent`"),
            (br#"{"id":"a","action":"light.set","args":{"target":"group:16","level_percent":10}}"#, "field `args.target`"),
            (br#"{"id":"a","action":"light.set","args":{"target":"all","level_percent":10,"colour":1}}"#, "field `args.colour`"),
            (br#"{"id":"a","action":"camera.reboot","args":{},"expires_at":"yesterday"}"#, "field `expires_at`"),
        ];
        for (payload, field) in cases {
            let r = parse(payload).unwrap_err();
            assert!(
                r.reason.contains(field),
                "{:?} → {}",
                String::from_utf8_lossy(payload),
                r.reason
            );
        }
        assert_eq!(parse(b"not json").unwrap_err().id, None);
    }

    /// Issue 12: a 129-byte id was stored in the ledger and echoed in the result; an unknown
    /// action made a new `cabinetd_commands_total` label per name.
    #[test]
    fn long_ids_are_not_echoed_and_unknown_actions_share_one_label() {
        let long = "x".repeat(129);
        let r = parse(format!(r#"{{"id":"{long}","action":"light.set"}}"#).as_bytes()).unwrap_err();
        assert_eq!(r.id, None);
        assert!(r.reason.contains("1 to 128 bytes"), "{}", r.reason);
        assert!(!r.reason.contains(&long));
        let ok = "y".repeat(128);
        let r = parse(format!(r#"{{"id":"{ok}","action":"light.set"}}"#).as_bytes()).unwrap_err();
        assert_eq!(r.id.as_deref(), Some(ok.as_str()));
        let r = parse(br#"{"id":"a","action":"rm.rf"}"#).unwrap_err();
        assert_eq!(r.action, "unknown");
        let huge = "z".repeat(10_000);
        let r = parse(format!(r#"{{"id":"a","action":"{huge}"}}"#).as_bytes()).unwrap_err();
        assert_eq!(r.action, "unknown");
        assert!(r.reason.len() < 200, "{}", r.reason);
        let r = parse(br#"{"id":"a","action":"light.set","args":{}}"#).unwrap_err();
        assert_eq!(r.action, "light.set");
    }

    #[test]
    fn errors_map_to_one_status_each() {
        let modbus = |e| CommandError::from(e).status();
        assert_eq!(
            modbus(cabinetd_modbus::Error::Rejected {
                field: "value",
                reason: "above max".into()
            }),
            CommandStatus::Rejected
        );
        assert_eq!(
            modbus(cabinetd_modbus::Error::DeviceDown),
            CommandStatus::Failed
        );
        assert_eq!(
            CommandError::from(LightError::Rejected("x".into())).status(),
            CommandStatus::Rejected
        );
        let busy = CommandError::Busy(32).result("c1");
        assert_eq!(busy.status, CommandStatus::Rejected);
        assert!(busy.reason.starts_with("busy"), "{}", busy.reason);
        assert_eq!(
            outcome("c1", Err(CommandError::Expired("late".into()))).status,
            CommandStatus::Expired
        );
        assert_eq!(outcome("c1", Ok(())).status, CommandStatus::Succeeded);
    }

    #[test]
    fn ledger_executes_once_and_replays_the_result() {
        let mut l = Ledger::default();
        assert_eq!(l.begin("c1"), Seen::New);
        assert_eq!(l.begin("c1"), Seen::Running);
        let r = result("c1", CommandStatus::Succeeded, "");
        l.finish(&r);
        assert_eq!(l.begin("c1"), Seen::Done(r));
    }

    #[test]
    fn ledger_forgets_oldest_beyond_capacity() {
        let mut l = Ledger::default();
        for i in 0..=LEDGER_CAPACITY {
            assert_eq!(l.begin(&format!("c{i}")), Seen::New);
        }
        assert_eq!(l.begin("c0"), Seen::New);
        assert_eq!(l.begin(&format!("c{LEDGER_CAPACITY}")), Seen::Running);
    }
}
