//! Binding of MQTT packet ids to what a publish carried (pure bookkeeping, no I/O).
//!
//! rumqttc returns no packet id from `publish` (pitfall 5); it reports
//! `Event::Outgoing(Outgoing::Publish(pkid))` in the order the requests were sent. So every
//! publish handed to the client is queued here in that same order, bound to the next outgoing
//! pkid, and resolved by `Incoming::PubAck(pkid)`. On any connection loss every binding is
//! dropped ([`InFlight::reset`]): rumqttc discards unacked QoS 1 publishes on a clean session
//! (pitfall 1), and the uplink republishes from the outbox, which still holds every unacked record.

use std::collections::{HashMap, VecDeque};

use crate::outbox::cursor::Lane;
use crate::record::Stream;

/// What one publish carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Records of one stream.
    Batch {
        /// Stream.
        stream: Stream,
        /// First seq carried.
        first_seq: u64,
        /// Last seq carried.
        last_seq: u64,
        /// Number of records carried.
        records: usize,
        /// Live or backlog lane.
        lane: Lane,
        /// Payload bytes.
        bytes: usize,
    },
    /// The retained online status.
    OnlineStatus,
    /// The retained offline status of a clean stop.
    OfflineStatus,
    /// The retained `config/reported` document with this generation.
    Reported(u64),
}

/// A publish was reported sent but nothing was queued for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publish with packet id {0} was not queued by the uplink")]
pub struct Unexpected(pub u16);

/// Publishes queued to the client and not yet acknowledged.
#[derive(Debug, Default)]
pub struct InFlight {
    queued: VecDeque<Tag>,
    bound: HashMap<u16, Tag>,
}

impl InFlight {
    /// A publish carrying `tag` was handed to the client.
    pub fn queued(&mut self, tag: Tag) {
        self.queued.push_back(tag);
    }

    /// The client sent the oldest queued publish with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) -> Result<(), Unexpected> {
        let tag = self.queued.pop_front().ok_or(Unexpected(pkid))?;
        // A pkid still bound means its PUBACK never came in this session; rumqttc only reuses a
        // pkid after its ack (or holds the publish back on collision), so this is defensive.
        self.bound.insert(pkid, tag);
        Ok(())
    }

    /// The broker acknowledged `pkid`; returns what that publish carried.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        self.bound.remove(&pkid)
    }

    /// The connection was lost: forget every binding; returns how many publishes were dropped.
    pub fn reset(&mut self) -> usize {
        let n = self.queued.len() + self.bound.len();
        self.queued.clear();
        self.bound.clear();
        n
    }

    fn tags(&self) -> impl Iterator<Item = &Tag> {
        self.queued.iter().chain(self.bound.values())
    }

    /// Record batches queued or sent and not yet acknowledged.
    pub fn batches(&self) -> usize {
        self.tags()
            .filter(|t| matches!(t, Tag::Batch { .. }))
            .count()
    }

    /// Backlog batches queued or sent and not yet acknowledged.
    pub fn backlog_batches(&self) -> usize {
        self.tags()
            .filter(|t| {
                matches!(
                    t,
                    Tag::Batch {
                        lane: Lane::Backlog,
                        ..
                    }
                )
            })
            .count()
    }

    /// Payload bytes of the backlog batches queued or sent and not yet acknowledged.
    pub fn backlog_bytes(&self) -> usize {
        self.tags()
            .map(|t| match t {
                Tag::Batch {
                    lane: Lane::Backlog,
                    bytes,
                    ..
                } => *bytes,
                _ => 0,
            })
            .sum()
    }

    /// Whether a publish with this tag is pending.
    pub fn contains(&self, tag: &Tag) -> bool {
        self.tags().any(|t| t == tag)
    }

    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.bound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: u64, last: u64) -> Tag {
        Tag::Batch {
            stream: Stream::Telemetry,
            first_seq: first,
            last_seq: last,
            records: (last - first + 1) as usize,
            lane: Lane::Live,
            bytes: 100,
        }
    }

    #[test]
    fn binds_pkids_in_send_order_and_resolves_acks_in_any_order() {
        let mut f = InFlight::default();
        f.queued(Tag::OnlineStatus);
        f.queued(batch(1, 10));
        f.queued(batch(11, 12));
        f.sent(1).unwrap();
        f.sent(2).unwrap();
        assert_eq!(f.batches(), 2);
        f.sent(3).unwrap();
        assert_eq!(f.acked(3), Some(batch(11, 12)));
        assert_eq!(f.acked(1), Some(Tag::OnlineStatus));
        assert_eq!(f.acked(1), None, "an ack is consumed once");
        assert_eq!(f.acked(2), Some(batch(1, 10)));
        assert!(f.is_empty());
    }

    #[test]
    fn an_unqueued_publish_is_reported() {
        let mut f = InFlight::default();
        assert_eq!(f.sent(7), Err(Unexpected(7)));
    }

    #[test]
    fn reset_drops_queued_and_bound_publishes() {
        let mut f = InFlight::default();
        f.queued(batch(1, 1));
        f.queued(Tag::Batch {
            stream: Stream::Events,
            first_seq: 1,
            last_seq: 1,
            records: 1,
            lane: Lane::Backlog,
            bytes: 300,
        });
        f.sent(5).unwrap();
        assert_eq!(f.backlog_batches(), 1);
        assert_eq!(f.backlog_bytes(), 300);
        assert_eq!(f.reset(), 2);
        assert!(f.is_empty());
        // After a reconnect pkids start again; an old id binds afresh.
        f.queued(batch(1, 1));
        f.sent(5).unwrap();
        assert_eq!(f.acked(5), Some(batch(1, 1)));
    }
}
