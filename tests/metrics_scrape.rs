//! `/metrics` of a daemon that has just started (issue 14 items 3 and 12): every metric name of
//! SPEC §4 and of the README is there, every labelled series the configuration implies exists at
//! 0 before anything happened (so `rate()`, `increase()` and absent-series alerts work from the
//! first scrape), and the text passes the naming lint `promtool check metrics` applies (the real
//! promtool runs on a live scrape in `tests/ship/sandbox_check.sh`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use support::*;

/// SPEC §4's fixed names, spelled out once more on purpose: dropping one is a contract change.
const SPEC_NAMES: &[&str] = &[
    "cabinetd_build_info",
    "cabinetd_uplink_connected",
    "cabinetd_mode",
    "cabinetd_outbox_records",
    "cabinetd_outbox_bytes",
    "cabinetd_outbox_oldest_record_age_seconds",
    "cabinetd_published_records_total",
    "cabinetd_evicted_records_total",
    "cabinetd_device_up",
    "cabinetd_poll_duration_seconds",
    "cabinetd_poll_errors_total",
    "cabinetd_commands_total",
    "cabinetd_auth_rejected_total",
    "cabinetd_rule_firings_total",
    "cabinetd_tls_cert_expiry_seconds",
];

/// One equipment entry of every kind the daemon polls, a rule, and two brokers (failover).
const EXTRA: &str = r#"
[[simulator]]
name = "meter-sim"
kind = "energy-meter"
listen = "127.0.0.1:SIMPORT"

[[modbus]]
name = "meter-main"
transport = "tcp"
address = "127.0.0.1:SIMPORT"
unit_id = 1
poll = "1s"
timeout = "500ms"

  [[modbus.point]]
  name = "voltage_l1"
  table = "input"
  address = 0
  type = "u16"
  scale = 0.1
  unit = "V"

[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 2
poll = "5s"

[[rule]]
name = "overvoltage"
when = "meter-main/voltage_l1 > 260"
  [[rule.then]]
  action = "event"
  args = { kind = "overvoltage", severity = "major", message = "voltage above 260 V" }
"#;

/// A scrape, parsed: family name → (type, help), and every sample line as `name{labels}`.
struct Scrape {
    text: String,
    families: BTreeMap<String, (String, String)>,
    samples: BTreeSet<String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut samples = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                families.entry(name.into()).or_default().1 = help.into();
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line has a type");
                families.entry(name.into()).or_default().0 = kind.into();
            } else if !line.is_empty() && !line.starts_with('#') {
                let end = line.rfind(' ').expect("a sample has a value");
                samples.insert(line[..end].to_string());
            }
        }
        Scrape {
            text: text.to_string(),
            families,
            samples,
        }
    }

    fn has_family(&self, name: &str) -> bool {
        self.families.contains_key(name)
            && self.samples.iter().any(|s| {
                s.strip_prefix(name)
                    .is_some_and(|r| r.is_empty() || r.starts_with(['{', '_']))
            })
    }

    fn assert_series(&self, series: &str) {
        assert!(
            self.samples.contains(series),
            "series {series} missing from a fresh scrape:\n{}",
            self.text
        );
    }
}

/// Every `cabinetd_…` metric name written in `file` (README, docs): documented means exported.
fn documented_names(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("cabinetd_") {
        let start = i + at;
        let mut end = start + "cabinetd_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        let before_ok = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric());
        let name = text[start..end].trim_end_matches('_');
        if before_ok && name.len() > "cabinetd_".len() {
            names.insert(name.to_string());
        }
        i = end;
    }
    names
}

/// The rules of `promtool check metrics` (Prometheus's `promlint`) that a name can break.
fn lint(scrape: &Scrape) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, (kind, help)) in &scrape.families {
        if help.is_empty() {
            problems.push(format!("{name}: no help text"));
        }
        let snake = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !snake {
            problems.push(format!(
                "{name}: metric names should be written in snake_case"
            ));
        }
        let total = name.ends_with("_total");
        match kind.as_str() {
            "counter" if !total => problems.push(format!(
                "{name}: counter metrics should have \"_total\" suffix"
            )),
            "counter" => {}
            "" => problems.push(format!("{name}: no TYPE line")),
            _ if total => problems.push(format!(
                "{name}: non-counter metrics should not have \"_total\" suffix"
            )),
            _ => {}
        }
        if kind != "histogram" && kind != "summary" {
            for suffix in ["_count", "_sum", "_bucket"] {
                if name.ends_with(suffix) {
                    problems.push(format!(
                        "{name}: non-histogram and non-summary metrics should not have \"{suffix}\" suffix"
                    ));
                }
            }
        }
        for abbreviation in [
            "_ms", "_sec", "_secs", "_msec", "_usec", "_kb", "_mb", "_gb",
        ] {
            if name.contains(&format!("{abbreviation}_")) || name.ends_with(abbreviation) {
                problems.push(format!(
                    "{name}: metric names should not contain abbreviated units"
                ));
            }
        }
    }
    problems
}

#[test]
fn a_fresh_daemon_exports_every_series_from_the_first_scrape() {
    let sim = free_port();
    let other_broker = free_port();
    let extra = EXTRA.replace("SIMPORT", &sim.to_string());
    // No broker needed: nothing here depends on the uplink being up, and a fresh scrape must
    // already carry the reconnect counters of both brokers of the failover list.
    let broker = free_port();
    let mut daemon = Daemon::start_edited(broker, &extra, |base| {
        base.replace(
            &format!("broker = \"mqtt://127.0.0.1:{broker}\""),
            &format!(
                "broker = [\"mqtt://127.0.0.1:{broker}\", \"mqtt://localhost:{other_broker}\"]"
            ),
        )
    });
    let (code, body) = daemon.get("/metrics");
    assert_eq!(code, 200);
    let scrape = Scrape::parse(&body);

    for name in SPEC_NAMES {
        assert!(
            scrape.has_family(name),
            "SPEC §4 name {name} missing from a fresh scrape:\n{body}"
        );
    }
    for file in ["README.md", "docs/protocol.md"] {
        for name in documented_names(file) {
            assert!(
                scrape.has_family(&name),
                "{file} names {name}, which a fresh scrape does not have:\n{body}"
            );
        }
    }

    // Per equipment entry: up (0 until it answers), errors and poll durations.
    for (device, protocol) in [("meter-main", "modbus"), ("bus-a", "dali")] {
        let d = format!("device=\"{device}\"");
        scrape.assert_series(&format!(
            "cabinetd_device_up{{{d},protocol=\"{protocol}\"}}"
        ));
        scrape.assert_series(&format!("cabinetd_poll_errors_total{{{d}}}"));
        scrape.assert_series(&format!("cabinetd_poll_duration_seconds_count{{{d}}}"));
    }
    scrape.assert_series("cabinetd_dali_gear_present{bus=\"bus-a\"}");
    scrape.assert_series("cabinetd_dali_lamp_failures{bus=\"bus-a\"}");
    scrape.assert_series("cabinetd_energy_wh_total{device=\"bus-a\"}");
    // Per broker, spelled as everywhere else (`Broker::url`).
    for url in [
        format!("mqtt://127.0.0.1:{broker}"),
        format!("mqtt://localhost:{other_broker}"),
    ] {
        scrape.assert_series(&format!(
            "cabinetd_uplink_reconnects_total{{broker=\"{url}\"}}"
        ));
    }
    for reason in ["corrupt", "missing"] {
        scrape.assert_series(&format!(
            "cabinetd_store_recoveries_total{{reason=\"{reason}\"}}"
        ));
    }
    scrape.assert_series("cabinetd_rule_firings_total{rule=\"overvoltage\"}");
    for stream in ["telemetry", "events", "results"] {
        for name in [
            "cabinetd_outbox_records",
            "cabinetd_published_records_total",
            "cabinetd_evicted_records_total",
        ] {
            scrape.assert_series(&format!("{name}{{stream=\"{stream}\"}}"));
        }
    }
    for mode in ["connected", "autonomous"] {
        scrape.assert_series(&format!("cabinetd_mode{{mode=\"{mode}\"}}"));
    }
    for action in [
        "point.write",
        "light.set",
        "light.release",
        "camera.goto_preset",
        "camera.reboot",
        "camera.sync_time",
        "scene.run",
        "scene.release",
    ] {
        for status in ["succeeded", "failed", "rejected", "expired"] {
            scrape.assert_series(&format!(
                "cabinetd_commands_total{{action=\"{action}\",status=\"{status}\"}}"
            ));
        }
    }
    scrape.assert_series("cabinetd_auth_rejected_total{reason=\"bad_signature\"}");

    let problems = lint(&scrape);
    assert!(
        problems.is_empty(),
        "the scrape is not lint-clean:\n{}",
        problems.join("\n")
    );
    assert!(daemon.stop().success());
}

/// The lint itself catches what it is there for (issue 14 item 12: a gauge named `_total`).
#[test]
fn the_lint_flags_a_gauge_named_like_a_counter() {
    let s = Scrape::parse(
        "# HELP x_energy_wh_total e\n# TYPE x_energy_wh_total gauge\nx_energy_wh_total 1\n\
         # HELP x_errors e\n# TYPE x_errors counter\nx_errors 0\n",
    );
    let problems = lint(&s);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("non-counter"), "{problems:?}");
    assert!(
        problems[1].contains("should have \"_total\""),
        "{problems:?}"
    );
}
