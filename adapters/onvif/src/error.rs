//! The crate's one error type.
//!
//! [`Error::class`] tells the caller what to do:
//! - [`ErrorClass::Transient`]: no usable answer (timeout, refused, reset, broken HTTP): the
//!   camera may be offline; retry later with backoff;
//! - [`ErrorClass::Device`]: the camera answered but said no or said something unusable (a SOAP
//!   fault, an authentication refusal, hostile or oversize XML): it is online; retrying the same
//!   thing soon will not help. [`Error::is_auth`] singles out authentication refusals, which
//!   must be retried *slowly* (cameras lock accounts after repeated failed logins);
//! - [`ErrorClass::Permanent`]: the request itself is wrong (bad URL, unknown preset, feature
//!   the camera does not have): never retry as is.
//!
//! Messages never contain passwords, digests or URLs with credentials or query strings.

use std::sync::Arc;
use std::time::Duration;

use crate::soap::Fault;

/// How an [`Error`] should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// No usable answer; the same request may succeed later.
    Transient,
    /// The camera answered and refused, or answered garbage.
    Device,
    /// The request can never succeed as given.
    Permanent,
}

/// Everything that can go wrong talking to a camera. Cheap to clone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No complete answer within the call's timeout.
    #[error("{op}: no answer within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// Connecting, writing or reading failed.
    #[error("{op}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The I/O error.
        source: Arc<std::io::Error>,
    },
    /// The HTTP answer was broken (closed early, malformed head).
    #[error("{op}: HTTP: {reason}")]
    Http {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The camera refused our credentials (HTTP 401 without a usable Digest challenge, Digest
    /// rejected, or a NotAuthorized fault after the clock was re-measured).
    #[error("{op}: authentication refused: {reason}")]
    Auth {
        /// The operation.
        op: &'static str,
        /// What the camera said (fault text or HTTP status).
        reason: String,
    },
    /// A SOAP fault.
    #[error("{op}: camera fault {fault}")]
    Fault {
        /// The operation.
        op: &'static str,
        /// The fault.
        fault: Box<Fault>,
    },
    /// The answer was not usable: refused XML (DOCTYPE, entity, too big, too deep), not SOAP,
    /// an unexpected HTTP status, or a required element missing.
    #[error("{op}: unusable answer: {reason}")]
    BadAnswer {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The camera lacks the service or feature (no PTZ, no pull point, https-only).
    #[error("{op}: not supported: {reason}")]
    Unsupported {
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
    /// An argument is wrong; `field` names it (`preset`, `address`).
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// What the caller should do.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Timeout { .. } | Error::Io { .. } | Error::Http { .. } => ErrorClass::Transient,
            Error::Auth { .. } | Error::Fault { .. } | Error::BadAnswer { .. } => {
                ErrorClass::Device
            }
            Error::Unsupported { .. } | Error::InvalidArgument { .. } => ErrorClass::Permanent,
        }
    }

    /// True when the camera refused our credentials.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Auth { .. })
    }

    /// True when there was no usable answer at all (the camera looks offline).
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The SOAP fault, if the camera sent one.
    pub fn fault(&self) -> Option<&Fault> {
        match self {
            Error::Fault { fault, .. } => Some(fault),
            _ => None,
        }
    }

    /// True when the camera says it does not know the subscription (it forgot it).
    pub fn is_resource_unknown(&self) -> bool {
        self.fault().is_some_and(Fault::is_resource_unknown)
    }

    pub(crate) fn bad(op: &'static str, reason: impl Into<String>) -> Self {
        Error::BadAnswer {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(op: &'static str, what: &str) -> Self {
        Error::bad(op, format!("no {what} in the answer"))
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let t = Error::Timeout {
            op: "x",
            after: Duration::from_secs(1),
        };
        assert_eq!(t.class(), ErrorClass::Transient);
        assert!(t.is_transient());
        let a = Error::Auth {
            op: "GetDeviceInformation",
            reason: "HTTP 401".into(),
        };
        assert!(a.is_auth() && a.class() == ErrorClass::Device);
        assert_eq!(
            a.to_string(),
            "GetDeviceInformation: authentication refused: HTTP 401"
        );
        assert_eq!(
            Error::InvalidArgument {
                field: "preset",
                reason: "no preset named \"x\"".into()
            }
            .class(),
            ErrorClass::Permanent
        );
    }
}
