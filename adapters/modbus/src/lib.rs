//! Modbus TCP/RTU for cabinetd.
//!
//! Layers: point model ([`PointSpec`], [`DeviceSpec`]) → request planning (coalescing contiguous
//! points into as few reads as the protocol allows) → decoding raw registers/bits into scaled
//! values → the line owner ([`mod@line`]): one task per serial line or TCP endpoint, owning its one
//! connection, serving every unit on it one exchange at a time (the unit chosen per request),
//! each under the unit's timeout → the unit tasks ([`device`]): per device, its poll schedule,
//! its state (up/down, with a per-unit backoff), its writes and its events.
//!
//! Wiring: group the [`DeviceSpec`]s by [`LineKey`]; per line, [`line_for`] gives a handle and
//! the owner to spawn ([`Line::run`]); per device spawn [`run_unit`] with a clone of the handle,
//! an event channel, a write channel and a stop trigger (any `Future<Output = ()>`). A device
//! alone on its line can use [`run_device`], which does both.
//!
//! ```no_run
//! # async fn wire(specs: Vec<cabinetd_modbus::DeviceSpec>) {
//! use cabinetd_modbus::{line_for, run_unit, DeviceEvent, Value, WriteRequest};
//! use tokio::sync::{mpsc, oneshot, watch};
//!
//! // All of `specs` are on one line (same serial path, or same TCP host:port).
//! let (stop, stop_rx) = watch::channel(false);
//! let stopped = |mut rx: watch::Receiver<bool>| async move {
//!     let _ = rx.wait_for(|s| *s).await;
//! };
//! let (handle, line) = line_for(&specs[0].transport);
//! tokio::spawn(line.run(stopped(stop_rx.clone())));
//! let (events_tx, mut events) = mpsc::channel(64);
//! let mut writers = Vec::new();
//! for spec in specs {
//!     let (writes, writes_rx) = mpsc::channel(8);
//!     writers.push(writes);
//!     let run = run_unit(spec, handle.clone(), events_tx.clone(), writes_rx, stopped(stop_rx.clone()));
//!     tokio::spawn(run);
//! }
//!
//! let (reply, answer) = oneshot::channel();
//! let req = WriteRequest { point: "setpoint".into(), value: Value::Float(21.5), id: None, reply };
//! writers[0].send(req).await.unwrap();
//! // Ok(()) | Err(Error::Rejected { field, reason }) | Err(Error::OutcomeUnknown { .. }) | …
//! let _outcome = answer.await;
//!
//! while let Some(ev) = events.recv().await {
//!     match ev {
//!         DeviceEvent::Poll(report) => { /* report.readings: Ok(value) good, Err(_) bad */ }
//!         DeviceEvent::PollFailed { .. } => { /* cabinetd_poll_errors_total += 1 */ }
//!         DeviceEvent::Down { .. } => { /* points bad, one device_down event */ }
//!         DeviceEvent::Up => { /* device_up = 1 */ }
//!         DeviceEvent::WriteOutcome(_) => { /* what an unconfirmed write left there */ }
//!     }
//! }
//! stop.send(true).unwrap();
//! # }
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

pub mod decode;
pub mod device;
pub mod error;
pub mod line;
pub mod plan;
pub mod session;
pub mod sim;

pub use decode::{Value, WriteOp};
pub use device::{
    run_device, run_device_with, run_unit, DeviceEvent, PollReport, WriteOutcome, WriteRequest,
};
pub use error::{Error, ErrorKind, PointError};
pub use line::{line, line_for, Line, LineHandle, LineKey};
pub use plan::{plan, ReadRequest};
pub use session::{AnyConnector, Connector, RtuConnector, TcpConnector};

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Read/write single bits (function codes 1, 5, 15).
    Coil,
    /// Read-only single bits (function code 2).
    Discrete,
    /// Read-only 16-bit registers (function code 4).
    Input,
    /// Read/write 16-bit registers (function codes 3, 6, 16).
    Holding,
}

/// How a point's raw registers are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// One bit (coil/discrete), or a register that is non-zero.
    Bool,
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Four registers, unsigned.
    U64,
    /// Four registers, two's complement.
    I64,
    /// Two registers, IEEE 754 single.
    F32,
    /// Four registers, IEEE 754 double.
    F64,
}

impl DataType {
    /// Number of 16-bit registers (or bits, for `Bool` in a bit table) the type occupies.
    pub fn width(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
        }
    }
}

/// Order of the 16-bit words of a multi-register value (bytes within a word are always big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WordOrder {
    /// Most significant word first (the Modbus convention).
    #[default]
    Big,
    /// Least significant word first (many meters).
    Little,
}

/// One point of a device: where it lives and how to turn it into a value.
#[derive(Debug, Clone, PartialEq)]
pub struct PointSpec {
    /// Unique within its device.
    pub name: String,
    /// Data table.
    pub table: Table,
    /// 0-based register/coil address.
    pub address: u16,
    /// Interpretation.
    pub data_type: DataType,
    /// Word order of multi-register types.
    pub word_order: WordOrder,
    /// `value = raw * scale + offset`.
    pub scale: f64,
    /// `value = raw * scale + offset`.
    pub offset: f64,
    /// Engineering unit, informational.
    pub unit: Option<String>,
    /// Writable by commands (only coil/holding).
    pub writable: bool,
    /// Lowest value a write may set (engineering units).
    pub min: Option<f64>,
    /// Highest value a write may set (engineering units).
    pub max: Option<f64>,
    /// Decimals scaled readings are rounded to; `None`: those the scale and offset imply
    /// ([`decode::decimals`]).
    pub decimals: Option<u8>,
}

impl PointSpec {
    /// A read-only point with identity scaling (scale 1, offset 0) and the Modbus word order;
    /// set the other fields on the result.
    pub fn new(name: &str, table: Table, address: u16, data_type: DataType) -> PointSpec {
        PointSpec {
            name: name.into(),
            table,
            address,
            data_type,
            word_order: WordOrder::Big,
            scale: 1.0,
            offset: 0.0,
            unit: None,
            writable: false,
            min: None,
            max: None,
            decimals: None,
        }
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity (the Modbus RTU default).
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// Serial line settings for RTU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Serial device path (`/dev/ttyUSB0`, a pty, …).
    pub path: PathBuf,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// 7 or 8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

/// How to reach a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Modbus TCP to `host:port`.
    Tcp {
        /// `host:port`, resolved at each connect.
        address: String,
    },
    /// Modbus RTU on a serial line.
    Rtu(SerialSettings),
}

/// A Modbus device as the daemon polls it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Unique across all devices of the cabinet.
    pub name: String,
    /// Where it is.
    pub transport: Transport,
    /// Modbus unit (slave) id.
    pub unit_id: u8,
    /// Poll period.
    pub poll: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Points, in configuration order.
    pub points: Vec<PointSpec>,
}

impl DeviceSpec {
    /// A Modbus TCP device at `address` (`host:port`), unit 1, polled every second with a
    /// 500 ms timeout; set the other fields on the result.
    pub fn tcp(name: &str, address: &str, points: Vec<PointSpec>) -> DeviceSpec {
        DeviceSpec {
            name: name.into(),
            transport: Transport::Tcp {
                address: address.into(),
            },
            unit_id: 1,
            poll: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            points,
        }
    }
}

/// Checks a device's points for what the planner, decoder and encoder cannot handle.
///
/// Returns one message per problem, each naming the point, so configuration checking can report
/// them all at once. (Name syntax and uniqueness across devices are the daemon's business.)
pub fn validate_device(spec: &DeviceSpec) -> Vec<String> {
    let mut problems = Vec::new();
    if spec.timeout.is_zero() {
        problems.push("timeout must be greater than zero".to_string());
    }
    if spec.poll.is_zero() {
        problems.push("poll must be greater than zero".to_string());
    }
    for (i, p) in spec.points.iter().enumerate() {
        let at = format!("point `{}`", p.name);
        if spec.points[..i].iter().any(|q| q.name == p.name) {
            problems.push(format!("{at}: duplicate point name"));
        }
        if !plan::type_fits_table(p.table, p.data_type) {
            problems.push(format!(
                "{at}: coil and discrete points must have type bool"
            ));
        }
        if u32::from(p.address) + u32::from(plan::point_width(p)) > 65536 {
            problems.push(format!("{at}: extends past address 65535"));
        }
        if p.writable && matches!(p.table, Table::Input | Table::Discrete) {
            problems.push(format!(
                "{at}: only coil and holding points can be writable"
            ));
        }
        if !p.scale.is_finite() || p.scale == 0.0 {
            problems.push(format!("{at}: scale must be a finite non-zero number"));
        }
        if !p.offset.is_finite() {
            problems.push(format!("{at}: offset must be finite"));
        }
        if let (Some(min), Some(max)) = (p.min, p.max) {
            if min > max {
                problems.push(format!("{at}: min is greater than max"));
            }
        }
        if p.decimals.is_some_and(|d| d > decode::MAX_DECIMALS) {
            problems.push(format!(
                "{at}: decimals must be at most {}",
                decode::MAX_DECIMALS
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_each_problem() {
        let point = PointSpec::new;
        let mut bad_scale = point("s", Table::Holding, 0, DataType::U16);
        bad_scale.scale = 0.0;
        let mut ro_write = point("w", Table::Input, 0, DataType::U16);
        ro_write.writable = true;
        let mut range = point("r", Table::Holding, 1, DataType::U16);
        range.min = Some(5.0);
        range.max = Some(1.0);
        let spec = DeviceSpec::tcp(
            "d",
            "127.0.0.1:502",
            vec![
                point("ok", Table::Holding, 0, DataType::F32),
                point("ok", Table::Holding, 2, DataType::U16),
                point("c", Table::Coil, 0, DataType::U16),
                point("top", Table::Input, 65535, DataType::U32),
                bad_scale,
                ro_write,
                range,
            ],
        );
        let problems = validate_device(&spec);
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for needle in [
            "`ok`: duplicate",
            "`c`: coil",
            "`top`: extends",
            "`s`: scale",
            "`w`: only",
            "`r`: min",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} missing in {problems:#?}"
            );
        }
    }
}
