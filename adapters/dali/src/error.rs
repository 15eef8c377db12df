//! The crate's single error type.
//!
//! Every variant says, through [`Error::class`], whether retrying can help
//! (transient), whether the request itself is wrong (permanent) or whether a
//! device on the bus answered in a way that makes the request fail (device).

use std::time::Duration;

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The interface or link failed; the same request may succeed later.
    Transient,
    /// The request can never succeed as given (bad argument, unsupported interface).
    Permanent,
    /// The bus answered, but the answer makes the request fail (collision, failed verify).
    Device,
}

/// Errors of the DALI adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// I/O error on the interface (serial port, pty).
    #[error("DALI interface I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Opening the serial port failed.
    #[error("cannot open DALI interface {path}: {source}")]
    Open {
        /// Port path.
        path: String,
        /// Cause reported by the serial layer.
        source: tokio_serial::Error,
    },
    /// The interface did not reply within the deadline (not the same as "no backward frame").
    #[error("DALI interface did not reply within {0:?}")]
    Timeout(Duration),
    /// The interface closed the link.
    #[error("DALI interface closed the link")]
    Closed,
    /// The interface sent something the protocol does not allow here.
    #[error("DALI interface protocol error: {0}")]
    Protocol(String),
    /// The interface kept reporting bus conflicts and gave up retransmitting.
    #[error("DALI bus busy: frame not sent after {0} conflicts")]
    Busy(u32),
    /// Several gear answered a numeric query at once: the value is unusable.
    #[error("DALI collision: several gear answered {0}")]
    Collision(String),
    /// A value written to a gear did not read back as written.
    #[error("DALI gear {address}: {what} reads back {found:?} after writing {wanted}")]
    Verify {
        /// Short address.
        address: u8,
        /// Parameter name.
        what: &'static str,
        /// Value written (a level, or a group bitmap).
        wanted: u16,
        /// Value read back (None = no answer).
        found: Option<u16>,
    },
    /// A gear that must answer did not.
    #[error("DALI gear {address} did not answer {what}")]
    NoAnswer {
        /// Short address.
        address: u8,
        /// Query name.
        what: &'static str,
    },
    /// An argument is out of its range (short address, group, scene, percent…).
    #[error("invalid DALI argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// Whether retrying can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Io(_) | Error::Timeout(_) | Error::Closed | Error::Busy(_) => {
                ErrorClass::Transient
            }
            Error::Open { .. } | Error::Protocol(_) | Error::InvalidArgument(_) => {
                ErrorClass::Permanent
            }
            Error::Collision(_) | Error::Verify { .. } | Error::NoAnswer { .. } => {
                ErrorClass::Device
            }
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
