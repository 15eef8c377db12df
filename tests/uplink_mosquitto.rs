//! The uplink against a real mosquitto (`/usr/sbin/mosquitto`, spawned per test on a free
//! loopback port, `tests/support`'s harness): order and contiguity of seqs, no loss across a
//! broker restart, retained status and will, commands coming in.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cabinetd::config::{Broker, UplinkConfig};
use cabinetd::metrics::Metrics;
use cabinetd::outbox::{Outbox, OutboxOptions};
use cabinetd::record::{
    CommandResult, CommandStatus, Event, Quality, RecordBody, Severity, Stream, Telemetry,
};
use cabinetd::uplink::{self, UplinkParams};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
use support::{make_ca, Mosquitto};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "cabinets/v1";
const CABINET: &str = "dijon-017";

/// The broker's plain listener as an uplink broker.
fn plain(broker: &Mosquitto) -> Broker {
    Broker {
        tls: false,
        host: "127.0.0.1".into(),
        port: broker.port,
    }
}

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: serde_json::Value,
    retain: bool,
}

/// A test client subscribed to everything under the prefix.
struct Observer {
    msgs: Arc<Mutex<Vec<Msg>>>,
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// `persistent`: a session the broker keeps (with persistence, across its restarts), so
    /// nothing published while this client reconnects is missed.
    async fn connect(broker: &Mosquitto, id: &str, persistent: bool) -> Observer {
        let mut o = MqttOptions::new(id, "127.0.0.1", broker.port);
        o.set_clean_session(!persistent);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut el) = AsyncClient::new(o, 100);
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let sub = client.clone();
        let sink = msgs.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        // Requests are queued in the channel: no deadlock from the poll task.
                        let _ = sub.try_subscribe(format!("{PREFIX}/#"), QoS::AtLeastOnce);
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let payload =
                            serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null);
                        sink.lock().unwrap().push(Msg {
                            topic: p.topic,
                            payload,
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("observer subscribed")
            .unwrap();
        Observer { msgs, client, task }
    }

    fn snapshot(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Seqs received per stream topic, in arrival order, with the replay flag of their message.
    fn seqs(&self, stream: Stream) -> Vec<(u64, bool)> {
        let topic = format!("{PREFIX}/{CABINET}/{}", stream.topic_suffix());
        let mut out = Vec::new();
        for m in self.snapshot().into_iter().filter(|m| m.topic == topic) {
            assert_eq!(m.payload["cabinet"], CABINET);
            assert_eq!(m.payload["stream"], stream.as_str());
            let replay = m.payload["replay"].as_bool().unwrap();
            for r in m.payload["records"].as_array().unwrap() {
                out.push((r["seq"].as_u64().unwrap(), replay));
            }
        }
        out
    }

    fn statuses(&self) -> Vec<Msg> {
        let topic = format!("{PREFIX}/{CABINET}/status");
        self.snapshot()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wait for a condition, polling, with a deadline.
async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn uplink_config(brokers: Vec<Broker>) -> UplinkConfig {
    UplinkConfig {
        brokers,
        topic_prefix: PREFIX.into(),
        client_id: format!("cabinetd-{CABINET}"),
        username: None,
        password_file: None,
        ca_file: None,
        cert_file: None,
        key_file: None,
        max_incoming_bytes: cabinetd::config::DEFAULT_MAX_INCOMING_BYTES,
        keep_alive: Duration::from_secs(2),
        max_message_bytes: 4096,
        inflight: 8,
        replay_rate: None,
        compression: Default::default(),
    }
}

fn params(config: UplinkConfig) -> UplinkParams {
    UplinkParams {
        cabinet_id: CABINET.into(),
        boot_id: "6f1c2d0e-0000-4000-8000-000000000001".into(),
        version: "0.1.0-test".into(),
        config_version: "cfg-1".into(),
        config,
        password: None,
    }
}

fn telemetry(i: u64) -> RecordBody {
    RecordBody::Telemetry(Telemetry {
        ts: SystemTime::now(),
        point: "meter-main/active_power".into(),
        value: serde_json::json!(i),
        quality: Quality::Good,
    })
}

fn event(i: u64) -> RecordBody {
    RecordBody::Event(Event {
        ts: SystemTime::now(),
        kind: cabinetd::event::EventKind::DeviceDown,
        severity: Severity::Major,
        source: "meter-main".into(),
        message: format!("event {i}"),
        data: serde_json::json!({}),
    })
}

fn result(i: u64) -> RecordBody {
    RecordBody::Result(CommandResult {
        ts: SystemTime::now(),
        id: format!("cmd-{i}"),
        status: CommandStatus::Succeeded,
        reason: String::new(),
    })
}

struct Cabinet {
    outbox: Arc<Outbox>,
    metrics: Metrics,
    stop_tx: watch::Sender<bool>,
    flusher: tokio::task::JoinHandle<()>,
    _dir: PathBuf,
}

fn open_cabinet(dir: &Path) -> Cabinet {
    let metrics = Metrics::new("test");
    let (outbox, _) = Outbox::open(dir, OutboxOptions::default(), metrics.clone()).unwrap();
    let (stop_tx, stop_rx) = watch::channel(false);
    // The outbox flushes on its own thread; a stop closes it (final flush, lock released).
    let flusher = {
        let outbox = outbox.clone();
        let mut stop_rx = stop_rx;
        tokio::spawn(async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    break;
                }
            }
            let _ = outbox.close().await;
        })
    };
    Cabinet {
        outbox,
        metrics,
        stop_tx,
        flusher,
        _dir: dir.to_owned(),
    }
}

fn assert_complete(seqs: &[(u64, bool)], n: u64, what: &str) {
    let set: BTreeSet<u64> = seqs.iter().map(|s| s.0).collect();
    let expected: BTreeSet<u64> = (1..=n).collect();
    assert_eq!(set, expected, "{what}: every seq 1..={n}, nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_in_order_with_contiguous_seqs_and_status_is_retained() {
    let broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-1", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    let shutdown = CancellationToken::new();
    let (handle, mut incoming, task) = uplink::start(
        params(uplink_config(vec![plain(&broker)])),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );

    wait_for("online status", Duration::from_secs(10), || {
        obs.statuses().iter().any(|m| m.payload["online"] == true)
    })
    .await;
    let online = obs.statuses().into_iter().next().unwrap();
    assert!(online.payload["mode"] == "connected" && online.payload["config_version"] == "cfg-1");
    assert!(handle.status().connected);
    assert_eq!(cab.metrics.uplink_connected.get(), 1);
    assert!(handle.heartbeat().elapsed() < Duration::from_secs(5));

    for i in 0..600 {
        cab.outbox.append(telemetry(i)).await.unwrap();
        if i % 30 == 0 {
            cab.outbox.append(event(i)).await.unwrap();
            cab.outbox.append(result(i)).await.unwrap();
        }
    }
    wait_for("every record", Duration::from_secs(20), || {
        obs.seqs(Stream::Telemetry).len() >= 600
            && obs.seqs(Stream::Events).len() >= 20
            && obs.seqs(Stream::Results).len() >= 20
    })
    .await;
    // No reconnect happened: exactly 1..=N, in order, no duplicate, no replay flag.
    for (stream, n) in [
        (Stream::Telemetry, 600),
        (Stream::Events, 20),
        (Stream::Results, 20),
    ] {
        let seqs = obs.seqs(stream);
        assert_eq!(
            seqs.iter().map(|s| s.0).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "{stream}"
        );
        assert!(seqs.iter().all(|s| !s.1), "{stream}: nothing is a replay");
    }
    // Batching: far fewer messages than records, each within the message size.
    let telemetry_msgs = obs
        .snapshot()
        .iter()
        .filter(|m| m.topic.ends_with("/telemetry"))
        .count();
    assert!(telemetry_msgs < 600, "{telemetry_msgs} messages");
    // Deleted after ack.
    wait_for("outbox empty", Duration::from_secs(10), || {
        cab.outbox.stats().total_records() == 0
    })
    .await;
    assert_eq!(
        cab.metrics
            .published_records_total
            .with_label_values(&["telemetry"])
            .get(),
        600
    );

    // Commands come in on both command topics and the desired config topic.
    for topic in [
        format!("{PREFIX}/{CABINET}/cmd"),
        format!("{PREFIX}/all/cmd"),
        format!("{PREFIX}/{CABINET}/config/desired"),
    ] {
        obs.client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                br#"{"id":"x"}"#.to_vec(),
            )
            .await
            .unwrap();
        let msg = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
            .await
            .expect("command delivered")
            .unwrap();
        assert_eq!(msg.topic, topic);
        assert_eq!(msg.payload, br#"{"id":"x"}"#);
    }

    // config/reported is published retained.
    handle
        .publish_config_reported(br#"{"version":"cfg-1","status":"applied","errors":[]}"#.to_vec())
        .await
        .unwrap();
    wait_for("config reported", Duration::from_secs(5), || {
        obs.snapshot()
            .iter()
            .any(|m| m.topic.ends_with("/config/reported") && m.payload["status"] == "applied")
    })
    .await;

    // Clean stop: the retained status says offline; the task ends on its own.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .expect("uplink stops within 8 s")
        .unwrap();
    wait_for("offline status", Duration::from_secs(5), || {
        obs.statuses().iter().any(|m| m.payload["online"] == false)
    })
    .await;
    assert!(!handle.status().connected);
    // A new client sees the retained offline status (with this boot id) and the reported config.
    let late = Observer::connect(&broker, "observer-late", false).await;
    wait_for("retained offline status", Duration::from_secs(5), || {
        late.statuses().iter().any(|m| {
            m.retain
                && m.payload["online"] == false
                && m.payload["boot_id"] == "6f1c2d0e-0000-4000-8000-000000000001"
        })
    })
    .await;
    cab.stop_tx.send(true).unwrap();
    cab.flusher.await.unwrap();
    // After the clean stop nothing acknowledged is left to send again, and numbering goes on.
    drop(cab.outbox);
    let (outbox, recovery) =
        Outbox::open(dir.path(), OutboxOptions::default(), Metrics::new("t")).unwrap();
    assert!(recovery.is_none());
    assert_eq!(outbox.stats().total_records(), 0);
    assert_eq!(outbox.append(telemetry(0)).await.unwrap(), 601);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let mut broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-restart", true).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    let shutdown = CancellationToken::new();
    let (handle, _incoming, task) = uplink::start(
        params(uplink_config(vec![plain(&broker)])),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    wait_for("connected", Duration::from_secs(10), || {
        handle.status().connected
    })
    .await;

    const N: u64 = 3000;
    let outbox = cab.outbox.clone();
    let producer = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..N {
            if i % 20 == 0 {
                tick.tick().await;
            }
            outbox.append(telemetry(i)).await.unwrap();
        }
    });
    wait_for("first records", Duration::from_secs(10), || {
        obs.seqs(Stream::Telemetry).len() > 200
    })
    .await;
    broker.restart();
    producer.await.unwrap();
    wait_for(
        "every seq after the restart",
        Duration::from_secs(30),
        || {
            obs.seqs(Stream::Telemetry)
                .iter()
                .map(|s| s.0)
                .collect::<BTreeSet<_>>()
                .len() as u64
                >= N
        },
    )
    .await;
    let seqs = obs.seqs(Stream::Telemetry);
    assert_complete(&seqs, N, "telemetry");
    assert!(
        seqs.iter().any(|s| s.1),
        "records stored during the outage are flagged replay"
    );
    // Duplicates only for records that were in flight: each seq at most a few times.
    let mut count: BTreeMap<u64, usize> = BTreeMap::new();
    for (s, _) in &seqs {
        *count.entry(*s).or_default() += 1;
    }
    let dups = count.values().filter(|c| **c > 1).count();
    let replayed = seqs.iter().filter(|s| s.1).count();
    eprintln!(
        "restart: {} records received, {dups} duplicated seqs, {replayed} flagged replay",
        seqs.len()
    );
    assert!(dups <= 8 * 4096 / 100, "{dups} duplicated seqs");
    assert!(handle.status().reconnects >= 1);
    wait_for("outbox drained", Duration::from_secs(10), || {
        cab.outbox.stats().total_records() == 0
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_will_marks_the_cabinet_offline_when_the_uplink_dies_abruptly() {
    let broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-will", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    let shutdown = CancellationToken::new();
    let (handle, _incoming, task) = uplink::start(
        params(uplink_config(vec![plain(&broker)])),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    wait_for("online status", Duration::from_secs(10), || {
        obs.statuses().iter().any(|m| m.payload["online"] == true)
    })
    .await;
    assert!(handle.status().connected);
    // No DISCONNECT: the connection just drops, as when the process is killed.
    task.abort();
    let _ = task.await;
    wait_for("will", Duration::from_secs(10), || {
        obs.statuses()
            .iter()
            .any(|m| m.payload["online"] == false && m.payload["cabinet"] == CABINET)
    })
    .await;
    let late = Observer::connect(&broker, "observer-will-late", false).await;
    wait_for("retained will", Duration::from_secs(5), || {
        late.statuses()
            .iter()
            .any(|m| m.retain && m.payload["online"] == false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_uses_the_next_broker_when_the_first_is_down() {
    let dead = {
        // A port nobody listens on.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-failover", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    cab.outbox.append(result(1)).await.unwrap();
    let shutdown = CancellationToken::new();
    let brokers = vec![
        Broker {
            tls: false,
            host: "127.0.0.1".into(),
            port: dead,
        },
        plain(&broker),
    ];
    let (handle, _incoming, task) = uplink::start(
        params(uplink_config(brokers)),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    wait_for(
        "result delivered via the second broker",
        Duration::from_secs(10),
        || !obs.seqs(Stream::Results).is_empty(),
    )
    .await;
    let st = handle.status();
    // One spelling of a broker everywhere (issue 14): its URL.
    assert_eq!(st.broker, Some(format!("mqtt://127.0.0.1:{}", broker.port)));
    // Stored before the first session: a replay.
    assert_eq!(obs.seqs(Stream::Results), vec![(1, true)]);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_records_flow_while_the_backlog_drains() {
    let broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-backlog", false).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    // An outage's worth of telemetry, stored before the uplink comes up.
    const BACKLOG: u64 = 1500;
    for i in 0..BACKLOG {
        cab.outbox.append(telemetry(i)).await.unwrap();
    }
    cab.outbox.flush().await.unwrap();
    let mut config = uplink_config(vec![plain(&broker)]);
    // A thin link: the backlog takes ~5 s.
    config.replay_rate = Some(300);
    let shutdown = CancellationToken::new();
    let (handle, _incoming, task) = uplink::start(
        params(config),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    wait_for("backlog starts", Duration::from_secs(10), || {
        !obs.seqs(Stream::Telemetry).is_empty()
    })
    .await;
    assert!(handle.status().replaying);
    // Fresh records while the backlog drains: a command result and a reading.
    let t0 = Instant::now();
    assert_eq!(cab.outbox.append(result(1)).await.unwrap(), 1);
    assert_eq!(
        cab.outbox.append(telemetry(9999)).await.unwrap(),
        BACKLOG + 1
    );
    wait_for("fresh records", Duration::from_secs(5), || {
        !obs.seqs(Stream::Results).is_empty()
            && obs
                .seqs(Stream::Telemetry)
                .iter()
                .any(|s| s.0 == BACKLOG + 1)
    })
    .await;
    let latency = t0.elapsed();
    let received = obs.seqs(Stream::Telemetry);
    let backlog_seen = received.iter().filter(|s| s.0 <= BACKLOG).count() as u64;
    assert!(
        latency < Duration::from_secs(1),
        "fresh records took {latency:?}"
    );
    assert!(
        backlog_seen < BACKLOG,
        "backlog still draining when the fresh records arrived ({backlog_seen} of {BACKLOG})"
    );
    assert_eq!(obs.seqs(Stream::Results), vec![(1, false)]);
    assert!(received.contains(&(BACKLOG + 1, false)));

    wait_for("backlog drained", Duration::from_secs(20), || {
        obs.seqs(Stream::Telemetry).len() as u64 > BACKLOG
    })
    .await;
    let backlog: Vec<(u64, bool)> = obs
        .seqs(Stream::Telemetry)
        .into_iter()
        .filter(|s| s.0 <= BACKLOG)
        .collect();
    // Oldest first, every one flagged replay, nothing missing or doubled.
    assert_eq!(
        backlog,
        (1..=BACKLOG).map(|s| (s, true)).collect::<Vec<_>>()
    );
    wait_for("replay over", Duration::from_secs(5), || {
        !handle.status().replaying
    })
    .await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_broker_is_detected_and_nothing_is_lost() {
    let broker = Mosquitto::start();
    let obs = Observer::connect(&broker, "observer-blackhole", true).await;
    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    let mut config = uplink_config(vec![plain(&broker)]);
    config.keep_alive = Duration::from_secs(1);
    let shutdown = CancellationToken::new();
    let (handle, _incoming, task) = uplink::start(
        params(config),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    wait_for("connected", Duration::from_secs(10), || {
        handle.status().connected
    })
    .await;
    for i in 0..100 {
        cab.outbox.append(telemetry(i)).await.unwrap();
    }
    wait_for("first records", Duration::from_secs(10), || {
        obs.seqs(Stream::Telemetry).len() >= 100
    })
    .await;
    broker.freeze();
    // Published into a socket nobody reads: never acknowledged.
    for i in 100..200 {
        cab.outbox.append(telemetry(i)).await.unwrap();
    }
    wait_for(
        "loss detected by keep-alive",
        Duration::from_secs(10),
        || !handle.status().connected,
    )
    .await;
    assert_eq!(cab.metrics.uplink_connected.get(), 0);
    assert!(handle.status().last_error.is_some());
    for i in 200..300 {
        cab.outbox.append(telemetry(i)).await.unwrap();
    }
    broker.thaw();
    wait_for("every seq after the thaw", Duration::from_secs(30), || {
        obs.seqs(Stream::Telemetry)
            .iter()
            .map(|s| s.0)
            .collect::<BTreeSet<_>>()
            .len()
            >= 300
    })
    .await;
    assert_complete(&obs.seqs(Stream::Telemetry), 300, "telemetry");
    wait_for("reconnected", Duration::from_secs(10), || {
        handle.status().connected
    })
    .await;
    // The old connection's will may fire after the thaw; the retained status must end online.
    let late = Observer::connect(&broker, "observer-blackhole-late", false).await;
    wait_for("retained status", Duration::from_secs(5), || {
        !late.statuses().is_empty()
    })
    .await;
    let last = late.statuses().last().unwrap().clone();
    assert_eq!(
        last.payload["online"], true,
        "retained status {:?}",
        last.payload
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_the_configured_ca_delivers_and_a_wrong_ca_is_refused() {
    let broker = Mosquitto::start_tls();
    let obs = Observer::connect(&broker, "observer-tls", false).await;
    let tls_broker = Broker {
        tls: true,
        host: "localhost".into(),
        port: broker.tls_port.unwrap(),
    };

    // A CA that did not sign the server certificate: the handshake fails, nothing is sent.
    let other = tempfile::tempdir().unwrap();
    make_ca(other.path(), "other");
    {
        let dir = tempfile::tempdir().unwrap();
        let cab = open_cabinet(dir.path());
        let mut config = uplink_config(vec![tls_broker.clone()]);
        config.ca_file = Some(other.path().join("ca.pem"));
        let shutdown = CancellationToken::new();
        let (handle, _incoming, task) = uplink::start(
            params(config),
            cab.outbox.clone(),
            cab.metrics.clone(),
            shutdown.clone(),
        );
        wait_for("a TLS error", Duration::from_secs(10), || {
            handle.status().last_error.is_some()
        })
        .await;
        let st = handle.status();
        assert!(!st.connected);
        let err = st.last_error.unwrap();
        assert!(err.contains("TLS"), "{err}");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(8), task)
            .await
            .unwrap()
            .unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let cab = open_cabinet(dir.path());
    let mut config = uplink_config(vec![tls_broker]);
    config.ca_file = Some(broker.ca_file());
    let shutdown = CancellationToken::new();
    let (handle, _incoming, task) = uplink::start(
        params(config),
        cab.outbox.clone(),
        cab.metrics.clone(),
        shutdown.clone(),
    );
    for i in 0..50 {
        cab.outbox.append(telemetry(i)).await.unwrap();
    }
    wait_for("records over TLS", Duration::from_secs(10), || {
        obs.seqs(Stream::Telemetry).len() >= 50
    })
    .await;
    assert_complete(&obs.seqs(Stream::Telemetry), 50, "telemetry over TLS");
    assert_eq!(
        handle.status().broker,
        Some(format!("mqtts://localhost:{}", broker.tls_port.unwrap()))
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), task)
        .await
        .unwrap()
        .unwrap();
}
