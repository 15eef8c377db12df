//! DALI street lighting through the whole daemon: python-dali fake gear behind the emulated ATX
//! DALI HAT on a pty, the cabinetd binary, Mosquitto, commands and events over MQTT, and the
//! technician's commissioning command.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::*;

const CMD: &str = "cabinets/v1/test-cab/cmd";

fn bus_config(port: &str) -> String {
    format!(
        r#"
[[dali]]
name = "bus-a"
interface = "atx-hat"
port = "{port}"
poll = "500ms"

  [[dali.group]]
  number = 0
  members = [0, 1]
  power_on_level = 100
  system_failure_level = 80
"#
    )
}

fn result_of(probe: &MqttProbe, id: &str) -> serde_json::Value {
    wait_until(&format!("result of {id}"), Duration::from_secs(30), || {
        probe
            .records("/cmd/result")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["id"] == id)
    })
}

fn events(probe: &MqttProbe, kind: &str, source: &str) -> Vec<serde_json::Value> {
    probe
        .records("/events")
        .into_iter()
        .map(|(r, _)| r)
        .filter(|r| r["kind"] == kind && r["source"] == source)
        .collect()
}

#[test]
fn luminaires_are_supervised_commanded_and_programmed_through_the_daemon() {
    let mut hat = AtxEmulator::spawn(&["--gear", "3"]);
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start(broker.port, &bus_config(&hat.port));

    // Gear found on their short addresses, points published per SPEC §2.
    for a in 0..3 {
        wait_until(
            &format!("gear_found bus-a/{a}"),
            Duration::from_secs(30),
            || {
                events(&probe, "gear_found", &format!("bus-a/{a}"))
                    .into_iter()
                    .next()
            },
        );
        wait_until(
            &format!("bus-a/{a}/present"),
            Duration::from_secs(30),
            || {
                point_records(&probe, &format!("bus-a/{a}/present"))
                    .into_iter()
                    .find(|r| r["value"] == true)
            },
        );
    }
    // The luminaire's own fallback was programmed into the gear and reads back.
    let g0 = hat.state(0);
    assert_eq!(
        g0["system_failure_level"],
        cabinetd_dali::percent_to_arc(80.0),
        "{g0}"
    );
    assert_eq!(g0["power_on_level"], 254, "{g0}");

    // light.set on one luminaire: the arc level of the standard curve reaches the gear.
    probe.publish(CMD, json!({"id": "l1", "action": "light.set", "args": {"target": "bus-a/1", "level_percent": 50}, "expires_at": "2099-01-01T00:00:00Z"}).to_string().as_bytes(), false);
    assert_eq!(result_of(&probe, "l1")["status"], "succeeded");
    assert_eq!(hat.state(1)["level"], cabinetd_dali::percent_to_arc(50.0));
    // The published level is what the gear really has: 50 % quantised by the curve (arc 229).
    let expected = cabinetd_dali::arc_to_percent(cabinetd_dali::percent_to_arc(50.0))
        .expect("arc 229 is a level");
    wait_until(
        "bus-a/1/level at the quantised 50 %",
        Duration::from_secs(30),
        || {
            point_records(&probe, "bus-a/1/level")
                .into_iter()
                .find(|r| (r["value"].as_f64().unwrap_or(0.0) - expected).abs() < 0.01)
        },
    );

    // Group and broadcast; a group no bus has is rejected naming the field.
    let gear2_before = hat.state(2)["level"].clone();
    probe.publish(CMD, json!({"id": "g0", "action": "light.set", "args": {"target": "group:0", "level_percent": 30}, "expires_at": "2099-01-01T00:00:00Z"}).to_string().as_bytes(), false);
    assert_eq!(result_of(&probe, "g0")["status"], "succeeded");
    assert_eq!(hat.state(0)["level"], cabinetd_dali::percent_to_arc(30.0));
    assert_eq!(
        hat.state(2)["level"],
        gear2_before,
        "gear 2 is not in group 0"
    );
    probe.publish(CMD, json!({"id": "g9", "action": "light.set", "args": {"target": "group:9", "level_percent": 30}, "expires_at": "2099-01-01T00:00:00Z"}).to_string().as_bytes(), false);
    let r = result_of(&probe, "g9");
    assert_eq!(r["status"], "rejected");
    assert!(r["reason"].as_str().unwrap().contains("args.target"), "{r}");
    probe.publish(CMD, json!({"id": "all", "action": "light.set", "args": {"target": "all", "level_percent": 100}, "expires_at": "2099-01-01T00:00:00Z"}).to_string().as_bytes(), false);
    assert_eq!(result_of(&probe, "all")["status"], "succeeded");
    for a in 0..3 {
        assert_eq!(hat.state(a)["level"], 254, "gear {a} at full");
    }

    // A lamp failure: status bits → point and exactly one event.
    hat.control("lamp_failure 2 on");
    wait_until("lamp_failure event", Duration::from_secs(30), || {
        events(&probe, "lamp_failure", "bus-a/2").into_iter().next()
    });
    wait_until(
        "bus-a/2/lamp_failure = true",
        Duration::from_secs(30),
        || {
            point_records(&probe, "bus-a/2/lamp_failure")
                .into_iter()
                .find(|r| r["value"] == true)
        },
    );
    // Several more polls pass; still one event per transition.
    let polls = daemon.status()["devices"][0]["last_poll"].clone();
    wait_until("more polls", Duration::from_secs(30), || {
        (daemon.status()["devices"][0]["last_poll"] != polls).then_some(())
    });
    assert_eq!(events(&probe, "lamp_failure", "bus-a/2").len(), 1);

    // A gear removed from the bus → gear_missing.
    hat.control("remove 0");
    let missing = wait_until("gear_missing", Duration::from_secs(30), || {
        events(&probe, "gear_missing", "bus-a/0").into_iter().next()
    });
    assert_eq!(missing["severity"], "major");

    // The technician cannot commission while the daemon holds the bus.
    let out = Command::new(cabinetd_bin())
        .args(["dali", "commission", "--bus", "bus-a", "--config"])
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop cabinetd first"), "{err}");
    assert!(daemon.stop().success());
}

#[test]
fn commissioning_addresses_new_gear_and_shows_progress() {
    let hat = AtxEmulator::spawn(&["--gear", "2", "--unaddressed", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cabinetd.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n{}",
            base_config(dir.path(), free_port(), free_port()),
            bus_config(&hat.port)
        ),
    )
    .unwrap();
    let out = Command::new(cabinetd_bin())
        .args([
            "dali",
            "commission",
            "--bus",
            "bus-a",
            "--unaddressed",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut hat = hat;
    let shorts: Vec<Option<u8>> = serde_json::from_str(&hat.control("shorts")).unwrap();
    let assigned: std::collections::BTreeSet<u8> = shorts
        .iter()
        .map(|s| s.expect("every gear addressed"))
        .collect();
    assert_eq!(assigned.len(), 5, "unique short addresses: {shorts:?}");
    // Progress was shown while searching, then what was assigned.
    assert!(
        stdout.contains('\r') || stdout.lines().count() > 4,
        "progress lines: {stdout}"
    );
    for a in &assigned {
        assert!(
            stdout.contains(&a.to_string()),
            "assigned address {a} listed: {stdout}"
        );
    }
}

/// A longitude where it is around local solar midnight now, so the test sees a night whatever
/// the hour CI runs at (at 47° N the night lasts at least 8 h around solar midnight).
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

#[test]
fn the_programme_lights_the_night_and_release_returns_to_it() {
    let mut hat = AtxEmulator::spawn(&["--gear", "2"]);
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let lon = longitude_at_midnight();
    let programme = r#"
[lighting]
  [[lighting.step]]
  target = "all"
  at = "dusk"
  level_percent = 70
  reason = "dusk"
"#;
    let mut daemon = Daemon::start_edited(
        broker.port,
        &format!("{}\n{programme}", bus_config(&hat.port)),
        |base| {
            base.replace("longitude = 5.0415", &format!("longitude = {lon:.4}"))
                .replace("Europe/Paris", "UTC")
        },
    );
    let night = cabinetd_dali::percent_to_arc(70.0);
    // The programme is what the cabinet does on its own: `cabinetd status` lists it, and who
    // is in charge of the luminaires.
    assert_eq!(
        daemon.status()["programme"],
        json!(["lighting: all at dusk → 70 % (dusk)"])
    );
    wait_until("the programme in charge", Duration::from_secs(30), || {
        (daemon.status()["control"]["all"] == "programme").then_some(())
    });
    wait_until(
        "the programme's night level on every gear",
        Duration::from_secs(30),
        || (hat.state(0)["level"] == night && hat.state(1)["level"] == night).then_some(()),
    );

    // Central overrides one luminaire, then releases it: back to the programme, not to full.
    probe.publish(CMD, json!({"id": "o1", "action": "light.set", "args": {"target": "bus-a/1", "level_percent": 20}, "expires_at": "2099-01-01T00:00:00Z"}).to_string().as_bytes(), false);
    assert_eq!(result_of(&probe, "o1")["status"], "succeeded");
    assert_eq!(hat.state(1)["level"], cabinetd_dali::percent_to_arc(20.0));
    assert_eq!(daemon.status()["control"]["bus-a/1"], "central");
    assert_eq!(
        hat.state(0)["level"],
        night,
        "the other luminaire keeps the programme"
    );
    probe.publish(
        CMD,
        json!({"id": "o2", "action": "light.release", "args": {"target": "bus-a/1"}, "expires_at": "2099-01-01T00:00:00Z"})
            .to_string()
            .as_bytes(),
        false,
    );
    assert_eq!(result_of(&probe, "o2")["status"], "succeeded");
    assert_eq!(hat.state(1)["level"], night);
    assert!(daemon.stop().success());
}

/// Regression (issue 8): a reload swaps the equipment generation; an old bus task must never
/// still own the serial port or the bus lock when the new one opens them. Three reloads in a
/// row while the bus is polled and commanded: the bus never reports the port or lock in use,
/// and it keeps answering commands after each.
#[test]
fn reloads_hand_the_bus_over_without_two_owners() {
    let _hat = AtxEmulator::spawn(&["--gear", "2"]);
    let hat_port = _hat.port.clone();
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let mut daemon = Daemon::start(broker.port, &bus_config(&hat_port));
    wait_until("bus-a up", Duration::from_secs(30), || {
        (daemon.status()["devices"][0]["up"] == true).then_some(())
    });
    let base = std::fs::read_to_string(&daemon.config).unwrap();
    for (i, poll) in ["600ms", "700ms", "800ms"].into_iter().enumerate() {
        let text = base.replace("poll = \"500ms\"", &format!("poll = \"{poll}\""));
        std::fs::write(&daemon.config, text).unwrap();
        let before = daemon.status()["last_reload"]["ts"].clone();
        daemon.proc.signal(nix::sys::signal::Signal::SIGHUP);
        let outcome = wait_until("the reload outcome", Duration::from_secs(30), || {
            let st = daemon.status();
            (st["last_reload"]["ts"] != before).then(|| st["last_reload"].clone())
        });
        assert_eq!(outcome["status"], "applied", "{outcome}");
        let id = format!("after-reload-{i}");
        let cmd = json!({"id": id, "action": "light.set",
            "args": {"target": "bus-a/1", "level_percent": 40 + 10 * i},
            "expires_at": "2099-01-01T00:00:00Z"});
        probe.publish(CMD, cmd.to_string().as_bytes(), false);
        assert_eq!(result_of(&probe, &id)["status"], "succeeded");
    }
    let downs = events(&probe, "device_down", "bus-a");
    assert!(
        downs.is_empty(),
        "the bus went down during a reload: {downs:#?}"
    );
    assert!(daemon.stop().success());
}
