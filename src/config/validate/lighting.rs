//! `[lighting]`: the night's programme.

use super::*;

const LIGHTING_KEYS: &[&str] = &["twilight", "energy_meter", "step", "adaptive"];
const STEP_KEYS: &[&str] = &["target", "at", "level_percent", "reason"];

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
    // Two steps for the same target at the same `at` would leave the level to chance.
    let mut seen: Vec<(LightTarget, StepTime, Loc, usize)> = Vec::new();
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
        if let Some((_, _, first, i)) = seen.iter().find(|(tg, a, _, _)| *tg == target && *a == at)
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
        seen.push((target.clone(), at, at_loc, j));
        l.steps.push(LightingStep {
            target,
            at,
            level_percent,
            reason: reason.unwrap_or(at_text),
        });
    }
    l
}
