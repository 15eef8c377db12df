//! The cabinet acting on its own, through the daemon binary with real peers (issue 10
//! acceptance): pymodbus devices driven through their control channel, the ATX DALI HAT
//! emulator (python-dali fake gear), Mosquitto and the central post's commands over MQTT.
//! Every example of `config/rules/` is loaded as shipped (`--config config/rules/X.toml`).
//! Waits are on conditions with deadlines; nothing sleeps to synchronise.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cabinetd_dali::percent_to_arc;
use serde_json::{json, Value};
use support::*;

const CMD: &str = "cabinets/v1/test-cab/cmd";
const LONG: Duration = Duration::from_secs(30);

/// A longitude where it is around local solar midnight now (the programme's night), and the
/// time zone that goes with it (UTC: the tests do not depend on DST).
fn longitude_at_midnight() -> f64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let utc_hours = (secs % 86_400) as f64 / 3600.0;
    let lon = -utc_hours * 15.0;
    if lon < -180.0 {
        lon + 360.0
    } else {
        lon
    }
}

fn at_night(base: String) -> String {
    base.replace(
        "longitude = 5.0415",
        &format!("longitude = {:.4}", longitude_at_midnight()),
    )
    .replace("Europe/Paris", "UTC")
}

fn example(name: &str) -> String {
    root().join("config/rules").join(name).display().to_string()
}

/// Starts `cabinetd run` on the base config edited by `edit` plus `extra`, with `args` (more
/// `--config` files) and `env`; the log goes to the state directory.
fn daemon(
    broker: u16,
    extra: &str,
    edit: impl FnOnce(String) -> String,
    args: &[String],
    env: &[(&str, String)],
) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let http_port = free_port();
    let config = dir.path().join("cabinetd.toml");
    let base = edit(base_config(dir.path(), broker, http_port));
    std::fs::write(&config, format!("{base}\n{extra}")).unwrap();
    let log = dir.path().join("daemon.log");
    let mut cmd = Command::new(cabinetd_bin());
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut d = Daemon {
        proc: ChildGuard::spawn("cabinetd", &mut cmd),
        http: format!("127.0.0.1:{http_port}"),
        config,
        dir,
        log: Some(log),
        args: args.to_vec(),
    };
    d.wait_ready();
    d
}

fn records(probe: &MqttProbe, kind: &str) -> Vec<Value> {
    probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == kind)
        .collect()
}

fn fired(probe: &MqttProbe, rule: &str, state: &str) -> usize {
    records(probe, "rule_fired")
        .iter()
        .filter(|r| r["data"]["rule"] == rule && r["data"]["state"] == state)
        .count()
}

fn result_of(probe: &MqttProbe, id: &str) -> Value {
    wait_until(&format!("result of {id}"), LONG, || {
        probe
            .records("/cmd/result")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["id"] == id)
    })
}

fn wait_levels(hat: &mut AtxEmulator, addrs: &[u8], arc: u8, what: &str) {
    wait_until(what, LONG, || {
        addrs
            .iter()
            .all(|a| hat.state(*a)["level"] == arc)
            .then_some(())
    });
}

fn rule_state(d: &Daemon, rule: &str) -> Value {
    d.status()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .map(|r| r["state"].clone())
        .unwrap_or(Value::Null)
}

fn dali(port: &str, groups: &str) -> String {
    format!(
        "[[dali]]\nname = \"bus-a\"\ninterface = \"atx-hat\"\nport = \"{port}\"\npoll = \"300ms\"\n{groups}\n"
    )
}

fn modbus(name: &str, port: u16, points: &str) -> String {
    format!(
        "[[modbus]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\npoll = \"200ms\"\ntimeout = \"1s\"\n{points}\n"
    )
}

const PROGRAMME_70: &str = r#"
[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 70
"#;

/// A pymodbus input crosses a rule's threshold for longer than `for`: the write on another
/// pymodbus device and the DALI level happen once; jitter inside the hysteresis does nothing;
/// crossing back clears once. With them, the building-alarm and ice-risk examples.
#[test]
fn a_threshold_held_for_its_for_acts_once_and_jitter_in_the_hysteresis_does_nothing() {
    let mut hat = AtxEmulator::spawn(&["--gear", "4"]);
    let mut sensor = ModbusPeer::spawn(&json!({"input": [{"address": 0, "raw": 20}]}));
    let actuator = ModbusPeer::spawn(&json!({"holding": [{"address": 0, "raw": 0}]}));
    let mut building =
        ModbusPeer::spawn(&json!({"discrete": [{"address": 0, "raw": [false, false]}]}));
    let mut weather = ModbusPeer::spawn(&json!({"input": [{"address": 0, "raw": [50, 500]}]}));
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let groups = "  [[dali.group]]\n  number = 1\n  members = [0, 1]\n  [[dali.group]]\n  number = 2\n  members = [2, 3]\n";
    let extra = format!(
        r#"{}{}{}{}{}{PROGRAMME_70}
[[rule]]
name = "hot"
when = "sensor/t > 50"
for = "3s"
clear_when = "sensor/t < 40"
  [[rule.then]]
  action = "point.write"
  args = {{ point = "actuator/plan", value = 7 }}
  [[rule.then]]
  action = "light.set"
  args = {{ target = "group:2", level_percent = 30 }}
  [[rule.on_clear]]
  action = "point.write"
  args = {{ point = "actuator/plan", value = 1 }}
"#,
        dali(&hat.port, groups),
        modbus("sensor", sensor.port, "  [[modbus.point]]\n  name = \"t\"\n  table = \"input\"\n  address = 0\n"),
        modbus("actuator", actuator.port, "  [[modbus.point]]\n  name = \"plan\"\n  table = \"holding\"\n  address = 0\n  writable = true\n  min = 0\n  max = 15\n"),
        modbus("building-12", building.port, "  [[modbus.point]]\n  name = \"fire_alarm\"\n  table = \"discrete\"\n  address = 0\n  [[modbus.point]]\n  name = \"intrusion_alarm\"\n  table = \"discrete\"\n  address = 1\n"),
        modbus("weather", weather.port, "  [[modbus.point]]\n  name = \"road_temp\"\n  table = \"input\"\n  address = 0\n  type = \"i16\"\n  scale = 0.1\n  [[modbus.point]]\n  name = \"humidity\"\n  table = \"input\"\n  address = 1\n  scale = 0.1\n"),
    );
    let args = vec![
        "--config".to_string(),
        example("building-alarm.toml"),
        "--config".to_string(),
        example("ice-risk.toml"),
    ];
    let d = daemon(broker.port, &extra, at_night, &args, &[]);
    let (p70, p30, p100) = (
        percent_to_arc(70.0),
        percent_to_arc(30.0),
        percent_to_arc(100.0),
    );
    wait_levels(&mut hat, &[0, 1, 2, 3], p70, "the programme's level");
    assert_eq!(rule_state(&d, "hot"), "cleared", "{}", d.status()["rules"]);

    // Above the threshold: pending, then entered once `for` has passed.
    let crossed = Instant::now();
    sensor.set("input", 0, 60);
    wait_until("hot pending or entered", LONG, || {
        (rule_state(&d, "hot") != "cleared").then_some(())
    });
    let (written_at, _, values) = wait_until("the plan written", LONG, || {
        actuator.writes().first().cloned()
    });
    assert_eq!(values, vec![7]);
    assert!(
        written_at - crossed >= Duration::from_millis(2800),
        "written {:?} after the crossing, before `for`",
        written_at - crossed
    );
    wait_levels(&mut hat, &[2, 3], p30, "group 2 at the rule's level");
    assert_eq!(hat.state(0)["level"], p70, "group 1 untouched");
    wait_until("rule_fired entered", LONG, || {
        (fired(&probe, "hot", "entered") == 1).then_some(())
    });

    // Jitter inside the hysteresis (below `when`, above `clear_when`): nothing.
    for v in [45, 55, 45, 52, 41] {
        sensor.set("input", 0, v);
        let seen = sensor.get("input", 0);
        assert_eq!(seen, v);
        // A few polls see each value.
        let t = Instant::now();
        wait_until("polls", LONG, || {
            (t.elapsed() > Duration::from_millis(600)).then_some(())
        });
    }
    assert_eq!(rule_state(&d, "hot"), "entered");
    assert_eq!(actuator.writes().len(), 1, "{:?}", actuator.writes());

    // Back below clear_when: cleared once, on_clear's write, group 2 back to the programme.
    sensor.set("input", 0, 30);
    wait_until("the on_clear write", LONG, || {
        (actuator.writes().len() == 2).then_some(())
    });
    assert_eq!(actuator.writes()[1].2, vec![1]);
    wait_levels(&mut hat, &[2, 3], p70, "group 2 back to the programme");
    wait_until("rule_fired cleared", LONG, || {
        (fired(&probe, "hot", "cleared") == 1).then_some(())
    });
    let changed = records(&probe, "control_changed");
    assert!(
        changed.iter().any(|e| e["data"] == json!({"target": "group:2", "from": "programme", "to": "rule:hot", "by": "rule:hot"})),
        "{changed:#?}"
    );
    assert!(
        changed.iter().any(|e| e["data"]["target"] == "group:2"
            && e["data"]["from"] == "rule:hot"
            && e["data"]["to"] == "programme"),
        "{changed:#?}"
    );
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("cabinetd_rule_firings_total{rule=\"hot\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cabinetd_rule_firings_total{rule=\"ice-risk\"} 0"),
        "{metrics}"
    );

    // config/rules/building-alarm.toml: the fire alarm lights zone 1 to full, at once.
    building.set("discrete", 0, 1);
    wait_levels(&mut hat, &[0, 1], p100, "zone 1 at full");
    let alarm = wait_until("building_alarm", LONG, || {
        records(&probe, "building_alarm").into_iter().next()
    });
    assert_eq!(
        (alarm["severity"].clone(), alarm["source"].clone()),
        (json!("critical"), json!("building-12"))
    );
    assert_eq!(hat.state(2)["level"], p70);
    building.set("discrete", 0, 0);
    wait_levels(&mut hat, &[0, 1], p70, "zone 1 back to the programme");

    // config/rules/ice-risk.toml: below +1 °C and above 80 % is pending (for 10 min); the air
    // drying below 70 % before then clears it without an event.
    weather.set("input", 0, 5);
    weather.set("input", 1, 900);
    wait_until("ice-risk pending", LONG, || {
        (rule_state(&d, "ice-risk") == "pending").then_some(())
    });
    weather.set("input", 1, 650);
    wait_until("ice-risk cleared", LONG, || {
        (rule_state(&d, "ice-risk") == "cleared").then_some(())
    });
    assert!(records(&probe, "ice_risk").is_empty());
    assert_eq!(fired(&probe, "hot", "entered"), 1, "no second entry");
    let mut d = d;
    assert!(d.stop().success());
}

/// Broker stopped longer than `autonomous_after`: `mode_changed` → autonomous, the
/// autonomous-only rules of config/rules/uplink-lost.toml write the traffic controller's plan and
/// the message sign; broker back: connected, nothing replayed twice, events in order.
#[test]
fn a_lost_broker_turns_the_cabinet_autonomous_and_its_return_connected() {
    let tc = ModbusPeer::spawn(&json!({"holding": [{"address": 0, "raw": 3}]}));
    let vms = ModbusPeer::spawn(&json!({"holding": [{"address": 0, "raw": 5}]}));
    let mut broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "{}{}",
        modbus("tc-12", tc.port, "  [[modbus.point]]\n  name = \"plan\"\n  table = \"holding\"\n  address = 0\n  writable = true\n  min = 0\n  max = 15\n"),
        modbus("vms-3", vms.port, "  [[modbus.point]]\n  name = \"message\"\n  table = \"holding\"\n  address = 0\n  writable = true\n  min = 0\n  max = 255\n"),
    );
    let args = vec!["--config".to_string(), example("uplink-lost.toml")];
    let mut d = daemon(
        broker.port,
        &extra,
        |b| {
            b.replace(
                "keep_alive = \"5s\"",
                "keep_alive = \"5s\"\nautonomous_after = \"3s\"",
            )
        },
        &args,
        &[],
    );
    wait_until("connected", LONG, || {
        (d.status()["uplink"]["connected"] == true).then_some(())
    });
    assert_eq!(d.status()["mode"], "connected");
    let online = wait_until("the retained online status", LONG, || {
        probe.on("/status").last().map(|m| m.json())
    });
    assert_eq!(online["mode"], "connected");

    broker.stop();
    let lost = Instant::now();
    wait_until("autonomous", LONG, || {
        (d.status()["mode"] == "autonomous").then_some(())
    });
    assert!(
        lost.elapsed() >= Duration::from_secs(2),
        "{:?}",
        lost.elapsed()
    );
    let (_, metrics) = d.get("/metrics");
    assert!(
        metrics.contains("cabinetd_mode{mode=\"autonomous\"} 1"),
        "{metrics}"
    );
    wait_until("the fixed-time plan written", LONG, || {
        tc.writes().first().map(|w| w.2.clone())
    });
    assert_eq!(tc.writes()[0].2, vec![1]);
    wait_until("the default message written", LONG, || {
        vms.writes().first().map(|w| w.2.clone())
    });
    assert_eq!(vms.writes()[0].2, vec![0]);

    broker.start_again();
    wait_until("connected again", LONG, || {
        (d.status()["mode"] == "connected").then_some(())
    });
    wait_until("the cleared rules reported", LONG, || {
        (fired(&probe, "uplink-lost-traffic", "cleared") == 1).then_some(())
    });
    // In order: the outage's events first, then the return's.
    let seq_of = |kind: &str, pred: &dyn Fn(&Value) -> bool| -> u64 {
        records(&probe, kind)
            .iter()
            .find(|r| pred(r))
            .and_then(|r| r["seq"].as_u64())
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let auto = seq_of("mode_changed", &|r| r["data"]["to"] == "autonomous");
    let entered = seq_of("rule_fired", &|r| {
        r["data"] == json!({"rule": "uplink-lost-traffic", "state": "entered"})
    });
    let back = seq_of("mode_changed", &|r| r["data"]["to"] == "connected");
    let cleared = seq_of("rule_fired", &|r| {
        r["data"] == json!({"rule": "uplink-lost-traffic", "state": "cleared"})
    });
    assert!(
        auto < entered && entered < back && back < cleared,
        "{auto} {entered} {back} {cleared}"
    );
    // Nothing replayed twice, nothing written twice.
    let (_, dups) = seq_gaps(&published_seqs(&probe, "/events"));
    assert!(dups.is_empty(), "events published twice: {dups:?}");
    assert_eq!(records(&probe, "mode_changed").len(), 2);
    assert_eq!(tc.writes().len(), 1, "{:?}", tc.writes());
    // The retained status says connected again.
    wait_until("online status connected", LONG, || {
        probe
            .on("/status")
            .last()
            .map(|m| m.json())
            .filter(|s| s["online"] == true && s["mode"] == "connected")
    });
    assert!(d.stop().success());
}

/// `scene.run` with `hold_s` from the central post over MQTT: every target set, one
/// `control_changed` per target, reverted after the hold; a restart in the middle keeps the
/// scene and its deadline (config/rules/emergency-route.toml, with its fire-station rule).
#[test]
fn a_central_scene_with_hold_survives_a_restart_and_reverts_at_its_deadline() {
    let mut hat = AtxEmulator::spawn(&["--gear", "6"]);
    let tc = ModbusPeer::spawn(&json!({"holding": [{"address": 0, "raw": 3}]}));
    let vms = ModbusPeer::spawn(&json!({"holding": [{"address": 0, "raw": 5}]}));
    let mut station = ModbusPeer::spawn(&json!({"discrete": [{"address": 0, "raw": [false]}]}));
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra = format!(
        "{}{}{}{}{PROGRAMME_70}",
        dali(&hat.port, "  [[dali.group]]\n  number = 2\n  members = [4, 5]\n"),
        modbus("tc-12", tc.port, "  [[modbus.point]]\n  name = \"plan\"\n  table = \"holding\"\n  address = 0\n  writable = true\n  min = 0\n  max = 15\n"),
        modbus("vms-3", vms.port, "  [[modbus.point]]\n  name = \"message\"\n  table = \"holding\"\n  address = 0\n  writable = true\n  min = 0\n  max = 255\n"),
        modbus("fire-station", station.port, "  [[modbus.point]]\n  name = \"call_route_a\"\n  table = \"discrete\"\n  address = 0\n"),
    );
    let args = vec!["--config".to_string(), example("emergency-route.toml")];
    let mut d = daemon(broker.port, &extra, at_night, &args, &[]);
    let (p70, p100) = (percent_to_arc(70.0), percent_to_arc(100.0));
    wait_levels(&mut hat, &[4, 5], p70, "the programme's level");
    wait_until("connected", LONG, || {
        (d.status()["uplink"]["connected"] == true).then_some(())
    });
    let cmd = json!({"id": "s1", "action": "scene.run",
        "args": {"scene": "emergency-route-a", "hold_s": 25},
        "expires_at": "2099-01-01T00:00:00Z"});
    probe.publish(CMD, cmd.to_string().as_bytes(), false);
    assert_eq!(result_of(&probe, "s1")["status"], "succeeded");
    wait_until("the green wave plan", LONG, || {
        (tc.writes().last().map(|w| w.2.clone()) == Some(vec![7])).then_some(())
    });
    wait_until("the route message", LONG, || {
        (vms.writes().last().map(|w| w.2.clone()) == Some(vec![12])).then_some(())
    });
    wait_levels(&mut hat, &[4, 5], p100, "rue Darcy at full");
    assert_eq!(
        hat.state(0)["level"],
        p70,
        "outside the route: the programme"
    );
    let to_scene = |probe: &MqttProbe| -> Vec<String> {
        let mut v: Vec<String> = records(probe, "control_changed")
            .iter()
            .filter(|e| e["data"]["to"] == "scene:emergency-route-a")
            .map(|e| e["data"]["target"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    wait_until("control_changed for every target", LONG, || {
        (to_scene(&probe) == ["group:2", "tc-12/plan", "vms-3/message"]).then_some(())
    });
    let st = d.status();
    assert_eq!(st["scenes"]["emergency-route-a"], json!(["central"]));
    assert_eq!(st["control"]["group:2"], "scene:emergency-route-a");
    let until = st["holds"][0]["until"].as_str().unwrap().to_string();
    let deadline: jiff::Timestamp = until.parse().unwrap();

    // A restart in the middle: the scene and its deadline are still there.
    assert!(d.stop().success());
    d.restart();
    let st = d.status();
    assert_eq!(
        st["scenes"]["emergency-route-a"],
        json!(["central"]),
        "{st:#}"
    );
    let after: jiff::Timestamp = st["holds"][0]["until"].as_str().unwrap().parse().unwrap();
    assert!(
        (after - deadline).as_secs().abs() <= 1,
        "deadline {until} became {after}"
    );
    wait_levels(&mut hat, &[4, 5], p100, "still at full after the restart");

    // At the deadline: reverted, each target to whoever was in charge before.
    wait_until("the scene released", Duration::from_secs(60), || {
        d.status()["scenes"]
            .as_object()
            .is_some_and(|s| s.is_empty())
            .then_some(())
    });
    assert!(jiff::Timestamp::now() >= deadline - jiff::SignedDuration::from_secs(1));
    wait_levels(&mut hat, &[4, 5], p70, "rue Darcy back to the programme");
    let st = d.status();
    assert_eq!(st["control"]["group:2"], "programme");
    assert_eq!(
        st["control"]["tc-12/plan"], "none",
        "nobody else: it keeps its value"
    );
    wait_until("control_changed back", LONG, || {
        records(&probe, "control_changed")
            .into_iter()
            .find(|e| e["data"]["target"] == "group:2" && e["data"]["to"] == "programme")
    });

    // The fire station's call runs the same scene from the rule (its own 15 min hold).
    let writes = tc.writes().len();
    station.set("discrete", 0, 1);
    wait_until("the green wave from the rule", LONG, || {
        (tc.writes().len() > writes).then_some(())
    });
    assert_eq!(tc.writes().last().unwrap().2, vec![7]);
    wait_until("run by the rule", LONG, || {
        (d.status()["scenes"]["emergency-route-a"] == json!(["rule:fire-station-call"]))
            .then_some(())
    });
    station.set("discrete", 0, 0);
    wait_until("the rule cleared", LONG, || {
        (rule_state(&d, "fire-station-call") == "cleared").then_some(())
    });
    // The scene holds for its own 15 min whatever the call does meanwhile.
    assert_eq!(
        d.status()["scenes"]["emergency-route-a"],
        json!(["rule:fire-station-call"])
    );
    assert!(d.stop().success());
}

fn write_offset(file: &Path, secs: f64) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{secs}\n")).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// The programme's level for the daemon's config at `wall`.
fn programme_arc(config: &Path, wall: jiff::Timestamp) -> u8 {
    let cfg = cabinetd::config::load_files(&[config.to_path_buf()]).unwrap();
    let p = cabinetd::lighting::Programme::from_config(&cfg).unwrap();
    percent_to_arc(
        p.level_at(&cabinetd::light::LightTarget::All, wall)
            .unwrap(),
    )
}

/// A wall clock stepped ±6 h and reset to 1970 (the test hook `CABINETD_TEST_CLOCK_OFFSET_FILE`):
/// `clock_jump` each time, the programme decided afresh for the new time (no night replayed),
/// `clock_untrusted` in 1970 with the levels held until the clock is set again.
#[test]
fn clock_steps_are_reported_replay_nothing_and_1970_holds_the_levels() {
    let mut hat = AtxEmulator::spawn(&["--gear", "2"]);
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let offset_dir = tempfile::tempdir().unwrap();
    let offset = offset_dir.path().join("clock-offset");
    write_offset(&offset, 0.0);
    let programme = r#"
[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "all"
at = "dusk+2h"
level_percent = 80
[[lighting.step]]
target = "all"
at = "dawn-2h"
level_percent = 60
"#;
    let extra = format!("{}{programme}", dali(&hat.port, ""));
    let env = [(
        "CABINETD_TEST_CLOCK_OFFSET_FILE",
        offset.display().to_string(),
    )];
    let mut d = daemon(broker.port, &extra, at_night, &[], &env);
    let now_arc = programme_arc(&d.config, jiff::Timestamp::now());
    wait_levels(&mut hat, &[0, 1], now_arc, "the programme's level now");
    let jumps = |probe: &MqttProbe| -> Vec<f64> {
        records(probe, "clock_jump")
            .iter()
            .map(|r| r["data"]["offset_s"].as_f64().unwrap())
            .collect()
    };

    for (step, shift) in [(1, 21_600.0), (2, 0.0)] {
        write_offset(&offset, shift);
        let got = wait_until("clock_jump", LONG, || {
            let j = jumps(&probe);
            (j.len() == step).then(|| j[step - 1])
        });
        let want = if step == 1 { 21_600.0 } else { -21_600.0 };
        assert!((got - want).abs() < 5.0, "offset_s {got}, want {want}");
        // Decided afresh for the new time: the level the programme wants then, directly —
        // no step of the hours in between is played (the gear only ever shows the level before
        // and the level after).
        let old = hat.state(0)["level"].as_u64().unwrap() as u8;
        let published = levels_of(&probe, "bus-a/0/level").len();
        let wall = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(shift as i64);
        let arc = programme_arc(&d.config, wall);
        wait_levels(
            &mut hat,
            &[0, 1],
            arc,
            "the programme's level for the new time",
        );
        let t = Instant::now();
        wait_until("a few polls", LONG, || {
            (t.elapsed() > Duration::from_secs(1)).then_some(())
        });
        for l in &levels_of(&probe, "bus-a/0/level")[published..] {
            let a = percent_to_arc(*l);
            assert!(
                a == old || a == arc,
                "level {l} % published between {old} and {arc}"
            );
        }
    }
    assert!(records(&probe, "clock_untrusted").is_empty());

    // Reset to 1970: a step, untrusted, the levels held.
    let before = hat.state(0)["level"].clone();
    let now = jiff::Timestamp::now().as_second() as f64;
    write_offset(&offset, -now + 3600.0);
    wait_until("clock_untrusted", LONG, || {
        records(&probe, "clock_untrusted").into_iter().next()
    });
    wait_until("the third clock_jump", LONG, || {
        (jumps(&probe).len() == 3).then_some(())
    });
    assert!(jumps(&probe)[2] < -1.7e9);
    assert_eq!(d.status()["clock_trusted"], false);
    let text = Command::new(cabinetd_bin())
        .args(["status", "--http", &d.http])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("UNTRUSTED"));
    // Held: several programme evaluations later, nothing moved.
    let t = Instant::now();
    wait_until("three seconds of untrusted clock", LONG, || {
        (t.elapsed() > Duration::from_secs(3)).then_some(())
    });
    assert_eq!(hat.state(0)["level"], before);
    // The clock is set again: trusted, a step the other way, the programme goes on.
    write_offset(&offset, 0.0);
    wait_until("trusted again", LONG, || {
        (d.status()["clock_trusted"] == true).then_some(())
    });
    wait_until("the fourth clock_jump", LONG, || {
        (jumps(&probe).len() == 4).then_some(())
    });
    assert!(jumps(&probe)[3] > 1.7e9);
    assert_eq!(records(&probe, "clock_untrusted").len(), 1);
    assert!(d.log_text().contains("TEST HOOK"), "the hook says it is on");
    assert!(d.stop().success());
}

/// One DALI gear's level over time, from the telemetry the daemon published (percent).
fn levels_of(probe: &MqttProbe, point: &str) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for r in point_records(probe, point) {
        if let Some(v) = r["value"].as_f64() {
            if out.last() != Some(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// `cabinetd simulate` of a presence burst and the same timeline through the daemon give the
/// same DALI levels (usage-adaptive lighting: raised, held, faded back); and
/// config/rules/adaptive.toml raises its group through the daemon.
#[test]
fn simulate_and_the_daemon_give_the_same_levels_for_a_presence_burst() {
    let mut hat = AtxEmulator::spawn(&["--gear", "8"]);
    let mut counter = ModbusPeer::spawn(&json!({"input": [{"address": 0, "raw": 0}]}));
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let cabinet = format!(
        "{}{}{PROGRAMME_70}",
        dali(
            &hat.port,
            "  [[dali.group]]\n  number = 2\n  members = [4, 5, 6, 7]\n"
        ),
        modbus(
            "counter-7",
            counter.port,
            "  [[modbus.point]]\n  name = \"vehicles_per_h\"\n  table = \"input\"\n  address = 0\n"
        ),
    );
    let burst = r#"
[[lighting.adaptive]]
name = "burst"
target = "group:2"
usage = "counter-7/vehicles_per_h"
hold = "4s"
fade = "1s"
"#;
    let mut d = daemon(
        broker.port,
        &format!("{cabinet}{burst}"),
        at_night,
        &[],
        &[],
    );
    let p70 = percent_to_arc(70.0);
    wait_levels(&mut hat, &[4], p70, "the programme's level");
    // The timeline: traffic of 450 veh/h for 2 s, then none.
    let t0 = jiff::Timestamp::now();
    let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
    counter.set("input", 0, 450);
    let t = Instant::now();
    wait_until("the raise", LONG, || {
        (hat.state(4)["level"] == percent_to_arc(75.0)).then_some(())
    });
    wait_until("two seconds of traffic", LONG, || {
        (t.elapsed() >= Duration::from_secs(2)).then_some(())
    });
    counter.set("input", 0, 0);
    wait_levels(&mut hat, &[4, 5, 6, 7], p70, "faded back to the programme");
    let daemon_levels = wait_until("the levels published", LONG, || {
        let l = levels_of(&probe, "bus-a/4/level");
        (l.len() >= 3).then_some(l)
    });
    assert!(d.stop().success());

    // The same timeline through `cabinetd simulate`, on the same configuration.
    let timeline = d.dir.path().join("timeline.jsonl");
    let line = |s: i64, v: u32| {
        format!(
            "{{\"at\":\"{}\",\"point\":\"counter-7/vehicles_per_h\",\"value\":{v}}}\n",
            at(s)
        )
    };
    std::fs::write(
        &timeline,
        format!("{}{}{}", line(-1, 0), line(0, 450), line(2, 0)),
    )
    .unwrap();
    let out = Command::new(cabinetd_bin())
        .args(["simulate", "--config"])
        .arg(&d.config)
        .args([
            "--from",
            &at(-1).to_string(),
            "--to",
            &at(12).to_string(),
            "--inputs",
        ])
        .arg(&timeline)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sim_levels: Vec<f64> = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let covers = ["all", "group:2", "bus-a/4"].contains(&v["target"].as_str().unwrap_or(""));
        if v["action"] == "light.set" && covers {
            // What the gear reports back: the level quantised by the DALI curve.
            let lvl = v["args"]["level_percent"].as_f64().unwrap();
            let q = cabinetd_dali::arc_to_percent(percent_to_arc(lvl)).unwrap();
            let q = (q * 100.0).round() / 100.0;
            if sim_levels.last() != Some(&q) {
                sim_levels.push(q);
            }
        }
    }
    let daemon_tail: Vec<f64> = daemon_levels
        .iter()
        .map(|x| (x * 100.0).round() / 100.0)
        .collect();
    assert_eq!(
        sim_levels, daemon_tail,
        "simulate {sim_levels:?} vs the daemon's bus-a/4/level {daemon_levels:?}"
    );
    assert_eq!(
        sim_levels.len(),
        3,
        "programme, raised, back: {sim_levels:?}"
    );

    // config/rules/adaptive.toml as shipped: the same traffic raises rue Darcy to 75 % (its
    // hold is 5 min: the fade back is the simulator's to show).
    let mut d = daemon(
        broker.port,
        &cabinet,
        at_night,
        &["--config".to_string(), example("adaptive.toml")],
        &[],
    );
    wait_levels(&mut hat, &[4], p70, "the programme's level");
    counter.set("input", 0, 1200);
    wait_levels(
        &mut hat,
        &[4, 5, 6, 7],
        percent_to_arc(100.0),
        "raised to full by heavy traffic",
    );
    assert_eq!(d.status()["control"]["group:2"], "adaptive:rue-darcy");
    assert!(d.stop().success());
}
