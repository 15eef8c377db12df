//! `[lighting]`: the night's programme.

use super::*;

const LIGHTING_KEYS: &[&str] = &["twilight", "energy_meter", "step", "adaptive", "calendar"];
const STEP_KEYS: &[&str] = &["target", "at", "level_percent", "reason", "nights"];
const CALENDAR_KEYS: &[&str] = &["name", "dates"];
/// Most `[[lighting.calendar]]` tables.
pub const MAX_CALENDARS: usize = 16;
/// Most entries in one calendar's `dates`.
pub const MAX_CALENDAR_DATES: usize = 366;
/// Longest range of one `dates` entry, in days.
const MAX_RANGE_DAYS: i32 = 366;

/// `"MM-DD"` → (month, day), any year (29 February included).
fn month_day(s: &str) -> Option<(i8, i8)> {
    let (m, d) = s.split_once('-')?;
    if m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (m, d) = (m.parse::<i8>().ok()?, d.parse::<i8>().ok()?);
    jiff::civil::Date::new(2024, m, d).ok().map(|_| (m, d))
}

fn full_date(s: &str) -> Option<jiff::civil::Date> {
    (s.len() == 10).then_some(())?;
    s.parse().ok()
}

/// One `dates` entry: `MM-DD`, `YYYY-MM-DD`, or a range `A..B` of the same kind.
fn calendar_dates(s: &str) -> Result<CalendarDates, String> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let (a, b) = (a.trim(), b.trim());
    if let (Some(from), Some(to)) = (month_day(a), month_day(b)) {
        return Ok(CalendarDates::Yearly { from, to });
    }
    match (full_date(a), full_date(b)) {
        (Some(from), Some(to)) if from <= to => {
            let days = (to - from).get_days();
            if days >= MAX_RANGE_DAYS {
                return Err(format!("{s:?} spans more than {MAX_RANGE_DAYS} days"));
            }
            Ok(CalendarDates::Once { from, to })
        }
        (Some(_), Some(_)) => Err(format!("{s:?}: the range ends before it starts")),
        _ => Err(format!(
            "{s:?} is not \"MM-DD\" (every year), \"YYYY-MM-DD\" (once) or a range \"A..B\" of either"
        )),
    }
}

/// `[[lighting.calendar]]`: named dates (holidays, city events).
fn calendars(cx: &mut Cx, t: &Tbl) -> Vec<LightingCalendar> {
    let tables = cx.tables(t, "calendar", "lighting.calendar");
    if tables.len() > MAX_CALENDARS {
        cx.err(
            t.get("calendar").map_or(t.loc, |e| e.node.loc),
            format!("lighting.calendar: at most {MAX_CALENDARS} calendars"),
        );
        return Vec::new();
    }
    let mut out: Vec<LightingCalendar> = Vec::new();
    for (j, c) in tables.into_iter().enumerate() {
        let p = format!("lighting.calendar[{j}]");
        cx.check_keys(c, &p, CALENDAR_KEYS);
        let name = cx.req_str(c, &p, "name").and_then(|(n, loc)| {
            let valid = (1..=32).contains(&n.len())
                && n.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !valid {
                cx.err(
                    loc,
                    format!("{p}.name must be 1 to 32 of [a-z0-9_-], found {n:?}"),
                );
                None
            } else if Weekdays::NAMES.contains(&n) {
                cx.err(
                    loc,
                    format!("{p}.name {n:?} is a weekday name: nights would be ambiguous"),
                );
                None
            } else if out.iter().any(|o| o.name == n) {
                cx.err(loc, format!("{p}.name {n:?} is already a calendar"));
                None
            } else {
                Some(n.to_string())
            }
        });
        let Some(e) = c.get("dates") else {
            cx.err(c.loc, format!("missing required key {p}.dates"));
            continue;
        };
        let full = format!("{p}.dates");
        let Val::Array(items) = &e.node.val else {
            cx.wrong_type(
                &e.node,
                "an array of dates like [\"12-25\", \"2026-06-21\"]",
                &full,
            );
            continue;
        };
        if items.is_empty() || items.len() > MAX_CALENDAR_DATES {
            cx.err(
                e.node.loc,
                format!("{full} must list 1 to {MAX_CALENDAR_DATES} dates"),
            );
            continue;
        }
        let mut dates = Vec::new();
        for n in items {
            let parsed = match &n.val {
                Val::Str(s) => calendar_dates(s),
                _ => Err("a date must be a string".into()),
            };
            match parsed {
                Ok(d) => dates.push(d),
                Err(m) => cx.err(n.loc, format!("{full}: {m}")),
            }
        }
        if let Some(name) = name {
            out.push(LightingCalendar { name, dates });
        }
    }
    out
}

/// A step's `nights`: weekday names and calendar names, at least one, each once.
fn nights(cx: &mut Cx, t: &Tbl, p: &str, calendars: &[LightingCalendar]) -> Option<Vec<String>> {
    let e = t.get("nights")?;
    let full = format!("{p}.nights");
    let Val::Array(items) = &e.node.val else {
        cx.wrong_type(
            &e.node,
            "an array of day types like [\"fri\", \"sat\", \"holiday\"]",
            &full,
        );
        return None;
    };
    if items.is_empty() {
        cx.err(e.node.loc, format!("{full} must name at least one night"));
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for n in items {
        let Val::Str(s) = &n.val else {
            cx.err(n.loc, format!("{full}: a night is a string"));
            continue;
        };
        let known = Weekdays::NAMES.contains(&s.as_str()) || calendars.iter().any(|c| c.name == *s);
        if !known {
            let names: Vec<String> = Weekdays::NAMES
                .iter()
                .map(|d| d.to_string())
                .chain(calendars.iter().map(|c| c.name.clone()))
                .map(|n| format!("\"{n}\""))
                .collect();
            cx.err(
                n.loc,
                format!(
                    "{full}: {s:?} is neither a weekday nor a [[lighting.calendar]]; known: {}",
                    names.join(", ")
                ),
            );
        } else if out.contains(s) {
            cx.err(n.loc, format!("{full} lists {s:?} twice"));
        } else {
            out.push(s.clone());
        }
    }
    Some(out)
}

/// `[lighting]`: the programme. `modbus` and `dali` are the devices already validated, for the
/// references a step or the meter makes (a bus typo would silently leave luminaires unlit).
pub(super) fn lighting(
    cx: &mut Cx,
    root: &Tbl,
    modbus: &[ModbusDevice],
    dali: &[DaliBus],
    names: &[String],
) -> LightingConfig {
    let mut l = LightingConfig::default();
    let Some(t) = cx.opt_table(root, "lighting", "lighting") else {
        return l;
    };
    let p = "lighting";
    cx.check_keys(t, p, LIGHTING_KEYS);
    if let Some((tw, _)) = cx.opt_enum(
        t,
        p,
        "twilight",
        &[("official", Twilight::Official), ("civil", Twilight::Civil)],
    ) {
        l.twilight = tw;
    }
    if let Some((m, loc)) = cx.opt_str(t, p, "energy_meter") {
        let known = m.split_once('/').is_some_and(|(dev, point)| {
            modbus
                .iter()
                .any(|d| d.spec.name == dev && d.spec.points.iter().any(|pt| pt.name == point))
        });
        if known {
            l.energy_meter = Some(m.to_string());
        } else {
            cx.err(loc, format!("lighting.energy_meter must name a configured Modbus point \"DEVICE/POINT\" (a Wh counter), found {m:?}"));
        }
    }
    l.calendars = calendars(cx, t);
    // Two steps for the same target at the same `at` on the same nights would leave the level
    // to chance.
    type Seen = (LightTarget, StepTime, Option<Vec<String>>, Loc, usize);
    let mut seen: Vec<Seen> = Vec::new();
    for (j, st) in cx
        .tables(t, "step", "lighting.step")
        .into_iter()
        .enumerate()
    {
        let sp = format!("lighting.step[{j}]");
        let sp = sp.as_str();
        cx.check_keys(st, sp, STEP_KEYS);
        let target =
            cx.req_str(st, sp, "target")
                .and_then(|(s, loc)| match crate::light::parse_target(s) {
                    Ok(LightTarget::Gear { bus, .. }) if !dali.iter().any(|b| b.name == bus) => {
                        cx.err(
                            loc,
                            format!("{sp}.target {s:?}: no [[dali]] bus is named {bus:?}"),
                        );
                        None
                    }
                    Ok(tg) => Some(tg),
                    Err(m) => {
                        cx.err(loc, format!("{sp}.target: {m}"));
                        None
                    }
                });
        let at =
            cx.req_str(st, sp, "at")
                .and_then(|(s, loc)| match crate::light::parse_step_time(s) {
                    Ok(at) => Some((at, s.trim().to_string(), loc)),
                    Err(m) => {
                        cx.err(loc, format!("{sp}.at: {m}"));
                        None
                    }
                });
        let level = cx.req_num(st, sp, "level_percent", LEVEL_MIN, LEVEL_MAX);
        let nights = nights(cx, st, sp, &l.calendars);
        let reason = cx.opt_str(st, sp, "reason").and_then(|(r, loc)| {
            if (1..=64).contains(&r.chars().count()) && !r.contains(char::is_control) {
                Some(r.to_string())
            } else {
                cx.err(
                    loc,
                    format!("{sp}.reason must be 1 to 64 printable characters"),
                );
                None
            }
        });
        let (Some(target), Some((at, at_text, at_loc)), Some((level_percent, _))) =
            (target, at, level)
        else {
            continue;
        };
        let overlap = |other: &Option<Vec<String>>| match (other, &nights) {
            (Some(a), Some(b)) => a.iter().any(|n| b.contains(n)),
            _ => true,
        };
        if let Some((_, _, _, first, i)) = seen
            .iter()
            .find(|(tg, a, n, _, _)| *tg == target && *a == at && overlap(n))
        {
            cx.err(
                at_loc,
                format!(
                    "{sp} conflicts with lighting.step[{i}] (first defined at {}:{}): same target {:?} at the same instant {at_text:?}",
                    names[first.src],
                    first.line,
                    crate::light::target_name(&target)
                ),
            );
            continue;
        }
        seen.push((target.clone(), at, nights.clone(), at_loc, j));
        l.steps.push(LightingStep {
            target,
            at,
            level_percent,
            reason: reason.unwrap_or(at_text),
            nights,
        });
    }
    l
}
