//! Loader tests: each error kind with its exact position, merging, defaults.

use std::time::Duration;

use super::*;

/// A valid minimal config, as the first file; tests put their subject in a second file `b.toml`
/// so that positions in messages are easy to read.
const BASE: &str = r#"[cabinet]
id = "t-1"
latitude = 47.3
longitude = 5.0

[storage]
path = "/tmp/cabinetd-test"

[uplink]
broker = "mqtt://127.0.0.1:1883"

[security]
require_signed = false
"#;

fn src(name: &str, text: &str) -> Source {
    Source {
        name: name.into(),
        text: text.into(),
    }
}

fn load2(b: &str) -> Result<Config, ConfigErrors> {
    load_sources(&[src("a.toml", BASE), src("b.toml", b)])
}

/// Every error of `BASE` + `b`, as displayed.
fn errs(b: &str) -> Vec<String> {
    match load2(b) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts exactly one error, at `pos` (`"b.toml:L:C"`), whose message contains `needle`.
#[track_caller]
fn one(b: &str, pos: &str, needle: &str) {
    let e = errs(b);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{pos}: ")) && e[0].contains(needle),
        "expected {pos}: …{needle}…, got {}",
        e[0]
    );
}

/// `METER` with `extra` device-level keys after its address (line 4).
fn meter_with(extra: &str) -> String {
    METER.replace("502\"\n", &format!("502\"\n{extra}"))
}

fn ok(b: &str) -> Config {
    load2(b).unwrap_or_else(|e| panic!("{e}"))
}

const METER: &str = r#"[[modbus]]
name = "m"
address = "127.0.0.1:502"
  [[modbus.point]]
  name = "p"
  table = "input"
  address = 0
"#;

#[test]
fn minimal_config_gets_defaults() {
    let c = load_sources(&[src("a.toml", BASE)]).unwrap();
    assert_eq!(c.cabinet.id, "t-1");
    assert_eq!(c.cabinet.timezone, "UTC");
    assert_eq!(c.storage.max_bytes, DEFAULT_STORAGE_MAX_BYTES);
    assert_eq!(c.storage.flush_interval, DEFAULT_FLUSH_INTERVAL);
    assert_eq!(
        c.uplink.brokers,
        vec![Broker {
            tls: false,
            host: "127.0.0.1".into(),
            port: 1883
        }]
    );
    assert_eq!(c.uplink.topic_prefix, DEFAULT_TOPIC_PREFIX);
    assert_eq!(c.uplink.client_id, "cabinetd-t-1");
    assert_eq!(c.uplink.keep_alive, DEFAULT_KEEP_ALIVE);
    assert_eq!(c.uplink.inflight, DEFAULT_INFLIGHT);
    assert_eq!(c.uplink.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
    assert_eq!(c.uplink.replay_rate, None);
    assert_eq!(c.http.listen, DEFAULT_HTTP_LISTEN.parse().unwrap());
    assert_eq!(c.log.filter, "info");
    assert_eq!(c.log.format, LogFormat::Plain);
    assert!(c.modbus.is_empty() && c.dali.is_empty() && c.cameras.is_empty());
    assert_eq!(c.version.len(), 12);
    assert!(c.version.chars().all(|ch| ch.is_ascii_hexdigit()));
}

#[test]
fn full_modbus_device() {
    let c = ok(r#"[[modbus]]
name = "meter-main"
address = "10.0.0.5"
unit_id = 3
poll = "250ms"
timeout = "100ms"
deadband = 0.5
heartbeat = "5m"
  [[modbus.point]]
  name = "energy"
  table = "input"
  address = 8
  type = "u32"
  word_order = "little"
  scale = 0.1
  offset = -1
  unit = "Wh"
  [[modbus.point]]
  name = "setpoint"
  table = "holding"
  address = 0
  writable = true
  min = 0
  max = 100
  deadband = 0
  heartbeat = "10s"
  [[modbus.point]]
  name = "relay"
  table = "coil"
  address = 0
"#);
    let d = &c.modbus[0];
    assert_eq!(d.spec.name, "meter-main");
    assert_eq!(
        d.spec.transport,
        Transport::Tcp {
            address: "10.0.0.5:502".into()
        }
    );
    assert_eq!(d.spec.unit_id, 3);
    assert_eq!(d.spec.poll, Duration::from_millis(250));
    assert_eq!(d.spec.timeout, Duration::from_millis(100));
    let e = &d.spec.points[0];
    assert_eq!(
        (e.table, e.address, e.data_type),
        (Table::Input, 8, DataType::U32)
    );
    assert_eq!(e.word_order, WordOrder::Little);
    assert_eq!((e.scale, e.offset), (0.1, -1.0));
    assert_eq!(e.unit.as_deref(), Some("Wh"));
    assert!(!e.writable);
    let s = &d.spec.points[1];
    assert_eq!(s.data_type, DataType::U16);
    assert!(s.writable);
    assert_eq!((s.min, s.max), (Some(0.0), Some(100.0)));
    assert_eq!(d.spec.points[2].data_type, DataType::Bool);
    // Device-level policy is the default of its points; a point overrides.
    assert_eq!(
        d.report,
        vec![
            ReportPolicy {
                deadband: Some(0.5),
                heartbeat: Duration::from_secs(300)
            },
            ReportPolicy {
                deadband: Some(0.0),
                heartbeat: Duration::from_secs(10)
            },
            ReportPolicy {
                deadband: Some(0.5),
                heartbeat: Duration::from_secs(300)
            },
        ]
    );
}

#[test]
fn default_report_policy() {
    let c = ok(METER);
    assert_eq!(
        c.modbus[0].report,
        vec![ReportPolicy {
            deadband: None,
            heartbeat: DEFAULT_HEARTBEAT
        }]
    );
    assert_eq!(c.modbus[0].spec.poll, DEFAULT_MODBUS_POLL);
    assert_eq!(c.modbus[0].spec.timeout, DEFAULT_MODBUS_TIMEOUT);
    assert_eq!(c.modbus[0].spec.unit_id, 1);
}

#[test]
fn rtu_device() {
    let c = ok(r#"[[modbus]]
name = "rtu-1"
transport = "rtu"
address = "/dev/ttyUSB0"
baud = 9600
parity = "none"
data_bits = 8
stop_bits = 2
unit_id = 247
  [[modbus.point]]
  name = "t"
  table = "holding"
  address = 1
  type = "i16"
"#);
    assert_eq!(
        c.modbus[0].spec.transport,
        Transport::Rtu(SerialSettings {
            path: "/dev/ttyUSB0".into(),
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 2
        })
    );
    let c = ok("[[modbus]]\nname = \"r\"\ntransport = \"rtu\"\naddress = \"/dev/ttyS0\"\n[[modbus.point]]\nname = \"x\"\ntable = \"coil\"\naddress = 0\n");
    assert_eq!(
        c.modbus[0].spec.transport,
        Transport::Rtu(SerialSettings {
            path: "/dev/ttyS0".into(),
            baud: 19200,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1
        })
    );
}

#[test]
fn rtu_errors() {
    let e = errs(
        "[[modbus]]\nname = \"r\"\ntransport = \"rtu\"\naddress = \"/dev/ttyS0\"\nparity = \"mark\"\ndata_bits = 6\nstop_bits = 3\nunit_id = 248\n[[modbus.point]]\nname = \"x\"\ntable = \"coil\"\naddress = 0\n",
    );
    assert_eq!(
        e,
        [
            "b.toml:5:10: modbus[r].parity must be one of \"none\", \"even\", \"odd\", found \"mark\"",
            "b.toml:6:13: modbus[r].data_bits must be 7 or 8, found 6",
            "b.toml:7:13: modbus[r].stop_bits must be 1 or 2, found 3",
            "b.toml:8:11: modbus[r].unit_id must be in 0..=247, found 248",
        ]
    );
    one(
        "[[modbus]]\nname = \"t\"\naddress = \"h:1\"\nbaud = 9600\n[[modbus.point]]\nname = \"x\"\ntable = \"coil\"\naddress = 0\n",
        "b.toml:4:1",
        "modbus[t].baud applies only to transport = \"rtu\"",
    );
    one(
        "[[modbus]]\nname = \"t\"\ntransport = \"udp\"\naddress = \"h:1\"\n[[modbus.point]]\nname = \"x\"\ntable = \"coil\"\naddress = 0\n",
        "b.toml:3:13",
        "must be one of \"tcp\", \"rtu\"",
    );
    one(
        "[[modbus]]\nname = \"t\"\naddress = \"h:port\"\n[[modbus.point]]\nname = \"x\"\ntable = \"coil\"\naddress = 0\n",
        "b.toml:3:11",
        "must be host[:port]",
    );
}

#[test]
fn syntax_error_position() {
    assert_eq!(
        errs("[cabinet\nid = 1\n")[0],
        "b.toml:1:9: invalid TOML: unclosed table, expected `]`"
    );
    let e = errs("x = \"unterminated\n");
    assert!(e[0].starts_with("b.toml:1:"), "{e:?}");
    // A syntax error alone: no misleading errors about keys of the broken file.
    assert!(e.iter().all(|l| l.contains("invalid TOML")), "{e:?}");
}

#[test]
fn unknown_key_with_and_without_suggestion() {
    one(
        "[cabinet]\nlatitdue = 1.0\n",
        "b.toml:2:1",
        "unknown key cabinet.latitdue, did you mean \"latitude\"?",
    );
    let e = errs("[cabinet]\ncolour = \"red\"\n");
    assert_eq!(e, ["b.toml:2:1: unknown key cabinet.colour"]);
    one(
        "[storgae]\n",
        "b.toml:1:2",
        "unknown key storgae, did you mean \"storage\"?",
    );
    let e = errs(&format!("{METER}  unitt = \"V\"\n"));
    assert_eq!(
        e,
        ["b.toml:8:3: unknown key modbus[m].point[p].unitt, did you mean \"unit\"?"]
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        errs("[cabinet]\nid = 17\n"),
        ["b.toml:2:6: expected a string for cabinet.id, found integer"]
    );
    one(
        "[storage]\nmax_bytes = true\n",
        "b.toml:2:13",
        "expected a byte size",
    );
    one(
        "[cabinet]\nlatitude = \"47\"\n",
        "b.toml:2:12",
        "expected a number for cabinet.latitude, found string",
    );
    one(
        "cabinet = 3\n",
        "b.toml:1:11",
        "expected a table [cabinet] for cabinet, found integer",
    );
    one(
        "[modbus]\nname = \"x\"\n",
        "b.toml:1:1",
        "expected an array of tables [[modbus]] for modbus, found table",
    );
    one(
        "[uplink]\nkeep_alive = 15\n",
        "b.toml:2:14",
        "expected a duration string",
    );
    one(
        "[uplink]\nbroker = 1883\n",
        "b.toml:2:10",
        "expected a broker URL string or a list of them",
    );
}

#[test]
fn missing_required() {
    let e = load_sources(&[src("a.toml", "[cabinet]\nid = \"x\"\n")]).unwrap_err();
    let e: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        e,
        [
            "a.toml:1:1: missing required key cabinet.latitude",
            "a.toml:1:1: missing required key cabinet.longitude",
            "a.toml:1:1: missing required table [storage]",
            "a.toml:1:1: missing required table [uplink]",
            "a.toml:1:1: missing [security]: security.require_signed is true by default and needs at least one [[security.trusted_key]] (the central post's public key); set security.require_signed = false only for a demo",
        ]
    );
    let e = load_sources(&[src(
        "a.toml",
        "# c\n\n[cabinet]\nlatitude = 1\nlongitude = 2\n[storage]\n[uplink]\n[security]\nrequire_signed = false\n",
    )])
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "a.toml:3:1: missing required key cabinet.id\na.toml:6:1: missing required key storage.path\na.toml:7:1: missing required key uplink.broker"
    );
}

#[test]
fn cabinet_values() {
    one(
        "[cabinet]\nid = \"Dijon_017\"\n",
        "b.toml:2:6",
        "cabinet.id must match [a-z0-9-]{1,64}",
    );
    one(
        &format!("[cabinet]\nid = \"{}\"\n", "a".repeat(65)),
        "b.toml:2:6",
        "cabinet.id must match",
    );
    one(
        "[cabinet]\nlatitude = 90.5\n",
        "b.toml:2:12",
        "cabinet.latitude must be between -90 and 90, found 90.5",
    );
    one(
        "[cabinet]\nlongitude = -181\n",
        "b.toml:2:13",
        "cabinet.longitude must be between -180 and 180, found -181",
    );
    one(
        "[cabinet]\nlatitude = nan\n",
        "b.toml:2:12",
        "cabinet.latitude must be between",
    );
    one(
        "[cabinet]\ntimezone = \"Europe Paris\"\n",
        "b.toml:2:12",
        "IANA",
    );
    assert_eq!(
        ok("[cabinet]\ntimezone = \"Europe/Paris\"\n")
            .cabinet
            .timezone,
        "Europe/Paris"
    );
}

#[test]
fn durations_and_sizes() {
    let c = ok("[storage]\nmax_bytes = \"2 MiB\"\nflush_interval = \"5ms\"\n[uplink]\nmax_message_bytes = 65536\nkeep_alive = \"30s\"\n");
    assert_eq!(c.storage.max_bytes, 2 << 20);
    assert_eq!(c.storage.flush_interval, Duration::from_millis(5));
    assert_eq!(c.uplink.max_message_bytes, 65536);
    assert_eq!(c.uplink.keep_alive, Duration::from_secs(30));
    assert_eq!(
        ok("[storage]\nmax_bytes = \"1GB\"\n").storage.max_bytes,
        1_000_000_000
    );
    one(
        "[storage]\nmax_bytes = \"lots\"\n",
        "b.toml:2:13",
        "invalid byte size \"lots\"",
    );
    one(
        "[storage]\nmax_bytes = 10\n",
        "b.toml:2:13",
        "storage.max_bytes must be between 1048576 and",
    );
    one(
        "[storage]\nmax_bytes = -1\n",
        "b.toml:2:13",
        "must not be negative",
    );
    one(
        &meter_with("poll = \"1 parsec\"\n"),
        "b.toml:4:8",
        "modbus[m].poll: invalid duration \"1 parsec\"",
    );
    one(
        &meter_with("poll = \"5ms\"\n"),
        "b.toml:4:8",
        "modbus[m].poll must be between 10ms and 1day, found \"5ms\"",
    );
    one(
        &meter_with("timeout = \"0s\"\n"),
        "b.toml:4:11",
        "modbus[m].timeout must be between 1ms and 1h",
    );
    one(
        &meter_with("deadband = -1\n"),
        "b.toml:4:12",
        "modbus[m].deadband must be at least 0, found -1",
    );
    one(
        &meter_with("heartbeat = 60\n"),
        "b.toml:4:13",
        "expected a duration string",
    );
    one(
        "[uplink]\ninflight = 0\n",
        "b.toml:2:12",
        "uplink.inflight must be in 1..=65535, found 0",
    );
    one(
        "[uplink]\nkeep_alive = \"500ms\"\n",
        "b.toml:2:14",
        "uplink.keep_alive must be between 1s and",
    );
}

#[test]
fn brokers_string_or_list() {
    let c = ok("[uplink]\nbroker = [\"mqtts://a.example:8884\", \"mqtt://b\"]\nca_file = \"/etc/ca.pem\"\n");
    assert_eq!(
        c.uplink.brokers,
        vec![
            Broker {
                tls: true,
                host: "a.example".into(),
                port: 8884
            },
            Broker {
                tls: false,
                host: "b".into(),
                port: 1883
            }
        ]
    );
    let e = errs("[uplink]\nbroker = [\"mqtt://ok\", \"http://x\", 3]\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("b.toml:2:24: uplink.broker: invalid broker URL \"http://x\""),
        "{e:?}"
    );
    assert_eq!(
        e[1],
        "b.toml:2:36: expected a broker URL string for uplink.broker, found integer"
    );
    one(
        "[uplink]\nbroker = []\n",
        "b.toml:2:10",
        "at least one broker",
    );
    one(
        "[uplink]\nbroker = \"mqtts://x\"\n",
        "b.toml:2:10",
        "needs uplink.ca_file",
    );
}

#[test]
fn uplink_and_log_options() {
    let c = ok("[uplink]\ntopic_prefix = \"city/cab\"\nclient_id = \"c1\"\nusername = \"u\"\npassword_file = \"/run/pw\"\nreplay_rate = 200\n[log]\nfilter = \"info,cabinetd=debug\"\nformat = \"json\"\n[http]\nlisten = \"0.0.0.0:9200\"\n");
    assert_eq!(c.uplink.topic_prefix, "city/cab");
    assert_eq!(c.uplink.client_id, "c1");
    assert_eq!(c.uplink.username.as_deref(), Some("u"));
    assert_eq!(c.uplink.password_file, Some("/run/pw".into()));
    assert_eq!(c.uplink.replay_rate, Some(200));
    assert_eq!(c.log.filter, "info,cabinetd=debug");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.http.listen, "0.0.0.0:9200".parse().unwrap());
    one(
        "[uplink]\ntopic_prefix = \"a/+/b\"\n",
        "b.toml:2:16",
        "uplink.topic_prefix must be",
    );
    one(
        "[log]\nformat = \"xml\"\n",
        "b.toml:2:10",
        "log.format must be one of \"plain\", \"json\", found \"xml\"",
    );
    one("[log]\nfilter = \"info,[=\"\n", "b.toml:2:10", "log.filter");
    one(
        "[http]\nlisten = \"localhost\"\n",
        "b.toml:2:10",
        "http.listen must be an IP socket address",
    );
}

#[test]
fn password_anywhere_is_refused() {
    one(
        "[uplink]\npassword = \"hunter2\"\n",
        "b.toml:2:1",
        "uplink.password: secrets must not be written in the config",
    );
    let e = errs("[[camera]]\nname = \"c\"\naddress = \"http://10.0.0.5/onvif/device_service\"\nusername = \"u\"\npassword = \"x\"\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("b.toml:1:1: missing required key camera[c].password_file"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("b.toml:5:1: camera[0].password: secrets")
            && e[1].contains("password_file"),
        "{e:?}"
    );
    // Even inside a table the daemon does not know.
    let e = errs("[vault]\npassword = \"x\"\n");
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[1].starts_with("b.toml:2:1: vault.password: secrets"),
        "{e:?}"
    );
    // The secret itself never appears in the message.
    assert!(!errs("[uplink]\npassword = \"hunter2\"\n")[0].contains("hunter2"));
}

#[test]
fn device_names_unique_across_kinds() {
    let e = errs(&format!(
        "{METER}[[dali]]\nname = \"m\"\ninterface = \"sim\"\nluminaires = 2\n[[camera]]\nname = \"m\"\naddress = \"http://c/onvif/device_service\"\nusername = \"u\"\npassword_file = \"/p\"\n"
    ));
    assert_eq!(
        e,
        [
            "b.toml:9:8: duplicate device name \"m\" (first defined at b.toml:2)",
            "b.toml:13:8: duplicate device name \"m\" (first defined at b.toml:2)",
        ]
    );
    // Across files: the first file's line is named.
    let e = load_sources(&[
        src(
            "a.toml",
            &format!("{BASE}[[dali]]\nname = \"m\"\ninterface = \"sim\"\nluminaires = 1\n"),
        ),
        src("b.toml", METER),
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "b.toml:2:8: duplicate device name \"m\" (first defined at a.toml:15)"
    );
    one(
        &METER.replace("name = \"m\"", "name = \"Meter 1\""),
        "b.toml:2:8",
        "modbus[0].name must match [a-z0-9_-]+",
    );
}

#[test]
fn point_names() {
    let dup =
        format!("{METER}  [[modbus.point]]\n  name = \"p\"\n  table = \"coil\"\n  address = 1\n");
    assert_eq!(
        errs(&dup),
        ["b.toml:9:10: duplicate point name \"p\" (first defined at b.toml:5)"]
    );
    one(
        &METER.replace("name = \"p\"", "name = \"P-1\""),
        "b.toml:5:10",
        "modbus[m].point[0].name must match [a-z0-9_]+",
    );
    // The same point name on two devices is fine.
    ok(&format!(
        "{METER}{}",
        METER.replace("name = \"m\"", "name = \"n\"")
    ));
    one(
        "[[modbus]]\nname = \"e\"\naddress = \"h:1\"\n",
        "b.toml:1:1",
        "modbus[e] has no points",
    );
}

#[test]
fn point_table_type_rules() {
    let pt = |body: &str| {
        format!(
            "[[modbus]]\nname = \"m\"\naddress = \"h:1\"\n[[modbus.point]]\nname = \"p\"\n{body}"
        )
    };
    one(
        &pt("table = \"holding\"\naddress = 0\ntype = \"bool\"\n"),
        "b.toml:8:8",
        "type \"bool\" is only for table \"coil\" or \"discrete\", not \"holding\"",
    );
    one(
        &pt("table = \"coil\"\naddress = 0\ntype = \"u16\"\n"),
        "b.toml:8:8",
        "modbus[m].point[p].type must be \"bool\": table \"coil\" holds single bits",
    );
    one(
        &pt("table = \"input\"\naddress = 0\nwritable = true\n"),
        "b.toml:8:12",
        "table \"input\" is read-only",
    );
    one(
        &pt("table = \"discrete\"\naddress = 0\nwritable = true\n"),
        "b.toml:8:12",
        "table \"discrete\" is read-only",
    );
    one(
        &pt("table = \"holding\"\naddress = 0\nwritable = true\nmin = 10\nmax = 5\n"),
        "b.toml:10:7",
        "min (10) must not exceed max (5)",
    );
    one(
        &pt("table = \"holding\"\naddress = 65535\ntype = \"u32\"\n"),
        "b.toml:7:11",
        "the value's 2 registers run past 65535",
    );
    one(
        &pt("table = \"holding\"\naddress = 65536\n"),
        "b.toml:7:11",
        "must be in 0..=65535",
    );
    one(
        &pt("table = \"register\"\naddress = 0\n"),
        "b.toml:6:9",
        "must be one of \"coil\", \"discrete\", \"input\", \"holding\"",
    );
    one(
        &pt("table = \"input\"\naddress = 0\ntype = \"u128\"\n"),
        "b.toml:8:8",
        "type must be one of",
    );
    one(
        &pt("table = \"input\"\naddress = 0\nscale = 0\n"),
        "b.toml:8:9",
        "scale must not be 0",
    );
    one(
        &pt("address = 0\n"),
        "b.toml:4:1",
        "missing required key modbus[m].point[p].table",
    );
    one(
        &pt("table = \"input\"\n"),
        "b.toml:4:1",
        "missing required key modbus[m].point[p].address",
    );
    ok(&pt("table = \"holding\"\naddress = 0\ntype = \"f64\"\nwritable = true\nmin = -1.5\nmax = 1.5\n"));
}

#[test]
fn several_errors_in_one_file_all_reported_in_order() {
    let e = errs("[cabinet]\nid = \"BAD\"\nlatitude = 100\n[uplink]\nbroker = \"ftp://x\"\nkeepalive = \"1s\"\n[http]\nlisten = \"nope\"\n");
    assert_eq!(e.len(), 5, "{e:#?}");
    let heads: Vec<String> = e
        .iter()
        .map(|l| l.split(": ").next().unwrap().to_string())
        .collect();
    assert_eq!(
        heads,
        [
            "b.toml:2:6",
            "b.toml:3:12",
            "b.toml:5:10",
            "b.toml:6:1",
            "b.toml:8:10"
        ]
    );
    assert!(e[3].ends_with("unknown key uplink.keepalive, did you mean \"keep_alive\"?"));
}

#[test]
fn errors_sorted_by_file_order_then_position() {
    let e = load_sources(&[
        src("z.toml", &format!("{BASE}[log]\nformat = 1\n")),
        src("a.toml", "[http]\nlisten = 1\n[log]\nfilter = 2\n"),
    ])
    .unwrap_err();
    let heads: Vec<String> =
        e.0.iter()
            .map(|x| format!("{}:{}:{}", x.file, x.line, x.col))
            .collect();
    assert_eq!(heads, ["z.toml:15:10", "a.toml:2:10", "a.toml:4:10"]);
}

#[test]
fn merge_order_later_wins() {
    let c = load_sources(&[
        src(
            "a.toml",
            &format!("{BASE}[http]\nlisten = \"127.0.0.1:1\"\n"),
        ),
        src(
            "b.toml",
            "[cabinet]\nid = \"b\"\n[storage]\nmax_bytes = \"2MiB\"\n",
        ),
        src("c.toml", "[cabinet]\nid = \"c\"\n"),
    ])
    .unwrap();
    assert_eq!(c.cabinet.id, "c");
    assert_eq!(c.cabinet.latitude, 47.3); // untouched keys of a merged table stay
    assert_eq!(c.storage.max_bytes, 2 << 20);
    assert_eq!(
        c.storage.path,
        std::path::PathBuf::from("/tmp/cabinetd-test")
    );
    assert_eq!(c.http.listen, "127.0.0.1:1".parse().unwrap());
    // Lists are replaced whole.
    let c = load_sources(&[
        src(
            "a.toml",
            &BASE.replace(
                "broker = \"mqtt://127.0.0.1:1883\"",
                "broker = [\"mqtt://a\", \"mqtt://b\"]",
            ),
        ),
        src("b.toml", "[uplink]\nbroker = [\"mqtt://c\"]\n"),
    ])
    .unwrap();
    assert_eq!(c.uplink.brokers.len(), 1);
    assert_eq!(c.uplink.brokers[0].host, "c");
}

#[test]
fn conf_d_adds_devices_and_replaces_same_name() {
    let conf_d = format!(
        "{}{}",
        METER.replace(
            "address = \"127.0.0.1:502\"",
            "address = \"127.0.0.1:1502\""
        ),
        METER.replace("name = \"m\"", "name = \"extra\"")
    );
    let c = load_sources(&[
        src(
            "a.toml",
            &format!(
                "{BASE}{METER}{}",
                METER.replace("name = \"m\"", "name = \"second\"")
            ),
        ),
        src("b.toml", &conf_d),
    ])
    .unwrap();
    let names: Vec<&str> = c.modbus.iter().map(|d| d.spec.name.as_str()).collect();
    assert_eq!(names, ["m", "second", "extra"]);
    assert_eq!(
        c.modbus[0].spec.transport,
        Transport::Tcp {
            address: "127.0.0.1:1502".into()
        }
    );
}

#[test]
fn dali_buses() {
    let c = ok(r#"[[dali]]
name = "bus-a"
interface = "atx-hat"
port = "/dev/ttyAMA0"
poll = "10s"
energy_poll = "5m"
rated_power_w = 38.5
  [[dali.group]]
  number = 0
  members = [0, 1, 2]
  power_on_level = 100
  system_failure_level = 80
  fade_time = 4
  min_level = 10
  max_level = 100
[[dali]]
name = "bus-sim"
interface = "sim"
luminaires = 4
"#);
    let a = &c.dali[0];
    assert_eq!(
        a.interface,
        DaliInterface::AtxHat {
            port: "/dev/ttyAMA0".into()
        }
    );
    assert_eq!(a.poll, Duration::from_secs(10));
    assert_eq!(a.energy_poll, Duration::from_secs(300));
    assert_eq!(a.rated_power_w, Some(38.5));
    assert_eq!(
        a.groups,
        vec![DaliGroup {
            number: 0,
            members: vec![0, 1, 2],
            power_on_level: Some(100.0),
            system_failure_level: Some(80.0),
            fade_time: Some(4),
            min_level: Some(10.0),
            max_level: Some(100.0),
        }]
    );
    assert_eq!(c.dali[1].interface, DaliInterface::Sim { luminaires: 4 });
    assert_eq!(c.dali[1].poll, DEFAULT_DALI_POLL);
    assert_eq!(c.dali[1].energy_poll, DEFAULT_DALI_ENERGY_POLL);
}

#[test]
fn dali_errors() {
    one(
        "[[dali]]\nname = \"d\"\ninterface = \"atx-hat\"\n",
        "b.toml:1:1",
        "missing required key dali[d].port",
    );
    one(
        "[[dali]]\nname = \"d\"\ninterface = \"sim\"\n",
        "b.toml:1:1",
        "missing required key dali[d].luminaires",
    );
    one(
        "[[dali]]\nname = \"d\"\ninterface = \"sim\"\nluminaires = 65\n",
        "b.toml:4:14",
        "dali[d].luminaires must be in 1..=64, found 65",
    );
    one(
        "[[dali]]\nname = \"d\"\ninterface = \"sim\"\nluminaires = 2\nport = \"/dev/x\"\n",
        "b.toml:5:1",
        "dali[d].port applies only to interface = \"atx-hat\"",
    );
    one(
        "[[dali]]\nname = \"d\"\ninterface = \"dmx\"\n",
        "b.toml:3:13",
        "must be one of \"atx-hat\", \"sim\"",
    );
    let g = |body: &str| {
        format!(
            "[[dali]]\nname = \"d\"\ninterface = \"sim\"\nluminaires = 4\n[[dali.group]]\n{body}"
        )
    };
    one(
        &g("number = 16\n"),
        "b.toml:6:10",
        "dali[d].group[0].number must be in 0..=15, found 16",
    );
    one(
        &g("number = 1\nmembers = [0, 64]\n"),
        "b.toml:7:15",
        "dali[d].group[1].members must be in 0..=63, found 64",
    );
    one(
        &g("number = 1\nmembers = [0, 0]\n"),
        "b.toml:7:15",
        "lists short address 0 twice",
    );
    one(
        &g("number = 1\nmembers = [5]\n"),
        "b.toml:7:12",
        "short address 5 is not on this simulated bus",
    );
    one(
        &g("number = 1\npower_on_level = 101\n"),
        "b.toml:7:18",
        "power_on_level must be between 0 and 100, found 101",
    );
    one(
        &g("number = 1\nmin_level = 50\nmax_level = 40\n"),
        "b.toml:8:13",
        "min_level (50) must not exceed max_level (40)",
    );
    one(
        &g("number = 1\nfade_time = 16\n"),
        "b.toml:7:13",
        "fade_time must be in 0..=15",
    );
    one(
        &g("number = 1\n[[dali.group]]\nnumber = 1\n"),
        "b.toml:8:10",
        "duplicate group number 1 (first defined at b.toml:6)",
    );
}

#[test]
fn cameras() {
    let c = ok("[[camera]]\nname = \"cam-darcy\"\naddress = \"http://10.0.0.50/onvif/device_service\"\nusername = \"gateway\"\npassword_file = \"/etc/cabinetd/secrets/cam-darcy\"\n");
    assert_eq!(
        c.cameras,
        vec![Camera {
            name: "cam-darcy".into(),
            address: "http://10.0.0.50/onvif/device_service".into(),
            username: "gateway".into(),
            password_file: "/etc/cabinetd/secrets/cam-darcy".into(),
            poll: DEFAULT_CAMERA_POLL,
            timeout: DEFAULT_CAMERA_TIMEOUT,
            events: true,
            clock_drift_threshold: DEFAULT_CLOCK_DRIFT_THRESHOLD,
            auth_retry: DEFAULT_CAMERA_AUTH_RETRY,
            heartbeat: DEFAULT_HEARTBEAT,
        }]
    );
    assert_eq!(c.onvif, OnvifConfig::default());
    assert!(!c.onvif.discovery, "discovery is off by default");
    one(
        "[[camera]]\nname = \"c\"\naddress = \"http://x/onvif\"\nusername = \"u\"\n",
        "b.toml:1:1",
        "missing required key camera[c].password_file",
    );
    one("[[camera]]\nname = \"c\"\naddress = \"rtsp://x\"\nusername = \"u\"\npassword_file = \"/p\"\n", "b.toml:3:11", "ONVIF device service URL");
    one("[[camera]]\nname = \"c\"\naddress = \"https://x/onvif\"\nusername = \"u\"\npassword_file = \"/p\"\n", "b.toml:3:11", "http:// only");
    one("[[camera]]\nname = \"c\"\naddress = \"http://admin:pw@x/onvif\"\nusername = \"u\"\npassword_file = \"/p\"\n", "b.toml:3:11", "must not carry credentials");
}

#[test]
fn camera_tuning_and_discovery() {
    let c = ok("[[camera]]\nname = \"c\"\naddress = \"http://10.0.0.5:8080/onvif/device_service\"\nusername = \"u\"\npassword_file = \"/p\"\npoll = \"10s\"\ntimeout = \"2s\"\nevents = false\nclock_drift_threshold = \"2s\"\nauth_retry = \"10min\"\nheartbeat = \"5m\"\n[onvif]\ndiscovery = true\ndiscovery_interval = \"1h\"\ndiscovery_timeout = \"2s\"\ndiscovery_interface = \"eth1\"\n");
    let cam = &c.cameras[0];
    assert_eq!(
        (
            cam.poll,
            cam.timeout,
            cam.events,
            cam.clock_drift_threshold,
            cam.auth_retry,
            cam.heartbeat
        ),
        (
            Duration::from_secs(10),
            Duration::from_secs(2),
            false,
            Duration::from_secs(2),
            Duration::from_secs(600),
            Duration::from_secs(300)
        )
    );
    assert_eq!(
        c.onvif,
        OnvifConfig {
            discovery: true,
            discovery_interval: Duration::from_secs(3600),
            discovery_timeout: Duration::from_secs(2),
            discovery_interface: Some("eth1".into()),
        }
    );
    let cam = |extra: &str| {
        format!("[[camera]]\nname = \"c\"\naddress = \"http://x/onvif\"\nusername = \"u\"\npassword_file = \"/p\"\n{extra}")
    };
    one(
        &cam("poll = \"10ms\"\n"),
        "b.toml:6:8",
        "camera[c].poll must be between",
    );
    one(
        &cam("timeout = \"2min\"\n"),
        "b.toml:6:11",
        "camera[c].timeout must be between",
    );
    one(
        &cam("events = \"yes\"\n"),
        "b.toml:6:10",
        "expected a boolean",
    );
    one(
        &cam("pol = \"1s\"\n"),
        "b.toml:6:1",
        "did you mean \"poll\"",
    );
    one(
        "[onvif]\ndiscovery = 1\n",
        "b.toml:2:13",
        "expected a boolean",
    );
    one(
        "[onvif]\ndiscovery_interval = \"2s\"\ndiscovery_timeout = \"3s\"\n",
        "b.toml:3:21",
        "shorter than onvif.discovery_interval",
    );
    one(
        "[onvif]\ndiscovery_interface = \"eth 1\"\n",
        "b.toml:2:23",
        "interface name",
    );
    one(
        "[onvif]\ndiscover = true\n",
        "b.toml:2:1",
        "unknown key onvif.discover",
    );
}

#[test]
fn simulators_loopback_only() {
    let c = ok("[[simulator]]\nname = \"meter-sim\"\nkind = \"energy-meter\"\nlisten = \"127.0.0.1:15020\"\n");
    assert_eq!(
        c.simulators,
        vec![Simulator {
            name: "meter-sim".into(),
            kind: SimulatorKind::EnergyMeter,
            listen: "127.0.0.1:15020".parse().unwrap()
        }]
    );
    one(
        "[[simulator]]\nname = \"s\"\nkind = \"energy-meter\"\nlisten = \"0.0.0.0:15020\"\n",
        "b.toml:4:10",
        "must be a loopback address",
    );
    one(
        "[[simulator]]\nname = \"s\"\nkind = \"heat-pump\"\nlisten = \"127.0.0.1:1\"\n",
        "b.toml:3:8",
        "must be one of \"energy-meter\"",
    );
}

#[test]
fn version_digest_and_override() {
    let a = load_sources(&[src("a.toml", BASE)]).unwrap().version;
    let renamed = load_sources(&[src("elsewhere.toml", BASE)])
        .unwrap()
        .version;
    assert_eq!(a, renamed);
    let changed = load_sources(&[src("a.toml", &format!("{BASE}# note\n"))])
        .unwrap()
        .version;
    assert_ne!(a, changed);
    assert_eq!(a, digest(&[src("x", BASE)]));
    let v = load_sources_with_version(&[src("desired.toml", BASE)], Some("v42")).unwrap();
    assert_eq!(v.version, "v42");
}

#[test]
fn load_files_reads_and_names_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("cabinetd.toml");
    let b = dir.path().join("extra.toml");
    std::fs::write(&a, BASE).unwrap();
    std::fs::write(&b, "[cabinet]\nid = 3\n").unwrap();
    let e = load_files(&[a.clone(), b.clone()]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:6: expected a string for cabinet.id, found integer",
            b.display()
        )
    );
    assert_eq!(
        load_files(std::slice::from_ref(&a)).unwrap().cabinet.id,
        "t-1"
    );
    let missing = dir.path().join("missing.toml");
    let e = load_files(&[a, missing.clone()]).unwrap_err();
    assert!(e
        .to_string()
        .starts_with(&format!("{}:1:1: cannot read the file", missing.display())));
}

/// Issue 13 item 14: a 50 MB config file took 302 MB of memory, and `/dev/zero` as a config
/// read until memory ran out. Files are read up to 4 MiB, and a larger one is named.
#[test]
fn config_files_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    let mut text = String::from(BASE);
    while text.len() as u64 <= super::load::MAX_CONFIG_BYTES {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    std::fs::write(&big, &text).unwrap();
    let zero = std::path::PathBuf::from("/dev/zero");
    for path in [big, zero] {
        let e = load_files(std::slice::from_ref(&path)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}:1:1: the file is larger than 4 MiB, the limit of a configuration file: is it the right file?",
                path.display()
            )
        );
    }
    // Just under the cap still loads.
    text.truncate(super::load::MAX_CONFIG_BYTES as usize - 100);
    let fits = dir.path().join("fits.toml");
    std::fs::write(&fits, &text[..text.rfind('\n').unwrap() + 1]).unwrap();
    assert_eq!(load_files(&[fits]).unwrap().cabinet.id, "t-1");
    let binary = dir.path().join("binary.toml");
    std::fs::write(&binary, b"[cabinet]\nid = \"\xff\"\n").unwrap();
    let e = load_files(&[binary]).unwrap_err();
    assert!(
        e.to_string()
            .contains("not UTF-8 text (invalid byte at offset 16)"),
        "{e}"
    );
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    /// Lines that look like config, mixed at random, so the walk meets every kind of value in
    /// every place (a desired config arrives over MQTT: it is untrusted input).
    fn line() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("[cabinet]".to_string()),
            Just("[storage]".to_string()),
            Just("[uplink]".to_string()),
            Just("[[modbus]]".to_string()),
            Just("[[modbus.point]]".to_string()),
            Just("[[dali]]".to_string()),
            Just("[[dali.group]]".to_string()),
            Just("[[camera]]".to_string()),
            Just("[[simulator]]".to_string()),
            (
                prop::sample::select(vec![
                    "id",
                    "name",
                    "address",
                    "table",
                    "type",
                    "poll",
                    "broker",
                    "members",
                    "interface",
                    "listen",
                    "password",
                    "max_bytes",
                    "number",
                    "min",
                    "max",
                ]),
                prop::sample::select(vec![
                    "1",
                    "-5",
                    "3.5",
                    "true",
                    "\"x\"",
                    "\"1s\"",
                    "[1, 2]",
                    "{ a = 1 }",
                    "1979-05-27",
                    "\"mqtt://h\"",
                    "\"input\"",
                    "\"sim\"",
                    "\"",
                ]),
            )
                .prop_map(|(k, v)| format!("{k} = {v}")),
        ]
    }

    proptest! {
        #[test]
        fn never_panics_and_errors_are_sorted_and_in_bounds(lines in prop::collection::vec(line(), 0..30)) {
            let text = lines.join("\n");
            let n_lines = lines.len().max(1);
            if let Err(e) = load_sources(&[src("<desired>", &text)]) {
                prop_assert!(!e.0.is_empty());
                for w in e.0.windows(2) {
                    prop_assert!((w[0].line, w[0].col) <= (w[1].line, w[1].col), "{e}");
                }
                for x in &e.0 {
                    prop_assert!(x.file == "<desired>");
                    prop_assert!(x.line >= 1 && x.line <= n_lines && x.col >= 1, "{x}\n{text}");
                }
            }
        }
    }
}

const LIGHTING: &str = r#"[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 4

[lighting]
twilight = "civil"
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "bus-a/3"
at = "dawn-30min"
level_percent = 42.5
reason = "early buses"
[[lighting.step]]
target = "group:2"
at = "22:00"
level_percent = 70
"#;

#[test]
fn lighting_programme() {
    let c = ok(LIGHTING);
    let l = &c.lighting;
    assert_eq!(l.twilight, Twilight::Civil);
    assert_eq!(l.energy_meter, None);
    assert_eq!(
        l.steps,
        [
            LightingStep {
                target: LightTarget::All,
                at: StepTime::Dusk(0),
                level_percent: 100.0,
                reason: "dusk".into(),
                nights: None,
            },
            LightingStep {
                target: LightTarget::Gear {
                    bus: "bus-a".into(),
                    address: 3
                },
                at: StepTime::Dawn(-1800),
                level_percent: 42.5,
                reason: "early buses".into(),
                nights: None,
            },
            LightingStep {
                target: LightTarget::Group(2),
                at: StepTime::Clock {
                    hour: 22,
                    minute: 0
                },
                level_percent: 70.0,
                reason: "22:00".into(),
                nights: None,
            },
        ]
    );
    // Absent section: no programme, official sunset/sunrise.
    assert_eq!(ok("").lighting, LightingConfig::default());
    assert_eq!(LightingConfig::default().twilight, Twilight::Official);
    let m = ok(&format!(
        "{METER}  [[modbus.point]]\n  name = \"energy\"\n  table = \"input\"\n  address = 8\n  type = \"u32\"\n[lighting]\nenergy_meter = \"m/energy\"\n"
    ));
    assert_eq!(m.lighting.energy_meter.as_deref(), Some("m/energy"));
}

#[test]
fn lighting_errors() {
    let step = |k: &str| {
        format!("[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 100\n{k}\n")
    };
    one(
        &step("levle = 3"),
        "b.toml:5:1",
        "unknown key lighting.step[0].levle",
    );
    one(
        "[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 101\n",
        "b.toml:4:17",
        "lighting.step[0].level_percent must be between 0 and 100, found 101",
    );
    one(
        "[[lighting.step]]\ntarget = \"group:16\"\nat = \"dusk\"\nlevel_percent = 1\n",
        "b.toml:2:10",
        "lighting.step[0].target: group \"16\"",
    );
    one(
        "[[lighting.step]]\ntarget = \"bus-z/1\"\nat = \"dusk\"\nlevel_percent = 1\n",
        "b.toml:2:10",
        "no [[dali]] bus is named \"bus-z\"",
    );
    one(
        "[[lighting.step]]\ntarget = \"all\"\nat = \"sunset\"\nlevel_percent = 1\n",
        "b.toml:3:6",
        "lighting.step[0].at: must be \"dusk\"",
    );
    one(
        "[[lighting.step]]\ntarget = \"all\"\nlevel_percent = 1\n",
        "b.toml:1:1",
        "missing required key lighting.step[0].at",
    );
    one(
        "[lighting]\ntwilight = \"nautical\"\n",
        "b.toml:2:12",
        "lighting.twilight must be one of \"official\", \"civil\"",
    );
    one(
        "[lighting]\nenergy_meter = \"m/nope\"\n",
        "b.toml:2:16",
        "lighting.energy_meter must name a configured Modbus point",
    );
    one(
        "[lighting]\ntwilght = \"civil\"\n",
        "b.toml:2:1",
        "unknown key lighting.twilght, did you mean \"twilight\"?",
    );
    // Same target, same instant: the second is reported, naming the first.
    one(
        &format!("{}{}", step(""), step("").replace("\"dusk\"", "\"dusk+0min\"")),
        "b.toml:8:6",
        "lighting.step[1] conflicts with lighting.step[0] (first defined at b.toml:3): same target \"all\" at the same instant \"dusk+0min\"",
    );
    // Same instant, other target: fine; same target, other instant: fine.
    ok(&format!(
        "{}{}{}",
        step(""),
        step("").replace("\"all\"", "\"group:1\""),
        step("").replace("\"dusk\"", "\"dusk+1m\"")
    ));
    // Every error at once.
    assert_eq!(
        errs("[[lighting.step]]\ntarget = \"x\"\nat = \"y\"\nlevel_percent = -1\n").len(),
        3
    );
}

#[test]
fn timezone_must_exist() {
    one(
        "[cabinet]\ntimezone = \"Europe/Dijon\"\n",
        "b.toml:2:12",
        "cabinet.timezone: unknown IANA time zone \"Europe/Dijon\"",
    );
}

#[test]
fn a_later_file_replaces_the_whole_programme() {
    let a = "[lighting]\ntwilight = \"civil\"\n[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 100\n[[lighting.step]]\ntarget = \"all\"\nat = \"22:00\"\nlevel_percent = 70\n";
    let c = load_sources(&[
        src("a.toml", BASE),
        src("b.toml", a),
        src(
            "c.toml",
            "[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 80\n",
        ),
    ])
    .unwrap();
    assert_eq!(c.lighting.twilight, Twilight::Civil);
    assert_eq!(c.lighting.steps.len(), 1);
    assert_eq!(c.lighting.steps[0].level_percent, 80.0);
}

fn rtu(name: &str, unit: u8, baud: u32) -> String {
    format!(
        "[[modbus]]\nname = \"{name}\"\ntransport = \"rtu\"\naddress = \"/dev/ttyUSB0\"\nbaud = {baud}\nunit_id = {unit}\n  [[modbus.point]]\n  name = \"x\"\n  table = \"holding\"\n  address = 0\n"
    )
}

#[test]
fn units_of_one_rtu_line_share_it_when_they_agree_on_its_settings() {
    // Several units on one RS-485 line is how cabinets are wired: not an error.
    let c = ok(&format!("{}{}", rtu("m1", 1, 19200), rtu("m2", 2, 19200)));
    assert_eq!(c.modbus.len(), 2);
    assert_eq!(c.modbus[0].resources(), c.modbus[1].resources());
    // Disagreeing settings: reported at the second entry, naming the first with its position.
    one(
        &format!("{}{}", rtu("m1", 1, 19200), rtu("m2", 2, 9600)),
        "b.toml:11:1",
        "modbus[m2]: serial line /dev/ttyUSB0 is set to 9600 baud, parity even, 8 data bits, 1 stop bit, but modbus[m1] (defined at b.toml:1:1) sets 19200 baud",
    );
}

#[test]
fn a_serial_line_or_a_listening_address_has_one_owner() {
    let dali = "[[dali]]\nname = \"bus-a\"\ninterface = \"atx-hat\"\nport = \"/dev/ttyUSB0\"\n";
    one(
        &format!("{}{dali}", rtu("m1", 1, 19200)),
        "b.toml:11:1",
        "dali[bus-a]: serial line /dev/ttyUSB0 is already used by modbus[m1] (defined at b.toml:1:1): it can have only one owner",
    );
    let dali_b = dali.replace("bus-a", "bus-b");
    one(
        &format!("{dali}{dali_b}"),
        "b.toml:5:1",
        "dali[bus-b]: serial line /dev/ttyUSB0 is already used by dali[bus-a]",
    );
    let sim = |name: &str| {
        format!("[[simulator]]\nname = \"{name}\"\nkind = \"energy-meter\"\nlisten = \"127.0.0.1:5020\"\n")
    };
    one(
        &format!("{}{}", sim("s1"), sim("s2")),
        "b.toml:5:1",
        "simulator[s2]: listening address 127.0.0.1:5020 is already used by simulator[s1]",
    );
    one(
        &format!("[http]\nlisten = \"127.0.0.1:5020\"\n{}", sim("s1")),
        "b.toml:3:1",
        "simulator[s1]: listening address 127.0.0.1:5020 is already used by http.listen (defined at b.toml:2:10)",
    );
    // The built-in simulated bus owns no line.
    ok("[[dali]]\nname = \"a\"\ninterface = \"sim\"\nluminaires = 1\n[[dali]]\nname = \"b\"\ninterface = \"sim\"\nluminaires = 1\n");
}

#[test]
fn lighting_calendars_and_nights() {
    let c = ok(r#"[[lighting.calendar]]
name = "holiday"
dates = ["12-25", "12-24..01-02", "2026-07-14", "2026-06-19..2026-06-21"]
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70
nights = ["mon", "holiday"]
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 50
nights = ["sat"]
"#);
    let l = &c.lighting;
    assert_eq!(l.calendars.len(), 1);
    assert_eq!(l.calendars[0].dates.len(), 4);
    assert_eq!(
        l.steps[0].nights,
        Some(vec!["mon".to_string(), "holiday".to_string()])
    );
    assert_eq!(l.day_type(jiff::civil::date(2026, 12, 31)), "holiday");
    assert_eq!(l.day_type(jiff::civil::date(2026, 12, 19)), "sat");
    let cal = "[[lighting.calendar]]\nname = \"holiday\"\ndates = [\"12-25\"]\n";
    one(
        &format!("{cal}[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 1\nnights = [\"friday\"]\n"),
        "b.toml:8:11",
        "\"friday\" is neither a weekday nor a [[lighting.calendar]]",
    );
    one(
        "[[lighting.calendar]]\nname = \"h\"\ndates = [\"12-32\"]\n",
        "b.toml:3:10",
        "lighting.calendar[0].dates: \"12-32\" is not \"MM-DD\"",
    );
    one(
        "[[lighting.calendar]]\nname = \"h\"\ndates = [\"2026-07-14..2026-07-01\"]\n",
        "b.toml:3:10",
        "the range ends before it starts",
    );
    one(
        "[[lighting.calendar]]\nname = \"sun\"\ndates = [\"12-25\"]\n",
        "b.toml:2:8",
        "is a weekday name",
    );
    one(
        "[[lighting.calendar]]\nname = \"h\"\n",
        "b.toml:1:1",
        "missing required key lighting.calendar[0].dates",
    );
    // The same target and instant on overlapping nights is ambiguous; on disjoint nights not.
    one(
        "[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 1\nnights = [\"mon\", \"tue\"]\n[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 2\nnights = [\"tue\"]\n",
        "b.toml:8:6",
        "conflicts with lighting.step[0]",
    );
    one(
        "[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 1\nnights = [\"mon\", \"mon\"]\n",
        "b.toml:5:18",
        "lists \"mon\" twice",
    );
}

#[test]
fn the_confirmation_window_of_desired_configs() {
    let c = load_sources(&[src("a.toml", BASE)]).unwrap();
    assert_eq!(c.rollback, RollbackConfig::default());
    assert_eq!(c.rollback.confirm_after, DEFAULT_CONFIRM_AFTER);
    let c = ok("[config]\nconfirm_after = \"30s\"\nuplink_critical = [\"router\"]\n");
    assert_eq!(c.rollback.confirm_after, Duration::from_secs(30));
    assert_eq!(c.rollback.uplink_critical, ["router"]);
    assert_eq!(
        ok("[config]\nconfirm_after = \"0s\"\n")
            .rollback
            .confirm_after,
        Duration::ZERO
    );
    one(
        "[config]\nconfirm_after = \"2d\"\n",
        "b.toml:2:17",
        "config.confirm_after must be between",
    );
    one(
        "[config]\nuplink_critical = [\"Router!\"]\n",
        "b.toml:2:20",
        "config.uplink_critical: expected a device name",
    );
    one(
        "[config]\nconfirm = \"1m\"\n",
        "b.toml:2:1",
        "unknown key config.confirm",
    );
}
