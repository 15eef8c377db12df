//! Commands from the central post (SPEC §3 "Down"): parsing, validation and the ledger that makes
//! execution at-most-once per command id.
//!
//! Parsing is pure: a payload becomes either a [`Command`] to execute or a rejection whose reason
//! names the offending field. Every command gets exactly one final result; an id seen before is not
//! executed again — its earlier result is published again ([`Ledger`], persisted). Execution is
//! [`exec`]'s: a bounded set of tasks, one per command in flight. Every way a command can end
//! badly is a [`CommandError`], mapped to its [`CommandStatus`] in one place.
//!
//! The JSON is read strictly ([`strict_json`]): a key given twice is a rejection naming it
//! (serde_json would keep the last one silently, so what was checked and what runs could
//! differ), and nesting is bounded ([`MAX_JSON_DEPTH`]). A payload without a usable id cannot
//! get a result record: it raises a `command_rejected` event instead ([`rejected_event`]).

pub mod exec;
mod front;
pub mod ledger;

pub use front::via;

use std::time::SystemTime;

use serde_json::Value;

use crate::light::{self, LightError, LightTarget};
use crate::record::{CommandResult, CommandStatus};

pub use ledger::Ledger;

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
        /// Preset token, else preset name (a number is taken as its token).
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
    /// Not to be executed after this instant (always `Some` from [`parse`]: SPEC requires it).
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

/// Deepest nesting of objects and arrays in a command payload (a command needs 2).
pub const MAX_JSON_DEPTH: usize = 16;

/// Parses JSON refusing what serde_json accepts silently: a key given twice in an object
/// (`field `args.value`: given twice`) and nesting deeper than [`MAX_JSON_DEPTH`]. `Err` is the
/// reason.
pub fn strict_json(payload: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let parsed =
        serde::de::DeserializeSeed::deserialize(strict::Strict { path: "", depth: 0 }, &mut de)
            .and_then(|v| de.end().map(|()| v));
    parsed.map_err(|e| match e.classify() {
        // Our own refusals (the message names the field), and type errors.
        serde_json::error::Category::Data => e.to_string(),
        _ => format!("payload is not JSON: {e}"),
    })
}

mod strict {
    //! The strict JSON reader of [`super::strict_json`].

    use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    pub(super) struct Strict<'a> {
        pub(super) path: &'a str,
        pub(super) depth: usize,
    }

    impl Strict<'_> {
        fn deeper<E: serde::de::Error>(&self) -> Result<usize, E> {
            if self.depth >= super::MAX_JSON_DEPTH {
                return Err(E::custom(format!(
                    "payload nests objects and arrays deeper than {} levels",
                    super::MAX_JSON_DEPTH
                )));
            }
            Ok(self.depth + 1)
        }
    }

    impl<'de> DeserializeSeed<'de> for Strict<'_> {
        type Value = Value;

        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Strict<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let depth = self.deeper()?;
            let mut items = Vec::new();
            loop {
                let path = format!("{}[{}]", self.path, items.len());
                match seq.next_element_seed(Strict { path: &path, depth })? {
                    Some(v) => items.push(v),
                    None => return Ok(Value::Array(items)),
                }
            }
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let depth = self.deeper()?;
            let mut obj = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if obj.contains_key(&key) {
                    // Bounded: a key is echoed at most 64 characters long.
                    let shown: String = path.chars().take(64).collect();
                    return Err(A::Error::custom(format!("field `{shown}`: given twice")));
                }
                let value = map.next_value_seed(Strict { path: &path, depth })?;
                obj.insert(key, value);
            }
            Ok(Value::Object(obj))
        }
    }
}

/// The `command_rejected` event of a rejection that has no id to answer to (`suppressed`:
/// such events left out since the last one, by the caller's throttle).
pub fn rejected_event(rej: &Rejection, suppressed: u64) -> crate::record::Event {
    crate::record::Event::new(
        crate::event::EventKind::CommandRejected,
        crate::record::Severity::Minor,
        crate::record::DAEMON_SOURCE,
        format!(
            "a command was rejected and has no id to answer to: {}",
            rej.reason
        ),
        serde_json::json!({
            "action": rej.action,
            "reason": rej.reason,
            "suppressed": suppressed,
        }),
    )
}

/// Parse and validate a command payload.
pub fn parse(payload: &[u8]) -> Result<Command, Rejection> {
    let doc: Value = strict_json(payload).map_err(|reason| {
        // Refused, but answered under its id when the id itself is readable and not the key
        // given twice (serde_json's own reading, bounded by its recursion limit).
        let lenient: Option<Value> = serde_json::from_slice(payload).ok();
        let field = |key: &str| {
            lenient
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(Value::as_str)
                .filter(|_| !reason.starts_with(&format!("field `{key}`: given twice")))
        };
        Rejection {
            id: field("id")
                .filter(|id| (1..=MAX_ID_BYTES).contains(&id.len()))
                .map(str::to_owned),
            action: crate::metrics::Metrics::action_label(field("action").unwrap_or("unknown"))
                .to_owned(),
            reason,
        }
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
        return Err(reject(match (raw_id, obj.get("id")) {
            (Some(_), _) => format!("field `id`: must be 1 to {MAX_ID_BYTES} bytes"),
            (None, None) => "field `id`: missing".into(),
            (None, Some(v)) => format!("field `id`: must be a string, found {}", json_type(v)),
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
    // Issue 13 item 1: the id window keeps an id until its expires_at; without one it could
    // never forget it, or would have to forget it too early.
    if expires_at.is_none() {
        return Err(reject(
            "field `expires_at`: missing (an RFC 3339 time after which the command must not run)"
                .into(),
        ));
    }
    Ok(Command {
        id: id_str,
        action,
        expires_at,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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

/// What to do with a command id ([`Ledger::begin`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    /// Never seen: execute it.
    New,
    /// Seen and still executing: do nothing now, its result will come.
    Running,
    /// Seen and finished: publish this earlier result again.
    Done(CommandResult),
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

    /// Issue 13 item 14: duplicate keys silently took the last value.
    #[test]
    fn duplicate_keys_are_rejected_naming_the_key() {
        let cases: &[(&[u8], &str, Option<&str>)] = &[
            (
                br#"{"id":"a","action":"point.write","args":{"point":"m/x","value":1,"value":900}}"#,
                "field `args.value`: given twice",
                Some("a"),
            ),
            (
                br#"{"id":"a","id":"b","action":"light.release","args":{"target":"all"}}"#,
                "field `id`: given twice",
                None,
            ),
            (
                br#"{"id":"a","action":"light.set","action":"light.release","args":{"target":"all"}}"#,
                "field `action`: given twice",
                Some("a"),
            ),
        ];
        // Answered under the id when the id is readable and not itself the key given twice.
        for (payload, reason, id) in cases {
            let r = parse(payload).unwrap_err();
            assert!(
                r.reason.starts_with(reason),
                "{} → {}",
                String::from_utf8_lossy(payload),
                r.reason
            );
            assert_eq!(r.id.as_deref(), *id);
        }
        // Nested in arrays too, and deep nesting is bounded.
        assert!(strict_json(br#"[{"a":1},{"b":{"c":1,"c":2}}]"#)
            .unwrap_err()
            .starts_with("field `[1].b.c`: given twice"));
        let deep = format!("{}1{}", "[".repeat(17), "]".repeat(17));
        let e = strict_json(deep.as_bytes()).unwrap_err();
        assert!(e.contains("deeper than 16 levels"), "{e}");
        let ok = format!("{}1{}", "[".repeat(16), "]".repeat(16));
        assert!(strict_json(ok.as_bytes()).is_ok());
        // What serde_json reads, the strict reader reads the same.
        let text = br#"{"id":"c1","n":[1,-2,3.5,1e300,18446744073709551615],"s":"\u00e9","z":null,"b":true}"#;
        assert_eq!(
            strict_json(text).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert!(strict_json(b"{} x")
            .unwrap_err()
            .starts_with("payload is not JSON"));
    }

    /// Issue 13 item 14: a missing or numeric id gave no answer at all.
    #[test]
    fn a_rejection_without_an_id_is_an_event() {
        let r =
            parse(br#"{"id":42,"action":"light.release","args":{"target":"all"}}"#).unwrap_err();
        assert_eq!(r.id, None);
        assert_eq!(r.reason, "field `id`: must be a string, found a number");
        let e = rejected_event(&r, 3);
        assert_eq!(e.kind, crate::event::EventKind::CommandRejected);
        assert_eq!(
            e.data,
            serde_json::json!({"action": "light.release", "reason": r.reason, "suppressed": 3})
        );
        let r = parse(br#"{"action":"light.release"}"#).unwrap_err();
        assert_eq!(r.reason, "field `id`: missing");
    }

    /// Issue 13 item 1: a command without expires_at was accepted (and its id could then never
    /// be forgotten safely).
    #[test]
    fn expires_at_is_required() {
        let r =
            parse(br#"{"id":"a","action":"light.release","args":{"target":"all"}}"#).unwrap_err();
        assert_eq!(r.id.as_deref(), Some("a"));
        assert!(
            r.reason.starts_with("field `expires_at`: missing"),
            "{}",
            r.reason
        );
        assert!(parse(br#"{"id":"a","action":"light.release","args":{"target":"all"},"expires_at":"2030-01-01T00:00:00Z"}"#).is_ok());
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
}
