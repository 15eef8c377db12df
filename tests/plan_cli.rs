//! `cabinetd plan` as the energy manager uses it: the night's plan as JSON lines (SPEC §1).

mod support;

use std::process::Command;

use support::*;

fn plan(date: &str) -> std::process::Output {
    Command::new(cabinetd_bin())
        .args(["plan", "--date", date, "--config"])
        .arg(root().join("config/demo.toml"))
        .output()
        .unwrap()
}

#[test]
fn prints_dusk_dawn_then_the_changes_in_time_order() {
    let out = plan("2026-12-21");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let head = &lines[0];
    assert_eq!(head["date"], "2026-12-21");
    // Dijon, winter solstice (NOAA/Meeus, sun centre 0.833° below the horizon): 15:51:50 and
    // 07:24:28 UTC.
    assert!(
        head["dusk"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-21T15:5"),
        "{head}"
    );
    assert!(
        head["dawn"]
            .as_str()
            .unwrap()
            .starts_with("2026-12-22T07:2"),
        "{head}"
    );
    let changes = &lines[1..];
    assert!(!changes.is_empty());
    let times: Vec<&str> = changes.iter().map(|c| c["at"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time order: {times:?}"
    );
    for c in changes {
        assert!(
            c["target"].is_string() && c["level_percent"].is_number() && c["reason"].is_string(),
            "{c}"
        );
        assert!(c["at"].as_str().unwrap().ends_with('Z'));
    }
    // The night ends dark at dawn.
    let last = changes.last().unwrap();
    assert_eq!(last["level_percent"], 0);
    assert_eq!(last["at"], head["dawn"]);
}

/// Issue 14 item 11 (a bad `--date` exited 78, the config error) and issue 13 item 5 (a date
/// before 1970 or 9999-12-30 panicked, exit 101): a usage error, exit 2, naming the flag.
#[test]
fn a_bad_or_out_of_range_date_is_a_usage_error_naming_the_argument() {
    for bad in [
        "2026-02-30",
        "26-01-01",
        "tomorrow",
        "0000-01-01",
        "1799-12-31",
        "2101-01-01",
        "9999-12-30",
        "9999-12-31",
    ] {
        let out = plan(bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.starts_with(&format!("cabinetd plan: --date {bad:?}: ")),
            "{bad}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{bad}");
    }
    let stderr = String::from_utf8_lossy(&plan("1799-12-31").stderr).into_owned();
    assert!(stderr.contains("1800-01-01 to 2100-12-31"), "{stderr}");
}

#[test]
fn a_night_before_1970_is_planned() {
    let out = plan("1969-07-20");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let head: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        head["dusk"].as_str().unwrap().starts_with("1969-07-20T19:"),
        "{head}"
    );
    assert!(text.lines().count() >= 3, "{text}");
}
