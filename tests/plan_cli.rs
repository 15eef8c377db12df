//! `cabinetd plan` as the energy manager uses it: the night's plan as JSON lines (SPEC §1).

mod support;

use std::path::{Path, PathBuf};
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

/// A config of the demo's shape for another place and programme, in `dir`.
fn config_file(dir: &Path, name: &str, cabinet: &str, lighting: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "{cabinet}\n[storage]\npath = {:?}\n\n[uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\n[security]\nrequire_signed = false\n\n{lighting}",
        dir.join("state")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn plan_lines(config: &Path, date: &str) -> Vec<serde_json::Value> {
    let out = Command::new(cabinetd_bin())
        .args(["plan", "--date", date, "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{date}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

const DIMMING: &str = r#"[lighting]
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100

[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70

[[lighting.step]]
target = "all"
at = "05:00"
level_percent = 100
"#;

/// Issue 13 item 4: past the date line `plan --date D` printed the next local evening, and a
/// step was lost every night (05:00 at Apia, 22:00 at Attu on Adak's time). Every night of 2026:
/// dusk on the local evening of D, 22:00 that evening (or at dusk when it is later), 05:00 the
/// next morning, dawn, and no note.
#[test]
fn nights_past_the_date_line_keep_every_step_all_year() {
    let dir = tempfile::tempdir().unwrap();
    let places = [
        (
            "apia",
            "[cabinet]\nid = \"apia\"\nlatitude = -13.83\nlongitude = -171.76\ntimezone = \"Pacific/Apia\"\n",
            cabinetd::config::time_zone("Pacific/Apia"),
        ),
        (
            "attu",
            "[cabinet]\nid = \"attu\"\nlatitude = 52.85\nlongitude = 173.18\ntimezone = \"America/Adak\"\n",
            cabinetd::config::time_zone("America/Adak"),
        ),
    ];
    let handles: Vec<_> = places
        .into_iter()
        .map(|(name, cabinet, tz)| {
            let config = config_file(dir.path(), name, cabinet, DIMMING);
            let tz = tz.unwrap();
            std::thread::spawn(move || {
                let local = |v: &serde_json::Value| {
                    let t: jiff::Timestamp = v.as_str().unwrap().parse().unwrap();
                    t.to_zoned_datetime(tz.clone()).datetime()
                };
                let mut d = jiff::civil::date(2026, 1, 1);
                let mut deferred = 0;
                while d.year() == 2026 {
                    let lines = plan_lines(&config, &d.to_string());
                    let head = &lines[0];
                    assert!(head.get("notes").is_none(), "{name} {d}: {head}");
                    let reasons: Vec<&str> = lines[1..]
                        .iter()
                        .map(|l| l["reason"].as_str().unwrap())
                        .collect();
                    let next = d.tomorrow().unwrap();
                    let dusk = local(&head["dusk"]);
                    assert!(dusk.date() == d && dusk.hour() >= 12, "{name} {d}: {head}");
                    if reasons[1] == "22:00" {
                        assert_eq!(local(&lines[2]["at"]), d.at(22, 0, 0, 0), "{name}");
                    } else {
                        assert_eq!(reasons[1], "22:00 (applied at dusk)", "{name} {d}");
                        assert_eq!(lines[2]["at"], head["dusk"]);
                        deferred += 1;
                    }
                    assert_eq!(
                        [reasons[0], reasons[2], reasons[3]],
                        ["dusk", "05:00", "dawn"],
                        "{name} {d}"
                    );
                    assert_eq!(local(&lines[3]["at"]), next.at(5, 0, 0, 0), "{name} {d}");
                    assert_eq!(lines[4]["at"], head["dawn"]);
                    assert_eq!(local(&head["dawn"]).date(), next, "{name} {d}");
                    d = next;
                }
                deferred
            })
        })
        .collect();
    let deferred: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Apia's nights always include 22:00; Attu's summer dusk comes after it.
    assert_eq!(deferred[0], 0);
    assert!(deferred[1] > 0);
}

/// Issue 13 item 11: with civil twilight at Dijon the summer dusk is after 22:00; the dimming
/// applies at dusk and the plan says why.
#[test]
fn civil_summer_night_dims_at_dusk_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let lighting = DIMMING
        .replace("[lighting]", "[lighting]\ntwilight = \"civil\"")
        .replace(
            "at = \"22:00\"\nlevel_percent = 70",
            "at = \"22:00\"\nlevel_percent = 70\nreason = \"night dimming\"",
        );
    let cabinet = "[cabinet]\nid = \"dijon-017\"\nlatitude = 47.322\nlongitude = 5.0415\ntimezone = \"Europe/Paris\"\n";
    let config = config_file(dir.path(), "dijon", cabinet, &lighting);
    let lines = plan_lines(&config, "2026-06-21");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[2]["reason"], "night dimming (22:00, applied at dusk)");
    assert_eq!(lines[2]["at"], lines[0]["dusk"]);
    assert_eq!(lines[2]["level_percent"], 70);
    // Dusk's own step comes first, so the dimmed level is the one that stays.
    assert_eq!(lines[1]["reason"], "dusk");
    assert_eq!(lines[1]["at"], lines[0]["dusk"]);
    // In winter 22:00 is after dusk: at its own time.
    let lines = plan_lines(&config, "2026-12-21");
    assert_eq!(lines[2]["reason"], "night dimming");
    assert_eq!(lines[2]["at"], "2026-12-21T21:00:00.000Z");
}
