//! Send positions of one broker session (pure bookkeeping, no I/O).
//!
//! At every new session the uplink rewinds to the first record still stored: everything durable
//! at that moment is *backlog* (published with `replay: true`, oldest first), everything made
//! durable later is *live* (`replay: false`). The two lanes advance independently so fresh
//! records keep flowing while the backlog drains. Acknowledged records are deleted from the
//! outbox, so rewinding to the first stored key is exactly "first unacknowledged".

use crate::record::Stream;

use super::{stream_index, STREAMS};

/// Which lane a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Made durable during this session.
    Live,
    /// Stored before this session started.
    Backlog,
}

/// A seq range to read next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextRange {
    /// First seq to read (may be missing: read from the first present key).
    pub from: u64,
    /// Last seq allowed in this lane.
    pub upto: u64,
    /// Publish with `replay: true`.
    pub replay: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamCursor {
    backlog_next: u64,
    /// First seq of the live lane (durable seq at session start + 1).
    boundary: u64,
    live_next: u64,
}

/// Per-stream cursors of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendCursors {
    streams: [StreamCursor; 3],
}

impl SendCursors {
    /// Cursors for a new session, from the first stored seq and the durable seq of each stream
    /// (indexed like [`STREAMS`]).
    pub fn new_session(first_stored: [Option<u64>; 3], durable: [u64; 3]) -> Self {
        let streams = [0, 1, 2].map(|i| {
            let boundary = durable[i] + 1;
            StreamCursor {
                backlog_next: first_stored[i].unwrap_or(boundary).min(boundary),
                boundary,
                live_next: boundary,
            }
        });
        SendCursors { streams }
    }

    /// The next range to read in a lane, `None` when the backlog lane is drained (the live lane
    /// always has a range; reading it may find nothing yet).
    pub fn next_range(&self, stream: Stream, lane: Lane) -> Option<NextRange> {
        let c = &self.streams[stream_index(stream)];
        match lane {
            Lane::Live => Some(NextRange {
                from: c.live_next,
                upto: u64::MAX,
                replay: false,
            }),
            Lane::Backlog => (c.backlog_next < c.boundary).then(|| NextRange {
                from: c.backlog_next,
                upto: c.boundary - 1,
                replay: true,
            }),
        }
    }

    /// A batch ending at `last_seq` was handed to the client.
    pub fn advance(&mut self, stream: Stream, lane: Lane, last_seq: u64) {
        let c = &mut self.streams[stream_index(stream)];
        match lane {
            Lane::Live => c.live_next = c.live_next.max(last_seq + 1),
            Lane::Backlog => c.backlog_next = c.backlog_next.max(last_seq + 1),
        }
    }

    /// Nothing stored before the session start is left to read in that lane (the range was
    /// found empty).
    pub fn finish_backlog(&mut self, stream: Stream) {
        let c = &mut self.streams[stream_index(stream)];
        c.backlog_next = c.boundary;
    }

    /// Whether any stream still has backlog to send.
    pub fn backlog_pending(&self) -> bool {
        STREAMS
            .iter()
            .any(|s| self.next_range(*s, Lane::Backlog).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_session_splits_backlog_and_live_at_the_durable_seq() {
        // telemetry: 5..=10 stored, durable 10; events: nothing stored, durable 3; results: empty.
        let c = SendCursors::new_session([Some(5), None, None], [10, 3, 0]);
        assert_eq!(
            c.next_range(Stream::Telemetry, Lane::Backlog),
            Some(NextRange {
                from: 5,
                upto: 10,
                replay: true
            })
        );
        assert_eq!(
            c.next_range(Stream::Telemetry, Lane::Live),
            Some(NextRange {
                from: 11,
                upto: u64::MAX,
                replay: false
            })
        );
        assert_eq!(c.next_range(Stream::Events, Lane::Backlog), None);
        assert_eq!(c.next_range(Stream::Events, Lane::Live).unwrap().from, 4);
        assert_eq!(c.next_range(Stream::Results, Lane::Live).unwrap().from, 1);
        assert!(c.backlog_pending());
    }

    #[test]
    fn lanes_advance_independently_and_backlog_ends_at_the_boundary() {
        let mut c = SendCursors::new_session([Some(1), None, None], [100, 0, 0]);
        c.advance(Stream::Telemetry, Lane::Live, 104);
        c.advance(Stream::Telemetry, Lane::Backlog, 40);
        assert_eq!(
            c.next_range(Stream::Telemetry, Lane::Backlog).unwrap().from,
            41
        );
        assert_eq!(
            c.next_range(Stream::Telemetry, Lane::Live).unwrap().from,
            105
        );
        c.advance(Stream::Telemetry, Lane::Backlog, 100);
        assert_eq!(c.next_range(Stream::Telemetry, Lane::Backlog), None);
        assert!(!c.backlog_pending());
        // Advancing never moves a cursor backwards.
        c.advance(Stream::Telemetry, Lane::Live, 50);
        assert_eq!(
            c.next_range(Stream::Telemetry, Lane::Live).unwrap().from,
            105
        );
    }

    #[test]
    fn finish_backlog_skips_an_evicted_range() {
        let mut c = SendCursors::new_session([None, Some(7), None], [0, 9, 0]);
        assert!(c.backlog_pending());
        c.finish_backlog(Stream::Events);
        assert!(!c.backlog_pending());
    }
}
