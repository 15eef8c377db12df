//! One connection to one device: opening it, and strictly sequential, time-bounded requests.
//!
//! tokio-modbus has no request timeout and cannot resynchronise after one (a late answer is
//! taken for the next request's), so every request runs under the device's timeout and any
//! timeout, transport or protocol error drops the connection ([`Session::is_connected`] turns
//! false); the device task then reconnects with backoff. A Modbus exception leaves the
//! connection in place: the device answered, the link is fine.
//!
//! [`Connector`] abstracts how a connection is opened, so tests can hand the session in-memory
//! streams; [`TcpConnector`] and [`RtuConnector`] are the real ones.

use std::future::Future;
use std::time::Duration;

use tokio_modbus::client::{Client as _, Context};
use tokio_modbus::{Request, Response, Slave};

use crate::decode::WriteOp;
use crate::error::Error;
use crate::plan::ReadRequest;
use crate::{Parity, SerialSettings, Table};

/// Opens connections to one device.
pub trait Connector: Send {
    /// Opens a fresh connection. The caller bounds it with the device's timeout.
    fn connect(&mut self) -> impl Future<Output = Result<Context, Error>> + Send;

    /// Quiet time the line needs between two frames (zero for TCP). Also left after an error
    /// before reconnecting, so the device's receiver can resynchronise.
    fn frame_gap(&self) -> Duration {
        Duration::ZERO
    }
}

/// Modbus TCP: resolves `host:port` at each connect.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    address: String,
    unit: u8,
}

impl TcpConnector {
    /// A connector to `address` (`host:port`) addressing `unit`.
    pub fn new(address: impl Into<String>, unit: u8) -> Self {
        Self {
            address: address.into(),
            unit,
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
                    return Ok(tokio_modbus::client::tcp::attach_slave(
                        stream,
                        Slave(self.unit),
                    ));
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
    unit: u8,
}

impl RtuConnector {
    /// A connector to the line described by `settings`, addressing `unit`.
    pub fn new(settings: SerialSettings, unit: u8) -> Self {
        Self { settings, unit }
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
        Ok(tokio_modbus::client::rtu::attach_slave(
            port,
            Slave(self.unit),
        ))
    }

    fn frame_gap(&self) -> Duration {
        inter_frame_gap(&self.settings)
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

/// A device's connection, absent while disconnected.
pub struct Session {
    ctx: Option<Context>,
    device: String,
    timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device)
            .field("connected", &self.ctx.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `Ok(Ok(_))` answered, `Ok(Err(code))` answered with a Modbus exception, `Err` link failure.
pub type Answer<T> = Result<Result<T, u8>, Error>;

impl Session {
    /// A disconnected session to `device` (named in timeouts) whose requests time out after
    /// `timeout`.
    pub fn new(device: &str, timeout: Duration) -> Self {
        Self {
            ctx: None,
            device: device.to_owned(),
            timeout,
        }
    }

    fn timed_out(&self, request: String) -> Error {
        Error::Timeout {
            device: self.device.clone(),
            request,
            after: self.timeout,
        }
    }

    /// True while a connection is held.
    pub fn is_connected(&self) -> bool {
        self.ctx.is_some()
    }

    /// Opens a connection through `connector`, bounded by the timeout.
    pub async fn connect<C: Connector>(&mut self, connector: &mut C) -> Result<(), Error> {
        self.ctx = None;
        let ctx = tokio::time::timeout(self.timeout, connector.connect())
            .await
            .map_err(|_| self.timed_out("connect".into()))??;
        self.ctx = Some(ctx);
        Ok(())
    }

    /// Drops the connection (dropping the stream closes it; a graceful `disconnect()` could
    /// itself hang on a dead peer).
    pub fn disconnect(&mut self) {
        self.ctx = None;
    }

    /// Sends one request under the timeout; drops the connection on any link failure.
    async fn call(&mut self, request: Request<'static>) -> Answer<Response> {
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(Error::DeviceDown);
        };
        let what = describe(&request);
        let outcome = match tokio::time::timeout(self.timeout, ctx.call(request)).await {
            Err(_) => Err(self.timed_out(what)),
            Ok(Err(e)) => Err(Error::from(e)),
            Ok(Ok(Ok(v))) => Ok(Ok(v)),
            Ok(Ok(Err(code))) => Ok(Err(u8::from(code))),
        };
        if outcome.is_err() {
            self.disconnect();
        }
        outcome
    }

    fn mismatch(&mut self, what: String) -> Error {
        self.disconnect();
        Error::Protocol(what)
    }

    /// Executes one planned read. A response of the wrong length or kind is a protocol error.
    ///
    /// (Goes through `Client::call` rather than tokio-modbus' `Reader` helpers, which
    /// `debug_assert!` the response length and would panic on a misbehaving device.)
    pub async fn read(&mut self, req: &ReadRequest) -> Answer<ReadData> {
        let (start, count) = (req.start, req.count);
        let request = match req.table {
            Table::Coil => Request::ReadCoils(start, count),
            Table::Discrete => Request::ReadDiscreteInputs(start, count),
            Table::Input => Request::ReadInputRegisters(start, count),
            Table::Holding => Request::ReadHoldingRegisters(start, count),
        };
        let response = match self.call(request).await? {
            Ok(r) => r,
            Err(code) => return Ok(Err(code)),
        };
        let n = usize::from(count);
        let data = match response {
            // Bit responses are padded to whole bytes.
            Response::ReadCoils(mut bits) | Response::ReadDiscreteInputs(mut bits)
                if bits.len() >= n =>
            {
                bits.truncate(n);
                ReadData::Bits(bits)
            }
            Response::ReadInputRegisters(words) | Response::ReadHoldingRegisters(words)
                if words.len() == n =>
            {
                ReadData::Words(words)
            }
            other => {
                return Err(
                    self.mismatch(format!("asked for {count} items at {start}, got {other:?}"))
                )
            }
        };
        Ok(Ok(data))
    }

    /// Executes one write: FC5 for a coil, FC6 for one register, FC16 for several.
    pub async fn write(&mut self, op: &WriteOp) -> Answer<()> {
        let request = match op.clone() {
            WriteOp::Coil { address, value } => Request::WriteSingleCoil(address, value),
            WriteOp::Register { address, value } => Request::WriteSingleRegister(address, value),
            WriteOp::Registers { address, values } => {
                Request::WriteMultipleRegisters(address, values.into())
            }
        };
        match self.call(request).await? {
            Ok(_) => Ok(Ok(())),
            Err(code) => Ok(Err(code)),
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
