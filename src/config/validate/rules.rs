//! Validation of the automation sections: `[[rule]]`, `[[scene]]`, `[[lighting.adaptive]]` and
//! `uplink.autonomous_after` (types in `automation.rs`).
//!
//! Declared inside `validate.rs` so it shares its helpers. Invariants, as for the rest of the
//! config: every problem is reported, each at the key or value it is about; an expression error
//! points *inside* the TOML string (the value's position plus the offset in the decoded text,
//! escapes and multi-line strings accounted for); actions are validated like commands (the
//! argument checks of `command.rs`) and then against this cabinet (known writable points and
//! their bounds, configured buses, groups, cameras, scenes); a loop between rules (a rule whose
//! actions change its own inputs, directly or through other rules and scenes) is an error naming
//! every rule in it (`crate::rules::graph`).

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::*;
use crate::command::Action;
use crate::config::automation::{
    Adaptive, Automation, During, EventSpec, FlowLevel, PointCatalog, Rule, RuleAction, RuleMode,
    Scene, Weekdays, DEFAULT_ADAPTIVE_FADE, DEFAULT_ADAPTIVE_HOLD, DEFAULT_AUTONOMOUS_AFTER,
    DEFAULT_FLOW_LEVELS,
};
use crate::record::Severity;
use crate::rules::expr::{Expr, ExprError};
use crate::rules::graph::{cycles, Topology, Write};

const RULE_KEYS: &[&str] = &[
    "name",
    "when",
    "for",
    "clear_when",
    "clear_for",
    "mode",
    "during",
    "weekdays",
    "then",
    "on_clear",
];
const SCENE_KEYS: &[&str] = &["name", "hold", "action"];
const ACTION_KEYS: &[&str] = &["action", "args"];
const ADAPTIVE_KEYS: &[&str] = &["name", "target", "usage", "hold", "fade", "level"];
const LEVEL_KEYS: &[&str] = &["flow", "level_percent"];
const EVENT_ARGS: &[&str] = &["kind", "severity", "message", "source"];

/// `for`, `clear_for`, scene `hold` bounds: a week is beyond any sensible automation delay.
const MAX_DELAY: Duration = WEEK;
/// Bound of a rule's or scene's action list.
const MAX_ACTIONS: usize = 64;
/// Bound of an event message.
const MAX_MESSAGE: usize = 256;

/// Where an action is written: decides which actions are allowed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Then,
    OnClear,
    Scene,
}

/// What the validation of actions needs of the rest of the config.
struct Ctx<'a> {
    catalog: PointCatalog,
    dali: &'a [DaliBus],
    cameras: &'a [Camera],
    scenes: Vec<String>,
    texts: &'a [&'a str],
}

/// Validates the automation sections; `texts` are the sources (for positions inside strings).
pub(super) fn automation(
    cx: &mut Cx,
    root: &Tbl,
    texts: &[&str],
    names: &[String],
    modbus: &[ModbusDevice],
    dali: &[DaliBus],
    cameras: &[Camera],
) -> Automation {
    let mut a = Automation::default();
    if let Some(Val::Table(up)) = root.get("uplink").map(|e| &e.node.val) {
        a.autonomous_after = cx
            .opt_dur(up, "uplink", "autonomous_after", Duration::ZERO, DAY)
            .unwrap_or(DEFAULT_AUTONOMOUS_AFTER);
    }
    let mut ctx = Ctx {
        catalog: PointCatalog::new(modbus, dali, cameras),
        dali,
        cameras,
        scenes: Vec::new(),
        texts,
    };
    // Scene names first: rules refer to them wherever they are written.
    let scene_tables = cx.tables(root, "scene", "scene");
    for t in &scene_tables {
        if let Some(Val::Str(s)) = t.get("name").map(|e| &e.node.val) {
            ctx.scenes.push(s.clone());
        }
    }
    let mut unique = Unique::new("scene name");
    let mut scene_locs = Vec::new();
    for (i, t) in scene_tables.into_iter().enumerate() {
        let loc = t.get("name").map_or(t.loc, |e| e.node.loc);
        if let Some(s) = scene(cx, t, i, &mut unique, &ctx) {
            a.scenes.push(s);
            scene_locs.push(loc);
        }
    }
    unique.report(cx, names);
    let mut unique = Unique::new("rule name");
    let mut rule_locs = Vec::new();
    for (i, t) in cx.tables(root, "rule", "rule").into_iter().enumerate() {
        let loc = t.get("name").map_or(t.loc, |e| e.node.loc);
        if let Some(r) = rule(cx, t, i, &mut unique, &ctx) {
            a.rules.push(r);
            rule_locs.push(loc);
        }
    }
    unique.report(cx, names);
    let mut adaptive_locs = Vec::new();
    if let Some(Val::Table(l)) = root.get("lighting").map(|e| &e.node.val) {
        let mut unique = Unique::new("adaptive lighting name");
        for (i, t) in cx
            .tables(l, "adaptive", "lighting.adaptive")
            .into_iter()
            .enumerate()
        {
            let loc = t.get("name").map_or(t.loc, |e| e.node.loc);
            if let Some(ad) = adaptive(cx, t, i, &mut unique, &ctx) {
                a.adaptive.push(ad);
                adaptive_locs.push(loc);
            }
        }
        unique.report(cx, names);
    }
    loops(cx, &a, &rule_locs, &adaptive_locs, dali, names);
    a
}

/// Position of byte `offset` of the decoded string whose value starts (at its opening quote) at
/// `loc`: walks the raw TOML string, counting what each escape decodes to.
fn inner_loc(texts: &[&str], loc: Loc, offset: usize) -> Loc {
    let Some(text) = texts.get(loc.src) else {
        return loc;
    };
    let start: usize = text
        .split_inclusive('\n')
        .take(loc.line.saturating_sub(1))
        .map(str::len)
        .sum();
    let Some(b) = text[start..]
        .char_indices()
        .nth(loc.col.saturating_sub(1))
        .map(|(i, _)| start + i)
    else {
        return loc;
    };
    let raw = &text[b..];
    let (delim, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        return loc;
    };
    let mut i = b + delim;
    if delim == 3 {
        if text[i..].starts_with("\r\n") {
            i += 2;
        } else if text[i..].starts_with('\n') {
            i += 1;
        }
    }
    let mut decoded = 0;
    while decoded < offset && i < text.len() {
        let rest = &text[i..];
        let c = rest.chars().next().unwrap_or(' ');
        if basic && c == '\\' {
            let hex = |n: usize| {
                rest.get(2..2 + n)
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .map_or(1, char::len_utf8)
            };
            match rest[1..].chars().next() {
                Some('u') => (decoded, i) = (decoded + hex(4), i + 6),
                Some('U') => (decoded, i) = (decoded + hex(8), i + 10),
                Some('x') => (decoded, i) = (decoded + hex(2), i + 4),
                Some(w) if w.is_whitespace() && delim == 3 => {
                    // Line-ending backslash: the newline and following whitespace vanish.
                    i += 1 + rest[1..]
                        .find(|ch: char| !ch.is_whitespace())
                        .unwrap_or(rest.len() - 1);
                }
                Some(_) => (decoded, i) = (decoded + 1, i + 2),
                None => break,
            }
        } else {
            i += c.len_utf8();
            decoded += c.len_utf8();
        }
    }
    let (line, col) = super::tree::LineIndex::new(text).line_col(i);
    Loc {
        src: loc.src,
        line,
        col,
    }
}

/// A `when` / `clear_when`: parsed, type-checked, errors positioned inside the string.
fn expression(cx: &mut Cx, t: &Tbl, p: &str, key: &str, ctx: &Ctx<'_>) -> Option<Expr> {
    let required = key == "when";
    let (s, loc) = if required {
        cx.req_str(t, p, key)?
    } else {
        cx.opt_str(t, p, key)?
    };
    let report = |cx: &mut Cx, e: ExprError| {
        cx.err(
            inner_loc(ctx.texts, loc, e.span.start),
            format!("{p}.{key}: {}", e.message),
        )
    };
    let x = match Expr::parse(s) {
        Ok(x) => x,
        Err(e) => {
            report(cx, e);
            return None;
        }
    };
    let errs = x.check(
        |point| ctx.catalog.get(point).map(|i| i.ty),
        |point| {
            let known = ctx.catalog.names_like(point);
            let refs: Vec<&str> = known.iter().map(String::as_str).collect();
            suggest(point, &refs).map(str::to_string)
        },
    );
    let ok = errs.is_empty();
    for e in errs {
        report(cx, e);
    }
    ok.then_some(x)
}

fn rule(cx: &mut Cx, t: &Tbl, i: usize, unique: &mut Unique, ctx: &Ctx<'_>) -> Option<Rule> {
    let (name, p) = named(cx, t, "rule", i, unique);
    let p = p.as_str();
    cx.check_keys(t, p, RULE_KEYS);
    let when = expression(cx, t, p, "when", ctx);
    let for_ = cx
        .opt_dur(t, p, "for", Duration::ZERO, MAX_DELAY)
        .unwrap_or_default();
    let clear_when = expression(cx, t, p, "clear_when", ctx);
    let clear_for = cx
        .opt_dur(t, p, "clear_for", Duration::ZERO, MAX_DELAY)
        .unwrap_or_default();
    if let (Some(e), None) = (t.get("clear_for"), t.get("clear_when")) {
        cx.err(
            e.key_loc,
            format!("{p}.clear_for applies only with clear_when (how long clear_when must hold before the rule clears)"),
        );
    }
    let mode = cx
        .opt_enum(
            t,
            p,
            "mode",
            &[
                ("always", RuleMode::Always),
                ("autonomous", RuleMode::Autonomous),
                ("connected", RuleMode::Connected),
            ],
        )
        .map_or(RuleMode::Always, |(m, _)| m);
    let during = cx
        .opt_str(t, p, "during")
        .and_then(|(s, loc)| match parse_during(s) {
            Ok(d) => Some(d),
            Err(m) => {
                cx.err(loc, format!("{p}.during: {m}"));
                None
            }
        });
    let weekdays = weekdays(cx, t, p);
    let then = actions(cx, t, p, "then", Place::Then, ctx);
    let on_clear = actions(cx, t, p, "on_clear", Place::OnClear, ctx);
    Some(Rule {
        name: name?,
        when: when?,
        for_,
        clear_when,
        clear_for,
        mode,
        during,
        weekdays,
        then: then?,
        on_clear: on_clear?,
    })
}

/// `"night"` or `"HH:MM-HH:MM"` (local time; the end may be before the start: across midnight).
pub(crate) fn parse_during(s: &str) -> Result<During, String> {
    if s.trim() == "night" {
        return Ok(During::Night);
    }
    let bad = || {
        format!("must be \"night\" or local clock times \"HH:MM-HH:MM\" (e.g. \"22:00-05:00\"), found {s:?}")
    };
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let clock = |x: &str| match crate::light::parse_step_time(x.trim()) {
        Ok(StepTime::Clock { hour, minute }) => Ok(u16::from(hour) * 60 + u16::from(minute)),
        _ => Err(bad()),
    };
    let (start, end) = (clock(a)?, clock(b)?);
    if start == end {
        return Err(format!(
            "{s:?} is empty (start = end); leave `during` out to arm the rule all day"
        ));
    }
    Ok(During::Clock { start, end })
}

fn weekdays(cx: &mut Cx, t: &Tbl, p: &str) -> Option<Weekdays> {
    let e = t.get("weekdays")?;
    let full = join(p, "weekdays");
    let Val::Array(items) = &e.node.val else {
        cx.wrong_type(
            &e.node,
            "an array of day names like [\"mon\", \"tue\"]",
            &full,
        );
        return None;
    };
    if items.is_empty() {
        cx.err(e.node.loc, format!("{full} must name at least one day"));
        return None;
    }
    let mut bits = 0u8;
    let mut ok = true;
    for n in items {
        let day = match &n.val {
            Val::Str(s) => Weekdays::NAMES.iter().position(|d| d == s),
            _ => None,
        };
        match day {
            Some(d) if bits & (1 << d) != 0 => {
                cx.err(n.loc, format!("{full} lists {} twice", Weekdays::NAMES[d]));
                ok = false;
            }
            Some(d) => bits |= 1 << d,
            None => {
                cx.err(
                    n.loc,
                    format!(
                        "{full}: days are {}",
                        Weekdays::NAMES
                            .iter()
                            .map(|d| format!("\"{d}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(Weekdays(bits))
}

fn scene(cx: &mut Cx, t: &Tbl, i: usize, unique: &mut Unique, ctx: &Ctx<'_>) -> Option<Scene> {
    let (name, p) = named(cx, t, "scene", i, unique);
    let p = p.as_str();
    cx.check_keys(t, p, SCENE_KEYS);
    let hold = cx.opt_dur(t, p, "hold", Duration::from_secs(1), MAX_DELAY);
    if t.get("action").is_none() {
        cx.err(
            t.loc,
            format!("{p} has no actions; add at least one [[scene.action]]"),
        );
    }
    let actions = actions(cx, t, p, "action", Place::Scene, ctx);
    Some(Scene {
        name: name?,
        hold,
        actions: actions?,
    })
}

fn actions(
    cx: &mut Cx,
    t: &Tbl,
    p: &str,
    key: &str,
    place: Place,
    ctx: &Ctx<'_>,
) -> Option<Vec<RuleAction>> {
    let tables = cx.tables(t, key, &join(p, key));
    if tables.len() > MAX_ACTIONS {
        cx.err(
            t.get(key).map_or(t.loc, |e| e.node.loc),
            format!("{p}.{key}: at most {MAX_ACTIONS} actions"),
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (j, a) in tables.into_iter().enumerate() {
        match action(cx, a, &format!("{p}.{key}[{j}]"), place, ctx) {
            Some(x) => out.push(x),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A TOML value as the JSON a command would carry.
fn to_json(n: &Node) -> Json {
    match &n.val {
        Val::Str(s) => Json::String(s.clone()),
        Val::Int(i) => Json::from(*i),
        Val::Float(x) => serde_json::Number::from_f64(*x).map_or(Json::Null, Json::Number),
        Val::Bool(b) => Json::Bool(*b),
        Val::Datetime => Json::Null,
        Val::Array(items) => Json::Array(items.iter().map(to_json).collect()),
        Val::Table(t) => Json::Object(
            t.entries
                .iter()
                .map(|e| (e.key.clone(), to_json(&e.node)))
                .collect(),
        ),
    }
}

/// Where a command-style message `field `args.KEY`: …` points: the value of `KEY`.
fn field_loc(msg: &str, args: Option<&Tbl>, action_loc: Loc, fallback: Loc) -> Loc {
    let field = msg
        .strip_prefix("field `")
        .and_then(|r| r.split_once('`'))
        .map(|(f, _)| f);
    match field {
        Some("action") => action_loc,
        Some(f) => f
            .strip_prefix("args.")
            .and_then(|k| args.and_then(|a| a.get(k)))
            .map_or(args.map_or(fallback, |a| a.loc), |e| e.node.loc),
        None => fallback,
    }
}

fn action(cx: &mut Cx, t: &Tbl, p: &str, place: Place, ctx: &Ctx<'_>) -> Option<RuleAction> {
    cx.check_keys(t, p, ACTION_KEYS);
    let (name, name_loc) = cx.req_str(t, p, "action")?;
    let args_tbl = cx.opt_table(t, "args", &join(p, "args"));
    let args: Map<String, Json> = match args_tbl.map(|a| {
        to_json(&Node {
            val: Val::Table(a.clone()),
            loc: a.loc,
        })
    }) {
        Some(Json::Object(m)) => m,
        _ => Map::new(),
    };
    let at = |key: &str| {
        args_tbl
            .and_then(|a| a.get(key))
            .map_or(t.loc, |e| e.node.loc)
    };
    let fail = |cx: &mut Cx, loc: Loc, m: String| -> Option<RuleAction> {
        cx.err(loc, format!("{p}: {m}"));
        None
    };
    let allowed = match place {
        Place::Scene => !matches!(name, "light.release" | "scene.run" | "scene.release"),
        _ => true,
    };
    if !allowed {
        return fail(
            cx,
            name_loc,
            format!("{name} is not allowed in a scene (a scene sets targets; releasing them is scene.release)"),
        );
    }
    match name {
        "event" => event(cx, p, &args, args_tbl, t.loc, ctx).map(RuleAction::Event),
        _ => match RuleAction::parse(name, &args) {
            Err(m) => {
                let loc = field_loc(&m, args_tbl, name_loc, t.loc);
                fail(cx, loc, m)
            }
            Ok(RuleAction::SceneRun { scene, .. } | RuleAction::SceneRelease { scene })
                if !ctx.scenes.contains(&scene) =>
            {
                let known: Vec<&str> = ctx.scenes.iter().map(String::as_str).collect();
                let hint = suggest(&scene, &known)
                    .map(|k| format!(", did you mean \"{k}\"?"))
                    .unwrap_or_default();
                fail(
                    cx,
                    at("scene"),
                    format!("field `args.scene`: unknown scene {scene:?}{hint}"),
                )
            }
            Ok(RuleAction::Command(a)) => match check_command(&a, place, ctx) {
                Ok(()) => Some(RuleAction::Command(a)),
                Err((key, m)) => fail(cx, at(key), m),
            },
            Ok(other) => Some(other),
        },
    }
}
/// A command's action checked against this cabinet: `Err((arg, message))`.
fn check_command(a: &Action, place: Place, ctx: &Ctx<'_>) -> Result<(), (&'static str, String)> {
    match a {
        Action::PointWrite { point, value } => {
            let Some(info) = ctx.catalog.get(point) else {
                return Err((
                    "point",
                    format!("field `args.point`: unknown point {point:?}"),
                ));
            };
            if !info.writable {
                return Err((
                    "point",
                    format!("field `args.point`: {point} is not writable (only coil and holding points with writable = true)"),
                ));
            }
            let is_bool = matches!(value, cabinetd_modbus::Value::Bool(_));
            if is_bool != (info.ty == crate::rules::expr::ValueType::Bool) {
                let want = if is_bool { "a number" } else { "true or false" };
                return Err(("value", format!("field `args.value`: {point} takes {want}")));
            }
            let x = value.as_f64();
            if info.min.is_some_and(|m| x < m) || info.max.is_some_and(|m| x > m) {
                return Err((
                    "value",
                    format!(
                        "field `args.value`: {x} is outside {point}'s range [{}, {}]",
                        info.min.map_or("-inf".into(), |m| m.to_string()),
                        info.max.map_or("inf".into(), |m| m.to_string())
                    ),
                ));
            }
            Ok(())
        }
        Action::LightSet { target, hold_s, .. } => {
            check_target(target, ctx)?;
            if place == Place::OnClear && hold_s.is_none() {
                return Err((
                    "hold_s",
                    "field `args.hold_s`: light.set in on_clear needs hold_s (a cleared rule keeps no target; the hold says when it lets go)".into(),
                ));
            }
            if place == Place::Scene && hold_s.is_some() {
                return Err((
                    "hold_s",
                    "field `args.hold_s`: a scene's actions last as long as the scene; give the scene a `hold`".into(),
                ));
            }
            Ok(())
        }
        Action::LightRelease { target } => check_target(target, ctx),
        Action::CameraGotoPreset { camera, .. }
        | Action::CameraReboot { camera }
        | Action::CameraSyncTime { camera } => {
            if ctx.cameras.iter().any(|c| c.name == *camera) {
                Ok(())
            } else {
                Err((
                    "camera",
                    format!("field `args.camera`: no [[camera]] is named {camera:?}"),
                ))
            }
        }
        // `RuleAction::parse` turns these into `RuleAction::Scene*`, checked above.
        Action::SceneRun { .. } | Action::SceneRelease { .. } => Ok(()),
    }
}

fn check_target(t: &LightTarget, ctx: &Ctx<'_>) -> Result<(), (&'static str, String)> {
    let ok = match t {
        LightTarget::All => !ctx.dali.is_empty(),
        LightTarget::Group(g) => ctx
            .dali
            .iter()
            .any(|b| b.groups.iter().any(|x| x.number == *g)),
        LightTarget::Gear { bus, .. } => ctx.dali.iter().any(|b| b.name == *bus),
    };
    if ok {
        return Ok(());
    }
    let why = match t {
        LightTarget::All => "no [[dali]] bus is configured".to_string(),
        LightTarget::Group(g) => format!("no [[dali]] bus configures group {g}"),
        LightTarget::Gear { bus, .. } => format!("no [[dali]] bus is named {bus:?}"),
    };
    Err((
        "target",
        format!(
            "field `args.target`: {} — {why}",
            crate::light::target_name(t)
        ),
    ))
}

fn event(
    cx: &mut Cx,
    p: &str,
    args: &Map<String, Json>,
    args_tbl: Option<&Tbl>,
    fallback: Loc,
    ctx: &Ctx<'_>,
) -> Option<EventSpec> {
    let at = |key: &str| {
        args_tbl
            .and_then(|a| a.get(key))
            .map_or(args_tbl.map_or(fallback, |a| a.loc), |e| e.node.loc)
    };
    let mut ok = true;
    let mut bad = |cx: &mut Cx, key: &str, m: String| {
        cx.err(at(key), format!("{p}: field `args.{key}`: {m}"));
        ok = false;
    };
    for k in args.keys().filter(|k| !EVENT_ARGS.contains(&k.as_str())) {
        bad(cx, k, "not an argument of event".into());
    }
    let text = |key: &str| args.get(key).and_then(Json::as_str);
    let kind = match text("kind").map(crate::event::CustomKind::new) {
        None => {
            bad(cx, "kind", "missing or not a string".into());
            None
        }
        Some(Err(why)) => {
            bad(cx, "kind", why);
            None
        }
        Some(Ok(k)) => Some(k),
    };
    let severity = match text("severity") {
        Some("critical") => Some(Severity::Critical),
        Some("major") => Some(Severity::Major),
        Some("minor") => Some(Severity::Minor),
        Some("info") => Some(Severity::Info),
        _ => {
            bad(
                cx,
                "severity",
                "must be \"critical\", \"major\", \"minor\" or \"info\"".into(),
            );
            None
        }
    };
    let message = text("message");
    match message {
        Some(m)
            if (1..=MAX_MESSAGE).contains(&m.chars().count()) && !m.contains(char::is_control) => {}
        _ => bad(
            cx,
            "message",
            format!("must be 1 to {MAX_MESSAGE} printable characters"),
        ),
    }
    let source = text("source");
    if args.contains_key("source") {
        match source {
            Some(s) if ctx.catalog.is_device(s) || ctx.catalog.get(s).is_some() => {}
            _ => bad(
                cx,
                "source",
                "must name a configured device or point (DEVICE or DEVICE/POINT)".into(),
            ),
        }
    }
    if !ok {
        return None;
    }
    Some(EventSpec {
        kind: kind?,
        severity: severity?,
        message: message?.to_string(),
        source: source.map(str::to_string),
    })
}

fn adaptive(
    cx: &mut Cx,
    t: &Tbl,
    i: usize,
    unique: &mut Unique,
    ctx: &Ctx<'_>,
) -> Option<Adaptive> {
    let (name, p) = named(cx, t, "lighting.adaptive", i, unique);
    let p = p.as_str();
    cx.check_keys(t, p, ADAPTIVE_KEYS);
    let target =
        cx.req_str(t, p, "target")
            .and_then(|(s, loc)| match crate::light::parse_target(s) {
                Ok(tg) => match check_target(&tg, ctx) {
                    Ok(()) => Some(tg),
                    Err((_, m)) => {
                        cx.err(
                            loc,
                            format!(
                                "{p}.target: {}",
                                m.trim_start_matches("field `args.target`: ")
                            ),
                        );
                        None
                    }
                },
                Err(m) => {
                    cx.err(loc, format!("{p}.target: {m}"));
                    None
                }
            });
    let usage = cx.req_str(t, p, "usage").and_then(|(s, loc)| {
        if ctx.catalog.get(s).is_some() {
            Some(s.to_string())
        } else {
            cx.err(
                loc,
                format!("{p}.usage must name a configured point (a traffic count per hour or a presence boolean), found {s:?}"),
            );
            None
        }
    });
    let hold = cx
        .opt_dur(t, p, "hold", Duration::from_secs(1), DAY)
        .unwrap_or(DEFAULT_ADAPTIVE_HOLD);
    let fade = cx
        .opt_dur(t, p, "fade", Duration::ZERO, Duration::from_secs(300))
        .unwrap_or(DEFAULT_ADAPTIVE_FADE);
    let mut levels = Vec::new();
    let mut ok = true;
    let rows = cx.tables(t, "level", &join(p, "level"));
    for (j, row) in rows.iter().enumerate() {
        let rp = format!("{p}.level[{j}]");
        cx.check_keys(row, &rp, LEVEL_KEYS);
        let flow = cx.req_num(row, &rp, "flow", 0.0, 1e9);
        let level = cx.req_num(row, &rp, "level_percent", 0.0, 100.0);
        match (flow, level) {
            (Some((f, floc)), Some((l, _))) => {
                if f <= 0.0 {
                    cx.err(
                        floc,
                        format!(
                            "{rp}.flow must be more than 0 (no activity never raises the level)"
                        ),
                    );
                    ok = false;
                } else if levels.last().is_some_and(|x: &FlowLevel| x.flow >= f) {
                    cx.err(floc, format!("{rp}.flow must be higher than the row before (rows go by increasing flow)"));
                    ok = false;
                }
                levels.push(FlowLevel {
                    flow: f,
                    level_percent: l,
                });
            }
            _ => ok = false,
        }
    }
    if rows.is_empty() {
        levels = DEFAULT_FLOW_LEVELS.to_vec();
    }
    if !ok {
        return None;
    }
    Some(Adaptive {
        name: name?,
        target: target?,
        usage: usage?,
        hold,
        fade,
        levels,
    })
}

/// What each action of a list writes, with a label for messages; scenes expand to their actions.
fn writes(
    list: &[RuleAction],
    prefix: &str,
    scenes: &BTreeMap<&str, &Scene>,
    out: &mut Vec<(Write, String)>,
) {
    for (j, a) in list.iter().enumerate() {
        let label = format!("{prefix}[{j}] {}", a.name());
        match a {
            RuleAction::Command(Action::PointWrite { point, .. }) => {
                out.push((Write::Point(point.clone()), format!("{label} {point}")));
            }
            RuleAction::Command(Action::LightSet { target, .. })
            | RuleAction::Command(Action::LightRelease { target }) => {
                let name = crate::light::target_name(target);
                out.push((Write::Light(target.clone()), format!("{label} {name}")));
            }
            RuleAction::Command(Action::CameraReboot { camera }) => {
                for pt in ["online", "response_ms"] {
                    out.push((
                        Write::Point(format!("{camera}/{pt}")),
                        format!("{label} {camera}"),
                    ));
                }
            }
            RuleAction::Command(Action::CameraSyncTime { camera }) => {
                out.push((
                    Write::Point(format!("{camera}/clock_offset_s")),
                    format!("{label} {camera}"),
                ));
            }
            RuleAction::SceneRun { scene, .. } | RuleAction::SceneRelease { scene } => {
                if let Some(s) = scenes.get(scene.as_str()) {
                    writes(
                        &s.actions,
                        &format!("{label} {scene} → action"),
                        scenes,
                        out,
                    );
                }
            }
            _ => {}
        }
    }
}

/// A rule or adaptive lighting in the loop graph: name, position, inputs, writes (labelled).
type LoopNode = (String, Loc, Vec<String>, Vec<(Write, String)>);

/// Reports every loop between rules (and adaptive lighting, which reads its usage point and
/// writes its target).
fn loops(
    cx: &mut Cx,
    a: &Automation,
    rule_locs: &[Loc],
    adaptive_locs: &[Loc],
    dali: &[DaliBus],
    names: &[String],
) {
    let topo = Topology {
        buses: dali.iter().map(|b| b.name.clone()).collect(),
        groups: dali
            .iter()
            .flat_map(|b| {
                b.groups
                    .iter()
                    .map(|g| ((b.name.clone(), g.number), g.members.clone()))
            })
            .collect(),
    };
    let scenes: BTreeMap<&str, &Scene> = a.scenes.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut nodes: Vec<LoopNode> = Vec::new();
    for (r, loc) in a.rules.iter().zip(rule_locs) {
        let mut inputs: Vec<String> = r.when.points().iter().map(|s| s.to_string()).collect();
        if let Some(c) = &r.clear_when {
            inputs.extend(c.points().iter().map(|s| s.to_string()));
        }
        let mut w = Vec::new();
        writes(&r.then, "then", &scenes, &mut w);
        writes(&r.on_clear, "on_clear", &scenes, &mut w);
        nodes.push((format!("rule \"{}\"", r.name), *loc, inputs, w));
    }
    for (ad, loc) in a.adaptive.iter().zip(adaptive_locs) {
        let name = crate::light::target_name(&ad.target);
        nodes.push((
            format!("lighting.adaptive \"{}\"", ad.name),
            *loc,
            vec![ad.usage.clone()],
            vec![(Write::Light(ad.target.clone()), format!("raising {name}"))],
        ));
    }
    let edge = |i: usize, j: usize| -> Option<String> {
        nodes[i].3.iter().find_map(|(w, label)| {
            nodes[j]
                .2
                .iter()
                .find(|input| topo.affects(w, input))
                .map(|input| format!("{} ({label}) changes {input}", nodes[i].0))
        })
    };
    let adj: Vec<Vec<usize>> = (0..nodes.len())
        .map(|i| (0..nodes.len()).filter(|&j| edge(i, j).is_some()).collect())
        .collect();
    for cycle in cycles(&adj) {
        let steps: Vec<String> = cycle
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let j = cycle[(k + 1) % cycle.len()];
                let l = nodes[j].1;
                format!(
                    "{}, read by {} at {}:{}",
                    edge(i, j).unwrap_or_default(),
                    nodes[j].0,
                    names[l.src],
                    l.line
                )
            })
            .collect();
        let first = &nodes[cycle[0]];
        cx.err(
            first.1,
            format!(
                "{} is in a loop: its actions change its own inputs: {}",
                first.0,
                steps.join("; ")
            ),
        );
    }
}
