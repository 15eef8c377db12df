//! What the daemon shows of itself: the `/status` document ([`Live`], served by `http`) and its
//! rendering for a person (`cabinetd status`, [`render_status`]).
//!
//! `/status` fields: `cabinet`, `version`, `config_version`, `boot_id`, `uptime_s`, `mode` (the
//! rules core's: `autonomous` only once the uplink has been down for `uplink.autonomous_after`),
//! `uplink` (connection, broker as `mqtt[s]://host:port`, last error and when it happened),
//! `outbox` (counts per stream, bytes, budget, oldest age, per-stream details), `brokers`,
//! `devices` (one per equipment entry: `name`, `protocol`, `up` true/false/null, `health`,
//! `points`, `last_poll`, `last_error`; cameras also `identity` {manufacturer, model, firmware,
//! serial} once read), `rules` (each `[[rule]]`: `name`, `state`
//! `cleared`/`pending`/`entered`), `scenes` (active scenes → who runs them), `control` (who is in
//! charge of each target: `programme`, `adaptive:NAME`, `rule:NAME`, `scene:NAME`, `central`,
//! `none`), `holds` (`what`, `by`, `until`), `clock_trusted`, `programme` (the lighting
//! programme's steps), `energy` (the night running and the last `energy_daily`, see
//! `lighting::accountant`), `last_reload` (the outcome of the last SIGHUP), `audit` (the last 100
//! commands and desired configurations and what became of them, oldest first: `crate::audit`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::equipment::{Board, Health};
use crate::metrics::Metrics;
use crate::outbox::{Outbox, OutboxStats};
use crate::record::format_ts;
use crate::uplink::UplinkHandle;

/// What the cabinet's automation shows: the rules task's view and the energy accountant's.
pub struct Automation {
    /// Mode, rules, scenes, who is in charge, holds, clock trust (`rules::run`).
    pub view: watch::Receiver<Arc<crate::rules::run::View>>,
    /// The night running and the last `energy_daily` (`lighting::accountant`).
    pub energy: watch::Receiver<Value>,
}

/// Everything `/status`, `/metrics` and `/readyz` look at.
pub struct Live {
    cabinet: String,
    boot_id: String,
    started: Instant,
    metrics: Metrics,
    outbox: Arc<Outbox>,
    uplink: UplinkHandle,
    board: Board,
    ready: AtomicBool,
    running: watch::Receiver<Arc<Config>>,
    last_reload: Mutex<Option<Value>>,
    automation: watch::Receiver<Arc<crate::rules::run::View>>,
    energy: watch::Receiver<Value>,
    audit: AuditLog,
}

impl Live {
    /// The live view of a daemon whose running configuration is `running`.
    pub fn new(
        boot_id: &str,
        metrics: Metrics,
        outbox: Arc<Outbox>,
        uplink: UplinkHandle,
        board: Board,
        running: watch::Receiver<Arc<Config>>,
        automation: Automation,
    ) -> Live {
        let cabinet = running.borrow().cabinet.id.clone();
        Live {
            cabinet,
            boot_id: boot_id.to_owned(),
            started: Instant::now(),
            metrics,
            outbox,
            uplink,
            board,
            ready: AtomicBool::new(false),
            running,
            last_reload: Mutex::new(None),
            automation: automation.view,
            energy: automation.energy,
            audit: AuditLog::default(),
        }
    }

    /// Shows `audit` (the last commands and desired configurations) in `/status`.
    pub fn with_audit(mut self, audit: AuditLog) -> Live {
        self.audit = audit;
        self
    }

    /// `/readyz` answers 200 while true.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Records the outcome of a reload from the files: the version running afterwards, or why
    /// the new configuration is not (fully) running.
    pub fn set_last_reload(&self, outcome: Result<&str, &[String]>, running_version: &str) {
        let (status, errors) = match outcome {
            Ok(_) => ("applied", Vec::new()),
            Err(e) => ("rejected", e.to_vec()),
        };
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(json!({
            "source": "files",
            "status": status,
            "running_version": running_version,
            "errors": errors,
            "ts": format_ts(SystemTime::now()),
        }));
    }
}

impl crate::http::Endpoint for Live {
    fn metrics(&self) -> String {
        self.metrics.render()
    }

    fn ready(&self) -> bool {
        // A full filesystem, a store that cannot write or cannot be opened: an outage of the
        // store, said here (the daemon keeps running).
        self.ready.load(Ordering::Relaxed) && self.outbox.ready()
    }

    fn status(&self) -> Value {
        let uplink = self.uplink.status();
        let devices: Vec<Value> = self
            .board
            .snapshot()
            .into_iter()
            .map(|(name, d)| {
                let mut v = json!({
                    "name": name,
                    "protocol": d.kind,
                    "up": d.up(),
                    "health": match d.health {
                        Health::Starting => "starting",
                        Health::Up => "up",
                        Health::Down { .. } => "down",
                        Health::NotSupervised { .. } => "not_supervised",
                    },
                    "points": d.points,
                    "last_poll": d.last_poll.map(format_ts),
                    "last_error": d.last_error,
                });
                if let Some(id) = &d.identity {
                    v["identity"] = json!(id);
                }
                v
            })
            .collect();
        let cfg = self.running.borrow().clone();
        let auto = self.automation.borrow().clone();
        json!({
            "cabinet": self.cabinet,
            "version": env!("CARGO_PKG_VERSION"),
            "config_version": cfg.version,
            "boot_id": self.boot_id,
            "uptime_s": self.started.elapsed().as_secs(),
            "mode": auto.mode,
            "uplink": serde_json::to_value(&uplink).unwrap_or_default(),
            "outbox": outbox_view(&self.outbox.stats()),
            "brokers": cfg.uplink.brokers.iter().map(|b| b.url()).collect::<Vec<_>>(),
            "devices": devices,
            "rules": auto.rules,
            "scenes": auto.scenes,
            "control": auto.control,
            "holds": auto.holds,
            "clock_trusted": auto.clock_trusted,
            "programme": programme(&cfg),
            "energy": self.energy.borrow().clone(),
            "last_reload": self.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            "audit": self.audit.snapshot(),
        })
    }
}

/// One line for systemd's `STATUS=`: `cabinet dijon-017: 3 Modbus device(s), outbox /var/…`.
pub fn summary(cfg: &Config) -> String {
    format!(
        "cabinet {}: {} Modbus device(s), outbox {}",
        cfg.cabinet.id,
        cfg.modbus.len(),
        cfg.storage.path.display()
    )
}

/// The lighting programme's steps, when there is a DALI bus to follow them
/// (`all at dusk+15m → 100 % (dusk)`, plus `on fri, sat` for a step limited to some nights).
pub fn programme(cfg: &Config) -> Vec<String> {
    if cfg.dali.is_empty() {
        return Vec::new();
    }
    cfg.lighting
        .steps
        .iter()
        .map(|step| {
            let nights = step
                .nights
                .as_ref()
                .map(|n| format!(" on {}", n.join(", ")))
                .unwrap_or_default();
            format!(
                "lighting: {} at {} → {} % ({}){nights}",
                step.target, step.at, step.level_percent, step.reason
            )
        })
        .collect()
}

/// The outbox part of `/status`: counts per stream first (what a person asks), details after.
fn outbox_view(stats: &OutboxStats) -> Value {
    let records: serde_json::Map<String, Value> = stats
        .streams
        .iter()
        .map(|s| (s.stream.as_str().to_owned(), s.records.into()))
        .collect();
    let oldest = stats
        .streams
        .iter()
        .filter_map(|s| s.oldest_age_seconds)
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))));
    json!({
        "records": records,
        "bytes": stats.disk_bytes,
        "budget_bytes": stats.budget_bytes,
        "limit_bytes": stats.limit_bytes,
        "fs_free_bytes": stats.fs_free_bytes,
        "storage_full": stats.storage_full,
        "available": stats.available,
        "held_records": stats.held_records,
        "error": stats.error,
        "oldest_record_age_s": oldest,
        "streams": stats.streams,
    })
}

/// Renders a `/status` document for a person (`cabinetd status`); `now` dates the uplink's
/// last error.
pub fn render_status(doc: &Value, now: SystemTime) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cabinet {}  version {}  config {}  up {}s  mode {}",
        s(&doc["cabinet"]),
        s(&doc["version"]),
        s(&doc["config_version"]),
        s(&doc["uptime_s"]),
        s(&doc["mode"])
    );
    let u = &doc["uplink"];
    // While never connected the uplink names no broker: show the first one it tries.
    let broker = if u["broker"].is_null() {
        s(&doc["brokers"][0])
    } else {
        s(&u["broker"])
    };
    if u["connected"].as_bool() == Some(true) {
        let _ = writeln!(out, "uplink   connected  broker {broker}");
    } else {
        let _ = write!(out, "uplink   DISCONNECTED  broker {broker}");
        if let Some(error) = u["last_error"].as_str() {
            let age = u["last_error_at"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| {
                    format!(
                        " ({} ago)",
                        humantime::format_duration(Duration::from_secs(d.as_secs()))
                    )
                })
                .unwrap_or_default();
            let _ = write!(out, "  last error {error}{age}");
        }
        out.push('\n');
    }
    let o = &doc["outbox"];
    let _ = writeln!(
        out,
        "outbox   telemetry {}  events {}  results {}  ({} of {} bytes, oldest {} s)",
        s(&o["records"]["telemetry"]),
        s(&o["records"]["events"]),
        s(&o["records"]["results"]),
        s(&o["bytes"]),
        s(&o["budget_bytes"]),
        s(&o["oldest_record_age_s"])
    );
    let _ = writeln!(out, "devices");
    for d in doc["devices"].as_array().into_iter().flatten() {
        let state = match (d["up"].as_bool(), d["health"].as_str()) {
            (Some(true), _) => "up",
            (Some(false), _) => "DOWN",
            (None, Some("not_supervised")) => "unsupervised",
            (None, _) => "starting",
        };
        let _ = writeln!(
            out,
            "  {:<20} {:<7} {:<8} points {:<4} last poll {}  {}",
            s(&d["name"]),
            s(&d["protocol"]),
            state,
            s(&d["points"]),
            s(&d["last_poll"]),
            d["last_error"].as_str().unwrap_or("")
        );
    }
    let rules = doc["rules"].as_array().cloned().unwrap_or_default();
    let entered = rules.iter().filter(|r| r["state"] == "entered").count();
    let _ = writeln!(
        out,
        "rules    {} configured, {entered} entered",
        rules.len()
    );
    for r in &rules {
        let _ = writeln!(out, "  {:<32} {}", s(&r["name"]), s(&r["state"]));
    }
    let scenes = doc["scenes"].as_object().cloned().unwrap_or_default();
    let _ = writeln!(out, "scenes   {} active", scenes.len());
    for (name, by) in &scenes {
        let by: Vec<String> = by.as_array().into_iter().flatten().map(&s).collect();
        let _ = writeln!(out, "  {name:<32} run by {}", by.join(", "));
    }
    let holds = doc["holds"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "holds    {}", holds.len());
    for h in &holds {
        let _ = writeln!(
            out,
            "  {:<32} by {:<24} until {}",
            s(&h["what"]),
            s(&h["by"]),
            s(&h["until"])
        );
    }
    // Who is in charge, where it is not the programme.
    if let Some(control) = doc["control"].as_object() {
        let others: Vec<String> = control
            .iter()
            .filter(|(_, c)| c.as_str().is_some_and(|c| c != "programme" && c != "none"))
            .map(|(t, c)| format!("{t}: {}", s(c)))
            .collect();
        let _ = writeln!(
            out,
            "control  {} target(s) not under the programme",
            others.len()
        );
        for o in others {
            let _ = writeln!(out, "  {o}");
        }
    }
    if doc["clock_trusted"] == false {
        let _ = writeln!(
            out,
            "clock    UNTRUSTED: the wall clock is implausible; levels are held"
        );
    }
    let e = &doc["energy"]["night"];
    if e.is_object() {
        let _ = writeln!(
            out,
            "energy   night of {}: {} kWh of {} kWh baseline (savings {} %, coverage {})",
            s(&e["date"]),
            s(&e["kwh"]),
            s(&e["baseline_kwh"]),
            s(&e["savings_percent"]),
            s(&e["coverage"])
        );
    }
    let programme = doc["programme"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "programme {} step(s)", programme.len());
    for p in programme {
        let _ = writeln!(out, "  {}", s(&p));
    }
    render_audit(&mut out, doc);
    out
}

/// The last remote orders, newest last, one line each (`--json` shows all of `/status.audit`).
fn render_audit(out: &mut String, doc: &Value) {
    let Some(entries) = doc["audit"].as_array() else {
        return;
    };
    let shown = entries.len().min(AUDIT_SHOWN);
    let _ = writeln!(
        out,
        "audit    last {shown} of {} commands and desired configs",
        entries.len()
    );
    for e in &entries[entries.len() - shown..] {
        let field = |k: &str| e[k].as_str().unwrap_or("-");
        let time = field("ts").get(11..).unwrap_or("-");
        let mut line = format!(
            "  {time} {:<14} {} {}",
            field("via"),
            field("id"),
            field("action")
        );
        if let Some(t) = e["target"].as_str() {
            line.push(' ');
            line.push_str(t);
        }
        let kid = e["kid"].as_str().unwrap_or("(unsigned)");
        let _ = write!(line, " by {kid}: {}", field("result"));
        if let Some(r) = e["reason"].as_str().filter(|r| !r.is_empty()) {
            let _ = write!(line, " — {r}");
        }
        let _ = writeln!(out, "{line}");
    }
}

/// Audit lines `cabinetd status` prints.
const AUDIT_SHOWN: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(uplink: Value) -> Value {
        json!({
            "cabinet": "dijon-017", "version": "0.1.0", "config_version": "abc", "uptime_s": 5,
            "mode": "autonomous",
            "uplink": uplink,
            "brokers": ["mqtt://127.0.0.1:1883"],
            "outbox": {"records": {"telemetry": 3, "events": 0, "results": 0}, "bytes": 100, "budget_bytes": 1024},
            "devices": [
                {"name": "meter-main", "protocol": "modbus", "up": false, "health": "down", "points": 4, "last_poll": null, "last_error": "timeout"},
                {"name": "cam-1", "protocol": "onvif", "up": null, "health": "not_supervised", "points": 0, "last_poll": null, "last_error": "not in this build"}
            ],
            "rules": [{"name": "ice-risk", "state": "entered"}, {"name": "uplink-lost", "state": "cleared"}],
            "scenes": {"emergency-route-a": ["central"]},
            "holds": [{"what": "scene:emergency-route-a", "by": "central", "until": "2026-12-21T18:10:00.000Z"}],
            "control": {"all": "programme", "group:2": "scene:emergency-route-a", "tc-12/plan": "none"},
            "clock_trusted": false,
            "energy": {"night": {"date": "2026-12-21", "kwh": 1.2, "baseline_kwh": 2.0, "savings_percent": 40.0, "coverage": 1.0}},
            "programme": ["lighting: all at dusk → 100 % (dusk)"]
        })
    }

    #[test]
    fn status_renders_for_a_person() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let text = render_status(
            &doc(
                json!({"connected": false, "broker": "mqtt://127.0.0.1:1883",
                "last_error": "I/O: Connection refused", "last_error_at": format_ts(now - Duration::from_secs(12))}),
            ),
            now,
        );
        assert!(text.contains("cabinet dijon-017"));
        assert!(
            text.contains("uplink   DISCONNECTED  broker mqtt://127.0.0.1:1883  last error I/O: Connection refused (12s ago)"),
            "{text}"
        );
        assert!(text.contains("meter-main"));
        assert!(text.contains("DOWN"));
        assert!(text.contains("unsupervised"));
        assert!(text.contains("mode autonomous"), "{text}");
        assert!(text.contains("rules    2 configured, 1 entered"), "{text}");
        assert!(
            text.contains("ice-risk") && text.contains("entered"),
            "{text}"
        );
        assert!(
            text.contains("emergency-route-a                run by central"),
            "{text}"
        );
        assert!(text.contains("until 2026-12-21T18:10:00.000Z"), "{text}");
        assert!(text.contains("group:2: scene:emergency-route-a"), "{text}");
        assert!(!text.contains("tc-12/plan"), "{text}");
        assert!(text.contains("UNTRUSTED"), "{text}");
        assert!(
            text.contains("savings 40.0 %") || text.contains("savings 40 %"),
            "{text}"
        );
    }

    #[test]
    fn the_last_audit_entries_print_one_line_each() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = doc(json!({"connected": true, "broker": "mqtt://127.0.0.1:1883"}));
        let entry = |i: usize| {
            json!({"ts": "2026-11-26T08:00:00.123Z", "via": "cmd", "id": format!("c{i}"),
                "action": "point.write", "target": "panel/setpoint", "kid": "ops-2026",
                "result": "succeeded", "reason": ""})
        };
        d["audit"] = Value::Array((0..15).map(entry).collect());
        d["audit"][14]["kid"] = Value::Null;
        d["audit"][14]["result"] = json!("auth_rejected");
        d["audit"][14]["reason"] = json!("unsigned: unsigned message");
        let text = render_status(&d, now);
        assert!(
            text.contains("audit    last 10 of 15 commands and desired configs"),
            "{text}"
        );
        assert!(!text.contains(" c4 "), "{text}");
        assert!(text.contains("  08:00:00.123Z cmd            c5 point.write panel/setpoint by ops-2026: succeeded\n"), "{text}");
        assert!(text.contains("c14 point.write panel/setpoint by (unsigned): auth_rejected — unsigned: unsigned message"), "{text}");
    }

    #[test]
    fn a_connected_uplink_shows_no_stale_error_and_one_broker_spelling() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let text = render_status(
            &doc(json!({"connected": true, "broker": "mqtt://127.0.0.1:1883",
                "last_error": "I/O: Connection refused", "last_error_at": format_ts(now)})),
            now,
        );
        assert!(
            text.contains("uplink   connected  broker mqtt://127.0.0.1:1883\n"),
            "{text}"
        );
        assert!(!text.contains("last error"), "{text}");
        // Never connected: the first configured broker, spelled the same way.
        let text = render_status(
            &doc(json!({"connected": false, "broker": null, "last_error": null})),
            now,
        );
        assert!(
            text.contains("DISCONNECTED  broker mqtt://127.0.0.1:1883\n"),
            "{text}"
        );
    }
}
