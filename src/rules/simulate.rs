//! `cabinetd simulate --config FILE […] --from T --to T [--inputs FILE]` (SPEC §1): the daemon's
//! core ([`Core`]: programme, rules, scenes, adaptive lighting, arbitration) run against an input
//! timeline with no device. The uplink is up at `--from`; mode follows `uplink.autonomous_after`.
//! Time is virtual: both clocks start at `--from` and advance together (no clock steps), from
//! one input or core deadline to the next.
//!
//! Input (`--inputs`, default none: the programme alone), one record per line, `at` RFC 3339,
//! non-decreasing:
//! - JSON lines: `{"at":T,"point":P,"value":V}` (optional `"quality":"good"|"bad"|"uncertain"`,
//!   default good; `V` a number, a boolean or null), `{"at":T,"uplink":"up"|"down"}`, and, for
//!   trying scenes and overrides, a central command `{"at":T,"command":{"action":A,"args":{…}}}`;
//! - or CSV (a file whose first non-blank line does not start with `{`): `at,point,value[,quality]`
//!   or `at,uplink,up|down`; a header line starting with `at,` is skipped; no quoting.
//!
//! Lines whose `at` is before `--from` set the state at `--from`; lines after `--to` are ignored.
//! Points must be points of the configuration and values of their type. Blank lines and lines
//! starting with `#` are skipped. Bounds: [`MAX_LINE`] bytes per line, [`MAX_LINES`] lines,
//! [`MAX_SPAN_DAYS`] days between `--from` and `--to`. Errors name `FILE:LINE`.
//!
//! Output, JSON lines in time order (`at` RFC 3339 UTC with milliseconds):
//! - actions (SPEC): `{"at":T,"target":S,"action":A,"args":{…},"by":C,"reason":S}`, plus
//!   `"command":ID` when it carries out a central command of the timeline (`ID` = `line-N`).
//!   `by` is `programme`, `adaptive:NAME`, `rule:NAME`, `scene:NAME` or `central`; the light
//!   actions of one instant are a batch (broad targets first, then the narrower ones they
//!   overwrote);
//! - events, as the cabinet would record them: `{"at":T,"event":KIND,"severity":S,"source":S,
//!   "message":S,"data":{…}}` (plus `"by"` for a rule's or scene's own event). Among them
//!   `mode_changed`, `rule_fired`, `control_changed` (data `{target,from,to,by}`) say who is in
//!   charge and why;
//! - who is in charge of every target: `{"at":T,"in_charge":{TARGET:CONTROLLER,…}}` once after
//!   the first step at `--from` and once at `--to`; a central command the core refuses prints
//!   `{"at":T,"rejected":ID,"reason":S}`.
//!
//! Exit codes: 0; 2 usage (arguments, timeline); 78 configuration; 1 writing the output.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Map, Value as Json};

use super::core::{parse_command, Core};
use super::{Now, Output};
use crate::config::{Config, PointCatalog, RuleAction};
use crate::record::Quality;
use crate::rules::expr::ValueType;

/// Longest input line, in bytes.
pub const MAX_LINE: usize = 4096;
/// Most input lines.
pub const MAX_LINES: usize = 1_000_000;
/// Longest simulated span.
pub const MAX_SPAN_DAYS: i64 = 400;
/// Core steps at one instant before the simulator moves on by a millisecond (a guard: the core
/// consumes its due deadlines in one step).
const MAX_STEPS_AT_ONCE: usize = 100;

/// Why a simulation did not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Bad arguments or input timeline (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The configuration cannot be simulated (exit 78).
    #[error("{0}")]
    Config(String),
    /// Writing the output failed (exit 1).
    #[error("writing the output: {0}")]
    Io(#[from] io::Error),
}

/// What one input line says.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Point {
        point: String,
        value: Json,
        quality: Quality,
    },
    Uplink(bool),
    Command {
        id: String,
        action: RuleAction,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Line {
    at: Timestamp,
    input: Input,
}

fn parse_time(s: &str, what: &str) -> Result<Timestamp, String> {
    s.trim().parse::<Timestamp>().map_err(|e| {
        format!("{what} {s:?} is not an RFC 3339 time (e.g. 2026-12-21T16:00:00Z): {e}")
    })
}

fn quality(s: &str) -> Result<Quality, String> {
    match s.trim() {
        "good" => Ok(Quality::Good),
        "bad" => Ok(Quality::Bad),
        "uncertain" => Ok(Quality::Uncertain),
        q => Err(format!("quality {q:?} is not good, bad or uncertain")),
    }
}

fn check_point(catalog: &PointCatalog, point: &str, value: &Json) -> Result<(), String> {
    let info = catalog
        .get(point)
        .ok_or_else(|| format!("unknown point {point:?} (not in the configuration)"))?;
    match (info.ty, value) {
        (_, Json::Null)
        | (ValueType::Bool, Json::Bool(_))
        | (ValueType::Number, Json::Number(_)) => Ok(()),
        (ValueType::Bool, _) => Err(format!(
            "{point} is a boolean point: value must be true, false or null"
        )),
        (ValueType::Number, _) => Err(format!(
            "{point} is a number point: value must be a number or null"
        )),
    }
}

fn parse_json_line(text: &str, n: usize, catalog: &PointCatalog) -> Result<Line, String> {
    let doc: Json = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = doc.as_object().ok_or("a line must be a JSON object")?;
    let at = match obj.get("at") {
        Some(Json::String(s)) => parse_time(s, "at")?,
        _ => return Err("missing \"at\" (an RFC 3339 time)".into()),
    };
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    let only = |allowed: &[&str]| match keys.iter().find(|k| !allowed.contains(k)) {
        Some(k) => Err(format!("unexpected key {k:?}")),
        None => Ok(()),
    };
    let input = if let Some(p) = obj.get("point") {
        only(&["at", "point", "value", "quality"])?;
        let point = p.as_str().ok_or("\"point\" must be a string")?.to_string();
        let value = obj.get("value").cloned().ok_or("missing \"value\"")?;
        check_point(catalog, &point, &value)?;
        let quality = match obj.get("quality") {
            None => Quality::Good,
            Some(Json::String(q)) => quality(q)?,
            Some(_) => return Err("\"quality\" must be a string".into()),
        };
        Input::Point {
            point,
            value,
            quality,
        }
    } else if let Some(u) = obj.get("uplink") {
        only(&["at", "uplink"])?;
        match u.as_str() {
            Some("up") => Input::Uplink(true),
            Some("down") => Input::Uplink(false),
            _ => return Err("\"uplink\" must be \"up\" or \"down\"".into()),
        }
    } else if let Some(c) = obj.get("command") {
        only(&["at", "command"])?;
        let c = c.as_object().ok_or("\"command\" must be an object")?;
        let name = c
            .get("action")
            .and_then(Json::as_str)
            .ok_or("command: field `action`: missing or not a string")?;
        let empty = Map::new();
        let args = match c.get("args") {
            None | Some(Json::Null) => &empty,
            Some(Json::Object(m)) => m,
            Some(_) => return Err("command: field `args`: must be an object".into()),
        };
        if let Some(k) = c.keys().find(|k| *k != "action" && *k != "args") {
            return Err(format!("command: unexpected key {k:?}"));
        }
        let action = parse_command(name, args).map_err(|e| format!("command: {e}"))?;
        Input::Command {
            id: format!("line-{n}"),
            action,
        }
    } else {
        return Err("a line has \"point\" and \"value\", \"uplink\", or \"command\"".into());
    };
    Ok(Line { at, input })
}

fn parse_csv_line(text: &str, catalog: &PointCatalog) -> Result<Line, String> {
    let f: Vec<&str> = text.split(',').map(str::trim).collect();
    if f.len() < 3 || f.len() > 4 {
        return Err("expected at,point,value[,quality] or at,uplink,up|down".into());
    }
    let at = parse_time(f[0], "at")?;
    if f[1] == "uplink" {
        let up = match f[2] {
            "up" => true,
            "down" => false,
            _ => return Err("uplink must be up or down".into()),
        };
        return Ok(Line {
            at,
            input: Input::Uplink(up),
        });
    }
    let value = match f[2] {
        "true" => Json::Bool(true),
        "false" => Json::Bool(false),
        "" | "null" => Json::Null,
        x => serde_json::from_str::<serde_json::Number>(x)
            .map(Json::Number)
            .map_err(|_| format!("value {x:?} is not a number, true, false or null"))?,
    };
    check_point(catalog, f[1], &value)?;
    let quality = match f.get(3) {
        Some(q) => quality(q)?,
        None => Quality::Good,
    };
    Ok(Line {
        at,
        input: Input::Point {
            point: f[1].to_string(),
            value,
            quality,
        },
    })
}

/// Reads the timeline, bounded, every error with its line number.
fn read_inputs(name: &str, reader: impl Read, catalog: &PointCatalog) -> Result<Vec<Line>, String> {
    let mut r = BufReader::new(reader);
    let mut out: Vec<Line> = Vec::new();
    let mut csv: Option<bool> = None;
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        let got = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| format!("{name}: {e}"))?;
        if got == 0 {
            break;
        }
        if n > MAX_LINES {
            return Err(format!("{name}: more than {MAX_LINES} lines"));
        }
        if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
            return Err(format!("{name}:{n}: line longer than {MAX_LINE} bytes"));
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|_| format!("{name}:{n}: not UTF-8"))?
            .trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let is_csv = *csv.get_or_insert(!text.starts_with('{'));
        if is_csv && out.is_empty() && text.starts_with("at,") {
            continue;
        }
        let line = if is_csv {
            parse_csv_line(text, catalog)
        } else {
            parse_json_line(text, n, catalog)
        }
        .map_err(|e| format!("{name}:{n}: {e}"))?;
        if let Some(prev) = out.last() {
            if line.at < prev.at {
                return Err(format!(
                    "{name}:{n}: at {} is before the previous line's {} (the timeline must be in time order)",
                    line.at, prev.at
                ));
            }
        }
        out.push(line);
    }
    Ok(out)
}

fn ts(t: Timestamp) -> String {
    crate::record::format_ts(std::time::SystemTime::try_from(t).unwrap_or(std::time::UNIX_EPOCH))
}

#[derive(serde::Serialize)]
struct ActionLine<'a> {
    at: String,
    target: String,
    action: &'static str,
    args: Json,
    by: String,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct EventLine<'a> {
    at: String,
    event: &'a str,
    severity: crate::record::Severity,
    source: &'a str,
    message: &'a str,
    data: &'a Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<String>,
}

fn print(out: &mut dyn Write, at: Timestamp, o: &Output) -> io::Result<()> {
    let line = match o {
        Output::Action(a) => serde_json::to_string(&ActionLine {
            at: ts(at),
            target: a.target(),
            action: a.action.name(),
            args: a.args(),
            by: a.by.to_string(),
            reason: &a.reason,
            command: a.command.as_deref(),
        }),
        Output::Event(e) => serde_json::to_string(&EventLine {
            at: ts(at),
            event: e.kind.as_str(),
            severity: e.severity,
            source: &e.source,
            message: &e.message,
            data: &e.data,
            by: e.by.as_ref().map(ToString::to_string),
        }),
    };
    writeln!(out, "{}", line.expect("plain data serialises"))
}

fn in_charge(out: &mut dyn Write, at: Timestamp, core: &Core) -> io::Result<()> {
    #[derive(serde::Serialize)]
    struct InCharge {
        at: String,
        in_charge: std::collections::BTreeMap<String, String>,
    }
    let line = InCharge {
        at: ts(at),
        in_charge: core.controllers(),
    };
    writeln!(out, "{}", serde_json::to_string(&line).expect("plain data"))
}

/// Runs the simulation of `cfg` from `from` to `to` (RFC 3339) over the timeline in `inputs`
/// (named `name` in messages), writing JSON lines to `out`.
pub fn run(
    cfg: &Config,
    from: &str,
    to: &str,
    inputs: Option<(&str, &mut dyn Read)>,
    out: &mut dyn Write,
) -> Result<(), SimError> {
    let from = parse_time(from, "--from").map_err(SimError::Usage)?;
    let to = parse_time(to, "--to").map_err(SimError::Usage)?;
    if to <= from {
        return Err(SimError::Usage(format!(
            "--to {to} must be after --from {from}"
        )));
    }
    if (to - from).as_secs() > MAX_SPAN_DAYS * 86_400 {
        return Err(SimError::Usage(format!(
            "--from to --to spans more than {MAX_SPAN_DAYS} days"
        )));
    }
    let catalog = PointCatalog::new(&cfg.modbus, &cfg.dali, &cfg.cameras);
    let lines = match inputs {
        Some((name, r)) => read_inputs(name, r, &catalog).map_err(SimError::Usage)?,
        None => Vec::new(),
    };
    let now_at = |t: Timestamp| Now {
        mono: Duration::try_from(t.duration_since(from)).unwrap_or(Duration::ZERO),
        wall: t,
    };
    // A simulation trusts its clock: any date may be simulated.
    let (mut core, _) = Core::new(cfg, now_at(from), true, Timestamp::MIN, None)
        .map_err(|e| SimError::Config(e.to_string()))?;
    let mut next = 0;
    let mut t = from;
    let mut first = true;
    let mut at_once = 0;
    loop {
        let now = now_at(t);
        while let Some(l) = lines.get(next).filter(|l| l.at <= t) {
            next += 1;
            match &l.input {
                Input::Point {
                    point,
                    value,
                    quality,
                } => core.observe(point, value, *quality, now.mono),
                Input::Uplink(up) => core.set_uplink(*up, now),
                Input::Command { id, action } => {
                    if let Err(reason) = core.command(action.clone(), Some(id.clone()), now) {
                        #[derive(serde::Serialize)]
                        struct Rejected<'a> {
                            at: String,
                            rejected: &'a str,
                            reason: &'a str,
                        }
                        let line = Rejected {
                            at: ts(t),
                            rejected: id,
                            reason: &reason,
                        };
                        writeln!(out, "{}", serde_json::to_string(&line).expect("plain data"))?;
                    }
                }
            }
        }
        let step = core.step(now);
        for o in &step.outputs {
            print(out, t, o)?;
        }
        if first {
            in_charge(out, t, &core)?;
            first = false;
        }
        if t >= to {
            break;
        }
        let wake = core.next_wakeup(now);
        at_once = if wake.is_zero() { at_once + 1 } else { 0 };
        let wake = if at_once > MAX_STEPS_AT_ONCE {
            at_once = 0;
            Duration::from_millis(1)
        } else {
            wake
        };
        let deadline = jiff::SignedDuration::try_from(wake)
            .ok()
            .and_then(|d| t.checked_add(d).ok())
            .unwrap_or(to);
        let input = lines.get(next).map(|l| l.at);
        t = [Some(deadline), input, Some(to)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(to)
            .max(t);
    }
    in_charge(out, to, &core)?;
    out.flush()?;
    Ok(())
}

/// `cabinetd simulate`: opens `--inputs` and runs [`run`] to stdout.
pub fn cli(cfg: &Config, from: &str, to: &str, inputs: Option<&Path>) -> Result<(), SimError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match inputs {
        Some(p) => {
            let name = p.display().to_string();
            let mut f = std::fs::File::open(p)
                .map_err(|e| SimError::Usage(format!("--inputs {name}: {e}")))?;
            run(cfg, from, to, Some((&name, &mut f)), &mut out)
        }
        None => run(cfg, from, to, None, &mut out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> PointCatalog {
        let cfg = crate::config::load_sources(&[crate::config::Source {
            name: "t".into(),
            text: "[cabinet]\nid = \"c\"\nlatitude = 47.3\nlongitude = 5.0\n[storage]\npath = \"/tmp/x\"\n[uplink]\nbroker = \"mqtt://127.0.0.1\"\n[security]\nrequire_signed = false\n[[modbus]]\nname = \"w\"\naddress = \"127.0.0.1\"\n  [[modbus.point]]\n  name = \"t\"\n  table = \"input\"\n  address = 0\n  [[modbus.point]]\n  name = \"door\"\n  table = \"discrete\"\n  address = 0\n".into(),
        }])
        .unwrap();
        PointCatalog::new(&cfg.modbus, &cfg.dali, &cfg.cameras)
    }

    fn read(text: &str) -> Result<Vec<Line>, String> {
        read_inputs("in.jsonl", text.as_bytes(), &catalog())
    }

    #[test]
    fn json_and_csv_timelines() {
        let j = read(
            "# a comment\n{\"at\":\"2026-12-21T16:00:00Z\",\"point\":\"w/t\",\"value\":0.5}\n\n{\"at\":\"2026-12-21T16:00:00Z\",\"uplink\":\"down\"}\n{\"at\":\"2026-12-21T17:00:00+01:00\",\"point\":\"w/door\",\"value\":true,\"quality\":\"bad\"}\n{\"at\":\"2026-12-21T16:00:01Z\",\"command\":{\"action\":\"scene.run\",\"args\":{\"scene\":\"x\",\"hold_s\":60}}}\n",
        )
        .unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(j[1].input, Input::Uplink(false));
        assert!(matches!(
            &j[2].input,
            Input::Point {
                quality: Quality::Bad,
                ..
            }
        ));
        assert!(matches!(&j[3].input, Input::Command { id, .. } if id == "line-6"));
        let c = read("at,point,value\n2026-12-21T16:00:00Z,w/t,1.5\n2026-12-21T16:00:00Z,uplink,up\n2026-12-21T16:00:01Z,w/door,false,uncertain\n").unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[1].input, Input::Uplink(true));
    }

    /// The programme's weekday variants and calendar exceptions show in what `simulate`
    /// prints: which step acted, and on which night's day type.
    #[test]
    fn programme_variants_show_in_the_reasons() {
        let text = format!(
            "{}\n[lighting]\n[[lighting.calendar]]\nname = \"holiday\"\ndates = [\"2026-07-14\"]\n[[lighting.step]]\ntarget = \"all\"\nat = \"dusk\"\nlevel_percent = 100\n[[lighting.step]]\ntarget = \"all\"\nat = \"22:00\"\nlevel_percent = 70\nreason = \"dimming\"\nnights = [\"mon\", \"tue\", \"wed\", \"thu\", \"sun\"]\n[[lighting.step]]\ntarget = \"all\"\nat = \"23:30\"\nlevel_percent = 70\nreason = \"late dimming\"\nnights = [\"fri\", \"sat\", \"holiday\"]\n",
            crate::rules::testutil::BASE
        );
        let cfg = crate::config::load_sources(&[crate::config::Source {
            name: "t".into(),
            text,
        }])
        .unwrap_or_else(|e| panic!("{e}"));
        let run_night = |from: &str, to: &str| {
            let mut out = Vec::new();
            run(&cfg, from, to, None, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        // Monday 13 July: 22:00 Paris; Tuesday 14 July, a holiday: 23:30.
        let mon = run_night("2026-07-13T19:00:00Z", "2026-07-14T00:00:00Z");
        assert!(mon.contains("\"at\":\"2026-07-13T20:00:00.000Z\""), "{mon}");
        assert!(mon.contains("dimming [mon]"), "{mon}");
        let hol = run_night("2026-07-14T19:00:00Z", "2026-07-15T00:00:00Z");
        assert!(hol.contains("\"at\":\"2026-07-14T21:30:00.000Z\""), "{hol}");
        assert!(hol.contains("late dimming [holiday]"), "{hol}");
        assert!(!hol.contains("dimming [tue]"), "{hol}");
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("{\"at\":\"x\",\"point\":\"w/t\",\"value\":1}", "in.jsonl:1: at \"x\""),
            ("\n{\"at\":\"2026-12-21T16:00:00Z\",\"point\":\"w/x\",\"value\":1}", "in.jsonl:2: unknown point"),
            ("{\"at\":\"2026-12-21T16:00:00Z\",\"point\":\"w/door\",\"value\":1}", "boolean point"),
            ("{\"at\":\"2026-12-21T16:00:00Z\",\"uplink\":\"sideways\"}", "\"up\" or \"down\""),
            ("{\"at\":\"2026-12-21T16:00:00Z\",\"point\":\"w/t\",\"value\":1,\"extra\":1}", "unexpected key"),
            ("{\"at\":\"2026-12-21T16:00:01Z\",\"uplink\":\"up\"}\n{\"at\":\"2026-12-21T16:00:00Z\",\"uplink\":\"up\"}", "in.jsonl:2: at 2026-12-21T16:00:00Z is before"),
            ("{\"at\":\"2026-12-21T16:00:00Z\",\"command\":{\"action\":\"light.set\",\"args\":{\"target\":\"all\"}}}", "field `args.level_percent`"),
            ("{\"at\":\"2026-12-21T16:00:00Z\"}", "a line has"),
        ];
        for (text, needle) in cases {
            let e = read(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
        let long = format!("{{\"at\":\"{}\"}}", "x".repeat(MAX_LINE));
        assert!(read(&long).unwrap_err().contains("in.jsonl:1: line longer"));
    }
}
