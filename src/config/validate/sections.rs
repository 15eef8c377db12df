//! `[cabinet]`, `[storage]`, `[uplink]`, `[http]`, `[log]`: the daemon's own sections.

use super::*;

const CABINET_KEYS: &[&str] = &["id", "latitude", "longitude", "timezone"];
const STORAGE_KEYS: &[&str] = &["path", "max_bytes", "flush_interval"];
const UPLINK_KEYS: &[&str] = &[
    "broker",
    "topic_prefix",
    "client_id",
    "username",
    "password_file",
    "ca_file",
    "cert_file",
    "key_file",
    "max_incoming_bytes",
    "keep_alive",
    "max_message_bytes",
    "inflight",
    "replay_rate",
    "autonomous_after",
    "compression",
];
const HTTP_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["filter", "format"];

pub(super) fn cabinet(cx: &mut Cx, root: &Tbl) -> CabinetConfig {
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
        } else if let Err(e) = super::units::time_zone(tz) {
            // The lighting programme's clock times are local: an unknown zone would move them.
            cx.err(loc, format!("cabinet.timezone: {e}"));
        } else {
            c.timezone = tz.to_string();
        }
    }
    c
}

pub(super) fn storage(cx: &mut Cx, root: &Tbl) -> StorageConfig {
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

pub(super) fn uplink(cx: &mut Cx, root: &Tbl, cabinet_id: &str) -> UplinkConfig {
    let mut u = UplinkConfig {
        brokers: Vec::new(),
        topic_prefix: DEFAULT_TOPIC_PREFIX.into(),
        client_id: format!("cabinetd-{cabinet_id}"),
        username: None,
        password_file: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        max_incoming_bytes: DEFAULT_MAX_INCOMING_BYTES,
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
    super::security::uplink_tls(cx, t, &mut u);
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

pub(super) fn http(cx: &mut Cx, root: &Tbl) -> HttpConfig {
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

pub(super) fn log(cx: &mut Cx, root: &Tbl) -> LogConfig {
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
