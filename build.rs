//! Embeds the git commit and the target triple for `cabinetd --version`, and the build date
//! (the floor of a plausible wall clock).
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=CABINETD_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=CABINETD_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    // The floor of a plausible wall clock (src/rules/clock.rs): SOURCE_DATE_EPOCH when set
    // (reproducible builds), else the commit's time, else 0 (the code's own floor applies).
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .filter(|s| s.trim().parse::<i64>().is_ok())
        .or_else(|| {
            Command::new("git")
                .args(["log", "-1", "--format=%ct"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
        })
        .map(|s| s.trim().to_owned())
        .filter(|s| s.parse::<i64>().is_ok())
        .unwrap_or_else(|| "0".to_owned());
    println!("cargo:rustc-env=CABINETD_BUILD_EPOCH={epoch}");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
