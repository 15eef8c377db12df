//! `cabinetd check-config` as a technician uses it: every shipped config is valid; each broken
//! file exits 78 (EX_CONFIG) and names every error as FILE:LINE:COL.

mod support;

use std::process::Command;

use support::*;

fn check(paths: &[&std::path::Path]) -> std::process::Output {
    let mut cmd = Command::new(cabinetd_bin());
    cmd.arg("check-config");
    for p in paths {
        cmd.arg("--config").arg(p);
    }
    cmd.output().unwrap()
}

#[test]
fn every_shipped_config_is_valid() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            // The example names a real cabinet's secrets, certificates and serial lines, which
            // this machine does not have: its files are checked by tests/ship/deb_install.sh.
            let example = path.ends_with("cabinetd.example.toml");
            let mut cmd = Command::new(cabinetd_bin());
            cmd.arg("check-config").arg("--config").arg(&path);
            if example {
                cmd.arg("--no-file-checks");
            } else {
                // As whoever runs the tests (as root, the default is the `cabinetd` user when
                // the machine has one): the demo's state directory is under the checkout.
                let me = Command::new("id").arg("-un").output().unwrap();
                cmd.args(["--as-user", String::from_utf8_lossy(&me.stdout).trim()]);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{} is invalid:\n{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected at least the example and the demo config, found {checked}"
    );
}

#[test]
fn broken_configs_exit_78_and_name_every_position() {
    let dir = root().join("tests/config/broken");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect:"))
            .map(str::trim)
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect: LINE:COL` line",
            path.display()
        );
        let out = check(&[&path]);
        assert_eq!(
            out.status.code(),
            Some(78),
            "{} must exit 78",
            path.display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        for pos in expected {
            let needle = format!("{}:{pos}:", path.display());
            assert!(stderr.contains(&needle), "{needle} missing from:\n{stderr}");
        }
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected one broken file per error class, found {checked}"
    );
}

#[test]
fn a_missing_file_is_a_config_error() {
    let out = check(&[std::path::Path::new("/nonexistent/cabinetd.toml")]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/cabinetd.toml"));
}

/// Issue 13 item 14: `/dev/zero` (or a 50 MB file) given as a config read until memory ran
/// out. It is a configuration error naming the file, exit 78, after reading at most 4 MiB.
#[test]
fn an_endless_or_huge_config_file_is_refused_with_exit_78() {
    let out = check(&[std::path::Path::new("/dev/zero")]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/dev/zero:1:1: the file is larger than 4 MiB"),
        "{stderr}"
    );
}
