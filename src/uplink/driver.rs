//! The driver task: decides what to publish and tracks acknowledgements (see the module header of
//! `uplink`).

use super::*;

/// Limits backlog records per second (`uplink.replay_rate`).
pub(super) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: f64) -> Self {
        TokenBucket {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    fn available(&mut self) -> usize {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        self.tokens.floor() as usize
    }

    fn take(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    fn next_token_in(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / self.rate).max(0.001))
    }
}

pub(super) struct Driver {
    pub(super) params: UplinkParams,
    pub(super) config_version: watch::Receiver<String>,
    pub(super) mode: watch::Receiver<&'static str>,
    pub(super) topics: Topics,
    pub(super) outbox: Arc<Outbox>,
    pub(super) client: AsyncClient,
    pub(super) metrics: Metrics,
    pub(super) status: Arc<Mutex<UplinkStatus>>,
    pub(super) heartbeat: Arc<Mutex<Instant>>,
    pub(super) inflight: InFlight,
    pub(super) cursors: Option<SendCursors>,
    pub(super) connected: bool,
    pub(super) stopping: bool,
    pub(super) ever_connected: bool,
    pub(super) window: usize,
    pub(super) max_json: usize,
    /// `P/C/telemetry`, `P/C/events`, `P/C/cmd/result`, by [`stream_index`].
    pub(super) stream_topics: [String; 3],
    /// Present with `uplink.compression = "zstd"` (reused: its context is allocated once).
    pub(super) compressor: Option<zstd::bulk::Compressor<'static>>,
    pub(super) replay: Option<TokenBucket>,
    /// Latest config/reported document and whether the broker acknowledged it.
    pub(super) reported: Option<(u64, Vec<u8>, bool)>,
    pub(super) reported_gen: u64,
    pub(super) acked_since_progress: u64,
    pub(super) offline_acked: bool,
    pub(super) outage: OutageReminder,
}

impl Driver {
    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<PollEvent>,
        mut reported_rx: mpsc::Receiver<Vec<u8>>,
        stop: CancellationToken,
        poll: AbortOnDrop,
        disconnecting: CancellationToken,
    ) {
        let mut durable = self.outbox.subscribe_durable();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress_at = Instant::now();
        let mut outage_tick = tokio::time::interval(outage::TICK);
        let mut reported_open = true;
        let mut version_open = true;
        let mut mode_open = true;
        loop {
            *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            if stop.is_cancelled() {
                break;
            }
            let replay_wait = self.replay_wait();
            tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => break,
                },
                r = durable.changed() => {
                    if r.is_err() {
                        break;
                    }
                    self.pump().await;
                }
                () = stop.cancelled() => break,
                r = self.config_version.changed(), if version_open => match r {
                    Ok(()) => self.republish_online(),
                    Err(_) => version_open = false,
                },
                r = self.mode.changed(), if mode_open => match r {
                    Ok(()) => self.republish_online(),
                    Err(_) => mode_open = false,
                },
                _ = outage_tick.tick() => self.remind_outage(),
                doc = reported_rx.recv(), if reported_open => match doc {
                    Some(doc) => {
                        self.reported_gen += 1;
                        self.reported = Some((self.reported_gen, doc, false));
                        self.publish_reported();
                    }
                    None => reported_open = false,
                },
                _ = tokio::time::sleep(replay_wait.unwrap_or(Duration::ZERO)), if replay_wait.is_some() => self.pump().await,
                _ = progress.tick() => {
                    self.log_progress(progress_at.elapsed());
                    progress_at = Instant::now();
                }
            }
        }
        self.stop(events, poll, disconnecting).await;
    }

    async fn on_event(&mut self, ev: PollEvent) {
        match ev {
            PollEvent::ConnAck { broker } => self.on_connack(broker).await,
            PollEvent::Sent(pkid) => {
                if let Err(e) = self.inflight.sent(pkid) {
                    tracing::warn!(error = %e, "uplink bookkeeping out of step");
                }
            }
            PollEvent::PubAck(pkid) => {
                match self.inflight.acked(pkid) {
                    Some(Tag::Batch {
                        stream,
                        first_seq,
                        last_seq,
                        records,
                        ..
                    }) => {
                        self.acked_since_progress += records as u64;
                        if let Err(e) = self.outbox.ack(stream, first_seq, last_seq).await {
                            // The records stay stored and are sent again later: a duplicate.
                            tracing::warn!(error = %e, %stream, first_seq, last_seq, "outbox ack failed");
                        }
                    }
                    Some(Tag::Reported(gen)) => {
                        if let Some((g, _, acked)) = &mut self.reported {
                            if *g == gen {
                                *acked = true;
                            }
                        }
                    }
                    Some(Tag::OfflineStatus) => self.offline_acked = true,
                    Some(Tag::OnlineStatus) | None => {}
                }
                self.pump().await;
            }
            PollEvent::Lost { error, done } => {
                let dropped = self.inflight.reset();
                if self.connected {
                    tracing::warn!(%error, dropped, "uplink session lost; unacknowledged records will be sent again");
                } else {
                    tracing::debug!(%error, "uplink connection attempt failed");
                }
                self.connected = false;
                self.cursors = None;
                self.metrics.uplink_connected.set(0);
                set_status(&self.status, |s| {
                    s.connected = false;
                    s.last_error = Some(error);
                    s.last_error_at = Some(SystemTime::now());
                    s.batches_in_flight = 0;
                    s.replaying = false;
                });
                // The poll task waits for this before purging rumqttc's queues.
                let _ = done.send(());
            }
        }
    }

    async fn on_connack(&mut self, name: String) {
        self.connected = true;
        self.metrics.uplink_connected.set(1);
        if self.ever_connected {
            self.metrics
                .uplink_reconnects_total
                .with_label_values(&[name.as_str()])
                .inc();
        }
        let reconnect = u64::from(self.ever_connected);
        self.ever_connected = true;
        set_status(&self.status, |s| {
            s.connected = true;
            s.broker = Some(name.clone());
            s.reconnects += reconnect;
            s.sessions += 1;
        });
        tracing::info!(broker = %name, "uplink session established");
        if self.stopping {
            return;
        }
        // Subscriptions before the online status: the broker handles a connection's packets in
        // order, so a central post that sees the cabinet online can send it commands at once
        // (published earlier, a command could reach the broker before the subscription).
        let subs = [
            &self.topics.cmd,
            &self.topics.all_cmd,
            &self.topics.config_desired,
        ]
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(subs) {
            tracing::warn!(error = %e, "could not queue the subscriptions");
        }
        self.publish_online();
        if self.reported.as_ref().is_some_and(|r| !r.2) {
            self.publish_reported();
        }
        self.cursors = None;
        self.pump().await;
    }

    /// The retained online status, naming the running configuration's version.
    fn publish_online(&mut self) {
        self.params.config_version = self.config_version.borrow_and_update().clone();
        let mode = *self.mode.borrow_and_update();
        let online = online_payload(&self.params, mode, SystemTime::now());
        match self
            .client
            .try_publish(self.topics.status.clone(), QoS::AtLeastOnce, true, online)
        {
            Ok(()) => self.inflight.queued(Tag::OnlineStatus),
            Err(e) => tracing::warn!(error = %e, "could not queue the online status"),
        }
    }

    /// A new configuration runs: the retained status must name it now, not at the next
    /// reconnect (issue 13 item 7).
    fn republish_online(&mut self) {
        if self.connected && !self.stopping {
            tracing::info!(config_version = %*self.config_version.borrow(), mode = *self.mode.borrow(), "online status published again");
            self.publish_online();
        }
    }

    /// Once a second: the "central post unreachable" reminder, when one is due.
    fn remind_outage(&mut self) {
        let Some(down_for) = self.outage.observe(self.connected, Instant::now()) else {
            return;
        };
        let stats = self.outbox.stats();
        let oldest = stats
            .streams
            .iter()
            .filter_map(|s| s.oldest_age_seconds)
            .fold(0.0, f64::max);
        let last_error = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_error
            .clone();
        tracing::warn!(
            down_for = %humantime::format_duration(Duration::from_secs(down_for.as_secs())),
            last_error = last_error.as_deref().unwrap_or("-"),
            buffered_records = stats.total_records(),
            oldest_record_s = oldest.round(),
            budget_used_percent = (100.0 * stats.disk_bytes as f64 / stats.budget_bytes.max(1) as f64).round(),
            "central post unreachable: polling goes on, records are buffered in the outbox"
        );
    }

    fn publish_reported(&mut self) {
        if !self.connected || self.stopping {
            return;
        }
        let Some((gen, doc, false)) = &self.reported else {
            return;
        };
        let tag = Tag::Reported(*gen);
        if self.inflight.contains(&tag) {
            return;
        }
        match self.client.try_publish(
            self.topics.config_reported.clone(),
            QoS::AtLeastOnce,
            true,
            doc.clone(),
        ) {
            Ok(()) => self.inflight.queued(tag),
            Err(e) => tracing::warn!(error = %e, "could not queue config/reported"),
        }
    }

    fn replay_wait(&self) -> Option<Duration> {
        let bucket = self.replay.as_ref()?;
        let backlog = self.cursors.as_ref()?.backlog_pending();
        (backlog && self.connected && !self.stopping && bucket.tokens < 1.0)
            .then(|| bucket.next_token_in())
    }

    /// Hand as many batches to the client as the window allows: fresh records of every stream
    /// first (results, events, telemetry), then the backlog, which may use only part of the
    /// window so fresh records always find a slot, and only [`BACKLOG_BYTES_IN_FLIGHT`] of
    /// payload so they never queue behind much of it.
    async fn pump(&mut self) {
        if !self.connected || self.stopping {
            return;
        }
        if self.cursors.is_none() {
            // A new session (or a store that was not open when it began): start from the first
            // record still stored. Tried again at the next pump while the outbox has no store.
            match self.outbox.session_start().await {
                Ok((first, durable)) => {
                    self.cursors = Some(SendCursors::new_session(first, durable))
                }
                Err(e) => {
                    tracing::debug!(error = %e, "outbox unavailable; nothing to send");
                    return;
                }
            }
        }
        let backlog_window = (self.window - self.window / 4).max(1);
        for lane in [Lane::Live, Lane::Backlog] {
            for stream in Stream::BY_PRIORITY {
                loop {
                    let in_flight = self.inflight.batches();
                    if in_flight >= self.window {
                        self.refresh_status();
                        return;
                    }
                    if lane == Lane::Backlog
                        && (self.inflight.backlog_batches() >= backlog_window
                            || self.inflight.backlog_bytes() >= BACKLOG_BYTES_IN_FLIGHT)
                    {
                        break;
                    }
                    let Some(cursors) = self.cursors.as_mut() else {
                        return;
                    };
                    let Some(range) = cursors.next_range(stream, lane) else {
                        break;
                    };
                    let max_records = match (lane, self.replay.as_mut()) {
                        (Lane::Backlog, Some(bucket)) => bucket.available(),
                        _ => usize::MAX,
                    };
                    if max_records == 0 {
                        break;
                    }
                    let read = self
                        .outbox
                        .read_batch(stream, range.from, range.upto, self.max_json, max_records)
                        .await;
                    let Some(cursors) = self.cursors.as_mut() else {
                        return;
                    };
                    let batch = match read {
                        Ok(Some(b)) => b,
                        Ok(None) => {
                            if lane == Lane::Backlog {
                                cursors.finish_backlog(stream);
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, %stream, "outbox read failed");
                            return;
                        }
                    };
                    let payload = encode_payload(
                        envelope_joined(
                            &self.params.cabinet_id,
                            stream,
                            range.replay,
                            batch.joined(),
                        ),
                        self.compressor.as_mut(),
                    );
                    let bytes = payload.len();
                    self.metrics
                        .uplink_payload_bytes_total
                        .with_label_values(&[stream.as_str()])
                        .inc_by(bytes as u64);
                    match self.client.try_publish(
                        self.stream_topics[stream_index(stream)].clone(),
                        QoS::AtLeastOnce,
                        false,
                        payload,
                    ) {
                        Ok(()) => {
                            cursors.advance(stream, lane, batch.last_seq);
                            if let (Lane::Backlog, Some(bucket)) = (lane, self.replay.as_mut()) {
                                bucket.take(batch.len());
                            }
                            self.inflight.queued(Tag::Batch {
                                stream,
                                first_seq: batch.first_seq,
                                last_seq: batch.last_seq,
                                records: batch.len(),
                                lane,
                                bytes,
                            });
                        }
                        Err(e) => {
                            // Channel full: rumqttc is behind; the next ack pumps again.
                            tracing::debug!(error = %e, "client queue full");
                            self.refresh_status();
                            return;
                        }
                    }
                }
            }
        }
        self.refresh_status();
    }

    fn refresh_status(&self) {
        let batches = self.inflight.batches();
        let replaying = self
            .cursors
            .as_ref()
            .is_some_and(|c| c.backlog_pending() || self.inflight.backlog_batches() > 0);
        set_status(&self.status, |s| {
            s.batches_in_flight = batches;
            s.replaying = replaying;
        });
    }

    fn log_progress(&mut self, elapsed: Duration) {
        let acked = std::mem::take(&mut self.acked_since_progress);
        let replaying = self
            .cursors
            .as_ref()
            .is_some_and(|c| c.backlog_pending() || self.inflight.backlog_batches() > 0);
        if self.connected && replaying {
            let left = self.outbox.stats().total_records();
            let rate = acked as f64 / elapsed.as_secs_f64().max(0.001);
            tracing::info!(
                records_left = left,
                rate = format!("{rate:.0}"),
                "replaying backlog: {left} records left, {rate:.0} rec/s"
            );
        }
    }

    /// Clean stop: drain, offline status, DISCONNECT (all bounded).
    async fn stop(
        mut self,
        mut events: mpsc::Receiver<PollEvent>,
        mut poll: AbortOnDrop,
        disconnecting: CancellationToken,
    ) {
        // What became durable just before the stop (the commands' final results, flushed by the
        // recorder's drain) may not have been pumped yet when the loop saw `stop`: send it now,
        // or the results are kept for the next run instead of delivered (stop_deadline_e2e flaked).
        self.pump().await;
        self.stopping = true;
        let deadline = tokio::time::Instant::now() + STOP_DRAIN;
        while self.connected && self.inflight.batches() > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.on_event(ev).await,
                Ok(None) | Err(_) => break,
            }
        }
        disconnecting.cancel();
        if self.connected {
            let offline = offline_payload(&self.params, SystemTime::now());
            match self.client.try_publish(
                self.topics.status.clone(),
                QoS::AtLeastOnce,
                true,
                offline,
            ) {
                Ok(()) => {
                    self.inflight.queued(Tag::OfflineStatus);
                    let deadline = tokio::time::Instant::now() + STOP_STATUS;
                    while self.connected && !self.offline_acked {
                        match tokio::time::timeout_at(deadline, events.recv()).await {
                            Ok(Some(ev)) => self.on_event(ev).await,
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not queue the offline status"),
            }
            if !self.offline_acked {
                tracing::warn!("offline status not acknowledged before stop");
            }
            let _ = self.client.try_disconnect();
            // The poll task returns after sending DISCONNECT; do not wait on a dead link forever.
            let handle = &mut poll.0;
            let ended = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    tokio::select! {
                        _ = &mut *handle => break,
                        ev = events.recv() => match ev {
                            Some(PollEvent::Lost { done, .. }) => { let _ = done.send(()); }
                            Some(_) => {}
                            None => { let _ = (&mut *handle).await; break }
                        },
                    }
                }
            })
            .await;
            if ended.is_err() {
                tracing::warn!("uplink poll task did not end after DISCONNECT; aborted");
            }
        }
        // Ends the poll task if it is still running (no session, or a dead link).
        drop(poll);
        // Deletions of records acked during the drain would otherwise wait for the next flush,
        // which may never come (the flusher stops at shutdown too): each would be sent again
        // after the restart.
        match tokio::time::timeout(STOP_FLUSH, self.outbox.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "outbox flush at uplink stop failed"),
            Err(_) => tracing::warn!("outbox flush at uplink stop timed out"),
        }
        self.connected = false;
        self.metrics.uplink_connected.set(0);
        set_status(&self.status, |s| {
            s.connected = false;
            s.batches_in_flight = 0;
            s.replaying = false;
        });
        tracing::info!(offline_acked = self.offline_acked, "uplink stopped");
    }
}
