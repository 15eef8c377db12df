//! The DALI bus master against a real peer: python-dali fake gear behind the
//! ATX DALI HAT emulator, reached through a pty with tokio-serial (the
//! production serial path).

mod support;

use cabinetd_dali::command::{Command, Query};
use cabinetd_dali::commission::{commission, Options, Phase};
use cabinetd_dali::transaction::Request;
use cabinetd_dali::{Address, Error, ShortAddress};
use cabinetd_dali::{Bus, Event, Fallback, Parameter, Supervisor, SupervisorConfig};
use support::Emulator;
use tokio::time::Instant;

fn sa(n: u8) -> ShortAddress {
    ShortAddress::new(n).unwrap()
}

fn a(n: u8) -> Address {
    Address::Short(sa(n))
}

#[tokio::test]
async fn discovery_finds_gear_and_reads_identity() {
    let emu = Emulator::spawn(&["--gear", "4", "--unaddressed", "1"]);
    let mut bus = Bus::new(emu.hat());
    let found = bus.discover().await.unwrap();
    let addrs: Vec<u8> = found.iter().map(|g| g.address.get()).collect();
    assert_eq!(addrs, vec![0, 1, 2, 3]);
    for g in &found {
        let id = g.identity.as_ref().expect("bank 0 identity");
        // python-dali's FakeBank0 GTIN; the emulator numbers serials from 1.
        assert_eq!(id.gtin, Some(1_234_567_654_321));
        assert_eq!(id.serial, Some(u64::from(g.address.get()) + 1));
        assert_eq!(g.device_type, Some(6));
    }
}

#[tokio::test]
async fn set_50_percent_gives_the_curve_level() {
    let mut emu = Emulator::spawn(&["--gear", "3"]);
    let mut bus = Bus::new(emu.hat());
    let arc = bus.set_level(a(2), 50.0, None).await.unwrap();
    assert_eq!(arc, 229);
    let st = bus.poll_gear(sa(2)).await.unwrap();
    assert_eq!(st.arc, Some(229));
    assert!((st.level_percent.unwrap() - 50.53).abs() < 0.01);
    assert!(st.status.unwrap().lamp_on);
    assert_eq!(emu.state_field(2, "level"), "229");
    assert_eq!(emu.state_field(1, "level"), "254");
    // Off: one query only (STATUS says the lamp is off).
    bus.set_level(a(2), 0.0, Some(3)).await.unwrap();
    let before = bus.transactions();
    let st = bus.poll_gear(sa(2)).await.unwrap();
    assert_eq!((st.arc, bus.transactions() - before), (Some(0), 1));
    assert_eq!(emu.state_field(2, "fade_time"), "3");
}

#[tokio::test]
async fn group_and_broadcast_commands() {
    let mut emu = Emulator::spawn(&["--gear", "3"]);
    let mut bus = Bus::new(emu.hat());
    bus.program_groups(sa(1), 1 << 3).await.unwrap();
    bus.program_groups(sa(2), (1 << 3) | (1 << 12))
        .await
        .unwrap();
    assert_eq!(emu.state_field(2, "groups"), "[3, 12]");
    bus.set_level(Address::group(3).unwrap(), 10.0, None)
        .await
        .unwrap();
    assert_eq!(emu.state_field(1, "level"), "170");
    assert_eq!(emu.state_field(2, "level"), "170");
    assert_eq!(emu.state_field(0, "level"), "254");
    bus.set_level(Address::Broadcast, 0.0, None).await.unwrap();
    for n in 0..3 {
        assert_eq!(bus.poll_gear(sa(n)).await.unwrap().arc, Some(0));
    }
    bus.send(Command::RecallMaxLevel(Address::group(12).unwrap()))
        .await
        .unwrap();
    assert_eq!(emu.state_field(2, "level"), "254");
    assert_eq!(emu.state_field(1, "level"), "0");
    // Leaving a group is verified too.
    bus.program_groups(sa(2), 1 << 12).await.unwrap();
    assert_eq!(bus.groups(sa(2)).await.unwrap(), Some(1 << 12));
}

#[tokio::test]
async fn config_command_once_is_ignored_twice_is_applied() {
    let mut emu = Emulator::spawn(&["--gear", "1"]);
    let mut bus = Bus::new(emu.hat());
    bus.send(Command::Dtr0(77)).await.unwrap();
    bus.request(Request::once(&Command::SetPowerOnLevel(a(0))))
        .await
        .unwrap();
    assert_eq!(
        bus.query_value(a(0), Query::PowerOnLevel).await.unwrap(),
        Some(254)
    );
    bus.send(Command::SetPowerOnLevel(a(0))).await.unwrap();
    assert_eq!(
        bus.query_value(a(0), Query::PowerOnLevel).await.unwrap(),
        Some(77)
    );
    assert_eq!(emu.state_field(0, "power_on_level"), "77");
}

#[tokio::test]
async fn lamp_failure_and_missing_gear_become_one_event_each() {
    let mut emu = Emulator::spawn(&["--gear", "3"]);
    let mut bus = Bus::new(emu.hat());
    let mut sup = Supervisor::new(SupervisorConfig::default());
    let found = sup.discover(&mut bus).await.unwrap();
    assert_eq!(found.len(), 3);
    let now = Instant::now();
    let first = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert!(first.events.is_empty(), "{:?}", first.events);
    let quiet = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert_eq!(quiet.transactions, 6, "2 queries per lit gear");

    emu.control("lamp_failure 1 on");
    let c = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert_eq!(
        c.events,
        vec![Event::LampFailure {
            address: sa(1),
            active: true
        }]
    );
    let s1 = c.samples.iter().find(|s| s.address == sa(1)).unwrap();
    assert_eq!(s1.lamp_failure, Some(true));
    assert_eq!(s1.level_percent, None);
    let st = bus.poll_gear(sa(1)).await.unwrap().status.unwrap();
    assert!(st.lamp_failure && !st.lamp_on);
    assert!(sup
        .poll_cycle(&mut bus, now)
        .await
        .unwrap()
        .events
        .is_empty());

    emu.control("remove 2");
    let c = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert_eq!(c.events, vec![Event::GearMissing { address: sa(2) }]);
    assert!(!c.samples[2].present);
    assert!(sup
        .poll_cycle(&mut bus, now)
        .await
        .unwrap()
        .events
        .is_empty());

    emu.control("restore 2");
    emu.control("lamp_failure 1 off");
    let c = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert_eq!(
        c.events,
        vec![
            Event::LampFailure {
                address: sa(1),
                active: false
            },
            Event::GearFound { address: sa(2) },
        ]
    );
}

#[tokio::test]
async fn energy_and_diagnostics_banks() {
    let emu = Emulator::spawn(&["--gear", "2"]);
    let mut bus = Bus::new(emu.hat());
    bus.set_level(a(0), 50.0, None).await.unwrap();
    let e = bus.energy(sa(0)).await.unwrap().expect("bank 202");
    // 100 W gear at 50.53 % output, reported in 0.1 W.
    assert!((e.power_w.unwrap() - 50.5).abs() < 0.06, "{e:?}");
    assert!(e.energy_wh.unwrap() >= 1001.0, "{e:?}");
    let d = bus
        .gear_diagnostics(sa(0))
        .await
        .unwrap()
        .expect("bank 205");
    assert!(d.operating_hours().unwrap() >= 1000.0, "{d:?}");
    assert_eq!(d.temperature_c, Some(35));
    // A bank the gear does not implement.
    assert_eq!(bus.light_source_diagnostics(sa(0)).await.unwrap(), None);

    let mut sup = Supervisor::new(SupervisorConfig::default());
    sup.watch([sa(0), sa(1)]);
    let c = sup.poll_cycle(&mut bus, Instant::now()).await.unwrap();
    assert!(c
        .samples
        .iter()
        .all(|s| s.power_w.is_some() && s.energy_wh.is_some() && s.operating_hours.is_some()));
}

#[tokio::test]
async fn fallback_levels_are_programmed_verified_and_audited() {
    let mut emu = Emulator::spawn(&["--gear", "2"]);
    let mut bus = Bus::new(emu.hat());
    let fb = Fallback {
        power_on_level: Some(200),
        system_failure_level: Some(170),
        fade_time: Some(4),
        ..Fallback::default()
    };
    let drift = bus.program_fallback(sa(1), &fb).await.unwrap();
    let params: Vec<_> = drift.iter().map(|d| d.parameter).collect();
    assert_eq!(
        params,
        vec![
            Parameter::PowerOnLevel,
            Parameter::SystemFailureLevel,
            Parameter::FadeTime
        ]
    );
    assert_eq!(drift[0].found, Some(254));
    assert_eq!(emu.state_field(1, "power_on_level"), "200");
    assert_eq!(emu.state_field(1, "system_failure_level"), "170");
    assert_eq!(emu.state_field(0, "system_failure_level"), "254");
    assert!(bus.program_fallback(sa(1), &fb).await.unwrap().is_empty());
    // Someone changes it behind our back: the audit reports the drift.
    bus.send(Command::Dtr0(254)).await.unwrap();
    bus.send(Command::SetSystemFailureLevel(a(1)))
        .await
        .unwrap();
    let drift = bus.program_fallback(sa(1), &fb).await.unwrap();
    assert_eq!(drift.len(), 1);
    assert_eq!(drift[0].parameter, Parameter::SystemFailureLevel);
    assert_eq!(drift[0].found, Some(254));
}

#[tokio::test]
async fn commissioning_assigns_unique_addresses() {
    let mut emu = Emulator::spawn(&["--gear", "2", "--unaddressed", "4", "--seed", "7"]);
    let mut bus = Bus::new(emu.hat());
    let mut progress = Vec::new();
    let report = commission(&mut bus, Options::default(), |p| progress.push(p))
        .await
        .unwrap();
    assert_eq!(report.assigned.len(), 4);
    assert!(report.assigned.iter().all(|x| x.verified));
    let mut given: Vec<u8> = report.assigned.iter().map(|x| x.address.get()).collect();
    given.sort_unstable();
    assert_eq!(given, vec![2, 3, 4, 5]);
    // The peer's own view: every gear has a distinct short address.
    let mut shorts: Vec<u8> = emu
        .control("shorts")
        .trim_matches(['[', ']'])
        .split(", ")
        .map(|s| s.parse().unwrap())
        .collect();
    shorts.sort_unstable();
    assert_eq!(shorts, vec![0, 1, 2, 3, 4, 5]);
    assert!(progress
        .iter()
        .any(|p| p.phase == Phase::Searching && p.step >= 20));
    let programmed = progress
        .iter()
        .filter(|p| matches!(p.phase, Phase::Programmed { .. }))
        .count();
    assert_eq!(programmed, 4);
    assert_eq!(
        progress.last().map(|p| (p.phase, p.found)),
        Some((Phase::Done, 4))
    );
    assert_eq!(bus.scan().await.unwrap().len(), 6);
}

#[tokio::test]
async fn collision_on_a_query_is_reported_as_such() {
    let mut emu = Emulator::spawn(&["--gear", "2"]);
    let mut bus = Bus::new(emu.hat());
    let mut sup = Supervisor::new(SupervisorConfig::default());
    sup.discover(&mut bus).await.unwrap();
    let now = Instant::now();
    sup.poll_cycle(&mut bus, now).await.unwrap();

    emu.control("duplicate 1");
    let err = bus.query_value(a(1), Query::ActualLevel).await.unwrap_err();
    assert!(matches!(err, Error::Collision(_)), "{err}");
    // Yes/no: a framing error is a YES.
    assert!(bus
        .query_yes(a(1), Query::ControlGearPresent)
        .await
        .unwrap());
    let c = sup.poll_cycle(&mut bus, now).await.unwrap();
    assert_eq!(
        c.events,
        vec![Event::Collision {
            address: sa(1),
            active: true
        }]
    );
    assert!(sup
        .poll_cycle(&mut bus, now)
        .await
        .unwrap()
        .events
        .is_empty());
}

/// The emulator itself is proven against python-dali's own `atxled` driver
/// (tests/peers/test_atx_hat_emulator.py); run it here so `cargo test` covers it.
#[test]
fn emulator_agrees_with_python_dali_atxled_driver() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(support::python())
        .current_dir(&root)
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests/peers",
            "-p",
            "test_atx_hat_emulator.py",
        ])
        .output()
        .expect("run python unittest");
    assert!(
        out.status.success(),
        "python-dali atxled vs emulator failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim_end().ends_with("OK"), "{stderr}");
}
