//! Oversized incoming messages (issue 12): dropped before anything reads them, counted, and
//! reported, never a reason to lose the session.
//!
//! rumqttc treats an incoming packet over its limit as a connection error; with a retained
//! message (`P/all/cmd`, `config/desired`) every reconnect would receive it again, a reconnect
//! loop (pitfall 10). So the client's limit is [`client_max_packet`] (far above anything
//! legitimate; the broker's `max_packet_size` should be lower still) and the application drops
//! what exceeds `uplink.max_incoming_bytes` here. Each drop increments
//! `cabinetd_incoming_dropped_total` and raises an event `message_dropped` (data `topic`, `size`,
//! `limit`, and `suppressed`: drops not reported since the last event — events are throttled so a
//! flood cannot push telemetry out of the outbox).

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use crate::auth::RejectionThrottle;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::record::{Event, RecordBody, Severity};

/// The MQTT client's own incoming packet limit: 32 MiB, or room above `max_incoming_bytes`.
/// A larger packet still ends the session (rumqttc); the shipped broker config caps messages far
/// lower (`config/mosquitto/mosquitto.conf`).
pub fn client_max_packet(max_incoming_bytes: usize) -> usize {
    (32 * 1024 * 1024).max(max_incoming_bytes.saturating_add(64 * 1024))
}

/// Admits or drops incoming messages by size.
#[derive(Clone)]
pub struct IncomingGuard {
    limit: usize,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    throttle: Arc<Mutex<RejectionThrottle>>,
}

impl IncomingGuard {
    /// A guard dropping messages over `limit` bytes.
    pub fn new(limit: usize, outbox: Arc<Outbox>, metrics: Metrics) -> Self {
        IncomingGuard {
            limit,
            outbox,
            metrics,
            throttle: Arc::new(Mutex::new(RejectionThrottle::default())),
        }
    }

    /// Whether a message of `size` bytes on `topic` may be read; when not, it is counted and
    /// reported (the caller just drops it).
    pub fn admit(&self, topic: &str, size: usize) -> bool {
        if size <= self.limit {
            return true;
        }
        self.metrics.incoming_dropped_total.inc();
        let admitted = self
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .admit(Instant::now());
        let Some(suppressed) = admitted else {
            return false;
        };
        tracing::warn!(
            topic,
            size,
            limit = self.limit,
            "incoming message over uplink.max_incoming_bytes dropped unread"
        );
        let event = dropped_event(topic, size, self.limit, suppressed, SystemTime::now());
        // Off the poll task (it must keep reading the connection); the throttle above bounds
        // how many such tasks a flood can start.
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            if let Err(e) = outbox.push(vec![RecordBody::Event(event)]).await {
                tracing::error!(error = %e, "cannot store the message_dropped event");
            }
        });
        false
    }
}

/// The `message_dropped` event.
pub fn dropped_event(
    topic: &str,
    size: usize,
    limit: usize,
    suppressed: u64,
    ts: SystemTime,
) -> Event {
    Event {
        ts,
        kind: crate::event::EventKind::MessageDropped,
        severity: Severity::Major,
        source: "cabinetd".into(),
        message: format!(
            "a message of {size} bytes on {topic} was dropped unread (uplink.max_incoming_bytes = {limit})"
        ),
        data: serde_json::json!({
            "topic": topic,
            "size": size,
            "limit": limit,
            "suppressed": suppressed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_limit_stays_above_the_application_limit() {
        assert_eq!(client_max_packet(1 << 20), 32 << 20);
        assert!(client_max_packet(40 << 20) > 40 << 20);
    }

    #[test]
    fn the_event_names_topic_and_size() {
        let e = dropped_event(
            "cabinets/v1/all/cmd",
            2_000_000,
            1 << 20,
            0,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(e.kind, "message_dropped");
        assert_eq!(e.data["topic"], "cabinets/v1/all/cmd");
        assert_eq!(e.data["size"], 2_000_000);
    }
}
