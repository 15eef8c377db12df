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
    /// Whether broker `i` can be tried: an `mqtts://` one needs its TLS files loaded.
    pub(super) fn usable(&self, i: usize) -> bool {
        self.brokers
            .get(i)
            .is_some_and(|b| !b.tls || self.tls.as_ref().is_some_and(|t| t.current().is_some()))
    }

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
        // The will is read at each CONNECT (pitfall 8): a fresh `since` per connection.
        o.set_last_will(LastWill::new(
            self.topics.status.clone(),
            will_payload(&self.params, SystemTime::now()),
            QoS::AtLeastOnce,
            true,
        ));
        o
    }
}

pub(super) enum PollEvent {
    ConnAck {
        /// `mqtt[s]://host:port` of the broker.
        broker: String,
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

/// What the poll task waits on besides the event loop.
struct Changes {
    /// New broker lists; `None` once the handle is gone.
    brokers: Option<watch::Receiver<Vec<Broker>>>,
    /// Successful TLS loads; `None` without TLS files.
    tls: Option<watch::Receiver<u64>>,
}

/// The next new broker list (never resolves once its sender is gone).
async fn new_brokers(rx: &mut Option<watch::Receiver<Vec<Broker>>>) -> Vec<Broker> {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return r.borrow_and_update().clone();
        }
        *rx = None;
    }
    std::future::pending().await
}

/// The next successful TLS load (never resolves without TLS files).
async fn tls_loaded(rx: &mut Option<watch::Receiver<u64>>) {
    if let Some(r) = rx {
        if r.changed().await.is_ok() {
            return;
        }
        *rx = None;
    }
    std::future::pending().await
}

/// Points the event loop at the first usable broker from the failover's current one on; while
/// none is usable (`mqtts://` without readable TLS files), waits for a TLS load or a new list.
async fn pick(
    eventloop: &mut EventLoop,
    builder: &mut OptionsBuilder,
    failover: &mut Failover,
    changes: &mut Changes,
) {
    loop {
        for _ in 0..builder.brokers.len() {
            if builder.usable(failover.current()) {
                eventloop.mqtt_options = builder.build(failover.current());
                return;
            }
            failover.attempt_failed();
        }
        tracing::warn!("uplink: no usable broker (mqtts:// needs readable TLS files); waiting for a TLS reload or a new broker list");
        tokio::select! {
            () = tls_loaded(&mut changes.tls) => {}
            brokers = new_brokers(&mut changes.brokers) => {
                *failover = Failover::new(brokers.len());
                builder.brokers = brokers;
            }
        }
    }
}

pub(super) async fn poll_loop(
    mut eventloop: EventLoop,
    mut builder: OptionsBuilder,
    events: mpsc::Sender<PollEvent>,
    (inbound, guard): (mpsc::Sender<Incoming>, incoming::IncomingGuard),
    disconnecting: CancellationToken,
    brokers: watch::Receiver<Vec<Broker>>,
) {
    let mut failover = Failover::new(builder.brokers.len());
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_CAP);
    let mut session_up = false;
    let mut changes = Changes {
        brokers: Some(brokers),
        tls: builder.tls.as_ref().map(|t| t.subscribe()),
    };
    pick(&mut eventloop, &mut builder, &mut failover, &mut changes).await;
    loop {
        let polled = tokio::select! {
            polled = eventloop.poll() => polled,
            new = new_brokers(&mut changes.brokers) => {
                // A new list: end this session (or attempt) as after an error, then start over
                // with the first usable broker of the new list, without backoff.
                tracing::info!(brokers = ?new.iter().map(Broker::url).collect::<Vec<_>>(), "uplink: new broker list");
                let (done_tx, done_rx) = oneshot::channel();
                let lost = PollEvent::Lost {
                    error: "the broker list changed".into(),
                    done: done_tx,
                };
                if events.send(lost).await.is_err() || done_rx.await.is_err() {
                    return;
                }
                session_up = false;
                backoff.reset();
                eventloop.clean();
                eventloop.pending.clear();
                failover = Failover::new(new.len());
                builder.brokers = new;
                pick(&mut eventloop, &mut builder, &mut failover, &mut changes).await;
                continue;
            }
        };
        let event = match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                session_up = true;
                backoff.reset();
                Some(PollEvent::ConnAck {
                    broker: builder.brokers[failover.current()].url(),
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
                pick(&mut eventloop, &mut builder, &mut failover, &mut changes).await;
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
