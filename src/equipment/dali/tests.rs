//! `run_bus` on the simulated line, driven through its channels with a paused clock.

use std::time::Duration;

use cabinetd_dali::percent_to_arc;
use cabinetd_dali::sim::{SimBus, SimGear, SimHandle};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::*;
use crate::config::{DaliGroup, DaliInterface};
use crate::equipment::Status;
use crate::light::LightAction;
use crate::record::{Event, Quality, Severity, Telemetry};
use tokio::time::Instant;

/// Virtual-time deadline of every wait (the paused clock jumps over idle periods).
const DEADLINE: Duration = Duration::from_secs(600);

fn group(number: u8, members: &[u8]) -> DaliGroup {
    DaliGroup {
        number,
        members: members.to_vec(),
        power_on_level: None,
        system_failure_level: None,
        fade_time: None,
        min_level: None,
        max_level: None,
    }
}

fn bus_cfg(interface: DaliInterface, groups: Vec<DaliGroup>) -> DaliBus {
    DaliBus {
        name: "bus-a".into(),
        interface,
        poll: Duration::from_secs(1),
        energy_poll: Duration::from_secs(60),
        groups,
        rated_power_w: None,
    }
}

fn default_groups() -> Vec<DaliGroup> {
    let mut g0 = group(0, &[0, 1]);
    g0.power_on_level = Some(100.0);
    g0.system_failure_level = Some(80.0);
    g0.fade_time = Some(4);
    let mut g1 = group(1, &[2]);
    g1.min_level = Some(10.0);
    vec![g0, g1]
}

struct Harness {
    records: mpsc::Receiver<RecordBody>,
    seen: Vec<RecordBody>,
    requests: mpsc::Sender<LightRequest>,
    status: watch::Receiver<Status>,
    stop: oneshot::Sender<()>,
    metrics: Metrics,
    task: JoinHandle<()>,
}

fn start(cfg: DaliBus, opts: BusOptions) -> Harness {
    let (rec_tx, records) = mpsc::channel(1024);
    let (requests, req_rx) = mpsc::channel(8);
    let metrics = Metrics::new("test");
    let beats = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (status_tx, status) = StatusTx::channel("bus-a", EquipmentKind::Dali, 0, &metrics, beats);
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_bus(
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
    Harness {
        records,
        seen: Vec::new(),
        requests,
        status,
        stop,
        metrics,
        task,
    }
}

fn start_sim(gear: u8, groups: Vec<DaliGroup>) -> (Harness, SimHandle) {
    let (sim, handle) = SimBus::with_gear(gear, 0);
    let opts = BusOptions {
        sim: Some(sim),
        ..BusOptions::default()
    };
    let cfg = bus_cfg(DaliInterface::Sim { luminaires: gear }, groups);
    (start(cfg, opts), handle)
}

fn gear(bus: &str, address: u8) -> LightTarget {
    LightTarget::Gear {
        bus: bus.into(),
        address,
    }
}

fn set(level_percent: f64) -> LightAction {
    LightAction::Set {
        level_percent,
        fade_s: None,
    }
}

impl Harness {
    /// Waits (virtual time) for a record matching `pred` among those not yet seen; returns it.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&RecordBody) -> bool) -> RecordBody {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = tokio::time::timeout_at(deadline, self.records.recv())
                .await
                .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}; seen {:#?}", self.seen))
                .expect("bus task dropped its records sender");
            self.seen.push(r.clone());
            if pred(&r) {
                return r;
            }
        }
    }

    async fn point(&mut self, point: &str, pred: impl Fn(&Telemetry) -> bool) -> Telemetry {
        let r = self
            .wait_for(
                point,
                |r| matches!(r, RecordBody::Telemetry(t) if *t.point == *point && pred(t)),
            )
            .await;
        match r {
            RecordBody::Telemetry(t) => t,
            _ => unreachable!(),
        }
    }

    async fn event(&mut self, kind: &str, source: &str) -> Event {
        let r = self
            .wait_for(
                kind,
                |r| matches!(r, RecordBody::Event(e) if e.kind == kind && e.source == source),
            )
            .await;
        match r {
            RecordBody::Event(e) => e,
            _ => unreachable!(),
        }
    }

    fn events(&self, kind: &str) -> Vec<&Event> {
        self.seen
            .iter()
            .filter_map(|r| match r {
                RecordBody::Event(e) if e.kind == kind => Some(e),
                _ => None,
            })
            .collect()
    }

    /// Waits until `n` more poll cycles have completed.
    async fn polls(&mut self, n: usize) {
        for _ in 0..n {
            let before = self.status.borrow().last_poll;
            let deadline = Instant::now() + DEADLINE;
            tokio::time::timeout_at(
                deadline,
                self.status
                    .wait_for(|s| s.last_poll.is_some() && s.last_poll != before),
            )
            .await
            .expect("a poll cycle within the deadline")
            .expect("status sender alive");
        }
        while let Ok(r) = self.records.try_recv() {
            self.seen.push(r);
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
            .expect("bus task takes requests");
        tokio::time::timeout(DEADLINE, rx)
            .await
            .expect("a reply within the deadline")
            .expect("a reply, not a dropped sender")
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("bus task stops on shutdown")
            .unwrap();
    }
}

#[test]
fn resolving_targets() {
    let known = BTreeSet::from([0, 1, 2]);
    let groups = Groups::from([(3, vec![0, 1])]);
    let r = |t: LightTarget| resolve_target(&t, "bus-a", &known, &groups);
    assert_eq!(r(LightTarget::All), Ok(Some(Scope::All)));
    assert_eq!(r(LightTarget::Group(3)), Ok(Some(Scope::Group(3))));
    // A group this bus does not have: nothing to do, not an error.
    assert_eq!(r(LightTarget::Group(4)), Ok(None));
    assert_eq!(r(gear("bus-a", 2)), Ok(Some(Scope::Gear(2))));
    let e = r(gear("bus-a", 9)).unwrap_err();
    assert!(e.is_rejection());
    assert!(
        e.to_string().contains("args.target") && e.to_string().contains("bus-a/9"),
        "{e}"
    );
    assert!(r(gear("bus-b", 1))
        .unwrap_err()
        .to_string()
        .contains("not on DALI bus bus-a"));
    assert_eq!(fade_code(0.0), 0);
    assert_eq!(fade_code(2.0), 4);
    let known = BTreeMap::from([(0, 4), (1, 4)]);
    assert_eq!(fade_to_program(Some(4), &[0, 1], &known), None);
    assert_eq!(fade_to_program(Some(4), &[0, 1, 2], &known), Some(4));
    assert_eq!(fade_to_program(Some(2), &[0], &known), Some(2));
    assert_eq!(fade_to_program(Some(2), &[], &known), Some(2));
    assert_eq!(fade_to_program(None, &[5], &known), None);
}

#[test]
fn fallback_is_taken_field_by_field_from_the_first_group() {
    let mut g0 = group(0, &[0, 1]);
    g0.system_failure_level = Some(80.0);
    g0.min_level = Some(0.0);
    let mut g1 = group(1, &[1]);
    g1.system_failure_level = Some(100.0);
    g1.power_on_level = Some(100.0);
    let cfg = bus_cfg(
        DaliInterface::Sim { luminaires: 2 },
        vec![g0, g1, group(2, &[5])],
    );
    let f = fallbacks(&cfg);
    assert_eq!(f[&1].system_failure_level, Some(percent_to_arc(80.0)));
    assert_eq!(f[&1].power_on_level, Some(254));
    assert_eq!(f[&0].power_on_level, None);
    assert_eq!(f[&0].min_level, Some(1), "MIN LEVEL 0 does not exist");
    assert!(!f.contains_key(&5), "nothing to program");
}

#[tokio::test(start_paused = true)]
async fn publishes_points_and_programs_groups_and_fallback() {
    let (mut h, sim) = start_sim(3, default_groups());
    let start = Instant::now();
    for a in 0..3 {
        h.event("gear_found", &format!("bus-a/{a}")).await;
    }
    // Records of one cycle come gear by gear in address order, points in `points::POINTS` order.
    h.point("bus-a/0/operating_hours", |_| true).await;
    h.point("bus-a/1/lamp_failure", |t| t.value == json!(false))
        .await;
    h.point("bus-a/1/gear_failure", |t| t.value == json!(false))
        .await;
    h.point("bus-a/1/present", |t| t.value == json!(true)).await;
    h.point("bus-a/1/power_w", |t| t.value == json!(100.0))
        .await;
    let t = h.point("bus-a/2/level", |_| true).await;
    assert_eq!((t.value.clone(), t.quality), (json!(100.0), Quality::Good));
    let first_energy = h
        .point("bus-a/2/energy_wh", |t| {
            t.value.as_f64().is_some_and(|e| e >= 1000.0)
        })
        .await
        .value
        .as_f64()
        .unwrap();
    let t0 = Instant::now();
    assert!(t0 - start < Duration::from_secs(5), "{:?}", t0 - start);

    // Groups and fallback programmed and verified.
    let g0 = sim.gear(0).unwrap();
    assert_eq!(g0.groups, 1);
    assert_eq!(g0.system_failure_level, percent_to_arc(80.0));
    assert_eq!((g0.power_on_level, g0.fade_time), (254, 4));
    let g2 = sim.gear(2).unwrap();
    assert_eq!((g2.groups, g2.min_level), (2, percent_to_arc(10.0)));
    // One drift event per gear that needed it, with what was found.
    let drift = h.events("dali_config_drift");
    assert_eq!(drift.len(), 3, "{drift:#?}");
    let d0 = drift.iter().find(|e| e.source == "bus-a/0").unwrap();
    assert_eq!(d0.severity, Severity::Minor);
    assert_eq!(
        d0.data["drift"][0],
        json!({"parameter": "groups", "wanted": 1, "found": 0})
    );

    h.polls(2).await;
    let st = h.status.borrow().clone();
    assert_eq!((st.up(), st.points), (Some(true), 3));
    assert!(h
        .metrics
        .render()
        .contains("cabinetd_dali_lamp_failures{bus=\"bus-a\"} 0"));
    let m = h.metrics.render();
    assert!(
        m.contains("cabinetd_device_up{device=\"bus-a\",protocol=\"dali\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("cabinetd_dali_gear_present{bus=\"bus-a\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("cabinetd_poll_duration_seconds_count{device=\"bus-a\"}"),
        "{m}"
    );
    let energy = h
        .metrics
        .energy_wh_total
        .with_label_values(&["bus-a"])
        .get();
    // The first readings are the counter's baseline: it counts from the daemon's start.
    assert_eq!(energy, 0.0);
    // Unchanged readings are not published again before the heartbeat.
    let levels = h
        .seen
        .iter()
        .filter(|r| matches!(r, RecordBody::Telemetry(t) if &*t.point == "bus-a/0/level"))
        .count();
    assert_eq!(levels, 1);
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // No drift the second time round: nothing changed.
    assert_eq!(h.events("dali_config_drift").len(), 3);
    // The next energy poll reads what the gear metered since: the counter grows by as much.
    let later = h
        .point("bus-a/2/energy_wh", |t| {
            t.value.as_f64().is_some_and(|e| e > first_energy)
        })
        .await
        .value
        .as_f64()
        .unwrap();
    let energy = h
        .metrics
        .energy_wh_total
        .with_label_values(&["bus-a"])
        .get();
    assert!(
        energy >= later - first_energy,
        "{energy} < {later} - {first_energy}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn set_one_gear_verifies_and_programs_a_fade_only_when_it_changes() {
    let (mut h, sim) = start_sim(3, default_groups());
    h.point("bus-a/1/level", |_| true).await;
    h.light(gear("bus-a", 1), set(30.0)).await.unwrap();
    h.light(gear("bus-a", 1), set(50.0)).await.unwrap();
    assert_eq!(sim.gear(1).unwrap().level, percent_to_arc(50.0));
    let t = h
        .point("bus-a/1/level", |t| {
            t.value.as_f64().is_some_and(|v| (v - 50.0).abs() < 1.0)
        })
        .await;
    assert_eq!(t.quality, Quality::Good);
    assert_eq!(sim.gear(0).unwrap().level, 254, "others untouched");

    // A fade is programmed into the gear when asked.
    let fade = LightAction::Set {
        level_percent: 20.0,
        fade_s: Some(1.0),
    };
    h.light(gear("bus-a", 0), fade).await.unwrap();
    assert_eq!(sim.gear(0).unwrap().fade_time, 2);
    assert_eq!(sim.gear(0).unwrap().level, percent_to_arc(20.0));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn group_and_broadcast() {
    let (mut h, sim) = start_sim(3, default_groups());
    h.point("bus-a/2/level", |_| true).await;
    h.light(LightTarget::Group(0), set(10.0)).await.unwrap();
    let arc10 = percent_to_arc(10.0);
    let levels =
        |sim: &SimHandle| -> Vec<u8> { (0..3).map(|a| sim.gear(a).unwrap().level).collect() };
    assert_eq!(levels(&sim), vec![arc10, arc10, 254]);

    // A group this bus does not have: Ok, and the line is not touched (the poll the group set
    // triggers is over first, and the clock stands still meanwhile).
    h.polls(1).await;
    let before = sim.transactions();
    h.light(LightTarget::Group(9), set(0.0)).await.unwrap();
    assert_eq!(sim.transactions(), before);

    h.light(LightTarget::All, set(0.0)).await.unwrap();
    assert_eq!(levels(&sim), vec![0, 0, 0]);
    h.point("bus-a/2/level", |t| t.value == json!(0.0)).await;
    h.stop().await;
}

/// Issue 13 item 6: after a bus power loss the gear sat at their system failure level until
/// the 5-minute re-apply, and a gear under a central level without hold stayed there for good.
/// The bus now sends each gear that comes back the level it was last told, at once.
#[tokio::test(start_paused = true)]
async fn gear_back_after_a_bus_power_loss_get_their_level_at_once() {
    let mut failure = group(0, &[0, 1]);
    failure.system_failure_level = Some(80.0);
    let (mut h, sim) = start_sim(3, vec![failure]);
    h.point("bus-a/2/level", |_| true).await;
    h.polls(1).await;
    h.light(LightTarget::All, set(40.0)).await.unwrap();
    h.light(gear("bus-a", 1), set(20.0)).await.unwrap();
    let (arc40, arc20) = (percent_to_arc(40.0), percent_to_arc(20.0));
    sim.set_bus_power(false);
    h.event("gear_missing", "bus-a/1").await;
    assert_eq!(sim.gear(1).unwrap().level, percent_to_arc(80.0));
    let t0 = Instant::now();
    let found_before = h.events("gear_found").len();
    sim.set_bus_power(true);
    h.event("gear_found", "bus-a/1").await;
    while h.events("gear_found").len() < found_before + 3 {
        h.polls(1).await;
    }
    // Within the poll that found them, not minutes later.
    assert!(t0.elapsed() <= h_rescan(), "{:?}", t0.elapsed());
    let levels: Vec<u8> = (0..3).map(|a| sim.gear(a).unwrap().level).collect();
    assert_eq!(levels, vec![arc40, arc20, arc40]);
    h.stop().await;
}

/// The longest a gear waits to be found again: a poll cycle (watched gear are polled), at most
/// the rescan period of these tests' bus (`energy_poll` 60 s).
fn h_rescan() -> Duration {
    Duration::from_secs(61)
}

#[tokio::test(start_paused = true)]
async fn bad_targets_are_rejected_naming_the_field() {
    let (mut h, _sim) = start_sim(2, vec![]);
    h.point("bus-a/1/level", |_| true).await;
    let e = h.light(gear("bus-a", 40), set(50.0)).await.unwrap_err();
    assert!(
        e.is_rejection() && e.to_string().contains("args.target"),
        "{e}"
    );
    let e = h.light(gear("bus-a", 1), set(150.0)).await.unwrap_err();
    assert!(
        e.is_rejection() && e.to_string().contains("args.level_percent"),
        "{e}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lamp_failure_is_one_event_per_transition() {
    let (mut h, sim) = start_sim(3, vec![]);
    h.point("bus-a/1/level", |_| true).await;
    assert!(sim.set_lamp_failure(1, true));
    let t0 = Instant::now();
    // A cycle publishes its readings, then its transitions.
    h.point("bus-a/1/lamp_failure", |t| t.value == json!(true))
        .await;
    let e = h.event("lamp_failure", "bus-a/1").await;
    assert!(t0.elapsed() <= Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(e.severity, Severity::Major);
    assert_eq!(
        e.data,
        json!({"bus": "bus-a", "address": 1, "active": true})
    );
    h.polls(4).await;
    assert_eq!(h.events("lamp_failure").len(), 1);
    assert!(h
        .metrics
        .render()
        .contains("cabinetd_dali_lamp_failures{bus=\"bus-a\"} 1"));
    // Setting a failed lamp: applied but not reached, so failed (not rejected).
    let err = h.light(gear("bus-a", 1), set(50.0)).await.unwrap_err();
    assert!(
        !err.is_rejection() && err.to_string().contains("lamp failure"),
        "{err}"
    );

    sim.set_lamp_failure(1, false);
    let e = h.event("lamp_failure", "bus-a/1").await;
    assert_eq!(
        (e.severity, e.data["active"].clone()),
        (Severity::Info, json!(false))
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn missing_gear_and_a_configured_member_appearing_later() {
    // Member 3 of group 1 is configured but not on the line yet.
    let (mut h, sim) = start_sim(3, vec![group(0, &[0, 1, 2]), group(1, &[3])]);
    let e = h.event("gear_missing", "bus-a/3").await;
    assert_eq!(e.severity, Severity::Major);
    sim.set_connected(2, false);
    let t0 = Instant::now();
    h.point("bus-a/2/level", |t| t.quality == Quality::Bad)
        .await;
    h.point("bus-a/2/present", |t| t.value == json!(false))
        .await;
    h.event("gear_missing", "bus-a/2").await;
    assert!(t0.elapsed() <= Duration::from_secs(1), "{:?}", t0.elapsed());

    sim.add_gear(SimGear::new(Some(3), 77));
    h.event("gear_found", "bus-a/3").await;
    h.polls(1).await;
    assert_eq!(
        sim.gear(3).unwrap().groups,
        1 << 1,
        "programmed after gear_found"
    );
    assert_eq!(h.events("gear_missing").len(), 2);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_port_is_one_device_down_and_requests_fail() {
    let cfg = bus_cfg(
        DaliInterface::AtxHat {
            port: "/nonexistent/dali-tty".into(),
        },
        vec![],
    );
    let mut h = start(cfg, BusOptions::default());
    let e = h
        .wait_for(
            "device_down",
            |r| matches!(r, RecordBody::Event(e) if e.kind == "device_down"),
        )
        .await;
    let RecordBody::Event(e) = e else {
        unreachable!()
    };
    assert_eq!((e.severity, e.source.as_str()), (Severity::Major, "bus-a"));
    assert!(e.message.contains("/nonexistent/dali-tty"), "{}", e.message);
    // Several retries later, still one event.
    tokio::time::sleep(Duration::from_secs(200)).await;
    while let Ok(r) = h.records.try_recv() {
        h.seen.push(r);
    }
    assert_eq!(h.events("device_down").len(), 1);
    assert_eq!(h.status.borrow().up(), Some(false));
    let err = h.light(LightTarget::All, set(10.0)).await.unwrap_err();
    assert!(
        !err.is_rejection() && err.to_string().contains("down"),
        "{err}"
    );
    assert!(h
        .metrics
        .render()
        .contains("cabinetd_device_up{device=\"bus-a\",protocol=\"dali\"} 0"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn bus_held_by_the_cli_is_down_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let cli = try_lock(dir.path(), "bus-a").unwrap();
    let (sim, _handle) = SimBus::with_gear(1, 0);
    let opts = BusOptions {
        sim: Some(sim),
        ..BusOptions::with_storage(dir.path())
    };
    let mut h = start(bus_cfg(DaliInterface::Sim { luminaires: 1 }, vec![]), opts);
    let e = h.event("device_down", "bus-a").await;
    assert!(e.message.contains("in use"), "{}", e.message);
    drop(cli);
    h.event("device_up", "bus-a").await;
    h.point("bus-a/0/level", |_| true).await;
    // Now the daemon holds it: the CLI is refused.
    assert!(matches!(
        try_lock(dir.path(), "bus-a"),
        Err(LockError::Busy { .. })
    ));
    h.stop().await;
    try_lock(dir.path(), "bus-a").expect("released when the task stops");
}

fn sim_config(dir: &std::path::Path) -> crate::config::Config {
    let text = format!(
        "[cabinet]\nid = \"c1\"\nlatitude = 47.0\nlongitude = 5.0\n\
         [storage]\npath = \"{}\"\n\
         [uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [security]\nrequire_signed = false\n\
         [[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 3\n",
        dir.display()
    );
    crate::config::load_sources(&[crate::config::Source {
        name: "test.toml".into(),
        text,
    }])
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn commission_cli_readdresses_and_refuses_a_held_bus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path());
    let mut out = Vec::new();
    commission_cli(&cfg, "bus-a", true, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("searching: 0 found, step  1"), "{text}");
    assert_eq!(text.matches("→ short address").count(), 3, "{text}");
    assert!(text.contains("3 gear addressed on bus-a"), "{text}");
    // The table names GTIN and serial from bank 0.
    assert!(text.contains("1234567654321"), "{text}");

    let mut out = Vec::new();
    commission_cli(&cfg, "bus-a", false, &mut out)
        .await
        .unwrap();
    assert!(String::from_utf8(out)
        .unwrap()
        .contains("no gear to address"));

    let err = commission_cli(&cfg, "bus-z", false, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("configured: bus-a"), "{err}");

    let _daemon = try_lock(dir.path(), "bus-a").unwrap();
    let err = commission_cli(&cfg, "bus-a", false, &mut Vec::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("stop cabinetd first"), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}
