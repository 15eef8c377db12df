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
];
const CABINET_KEYS: &[&str] = &["id", "latitude", "longitude", "timezone"];
const STORAGE_KEYS: &[&str] = &["path", "max_bytes", "flush_interval"];
const UPLINK_KEYS: &[&str] = &[
    "broker",
    "topic_prefix",
    "client_id",
    "username",
    "password_file",
    "ca_file",
    "keep_alive",
    "max_message_bytes",
    "inflight",
    "replay_rate",
    "compression",
];
const HTTP_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["filter", "format"];
const MODBUS_KEYS: &[&str] = &[
    "name",
    "transport",
    "address",
    "baud",
    "parity",
    "data_bits",
    "stop_bits",
    "unit_id",
    "poll",
    "timeout",
    "deadband",
    "heartbeat",
    "point",
];
const RTU_ONLY_KEYS: &[&str] = &["baud", "parity", "data_bits", "stop_bits"];
const POINT_KEYS: &[&str] = &[
    "name",
    "table",
    "address",
    "type",
    "word_order",
    "scale",
    "offset",
    "unit",
    "writable",
    "min",
    "max",
    "deadband",
    "heartbeat",
];
const DALI_KEYS: &[&str] = &[
    "name",
    "interface",
    "port",
    "luminaires",
    "poll",
    "energy_poll",
    "rated_power_w",
    "group",
];
const GROUP_KEYS: &[&str] = &[
    "number",
    "members",
    "power_on_level",
    "system_failure_level",
    "fade_time",
    "min_level",
    "max_level",
];
const CAMERA_KEYS: &[&str] = &["name", "address", "username", "password_file"];
const SIMULATOR_KEYS: &[&str] = &["name", "kind", "listen"];
const LIGHTING_KEYS: &[&str] = &["twilight", "energy_meter", "step"];
const STEP_KEYS: &[&str] = &["target", "at", "level_percent", "reason"];

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
pub(crate) fn validate(root: &Tbl, names: &[String], version: String) -> Result<Config, Cx> {
    let mut cx = Cx::default();
    cx.no_passwords(root, "");
    cx.check_keys(root, "", TOP_KEYS);
    let cabinet = cabinet(&mut cx, root);
    let storage = storage(&mut cx, root);
    let uplink = uplink(&mut cx, root, &cabinet.id);
    let http = http(&mut cx, root);
    let log = log(&mut cx, root);

    let mut devices = Unique::new("device name");
    let modbus: Vec<ModbusDevice> = cx
        .tables(root, "modbus", "modbus")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| modbus_device(&mut cx, t, i, &mut devices, names))
        .collect();
    let dali: Vec<DaliBus> = cx
        .tables(root, "dali", "dali")
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| dali_bus(&mut cx, t, i, &mut devices, names))
        .collect();
    let cameras = cx
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
        .filter_map(|(i, t)| simulator(&mut cx, t, i, &mut sims))
        .collect();
    sims.report(&mut cx, names);
    let lighting = lighting(&mut cx, root, &modbus, &dali, names);

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
    })
}

fn cabinet(cx: &mut Cx, root: &Tbl) -> CabinetConfig {
    let mut c = CabinetConfig {
        id: String::new(),
        latitude: 0.0,
        longitude: 0.0,
        timezone: "UTC".into(),
    };
    let Some(t) = cx.req_table(root, "cabinet") else {
        return c;
    };
    let p = "cabinet";
    cx.check_keys(t, p, CABINET_KEYS);
    if let Some((id, loc)) = cx.req_str(t, p, "id") {
        if is_cabinet_id(id) {
            c.id = id.to_string();
        } else {
            cx.err(loc, format!("cabinet.id must match [a-z0-9-]{{1,64}} (it is part of MQTT topics), found {id:?}"));
        }
    }
    if let Some((x, _)) = cx.req_num(t, p, "latitude", -90.0, 90.0) {
        c.latitude = x;
    }
    if let Some((x, _)) = cx.req_num(t, p, "longitude", -180.0, 180.0) {
        c.longitude = x;
    }
    if let Some((tz, loc)) = cx.opt_str(t, p, "timezone") {
        let shape = !tz.is_empty()
            && !tz.starts_with('/')
            && !tz.ends_with('/')
            && tz
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '/' | '_' | '-' | '+'));
        if !shape {
            cx.err(loc, format!("cabinet.timezone must be an IANA time zone name like \"Europe/Paris\", found {tz:?}"));
        } else if let Err(e) = crate::lighting::time_zone(tz) {
            // The lighting programme's clock times are local: an unknown zone would move them.
            cx.err(loc, format!("cabinet.timezone: {e}"));
        } else {
            c.timezone = tz.to_string();
        }
    }
    c
}

fn storage(cx: &mut Cx, root: &Tbl) -> StorageConfig {
    let mut s = StorageConfig {
        path: PathBuf::new(),
        max_bytes: DEFAULT_STORAGE_MAX_BYTES,
        flush_interval: DEFAULT_FLUSH_INTERVAL,
    };
    let Some(t) = cx.req_table(root, "storage") else {
        return s;
    };
    let p = "storage";
    cx.check_keys(t, p, STORAGE_KEYS);
    if t.get("path").is_none() {
        cx.missing(t, "storage.path");
    }
    if let Some(path) = cx.opt_path(t, p, "path") {
        s.path = path;
    }
    // Below 1 MiB sled's own files do not fit; 1 TiB is far beyond any cabinet's card.
    if let Some(n) = cx.opt_bytes(t, p, "max_bytes", 1 << 20, 1 << 40) {
        s.max_bytes = n;
    }
    if let Some(d) = cx.opt_dur(t, p, "flush_interval", FLUSH_MIN, FLUSH_MAX) {
        s.flush_interval = d;
    }
    s
}

fn uplink(cx: &mut Cx, root: &Tbl, cabinet_id: &str) -> UplinkConfig {
    let mut u = UplinkConfig {
        brokers: Vec::new(),
        topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
        client_id: format!("cabinetd-{cabinet_id}"),
        username: None,
        password_file: None,
        ca_file: None,
        keep_alive: DEFAULT_KEEP_ALIVE,
        max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        inflight: DEFAULT_INFLIGHT,
        replay_rate: None,
        compression: Compression::None,
    };
    let Some(t) = cx.req_table(root, "uplink") else {
        return u;
    };
    let p = "uplink";
    cx.check_keys(t, p, UPLINK_KEYS);
    let mut tls_at = None;
    match t.get("broker") {
        None => cx.missing(t, "uplink.broker"),
        Some(e) => {
            let items: Vec<&Node> = match &e.node.val {
                Val::Str(_) => vec![&e.node],
                Val::Array(a) if a.is_empty() => {
                    cx.err(e.node.loc, "uplink.broker must name at least one broker");
                    vec![]
                }
                Val::Array(a) => a.iter().collect(),
                _ => {
                    cx.wrong_type(
                        &e.node,
                        "a broker URL string or a list of them",
                        "uplink.broker",
                    );
                    vec![]
                }
            };
            for n in items {
                match &n.val {
                    Val::Str(s) => match parse_broker(s) {
                        Ok(b) => {
                            if b.tls && tls_at.is_none() {
                                tls_at = Some(n.loc);
                            }
                            u.brokers.push(b);
                        }
                        Err(m) => cx.err(n.loc, format!("uplink.broker: {m}")),
                    },
                    _ => cx.wrong_type(n, "a broker URL string", "uplink.broker"),
                }
            }
        }
    }
    if let Some((s, loc)) = cx.opt_str(t, p, "topic_prefix") {
        let ok = !s.is_empty()
            && !s.starts_with('/')
            && !s.ends_with('/')
            && !s.contains("//")
            && !s.contains(['+', '#', '\0']);
        if ok {
            u.topic_prefix = s.to_string();
        } else {
            cx.err(loc, format!("uplink.topic_prefix must be topic levels separated by '/', without wildcards or empty levels, found {s:?}"));
        }
    }
    if let Some((s, loc)) = cx.opt_str(t, p, "client_id") {
        if (1..=128).contains(&s.len()) && !s.contains(char::is_control) {
            u.client_id = s.to_string();
        } else {
            cx.err(
                loc,
                "uplink.client_id must be 1 to 128 printable characters",
            );
        }
    }
    u.username = cx.opt_str(t, p, "username").map(|(s, _)| s.to_string());
    u.password_file = cx.opt_path(t, p, "password_file");
    u.ca_file = cx.opt_path(t, p, "ca_file");
    if let (Some(loc), None) = (tls_at, &u.ca_file) {
        if t.get("ca_file").is_none() {
            cx.err(loc, "an mqtts:// broker needs uplink.ca_file (the PEM CA that signed the broker's certificate)");
        }
    }
    if let Some(d) = cx.opt_dur(t, p, "keep_alive", KEEP_ALIVE_MIN, KEEP_ALIVE_MAX) {
        u.keep_alive = d;
    }
    if let Some(n) = cx.opt_bytes(t, p, "max_message_bytes", 1024, MQTT_MAX_PACKET) {
        u.max_message_bytes = n as usize;
    }
    if let Some((n, _)) = cx.opt_int(t, p, "inflight", 1, u16::MAX.into()) {
        u.inflight = n as u16;
    }
    if let Some((n, _)) = cx.opt_int(t, p, "replay_rate", 1, 1_000_000) {
        u.replay_rate = Some(n as u32);
    }
    if let Some((c, _)) = cx.opt_enum(
        t,
        p,
        "compression",
        &[("none", Compression::None), ("zstd", Compression::Zstd)],
    ) {
        u.compression = c;
    }
    u
}

fn http(cx: &mut Cx, root: &Tbl) -> HttpConfig {
    let default = || HttpConfig {
        listen: DEFAULT_HTTP_LISTEN.parse().expect("valid default"),
    };
    let Some(t) = cx.opt_table(root, "http", "http") else {
        return default();
    };
    cx.check_keys(t, "http", HTTP_KEYS);
    match cx.opt_socket(t, "http", "listen") {
        Some((listen, _)) => HttpConfig { listen },
        None => default(),
    }
}

fn log(cx: &mut Cx, root: &Tbl) -> LogConfig {
    let mut l = LogConfig {
        filter: "info".into(),
        format: LogFormat::Plain,
    };
    let Some(t) = cx.opt_table(root, "log", "log") else {
        return l;
    };
    cx.check_keys(t, "log", LOG_KEYS);
    if let Some((f, loc)) = cx.opt_str(t, "log", "filter") {
        match tracing_subscriber::EnvFilter::try_new(f) {
            Ok(_) => l.filter = f.to_string(),
            Err(e) => cx.err(loc, format!("log.filter {f:?} is not a valid filter: {e}")),
        }
    }
    if let Some((f, _)) = cx.opt_enum(
        t,
        "log",
        "format",
        &[("plain", LogFormat::Plain), ("json", LogFormat::Json)],
    ) {
        l.format = f;
    }
    l
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

fn modbus_device(
    cx: &mut Cx,
    t: &Tbl,
    i: usize,
    devices: &mut Unique,
    names: &[String],
) -> Option<ModbusDevice> {
    let (name, p) = named(cx, t, "modbus", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, MODBUS_KEYS);
    // `None`: the transport itself is invalid (already reported); tcp is the default.
    let rtu = match cx.opt_enum(t, p, "transport", &[("tcp", false), ("rtu", true)]) {
        Some((r, _)) => Some(r),
        None if t.get("transport").is_none() => Some(false),
        None => None,
    };
    if rtu == Some(false) {
        for key in RTU_ONLY_KEYS {
            if let Some(e) = t.get(key) {
                cx.err(
                    e.key_loc,
                    format!("{} applies only to transport = \"rtu\"", join(p, key)),
                );
            }
        }
    }
    let address = cx.req_str(t, p, "address");
    let transport = match (rtu, address) {
        (Some(false), Some((a, loc))) => match split_host_port(a) {
            Ok((host, port)) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                Some(Transport::Tcp {
                    address: format!("{host}:{}", port.unwrap_or(502)),
                })
            }
            Err(m) => {
                cx.err(
                    loc,
                    format!("{p}.address must be host[:port] for transport \"tcp\": {m}"),
                );
                None
            }
        },
        (Some(true), Some((a, loc))) => {
            if a.is_empty() {
                cx.err(
                    loc,
                    format!("{p}.address must be the serial device path for transport \"rtu\""),
                );
            }
            let baud = cx
                .opt_int(t, p, "baud", 50, 4_000_000)
                .map_or(19200, |(b, _)| b as u32);
            let parity = cx
                .opt_enum(
                    t,
                    p,
                    "parity",
                    &[
                        ("none", Parity::None),
                        ("even", Parity::Even),
                        ("odd", Parity::Odd),
                    ],
                )
                .map_or(Parity::Even, |(x, _)| x);
            let data_bits = rtu_bits(cx, t, p, "data_bits", &[7, 8]).unwrap_or(8);
            let stop_bits = rtu_bits(cx, t, p, "stop_bits", &[1, 2]).unwrap_or(1);
            Some(Transport::Rtu(SerialSettings {
                path: PathBuf::from(a),
                baud,
                parity,
                data_bits,
                stop_bits,
            }))
        }
        _ => None,
    };
    let unit_id = cx
        .opt_int(t, p, "unit_id", 0, 247)
        .map_or(1, |(u, _)| u as u8);
    let poll = cx
        .opt_dur(t, p, "poll", POLL_MIN, DAY)
        .unwrap_or(DEFAULT_MODBUS_POLL);
    let timeout = cx
        .opt_dur(t, p, "timeout", TIMEOUT_MIN, TIMEOUT_MAX)
        .unwrap_or(DEFAULT_MODBUS_TIMEOUT);
    let default_policy = ReportPolicy {
        deadband: cx
            .opt_num(t, p, "deadband", 0.0, f64::INFINITY)
            .map(|(x, _)| x),
        heartbeat: cx
            .opt_dur(t, p, "heartbeat", HEARTBEAT_MIN, WEEK)
            .unwrap_or(DEFAULT_HEARTBEAT),
    };

    let point_tables = cx.tables(t, "point", &format!("{p}.point"));
    if point_tables.is_empty() && t.get("point").is_none() {
        cx.err(
            t.loc,
            format!("{p} has no points; add at least one [[modbus.point]]"),
        );
    }
    let mut unique = Unique::new("point name");
    let mut points = Vec::new();
    let mut report = Vec::new();
    for (j, pt) in point_tables.into_iter().enumerate() {
        if let Some((spec, policy)) = point(cx, pt, p, j, &mut unique, default_policy) {
            points.push(spec);
            report.push(policy);
        }
    }
    unique.report(cx, names);
    Some(ModbusDevice {
        spec: DeviceSpec {
            name: name?,
            transport: transport?,
            unit_id,
            poll,
            timeout,
            points,
        },
        report,
    })
}

fn rtu_bits(cx: &mut Cx, t: &Tbl, p: &str, key: &str, allowed: &[i64]) -> Option<u8> {
    let e = t.get(key)?;
    let full = join(p, key);
    match e.node.val {
        Val::Int(n) if allowed.contains(&n) => Some(n as u8),
        Val::Int(n) => {
            let list: Vec<String> = allowed.iter().map(i64::to_string).collect();
            cx.err(
                e.node.loc,
                format!("{full} must be {}, found {n}", list.join(" or ")),
            );
            None
        }
        _ => {
            cx.wrong_type(&e.node, "an integer", &full);
            None
        }
    }
}

fn point(
    cx: &mut Cx,
    t: &Tbl,
    dev: &str,
    j: usize,
    unique: &mut Unique,
    default: ReportPolicy,
) -> Option<(PointSpec, ReportPolicy)> {
    let fallback = format!("{dev}.point[{j}]");
    let mut name = None;
    let mut p = fallback.clone();
    if let Some((n, loc)) = cx.req_str(t, &fallback, "name") {
        if is_point_name(n) {
            unique.add(&format!("{n:?}"), loc);
            name = Some(n.to_string());
            p = format!("{dev}.point[{n}]");
        } else {
            cx.err(
                loc,
                format!(
                    "{fallback}.name must match [a-z0-9_]+ (at most 64 characters), found {n:?}"
                ),
            );
        }
    }
    let p = p.as_str();
    cx.check_keys(t, p, POINT_KEYS);
    if t.get("table").is_none() {
        cx.missing(t, &join(p, "table"));
    }
    let table = cx.opt_enum(
        t,
        p,
        "table",
        &[
            ("coil", Table::Coil),
            ("discrete", Table::Discrete),
            ("input", Table::Input),
            ("holding", Table::Holding),
        ],
    );
    let bits = table.map(|(tb, _)| matches!(tb, Table::Coil | Table::Discrete));
    let types = [
        ("bool", DataType::Bool),
        ("u16", DataType::U16),
        ("i16", DataType::I16),
        ("u32", DataType::U32),
        ("i32", DataType::I32),
        ("u64", DataType::U64),
        ("i64", DataType::I64),
        ("f32", DataType::F32),
        ("f64", DataType::F64),
    ];
    let tn = table.map_or("?", |(t, _)| table_name(t));
    let data_type = match cx.opt_enum(t, p, "type", &types) {
        Some((ty, loc)) => {
            match (bits, ty == DataType::Bool) {
                (Some(true), false) => {
                    cx.err(
                        loc,
                        format!(
                            "{p}.type must be \"bool\": table \"{}\" holds single bits",
                            tn
                        ),
                    );
                    None
                }
                (Some(false), true) => {
                    cx.err(loc, format!("{p}.type \"bool\" is only for table \"coil\" or \"discrete\", not \"{}\"", tn));
                    None
                }
                _ => Some(ty),
            }
        }
        None if t.get("type").is_some() => None,
        None => bits.map(|b| if b { DataType::Bool } else { DataType::U16 }),
    };
    let address = cx.req_int(t, p, "address", 0, 65535);
    if let (Some((a, loc)), Some(ty)) = (address, data_type) {
        if a + i64::from(ty.width()) - 1 > 65535 {
            cx.err(
                loc,
                format!(
                    "{p}.address {a}: the value's {} registers run past 65535",
                    ty.width()
                ),
            );
        }
    }
    let word_order = cx
        .opt_enum(
            t,
            p,
            "word_order",
            &[("big", WordOrder::Big), ("little", WordOrder::Little)],
        )
        .map_or(WordOrder::Big, |(w, _)| w);
    let scale = match cx.opt_num(t, p, "scale", f64::NEG_INFINITY, f64::INFINITY) {
        // A zero scale would make every reading 0 + offset: certainly a typo.
        Some((s, loc)) => {
            if s == 0.0 {
                cx.err(loc, format!("{p}.scale must not be 0"));
            }
            s
        }
        None => 1.0,
    };
    let offset = cx
        .opt_num(t, p, "offset", f64::NEG_INFINITY, f64::INFINITY)
        .map_or(0.0, |(o, _)| o);
    let unit = cx.opt_str(t, p, "unit").map(|(u, _)| u.to_string());
    let writable = match cx.opt_bool(t, p, "writable") {
        Some((true, loc)) => {
            if let Some((tb @ (Table::Input | Table::Discrete), _)) = table {
                cx.err(loc, format!("{p}.writable: table \"{}\" is read-only; only coil and holding points can be writable", table_name(tb)));
            }
            true
        }
        Some((false, _)) | None => false,
    };
    let min = cx.opt_num(t, p, "min", f64::NEG_INFINITY, f64::INFINITY);
    let max = cx.opt_num(t, p, "max", f64::NEG_INFINITY, f64::INFINITY);
    if let (Some((lo, _)), Some((hi, loc))) = (min, max) {
        if lo > hi {
            cx.err(loc, format!("{p}: min ({lo}) must not exceed max ({hi})"));
        }
    }
    let policy = ReportPolicy {
        deadband: cx
            .opt_num(t, p, "deadband", 0.0, f64::INFINITY)
            .map(|(x, _)| x)
            .or(default.deadband),
        heartbeat: cx
            .opt_dur(t, p, "heartbeat", HEARTBEAT_MIN, WEEK)
            .unwrap_or(default.heartbeat),
    };
    Some((
        PointSpec {
            name: name?,
            table: table?.0,
            address: address?.0 as u16,
            data_type: data_type?,
            word_order,
            scale,
            offset,
            unit,
            writable,
            min: min.map(|(x, _)| x),
            max: max.map(|(x, _)| x),
        },
        policy,
    ))
}

fn table_name(t: Table) -> &'static str {
    match t {
        Table::Coil => "coil",
        Table::Discrete => "discrete",
        Table::Input => "input",
        Table::Holding => "holding",
    }
}

fn dali_bus(
    cx: &mut Cx,
    t: &Tbl,
    i: usize,
    devices: &mut Unique,
    names: &[String],
) -> Option<DaliBus> {
    let (name, p) = named(cx, t, "dali", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, DALI_KEYS);
    if t.get("interface").is_none() {
        cx.missing(t, &join(p, "interface"));
    }
    let kind = cx.opt_enum(t, p, "interface", &[("atx-hat", false), ("sim", true)]);
    let misplaced = |cx: &mut Cx, key: &str, iface: &str| {
        if let Some(e) = t.get(key) {
            cx.err(
                e.key_loc,
                format!("{} applies only to interface = \"{iface}\"", join(p, key)),
            );
        }
    };
    let mut sim_size = None;
    let interface = match kind.map(|(k, _)| k) {
        Some(false) => {
            misplaced(cx, "luminaires", "sim");
            if t.get("port").is_none() {
                cx.err(
                    t.loc,
                    format!(
                        "missing required key {p}.port (the serial device of the ATX DALI HAT)"
                    ),
                );
            }
            cx.opt_path(t, p, "port")
                .map(|port| DaliInterface::AtxHat { port })
        }
        Some(true) => {
            misplaced(cx, "port", "atx-hat");
            if t.get("luminaires").is_none() {
                cx.missing(t, &join(p, "luminaires"));
            }
            cx.opt_int(t, p, "luminaires", 1, 64).map(|(n, _)| {
                sim_size = Some(n);
                DaliInterface::Sim {
                    luminaires: n as u8,
                }
            })
        }
        None => None,
    };
    let poll = cx
        .opt_dur(t, p, "poll", DALI_POLL_MIN, DAY)
        .unwrap_or(DEFAULT_DALI_POLL);
    let energy_poll = cx
        .opt_dur(t, p, "energy_poll", Duration::from_secs(1), WEEK)
        .unwrap_or(DEFAULT_DALI_ENERGY_POLL);
    let rated_power_w = cx
        .opt_num(t, p, "rated_power_w", 0.0, 100_000.0)
        .and_then(|(w, loc)| {
            if w == 0.0 {
                cx.err(loc, format!("{p}.rated_power_w must be more than 0"));
                None
            } else {
                Some(w)
            }
        });
    let mut numbers = Unique::new("group number");
    let mut groups = Vec::new();
    for (j, g) in cx
        .tables(t, "group", &format!("{p}.group"))
        .into_iter()
        .enumerate()
    {
        if let Some(g) = dali_group(cx, g, p, j, sim_size, &mut numbers) {
            groups.push(g);
        }
    }
    numbers.report(cx, names);
    Some(DaliBus {
        name: name?,
        interface: interface?,
        poll,
        energy_poll,
        groups,
        rated_power_w,
    })
}

fn dali_group(
    cx: &mut Cx,
    t: &Tbl,
    bus: &str,
    j: usize,
    sim_size: Option<i64>,
    numbers: &mut Unique,
) -> Option<DaliGroup> {
    let fallback = format!("{bus}.group[{j}]");
    let number = cx.req_int(t, &fallback, "number", 0, 15);
    let p = match number {
        Some((n, loc)) => {
            numbers.add(&n.to_string(), loc);
            format!("{bus}.group[{n}]")
        }
        None => fallback,
    };
    let p = p.as_str();
    cx.check_keys(t, p, GROUP_KEYS);
    let mut members: Vec<u8> = Vec::new();
    if let Some(e) = t.get("members") {
        let full = join(p, "members");
        match &e.node.val {
            Val::Array(items) => {
                for n in items {
                    if let Some(a) = cx.check_int(n, &full, 0, 63) {
                        if members.contains(&(a as u8)) {
                            cx.err(n.loc, format!("{full} lists short address {a} twice"));
                        } else if sim_size.is_some_and(|size| a >= size) {
                            cx.err(n.loc, format!("{full}: short address {a} is not on this simulated bus (luminaires 0..{})", sim_size.unwrap_or(0)));
                        } else {
                            members.push(a as u8);
                        }
                    }
                }
            }
            _ => cx.wrong_type(&e.node, "an array of short addresses", &full),
        }
    }
    let mut level = |key: &str| cx.opt_num(t, p, key, 0.0, 100.0);
    let power_on_level = level("power_on_level");
    let system_failure_level = level("system_failure_level");
    let min_level = level("min_level");
    let max_level = level("max_level");
    if let (Some((lo, _)), Some((hi, loc))) = (min_level, max_level) {
        if lo > hi {
            cx.err(
                loc,
                format!("{p}: min_level ({lo}) must not exceed max_level ({hi})"),
            );
        }
    }
    let fade_time = cx.opt_int(t, p, "fade_time", 0, 15).map(|(f, _)| f as u8);
    Some(DaliGroup {
        number: number?.0 as u8,
        members,
        power_on_level: power_on_level.map(|(x, _)| x),
        system_failure_level: system_failure_level.map(|(x, _)| x),
        fade_time,
        min_level: min_level.map(|(x, _)| x),
        max_level: max_level.map(|(x, _)| x),
    })
}

fn camera(cx: &mut Cx, t: &Tbl, i: usize, devices: &mut Unique) -> Option<Camera> {
    let (name, p) = named(cx, t, "camera", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, CAMERA_KEYS);
    let address = cx.req_str(t, p, "address").and_then(|(a, loc)| {
        let rest = a.strip_prefix("http://").or_else(|| a.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Some(a.to_string()),
            _ => {
                cx.err(loc, format!("{p}.address must be the ONVIF device service URL (http:// or https://), found {a:?}"));
                None
            }
        }
    });
    let username = cx.req_str(t, p, "username").map(|(u, _)| u.to_string());
    if t.get("password_file").is_none() {
        cx.err(t.loc, format!("missing required key {p}.password_file (the camera's password, in a file readable only by cabinetd)"));
    }
    let password_file = cx.opt_path(t, p, "password_file");
    Some(Camera {
        name: name?,
        address: address?,
        username: username?,
        password_file: password_file?,
    })
}

fn simulator(cx: &mut Cx, t: &Tbl, i: usize, sims: &mut Unique) -> Option<Simulator> {
    let (name, p) = named(cx, t, "simulator", i, sims);
    let p = p.as_str();
    cx.check_keys(t, p, SIMULATOR_KEYS);
    if t.get("kind").is_none() {
        cx.missing(t, &join(p, "kind"));
    }
    let kind = cx.opt_enum(
        t,
        p,
        "kind",
        &[("energy-meter", SimulatorKind::EnergyMeter)],
    );
    if t.get("listen").is_none() {
        cx.missing(t, &join(p, "listen"));
    }
    let listen = cx.opt_socket(t, p, "listen").and_then(|(a, loc)| {
        if a.ip().is_loopback() {
            Some(a)
        } else {
            cx.err(loc, format!("{p}.listen must be a loopback address (simulators are for tests and demos), found {a}"));
            None
        }
    });
    Some(Simulator {
        name: name?,
        kind: kind?.0,
        listen: listen?,
    })
}

/// `[lighting]`: the programme. `modbus` and `dali` are the devices already validated, for the
/// references a step or the meter makes (a bus typo would silently leave luminaires unlit).
fn lighting(
    cx: &mut Cx,
    root: &Tbl,
    modbus: &[ModbusDevice],
    dali: &[DaliBus],
    names: &[String],
) -> LightingConfig {
    let mut l = LightingConfig::default();
    let Some(t) = cx.opt_table(root, "lighting", "lighting") else {
        return l;
    };
    let p = "lighting";
    cx.check_keys(t, p, LIGHTING_KEYS);
    if let Some((tw, _)) = cx.opt_enum(
        t,
        p,
        "twilight",
        &[("official", Twilight::Official), ("civil", Twilight::Civil)],
    ) {
        l.twilight = tw;
    }
    if let Some((m, loc)) = cx.opt_str(t, p, "energy_meter") {
        let known = m.split_once('/').is_some_and(|(dev, point)| {
            modbus
                .iter()
                .any(|d| d.spec.name == dev && d.spec.points.iter().any(|pt| pt.name == point))
        });
        if known {
            l.energy_meter = Some(m.to_string());
        } else {
            cx.err(loc, format!("lighting.energy_meter must name a configured Modbus point \"DEVICE/POINT\" (a Wh counter), found {m:?}"));
        }
    }
    // Two steps for the same target at the same `at` would leave the level to chance.
    let mut seen: Vec<(LightTarget, StepTime, Loc, usize)> = Vec::new();
    for (j, st) in cx
        .tables(t, "step", "lighting.step")
        .into_iter()
        .enumerate()
    {
        let sp = format!("lighting.step[{j}]");
        let sp = sp.as_str();
        cx.check_keys(st, sp, STEP_KEYS);
        let target = cx.req_str(st, sp, "target").and_then(|(s, loc)| {
            match crate::lighting::parse_target(s) {
                Ok(LightTarget::Gear { bus, .. }) if !dali.iter().any(|b| b.name == bus) => {
                    cx.err(
                        loc,
                        format!("{sp}.target {s:?}: no [[dali]] bus is named {bus:?}"),
                    );
                    None
                }
                Ok(tg) => Some(tg),
                Err(m) => {
                    cx.err(loc, format!("{sp}.target: {m}"));
                    None
                }
            }
        });
        let at =
            cx.req_str(st, sp, "at").and_then(|(s, loc)| {
                match crate::lighting::parse_step_time(s) {
                    Ok(at) => Some((at, s.trim().to_string(), loc)),
                    Err(m) => {
                        cx.err(loc, format!("{sp}.at: {m}"));
                        None
                    }
                }
            });
        let level = cx.req_num(st, sp, "level_percent", 0.0, 100.0);
        let reason = cx.opt_str(st, sp, "reason").and_then(|(r, loc)| {
            if (1..=64).contains(&r.chars().count()) && !r.contains(char::is_control) {
                Some(r.to_string())
            } else {
                cx.err(
                    loc,
                    format!("{sp}.reason must be 1 to 64 printable characters"),
                );
                None
            }
        });
        let (Some(target), Some((at, at_text, at_loc)), Some((level_percent, _))) =
            (target, at, level)
        else {
            continue;
        };
        if let Some((_, _, first, i)) = seen.iter().find(|(tg, a, _, _)| *tg == target && *a == at)
        {
            cx.err(
                at_loc,
                format!(
                    "{sp} conflicts with lighting.step[{i}] (first defined at {}:{}): same target {:?} at the same instant {at_text:?}",
                    names[first.src],
                    first.line,
                    crate::lighting::target_name(&target)
                ),
            );
            continue;
        }
        seen.push((target.clone(), at, at_loc, j));
        l.steps.push(LightingStep {
            target,
            at,
            level_percent,
            reason: reason.unwrap_or(at_text),
        });
    }
    l
}
