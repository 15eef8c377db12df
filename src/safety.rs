//! The local safety envelope (`[safety]`, issue 12): what no remote desired configuration may
//! widen, whatever its signature. Pure: [`check`] compares the configuration built from the local
//! files with the one a desired config would produce (files + desired, merged) and names every
//! rule crossed; the caller rejects the desired config whole when the list is not empty.
//!
//! Rules:
//! - `dali_min_system_failure_level` / `dali_min_power_on_level`: a DALI group's
//!   `system_failure_level` / `power_on_level` (the levels the gear keeps on its own when the bus
//!   or the cabinet computer fails, and after a power cut) may not be set below the minimum —
//!   unless the local files already set that group to that level or lower (the local technician's
//!   choice is not widened by repeating it). A `max_level` below the failure minimum is refused
//!   too: DALI gear clamps its failure and power-on levels to `max_level`.
//! - `desired_may_write`: a Modbus point writable in the desired config must be writable in the
//!   local files with the same register, encoding and range on the same device, unless
//!   `safety.desired_may_write` lists it.
//!
//! `[safety]` and `[security]` themselves cannot come from a desired config
//! (`config::check_remote_source`), so `local.safety` is the envelope.

use std::fmt;

use crate::config::{Config, DaliGroup, ModbusDevice};

/// One rule a desired configuration would cross.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetyViolation {
    /// The `[safety]` key of the rule.
    pub rule: &'static str,
    /// What crosses it (`bus-a group 1`, `meter-main/setpoint`).
    pub subject: String,
    /// How.
    pub detail: String,
}

impl fmt::Display for SafetyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "safety.{}: {}: {}", self.rule, self.subject, self.detail)
    }
}

/// Every rule of the local envelope `local.safety` that `desired` crosses (empty: allowed).
pub fn check(local: &Config, desired: &Config) -> Vec<SafetyViolation> {
    let mut out = Vec::new();
    dali_levels(local, desired, &mut out);
    writable_points(local, desired, &mut out);
    out
}

fn local_group<'a>(local: &'a Config, bus: &str, number: u8) -> Option<&'a DaliGroup> {
    local
        .dali
        .iter()
        .find(|b| b.name == bus)?
        .groups
        .iter()
        .find(|g| g.number == number)
}

type LevelRule = (&'static str, &'static str, Option<f64>, Option<f64>, f64);

fn dali_levels(local: &Config, desired: &Config, out: &mut Vec<SafetyViolation>) {
    let s = &local.safety;
    for bus in &desired.dali {
        for g in &bus.groups {
            let before = local_group(local, &bus.name, g.number);
            let subject = format!("[[dali]] {} group {}", bus.name, g.number);
            // (rule, key, desired level, local level, minimum)
            let fields: [LevelRule; 2] = [
                (
                    "dali_min_system_failure_level",
                    "system_failure_level",
                    g.system_failure_level,
                    before.and_then(|b| b.system_failure_level),
                    s.dali_min_system_failure_level,
                ),
                (
                    "dali_min_power_on_level",
                    "power_on_level",
                    g.power_on_level,
                    before.and_then(|b| b.power_on_level),
                    s.dali_min_power_on_level,
                ),
            ];
            for (rule, key, level, local_level, min) in fields {
                let Some(level) = level else { continue };
                let floor = local_level.map_or(min, |l| l.min(min));
                if level < floor {
                    out.push(SafetyViolation {
                        rule,
                        subject: subject.clone(),
                        detail: format!(
                            "{key} = {level} % is below the local minimum of {floor} %"
                        ),
                    });
                }
            }
            if let Some(max) = g.max_level {
                let local_max = before.and_then(|b| b.max_level);
                let floor = local_max.map_or(s.dali_min_system_failure_level, |l| {
                    l.min(s.dali_min_system_failure_level)
                });
                if max < floor {
                    out.push(SafetyViolation {
                        rule: "dali_min_system_failure_level",
                        subject: subject.clone(),
                        detail: format!(
                            "max_level = {max} % would clamp the gear's failure level below the local minimum of {floor} %"
                        ),
                    });
                }
            }
        }
    }
}

fn writable_points(local: &Config, desired: &Config, out: &mut Vec<SafetyViolation>) {
    let allowed = &local.safety.desired_may_write;
    for dev in &desired.modbus {
        let local_dev = local.modbus.iter().find(|d| d.spec.name == dev.spec.name);
        for p in dev.spec.points.iter().filter(|p| p.writable) {
            let name = format!("{}/{}", dev.spec.name, p.name);
            if allowed.contains(&name) {
                continue;
            }
            let detail = match local_dev.map(|d| same_write_target(d, dev, &p.name)) {
                Some(Ok(())) => continue,
                Some(Err(why)) => why,
                None => "a device the local files do not have".to_owned(),
            };
            out.push(SafetyViolation {
                rule: "desired_may_write",
                subject: name,
                detail: format!(
                    "writable in the desired config but {detail} (list it in safety.desired_may_write to allow)"
                ),
            });
        }
    }
}

/// Whether point `name` of `desired` writes exactly what the local files let it write.
fn same_write_target(
    local: &ModbusDevice,
    desired: &ModbusDevice,
    name: &str,
) -> Result<(), String> {
    let (l, d) = (&local.spec, &desired.spec);
    let Some(lp) = l.points.iter().find(|p| p.name == name) else {
        return Err("not a point of the local files".into());
    };
    let Some(dp) = d.points.iter().find(|p| p.name == name) else {
        return Err("not a point of the desired config".into());
    };
    if !lp.writable {
        return Err("read-only in the local files".into());
    }
    if l.transport != d.transport || l.unit_id != d.unit_id {
        return Err("its device's address or unit id differs from the local files".into());
    }
    let same = lp.table == dp.table
        && lp.address == dp.address
        && lp.data_type == dp.data_type
        && lp.word_order == dp.word_order
        && lp.scale == dp.scale
        && lp.offset == dp.offset
        && lp.min == dp.min
        && lp.max == dp.max;
    if same {
        Ok(())
    } else {
        Err("its register, encoding or range differs from the local files".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_sources, Source};

    const LOCAL: &str = r#"
[cabinet]
id = "c-1"
latitude = 47.3
longitude = 5.0
[storage]
path = "/tmp/x"
[uplink]
broker = "mqtt://127.0.0.1:1883"
[security]
require_signed = false
[safety]
dali_min_system_failure_level = 60
dali_min_power_on_level = 40
desired_may_write = ["tc-12/plan"]

[[modbus]]
name = "meter"
transport = "tcp"
address = "127.0.0.1:502"
unit_id = 1
  [[modbus.point]]
  name = "setpoint"
  table = "holding"
  address = 10
  type = "u16"
  writable = true
  min = 0
  max = 100
  [[modbus.point]]
  name = "limit"
  table = "holding"
  address = 11
  type = "u16"

[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 4
  [[dali.group]]
  number = 1
  members = [0, 1]
  system_failure_level = 80
  power_on_level = 30
"#;

    fn load(extra: &str) -> Config {
        load_sources(&[
            Source {
                name: "local.toml".into(),
                text: LOCAL.into(),
            },
            Source {
                name: "<desired>".into(),
                text: extra.into(),
            },
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn rules(extra: &str) -> Vec<String> {
        check(&load(""), &load(extra))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const BUS: &str = "[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 4\n  [[dali.group]]\n  number = 1\n  members = [0, 1]\n";

    #[test]
    fn the_local_files_alone_cross_nothing() {
        assert!(check(&load(""), &load("")).is_empty());
    }

    #[test]
    fn dali_fallback_levels_may_not_go_below_the_minimum() {
        // The attack of issue 12: both fallback levels to 0.
        let v = rules(&format!(
            "{BUS}  system_failure_level = 0\n  power_on_level = 0\n"
        ));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].starts_with("safety.dali_min_system_failure_level: [[dali]] bus-a group 1: system_failure_level = 0 % is below the local minimum of 60 %"), "{v:?}");
        assert!(v[1].starts_with("safety.dali_min_power_on_level:"), "{v:?}");
        // At or above the minimum: fine; the local value repeated (30 < 40): fine.
        assert!(rules(&format!(
            "{BUS}  system_failure_level = 60\n  power_on_level = 30\n"
        ))
        .is_empty());
        // Below the local value and the minimum.
        assert_eq!(rules(&format!("{BUS}  power_on_level = 29\n")).len(), 1);
        // Unset: the gear keeps what it has.
        assert!(rules(BUS).is_empty());
        // A new group too.
        let v = rules(&format!(
            "{BUS}\n  [[dali.group]]\n  number = 2\n  members = [2]\n  system_failure_level = 10\n"
        ));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("group 2"));
        // max_level clamps the fallback.
        let v = rules(&format!("{BUS}  max_level = 20\n"));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("max_level = 20"), "{v:?}");
    }

    const METER: &str = "[[modbus]]\nname = \"meter\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:502\"\nunit_id = 1\n  [[modbus.point]]\n  name = \"setpoint\"\n  table = \"holding\"\n  address = 10\n  type = \"u16\"\n  writable = true\n  min = 0\n  max = 100\n";

    #[test]
    fn writable_points_may_not_be_added_or_changed() {
        // Same writable point: fine.
        assert!(rules(METER).is_empty());
        // A read-only register made writable (the attack of issue 12).
        let v = rules(&format!(
            "{METER}  [[modbus.point]]\n  name = \"limit\"\n  table = \"holding\"\n  address = 11\n  type = \"u16\"\n  writable = true\n"
        ));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].starts_with("safety.desired_may_write: meter/limit: writable in the desired config but read-only in the local files"), "{v:?}");
        // A widened range.
        let v = rules(&METER.replace("max = 100", "max = 1000"));
        assert_eq!(v.len(), 1);
        assert!(v[0].contains("register, encoding or range"), "{v:?}");
        // Another register under the same name.
        assert_eq!(
            rules(&METER.replace("address = 10", "address = 12")).len(),
            1
        );
        // The device moved elsewhere.
        let v = rules(&METER.replace("127.0.0.1:502", "10.0.0.9:502"));
        assert!(v[0].contains("address or unit id"), "{v:?}");
        // A new device with a writable point, unless listed.
        let tc = "[[modbus]]\nname = \"tc-12\"\ntransport = \"tcp\"\naddress = \"127.0.0.1:503\"\nunit_id = 1\n  [[modbus.point]]\n  name = \"plan\"\n  table = \"holding\"\n  address = 0\n  type = \"u16\"\n  writable = true\n  [[modbus.point]]\n  name = \"mode\"\n  table = \"holding\"\n  address = 1\n  type = \"u16\"\n  writable = true\n";
        let v = rules(tc);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("tc-12/mode") && v[0].contains("a device the local files do not have"),
            "{v:?}"
        );
    }
}
