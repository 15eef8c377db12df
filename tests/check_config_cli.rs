//! `cabinetd check-config` as a technician uses it: every shipped config is valid; each broken
//! file exits 78 (EX_CONFIG) and names every error as FILE:LINE:COL.

mod support;

use std::process::Command;

use support::*;

fn check(paths: &[&std::path::Path]) -> std::process::Output {
    check_with(paths, &[])
}

fn check_with(paths: &[&std::path::Path], extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(cabinetd_bin());
    cmd.arg("check-config");
    for p in paths {
        cmd.arg("--config").arg(p);
    }
    cmd.args(extra).output().unwrap()
}

/// `check` for the user running the tests (as root, check-config would check for the
/// `cabinetd` service user when the machine has one, who may not enter a private temp dir).
fn check_as_me(paths: &[&std::path::Path]) -> std::process::Output {
    let me = Command::new("id").arg("-un").output().unwrap();
    check_with(
        paths,
        &["--as-user", String::from_utf8_lossy(&me.stdout).trim()],
    )
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
            let out = if example {
                check_with(&[&path], &["--no-file-checks"])
            } else {
                // The demo's state directory is under the checkout.
                check_as_me(&[&path])
            };
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

/// Issue 14 item 2: check-config passed a config whose camera password_file did not exist, then
/// `run` died with exit 1 (systemd restarted it in a loop). Both now exit 78 naming the key's
/// position; a world-readable secret is a warning.
#[test]
fn a_missing_camera_password_file_is_a_config_error_for_check_config_and_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("cam-pw");
    let cfg = dir.path().join("cabinetd.toml");
    let text = format!(
        "{}\n[[camera]]\nname = \"cam-1\"\naddress = \"http://127.0.0.1:9/onvif/device_service\"\nusername = \"u\"\npassword_file = \"{}\"\n",
        base_config(dir.path(), free_port(), free_port()),
        pw.display()
    );
    std::fs::write(&cfg, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("password_file"))
        .unwrap()
        + 1;
    let needle = format!("{}:{line}:17: camera[cam-1].password_file", cfg.display());
    let out = check_as_me(&[&cfg]);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&needle) && stderr.contains("does not exist"),
        "{stderr}"
    );
    let run = Command::new(cabinetd_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78), "run exits 78 too");
    assert!(String::from_utf8_lossy(&run.stderr).contains(&needle));
    // An empty file is refused the same way; a world-readable one is accepted with a warning.
    std::fs::write(&pw, "\n").unwrap();
    let out = check_as_me(&[&cfg]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));
    std::fs::write(&pw, "s3cret-pw-do-not-print\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_as_me(&[&cfg]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: camera[cam-1].password_file")
            && stderr.contains("readable by every user"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("1 ONVIF camera(s)"), "{stdout}");
    assert!(!stderr.contains("s3cret") && !stdout.contains("s3cret"));
}
