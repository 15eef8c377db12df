//! The shipped configs load; every broken example fails exactly at the positions it announces.
//!
//! Each `tests/config/broken/*.toml` starts with `# expect: LINE:COL` comment lines; the loader's
//! errors for that file must be at exactly that set of positions (several errors may share one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cabinetd::config::{load_files, DaliInterface, DataType, SimulatorKind, Table, Transport};

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_shipped_config_loads() {
    let files = toml_files(&root().join("config"));
    assert!(files.len() >= 2, "{files:?}");
    for f in files {
        if let Err(e) = load_files(std::slice::from_ref(&f)) {
            panic!("{} does not load:\n{e}", f.display());
        }
    }
}

#[test]
fn demo_cabinet_matches_the_simulator_map() {
    let c = load_files(&[root().join("config/demo.toml")]).unwrap();
    assert_eq!(c.cabinet.id, "demo-001");
    assert_eq!(c.storage.path, PathBuf::from("./demo-state"));
    assert_eq!(c.http.listen, "127.0.0.1:9108".parse().unwrap());
    assert_eq!(c.uplink.brokers[0].host, "127.0.0.1");
    assert_eq!(c.uplink.brokers[0].port, 1883);
    assert_eq!(c.simulators.len(), 1);
    assert_eq!(c.simulators[0].name, "meter-sim");
    assert_eq!(c.simulators[0].kind, SimulatorKind::EnergyMeter);
    assert_eq!(c.simulators[0].listen, "127.0.0.1:15020".parse().unwrap());

    let m = &c.modbus[0].spec;
    assert_eq!(m.name, "meter-main");
    assert_eq!(
        m.transport,
        Transport::Tcp {
            address: "127.0.0.1:15020".into()
        }
    );
    let map: Vec<(&str, Table, u16, DataType, f64, bool)> = m
        .points
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.table,
                p.address,
                p.data_type,
                p.scale,
                p.writable,
            )
        })
        .collect();
    use DataType::*;
    use Table::*;
    assert_eq!(
        map,
        [
            ("voltage_l1", Input, 0, U16, 0.1, false),
            ("voltage_l2", Input, 1, U16, 0.1, false),
            ("voltage_l3", Input, 2, U16, 0.1, false),
            ("current_l1", Input, 3, U16, 0.01, false),
            ("current_l2", Input, 4, U16, 0.01, false),
            ("current_l3", Input, 5, U16, 0.01, false),
            ("active_power", Input, 6, F32, 1.0, false),
            ("energy", Input, 8, U32, 1.0, false),
            ("frequency", Input, 10, U16, 0.01, false),
            ("power_factor", Input, 11, I16, 0.001, false),
            ("power_limit", Holding, 0, U16, 1.0, true),
            ("relay", Coil, 0, Bool, 1.0, true),
            ("door_open", Discrete, 0, Bool, 1.0, false),
        ]
    );
    let power_limit = &m.points[10];
    assert_eq!(
        (power_limit.min, power_limit.max),
        (Some(0.0), Some(10000.0))
    );

    assert_eq!(c.dali[0].interface, DaliInterface::Sim { luminaires: 6 });
    assert_eq!(c.dali[0].groups.len(), 2);
}

/// `# expect: L:C` lines of a broken example.
fn expected_positions(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|p| p.trim().to_string())
        .collect()
}

#[test]
fn every_broken_config_fails_at_the_announced_positions() {
    let files = toml_files(&root().join("tests/config/broken"));
    assert!(files.len() >= 6, "{files:?}");
    // Every file is checked before failing, so one run shows every mismatch.
    let mut mismatches = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let want = expected_positions(&text);
        assert!(
            !want.is_empty(),
            "{} has no `# expect: LINE:COL` line",
            f.display()
        );
        let errors = match load_files(std::slice::from_ref(&f)) {
            Ok(_) => panic!("{} loaded but must fail", f.display()),
            Err(e) => e,
        };
        let prefix = format!("{}:", f.display());
        let output = errors.to_string();
        let mut got = BTreeSet::new();
        for line in output.lines() {
            let rest = line
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
            let mut parts = rest.splitn(3, ':');
            let (l, c) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok(),
                "{line:?}"
            );
            got.insert(format!("{l}:{c}"));
        }
        if got != want {
            mismatches.push(format!(
                "{}: expected errors at {want:?}, got {got:?}:\n{output}",
                f.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
}

#[test]
fn demo_cabinet_plans_a_night() {
    let c = load_files(&[root().join("config/demo.toml")]).unwrap();
    assert_eq!(
        c.lighting.energy_meter.as_deref(),
        Some("meter-main/energy")
    );
    let mut out = Vec::new();
    cabinetd::lighting::plan_cli(&c, "2026-12-21", &mut out).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary: Vec<(String, i64)> = lines[1..]
        .iter()
        .map(|l| {
            (
                format!(
                    "{} {}",
                    l["at"].as_str().unwrap(),
                    l["target"].as_str().unwrap()
                ),
                l["level_percent"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines[0]["date"], "2026-12-21");
    let dusk = lines[0]["dusk"].as_str().unwrap();
    let dawn = lines[0]["dawn"].as_str().unwrap();
    assert_eq!(
        summary,
        [
            (format!("{dusk} all"), 100),
            ("2026-12-21T21:00:00.000Z all".to_string(), 70),
            ("2026-12-21T21:00:00.000Z group:1".to_string(), 90),
            ("2026-12-22T04:00:00.000Z all".to_string(), 100),
            (format!("{dawn} all"), 0),
        ]
    );
}
