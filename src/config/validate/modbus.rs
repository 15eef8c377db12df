//! `[[modbus]]` devices and their `[[modbus.point]]`s.

use super::*;

const MODBUS_KEYS: &[&str] = &[
    "name",
    "transport",
    "address",
    "baud",
    "parity",
    "data_bits",
    "stop_bits",
    "unit_id",
    "poll",
    "timeout",
    "deadband",
    "heartbeat",
    "point",
];
const RTU_ONLY_KEYS: &[&str] = &["baud", "parity", "data_bits", "stop_bits"];
const POINT_KEYS: &[&str] = &[
    "name",
    "table",
    "address",
    "type",
    "word_order",
    "scale",
    "offset",
    "unit",
    "writable",
    "min",
    "max",
    "deadband",
    "heartbeat",
    "decimals",
];

pub(super) fn modbus_device(
    cx: &mut Cx,
    t: &Tbl,
    i: usize,
    devices: &mut Unique,
    names: &[String],
) -> Option<ModbusDevice> {
    let (name, p) = named(cx, t, "modbus", i, devices);
    let p = p.as_str();
    cx.check_keys(t, p, MODBUS_KEYS);
    // `None`: the transport itself is invalid (already reported); tcp is the default.
    let rtu = match cx.opt_enum(t, p, "transport", &[("tcp", false), ("rtu", true)]) {
        Some((r, _)) => Some(r),
        None if t.get("transport").is_none() => Some(false),
        None => None,
    };
    if rtu == Some(false) {
        for key in RTU_ONLY_KEYS {
            if let Some(e) = t.get(key) {
                cx.err(
                    e.key_loc,
                    format!("{} applies only to transport = \"rtu\"", join(p, key)),
                );
            }
        }
    }
    let address = cx.req_str(t, p, "address");
    let transport = match (rtu, address) {
        (Some(false), Some((a, loc))) => match split_host_port(a) {
            Ok((host, port)) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                Some(Transport::Tcp {
                    address: format!("{host}:{}", port.unwrap_or(502)),
                })
            }
            Err(m) => {
                cx.err(
                    loc,
                    format!("{p}.address must be host[:port] for transport \"tcp\": {m}"),
                );
                None
            }
        },
        (Some(true), Some((a, loc))) => {
            if a.is_empty() {
                cx.err(
                    loc,
                    format!("{p}.address must be the serial device path for transport \"rtu\""),
                );
            }
            let baud = cx
                .opt_int(t, p, "baud", 50, 4_000_000)
                .map_or(19200, |(b, _)| b as u32);
            let parity = cx
                .opt_enum(
                    t,
                    p,
                    "parity",
                    &[
                        ("none", Parity::None),
                        ("even", Parity::Even),
                        ("odd", Parity::Odd),
                    ],
                )
                .map_or(Parity::Even, |(x, _)| x);
            let data_bits = rtu_bits(cx, t, p, "data_bits", &[7, 8]).unwrap_or(8);
            let stop_bits = rtu_bits(cx, t, p, "stop_bits", &[1, 2]).unwrap_or(1);
            Some(Transport::Rtu(SerialSettings {
                path: PathBuf::from(a),
                baud,
                parity,
                data_bits,
                stop_bits,
            }))
        }
        _ => None,
    };
    let unit_id = cx
        .opt_int(t, p, "unit_id", 0, 247)
        .map_or(1, |(u, _)| u as u8);
    let poll = cx
        .opt_dur(t, p, "poll", POLL_MIN, DAY)
        .unwrap_or(DEFAULT_MODBUS_POLL);
    let timeout = cx
        .opt_dur(t, p, "timeout", TIMEOUT_MIN, TIMEOUT_MAX)
        .unwrap_or(DEFAULT_MODBUS_TIMEOUT);
    let default_policy = ReportPolicy {
        deadband: cx
            .opt_num(t, p, "deadband", 0.0, f64::INFINITY)
            .map(|(x, _)| x),
        heartbeat: cx
            .opt_dur(t, p, "heartbeat", HEARTBEAT_MIN, WEEK)
            .unwrap_or(DEFAULT_HEARTBEAT),
    };

    let point_tables = cx.tables(t, "point", &format!("{p}.point"));
    if point_tables.is_empty() && t.get("point").is_none() {
        cx.err(
            t.loc,
            format!("{p} has no points; add at least one [[modbus.point]]"),
        );
    }
    let mut unique = Unique::new("point name");
    let mut points = Vec::new();
    let mut report = Vec::new();
    for (j, pt) in point_tables.into_iter().enumerate() {
        if let Some((spec, policy)) = point(cx, pt, p, j, &mut unique, default_policy) {
            points.push(spec);
            report.push(policy);
        }
    }
    unique.report(cx, names);
    Some(ModbusDevice {
        spec: DeviceSpec {
            name: name?,
            transport: transport?,
            unit_id,
            poll,
            timeout,
            points,
        },
        report,
    })
}

fn rtu_bits(cx: &mut Cx, t: &Tbl, p: &str, key: &str, allowed: &[i64]) -> Option<u8> {
    let e = t.get(key)?;
    let full = join(p, key);
    match e.node.val {
        Val::Int(n) if allowed.contains(&n) => Some(n as u8),
        Val::Int(n) => {
            let list: Vec<String> = allowed.iter().map(i64::to_string).collect();
            cx.err(
                e.node.loc,
                format!("{full} must be {}, found {n}", list.join(" or ")),
            );
            None
        }
        _ => {
            cx.wrong_type(&e.node, "an integer", &full);
            None
        }
    }
}

fn point(
    cx: &mut Cx,
    t: &Tbl,
    dev: &str,
    j: usize,
    unique: &mut Unique,
    default: ReportPolicy,
) -> Option<(PointSpec, ReportPolicy)> {
    let fallback = format!("{dev}.point[{j}]");
    let mut name = None;
    let mut p = fallback.clone();
    if let Some((n, loc)) = cx.req_str(t, &fallback, "name") {
        if is_point_name(n) {
            unique.add(&format!("{n:?}"), loc);
            name = Some(n.to_string());
            p = format!("{dev}.point[{n}]");
        } else {
            cx.err(
                loc,
                format!(
                    "{fallback}.name must match [a-z0-9_]+ (at most 64 characters), found {n:?}"
                ),
            );
        }
    }
    let p = p.as_str();
    cx.check_keys(t, p, POINT_KEYS);
    if t.get("table").is_none() {
        cx.missing(t, &join(p, "table"));
    }
    let table = cx.opt_enum(
        t,
        p,
        "table",
        &[
            ("coil", Table::Coil),
            ("discrete", Table::Discrete),
            ("input", Table::Input),
            ("holding", Table::Holding),
        ],
    );
    let bits = table.map(|(tb, _)| matches!(tb, Table::Coil | Table::Discrete));
    let types = [
        ("bool", DataType::Bool),
        ("u16", DataType::U16),
        ("i16", DataType::I16),
        ("u32", DataType::U32),
        ("i32", DataType::I32),
        ("u64", DataType::U64),
        ("i64", DataType::I64),
        ("f32", DataType::F32),
        ("f64", DataType::F64),
    ];
    let tn = table.map_or("?", |(t, _)| table_name(t));
    let data_type = match cx.opt_enum(t, p, "type", &types) {
        Some((ty, loc)) => {
            match (bits, ty == DataType::Bool) {
                (Some(true), false) => {
                    cx.err(
                        loc,
                        format!(
                            "{p}.type must be \"bool\": table \"{}\" holds single bits",
                            tn
                        ),
                    );
                    None
                }
                (Some(false), true) => {
                    cx.err(loc, format!("{p}.type \"bool\" is only for table \"coil\" or \"discrete\", not \"{}\"", tn));
                    None
                }
                _ => Some(ty),
            }
        }
        None if t.get("type").is_some() => None,
        None => bits.map(|b| if b { DataType::Bool } else { DataType::U16 }),
    };
    let address = cx.req_int(t, p, "address", 0, 65535);
    if let (Some((a, loc)), Some(ty)) = (address, data_type) {
        if a + i64::from(ty.width()) - 1 > 65535 {
            cx.err(
                loc,
                format!(
                    "{p}.address {a}: the value's {} registers run past 65535",
                    ty.width()
                ),
            );
        }
    }
    let word_order = cx
        .opt_enum(
            t,
            p,
            "word_order",
            &[("big", WordOrder::Big), ("little", WordOrder::Little)],
        )
        .map_or(WordOrder::Big, |(w, _)| w);
    let scale = match cx.opt_num(t, p, "scale", f64::NEG_INFINITY, f64::INFINITY) {
        // A zero scale would make every reading 0 + offset: certainly a typo.
        Some((s, loc)) => {
            if s == 0.0 {
                cx.err(loc, format!("{p}.scale must not be 0"));
            }
            s
        }
        None => 1.0,
    };
    let offset = cx
        .opt_num(t, p, "offset", f64::NEG_INFINITY, f64::INFINITY)
        .map_or(0.0, |(o, _)| o);
    let unit = cx.opt_str(t, p, "unit").map(|(u, _)| u.to_string());
    let writable = match cx.opt_bool(t, p, "writable") {
        Some((true, loc)) => {
            if let Some((tb @ (Table::Input | Table::Discrete), _)) = table {
                cx.err(loc, format!("{p}.writable: table \"{}\" is read-only; only coil and holding points can be writable", table_name(tb)));
            }
            true
        }
        Some((false, _)) | None => false,
    };
    let min = cx.opt_num(t, p, "min", f64::NEG_INFINITY, f64::INFINITY);
    let max = cx.opt_num(t, p, "max", f64::NEG_INFINITY, f64::INFINITY);
    if let (Some((lo, _)), Some((hi, loc))) = (min, max) {
        if lo > hi {
            cx.err(loc, format!("{p}: min ({lo}) must not exceed max ({hi})"));
        }
    }
    // Readings are rounded to the decimals the scale implies unless written here.
    let decimals = cx
        .opt_int(
            t,
            p,
            "decimals",
            0,
            i64::from(cabinetd_modbus::decode::MAX_DECIMALS),
        )
        .map(|(d, _)| d as u8);
    let policy = ReportPolicy {
        deadband: cx
            .opt_num(t, p, "deadband", 0.0, f64::INFINITY)
            .map(|(x, _)| x)
            .or(default.deadband),
        heartbeat: cx
            .opt_dur(t, p, "heartbeat", HEARTBEAT_MIN, WEEK)
            .unwrap_or(default.heartbeat),
    };
    Some((
        PointSpec {
            name: name?,
            table: table?.0,
            address: address?.0 as u16,
            data_type: data_type?,
            word_order,
            scale,
            offset,
            unit,
            writable,
            min: min.map(|(x, _)| x),
            max: max.map(|(x, _)| x),
            decimals,
        },
        policy,
    ))
}

fn table_name(t: Table) -> &'static str {
    match t {
        Table::Coil => "coil",
        Table::Discrete => "discrete",
        Table::Input => "input",
        Table::Holding => "holding",
    }
}
