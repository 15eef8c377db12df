//! Topic names and the retained status payloads of one cabinet.

use super::*;

/// Topic names of one cabinet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `P/C/status`.
    pub status: String,
    /// `P/C/cmd`.
    pub cmd: String,
    /// `P/all/cmd`.
    pub all_cmd: String,
    /// `P/C/config/desired`.
    pub config_desired: String,
    /// `P/C/config/reported`.
    pub config_reported: String,
    prefix_cabinet: String,
}

impl Topics {
    /// Topics for prefix `P` and cabinet `C`.
    pub fn new(prefix: &str, cabinet: &str) -> Self {
        let pc = format!("{prefix}/{cabinet}");
        Topics {
            status: format!("{pc}/status"),
            cmd: format!("{pc}/cmd"),
            all_cmd: format!("{prefix}/all/cmd"),
            config_desired: format!("{pc}/config/desired"),
            config_reported: format!("{pc}/config/reported"),
            prefix_cabinet: pc,
        }
    }

    /// `P/C/telemetry`, `P/C/events` or `P/C/cmd/result`.
    pub fn stream(&self, stream: Stream) -> String {
        format!("{}/{}", self.prefix_cabinet, stream.topic_suffix())
    }
}

/// The retained online status payload; `mode` is the rules core's (`connected` or
/// `autonomous`: just after a reconnect that ended a long outage it is still `autonomous`, and
/// the status is published again once the core switches back).
pub fn online_payload(p: &UplinkParams, mode: &str, ts: SystemTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "online": true,
        "cabinet": p.cabinet_id,
        "boot_id": p.boot_id,
        "version": p.version,
        "config_version": p.config_version,
        "mode": mode,
        "ts": format_ts(ts),
    }))
    .expect("json value serialises")
}

/// The MQTT will (SPEC v1.1, issue 13 item 10): fixed at CONNECT, so it cannot know when the
/// connection will be lost; `since` is the time of that connect (the cabinet has been
/// unreachable at most since then), never `ts`.
pub fn will_payload(p: &UplinkParams, connected_at: SystemTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "online": false,
        "cabinet": p.cabinet_id,
        "boot_id": p.boot_id,
        "since": format_ts(connected_at),
    }))
    .expect("json value serialises")
}

/// The retained offline status payload of a clean stop (`ts`: the time of the stop).
pub fn offline_payload(p: &UplinkParams, ts: SystemTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "online": false,
        "cabinet": p.cabinet_id,
        "boot_id": p.boot_id,
        "ts": format_ts(ts),
    }))
    .expect("json value serialises")
}
