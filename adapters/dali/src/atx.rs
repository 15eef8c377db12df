//! ATX LED AL-DALI-HAT serial line protocol, as python-dali's `atxled` driver
//! speaks it (UART 19200 8N1).
//!
//! Request: one ASCII line, prefix + frame bytes in uppercase hex + `\n`:
//! `h` 16-bit, `t` 16-bit send-twice (the HAT repeats the frame), `l` 24-bit.
//! Reply lines: `Jxx` backward frame, `N` no backward frame (also the
//! acknowledgement of a command), `X` framing error (several gear answered),
//! `Z` bus conflict (the frame was not sent; retransmit). A `t` request is
//! answered by two lines, one per copy. Any other line is ignored.
//!
//! Invariants: one request in flight at a time (`&mut self`); a reply line is
//! awaited at most `reply_timeout`, after which the transaction fails with
//! [`Error::Timeout`] (the HAT, not the bus, is silent); `Z` is retried at most
//! `max_conflict_retries` times. A freshly opened port is drained until it has
//! been quiet for [`SETTLE`] before the first request: a reply to a request
//! of an earlier owner of the line (a stopped session, another program) must
//! not be taken as the answer to ours.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_serial::{DataBits, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use crate::error::{Error, Result};
use crate::frame::ForwardFrame;
use crate::transaction::{Reply, Request, Transport};

/// Baud rate of the HAT UART.
pub const BAUD: u32 = 19_200;
/// Quiet time on a freshly opened port after which no late reply of an earlier
/// exchange is expected (a reply follows its request within a few DALI frames).
pub const SETTLE: Duration = Duration::from_millis(100);

/// One reply line of the HAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// `Jxx`: backward frame.
    Answer(u8),
    /// `N`: no backward frame.
    NoAnswer,
    /// `X`: framing error.
    FramingError,
    /// `Z`: conflict, frame not sent.
    Conflict,
}

/// Encodes a request line (with the trailing `\n`).
pub fn encode_request(request: &Request) -> String {
    let prefix = match request.frame {
        ForwardFrame::Gear(_) if request.send_twice => 't',
        ForwardFrame::Gear(_) => 'h',
        // The HAT has no send-twice form for 24-bit frames.
        ForwardFrame::Device(_) => 'l',
    };
    let mut s = String::with_capacity(8);
    s.push(prefix);
    for b in request.frame.bytes() {
        s.push_str(&format!("{b:02X}"));
    }
    s.push('\n');
    s
}

/// Parses one reply line (without its line ending); `None` for lines the
/// protocol says to ignore.
pub fn parse_line(line: &str) -> Option<Line> {
    let line = line.trim();
    let mut chars = line.chars();
    match chars.next()? {
        'J' => u8::from_str_radix(chars.as_str(), 16)
            .ok()
            .map(Line::Answer),
        'N' => Some(Line::NoAnswer),
        'X' => Some(Line::FramingError),
        'Z' => Some(Line::Conflict),
        _ => None,
    }
}

/// ATX DALI HAT interface over any byte stream.
#[derive(Debug)]
pub struct AtxHat<S> {
    io: BufReader<S>,
    buf: Vec<u8>,
    reply_timeout: Duration,
    max_conflict_retries: u32,
    // Set after a timeout: a late reply may still arrive and must not be
    // taken as the answer to the next request.
    stale: bool,
    // Set by `open`: the line may carry replies to an earlier owner's requests.
    fresh: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AtxHat<S> {
    /// Wraps a stream (tests use `tokio::io::duplex`). Reply timeout 500 ms.
    pub fn new(io: S) -> Self {
        AtxHat {
            io: BufReader::new(io),
            buf: Vec::with_capacity(16),
            reply_timeout: Duration::from_millis(500),
            max_conflict_retries: 3,
            stale: false,
            fresh: false,
        }
    }

    /// Sets the deadline for each reply line.
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// Discards whatever the HAT sends until it has been quiet for `quiet`
    /// (best effort: a reply arriving later still than this is
    /// indistinguishable from the next answer). A zero `quiet` polls the read
    /// once: it takes only what is buffered.
    async fn drain(&mut self, quiet: Duration) {
        while let Ok(Ok(n)) =
            tokio::time::timeout(quiet, self.io.read_until(b'\n', &mut self.buf)).await
        {
            if n == 0 {
                break;
            }
            tracing::debug!(line = %String::from_utf8_lossy(&self.buf).trim(), "discarding late DALI HAT reply");
            self.buf.clear();
        }
        self.buf.clear();
    }

    async fn read_line(&mut self) -> Result<Line> {
        loop {
            // The buffer persists across a cancelled read so a late partial
            // line is completed rather than lost.
            let n =
                tokio::time::timeout(self.reply_timeout, self.io.read_until(b'\n', &mut self.buf))
                    .await
                    .map_err(|_| {
                        self.stale = true;
                        Error::Timeout(self.reply_timeout)
                    })??;
            if n == 0 && !self.buf.ends_with(b"\n") {
                return Err(Error::Closed);
            }
            if !self.buf.ends_with(b"\n") {
                continue;
            }
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            if let Some(line) = parse_line(&text) {
                return Ok(line);
            }
            tracing::trace!(line = %text.trim(), "ignoring line from DALI HAT");
        }
    }

    async fn attempt(&mut self, request: &Request, line: &str) -> Result<Option<Reply>> {
        self.io.write_all(line.as_bytes()).await?;
        self.io.flush().await?;
        let copies = if request.send_twice && matches!(request.frame, ForwardFrame::Gear(_)) {
            2
        } else {
            1
        };
        let mut reply = None;
        let mut conflict = false;
        for _ in 0..copies {
            let r = match self.read_line().await? {
                Line::Answer(v) => Reply::Answer(v),
                Line::NoAnswer => Reply::NoAnswer,
                Line::FramingError => Reply::Collision,
                Line::Conflict => {
                    conflict = true;
                    continue;
                }
            };
            // The reply to the second copy is the one that counts.
            reply = Some(r);
        }
        Ok(if conflict { None } else { reply })
    }
}

impl AtxHat<SerialStream> {
    /// Opens a serial port (or pty) at 19200 8N1.
    pub fn open(path: &str) -> Result<Self> {
        let stream = tokio_serial::new(path, BAUD)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::One)
            .open_native_async()
            .map_err(|source| Error::Open {
                path: path.to_string(),
                source,
            })?;
        let mut hat = AtxHat::new(stream);
        hat.fresh = true;
        Ok(hat)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for AtxHat<S> {
    async fn transact(&mut self, request: Request) -> Result<Reply> {
        let line = encode_request(&request);
        if self.fresh {
            self.drain(SETTLE).await;
            self.fresh = false;
            self.stale = false;
        } else if self.stale {
            self.drain(Duration::ZERO).await;
            self.stale = false;
        }
        for _ in 0..=self.max_conflict_retries {
            if let Some(reply) = self.attempt(&request, &line).await? {
                return Ok(reply);
            }
            tracing::debug!(request = %line.trim(), "DALI bus conflict, retransmitting");
        }
        Err(Error::Busy(self.max_conflict_retries + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Query};
    use crate::frame::{Address, Frame24, ShortAddress};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn a(n: u8) -> Address {
        Address::short(n).unwrap()
    }

    #[test]
    fn request_lines_match_python_dali() {
        let q = Request::from_command(&Command::Query(a(1), Query::Status));
        assert_eq!(encode_request(&q), "h0390\n");
        let d = Request::from_command(&Command::Dapc(a(1), 229));
        assert_eq!(encode_request(&d), "h02E5\n");
        let t = Request::from_command(&Command::SetSystemFailureLevel(Address::Broadcast));
        assert_eq!(encode_request(&t), "tFF2C\n");
        let once = Request::once(&Command::SetSystemFailureLevel(Address::Broadcast));
        assert_eq!(encode_request(&once), "hFF2C\n");
        let i = Request::from_command(&Command::Initialise(crate::command::InitialiseScope::All));
        assert_eq!(encode_request(&i), "tA500\n");
        let l = Request {
            frame: Frame24::device_short(ShortAddress::new(2).unwrap(), 0xFE, 0x30).into(),
            send_twice: true,
            expect_answer: false,
        };
        assert_eq!(encode_request(&l), "l05FE30\n");
    }

    #[test]
    fn reply_lines() {
        assert_eq!(parse_line("J06\r\n"), Some(Line::Answer(6)));
        assert_eq!(parse_line("JFF"), Some(Line::Answer(0xFF)));
        assert_eq!(parse_line("N\n"), Some(Line::NoAnswer));
        assert_eq!(parse_line("X"), Some(Line::FramingError));
        assert_eq!(parse_line("Z"), Some(Line::Conflict));
        assert_eq!(parse_line("Jzz"), None);
        assert_eq!(parse_line("hello"), None);
        assert_eq!(parse_line(""), None);
    }

    /// A scripted HAT on the other end of a duplex pipe: for each request line
    /// it expects, it writes the given reply text.
    fn scripted(script: Vec<(&'static str, &'static str)>) -> AtxHat<tokio::io::DuplexStream> {
        let (ours, theirs) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut peer = BufReader::new(theirs);
            for (expect, reply) in script {
                let mut line = String::new();
                peer.read_line(&mut line).await.unwrap();
                assert_eq!(line, expect);
                peer.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
        });
        AtxHat::new(ours).with_reply_timeout(Duration::from_millis(200))
    }

    #[tokio::test]
    async fn answers_silence_collisions_and_noise() {
        let mut hat = scripted(vec![
            ("h03A0\n", "J06\n"),
            ("h05A0\n", "N\n"),
            ("h07A0\n", "debug noise\nX\n"),
            ("tFF2C\n", "N\nN\n"),
        ]);
        let q = |n| Request::from_command(&Command::Query(a(n), Query::ActualLevel));
        assert_eq!(hat.transact(q(1)).await.unwrap(), Reply::Answer(6));
        assert_eq!(hat.transact(q(2)).await.unwrap(), Reply::NoAnswer);
        assert_eq!(hat.transact(q(3)).await.unwrap(), Reply::Collision);
        let t = Request::from_command(&Command::SetSystemFailureLevel(Address::Broadcast));
        assert_eq!(hat.transact(t).await.unwrap(), Reply::NoAnswer);
    }

    #[tokio::test]
    async fn conflict_is_retransmitted_then_gives_up() {
        let mut hat = scripted(vec![("h03A0\n", "Z\n"), ("h03A0\n", "J10\n")]);
        let q = Request::from_command(&Command::Query(a(1), Query::ActualLevel));
        assert_eq!(hat.transact(q).await.unwrap(), Reply::Answer(0x10));

        let mut hat = scripted(vec![("h03A0\n", "Z\n"); 4]);
        assert!(matches!(hat.transact(q).await, Err(Error::Busy(4))));
    }

    /// Regression (issue 8 reload test): a reply to the previous owner's last request, still on
    /// the line when the port is opened again, was taken for the answer to our first query.
    #[tokio::test(start_paused = true)]
    async fn a_fresh_line_is_drained_of_an_earlier_owners_replies() {
        let (ours, theirs) = tokio::io::duplex(256);
        tokio::spawn(async move {
            let mut peer = BufReader::new(theirs);
            // The earlier owner's answer arrives just after the port was opened.
            tokio::time::sleep(Duration::from_millis(30)).await;
            peer.get_mut().write_all(b"J63\n").await.unwrap();
            let mut line = String::new();
            peer.read_line(&mut line).await.unwrap();
            assert_eq!(line, "h03A0\n");
            peer.get_mut().write_all(b"J06\n").await.unwrap();
        });
        let mut hat = AtxHat::new(ours);
        hat.fresh = true;
        let q = Request::from_command(&Command::Query(a(1), Query::ActualLevel));
        assert_eq!(hat.transact(q).await.unwrap(), Reply::Answer(6));
    }

    #[tokio::test(start_paused = true)]
    async fn late_reply_is_not_taken_for_the_next_answer() {
        let (ours, theirs) = tokio::io::duplex(256);
        let (late_tx, late_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut peer = BufReader::new(theirs);
            let mut line = String::new();
            peer.read_line(&mut line).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            peer.get_mut().write_all(b"J01\n").await.unwrap();
            late_tx.send(()).unwrap();
            line.clear();
            peer.read_line(&mut line).await.unwrap();
            assert_eq!(line, "h05A0\n");
            peer.get_mut().write_all(b"J02\n").await.unwrap();
        });
        let mut hat = AtxHat::new(ours).with_reply_timeout(Duration::from_millis(200));
        let q = |n| Request::from_command(&Command::Query(a(n), Query::ActualLevel));
        assert!(matches!(hat.transact(q(1)).await, Err(Error::Timeout(_))));
        late_rx.await.unwrap();
        assert_eq!(hat.transact(q(2)).await.unwrap(), Reply::Answer(2));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_interface_times_out_and_closed_link_is_reported() {
        let (ours, theirs) = tokio::io::duplex(64);
        let mut hat = AtxHat::new(ours);
        let q = Request::from_command(&Command::Query(a(1), Query::ActualLevel));
        let err = hat.transact(q).await.unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
        assert_eq!(err.class(), crate::error::ErrorClass::Transient);
        drop(theirs);
        assert!(hat.transact(q).await.is_err());
    }
}
