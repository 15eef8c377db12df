//! Validation: the merged positioned tree → [`Config`], collecting every error.
//!
//! Invariants:
//! - the walk never stops at the first problem: each key is checked on its own, and a bad or
//!   missing value is replaced by a placeholder so the rest of the document is still checked;
//! - every error carries the position of the key (unknown key, misplaced key) or of the value
//!   (wrong type, out of range) it is about; a missing key points at its table's header, a missing
//!   table at the start of the first file;
//! - a `Config` is returned only when no error was found.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::tree::{Loc, Node, Table as Tbl, Val};
use super::units::{
    is_cabinet_id, is_device_name, is_point_name, parse_broker, parse_bytes, parse_duration,
    split_host_port, suggest,
};
use super::*;
use crate::light::{LEVEL_MAX, LEVEL_MIN};

mod camera;
mod dali;
mod lighting;
mod modbus;
mod resources;
/// `[[rule]]`, `[[scene]]`, `[[lighting.adaptive]]`, `uplink.autonomous_after`.
mod rules;
mod sections;
mod security;
mod simulator;

use camera::camera;
use dali::dali_bus;
use lighting::lighting;
use modbus::modbus_device;
use resources::Claims;
use sections::{cabinet, http, log, storage, uplink};
use simulator::simulator;

const TOP_KEYS: &[&str] = &[
    "cabinet",
    "storage",
    "uplink",
    "http",
    "log",
    "modbus",
    "dali",
    "camera",
    "simulator",
    "lighting",
    "security",
    "safety",
    "config",
    "rule",
    "scene",
];

/// Bounds of the durations, chosen to catch typos (`"1ms"` for `"1s"`) rather than to limit use.
const POLL_MIN: Duration = Duration::from_millis(10);
const DAY: Duration = Duration::from_secs(24 * 3600);
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
const TIMEOUT_MIN: Duration = Duration::from_millis(1);
const TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// A heartbeat may equal the fastest poll (every reading published, e.g. for benchmarks).
const HEARTBEAT_MIN: Duration = POLL_MIN;
const FLUSH_MIN: Duration = Duration::from_millis(1);
const FLUSH_MAX: Duration = Duration::from_secs(10);
/// rumqttc refuses keep-alives under a second; MQTT encodes it in 16 bits of seconds.
const KEEP_ALIVE_MIN: Duration = Duration::from_secs(1);
const KEEP_ALIVE_MAX: Duration = Duration::from_secs(65535);
/// DALI forward frames take ~24 ms; polling a whole bus faster than this is pointless.
const DALI_POLL_MIN: Duration = Duration::from_millis(100);
/// MQTT's largest packet is 268 435 455 bytes.
const MQTT_MAX_PACKET: u64 = 268_435_455;

/// Collected errors, each with its position.
#[derive(Default)]
pub(crate) struct Cx {
    pub errs: Vec<(Loc, String)>,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Cx {
    fn err(&mut self, loc: Loc, msg: impl Into<String>) {
        self.errs.push((loc, msg.into()));
    }

    fn wrong_type(&mut self, n: &Node, what: &str, full: &str) {
        self.err(
            n.loc,
            format!("expected {what} for {full}, found {}", n.val.type_name()),
        );
    }

    /// Reports every `password` key of the document: secrets live in files.
    fn no_passwords(&mut self, t: &Tbl, path: &str) {
        for e in &t.entries {
            let full = join(path, &e.key);
            if e.key == "password" {
                self.err(
                    e.key_loc,
                    format!("{full}: secrets must not be written in the config; put the password in a file readable only by cabinetd and set password_file = \"/path/to/file\""),
                );
            }
            self.no_passwords_in(&e.node, &full);
        }
    }

    fn no_passwords_in(&mut self, n: &Node, path: &str) {
        match &n.val {
            Val::Table(t) => self.no_passwords(t, path),
            Val::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.no_passwords_in(item, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }

    /// Reports keys of `t` that are not in `known`, suggesting a close known key.
    fn check_keys(&mut self, t: &Tbl, path: &str, known: &[&str]) {
        for e in &t.entries {
            if known.contains(&e.key.as_str()) || e.key == "password" {
                continue;
            }
            let mut msg = format!("unknown key {}", join(path, &e.key));
            if let Some(s) = suggest(&e.key, known) {
                msg.push_str(&format!(", did you mean \"{s}\"?"));
            }
            self.err(e.key_loc, msg);
        }
    }

    fn missing(&mut self, t: &Tbl, full: &str) {
        self.err(t.loc, format!("missing required key {full}"));
    }

    fn opt_str<'a>(&mut self, t: &'a Tbl, path: &str, key: &str) -> Option<(&'a str, Loc)> {
        let e = t.get(key)?;
        match &e.node.val {
            Val::Str(s) => Some((s.as_str(), e.node.loc)),
            _ => {
                self.wrong_type(&e.node, "a string", &join(path, key));
                None
            }
        }
    }

    fn req_str<'a>(&mut self, t: &'a Tbl, path: &str, key: &str) -> Option<(&'a str, Loc)> {
        if t.get(key).is_none() {
            self.missing(t, &join(path, key));
        }
        self.opt_str(t, path, key)
    }

    fn opt_bool(&mut self, t: &Tbl, path: &str, key: &str) -> Option<(bool, Loc)> {
        let e = t.get(key)?;
        match e.node.val {
            Val::Bool(b) => Some((b, e.node.loc)),
            _ => {
                self.wrong_type(&e.node, "a boolean", &join(path, key));
                None
            }
        }
    }

    fn check_int(&mut self, n: &Node, full: &str, lo: i64, hi: i64) -> Option<i64> {
        match n.val {
            Val::Int(i) if (lo..=hi).contains(&i) => Some(i),
            Val::Int(i) => {
                self.err(n.loc, format!("{full} must be in {lo}..={hi}, found {i}"));
                None
            }
            _ => {
                self.wrong_type(n, "an integer", full);
                None
            }
        }
    }

    fn opt_int(&mut self, t: &Tbl, path: &str, key: &str, lo: i64, hi: i64) -> Option<(i64, Loc)> {
        let e = t.get(key)?;
        self.check_int(&e.node, &join(path, key), lo, hi)
            .map(|i| (i, e.node.loc))
    }

    fn req_int(&mut self, t: &Tbl, path: &str, key: &str, lo: i64, hi: i64) -> Option<(i64, Loc)> {
        if t.get(key).is_none() {
            self.missing(t, &join(path, key));
        }
        self.opt_int(t, path, key, lo, hi)
    }

    /// A number (integer or float), finite, within `lo..=hi`.
    fn opt_num(&mut self, t: &Tbl, path: &str, key: &str, lo: f64, hi: f64) -> Option<(f64, Loc)> {
        let e = t.get(key)?;
        let full = join(path, key);
        let x = match e.node.val {
            Val::Int(i) => i as f64,
            Val::Float(x) => x,
            _ => {
                self.wrong_type(&e.node, "a number", &full);
                return None;
            }
        };
        if !x.is_finite() || x < lo || x > hi {
            let range = match (lo.is_finite(), hi.is_finite()) {
                (true, true) => format!("between {lo} and {hi}"),
                (true, false) => format!("at least {lo}"),
                (false, true) => format!("at most {hi}"),
                (false, false) => "finite".to_string(),
            };
            self.err(e.node.loc, format!("{full} must be {range}, found {x}"));
            return None;
        }
        Some((x, e.node.loc))
    }

    fn req_num(&mut self, t: &Tbl, path: &str, key: &str, lo: f64, hi: f64) -> Option<(f64, Loc)> {
        if t.get(key).is_none() {
            self.missing(t, &join(path, key));
        }
        self.opt_num(t, path, key, lo, hi)
    }

    fn opt_dur(
        &mut self,
        t: &Tbl,
        path: &str,
        key: &str,
        lo: Duration,
        hi: Duration,
    ) -> Option<Duration> {
        let e = t.get(key)?;
        let full = join(path, key);
        let Val::Str(s) = &e.node.val else {
            self.wrong_type(&e.node, "a duration string like \"1s\" or \"500ms\"", &full);
            return None;
        };
        match parse_duration(s) {
            Err(m) => {
                self.err(e.node.loc, format!("{full}: {m}"));
                None
            }
            Ok(d) if d < lo || d > hi => {
                self.err(
                    e.node.loc,
                    format!(
                        "{full} must be between {} and {}, found {s:?}",
                        fmt_dur(lo),
                        fmt_dur(hi)
                    ),
                );
                None
            }
            Ok(d) => Some(d),
        }
    }

    fn opt_bytes(&mut self, t: &Tbl, path: &str, key: &str, lo: u64, hi: u64) -> Option<u64> {
        let e = t.get(key)?;
        let full = join(path, key);
        let n = match &e.node.val {
            Val::Int(i) if *i >= 0 => *i as u64,
            Val::Int(i) => {
                self.err(
                    e.node.loc,
                    format!("{full} must not be negative, found {i}"),
                );
                return None;
            }
            Val::Str(s) => match parse_bytes(s) {
                Ok(n) => n,
                Err(m) => {
                    self.err(e.node.loc, format!("{full}: {m}"));
                    return None;
                }
            },
            _ => {
                self.wrong_type(
                    &e.node,
                    "a byte size (\"256MiB\" or an integer of bytes)",
                    &full,
                );
                return None;
            }
        };
        if n < lo || n > hi {
            self.err(
                e.node.loc,
                format!("{full} must be between {lo} and {hi} bytes, found {n}"),
            );
            return None;
        }
        Some(n)
    }

    /// One of `choices` (a string).
    fn opt_enum<T: Copy>(
        &mut self,
        t: &Tbl,
        path: &str,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<(T, Loc)> {
        let (s, loc) = self.opt_str(t, path, key)?;
        match choices.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some((*v, loc)),
            None => {
                let list: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(
                    loc,
                    format!(
                        "{} must be one of {}, found {s:?}",
                        join(path, key),
                        list.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn opt_path(&mut self, t: &Tbl, path: &str, key: &str) -> Option<PathBuf> {
        let (s, loc) = self.opt_str(t, path, key)?;
        if s.is_empty() {
            self.err(loc, format!("{} must not be empty", join(path, key)));
            return None;
        }
        Some(PathBuf::from(s))
    }

    fn opt_socket(&mut self, t: &Tbl, path: &str, key: &str) -> Option<(SocketAddr, Loc)> {
        let (s, loc) = self.opt_str(t, path, key)?;
        match s.parse::<SocketAddr>() {
            Ok(a) => Some((a, loc)),
            Err(_) => {
                self.err(
                    loc,
                    format!(
                        "{} must be an IP socket address like \"127.0.0.1:9108\", found {s:?}",
                        join(path, key)
                    ),
                );
                None
            }
        }
    }

    fn opt_table<'a>(&mut self, t: &'a Tbl, key: &str, full: &str) -> Option<&'a Tbl> {
        let e = t.get(key)?;
        match &e.node.val {
            Val::Table(t) => Some(t),
            _ => {
                self.wrong_type(&e.node, &format!("a table [{full}]"), full);
                None
            }
        }
    }

    fn req_table<'a>(&mut self, t: &'a Tbl, key: &str) -> Option<&'a Tbl> {
        if t.get(key).is_none() {
            self.err(t.loc, format!("missing required table [{key}]"));
        }
        self.opt_table(t, key, key)
    }

    /// An array of tables (`[[key]]`); wrong elements are reported and skipped.
    fn tables<'a>(&mut self, t: &'a Tbl, key: &str, full: &str) -> Vec<&'a Tbl> {
        let Some(e) = t.get(key) else {
            return Vec::new();
        };
        let what = format!("an array of tables [[{full}]]");
        match &e.node.val {
            Val::Array(items) => items
                .iter()
                .filter_map(|n| match &n.val {
                    Val::Table(t) => Some(t),
                    _ => {
                        self.wrong_type(n, &format!("a table in {full}"), full);
                        None
                    }
                })
                .collect(),
            _ => {
                self.wrong_type(&e.node, &what, full);
                Vec::new()
            }
        }
    }
}

/// Names that must be unique within a scope; a duplicate is reported where it appears second.
struct Unique {
    what: &'static str,
    seen: Vec<(String, Loc)>,
}

impl Unique {
    fn new(what: &'static str) -> Self {
        Unique {
            what,
            seen: Vec::new(),
        }
    }

    /// `name` as it is shown in the message (quoted for names, bare for numbers).
    fn add(&mut self, name: &str, loc: Loc) {
        self.seen.push((name.to_string(), loc));
    }

    /// Reports duplicates in position order, naming the first occurrence.
    fn report(mut self, cx: &mut Cx, names: &[String]) {
        self.seen.sort_by_key(|(_, loc)| *loc);
        let mut first: HashMap<&str, Loc> = HashMap::new();
        for (name, loc) in &self.seen {
            match first.get(name.as_str()) {
                Some(f) => cx.err(
                    *loc,
                    format!(
                        "duplicate {} {name} (first defined at {}:{})",
                        self.what, names[f.src], f.line
                    ),
                ),
                None => {
                    first.insert(name, *loc);
                }
            }
        }
    }
}

/// Validates the merged tree. `names` are the source names, for messages that cite another place.
pub(crate) fn validate(
    root: &Tbl,
    names: &[String],
    texts: &[&str],
    version: String,
) -> Result<Config, Cx> {
    let mut cx = Cx::default();
    cx.no_passwords(root, "");
    cx.check_keys(root, "", TOP_KEYS);
    let cabinet = cabinet(&mut cx, root);
    let storage = storage(&mut cx, root);
    let uplink = uplink(&mut cx, root, &cabinet.id);
    let http = http(&mut cx, root);
    let log = log(&mut cx, root);

    let mut devices = Unique::new("device name");
    let mut claims = Claims::default();
    let modbus: Vec<ModbusDevice> = cx
        .tables(root, "modbus", "modbus")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let d = modbus_device(&mut cx, t, i, &mut devices, names)?;
            claims.modbus(&d, t.loc);
            Some(d)
        })
        .collect();
    let dali: Vec<DaliBus> = cx
        .tables(root, "dali", "dali")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let b = dali_bus(&mut cx, t, i, &mut devices, names)?;
            claims.dali(&b, t.loc);
            Some(b)
        })
        .collect();
    let cameras: Vec<Camera> = cx
        .tables(root, "camera", "camera")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| camera(&mut cx, t, i, &mut devices))
        .collect();
    devices.report(&mut cx, names);
    let mut sims = Unique::new("simulator name");
    let simulators = cx
        .tables(root, "simulator", "simulator")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let sim = simulator(&mut cx, t, i, &mut sims)?;
            claims.simulator(&sim, t.loc);
            Some(sim)
        })
        .collect();
    sims.report(&mut cx, names);
    claims.http(root, http.listen);
    claims.report(&mut cx, names);
    let lighting = lighting(&mut cx, root, &modbus, &dali, names);
    let security = security::security(&mut cx, root, names);
    let safety = security::safety(&mut cx, root);
    let rollback = security::rollback(&mut cx, root);
    let automation = rules::automation(&mut cx, root, texts, names, &modbus, &dali, &cameras);

    if !cx.errs.is_empty() {
        return Err(cx);
    }
    Ok(Config {
        version,
        cabinet,
        storage,
        uplink,
        http,
        log,
        modbus,
        dali,
        cameras,
        simulators,
        lighting,
        security,
        safety,
        automation,
        rollback,
    })
}

/// Reads `name` of the i-th entry of a `[[kind]]` array; returns the path used in messages.
fn named(
    cx: &mut Cx,
    t: &Tbl,
    kind: &str,
    i: usize,
    unique: &mut Unique,
) -> (Option<String>, String) {
    let fallback = format!("{kind}[{i}]");
    let Some((name, loc)) = cx.req_str(t, &fallback, "name") else {
        return (None, fallback);
    };
    if !is_device_name(name) {
        cx.err(
            loc,
            format!(
                "{fallback}.name must match [a-z0-9_-]+ (at most 64 characters), found {name:?}"
            ),
        );
        return (None, fallback);
    }
    unique.add(&format!("{name:?}"), loc);
    (Some(name.to_string()), format!("{kind}[{name}]"))
}
