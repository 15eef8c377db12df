//! The crate's one error type.
//!
//! Three families, told apart by [`Error::kind`]:
//! - transient link trouble (timeout, I/O, protocol desynchronisation): the session drops its
//!   connection and reconnects with backoff;
//! - a device's own Modbus exception: the link is fine, nothing is reconnected;
//! - permanent problems (a write rejected before touching the bus, an unusable configuration,
//!   the device task being gone): retrying the same thing cannot help.
//!
//! A write that may have reached the device but was not answered ([`Error::OutcomeUnknown`]) is
//! transient, and never reported as plainly failed: the device may still apply it. The unit reads
//! the point back when it answers again ([`crate::DeviceEvent::WriteOutcome`]).

use std::sync::Arc;
use std::time::Duration;

/// How an [`Error`] should be treated by whoever sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The link failed; retrying after a reconnect may succeed.
    Transient,
    /// The device answered with a Modbus exception; the link is fine.
    DeviceException,
    /// Retrying the same operation cannot succeed.
    Permanent,
}

/// Everything that can go wrong talking to a Modbus device. Cheap to clone, so one failure can
/// be reported both to a waiting write and as a device event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No response (or no connection) within the device's timeout.
    #[error("no response from {device} to {request} within {after:?}")]
    Timeout {
        /// The device (its configured name).
        device: String,
        /// What was asked (`connect`, `read holding registers 0..=3`, …).
        request: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// Connecting, reading or writing the transport failed.
    #[error("transport: {0}")]
    Io(Arc<std::io::Error>),
    /// The serial port could not be opened or configured.
    #[error("serial port: {0}")]
    Serial(String),
    /// The peer's answer did not match the request (wrong transaction id, function code,
    /// length): the stream can no longer be trusted.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The device answered with a Modbus exception response.
    #[error("modbus exception {code:#04x} ({})", exception_name(*.code))]
    Exception {
        /// The exception code (1 = illegal function, 2 = illegal data address, …).
        code: u8,
    },
    /// The device is currently unreachable, so a write was not attempted.
    #[error("device is down")]
    DeviceDown,
    /// A write was refused before touching the bus; `field` names what was wrong.
    #[error("{field}: {reason}")]
    Rejected {
        /// The offending field of the request (`point`, `value`).
        field: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// The configuration cannot be used (bad address, unresolvable host, …).
    #[error("configuration: {0}")]
    Config(String),
    /// The device task has stopped (shutdown), so the request was not executed.
    #[error("device task stopped")]
    Stopped,
    /// A write was sent but not confirmed (no answer within the timeout, a broken link, or a
    /// gateway whose target did not answer): the device may or may not have applied it.
    #[error("unknown: {cause}; the device may still apply it")]
    OutcomeUnknown {
        /// Why no confirmation came.
        cause: Box<Error>,
    },
}

impl Error {
    /// Which family this error belongs to.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Timeout { .. }
            | Error::Io(_)
            | Error::Serial(_)
            | Error::Protocol(_)
            | Error::DeviceDown
            | Error::OutcomeUnknown { .. } => ErrorKind::Transient,
            Error::Exception { .. } => ErrorKind::DeviceException,
            Error::Rejected { .. } | Error::Config(_) | Error::Stopped => ErrorKind::Permanent,
        }
    }

    /// True when the link failed and a reconnect/retry may help.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// The Modbus exception code, when the device answered with one.
    pub fn exception_code(&self) -> Option<u8> {
        match self {
            Error::Exception { code } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn rejected(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Rejected {
            field,
            reason: reason.into(),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<tokio_modbus::Error> for Error {
    fn from(e: tokio_modbus::Error) -> Self {
        match e {
            tokio_modbus::Error::Transport(io) => io.into(),
            tokio_modbus::Error::Protocol(p) => Error::Protocol(p.to_string()),
        }
    }
}

impl From<tokio_modbus::ExceptionCode> for Error {
    fn from(code: tokio_modbus::ExceptionCode) -> Self {
        Error::Exception { code: code.into() }
    }
}

/// Exception 0x0A, "gateway path unavailable": a gateway cannot reach the unit's line.
pub const GATEWAY_PATH_UNAVAILABLE: u8 = 0x0A;
/// Exception 0x0B, "gateway target device failed to respond": the unit behind a gateway is
/// silent. For a read it means the unit is down (not a bad point); for a write, that the outcome
/// is unknown (the gateway did send it).
pub const GATEWAY_TARGET_FAILED: u8 = 0x0B;

/// Standard name of a Modbus exception code.
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "non-standard exception",
    }
}

/// Why one point of an otherwise successful poll has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PointError {
    /// The read request carrying this point was answered with a Modbus exception.
    #[error("modbus exception {code:#04x} ({name})", code = .0, name = exception_name(*.0))]
    Exception(u8),
    /// The registers decode to a NaN or infinite float, which has no JSON representation.
    #[error("value is not a finite number")]
    NotFinite,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let timeout = Error::Timeout {
            device: "meter".into(),
            request: "read holding registers 0..=1".into(),
            after: Duration::from_millis(5),
        };
        assert!(timeout.is_transient());
        assert_eq!(
            timeout.to_string(),
            "no response from meter to read holding registers 0..=1 within 5ms"
        );
        assert!(Error::Protocol("x".into()).is_transient());
        let exc: Error = tokio_modbus::ExceptionCode::IllegalDataAddress.into();
        assert_eq!(exc.kind(), ErrorKind::DeviceException);
        assert_eq!(exc.exception_code(), Some(2));
        assert!(!exc.is_transient());
        assert_eq!(
            Error::rejected("value", "above max").kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            exc.to_string(),
            "modbus exception 0x02 (illegal data address)"
        );
        let unknown = Error::OutcomeUnknown {
            cause: Box::new(timeout.clone()),
        };
        assert!(unknown.is_transient());
        assert_eq!(
            unknown.to_string(),
            "unknown: no response from meter to read holding registers 0..=1 within 5ms; the device may still apply it"
        );
        assert_eq!(
            Error::rejected("value", "above max 10").to_string(),
            "value: above max 10"
        );
    }
}
