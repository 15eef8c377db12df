//! The daemon's DALI bus task (`cabinetd::equipment::dali::run_bus`) against a real peer: python-dali fake
//! gear behind the ATX DALI HAT emulator (`tests/peers/atx_hat_emulator.py`) on a pty, reached
//! through tokio-serial as in production. Faults are injected on the emulator's stdin.

mod support;

use std::time::Duration;

use cabinetd::config::{DaliBus, DaliGroup, DaliInterface};
use cabinetd::equipment::dali::{run_bus, BusOptions};
use cabinetd::equipment::{Status, StatusTx};
use cabinetd::event::EquipmentKind;
use cabinetd::light::{LightAction, LightError, LightRequest, LightTarget};
use cabinetd::metrics::Metrics;
use cabinetd::record::{Event, Quality, RecordBody, Severity, Telemetry};
use cabinetd_dali::percent_to_arc;
use serde_json::json;
use support::AtxEmulator as Emulator;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

/// Deadline of every wait: the peer is a Python process on a shared, busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

struct Task {
    records: mpsc::Receiver<RecordBody>,
    seen: Vec<RecordBody>,
    requests: mpsc::Sender<LightRequest>,
    status: watch::Receiver<Status>,
    stop: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<()>,
}

impl Task {
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&RecordBody) -> bool) -> RecordBody {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = tokio::time::timeout_at(deadline, self.records.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no {what} within {DEADLINE:?}; status {:?}; seen {:#?}",
                        self.status.borrow(),
                        self.seen
                    )
                })
                .expect("the bus task keeps its records sender");
            self.seen.push(r.clone());
            if pred(&r) {
                return r;
            }
        }
    }

    async fn event(&mut self, kind: &str, source: &str) -> Event {
        match self
            .wait_for(
                kind,
                |r| matches!(r, RecordBody::Event(e) if e.kind == kind && e.source == source),
            )
            .await
        {
            RecordBody::Event(e) => e,
            _ => unreachable!(),
        }
    }

    async fn point(&mut self, point: &str, pred: impl Fn(&Telemetry) -> bool) -> Telemetry {
        match self
            .wait_for(
                point,
                |r| matches!(r, RecordBody::Telemetry(t) if *t.point == *point && pred(t)),
            )
            .await
        {
            RecordBody::Telemetry(t) => t,
            _ => unreachable!(),
        }
    }

    async fn light(&self, target: LightTarget, action: LightAction) -> Result<(), LightError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(LightRequest {
                target,
                action,
                reply,
            })
            .await
            .expect("the bus task takes requests");
        tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("a reply within the deadline")
            .expect("a reply, not a dropped sender")
    }
}

fn set(level_percent: f64) -> LightAction {
    LightAction::Set {
        level_percent,
        fade_s: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_task_against_the_atx_hat_emulator() {
    let mut emu = Emulator::spawn(&["--gear", "3"]);
    let cfg = DaliBus {
        name: "bus-e".into(),
        interface: DaliInterface::AtxHat {
            port: emu.port.clone().into(),
        },
        poll: Duration::from_millis(300),
        energy_poll: Duration::from_secs(600),
        groups: vec![DaliGroup {
            number: 0,
            members: vec![0, 1],
            power_on_level: Some(100.0),
            system_failure_level: Some(80.0),
            fade_time: Some(3),
            min_level: Some(10.0),
            max_level: None,
        }],
        rated_power_w: None,
    };
    let opts = BusOptions {
        reply_timeout: Duration::from_secs(5),
        backoff_min: Duration::from_millis(200),
        ..BusOptions::default()
    };
    let (rec_tx, records) = mpsc::channel(1024);
    let (requests, req_rx) = mpsc::channel(4);
    let metrics = Metrics::new("test");
    let (status_tx, status) = StatusTx::channel(
        &cfg.name,
        EquipmentKind::Dali,
        0,
        &metrics,
        Default::default(),
    );
    let (stop, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_bus(
        cfg,
        opts,
        rec_tx,
        metrics.clone(),
        req_rx,
        status_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut t = Task {
        records,
        seen: Vec::new(),
        requests,
        status,
        stop,
        handle,
    };

    for a in 0..3 {
        t.event("gear_found", &format!("bus-e/{a}")).await;
    }
    // Discovery programmed the configured group and fallback, reporting the drift (each gear is
    // programmed right after its gear_found, so the drift of 1 came before gear 2 was found).
    let drift = t
        .seen
        .iter()
        .find_map(|r| match r {
            RecordBody::Event(e) if e.kind == "dali_config_drift" && e.source == "bus-e/1" => {
                Some(e.clone())
            }
            _ => None,
        })
        .expect("a dali_config_drift event for bus-e/1");
    assert_eq!(drift.severity, Severity::Minor);
    assert_eq!(drift.data["drift"][0]["parameter"], json!("groups"));
    let g1 = emu.state(1);
    assert_eq!(g1["groups"], json!([0]));
    assert_eq!(
        g1["system_failure_level"],
        json!(percent_to_arc(80.0)),
        "{g1}"
    );
    assert_eq!(g1["fade_time"], json!(3));
    assert_eq!(emu.state(2)["groups"], json!([]));

    // Points published, banks included (the first cycle reads them).
    let level = t.point("bus-e/0/level", |_| true).await;
    assert_eq!((level.value, level.quality), (json!(100.0), Quality::Good));
    t.point("bus-e/0/energy_wh", |p| {
        p.value.as_f64().is_some_and(|e| e >= 1000.0)
    })
    .await;
    t.point("bus-e/2/present", |p| p.value == json!(true)).await;

    // light.set on one gear, verified by the task, seen in the emulator and the level point.
    let g = |address| LightTarget::Gear {
        bus: "bus-e".into(),
        address,
    };
    t.light(g(2), set(50.0)).await.unwrap();
    assert_eq!(emu.state(2)["level"], json!(percent_to_arc(50.0)));
    t.point("bus-e/2/level", |p| p.value == json!(50.53)).await;
    // Below the gear's MIN LEVEL the gear clamps (the emulator does not flag LIMIT ERROR): applied.
    t.light(g(0), set(5.0)).await.unwrap();
    let g0 = emu.state(0);
    assert_eq!(g0["min_level"], json!(percent_to_arc(10.0)));
    assert_eq!(g0["level"], g0["min_level"]);
    let e = t.light(g(7), set(50.0)).await.unwrap_err();
    assert!(
        e.is_rejection() && e.to_string().contains("args.target"),
        "{e}"
    );

    // A group, then everything (the bus is a plain executor: who decides is the rules core's).
    t.light(LightTarget::Group(0), set(10.0)).await.unwrap();
    assert_eq!(emu.state(0)["level"], json!(percent_to_arc(10.0)));
    assert_eq!(emu.state(1)["level"], json!(percent_to_arc(10.0)));
    t.light(LightTarget::All, set(100.0)).await.unwrap();
    for a in 0..3 {
        assert_eq!(emu.state(a)["level"], json!(254), "gear {a}");
    }
    t.point("bus-e/2/level", |p| p.value == json!(100.0)).await;

    // Faults from the emulator's control channel: one event per transition.
    emu.control("lamp_failure 1 on");
    // A cycle publishes its readings, then its transitions.
    t.point("bus-e/1/lamp_failure", |p| p.value == json!(true))
        .await;
    let e = t.event("lamp_failure", "bus-e/1").await;
    assert_eq!(
        (e.severity, e.data["active"].clone()),
        (Severity::Major, json!(true))
    );
    emu.control("remove 2");
    t.event("gear_missing", "bus-e/2").await;
    assert_eq!(
        t.seen
            .iter()
            .filter(|r| matches!(r, RecordBody::Event(e) if e.kind == "lamp_failure"))
            .count(),
        1
    );
    let text = metrics.render();
    assert!(
        text.contains("cabinetd_device_up{device=\"bus-e\",protocol=\"dali\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("cabinetd_dali_lamp_failures{bus=\"bus-e\"} 1"),
        "{text}"
    );

    // Issue 13 item 6: the bus power is cut and comes back. The gear sit at their SYSTEM
    // FAILURE LEVEL (80 % for group 0, the default 100 % for gear 2); each gets the level it
    // was last told as soon as it is found again, not at the next change or re-apply.
    emu.control("restore 2");
    emu.control("lamp_failure 1 off");
    t.event("gear_found", "bus-e/2").await;
    t.light(LightTarget::All, set(40.0)).await.unwrap();
    t.light(g(1), set(20.0)).await.unwrap();
    emu.control("bus_power off");
    t.event("gear_missing", "bus-e/1").await;
    assert_eq!(emu.state(1)["level"], json!(percent_to_arc(80.0)));
    let back = std::time::Instant::now();
    emu.control("bus_power on");
    let want = [
        percent_to_arc(40.0),
        percent_to_arc(20.0),
        percent_to_arc(40.0),
    ];
    let deadline = back + Duration::from_secs(20);
    loop {
        let levels: Vec<serde_json::Value> =
            (0..3).map(|a| emu.state(a)["level"].clone()).collect();
        if levels == want.map(|l| json!(l)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "levels after the bus power returned: {levels:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A few polls, not the 5-minute re-apply (poll 300 ms).
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "{:?}",
        back.elapsed()
    );

    t.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), t.handle)
        .await
        .expect("the bus task stops on shutdown")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hat_gone_is_one_device_down_and_back_is_device_up() {
    // The bus's port is a symlink to the emulator's pty, so a new emulator can take its place.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("ttyDALI");
    let emu = Emulator::spawn(&["--gear", "2"]);
    std::os::unix::fs::symlink(&emu.port, &link).unwrap();
    let cfg = DaliBus {
        name: "bus-r".into(),
        interface: DaliInterface::AtxHat { port: link.clone() },
        poll: Duration::from_millis(200),
        energy_poll: Duration::from_secs(600),
        groups: vec![],
        rated_power_w: None,
    };
    let opts = BusOptions {
        reply_timeout: Duration::from_secs(2),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        ..BusOptions::with_storage(dir.path())
    };
    let (rec_tx, records) = mpsc::channel(1024);
    let (requests, req_rx) = mpsc::channel(4);
    let metrics = Metrics::new("test");
    let (status_tx, status) = StatusTx::channel(
        &cfg.name,
        EquipmentKind::Dali,
        0,
        &metrics,
        Default::default(),
    );
    let (stop, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(run_bus(
        cfg,
        opts,
        rec_tx,
        metrics.clone(),
        req_rx,
        status_tx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let mut t = Task {
        records,
        seen: Vec::new(),
        requests,
        status,
        stop,
        handle,
    };
    t.point("bus-r/1/level", |_| true).await;

    // The HAT goes away: one device_down, the points turn bad, requests fail. The link goes
    // first: a freed /dev/pts/N is soon reused by some other process's pty.
    std::fs::remove_file(&link).unwrap();
    drop(emu);
    let down = t.event("device_down", "bus-r").await;
    assert_eq!(down.severity, Severity::Major);
    t.point("bus-r/1/level", |p| p.quality == Quality::Bad)
        .await;
    let st = t.status.borrow().clone();
    assert_eq!(st.up(), Some(false), "{st:?} {:#?}", t.seen);
    let e = t.light(LightTarget::All, set(20.0)).await.unwrap_err();
    assert!(!e.is_rejection(), "{e}");

    // It comes back (retries meanwhile fail to open the dead pty without new events).
    let emu = Emulator::spawn(&["--gear", "2"]);
    std::os::unix::fs::symlink(&emu.port, &link).unwrap();
    t.event("device_up", "bus-r").await;
    t.point("bus-r/1/level", |p| p.quality == Quality::Good)
        .await;
    let downs = t
        .seen
        .iter()
        .filter(|r| matches!(r, RecordBody::Event(e) if e.kind == "device_down"))
        .count();
    assert_eq!(downs, 1);
    // The supervisor's state survived the outage: no second gear_found.
    let found = t
        .seen
        .iter()
        .filter(|r| matches!(r, RecordBody::Event(e) if e.kind == "gear_found"))
        .count();
    assert_eq!(found, 2);
    let text = metrics.render();
    assert!(
        text.contains("cabinetd_device_up{device=\"bus-r\",protocol=\"dali\"} 1"),
        "{text}"
    );
    t.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), t.handle)
        .await
        .expect("the bus task stops on shutdown")
        .unwrap();
}
