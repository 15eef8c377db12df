//! `cabinetd simulate` as ops use it before pushing a rule set (SPEC §1): each shipped example of
//! `config/rules/` passes `check-config` and, over a hand-written timeline, yields exactly the
//! expected actions and events. Also: usage and config errors and their exit codes.

mod support;

use std::io::Write;
use std::process::{Command, Output};

use serde_json::Value;
use support::*;

fn example(name: &str) -> std::path::PathBuf {
    root().join("config/rules").join(name)
}

fn simulate(files: &[&str], from: &str, to: &str, timeline: Option<&str>) -> Output {
    let mut cmd = Command::new(cabinetd_bin());
    cmd.arg("simulate");
    for f in files {
        cmd.arg("--config").arg(example(f));
    }
    cmd.args(["--from", from, "--to", to]);
    let input = timeline.map(|t| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(t.as_bytes()).unwrap();
        f
    });
    if let Some(f) = &input {
        cmd.arg("--inputs").arg(f.path());
    }
    cmd.output().unwrap()
}

/// The output lines, after checking the run succeeded and every line is JSON in time order.
fn lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let times: Vec<&str> = v.iter().map(|l| l["at"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );
    v
}

/// `"HH:MM:SS TARGET ACTION ARGS BY"` of every action line.
fn actions(v: &[Value]) -> Vec<String> {
    v.iter()
        .filter(|l| l.get("action").is_some())
        .map(|l| {
            for k in ["target", "args", "by", "reason"] {
                assert!(l.get(k).is_some(), "{k} missing: {l}");
            }
            format!(
                "{} {} {} {} {}",
                &l["at"].as_str().unwrap()[11..19],
                l["target"].as_str().unwrap(),
                l["action"].as_str().unwrap(),
                l["args"],
                l["by"].as_str().unwrap()
            )
        })
        .collect()
}

/// `"HH:MM:SS KIND"` of every event line except `control_changed`, plus `data` for the
/// daemon's own kinds.
fn events(v: &[Value]) -> Vec<String> {
    v.iter()
        .filter(|l| l.get("event").is_some() && l["event"] != "control_changed")
        .map(|l| {
            let data = match l["event"].as_str().unwrap() {
                "rule_fired" | "mode_changed" => format!(" {}", l["data"]),
                _ => format!(" {}", l["severity"].as_str().unwrap()),
            };
            format!(
                "{} {}{data}",
                &l["at"].as_str().unwrap()[11..19],
                l["event"].as_str().unwrap()
            )
        })
        .collect()
}

fn check_config(files: &[&str]) {
    let mut cmd = Command::new(cabinetd_bin());
    // The examples name a real cabinet's serial lines: the configuration alone is checked.
    cmd.arg("check-config").arg("--no-file-checks");
    for f in files {
        cmd.arg("--config").arg(example(f));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_example_passes_check_config_alone_and_together() {
    let examples = [
        "building-alarm.toml",
        "uplink-lost.toml",
        "ice-risk.toml",
        "emergency-route.toml",
        "adaptive.toml",
    ];
    for e in examples {
        check_config(&["cabinet.toml", e]);
    }
    let mut all = vec!["cabinet.toml"];
    all.extend(examples);
    check_config(&all);
}

#[test]
fn building_alarm_lights_its_zone_to_full_and_gives_it_back() {
    let v = lines(&simulate(
        &["cabinet.toml", "building-alarm.toml"],
        "2026-12-21T16:00:00Z",
        "2026-12-21T19:00:00Z",
        Some(
            r#"{"at":"2026-12-21T16:00:00Z","point":"building-12/fire_alarm","value":false}
{"at":"2026-12-21T16:00:00Z","point":"building-12/intrusion_alarm","value":false}
{"at":"2026-12-21T18:30:00Z","point":"building-12/intrusion_alarm","value":true}
{"at":"2026-12-21T18:31:00Z","point":"building-12/fire_alarm","value":true}
{"at":"2026-12-21T18:40:00Z","point":"building-12/intrusion_alarm","value":false}
{"at":"2026-12-21T18:45:00Z","point":"building-12/fire_alarm","value":false}
"#,
        ),
    ));
    assert_eq!(
        actions(&v),
        vec![
            r#"16:00:00 all light.set {"level_percent":100} programme"#,
            r#"18:30:00 group:1 light.set {"level_percent":100} rule:building-12-alarm"#,
            // Released at the end of the alarm: the programme's level re-applied.
            r#"18:45:00 group:1 light.set {"level_percent":100} programme"#,
        ]
    );
    assert_eq!(
        events(&v),
        vec![
            r#"18:30:00 rule_fired {"rule":"building-12-alarm","state":"entered"}"#,
            "18:30:00 building_alarm critical",
            r#"18:45:00 rule_fired {"rule":"building-12-alarm","state":"cleared"}"#,
        ]
    );
    let changed: Vec<&Value> = v
        .iter()
        .filter(|l| l["event"] == "control_changed")
        .collect();
    assert_eq!(changed.len(), 2);
    assert_eq!(changed[0]["data"]["target"], "group:1");
    assert_eq!(changed[0]["data"]["to"], "rule:building-12-alarm");
    assert_eq!(changed[1]["data"]["to"], "programme");
    // Who is in charge, at the start and at the end.
    assert_eq!(v[1]["in_charge"]["group:1"], "programme");
    assert_eq!(v.last().unwrap()["in_charge"]["bus-a/0"], "programme");
}

#[test]
fn uplink_lost_falls_back_after_autonomous_after_and_nothing_jumps_on_return() {
    let v = lines(&simulate(
        &["cabinet.toml", "uplink-lost.toml"],
        "2026-12-21T16:00:00Z",
        "2026-12-21T23:00:00Z",
        Some(
            r#"{"at":"2026-12-21T19:00:00Z","uplink":"down"}
{"at":"2026-12-21T19:00:30Z","uplink":"up"}
{"at":"2026-12-21T20:00:00Z","uplink":"down"}
{"at":"2026-12-21T20:30:00Z","uplink":"up"}
"#,
        ),
    ));
    assert_eq!(
        actions(&v),
        vec![
            r#"16:00:00 all light.set {"level_percent":100} programme"#,
            r#"20:01:00 tc-12/plan point.write {"value":1} rule:uplink-lost-traffic"#,
            r#"20:01:00 vms-3/message point.write {"value":0} rule:uplink-lost-sign"#,
            // 22:00 Paris.
            r#"21:00:00 all light.set {"level_percent":70} programme"#,
        ]
    );
    assert_eq!(
        events(&v),
        vec![
            r#"20:01:00 mode_changed {"from":"connected","to":"autonomous"}"#,
            r#"20:01:00 rule_fired {"rule":"uplink-lost-traffic","state":"entered"}"#,
            r#"20:01:00 rule_fired {"rule":"uplink-lost-sign","state":"entered"}"#,
            r#"20:30:00 mode_changed {"from":"autonomous","to":"connected"}"#,
            r#"20:30:00 rule_fired {"rule":"uplink-lost-traffic","state":"cleared"}"#,
            r#"20:30:00 rule_fired {"rule":"uplink-lost-sign","state":"cleared"}"#,
        ]
    );
    let end = &v.last().unwrap()["in_charge"];
    assert_eq!(end["tc-12/plan"], "none");
    assert_eq!(end["vms-3/message"], "none");
}

#[test]
fn ice_risk_after_ten_minutes_with_hysteresis() {
    let timeline = [
        ("20:00", 2.0, 85),
        ("20:10", 0.8, 85),
        // Back above +1 °C for a moment: the 10 minutes start again.
        ("20:15", 1.2, 85),
        ("20:20", 0.9, 86),
        ("20:25", 0.6, 88),
        ("20:30", 0.7, 90),
        // Dithering inside the hysteresis band changes nothing.
        ("20:40", 1.5, 90),
        ("20:45", 0.9, 90),
        ("20:50", 1.9, 75),
        ("21:00", 2.4, 90),
        ("21:10", 0.5, 90),
    ];
    let mut text = String::new();
    for (t, temp, hum) in timeline {
        text.push_str(&format!(
            "2026-12-21T{t}:00Z,weather/road_temp,{temp}\n2026-12-21T{t}:00Z,weather/humidity,{hum}\n"
        ));
    }
    let v = lines(&simulate(
        &["cabinet.toml", "ice-risk.toml"],
        "2026-12-21T19:00:00Z",
        "2026-12-21T21:30:00Z",
        Some(&format!("at,point,value\n{text}")),
    ));
    assert_eq!(
        events(&v),
        vec![
            r#"20:30:00 rule_fired {"rule":"ice-risk","state":"entered"}"#,
            "20:30:00 ice_risk major",
            r#"21:00:00 rule_fired {"rule":"ice-risk","state":"cleared"}"#,
            "21:00:00 ice_risk_over info",
            // Cold and humid again: entered anew 10 minutes later.
            r#"21:20:00 rule_fired {"rule":"ice-risk","state":"entered"}"#,
            "21:20:00 ice_risk major",
        ]
    );
    let ice = v.iter().find(|l| l["event"] == "ice_risk").unwrap();
    assert_eq!(ice["source"], "weather");
    assert_eq!(ice["by"], "rule:ice-risk");
}

#[test]
fn emergency_route_scene_from_the_fire_station_and_from_the_central_post() {
    let v = lines(&simulate(
        &["cabinet.toml", "emergency-route.toml"],
        "2026-12-21T20:00:00Z",
        "2026-12-21T22:00:00Z",
        Some(
            r#"{"at":"2026-12-21T20:30:00Z","point":"fire-station/call_route_a","value":true}
{"at":"2026-12-21T20:31:00Z","point":"fire-station/call_route_a","value":false}
{"at":"2026-12-21T21:10:00Z","command":{"action":"scene.run","args":{"scene":"emergency-route-a","hold_s":300}}}
{"at":"2026-12-21T21:12:00Z","command":{"action":"scene.run","args":{"scene":"route-b"}}}
"#,
        ),
    ));
    assert_eq!(
        actions(&v),
        vec![
            r#"20:00:00 all light.set {"level_percent":100} programme"#,
            r#"20:30:00 group:2 light.set {"level_percent":100} scene:emergency-route-a"#,
            r#"20:30:00 tc-12/plan point.write {"value":7} scene:emergency-route-a"#,
            r#"20:30:00 vms-3/message point.write {"value":12} scene:emergency-route-a"#,
            // The scene's own hold (15 min), not the call's length.
            r#"20:45:00 group:2 light.set {"level_percent":100} programme"#,
            // 22:00 Paris.
            r#"21:00:00 all light.set {"level_percent":70} programme"#,
            r#"21:10:00 group:2 light.set {"level_percent":100} scene:emergency-route-a"#,
            r#"21:10:00 tc-12/plan point.write {"value":7} scene:emergency-route-a"#,
            r#"21:10:00 vms-3/message point.write {"value":12} scene:emergency-route-a"#,
            r#"21:15:00 group:2 light.set {"level_percent":70} programme"#,
        ]
    );
    // The central post's run: every action carries its command.
    let central: Vec<&Value> = v.iter().filter(|l| l["command"] == "line-3").collect();
    assert_eq!(central.len(), 3);
    // Each revert hands control back: the points to nobody (they keep their values).
    let to_none: Vec<&str> = v
        .iter()
        .filter(|l| l["event"] == "control_changed" && l["data"]["to"] == "none")
        .map(|l| l["data"]["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        to_none,
        ["tc-12/plan", "vms-3/message", "tc-12/plan", "vms-3/message"]
    );
    let rejected = v.iter().find(|l| l.get("rejected").is_some()).unwrap();
    assert_eq!(rejected["rejected"], "line-4");
    assert!(rejected["reason"].as_str().unwrap().contains("args.scene"));
}

#[test]
fn a_presence_burst_raises_the_street_holds_and_fades_back() {
    let v = lines(&simulate(
        &["cabinet.toml", "adaptive.toml"],
        "2026-12-21T22:00:00Z",
        "2026-12-21T23:00:00Z",
        Some(
            r#"{"at":"2026-12-21T22:00:00Z","point":"counter-7/vehicles_per_h","value":0}
{"at":"2026-12-21T22:10:00Z","point":"counter-7/vehicles_per_h","value":520}
{"at":"2026-12-21T22:11:00Z","point":"counter-7/vehicles_per_h","value":60}
{"at":"2026-12-21T22:12:00Z","point":"counter-7/vehicles_per_h","value":0}
"#,
        ),
    ));
    assert_eq!(
        actions(&v),
        vec![
            r#"22:00:00 all light.set {"level_percent":70} programme"#,
            r#"22:10:00 group:2 light.set {"level_percent":75} adaptive:rue-darcy"#,
            // Held 5 minutes after the traffic that justified 75 %, then the flow seen last
            // (none) lets it fade back to the programme.
            r#"22:15:00 group:2 light.set {"fade_s":30,"level_percent":70} programme"#,
        ]
    );
}

#[test]
fn usage_and_config_errors_have_their_exit_codes() {
    let two = |out: &Output, needle: &str| {
        assert_eq!(
            out.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{needle} not in {err}");
    };
    let files = &["cabinet.toml", "ice-risk.toml"];
    two(
        &simulate(files, "yesterday", "2026-12-21T23:00:00Z", None),
        "--from \"yesterday\"",
    );
    two(
        &simulate(files, "2026-12-21T23:00:00Z", "2026-12-21T22:00:00Z", None),
        "must be after",
    );
    two(
        &simulate(
            files,
            "2026-12-21T22:00:00Z",
            "2026-12-21T23:00:00Z",
            Some("{\"at\":\"2026-12-21T22:00:00Z\",\"point\":\"weather/road_temp\",\"value\":1}\n{\"at\":\"2026-12-21T22:00:00Z\",\"point\":\"weather/temp\",\"value\":1}\n"),
        ),
        ":2: unknown point \"weather/temp\"",
    );
    let out = simulate(
        &["ice-risk.toml"],
        "2026-12-21T22:00:00Z",
        "2026-12-21T23:00:00Z",
        None,
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown point"));
    // Without a timeline: the programme alone.
    let v = lines(&simulate(
        files,
        "2026-12-21T12:00:00Z",
        "2026-12-22T12:00:00Z",
        None,
    ));
    // Dusk and dawn to ten minutes (the astronomical clock's precision is its own business).
    let got: Vec<String> = actions(&v)
        .iter()
        .map(|a| format!("{}{}", &a[..4], &a[8..]))
        .collect();
    assert_eq!(
        got,
        vec![
            r#"12:0 all light.set {"level_percent":0} programme"#,
            r#"15:5 all light.set {"level_percent":100} programme"#,
            r#"21:0 all light.set {"level_percent":70} programme"#,
            r#"04:0 all light.set {"level_percent":100} programme"#,
            r#"07:2 all light.set {"level_percent":0} programme"#,
        ]
    );
}
