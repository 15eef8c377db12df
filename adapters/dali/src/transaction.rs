//! One bus transaction: a forward frame out, at most one backward frame back.
//!
//! [`Transport`] is the seam between the bus logic and an interface (ATX HAT
//! serial line, the simulated bus, later DALI-USB/hidraw or DALI over Modbus).
//! A transport sends one request and reports what the bus did; it never
//! interprets the answer. Invariants: a `send_twice` request puts the identical
//! frame on the bus twice with nothing in between (within 100 ms), and yields
//! the reply to the second copy; a transport returns `Err` only when the
//! interface itself failed — silence on the bus is [`Reply::NoAnswer`], several
//! gear answering at once is [`Reply::Collision`].

use std::future::Future;

use crate::command::{Answer, Command};
use crate::error::{Error, Result};
use crate::frame::ForwardFrame;

/// What the bus did after a forward frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// One backward frame was received.
    Answer(u8),
    /// No backward frame (also the normal outcome of a command).
    NoAnswer,
    /// A corrupt backward frame: several gear answered at once.
    Collision,
}

impl Reply {
    /// Reads a yes/no answer: any backward frame, a collision included, is YES.
    pub fn is_yes(self) -> bool {
        !matches!(self, Reply::NoAnswer)
    }

    /// Reads a value answer; a collision is an error (the value is unusable).
    pub fn value(self, what: &dyn Fn() -> String) -> Result<Option<u8>> {
        match self {
            Reply::Answer(v) => Ok(Some(v)),
            Reply::NoAnswer => Ok(None),
            Reply::Collision => Err(Error::Collision(what())),
        }
    }
}

/// One request to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The frame.
    pub frame: ForwardFrame,
    /// Put the frame on the bus twice within 100 ms (configuration commands).
    pub send_twice: bool,
    /// A backward frame may follow: wait for it.
    pub expect_answer: bool,
}

impl Request {
    /// The request for a typed command, with its own send-twice and answer flags.
    pub fn from_command(cmd: &Command) -> Self {
        Request {
            frame: ForwardFrame::Gear(cmd.frame()),
            send_twice: cmd.send_twice(),
            expect_answer: cmd.answer() != Answer::None,
        }
    }

    /// The same frame sent once, whatever the command would need (for tests
    /// and for diagnosing gear that ignore a single copy).
    pub fn once(cmd: &Command) -> Self {
        Request {
            send_twice: false,
            ..Self::from_command(cmd)
        }
    }
}

/// A DALI interface able to run one transaction at a time.
///
/// Implementations: [`crate::atx::AtxHat`], [`crate::sim::SimBus`]. A new
/// interface implements this trait only; nothing else in the crate changes.
pub trait Transport: Send {
    /// Sends the request and reports the bus outcome.
    fn transact(&mut self, request: Request) -> impl Future<Output = Result<Reply>> + Send;
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn transact(&mut self, request: Request) -> impl Future<Output = Result<Reply>> + Send {
        (**self).transact(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Address;

    #[test]
    fn yes_no_and_values() {
        assert!(Reply::Answer(0xFF).is_yes());
        assert!(Reply::Collision.is_yes());
        assert!(!Reply::NoAnswer.is_yes());
        let w = || "x".to_string();
        assert_eq!(Reply::Answer(3).value(&w).unwrap(), Some(3));
        assert_eq!(Reply::NoAnswer.value(&w).unwrap(), None);
        assert!(matches!(
            Reply::Collision.value(&w),
            Err(Error::Collision(_))
        ));
    }

    #[test]
    fn request_flags_follow_the_command() {
        let a = Address::short(1).unwrap();
        let r = Request::from_command(&Command::SetPowerOnLevel(a));
        assert!(r.send_twice && !r.expect_answer);
        assert!(!Request::once(&Command::SetPowerOnLevel(a)).send_twice);
        let r = Request::from_command(&Command::Query(a, crate::command::Query::Status));
        assert!(!r.send_twice && r.expect_answer);
    }
}
