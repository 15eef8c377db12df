//! The poll task: owns rumqttc's `EventLoop`, forwards what the driver needs, reconnects with
//! backoff and failover (see the module header of `uplink`).

use super::*;

/// Everything needed to build the options of one connection attempt.
pub(super) struct OptionsBuilder {
    pub(super) params: UplinkParams,
    pub(super) topics: Topics,
    pub(super) brokers: Vec<Broker>,
    pub(super) window: u16,
    pub(super) tls: Option<Arc<tls::TlsSlot>>,
}

impl OptionsBuilder {
    pub(super) fn build(&self, broker: usize) -> MqttOptions {
        let b = &self.brokers[broker];
        let cfg = &self.params.config;
        let mut o = MqttOptions::new(cfg.client_id.clone(), b.host.clone(), b.port);
        if let (true, Some(tls)) = (b.tls, self.tls.as_ref().and_then(|t| t.current())) {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        o.set_clean_session(true);
        // rumqttc panics below 1 s; the config parser validates, this keeps it from ever panicking.
        o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
        // Incoming: far above `max_incoming_bytes`, which the poll task enforces itself (an
        // oversized packet would end the session, pitfall 10).
        o.set_max_packet_size(
            incoming::client_max_packet(cfg.max_incoming_bytes),
            cfg.max_message_bytes + 1024,
        );
        // Room for the status and config/reported publishes beside the batch window, so that
        // with a broker acking in order rumqttc never hits a pkid collision.
        o.set_inflight(self.window + 4);
        if let Some(user) = &cfg.username {
            o.set_credentials(
                user.clone(),
                self.params.password.clone().unwrap_or_default(),
            );
        }
        // The will is read at each CONNECT (pitfall 8): a fresh timestamp per connection.
        o.set_last_will(LastWill::new(
            self.topics.status.clone(),
            offline_payload(&self.params, SystemTime::now()),
            QoS::AtLeastOnce,
            true,
        ));
        o
    }
}

pub(super) enum PollEvent {
    ConnAck {
        broker: usize,
    },
    Sent(u16),
    PubAck(u16),
    Lost {
        error: String,
        done: oneshot::Sender<()>,
    },
}

/// Aborts the poll task when the driver is dropped (task aborted): the TCP connection then
/// closes without DISCONNECT and the broker publishes the will.
pub(super) struct AbortOnDrop(pub(super) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) async fn poll_loop(
    mut eventloop: EventLoop,
    builder: OptionsBuilder,
    events: mpsc::Sender<PollEvent>,
    (inbound, guard): (mpsc::Sender<Incoming>, incoming::IncomingGuard),
    disconnecting: CancellationToken,
) {
    let mut failover = Failover::new(builder.brokers.len());
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP);
    let mut session_up = false;
    loop {
        let event = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                session_up = true;
                backoff.reset();
                Some(PollEvent::ConnAck {
                    broker: failover.current(),
                })
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => Some(PollEvent::PubAck(ack.pkid)),
            // Dropped unread, counted and reported; the session stays.
            Ok(Event::Incoming(Packet::Publish(p))) if !guard.admit(&p.topic, p.payload.len()) => {
                None
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let msg = Incoming {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                };
                // Backpressure on the broker if the dispatcher is slow; a closed receiver means
                // nobody wants commands (tests, shutdown).
                let _ = inbound.send(msg).await;
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Some(PollEvent::Sent(pkid)),
            Ok(Event::Outgoing(Outgoing::Disconnect)) if disconnecting.is_cancelled() => return,
            Ok(_) => None,
            Err(e) => {
                if disconnecting.is_cancelled() {
                    return;
                }
                let (done_tx, done_rx) = oneshot::channel();
                let lost = PollEvent::Lost {
                    error: tls::describe(&e, &builder.brokers[failover.current()].host),
                    done: done_tx,
                };
                if events.send(lost).await.is_err() || done_rx.await.is_err() {
                    return;
                }
                if session_up {
                    failover.session_lost();
                } else {
                    failover.attempt_failed();
                }
                session_up = false;
                tokio::time::sleep(backoff.next_delay(fastrand::f64())).await;
                // The driver has stopped publishing and forgotten its bindings: drop whatever
                // is still queued in rumqttc so nothing of the old session is sent in the new
                // one (the outbox replays it).
                eventloop.clean();
                eventloop.pending.clear();
                eventloop.mqtt_options = builder.build(failover.current());
                None
            }
        };
        if let Some(ev) = event {
            if events.send(ev).await.is_err() {
                return;
            }
        }
    }
}
