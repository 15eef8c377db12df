//! The MQTT uplink (rumqttc 0.25.1, MQTT 3.1.1, clean session, QoS 1): publishes the outbox to
//! the central post's broker and deletes records only after the broker acknowledged them.
//!
//! # Tasks
//! - The *poll task* owns the `EventLoop` and only polls it (awaiting a client call there would
//!   deadlock, pitfall 6). It forwards ConnAck / sent pkids / PubAcks to the driver, incoming
//!   publishes to the command channel, and after an error: tells the driver (and waits until it
//!   dropped its bindings), sleeps a capped exponential backoff with jitter (pitfall 3), purges
//!   every request still queued in rumqttc, picks the broker (failover in order) and sets a fresh
//!   last will (pitfall 8) before polling again.
//! - The *driver task* decides what to publish, only with `try_publish` (never blocks on the
//!   client, pitfall 7), and tracks pkids in [`InFlight`].
//!
//! # Invariants
//! - Publishes are handed to the client only while a session is up (between the driver seeing
//!   ConnAck and seeing the loss); the poll task purges the request channel after every loss, so
//!   the order of `Outgoing::Publish` events always matches [`InFlight`]'s queue.
//! - A record is acked in the outbox only when the PUBACK of the message carrying it arrived in
//!   the same session. On every new session the cursors rewind to the first record still stored
//!   (records sent but unacknowledged when the link dropped are sent again: duplicates, never
//!   loss). Stored records at session start go out with `replay: true` oldest first, beside fresh
//!   records (`replay: false`), which keep a reserved part of the in-flight window.
//! - On every ConnAck: retained online status, then subscriptions to `P/C/cmd`, `P/all/cmd`,
//!   `P/C/config/desired` (QoS 1; rumqttc does not restore them, pitfall 4).
//! - Clean stop: no new batches, wait (≤ 3 s) for in-flight acks, publish the retained offline
//!   status and wait (≤ 1.5 s) for its ack, DISCONNECT, flush the outbox (≤ 1 s) so the
//!   deletions of the last acks are durable. An abrupt end (task aborted, process killed) drops
//!   the TCP connection without DISCONNECT, so the broker publishes the will. A will of an older
//!   connection (half-open, then taken over by the new one with the same client id) is published
//!   by the broker while it handles the new CONNECT, i.e. before our ConnAck and so before the
//!   new online status: the retained status ends up right (checked by the SIGSTOP test).
//! - Incoming messages go to a channel of 64; a consumer that stops reading stalls the poll task
//!   (and with it keep-alive), so the daemon must drain it promptly or drop the receiver.

pub mod backoff;
pub mod inflight;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};
use rustls::ClientConfig;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Compression;
use crate::config::{Broker, UplinkConfig};
use crate::metrics::Metrics;
use crate::outbox::cursor::{Lane, SendCursors};
use crate::outbox::{stream_index, Outbox, ENVELOPE_ROOM, STREAMS};
use crate::record::{envelope_joined, format_ts, Stream};

pub use backoff::{Backoff, Failover};
pub use inflight::{InFlight, Tag};

/// First reconnect delay: a broker restart is usually over quickly.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest reconnect delay. Fresh data must reach the central post within 1 s of the broker
/// being reachable again, so the retry step never exceeds 500 ms (each delay is 50–100 % of the
/// step, jittered). A refused attempt costs one SYN: ~2 per second per cabinet while the broker is
/// down is nothing for a broker, even for a whole city's cabinets reconnecting at once.
pub const BACKOFF_CAP: Duration = Duration::from_millis(500);
/// Backlog payload bytes in flight beyond which no further backlog batch is published (one
/// always may be). Fresh records published meanwhile queue behind what is in flight on the
/// wire, at the broker and at the subscriber: measured on loopback, 24 backlog batches of
/// 256 KiB of JSON ahead of the first fresh message delayed it by 0.3–0.6 s (issue 9's "fresh
/// data ≤ 1 s"), and on a 1 Mbit/s uplink the same 6 MiB would take 50 s. The drain keeps
/// this much per round trip to the broker.
pub const BACKLOG_BYTES_IN_FLIGHT: usize = 64 * 1024;
/// How long a clean stop waits for in-flight batches to be acknowledged.
pub const STOP_DRAIN: Duration = Duration::from_secs(3);
/// How long a clean stop waits for the offline status to be acknowledged.
pub const STOP_STATUS: Duration = Duration::from_millis(1500);
/// Bound on the outbox flush at the end of a clean stop.
pub const STOP_FLUSH: Duration = Duration::from_secs(1);
/// Interval of the "replaying backlog" progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Incoming messages larger than this are refused by the client (a desired config is TOML text).
pub const MAX_INCOMING_BYTES: usize = 1024 * 1024;

/// What the uplink needs besides the outbox.
#[derive(Debug, Clone)]
pub struct UplinkParams {
    /// `cabinet.id`.
    pub cabinet_id: String,
    /// UUID of this daemon run.
    pub boot_id: String,
    /// Daemon version.
    pub version: String,
    /// Version of the running configuration.
    pub config_version: String,
    /// `[uplink]`.
    pub config: UplinkConfig,
    /// Content of `uplink.password_file`, read by the caller. Never logged.
    pub password: Option<String>,
}

/// A message received on a command or config topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// Full topic (`P/C/cmd`, `P/all/cmd` or `P/C/config/desired`).
    pub topic: String,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// Delivered as a retained message (a desired config on subscribe).
    pub retain: bool,
}

/// A cheap snapshot for `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UplinkStatus {
    /// A broker session is up.
    pub connected: bool,
    /// `connected` while the session is up, `autonomous` otherwise.
    pub mode: &'static str,
    /// `host:port` of the broker in use (or last tried).
    pub broker: Option<String>,
    /// Last connection error (no secrets: rumqttc errors carry none).
    pub last_error: Option<String>,
    /// Sessions established after the first.
    pub reconnects: u64,
    /// Record batches published and not yet acknowledged.
    pub batches_in_flight: usize,
    /// The backlog of the current session is not fully sent yet.
    pub replaying: bool,
}

impl Default for UplinkStatus {
    fn default() -> Self {
        UplinkStatus {
            connected: false,
            mode: "autonomous",
            broker: None,
            last_error: None,
            reconnects: 0,
            batches_in_flight: 0,
            replaying: false,
        }
    }
}

/// Handle on the running uplink.
#[derive(Clone)]
pub struct UplinkHandle {
    status: Arc<Mutex<UplinkStatus>>,
    heartbeat: Arc<Mutex<Instant>>,
    reported_tx: mpsc::Sender<Vec<u8>>,
    config_version: Arc<Mutex<String>>,
}

impl UplinkHandle {
    /// The configuration version the next online status names (after a reload or a desired
    /// configuration was applied).
    pub fn set_config_version(&self, version: &str) {
        *self
            .config_version
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = version.to_owned();
    }

    /// When the uplink's driver loop last ran (at least every [`PROGRESS_EVERY`] while it is
    /// alive, connected or not): the daemon feeds the systemd watchdog only while this moves.
    pub fn heartbeat(&self) -> Instant {
        *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot of the uplink state.
    pub fn status(&self) -> UplinkStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Publish `payload` retained on `P/C/config/reported`, now or as soon as a session is up,
    /// and again after every reconnect until the broker acknowledged it. A newer document
    /// replaces an older one not yet acknowledged. Fails only when the uplink has stopped.
    pub async fn publish_config_reported(&self, payload: Vec<u8>) -> Result<(), UplinkError> {
        self.reported_tx
            .send(payload)
            .await
            .map_err(|_| UplinkError::Stopped)
    }
}

/// Errors of the uplink. Connection errors are not among them: the uplink retries those itself
/// and reports the last one in [`UplinkStatus::last_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UplinkError {
    /// The uplink task has ended (permanent).
    #[error("the uplink has stopped")]
    Stopped,
    /// TLS cannot be set up (CA bundle missing or invalid): permanent until the config changes.
    #[error("TLS setup: {reason}")]
    TlsSetup {
        /// What is wrong.
        reason: String,
    },
}

/// Topic names of one cabinet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `P/C/status`.
    pub status: String,
    /// `P/C/cmd`.
    pub cmd: String,
    /// `P/all/cmd`.
    pub all_cmd: String,
    /// `P/C/config/desired`.
    pub config_desired: String,
    /// `P/C/config/reported`.
    pub config_reported: String,
    prefix_cabinet: String,
}

impl Topics {
    /// Topics for prefix `P` and cabinet `C`.
    pub fn new(prefix: &str, cabinet: &str) -> Self {
        let pc = format!("{prefix}/{cabinet}");
        Topics {
            status: format!("{pc}/status"),
            cmd: format!("{pc}/cmd"),
            all_cmd: format!("{prefix}/all/cmd"),
            config_desired: format!("{pc}/config/desired"),
            config_reported: format!("{pc}/config/reported"),
            prefix_cabinet: pc,
        }
    }

    /// `P/C/telemetry`, `P/C/events` or `P/C/cmd/result`.
    pub fn stream(&self, stream: Stream) -> String {
        format!("{}/{}", self.prefix_cabinet, stream.topic_suffix())
    }
}

/// The retained online status payload.
pub fn online_payload(p: &UplinkParams, ts: SystemTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "online": true,
        "cabinet": p.cabinet_id,
        "boot_id": p.boot_id,
        "version": p.version,
        "config_version": p.config_version,
        "mode": "connected",
        "ts": format_ts(ts),
    }))
    .expect("json value serialises")
}

/// The retained offline status payload (will and clean stop).
pub fn offline_payload(p: &UplinkParams, ts: SystemTime) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "online": false,
        "cabinet": p.cabinet_id,
        "boot_id": p.boot_id,
        "ts": format_ts(ts),
    }))
    .expect("json value serialises")
}

fn broker_name(b: &Broker) -> String {
    format!("{}:{}", b.host, b.port)
}

/// Everything needed to build the options of one connection attempt.
struct OptionsBuilder {
    params: UplinkParams,
    topics: Topics,
    brokers: Vec<Broker>,
    window: u16,
    tls: Option<Arc<ClientConfig>>,
}

impl OptionsBuilder {
    fn build(&self, broker: usize) -> MqttOptions {
        let b = &self.brokers[broker];
        let cfg = &self.params.config;
        let mut o = MqttOptions::new(cfg.client_id.clone(), b.host.clone(), b.port);
        if let (true, Some(tls)) = (b.tls, &self.tls) {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        o.set_clean_session(true);
        // rumqttc panics below 1 s; the config parser validates, this keeps it from ever panicking.
        o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
        o.set_max_packet_size(
            MAX_INCOMING_BYTES.max(cfg.max_message_bytes),
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

enum PollEvent {
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
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start the uplink. Returns its handle, the channel of incoming command/config messages, and
/// the driver task, which ends after a clean stop once `shutdown` becomes true. Aborting that
/// task drops the connection abruptly (the broker then publishes the will).
pub fn start(
    params: UplinkParams,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> (UplinkHandle, mpsc::Receiver<Incoming>, JoinHandle<()>) {
    let status = Arc::new(Mutex::new(UplinkStatus::default()));
    let heartbeat = Arc::new(Mutex::new(Instant::now()));
    let (inbound_tx, inbound_rx) = mpsc::channel(64);
    let (reported_tx, reported_rx) = mpsc::channel(4);
    let config_version = Arc::new(Mutex::new(params.config_version.clone()));
    let handle = UplinkHandle {
        status: status.clone(),
        heartbeat: heartbeat.clone(),
        reported_tx,
        config_version: config_version.clone(),
    };
    let topics = Topics::new(&params.config.topic_prefix, &params.cabinet_id);
    let window = params.config.inflight.clamp(1, 1000);
    metrics.uplink_connected.set(0);
    metrics.set_mode("autonomous");
    let mut tls = None;
    if params.config.brokers.iter().any(|b| b.tls) {
        let loaded = match &params.config.ca_file {
            Some(path) => tls::load_client_config(path),
            None => Err(UplinkError::TlsSetup {
                reason: "mqtts:// needs uplink.ca_file".into(),
            }),
        };
        match loaded {
            Ok(config) => tls = Some(config),
            Err(e) => {
                tracing::error!(error = %e, "uplink: mqtts:// brokers unusable");
                set_status(&status, |s| s.last_error = Some(e.to_string()));
            }
        }
    }
    let brokers: Vec<Broker> = params
        .config
        .brokers
        .iter()
        .filter(|b| !b.tls || tls.is_some())
        .cloned()
        .collect();
    if brokers.is_empty() {
        tracing::error!("uplink: no usable broker; staying offline");
        let task = tokio::spawn(async move {
            let mut shutdown = shutdown;
            let mut reported_rx = reported_rx;
            loop {
                tokio::select! {
                    r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
                    _ = reported_rx.recv() => {}
                }
            }
        });
        return (handle, inbound_rx, task);
    }
    let builder = OptionsBuilder {
        params: params.clone(),
        topics: topics.clone(),
        brokers: brokers.clone(),
        window,
        tls,
    };
    let options = builder.build(0);
    // Channel sized so `try_publish` only fails if rumqttc stopped reading (window full).
    let (client, eventloop) = AsyncClient::new(options, usize::from(window) + 8);
    let (ev_tx, ev_rx) = mpsc::channel(256);
    let stop = Arc::new(AtomicBool::new(false));
    let poll = tokio::spawn(poll_loop(
        eventloop,
        builder,
        ev_tx,
        inbound_tx,
        stop.clone(),
    ));
    let max_json = params
        .config
        .max_message_bytes
        .saturating_sub(ENVELOPE_ROOM)
        .max(1);
    let stream_topics = STREAMS.map(|s| topics.stream(s));
    let compressor = match params.config.compression {
        Compression::None => None,
        Compression::Zstd => match zstd::bulk::Compressor::new(WIRE_ZSTD_LEVEL) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "zstd unavailable; publishing plain JSON");
                None
            }
        },
    };
    let driver = Driver {
        config_version,
        replay: params
            .config
            .replay_rate
            .map(|r| TokenBucket::new(f64::from(r.max(1)))),
        params,
        topics,
        brokers,
        outbox,
        client,
        metrics,
        status,
        heartbeat,
        inflight: InFlight::default(),
        cursors: None,
        connected: false,
        stopping: false,
        ever_connected: false,
        window: usize::from(window),
        max_json,
        stream_topics,
        compressor,
        reported: None,
        reported_gen: 0,
        acked_since_progress: 0,
        offline_acked: false,
    };
    let task = tokio::spawn(driver.run(ev_rx, reported_rx, shutdown, AbortOnDrop(poll), stop));
    (handle, inbound_rx, task)
}

/// zstd level of published payloads: level 3 already reaches ~10 bytes a benchmark point on
/// batches of a hundred records and more; higher levels cost CPU on every publish.
pub const WIRE_ZSTD_LEVEL: i32 = 3;

/// The payload of a record message: the JSON envelope, or one zstd frame of it (SPEC v1.1).
pub fn encode_payload(
    envelope: Vec<u8>,
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> Vec<u8> {
    match compressor {
        Some(c) => match c.compress(&envelope) {
            Ok(z) => z,
            Err(e) => {
                tracing::warn!(error = %e, "zstd failed; publishing plain JSON");
                envelope
            }
        },
        None => envelope,
    }
}

/// The JSON envelope of a record message, whichever encoding it was published in.
pub fn decode_payload(payload: &[u8], max_bytes: usize) -> std::io::Result<Vec<u8>> {
    if payload.starts_with(&ZSTD_MAGIC) {
        zstd::bulk::decompress(payload, max_bytes)
    } else {
        Ok(payload.to_vec())
    }
}

/// The first bytes of every zstd frame (JSON never starts with them).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

fn set_status(status: &Mutex<UplinkStatus>, f: impl FnOnce(&mut UplinkStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

async fn poll_loop(
    mut eventloop: EventLoop,
    builder: OptionsBuilder,
    events: mpsc::Sender<PollEvent>,
    inbound: mpsc::Sender<Incoming>,
    stop: Arc<AtomicBool>,
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
            Ok(Event::Outgoing(Outgoing::Disconnect)) if stop.load(Ordering::SeqCst) => return,
            Ok(_) => None,
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (done_tx, done_rx) = oneshot::channel();
                let lost = PollEvent::Lost {
                    error: describe(&e),
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

fn describe(e: &ConnectionError) -> String {
    // rumqttc errors name hosts and codes, never credentials.
    e.to_string()
}

/// Limits backlog records per second (`uplink.replay_rate`).
struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64) -> Self {
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

struct Driver {
    params: UplinkParams,
    config_version: Arc<Mutex<String>>,
    topics: Topics,
    brokers: Vec<Broker>,
    outbox: Arc<Outbox>,
    client: AsyncClient,
    metrics: Metrics,
    status: Arc<Mutex<UplinkStatus>>,
    heartbeat: Arc<Mutex<Instant>>,
    inflight: InFlight,
    cursors: Option<SendCursors>,
    connected: bool,
    stopping: bool,
    ever_connected: bool,
    window: usize,
    max_json: usize,
    /// `P/C/telemetry`, `P/C/events`, `P/C/cmd/result`, by [`stream_index`].
    stream_topics: [String; 3],
    /// Present with `uplink.compression = "zstd"` (reused: its context is allocated once).
    compressor: Option<zstd::bulk::Compressor<'static>>,
    replay: Option<TokenBucket>,
    /// Latest config/reported document and whether the broker acknowledged it.
    reported: Option<(u64, Vec<u8>, bool)>,
    reported_gen: u64,
    acked_since_progress: u64,
    offline_acked: bool,
}

impl Driver {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<PollEvent>,
        mut reported_rx: mpsc::Receiver<Vec<u8>>,
        mut shutdown: watch::Receiver<bool>,
        poll: AbortOnDrop,
        stop: Arc<AtomicBool>,
    ) {
        let mut durable = self.outbox.subscribe_durable();
        let mut progress = tokio::time::interval(PROGRESS_EVERY);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut progress_at = Instant::now();
        let mut reported_open = true;
        loop {
            *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            if *shutdown.borrow() {
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
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
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
        self.stop(events, poll, stop).await;
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
                self.metrics.set_mode("autonomous");
                set_status(&self.status, |s| {
                    s.connected = false;
                    s.mode = "autonomous";
                    s.last_error = Some(error);
                    s.batches_in_flight = 0;
                    s.replaying = false;
                });
                // The poll task waits for this before purging rumqttc's queues.
                let _ = done.send(());
            }
        }
    }

    async fn on_connack(&mut self, broker: usize) {
        let name = broker_name(&self.brokers[broker]);
        self.connected = true;
        self.metrics.uplink_connected.set(1);
        self.metrics.set_mode("connected");
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
            s.mode = "connected";
            s.broker = Some(name.clone());
            s.reconnects += reconnect;
        });
        tracing::info!(broker = %name, "uplink session established");
        if self.stopping {
            return;
        }
        self.params.config_version = self
            .config_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let online = online_payload(&self.params, SystemTime::now());
        match self
            .client
            .try_publish(self.topics.status.clone(), QoS::AtLeastOnce, true, online)
        {
            Ok(()) => self.inflight.queued(Tag::OnlineStatus),
            Err(e) => tracing::warn!(error = %e, "could not queue the online status"),
        }
        let subs = [
            &self.topics.cmd,
            &self.topics.all_cmd,
            &self.topics.config_desired,
        ]
        .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(subs) {
            tracing::warn!(error = %e, "could not queue the subscriptions");
        }
        if self.reported.as_ref().is_some_and(|r| !r.2) {
            self.publish_reported();
        }
        self.cursors = None;
        self.pump().await;
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
        stop: Arc<AtomicBool>,
    ) {
        self.stopping = true;
        let deadline = tokio::time::Instant::now() + STOP_DRAIN;
        while self.connected && self.inflight.batches() > 0 {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ev)) => self.on_event(ev).await,
                Ok(None) | Err(_) => break,
            }
        }
        stop.store(true, Ordering::SeqCst);
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
        self.metrics.set_mode("autonomous");
        set_status(&self.status, |s| {
            s.connected = false;
            s.mode = "autonomous";
            s.batches_in_flight = 0;
            s.replaying = false;
        });
        tracing::info!(offline_acked = self.offline_acked, "uplink stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> UplinkParams {
        UplinkParams {
            cabinet_id: "dijon-017".into(),
            boot_id: "b0".into(),
            version: "0.1.0".into(),
            config_version: "cfg1".into(),
            config: UplinkConfig {
                brokers: vec![],
                topic_prefix: "cabinets/v1".into(),
                client_id: "cabinetd-dijon-017".into(),
                username: None,
                password_file: None,
                ca_file: None,
                keep_alive: Duration::from_secs(15),
                max_message_bytes: 1024,
                inflight: 4,
                replay_rate: None,
                compression: Default::default(),
            },
            password: None,
        }
    }

    #[test]
    fn topics_follow_the_spec() {
        let t = Topics::new("cabinets/v1", "dijon-017");
        assert_eq!(t.status, "cabinets/v1/dijon-017/status");
        assert_eq!(t.cmd, "cabinets/v1/dijon-017/cmd");
        assert_eq!(t.all_cmd, "cabinets/v1/all/cmd");
        assert_eq!(t.config_desired, "cabinets/v1/dijon-017/config/desired");
        assert_eq!(t.config_reported, "cabinets/v1/dijon-017/config/reported");
        assert_eq!(
            t.stream(Stream::Results),
            "cabinets/v1/dijon-017/cmd/result"
        );
        assert_eq!(
            t.stream(Stream::Telemetry),
            "cabinets/v1/dijon-017/telemetry"
        );
    }

    #[test]
    fn status_payloads_follow_the_spec() {
        let p = params();
        let ts = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_680_000_123);
        let on: serde_json::Value = serde_json::from_slice(&online_payload(&p, ts)).unwrap();
        assert_eq!(
            on,
            serde_json::json!({"online":true,"cabinet":"dijon-017","boot_id":"b0","version":"0.1.0",
                "config_version":"cfg1","mode":"connected","ts":"2026-11-26T08:00:00.123Z"})
        );
        let off: serde_json::Value = serde_json::from_slice(&offline_payload(&p, ts)).unwrap();
        assert_eq!(
            off,
            serde_json::json!({"online":false,"cabinet":"dijon-017","boot_id":"b0","ts":"2026-11-26T08:00:00.123Z"})
        );
    }

    #[test]
    fn options_carry_the_will_credentials_and_sizes() {
        let mut p = params();
        p.config.username = Some("gw".into());
        p.password = Some("s3cret".into());
        let b = OptionsBuilder {
            topics: Topics::new("cabinets/v1", "dijon-017"),
            params: p,
            brokers: vec![Broker {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1883,
            }],
            window: 4,
            tls: None,
        };
        let o = b.build(0);
        assert_eq!(o.broker_address(), ("127.0.0.1".to_owned(), 1883));
        assert_eq!(o.inflight(), 8);
        assert!(o.clean_session());
        let will = o.last_will().unwrap();
        assert_eq!(will.topic, "cabinets/v1/dijon-017/status");
        assert!(will.retain);
        let payload: serde_json::Value = serde_json::from_slice(&will.message).unwrap();
        assert_eq!(payload["online"], false);
        let login = o.credentials().unwrap();
        assert_eq!(login.username, "gw");
    }
}
