//! Test configurations for the rules modules.

use std::time::Duration;

use jiff::Timestamp;

use super::Now;
use crate::config::{load_sources, Config, Source};

/// A cabinet in Dijon (Europe/Paris) with Modbus points `w/t` (i16), `w/h` (u16), `w/door`
/// (discrete), writable `tc/plan` (0..15) and `tc/relay` (coil), a simulated DALI bus `bus-a`
/// of 8 gear with group 1 = 0..3 and group 2 = 4, 5, and a programme: dusk 100 %, 22:00 70 %.
pub(crate) const BASE: &str = r#"[cabinet]
id = "t"
latitude = 47.322
longitude = 5.0415
timezone = "Europe/Paris"
[storage]
path = "/tmp/x"
[uplink]
broker = "mqtt://127.0.0.1"
[security]
require_signed = false
[[modbus]]
name = "w"
address = "127.0.0.1"
  [[modbus.point]]
  name = "t"
  table = "input"
  address = 0
  type = "i16"
  [[modbus.point]]
  name = "h"
  table = "input"
  address = 1
  [[modbus.point]]
  name = "door"
  table = "discrete"
  address = 0
[[modbus]]
name = "tc"
address = "127.0.0.2"
  [[modbus.point]]
  name = "plan"
  table = "holding"
  address = 0
  writable = true
  min = 0
  max = 15
  [[modbus.point]]
  name = "relay"
  table = "coil"
  address = 0
  writable = true
[[dali]]
name = "bus-a"
interface = "sim"
luminaires = 8
  [[dali.group]]
  number = 1
  members = [0, 1, 2, 3]
  [[dali.group]]
  number = 2
  members = [4, 5]
"#;

/// The programme of [`BASE`]'s cabinet; append after `extra`, which may open other tables.
const PROGRAMME: &str = r#"
[[lighting.step]]
target = "all"
at = "dusk"
level_percent = 100
[[lighting.step]]
target = "all"
at = "22:00"
level_percent = 70
"#;

/// [`BASE`] plus `extra`, with the programme.
pub(crate) fn config(extra: &str) -> Config {
    load_sources(&[
        Source {
            name: "base.toml".into(),
            text: format!("{BASE}{PROGRAMME}"),
        },
        Source {
            name: "t.toml".into(),
            text: extra.into(),
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// 2026-12-21 18:00 UTC (night in Dijon, before 22:00 Paris) plus `s` seconds, monotonic `s`.
pub(crate) fn evening(s: u64) -> Now {
    let t0: Timestamp = "2026-12-21T18:00:00Z".parse().unwrap();
    Now {
        mono: Duration::from_secs(s),
        wall: t0 + jiff::SignedDuration::from_secs(s as i64),
    }
}
