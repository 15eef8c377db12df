//! Opening a line, and the requests and responses of one exchange.
//!
//! A [`Connector`] opens one connection to a line: a TCP endpoint ([`TcpConnector`]) or a serial
//! port ([`RtuConnector`]). It addresses no unit: the line owner ([`mod@crate::line`]) names the
//! unit of each request with tokio-modbus' `set_slave`, so every unit of an RS-485 line, or
//! behind one TCP gateway, shares the one connection. Tests hand the line in-memory streams
//! through their own connector.
//!
//! The rest is pure: [`read_request`]/[`write_request`] build the request of a planned read or an
//! encoded write, [`read_data`] checks a response against its read (a response of the wrong
//! length or kind is a protocol error, never an out-of-bounds slice), [`describe`] names a
//! request for people.

use std::future::Future;
use std::time::Duration;

use tokio_modbus::client::Context;
use tokio_modbus::{Request, Response, Slave};

use crate::decode::WriteOp;
use crate::error::Error;
use crate::plan::ReadRequest;
use crate::{Parity, SerialSettings, Table, Transport};

/// Opens connections to one line.
pub trait Connector: Send + 'static {
    /// Opens a fresh connection. The caller bounds it with a timeout.
    fn connect(&mut self) -> impl Future<Output = Result<Context, Error>> + Send;

    /// Quiet time the line needs between two frames (zero for TCP). Also left after an error
    /// before reopening, so the devices' receivers can resynchronise.
    fn frame_gap(&self) -> Duration {
        Duration::ZERO
    }
}

/// Modbus TCP: resolves `host:port` at each connect.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    address: String,
}

impl TcpConnector {
    /// A connector to `address` (`host:port`).
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
        }
    }
}

impl Connector for TcpConnector {
    async fn connect(&mut self) -> Result<Context, Error> {
        let mut last = None;
        for addr in tokio::net::lookup_host(self.address.as_str()).await? {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Requests are small and latency-bound.
                    stream.set_nodelay(true)?;
                    // The unit is set before each request.
                    return Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(0)));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .map(Error::from)
            .unwrap_or_else(|| Error::Config(format!("`{}` resolves to no address", self.address))))
    }
}

/// Modbus RTU on a serial line.
#[derive(Debug, Clone)]
pub struct RtuConnector {
    settings: SerialSettings,
}

impl RtuConnector {
    /// A connector to the line described by `settings`.
    pub fn new(settings: SerialSettings) -> Self {
        Self { settings }
    }
}

/// The RTU inter-frame gap: 3.5 character times, fixed at 1.75 ms above 19200 baud
/// (Modbus over serial line, §2.5.1.1).
pub fn inter_frame_gap(settings: &SerialSettings) -> Duration {
    if settings.baud == 0 || settings.baud > 19_200 {
        return Duration::from_micros(1750);
    }
    let parity_bits = u32::from(settings.parity != Parity::None);
    let bits_per_char =
        1 + u32::from(settings.data_bits) + parity_bits + u32::from(settings.stop_bits);
    Duration::from_nanos(u64::from(bits_per_char) * 3_500_000_000 / u64::from(settings.baud))
}

impl Connector for RtuConnector {
    async fn connect(&mut self) -> Result<Context, Error> {
        use tokio_serial::SerialPort as _;
        let s = &self.settings;
        let data_bits = match s.data_bits {
            5 => tokio_serial::DataBits::Five,
            6 => tokio_serial::DataBits::Six,
            7 => tokio_serial::DataBits::Seven,
            _ => tokio_serial::DataBits::Eight,
        };
        let builder = tokio_serial::new(s.path.to_string_lossy(), s.baud)
            .data_bits(data_bits)
            .parity(match s.parity {
                Parity::None => tokio_serial::Parity::None,
                Parity::Even => tokio_serial::Parity::Even,
                Parity::Odd => tokio_serial::Parity::Odd,
            })
            .stop_bits(if s.stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            });
        let port = tokio_serial::SerialStream::open(&builder)
            .map_err(|e| Error::Serial(format!("{}: {e}", s.path.display())))?;
        // Bytes left over from an interrupted exchange would be read as the next response.
        port.clear(tokio_serial::ClearBuffer::All)
            .map_err(|e| Error::Serial(format!("{}: {e}", s.path.display())))?;
        Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(0)))
    }

    fn frame_gap(&self) -> Duration {
        inter_frame_gap(&self.settings)
    }
}

/// The connector of a [`Transport`], so one line type serves both.
#[derive(Debug, Clone)]
pub enum AnyConnector {
    /// Modbus TCP.
    Tcp(TcpConnector),
    /// Modbus RTU.
    Rtu(RtuConnector),
}

impl AnyConnector {
    /// The connector reaching `transport`.
    pub fn new(transport: &Transport) -> Self {
        match transport {
            Transport::Tcp { address } => AnyConnector::Tcp(TcpConnector::new(address.clone())),
            Transport::Rtu(s) => AnyConnector::Rtu(RtuConnector::new(s.clone())),
        }
    }
}

impl Connector for AnyConnector {
    async fn connect(&mut self) -> Result<Context, Error> {
        match self {
            AnyConnector::Tcp(c) => c.connect().await,
            AnyConnector::Rtu(c) => c.connect().await,
        }
    }

    fn frame_gap(&self) -> Duration {
        match self {
            AnyConnector::Tcp(c) => c.frame_gap(),
            AnyConnector::Rtu(c) => c.frame_gap(),
        }
    }
}

/// A request as a person names it in a timeout: `read holding 0..=3`, `write coil 5`.
pub fn describe(request: &Request<'_>) -> String {
    let range = |what: &str, start: u16, count: usize| match count {
        0 | 1 => format!("{what} {start}"),
        n => format!("{what} {start}..={}", u32::from(start) + n as u32 - 1),
    };
    match request {
        Request::ReadCoils(a, n) => range("read coils", *a, usize::from(*n)),
        Request::ReadDiscreteInputs(a, n) => range("read discrete inputs", *a, usize::from(*n)),
        Request::ReadInputRegisters(a, n) => range("read input registers", *a, usize::from(*n)),
        Request::ReadHoldingRegisters(a, n) => range("read holding registers", *a, usize::from(*n)),
        Request::WriteSingleCoil(a, _) => range("write coil", *a, 1),
        Request::WriteSingleRegister(a, _) => range("write holding register", *a, 1),
        Request::WriteMultipleRegisters(a, v) => range("write holding registers", *a, v.len()),
        other => format!("{other:?}"),
    }
}

/// The raw answer to a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadData {
    /// Coils or discrete inputs, exactly `count` of them.
    Bits(Vec<bool>),
    /// Registers, exactly `count` of them.
    Words(Vec<u16>),
}

/// The request of one planned read.
pub fn read_request(req: &ReadRequest) -> Request<'static> {
    let (start, count) = (req.start, req.count);
    match req.table {
        Table::Coil => Request::ReadCoils(start, count),
        Table::Discrete => Request::ReadDiscreteInputs(start, count),
        Table::Input => Request::ReadInputRegisters(start, count),
        Table::Holding => Request::ReadHoldingRegisters(start, count),
    }
}

/// Checks the response to a planned read: a response of the wrong length or kind is a protocol
/// error. (tokio-modbus' `Reader` helpers only `debug_assert!` the length and would panic on a
/// misbehaving device.)
pub fn read_data(req: &ReadRequest, response: Response) -> Result<ReadData, Error> {
    let n = usize::from(req.count);
    match response {
        // Bit responses are padded to whole bytes.
        Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits)
            if bits.len() >= n && matches!(req.table, Table::Coil | Table::Discrete) =>
        {
            bits.truncate(n);
            Ok(ReadData::Bits(bits))
        }
        Response::ReadInputRegisters(words) | Response::ReadHoldingRegisters(words)
            if words.len() == n && matches!(req.table, Table::Input | Table::Holding) =>
        {
            Ok(ReadData::Words(words))
        }
        other => Err(Error::Protocol(format!(
            "asked for {} items at {}, got {other:?}",
            req.count, req.start
        ))),
    }
}

/// The request of one encoded write: FC5 for a coil, FC6 for one register, FC16 for several.
pub fn write_request(op: &WriteOp) -> Request<'static> {
    match op.clone() {
        WriteOp::Coil { address, value } => Request::WriteSingleCoil(address, value),
        WriteOp::Register { address, value } => Request::WriteSingleRegister(address, value),
        WriteOp::Registers { address, values } => {
            Request::WriteMultipleRegisters(address, values.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_for_people() {
        assert_eq!(
            describe(&Request::ReadHoldingRegisters(6, 2)),
            "read holding registers 6..=7"
        );
        assert_eq!(describe(&Request::ReadCoils(0, 1)), "read coils 0");
        assert_eq!(
            describe(&Request::WriteSingleRegister(3, 9)),
            "write holding register 3"
        );
    }

    #[test]
    fn responses_must_match_their_read() {
        let req = ReadRequest {
            table: Table::Holding,
            start: 4,
            count: 2,
            slots: Vec::new(),
        };
        assert_eq!(
            read_data(&req, Response::ReadHoldingRegisters(vec![1, 2])).unwrap(),
            ReadData::Words(vec![1, 2])
        );
        for wrong in [
            Response::ReadHoldingRegisters(vec![1]),
            Response::ReadCoils(vec![true; 8]),
        ] {
            assert!(matches!(read_data(&req, wrong), Err(Error::Protocol(_))));
        }
        let coils = ReadRequest {
            table: Table::Coil,
            start: 0,
            count: 3,
            slots: Vec::new(),
        };
        assert_eq!(
            read_data(
                &coils,
                Response::ReadCoils(vec![true, false, true, false, false])
            )
            .unwrap(),
            ReadData::Bits(vec![true, false, true])
        );
    }

    #[test]
    fn frame_gaps() {
        let mut s = SerialSettings {
            path: "/dev/null".into(),
            baud: 9600,
            parity: Parity::Even,
            data_bits: 8,
            stop_bits: 1,
        };
        // 11 bits per character, 3.5 characters at 9600 baud ≈ 4.01 ms.
        assert_eq!(inter_frame_gap(&s), Duration::from_nanos(4_010_416));
        s.baud = 115_200;
        assert_eq!(inter_frame_gap(&s), Duration::from_micros(1750));
    }
}
