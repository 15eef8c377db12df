//! `check-config` catches what would make `run` fail (issue 14 item 2): the files, serial lines
//! and state directory a valid configuration names are checked as the service user, each fault
//! named `FILE:LINE:COL: key "path" …`, exit 78; `run` exits 78 (not 1) for the same faults.
//!
//! Tests run as root here (CI) or as a developer: "another user" is `nobody`, which owns nothing
//! the tests write.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use support::*;

/// A valid config in `dir` (storage in `dir/state`, HTTP on a free port) plus `extra`; returns
/// its path and the line number where `extra` starts.
fn config(dir: &Path, extra: &str) -> (PathBuf, usize) {
    let base = base_config(dir, free_port(), free_port());
    let path = dir.join("cabinetd.toml");
    std::fs::write(&path, format!("{base}\n{extra}")).unwrap();
    (path, base.lines().count() + 2)
}

/// `check-config` as the user running the tests unless `args` name another (as root it would
/// otherwise check as the `cabinetd` user whenever this machine has one, which the tests'
/// temporary files do not let in).
fn check_config(path: &Path, args: &[&str]) -> Output {
    let me = me();
    let mut cmd = Command::new(cabinetd_bin());
    cmd.arg("check-config").arg("--config").arg(path).args(args);
    if !args.contains(&"--as-user") {
        cmd.args(["--as-user", &me]);
    }
    cmd.output().unwrap()
}

/// The user running the tests.
fn me() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn secret(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "s3cret\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Issue 14: check-config passed a config whose uplink.password_file did not exist, then `run`
/// died with exit 1, which systemd restarts (RestartPreventExitStatus=78 only spares 78).
#[test]
fn a_missing_secret_fails_check_config_and_run_with_78_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("secrets/mqtt");
    let (path, _) = config(dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "keep_alive = \"5s\"",
        &format!(
            "keep_alive = \"5s\"\nusername = \"u\"\npassword_file = \"{}\"",
            missing.display()
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("password_file"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}:17: uplink.password_file \"{}\" does not exist",
        path.display(),
        missing.display()
    );

    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&want),
        "{want}\nnot in\n{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(&format!("files checked as user {} ", me())),
        "{}",
        stderr(&out)
    );

    let run = Command::new(cabinetd_bin())
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(78), "{}", stderr(&run));
    assert!(stderr(&run).contains(&want), "{}", stderr(&run));

    // Once the file is there, both are happy (run is stopped by its test harness).
    std::fs::create_dir_all(missing.parent().unwrap()).unwrap();
    std::fs::write(&missing, "pw\n").unwrap();
    std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check_config(&path, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn secrets_must_be_readable_by_the_service_user_and_by_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    // Searchable by anyone, so that only the files' own modes decide.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = secret(dir.path(), "cam-private", 0o600);
    let open = secret(dir.path(), "cam-open", 0o644);
    let extra = format!(
        "[[camera]]\nname = \"cam-a\"\naddress = \"http://127.0.0.1:9/onvif/device_service\"\nusername = \"u\"\npassword_file = \"{}\"\n\n\
         [[camera]]\nname = \"cam-b\"\naddress = \"http://127.0.0.1:9/onvif/device_service\"\nusername = \"u\"\npassword_file = \"{}\"\n",
        private.display(),
        open.display()
    );
    let (path, first) = config(dir.path(), &extra);
    // The storage directory must be creatable by nobody too: give it one.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();

    // As the owner: OK, with a warning for the secret everyone may read.
    let me = me();
    let out = check_config(&path, &["--as-user", &me]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warning = format!(
        "{}:{}:17: warning: camera[cam-b].password_file \"{}\" is readable by every user (mode 0644",
        path.display(),
        first + 10,
        open.display()
    );
    assert!(
        stderr(&out).contains(&warning),
        "{warning}\nnot in\n{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("cam-a"),
        "a 0600 secret is fine: {}",
        stderr(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("files checked as user {me} ")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // As another user: the private secret cannot be read, and that is an error at its value.
    let out = check_config(&path, &["--as-user", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let error = format!(
        "{}:{}:17: camera[cam-a].password_file \"{}\" is not readable by user nobody",
        path.display(),
        first + 4,
        private.display()
    );
    assert!(
        stderr(&out).contains(&error),
        "{error}\nnot in\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("1 error(s)"), "{}", stderr(&out));

    // A directory the user may not enter hides the file as well as its mode would.
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    let inner = secret(&closed, "pw", 0o644);
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&private.display().to_string(), &inner.display().to_string());
    std::fs::write(&path, text).unwrap();
    let out = check_config(&path, &["--as-user", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("it may not enter {}", closed.display())),
        "{}",
        stderr(&out)
    );

    // An unknown user is a usage error.
    let out = check_config(&path, &["--as-user", "no-such-user-here"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_state_directory_must_be_writable_or_creatable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (path, _) = config(dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text.lines().position(|l| l.starts_with("path = ")).unwrap() + 1;

    // Missing, under a directory only its owner may write: not creatable by nobody.
    let out = check_config(&path, &["--as-user", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let want = format!(
        "{}:{line}:8: storage.path \"{}\" does not exist and user nobody (uid 65534) cannot create it",
        path.display(),
        dir.path().join("state").display()
    );
    assert!(
        stderr(&out).contains(&want),
        "{want}\nnot in\n{}",
        stderr(&out)
    );

    // Existing and writable, but holding a store file of another user (the daemon was once run
    // by hand as root): sled could not open it.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marks = state.join("seq-marks");
    std::fs::write(&marks, "x").unwrap();
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_config(&path, &["--as-user", "nobody"]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} is not writable by user nobody",
            marks.display()
        )),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = check_config(&path, &["--as-user", "nobody"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A serial line that is not there fails check-config (the technician is at the cabinet), but
/// not `run`: a USB adapter may come back, and meanwhile the bus is reported down and retried.
#[test]
fn a_missing_serial_line_fails_check_config_but_run_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("ttyNOPE0");
    let extra = format!(
        "[[dali]]\nname = \"bus-a\"\ninterface = \"atx-hat\"\nport = \"{}\"\n",
        port.display()
    );
    let (path, first) = config(dir.path(), &extra);
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let want = format!(
        "{}:{}:8: dali[bus-a].port \"{}\" does not exist",
        path.display(),
        first + 3,
        port.display()
    );
    assert!(
        stderr(&out).contains(&want),
        "{want}\nnot in\n{}",
        stderr(&out)
    );

    // A regular file is not a serial line.
    std::fs::write(&port, "").unwrap();
    let out = check_config(&path, &[]);
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a serial device"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&port).unwrap();

    // `run` warns and runs (the bus is down until the line appears).
    let broker = Mosquitto::start();
    let mut daemon = Daemon::start_logged(broker.port, &extra, &[]);
    wait_until("the bus reported down", Duration::from_secs(20), || {
        (daemon.status()["devices"][0]["health"] != "starting").then_some(())
    });
    assert!(
        daemon.log_text().contains("dali[bus-a].port"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop().success());
}
