//! Records: what the cabinet reports to the central post (SPEC §3).
//!
//! A record belongs to exactly one [`Stream`]. The outbox gives it its per-stream `seq` when it is
//! appended; before that it is a [`RecordBody`]. The JSON encoding of a record *with* its seq is
//! exactly the object that appears in the `records` array of the MQTT envelope, so the uplink can
//! splice stored bytes into a message without decoding them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use serde_json::{json, Value};

use crate::event::{EquipmentKind, EventKind};

/// The three upward streams; each has its own `seq` counter and MQTT topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Point readings, `P/C/telemetry`.
    Telemetry,
    /// Events and alarms, `P/C/events`.
    Events,
    /// Command results, `P/C/cmd/result`.
    Results,
}

impl Stream {
    /// All streams, in drain priority order (results and events before telemetry).
    pub const BY_PRIORITY: [Stream; 3] = [Stream::Results, Stream::Events, Stream::Telemetry];

    /// The name used in payloads (`"stream":…`) and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Telemetry => "telemetry",
            Stream::Events => "events",
            Stream::Results => "results",
        }
    }

    /// Topic suffix under `P/C/`.
    pub fn topic_suffix(self) -> &'static str {
        match self {
            Stream::Telemetry => "telemetry",
            Stream::Events => "events",
            Stream::Results => "cmd/result",
        }
    }
}

impl fmt::Display for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    /// Read from the device just now.
    Good,
    /// The device did not answer or answered with an error; `value` is the last known one or null.
    Bad,
    /// Read, but the device itself flags it as doubtful.
    Uncertain,
}

/// Event severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational (energy report, device back up).
    Info,
    /// Needs attention some day.
    Minor,
    /// Needs attention today (a device down).
    Major,
    /// Needs attention now (store lost, safety).
    Critical,
}

/// Final status of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandStatus {
    /// Executed and confirmed.
    Succeeded,
    /// Tried and failed (device error, timeout).
    Failed,
    /// Not executed: unknown action, bad argument, not writable, out of range.
    Rejected,
    /// Not executed: arrived after `expires_at`.
    Expired,
}

impl CommandStatus {
    /// The name used in payloads and in the `status` label of `cabinetd_commands_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Succeeded => "succeeded",
            CommandStatus::Failed => "failed",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
        }
    }
}

/// A point reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    /// Acquisition time.
    #[serde(with = "ts_millis")]
    pub ts: SystemTime,
    /// Full point name `DEVICE/POINT`, built once per configuration and shared by every reading.
    pub point: Arc<str>,
    /// Scaled value: JSON bool or number, null when never read.
    pub value: serde_json::Value,
    /// Reading quality.
    pub quality: Quality,
}

/// An event or alarm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    #[serde(with = "ts_millis")]
    pub ts: SystemTime,
    /// Machine-readable kind (`device_down`, `lamp_failure`, `outbox_evicted`, …).
    pub kind: EventKind,
    /// Severity.
    pub severity: Severity,
    /// `DEVICE` or `DEVICE/POINT`, or `cabinetd` for the daemon itself.
    pub source: String,
    /// One human sentence.
    pub message: String,
    /// Kind-specific details (an object, `{}` when none).
    #[serde(default = "empty_object")]
    pub data: serde_json::Value,
}

/// The source of events the daemon raises about itself.
pub const DAEMON_SOURCE: &str = "cabinetd";

impl Event {
    /// An event of `kind` at `ts`.
    pub fn new(
        kind: EventKind,
        severity: Severity,
        source: impl Into<String>,
        message: impl Into<String>,
        data: Value,
    ) -> Event {
        Event {
            ts: SystemTime::now(),
            kind,
            severity,
            source: source.into(),
            message: message.into(),
            data,
        }
    }

    /// `device_down` (major): `source` of kind `protocol` stopped answering.
    pub fn device_down(source: &str, protocol: EquipmentKind, error: &str) -> Event {
        let what = protocol.describe(source);
        let message = match protocol {
            EquipmentKind::Dali => format!("{what} is down: {error}"),
            _ => format!("{what} stopped answering: {error}"),
        };
        Event::new(
            EventKind::DeviceDown,
            Severity::Major,
            source,
            message,
            json!({"protocol": protocol, "error": error}),
        )
    }

    /// `device_up` (info): it answers again.
    pub fn device_up(source: &str, protocol: EquipmentKind) -> Event {
        Event::new(
            EventKind::DeviceUp,
            Severity::Info,
            source,
            format!("{} answers again", protocol.describe(source)),
            json!({"protocol": protocol}),
        )
    }

    /// `store_recovered` (critical): the outbox store was lost and started fresh.
    pub fn store_recovered(moved_to: Option<&str>, reason: &str) -> Event {
        Event::new(
            EventKind::StoreRecovered,
            Severity::Critical,
            DAEMON_SOURCE,
            format!("the outbox store was lost ({reason}); a fresh one was started"),
            json!({"moved_to": moved_to, "reason": reason}),
        )
    }

    /// `energy_daily` (info), with the SPEC's data `{date, kwh, baseline_kwh, savings_percent,
    /// source}` as the accountant computed it.
    pub fn energy_daily(data: Value) -> Event {
        let message = format!(
            "night of {}: {} kWh against {} kWh at full power ({})",
            data["date"].as_str().unwrap_or(""),
            data["kwh"],
            data["baseline_kwh"],
            data["source"].as_str().unwrap_or("")
        );
        Event::new(
            EventKind::EnergyDaily,
            Severity::Info,
            DAEMON_SOURCE,
            message,
            data,
        )
    }

    /// `config_rolled_back` (major): configuration `version` did not start (`reason`); the
    /// previous one, `running`, runs again (`restored`), or nothing does.
    pub fn config_rolled_back(version: &str, running: &str, reason: &str, restored: bool) -> Event {
        let message = if restored {
            format!("configuration {version} did not start ({reason}); {running} runs again")
        } else {
            format!(
                "configuration {version} did not start ({reason}) and {running} could not be restored: no equipment runs"
            )
        };
        Event::new(
            EventKind::ConfigRolledBack,
            if restored {
                Severity::Major
            } else {
                Severity::Critical
            },
            DAEMON_SOURCE,
            message,
            json!({"version": version, "running": running, "reason": reason, "restored": restored}),
        )
    }

    /// `dali_config_error` (minor): gear `source` (`BUS/ADDR`) refused its configuration.
    pub fn dali_config_error(source: &str, bus: &str, address: u8, error: &str) -> Event {
        Event::new(
            EventKind::DaliConfigError,
            Severity::Minor,
            source,
            format!("{source} refused its configuration: {error}"),
            json!({"bus": bus, "address": address, "error": error}),
        )
    }
}

/// The final result of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// When the result was decided.
    #[serde(with = "ts_millis")]
    pub ts: SystemTime,
    /// The command's id, as received.
    pub id: String,
    /// Outcome.
    pub status: CommandStatus,
    /// Why, naming the field for rejections; empty on success.
    pub reason: String,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A record before the outbox numbered it.
#[derive(Debug, Clone, PartialEq)]
pub enum RecordBody {
    /// Goes to the telemetry stream.
    Telemetry(Telemetry),
    /// Goes to the events stream.
    Event(Event),
    /// Goes to the results stream.
    Result(CommandResult),
}

impl RecordBody {
    /// The stream this record belongs to.
    pub fn stream(&self) -> Stream {
        match self {
            RecordBody::Telemetry(_) => Stream::Telemetry,
            RecordBody::Event(_) => Stream::Events,
            RecordBody::Result(_) => Stream::Results,
        }
    }

    /// Acquisition / decision time.
    pub fn ts(&self) -> SystemTime {
        match self {
            RecordBody::Telemetry(t) => t.ts,
            RecordBody::Event(e) => e.ts,
            RecordBody::Result(r) => r.ts,
        }
    }

    /// The record's JSON object with `seq` first, exactly as it goes into an envelope.
    pub fn to_json_with_seq(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        self.write_json_with_seq(seq, &mut out);
        out
    }

    /// Append the record's JSON object with `seq` first to `out`: the outbox serialises each
    /// record once, straight into the block that is stored and later published.
    pub fn write_json_with_seq(&self, seq: u64, out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct WithSeq<'a, T: Serialize> {
            seq: u64,
            #[serde(flatten)]
            body: &'a T,
        }
        let encoded = match self {
            RecordBody::Telemetry(t) => serde_json::to_writer(&mut *out, &WithSeq { seq, body: t }),
            RecordBody::Event(e) => serde_json::to_writer(&mut *out, &WithSeq { seq, body: e }),
            RecordBody::Result(r) => serde_json::to_writer(&mut *out, &WithSeq { seq, body: r }),
        };
        // Serialising these plain structs into memory cannot fail (no maps with non-string keys).
        encoded.expect("record serialisation is infallible")
    }
}

/// Build an envelope `{"cabinet":C,"stream":S,"replay":B,"records":[…]}` from stored record JSON.
pub fn envelope<'a>(
    cabinet: &str,
    stream: Stream,
    replay: bool,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut joined = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(r);
    }
    envelope_joined(cabinet, stream, replay, &joined)
}

/// Build an envelope around records already joined by `,` (a slice of a stored block).
pub fn envelope_joined(cabinet: &str, stream: Stream, replay: bool, joined: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(joined.len() + 64 + cabinet.len());
    out.extend_from_slice(b"{\"cabinet\":");
    serde_json::to_writer(&mut out, cabinet).expect("string serialises");
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"replay\":");
    out.extend_from_slice(if replay { b"true" } else { b"false" });
    out.extend_from_slice(b",\"records\":[");
    out.extend_from_slice(joined);
    out.extend_from_slice(b"]}");
    out
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T08:00:00.123Z` (SPEC §3).
pub fn format_ts(ts: SystemTime) -> String {
    humantime::format_rfc3339_millis(ts).to_string()
}

/// Serde adapter for SPEC timestamps.
pub mod ts_millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialise as RFC 3339 UTC with milliseconds.
    pub fn serialize<S: Serializer>(ts: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*ts))
    }

    /// Parse any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn telemetry_json_puts_seq_first_and_formats_ts_with_millis() {
        let body = RecordBody::Telemetry(Telemetry {
            ts: at(1_795_680_000_123),
            point: "meter-main/active_power".into(),
            value: serde_json::json!(12.5),
            quality: Quality::Good,
        });
        let json = String::from_utf8(body.to_json_with_seq(7)).unwrap();
        assert_eq!(
            json,
            r#"{"seq":7,"ts":"2026-11-26T08:00:00.123Z","point":"meter-main/active_power","value":12.5,"quality":"good"}"#
        );
    }

    #[test]
    fn command_status_names_match_the_payload_encoding() {
        for s in [
            CommandStatus::Succeeded,
            CommandStatus::Failed,
            CommandStatus::Rejected,
            CommandStatus::Expired,
        ] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn envelope_splices_records_verbatim() {
        let a = br#"{"seq":1}"#.as_slice();
        let b = br#"{"seq":2}"#.as_slice();
        let env = envelope("dijon-017", Stream::Results, true, [a, b]);
        let v: serde_json::Value = serde_json::from_slice(&env).unwrap();
        assert_eq!(v["cabinet"], "dijon-017");
        assert_eq!(v["stream"], "results");
        assert_eq!(v["replay"], true);
        assert_eq!(v["records"][1]["seq"], 2);
    }

    #[test]
    fn device_events_say_what_and_why() {
        let e = Event::device_down("bus-a", EquipmentKind::Dali, "port gone");
        assert_eq!(e.data, json!({"protocol": "dali", "error": "port gone"}));
        assert_eq!(e.message, "DALI bus bus-a is down: port gone");
        let e = Event::device_up("meter-main", EquipmentKind::Modbus);
        assert_eq!(e.message, "meter-main answers again");
    }

    #[test]
    fn event_round_trips() {
        let e = Event {
            ts: at(1000),
            kind: EventKind::DeviceDown,
            severity: Severity::Major,
            source: "meter-main".into(),
            message: "no answer".into(),
            data: serde_json::json!({"error": "timeout"}),
        };
        let bytes = RecordBody::Event(e.clone()).to_json_with_seq(3);
        let back: Event = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, e);
    }
}
