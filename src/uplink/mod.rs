//! The MQTT uplink (rumqttc 0.25.1, MQTT 3.1.1, clean session, QoS 1): publishes the outbox to
//! the central post's broker and deletes records only after the broker acknowledged them.
//!
//! # Tasks
//! - The *poll task* owns the `EventLoop` and only polls it (awaiting a client call there would
//!   deadlock, pitfall 6). It forwards ConnAck / sent pkids / PubAcks to the driver, incoming
//!   publishes to the command channel, and after an error: tells the driver (and waits until it
//!   dropped its bindings), sleeps a capped exponential backoff with jitter (pitfall 3), purges
//!   every request still queued in rumqttc, picks the broker (failover in order, skipping
//!   `mqtts://` brokers while the TLS files cannot be read — it waits for a successful
//!   [`UplinkHandle::reload_tls`] when none is usable) and sets a fresh last will (pitfall 8)
//!   before polling again. A new broker list ([`UplinkHandle::set_brokers`]) ends the session
//!   the same way and starts over with the new list.
//! - The *driver task* decides what to publish, only with `try_publish` (never blocks on the
//!   client, pitfall 7), and tracks pkids in [`InFlight`]. It also republishes the retained online
//!   status when the running configuration's version changes, and reminds the log while the
//!   central post is unreachable ([`outage`]).
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
//! - Clean stop (the stop token is cancelled): no new batches, wait (≤ 3 s) for in-flight acks, publish the retained offline
//!   status and wait (≤ 1.5 s) for its ack, DISCONNECT, flush the outbox (≤ 1 s) so the
//!   deletions of the last acks are durable. An abrupt end (task aborted, process killed) drops
//!   the TCP connection without DISCONNECT, so the broker publishes the will. A will of an older
//!   connection (half-open, then taken over by the new one with the same client id) is published
//!   by the broker while it handles the new CONNECT, i.e. before our ConnAck and so before the
//!   new online status: the retained status ends up right (checked by the SIGSTOP test).
//! - Incoming messages go to a channel of 64; a consumer that stops reading stalls the poll task
//!   (and with it keep-alive), so the daemon must drain it promptly or drop the receiver.

mod driver;
pub mod failover;
pub mod incoming;
pub mod inflight;
pub mod outage;
mod poll;
pub mod tls;
mod topics;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter,
    TlsConfiguration, Transport,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Compression;
use crate::config::{Broker, UplinkConfig};
use crate::metrics::Metrics;
use crate::outbox::cursor::{Lane, SendCursors};
use crate::outbox::{stream_index, Outbox, ENVELOPE_ROOM, STREAMS};
use crate::record::{envelope_joined, format_ts, ts_millis, Stream};

pub use cabinetd_backoff::Backoff;
pub use failover::Failover;
pub use inflight::{InFlight, Tag};
pub use topics::{offline_payload, online_payload, will_payload, Topics};

use driver::{Driver, TokenBucket};
use outage::OutageReminder;
use poll::{poll_loop, AbortOnDrop, OptionsBuilder, PollEvent};

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

impl UplinkParams {
    /// The parameters of cabinet `cfg` for run `boot_id`: reads `uplink.password_file`.
    pub fn from_config(cfg: &crate::config::Config, boot_id: &str) -> Result<Self, UplinkError> {
        let password = match &cfg.uplink.password_file {
            // As check-config reads it: one line, bounded, not empty.
            Some(path) => Some(crate::config::read_secret(path).map_err(|reason| {
                UplinkError::PasswordFile {
                    path: path.display().to_string(),
                    reason,
                }
            })?),
            None => None,
        };
        Ok(UplinkParams {
            cabinet_id: cfg.cabinet.id.clone(),
            boot_id: boot_id.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            config_version: cfg.version.clone(),
            config: cfg.uplink.clone(),
            password,
        })
    }
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
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UplinkStatus {
    /// A broker session is up. (The cabinet's mode is the rules core's: `/status.mode`.)
    pub connected: bool,
    /// `mqtt[s]://host:port` of the broker in use (or last tried).
    pub broker: Option<String>,
    /// Last connection error (no secrets: rumqttc errors carry none). Kept after a reconnect:
    /// show it only while disconnected.
    pub last_error: Option<String>,
    /// When [`UplinkStatus::last_error`] happened.
    #[serde(serialize_with = "opt_ts")]
    pub last_error_at: Option<SystemTime>,
    /// Sessions established after the first.
    pub reconnects: u64,
    /// Sessions established since the start (the first included).
    pub sessions: u64,
    /// Record batches published and not yet acknowledged.
    pub batches_in_flight: usize,
    /// The backlog of the current session is not fully sent yet.
    pub replaying: bool,
}

fn opt_ts<S: serde::Serializer>(ts: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(t) => ts_millis::serialize(t, s),
        None => s.serialize_none(),
    }
}

/// Handle on the running uplink.
#[derive(Clone)]
pub struct UplinkHandle {
    status: Arc<Mutex<UplinkStatus>>,
    heartbeat: Arc<Mutex<Instant>>,
    reported_tx: mpsc::Sender<Vec<u8>>,
    config_version: Arc<watch::Sender<String>>,
    mode: Arc<watch::Sender<&'static str>>,
    tls: Option<Arc<tls::TlsSlot>>,
    brokers: Arc<watch::Sender<Vec<Broker>>>,
}

impl UplinkHandle {
    /// Re-read `uplink.ca_file`, `cert_file` and `key_file` (SIGHUP, and every
    /// [`tls::RELOAD_EVERY`] so a renewed certificate is used before the old one expires): the
    /// next connection uses them; on failure the previous ones stay. Returns the client
    /// certificate's notAfter (also exported as `cabinetd_tls_cert_expiry_seconds`).
    pub fn reload_tls(&self) -> Result<Option<SystemTime>, UplinkError> {
        match &self.tls {
            Some(slot) => slot.reload(),
            None => Ok(None),
        }
    }

    /// A new `uplink.broker` list (a reload or a desired configuration): the session in
    /// progress is dropped and the first usable broker of the new list is tried at once.
    pub fn set_brokers(&self, brokers: Vec<Broker>) {
        self.brokers.send_if_modified(|b| {
            let changed = *b != brokers;
            *b = brokers;
            changed
        });
    }

    /// The version of the configuration now running (after a reload or a desired configuration
    /// was applied): the retained online status is published again with it at once when a
    /// session is up, and every later online status names it.
    pub fn set_config_version(&self, version: &str) {
        self.config_version.send_if_modified(|v| {
            let changed = v != version;
            version.clone_into(v);
            changed
        });
    }

    /// The cabinet's mode (the rules core's): the retained online status names it, and is
    /// published again at once when it changes while a session is up.
    pub fn set_mode(&self, mode: &'static str) {
        self.mode.send_if_modified(|m| {
            let changed = *m != mode;
            *m = mode;
            changed
        });
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
    /// `uplink.password_file` cannot be read: permanent until the file or config changes.
    #[error("uplink.password_file {path} {reason}")]
    PasswordFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// TLS cannot be set up (CA bundle missing or invalid): permanent until the config changes.
    #[error("TLS setup: {reason}")]
    TlsSetup {
        /// What is wrong.
        reason: String,
    },
}

/// Start the uplink. Returns its handle, the channel of incoming command/config messages, and
/// the driver task, which ends after a clean stop once `stop` is cancelled. Aborting that task
/// drops the connection abruptly (the broker then publishes the will).
pub fn start(
    params: UplinkParams,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    stop: CancellationToken,
) -> (UplinkHandle, mpsc::Receiver<Incoming>, JoinHandle<()>) {
    let status = Arc::new(Mutex::new(UplinkStatus::default()));
    let heartbeat = Arc::new(Mutex::new(Instant::now()));
    let (inbound_tx, inbound_rx) = mpsc::channel(64);
    let (reported_tx, reported_rx) = mpsc::channel(4);
    let (config_version_tx, config_version) = watch::channel(params.config_version.clone());
    let (mode_tx, mode) = watch::channel("connected");
    // The TLS files are loaded whenever uplink.ca_file is set, so a broker list changed to
    // mqtts:// at run time, or a CA file that becomes readable later (SIGHUP, the periodic
    // reload), makes the mqtts:// brokers usable without a restart.
    let any_tls = params.config.brokers.iter().any(|b| b.tls);
    let (tls, loaded) = match tls::TlsFiles::of(&params.config) {
        Some(files) => {
            let (slot, err) = tls::TlsSlot::new(files, metrics.tls_cert_expiry_seconds.clone());
            (Some(slot), err)
        }
        None => (
            None,
            any_tls.then(|| UplinkError::TlsSetup {
                reason: "mqtts:// needs uplink.ca_file".into(),
            }),
        ),
    };
    if let Some(e) = loaded.filter(|_| any_tls) {
        tracing::error!(error = %e, "uplink: mqtts:// brokers unusable until the TLS files can be read (SIGHUP or the hourly reload)");
        set_status(&status, |s| {
            s.last_error = Some(e.to_string());
            s.last_error_at = Some(SystemTime::now());
        });
    }
    let (brokers_tx, brokers_rx) = watch::channel(params.config.brokers.clone());
    let handle = UplinkHandle {
        status: status.clone(),
        heartbeat: heartbeat.clone(),
        reported_tx,
        config_version: Arc::new(config_version_tx),
        mode: Arc::new(mode_tx),
        tls: tls.clone(),
        brokers: Arc::new(brokers_tx),
    };
    let topics = Topics::new(&params.config.topic_prefix, &params.cabinet_id);
    let window = params.config.inflight.clamp(1, 1000);
    metrics.uplink_connected.set(0);
    let brokers = params.config.brokers.clone();
    let builder = OptionsBuilder {
        params: params.clone(),
        topics: topics.clone(),
        brokers,
        window,
        tls,
    };
    // The poll task points the event loop at a usable broker before the first attempt.
    let options = builder.build(0);
    // Channel sized so `try_publish` only fails if rumqttc stopped reading (window full).
    let (client, mut eventloop) = AsyncClient::new(options, usize::from(window) + 8);
    // No Nagle: a command's result (one small publish) must not wait for the ACK of the
    // previous segment (~40 ms with delayed ACKs); batches are full messages anyway.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let (ev_tx, ev_rx) = mpsc::channel(256);
    // Cancelled once the driver has sent DISCONNECT: the poll task then ends instead of
    // reconnecting.
    let disconnecting = CancellationToken::new();
    let guard = incoming::IncomingGuard::new(
        params.config.max_incoming_bytes,
        outbox.clone(),
        metrics.clone(),
    );
    let poll = tokio::spawn(poll_loop(
        eventloop,
        builder,
        ev_tx,
        (inbound_tx, guard),
        disconnecting.clone(),
        brokers_rx,
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
        mode,
        replay: params
            .config
            .replay_rate
            .map(|r| TokenBucket::new(f64::from(r.max(1)))),
        params,
        topics,
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
        outage: OutageReminder::new(Instant::now()),
    };
    let poll = AbortOnDrop(poll);
    let task = tokio::spawn(driver.run(ev_rx, reported_rx, stop, poll, disconnecting));
    (handle, inbound_rx, task)
}

/// The running uplink, as the daemon holds it.
pub struct Uplink {
    /// Its handle (status, heartbeat, config version, config/reported).
    pub handle: UplinkHandle,
    /// Commands and desired configurations.
    pub incoming: mpsc::Receiver<Incoming>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Uplink {
    /// Starts the uplink (see [`start`]); it runs until [`Uplink::stop`].
    pub fn start(params: UplinkParams, outbox: Arc<Outbox>, metrics: Metrics) -> Uplink {
        let stop = CancellationToken::new();
        let (handle, incoming, task) = start(params, outbox, metrics, stop.clone());
        Uplink {
            handle,
            incoming,
            stop,
            task,
        }
    }

    /// Clean stop until `deadline`, then aborted (the broker then publishes the will; records
    /// not acknowledged stay in the outbox).
    pub async fn stop(&mut self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        if tokio::time::timeout_at(deadline, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("uplink: did not finish within the stop budget; aborted (unacknowledged records stay in the outbox)");
            self.task.abort();
        }
    }

    /// A handle to abort it (a second stop signal).
    pub fn abort_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }
}

fn set_status(status: &Mutex<UplinkStatus>, f: impl FnOnce(&mut UplinkStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
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
                cert_file: None,
                key_file: None,
                max_incoming_bytes: 1 << 20,
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
        let on: serde_json::Value =
            serde_json::from_slice(&online_payload(&p, "connected", ts)).unwrap();
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
        // Issue 13 item 10: the will's time is when it was set (the connect), named `since`.
        let will: serde_json::Value = serde_json::from_slice(&will_payload(&p, ts)).unwrap();
        assert_eq!(
            will,
            serde_json::json!({"online":false,"cabinet":"dijon-017","boot_id":"b0","since":"2026-11-26T08:00:00.123Z"})
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
        assert!(
            payload["since"].is_string() && payload.get("ts").is_none(),
            "{payload}"
        );
        let login = o.credentials().unwrap();
        assert_eq!(login.username, "gw");
    }
}
