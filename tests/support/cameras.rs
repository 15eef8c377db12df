//! Helpers of the camera tests that drive the daemon binary: a `[[camera]]` table, commands
//! over MQTT with their results, event records, the daemon's memory.
//!
//! Include with `#[path = "support/cameras.rs"] mod cameras;` next to `mod support;`.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{wait_until, MqttProbe};

/// The command topic of the test cabinet.
pub const CMD: &str = "cabinets/v1/test-cab/cmd";

/// A `[[camera]]` table; `extra` adds keys (`poll = "200ms"`…).
pub fn camera_toml(
    name: &str,
    url: &str,
    username: &str,
    password_file: &Path,
    extra: &str,
) -> String {
    format!(
        "[[camera]]\nname = \"{name}\"\naddress = \"{url}\"\nusername = \"{username}\"\npassword_file = \"{}\"\n{extra}\n",
        password_file.display()
    )
}

/// Publishes a plain (unsigned) command, valid for the test's lifetime, and waits for its one
/// result.
pub fn command(probe: &MqttProbe, id: &str, action: &str, args: Value) -> Value {
    let cmd =
        json!({"id": id, "action": action, "args": args, "expires_at": "2099-01-01T00:00:00Z"});
    probe.publish(CMD, cmd.to_string().as_bytes(), false);
    wait_until(&format!("result of {id}"), Duration::from_secs(45), || {
        probe
            .records("/cmd/result")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["id"] == id)
    })
}

/// Sends a command, checks its result has `status`, returns the result's reason.
#[track_caller]
pub fn expect_result(
    probe: &MqttProbe,
    id: &str,
    action: &str,
    args: Value,
    status: &str,
) -> String {
    let r = command(probe, id, action, args);
    assert_eq!(r["status"], status, "{id}: {r}");
    r["reason"].as_str().unwrap_or_default().to_owned()
}

/// Event records of `kind` (from `source`, when given), in arrival order.
pub fn events(probe: &MqttProbe, kind: &str, source: Option<&str>) -> Vec<Value> {
    probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == kind && source.is_none_or(|s| r["source"] == s))
        .collect()
}

/// Waits until at least `n` events of `kind` arrived; returns them all.
pub fn wait_events(probe: &MqttProbe, kind: &str, n: usize, timeout: Duration) -> Vec<Value> {
    wait_until(&format!("{n} {kind} event(s)"), timeout, || {
        let e = events(probe, kind, None);
        (e.len() >= n).then_some(e)
    })
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`, `VmHWM`).
pub fn proc_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `/status`'s entry of device `name`.
pub fn device(status: &Value, name: &str) -> Value {
    status["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}
