//! `[[dali]]` buses and their `[[dali.group]]`s.

use super::*;

const DALI_KEYS: &[&str] = &[
    "name",
    "interface",
    "port",
    "luminaires",
    "poll",
    "energy_poll",
    "rated_power_w",
    "group",
];
const GROUP_KEYS: &[&str] = &[
    "number",
    "members",
    "power_on_level",
    "system_failure_level",
    "fade_time",
    "min_level",
    "max_level",
];

pub(super) fn dali_bus(
    cx: &mut Cx,
    t: &Tbl,
    i: usize,
    devices: &mut Unique,
    names: &[String],
) -> Option<DaliBus> {
    let (name, p) = named(cx, t, "dali", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, DALI_KEYS);
    if t.get("interface").is_none() {
        cx.missing(t, &join(p, "interface"));
    }
    let kind = cx.opt_enum(t, p, "interface", &[("atx-hat", false), ("sim", true)]);
    let misplaced = |cx: &mut Cx, key: &str, iface: &str| {
        if let Some(e) = t.get(key) {
            cx.err(
                e.key_loc,
                format!("{} applies only to interface = \"{iface}\"", join(p, key)),
            );
        }
    };
    let mut sim_size = None;
    let interface = match kind.map(|(k, _)| k) {
        Some(false) => {
            misplaced(cx, "luminaires", "sim");
            if t.get("port").is_none() {
                cx.err(
                    t.loc,
                    format!(
                        "missing required key {p}.port (the serial device of the ATX DALI HAT)"
                    ),
                );
            }
            cx.opt_path(t, p, "port")
                .map(|port| DaliInterface::AtxHat { port })
        }
        Some(true) => {
            misplaced(cx, "port", "atx-hat");
            if t.get("luminaires").is_none() {
                cx.missing(t, &join(p, "luminaires"));
            }
            cx.opt_int(t, p, "luminaires", 1, 64).map(|(n, _)| {
                sim_size = Some(n);
                DaliInterface::Sim {
                    luminaires: n as u8,
                }
            })
        }
        None => None,
    };
    let poll = cx
        .opt_dur(t, p, "poll", DALI_POLL_MIN, DAY)
        .unwrap_or(DEFAULT_DALI_POLL);
    let energy_poll = cx
        .opt_dur(t, p, "energy_poll", Duration::from_secs(1), WEEK)
        .unwrap_or(DEFAULT_DALI_ENERGY_POLL);
    let rated_power_w = cx
        .opt_num(t, p, "rated_power_w", 0.0, 100_000.0)
        .and_then(|(w, loc)| {
            if w == 0.0 {
                cx.err(loc, format!("{p}.rated_power_w must be more than 0"));
                None
            } else {
                Some(w)
            }
        });
    let mut numbers = Unique::new("group number");
    let mut groups = Vec::new();
    for (j, g) in cx
        .tables(t, "group", &format!("{p}.group"))
        .into_iter()
        .enumerate()
    {
        if let Some(g) = dali_group(cx, g, p, j, sim_size, &mut numbers) {
            groups.push(g);
        }
    }
    numbers.report(cx, names);
    Some(DaliBus {
        name: name?,
        interface: interface?,
        poll,
        energy_poll,
        groups,
        rated_power_w,
    })
}

fn dali_group(
    cx: &mut Cx,
    t: &Tbl,
    bus: &str,
    j: usize,
    sim_size: Option<i64>,
    numbers: &mut Unique,
) -> Option<DaliGroup> {
    let fallback = format!("{bus}.group[{j}]");
    let number = cx.req_int(t, &fallback, "number", 0, 15);
    let p = match number {
        Some((n, loc)) => {
            numbers.add(&n.to_string(), loc);
            format!("{bus}.group[{n}]")
        }
        None => fallback,
    };
    let p = p.as_str();
    cx.check_keys(t, p, GROUP_KEYS);
    let mut members: Vec<u8> = Vec::new();
    if let Some(e) = t.get("members") {
        let full = join(p, "members");
        match &e.node.val {
            Val::Array(items) => {
                for n in items {
                    if let Some(a) = cx.check_int(n, &full, 0, 63) {
                        if members.contains(&(a as u8)) {
                            cx.err(n.loc, format!("{full} lists short address {a} twice"));
                        } else if sim_size.is_some_and(|size| a >= size) {
                            cx.err(n.loc, format!("{full}: short address {a} is not on this simulated bus (luminaires 0..{})", sim_size.unwrap_or(0)));
                        } else {
                            members.push(a as u8);
                        }
                    }
                }
            }
            _ => cx.wrong_type(&e.node, "an array of short addresses", &full),
        }
    }
    let mut level = |key: &str| cx.opt_num(t, p, key, 0.0, 100.0);
    let power_on_level = level("power_on_level");
    let system_failure_level = level("system_failure_level");
    let min_level = level("min_level");
    let max_level = level("max_level");
    if let (Some((lo, _)), Some((hi, loc))) = (min_level, max_level) {
        if lo > hi {
            cx.err(
                loc,
                format!("{p}: min_level ({lo}) must not exceed max_level ({hi})"),
            );
        }
    }
    let fade_time = cx.opt_int(t, p, "fade_time", 0, 15).map(|(f, _)| f as u8);
    Some(DaliGroup {
        number: number?.0 as u8,
        members,
        power_on_level: power_on_level.map(|(x, _)| x),
        system_failure_level: system_failure_level.map(|(x, _)| x),
        fade_time,
        min_level: min_level.map(|(x, _)| x),
        max_level: max_level.map(|(x, _)| x),
    })
}
