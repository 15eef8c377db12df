//! The automation sections of the config (`[[rule]]`, `[[scene]]`, `[[lighting.adaptive]]`,
//! `uplink.autonomous_after`): every error at its position, positions inside expression strings
//! (escapes, multi-line strings), loops through scenes and luminaire levels, merging by name.

use std::time::Duration;

use cabinetd::config::{load_sources, Config, During, RuleAction, RuleMode, Source};

const BASE: &str = r#"[cabinet]
id = "t-1"
latitude = 47.3
longitude = 5.0

[storage]
path = "/tmp/cabinetd-test"

[uplink]
broker = "mqtt://127.0.0.1:1883"

[security]
require_signed = false

[[modbus]]
name = "w"
address = "127.0.0.1:502"
  [[modbus.point]]
  name = "temp"
  table = "input"
  address = 0
  type = "i16"
  [[modbus.point]]
  name = "door"
  table = "discrete"
  address = 0
  [[modbus.point]]
  name = "plan"
  table = "holding"
  address = 1
  writable = true
  min = 0
  max = 15

[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 8
  [[dali.group]]
  number = 1
  members = [0, 1, 2]

[[camera]]
name = "cam-1"
address = "http://10.0.0.50/onvif/device_service"
username = "u"
password_file = "/etc/cabinetd/cam"
"#;

fn load(b: &str) -> Result<Config, Vec<String>> {
    load_sources(&[
        Source {
            name: "a.toml".into(),
            text: BASE.into(),
        },
        Source {
            name: "b.toml".into(),
            text: b.into(),
        },
    ])
    .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

/// Exactly these errors (`"b.toml:L:C: …needle…"` prefixes and needles), in order.
#[track_caller]
fn errors(b: &str, want: &[(&str, &str)]) {
    let got = load(b).err().unwrap_or_default();
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, (pos, needle)) in got.iter().zip(want) {
        assert!(
            g.starts_with(&format!("b.toml:{pos}: ")) && g.contains(needle),
            "expected b.toml:{pos}: …{needle}…, got {g}"
        );
    }
}

#[test]
fn a_full_rule_and_scene_load_with_defaults() {
    let c = load(
        r#"
[[scene]]
name = "route"
hold = "15min"
  [[scene.action]]
  action = "point.write"
  args = { point = "w/plan", value = 7 }
  [[scene.action]]
  action = "camera.goto_preset"
  args = { camera = "cam-1", preset = "2" }

[[rule]]
name = "cold"
when = "w/temp < 1"
for = "10min"
clear_when = "w/temp > 2"
clear_for = "1min"
mode = "connected"
during = "22:00-05:00"
weekdays = ["fri", "sat"]
  [[rule.then]]
  action = "scene.run"
  args = { scene = "route", hold_s = 60 }
  [[rule.then]]
  action = "event"
  args = { kind = "cold", severity = "minor", message = "cold", source = "w/temp" }
  [[rule.on_clear]]
  action = "light.set"
  args = { target = "group:1", level_percent = 100, hold_s = 600 }
"#,
    )
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let a = &c.automation;
    assert_eq!(a.autonomous_after, Duration::from_secs(60));
    let r = &a.rules[0];
    assert_eq!(r.for_, Duration::from_secs(600));
    assert_eq!(r.clear_for, Duration::from_secs(60));
    assert_eq!(r.mode, RuleMode::Connected);
    assert_eq!(
        r.during,
        Some(During::Clock {
            start: 22 * 60,
            end: 5 * 60
        })
    );
    assert_eq!(r.weekdays.map(|w| w.0), Some(0b011_0000));
    assert!(
        matches!(&r.then[0], RuleAction::SceneRun { scene, hold_s: Some(h) } if scene == "route" && *h == 60.0)
    );
    assert_eq!(a.scenes[0].hold, Some(Duration::from_secs(900)));
    assert_eq!(a.scenes[0].actions.len(), 2);
    let c = load("[uplink]\nautonomous_after = \"5min\"\n").unwrap();
    assert_eq!(c.automation.autonomous_after, Duration::from_secs(300));
}

#[test]
fn expression_errors_point_inside_the_string() {
    // Basic string with escapes before the error, literal string, multi-line string.
    errors(
        "[[rule]]\nname = \"a\"\nwhen = \"w/door == true and mode == \\\"x\\\"\"\n",
        &[("3:36", "mode is \"connected\" or \"autonomous\"")],
    );
    errors(
        "[[rule]]\nname = \"a\"\nwhen = 'w/temp < \"1\"'\n",
        &[("3:18", "w/temp is a number")],
    );
    errors(
        "[[rule]]\nname = \"a\"\nwhen = \"\"\"\nw/temp < 1 and\n  w/nope > 2\"\"\"\n",
        &[("5:3", "unknown point \"w/nope\"")],
    );
    errors(
        "[[rule]]\nname = \"a\"\nwhen = \"\\u00e9t\\u00E9/x < 1\"\n",
        &[("3:9", "unexpected character 'é'")],
    );
    errors(
        "[[rule]]\nname = \"a\"\nwhen = \"bus-a/64/level < 1 or bus-a/3/levl > 0 or cam-1/online == 1\"\n",
        &[
            ("3:9", "unknown point \"bus-a/64/level\""),
            ("3:31", "did you mean \"bus-a/3/level\""),
            ("3:67", "cam-1/online is a boolean"),
        ],
    );
}

#[test]
fn every_key_is_checked() {
    errors(
        r#"
[[rule]]
name = "Bad Name"
when = "w/temp < 1"
[[rule]]
name = "b"
wen = "w/temp < 1"
clear_for = "1min"
mode = "sometimes"
during = "22h-5h"
weekdays = ["mon", "funday", "mon"]
for = "1 fortnight"
"#,
        &[
            ("3:8", "must match [a-z0-9_-]+"),
            ("5:1", "missing required key rule[b].when"),
            ("7:1", "unknown key rule[b].wen, did you mean \"when\"?"),
            ("8:1", "clear_for applies only with clear_when"),
            ("9:8", "\"always\", \"autonomous\", \"connected\""),
            ("10:10", "must be \"night\" or local clock times"),
            ("11:20", "days are"),
            ("11:30", "lists mon twice"),
            ("12:7", "invalid duration"),
        ],
    );
    errors(
        "[[rule]]\nname = \"a\"\nwhen = \"w/temp < 1\"\nduring = \"05:00-05:00\"\n[[rule]]\nname = \"a\"\nwhen = \"w/temp < 1\"\n",
        &[("4:10", "is empty"), ("6:8", "duplicate rule name \"a\"")],
    );
}

#[test]
fn actions_are_validated_like_commands_and_against_the_cabinet() {
    errors(
        r#"
[[rule]]
name = "a"
when = "w/temp < 1"
  [[rule.then]]
  action = "light.set"
  args = { target = "group:1", level_percent = 120 }
  [[rule.then]]
  action = "light.set"
  args = { target = "group:7", level_percent = 10 }
  [[rule.then]]
  action = "light.set"
  args = { target = "bus-b/1", level_percent = 10 }
  [[rule.then]]
  action = "point.write"
  args = { point = "w/plan", value = 99 }
  [[rule.then]]
  action = "point.write"
  args = { point = "w/plan", value = true }
  [[rule.then]]
  action = "camera.reboot"
  args = { camera = "cam-2" }
  [[rule.then]]
  action = "fly"
  [[rule.then]]
  action = "event"
  args = { kind = "rule_fired", severity = "bad", message = "" }
  [[rule.on_clear]]
  action = "light.set"
  args = { target = "all", level_percent = 10 }
  [[rule.on_clear]]
  action = "scene.release"
  args = { scene = "none", x = 1 }
"#,
        &[
            ("7:48", "field `args.level_percent`: 120 is outside 0..=100"),
            ("10:21", "no [[dali]] bus configures group 7"),
            ("13:21", "no [[dali]] bus is named \"bus-b\""),
            ("16:38", "99 is outside w/plan's range [0, 15]"),
            ("19:38", "w/plan takes a number"),
            ("22:21", "no [[camera]] is named \"cam-2\""),
            ("24:12", "field `action`: unknown action \"fly\""),
            (
                "27:19",
                "field `args.kind`: event kind \"rule_fired\" is a built-in kind the daemon raises itself",
            ),
            ("27:44", "field `args.severity`"),
            ("27:61", "field `args.message`"),
            ("28:3", "light.set in on_clear needs hold_s"),
            ("33:32", "field `args.x`: not an argument of scene.release"),
        ],
    );
    errors(
        r#"
[[scene]]
name = "s"
  [[scene.action]]
  action = "light.release"
  args = { target = "all" }
[[scene]]
name = "empty"
"#,
        &[
            ("5:12", "light.release is not allowed in a scene"),
            ("7:1", "has no actions"),
        ],
    );
}

#[test]
fn loops_through_scenes_and_luminaire_levels_are_refused() {
    errors(
        r#"
[[scene]]
name = "bright"
  [[scene.action]]
  action = "light.set"
  args = { target = "all", level_percent = 100 }

[[rule]]
name = "dim-watch"
when = "bus-a/1/level < 50"
  [[rule.then]]
  action = "point.write"
  args = { point = "w/plan", value = 1 }

[[rule]]
name = "plan-watch"
when = "w/plan == 1"
  [[rule.then]]
  action = "scene.run"
  args = { scene = "bright" }

[[rule]]
name = "fine"
when = "bus-a/5/level < 50"
  [[rule.then]]
  action = "light.set"
  args = { target = "group:1", level_percent = 100 }
"#,
        &[(
            "9:8",
            "rule \"dim-watch\" is in a loop: its actions change its own inputs: rule \"dim-watch\" (then[0] point.write w/plan) changes w/plan, read by rule \"plan-watch\" at b.toml:16; rule \"plan-watch\" (then[0] scene.run bright → action[0] light.set all) changes bus-a/1/level, read by rule \"dim-watch\" at b.toml:9",
        )],
    );
}

#[test]
fn adaptive_lighting_keys() {
    let c = load(
        "[[lighting.adaptive]]\nname = \"street\"\ntarget = \"group:1\"\nusage = \"w/temp\"\n",
    )
    .unwrap();
    let ad = &c.automation.adaptive[0];
    assert_eq!(ad.hold, Duration::from_secs(300));
    assert_eq!(ad.fade, Duration::from_secs(30));
    assert_eq!(ad.levels.len(), 4);
    errors(
        r#"
[[lighting.adaptive]]
name = "street"
target = "group:9"
usage = "w/nothing"
fade = "1h"
  [[lighting.adaptive.level]]
  flow = 100
  level_percent = 50
  [[lighting.adaptive.level]]
  flow = 50
  level_percent = 70
"#,
        &[
            ("4:10", "no [[dali]] bus configures group 9"),
            ("5:9", "must name a configured point"),
            ("6:8", "between 0s and 5m"),
            ("11:10", "must be higher than the row before"),
        ],
    );
}

#[test]
fn rules_and_scenes_merge_by_name_across_files() {
    let one = "[[rule]]\nname = \"a\"\nwhen = \"w/temp < 1\"\n[[rule]]\nname = \"b\"\nwhen = \"w/temp < 2\"\n";
    let two = "[[rule]]\nname = \"a\"\nwhen = \"w/temp < 5\"\n[[rule]]\nname = \"c\"\nwhen = \"w/temp < 3\"\n";
    let c = load_sources(&[
        Source {
            name: "a.toml".into(),
            text: format!("{BASE}{one}"),
        },
        Source {
            name: "b.toml".into(),
            text: two.into(),
        },
    ])
    .unwrap();
    let names: Vec<(&str, &str)> = c
        .automation
        .rules
        .iter()
        .map(|r| (r.name.as_str(), r.when.text()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("a", "w/temp < 5"),
            ("b", "w/temp < 2"),
            ("c", "w/temp < 3")
        ]
    );
}
