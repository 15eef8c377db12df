//! `[[simulator]]`s: equipment served in-process on loopback.

use super::*;

const SIMULATOR_KEYS: &[&str] = &["name", "kind", "listen"];

pub(super) fn simulator(cx: &mut Cx, t: &Tbl, i: usize, sims: &mut Unique) -> Option<Simulator> {
    let (name, p) = named(cx, t, "simulator", i, sims);
    let p = p.as_str();
    cx.check_keys(t, p, SIMULATOR_KEYS);
    if t.get("kind").is_none() {
        cx.missing(t, &join(p, "kind"));
    }
    let kind = cx.opt_enum(
        t,
        p,
        "kind",
        &[("energy-meter", SimulatorKind::EnergyMeter)],
    );
    if t.get("listen").is_none() {
        cx.missing(t, &join(p, "listen"));
    }
    let listen = cx.opt_socket(t, p, "listen").and_then(|(a, loc)| {
        if a.ip().is_loopback() {
            Some(a)
        } else {
            cx.err(loc, format!("{p}.listen must be a loopback address (simulators are for tests and demos), found {a}"));
            None
        }
    });
    Some(Simulator {
        name: name?,
        kind: kind?.0,
        listen: listen?,
    })
}
