//! Exclusive resources ([`Resource`]): one owner per serial line and per listening address.
//!
//! A DALI interface and a Modbus RTU line cannot share a serial device, nor can two DALI buses.
//! Several Modbus RTU units may share one line (that is how RS-485 is wired), but then they must
//! agree on its settings (baud, parity, data and stop bits). Each conflict is reported at the
//! later entry, naming the earlier one with its FILE:LINE:COL.

use super::*;

/// One entry's claim on a resource.
struct Claim {
    /// `modbus[meter-1]`, `dali[bus-a]`, `simulator[meter-sim]`, `http.listen`.
    entry: String,
    /// Where the entry is written.
    loc: Loc,
    resource: Resource,
    /// For a Modbus RTU unit: its line settings (units on one line may share it).
    rtu: Option<SerialSettings>,
}

/// Every claim of the document.
#[derive(Default)]
pub(super) struct Claims(Vec<Claim>);

impl Claims {
    fn add(
        &mut self,
        entry: String,
        loc: Loc,
        resources: Vec<Resource>,
        rtu: Option<SerialSettings>,
    ) {
        for resource in resources {
            self.0.push(Claim {
                entry: entry.clone(),
                loc,
                resource,
                rtu: rtu.clone(),
            });
        }
    }

    pub(super) fn modbus(&mut self, d: &ModbusDevice, loc: Loc) {
        let rtu = match &d.spec.transport {
            Transport::Rtu(s) => Some(s.clone()),
            Transport::Tcp { .. } => None,
        };
        self.add(format!("modbus[{}]", d.spec.name), loc, d.resources(), rtu);
    }

    pub(super) fn dali(&mut self, b: &DaliBus, loc: Loc) {
        self.add(format!("dali[{}]", b.name), loc, b.resources(), None);
    }

    pub(super) fn simulator(&mut self, sim: &Simulator, loc: Loc) {
        self.add(
            format!("simulator[{}]", sim.name),
            loc,
            sim.resources(),
            None,
        );
    }

    /// `http.listen`, when written (the default cannot collide with a loopback simulator
    /// without being written either).
    pub(super) fn http(&mut self, root: &Tbl, listen: SocketAddr) {
        let written = root.get("http").and_then(|e| match &e.node.val {
            Val::Table(t) => t.get("listen").map(|l| l.node.loc),
            _ => None,
        });
        if let Some(loc) = written {
            self.add(
                "http.listen".into(),
                loc,
                vec![Resource::Listen(listen)],
                None,
            );
        }
    }

    /// Reports every conflict at the later of the two entries.
    pub(super) fn report(mut self, cx: &mut Cx, names: &[String]) {
        self.0.sort_by_key(|c| c.loc);
        for (i, later) in self.0.iter().enumerate() {
            let conflict = self.0[..i].iter().find_map(|earlier| {
                if earlier.resource != later.resource || earlier.entry == later.entry {
                    return None;
                }
                match (&earlier.rtu, &later.rtu) {
                    (Some(a), Some(b)) if line_settings(a) == line_settings(b) => None,
                    (Some(a), Some(b)) => Some((
                        earlier,
                        format!(
                            "{}: {} is set to {}, but {} (defined at {}) sets {}: the units of one line share its settings",
                            later.entry,
                            later.resource,
                            line_settings(b),
                            earlier.entry,
                            at(names, earlier.loc),
                            line_settings(a),
                        ),
                    )),
                    _ => Some((
                        earlier,
                        format!(
                            "{}: {} is already used by {} (defined at {}): it can have only one owner",
                            later.entry,
                            later.resource,
                            earlier.entry,
                            at(names, earlier.loc),
                        ),
                    )),
                }
            });
            if let Some((_, message)) = conflict {
                cx.err(later.loc, message);
            }
        }
    }
}

fn at(names: &[String], loc: Loc) -> String {
    format!("{}:{}:{}", names[loc.src], loc.line, loc.col)
}

fn line_settings(s: &SerialSettings) -> String {
    let parity = match s.parity {
        Parity::None => "none",
        Parity::Even => "even",
        Parity::Odd => "odd",
    };
    format!(
        "{} baud, parity {parity}, {} data bits, {} stop bit{}",
        s.baud,
        s.data_bits,
        s.stop_bits,
        if s.stop_bits == 1 { "" } else { "s" }
    )
}
