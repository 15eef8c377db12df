//! The rules task against fake equipment (a Modbus device task and a DALI bus answering on
//! their channels), under paused time: readings in, actions out, commands, persistence, the
//! cancellation of a cleared rule's actions, reloads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::json;
use tokio::sync::oneshot;

use super::*;
use crate::config::RuleAction;
use crate::light::{LightAction, LightRequest, LightTarget};
use crate::readings::ReadingTap;
use crate::record::Quality;
use crate::rules::testutil;

const RULES: &str = r#"
[[rule]]
name = "hot"
when = "w/t > 10"
for = "5s"
  [[rule.then]]
  action = "point.write"
  args = { point = "tc/plan", value = 7 }
  [[rule.then]]
  action = "light.set"
  args = { target = "group:2", level_percent = 90 }

[[scene]]
name = "route"
  [[scene.action]]
  action = "point.write"
  args = { point = "tc/plan", value = 9 }
  [[scene.action]]
  action = "light.set"
  args = { target = "group:1", level_percent = 100 }
"#;

#[derive(Default)]
struct Seen {
    writes: Vec<(String, serde_json::Value)>,
    lights: Vec<(String, f64)>,
}

struct Rig {
    seen: Arc<Mutex<Seen>>,
    tap: ReadingTap,
    up: Arc<AtomicBool>,
    modes: Arc<Mutex<Vec<Mode>>>,
    events: mpsc::Receiver<RecordBody>,
    rules: Rules,
    running: watch::Sender<Arc<Config>>,
    metrics: Metrics,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Light requests wait for this before they are answered (a slow bus), when set.
    gate: Arc<tokio::sync::Semaphore>,
    /// Light requests fail (the bus is down) while set.
    fail: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
    dir: PathBuf,
}

fn cfg_in(dir: &std::path::Path, extra: &str) -> Config {
    let mut c = testutil::config(extra);
    c.storage.path = dir.to_path_buf();
    c
}

fn rig_in(dir: tempfile::TempDir, extra: &str, up: bool, wall: &str) -> Rig {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(1_000_000));
    let fail = Arc::new(AtomicBool::new(false));
    let cfg = cfg_in(dir.path(), extra);
    let (w_tx, mut w_rx) = mpsc::channel::<cabinetd_modbus::WriteRequest>(16);
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(req) = w_rx.recv().await {
                let v = crate::equipment::modbus::modbus_value(&req.value);
                seen.lock().unwrap().writes.push((req.point.clone(), v));
                let _ = req.reply.send(Ok(()));
            }
        });
    }
    let (l_tx, mut l_rx) = mpsc::channel::<LightRequest>(16);
    {
        let (seen, gate, fail) = (seen.clone(), gate.clone(), fail.clone());
        tokio::spawn(async move {
            while let Some(req) = l_rx.recv().await {
                let _permit = gate.acquire().await;
                if fail.load(Ordering::Relaxed) {
                    let e = crate::light::LightError::Failed("DALI bus bus-a is down".into());
                    let _ = req.reply.send(Err(e));
                    continue;
                }
                let LightAction::Set { level_percent, .. } = req.action;
                seen.lock()
                    .unwrap()
                    .lights
                    .push((crate::light::target_name(&req.target), level_percent));
                let _ = req.reply.send(Ok(()));
            }
        });
    }
    let mut controls = Controls::default();
    controls.writers.insert("tc".into(), w_tx);
    controls.lights.add(&cfg.dali[0], l_tx);
    let (_c_tx, c_rx) = watch::channel(controls);
    std::mem::forget(_c_tx);
    let tap = ReadingTap::default();
    let up_flag = Arc::new(AtomicBool::new(up));
    let modes = Arc::new(Mutex::new(Vec::new()));
    let (records, events) = mpsc::channel(1024);
    let (running, running_rx) = watch::channel(Arc::new(cfg));
    let metrics = Metrics::new("test");
    let deps = Deps {
        running: running_rx,
        controls: c_rx,
        readings: tap.subscribe("rules"),
        uplink_up: {
            let u = up_flag.clone();
            Arc::new(move || u.load(Ordering::Relaxed))
        },
        on_mode: {
            let m = modes.clone();
            Arc::new(move |mode| m.lock().unwrap().push(mode))
        },
        records,
        metrics: metrics.clone(),
        clock: WallClock::tokio_from(wall.parse().unwrap()),
        camera_clock: Default::default(),
    };
    let stop = CancellationToken::new();
    let (rules, fut) = start(deps, stop.clone());
    let task = tokio::spawn(fut);
    let path = dir.path().to_path_buf();
    Rig {
        seen,
        tap,
        up: up_flag,
        modes,
        events,
        rules,
        running,
        metrics,
        stop,
        task,
        gate,
        fail,
        _dir: dir,
        dir: path,
    }
}

fn rig(extra: &str) -> Rig {
    rig_in(
        tempfile::tempdir().unwrap(),
        extra,
        true,
        "2026-12-21T18:00:00Z",
    )
}

async fn settle() {
    // Paused time: lets every task run what it can (the tasks only wait on channels and
    // timers).
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}

impl Rig {
    fn writes(&self) -> Vec<(String, serde_json::Value)> {
        self.seen.lock().unwrap().writes.clone()
    }
    fn lights(&self) -> Vec<(String, f64)> {
        self.seen.lock().unwrap().lights.clone()
    }
    fn drain_events(&mut self) -> Vec<crate::record::Event> {
        let mut out = Vec::new();
        while let Ok(r) = self.events.try_recv() {
            if let RecordBody::Event(e) = r {
                out.push(e);
            }
        }
        out
    }
    async fn command(
        &self,
        id: &str,
        action: RuleAction,
    ) -> oneshot::Receiver<Result<(), CommandError>> {
        let (reply, rx) = oneshot::channel();
        self.rules
            .commands
            .send(Submitted {
                id: id.into(),
                action,
                reply,
            })
            .await
            .unwrap();
        rx
    }
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn kinds(events: &[crate::record::Event]) -> Vec<String> {
    events.iter().map(|e| e.kind.as_str().to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn a_reading_held_for_its_for_acts_once_and_counts_the_rule() {
    let mut r = rig(RULES);
    settle().await;
    // The programme's level (dusk 100 %, 18:00 UTC is before 22:00 Paris) goes out first.
    assert!(
        r.lights().contains(&("all".into(), 100.0)),
        "{:?}",
        r.lights()
    );
    assert!(r
        .metrics
        .render()
        .contains("cabinetd_rule_firings_total{rule=\"hot\"} 0"));
    r.tap.offer("w/t", &json!(12), Quality::Good);
    settle().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(r.writes().is_empty(), "not before `for`");
    // Readings keep coming every second (coalesced, unchanged): still one entry.
    for _ in 0..3 {
        r.tap.offer("w/t", &json!(12), Quality::Good);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(r.writes(), vec![("plan".to_string(), json!(7))]);
    assert!(
        r.lights().contains(&("group:2".into(), 90.0)),
        "{:?}",
        r.lights()
    );
    let ev = r.drain_events();
    let fired: Vec<&crate::record::Event> = ev
        .iter()
        .filter(|e| e.kind == EventKind::RuleFired)
        .collect();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].data, json!({"rule": "hot", "state": "entered"}));
    assert!(
        ev.iter().any(|e| e.kind == EventKind::ControlChanged
            && e.data["target"] == "group:2"
            && e.data["to"] == "rule:hot"),
        "{ev:#?}"
    );
    assert!(r
        .metrics
        .render()
        .contains("cabinetd_rule_firings_total{rule=\"hot\"} 1"));
    let view = r.rules.view.borrow().clone();
    assert_eq!(
        view.rules[0],
        RuleView {
            name: "hot".into(),
            state: "entered"
        }
    );
    assert_eq!(view.control["group:2"], "rule:hot");
    // Back below: cleared once, group 2 back to the programme's level; the point keeps 7.
    r.tap.offer("w/t", &json!(3), Quality::Good);
    settle().await;
    let ev = r.drain_events();
    assert_eq!(
        ev.iter()
            .filter(|e| e.kind == EventKind::RuleFired)
            .map(|e| e.data["state"].clone())
            .collect::<Vec<_>>(),
        vec![json!("cleared")]
    );
    assert_eq!(r.lights().last(), Some(&("group:2".to_string(), 100.0)));
    assert_eq!(r.writes().len(), 1);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_central_scene_with_hold_is_persisted_first_then_reverted_and_its_result_follows_its_actions(
) {
    let mut r = rig(RULES);
    settle().await;
    let rx = r
        .command(
            "c1",
            RuleAction::SceneRun {
                scene: "route".into(),
                hold_s: Some(30.0),
            },
        )
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    assert_eq!(r.writes(), vec![("plan".to_string(), json!(9))]);
    assert!(r.lights().contains(&("group:1".into(), 100.0)));
    // Persisted: the scene and its deadline.
    let st = state::read(&r.dir).unwrap().unwrap();
    assert_eq!(st.scenes[0].scene, "route");
    assert!(st.scenes[0].runners[0].until.is_some());
    let view = r.rules.view.borrow().clone();
    assert_eq!(view.scenes["route"], vec!["central".to_string()]);
    assert_eq!(view.holds[0].what, "scene:route");
    let ev = r.drain_events();
    assert!(
        ev.iter().any(|e| e.kind == EventKind::ControlChanged
            && e.data["target"] == "tc/plan"
            && e.data["to"] == "scene:route"),
        "{ev:#?}"
    );
    // Reverted after the hold: group 1 back to the programme; nobody else wants tc/plan.
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(r.lights().last(), Some(&("group:1".to_string(), 100.0)));
    let ev = r.drain_events();
    assert!(
        ev.iter().any(|e| e.kind == EventKind::ControlChanged
            && e.data["target"] == "group:1"
            && e.data["to"] == "programme"),
        "{ev:#?}"
    );
    assert!(state::read(&r.dir).unwrap().unwrap().scenes.is_empty());
    // An unknown scene is rejected naming the field; a release of what nobody holds succeeds.
    let rx = r
        .command(
            "c2",
            RuleAction::SceneRun {
                scene: "nope".into(),
                hold_s: None,
            },
        )
        .await;
    let e = rx.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, CommandError::Rejected(m) if m.contains("args.scene")),
        "{e:?}"
    );
    let rx = r
        .command(
            "c3",
            RuleAction::SceneRelease {
                scene: "route".into(),
            },
        )
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_in_the_middle_of_a_hold_keeps_the_scene_and_its_deadline() {
    let r = rig(RULES);
    settle().await;
    let rx = r
        .command(
            "c1",
            RuleAction::SceneRun {
                scene: "route".into(),
                hold_s: Some(60.0),
            },
        )
        .await;
    assert_eq!(rx.await.unwrap(), Ok(()));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let Rig {
        _dir: dir,
        stop,
        task,
        ..
    } = r;
    stop.cancel();
    task.await.unwrap();
    // The daemon comes back 20 s later (its wall clock says so; monotonic time starts anew).
    let mut r = rig_in(dir, RULES, true, "2026-12-21T18:00:40Z");
    settle().await;
    let view = r.rules.view.borrow().clone();
    assert_eq!(
        view.scenes.get("route"),
        Some(&vec!["central".to_string()]),
        "{view:?}"
    );
    // The scene's targets are sent again to the (new) equipment.
    assert!(r.writes().contains(&("plan".to_string(), json!(9))));
    r.drain_events();
    // Run at 18:00:00 for 60 s: it ends at 18:01:00, 20 s after the restart — not 60.
    let until = r.rules.view.borrow().holds[0].until.clone();
    assert!(until.starts_with("2026-12-21T18:01:00.0"), "{until}");
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert!(!r.rules.view.borrow().scenes.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(r.rules.view.borrow().scenes.is_empty());
    let ev = r.drain_events();
    assert!(
        ev.iter()
            .any(|e| e.kind == EventKind::ControlChanged && e.data["to"] == "programme"),
        "{}",
        kinds(&ev).join(",")
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rule_that_clears_cancels_its_queued_actions_and_failures_are_sent_again() {
    let r = rig(RULES);
    settle().await;
    // A slow bus: a central level on bus-a/0 waits on it, the rule's group 2 level queues
    // behind in the light lane.
    let held = r.gate.clone().acquire_many_owned(1_000_000).await.unwrap();
    let set = |target: LightTarget, level: f64| {
        RuleAction::Command(Action::LightSet {
            target,
            level_percent: level,
            fade_s: None,
            hold_s: None,
        })
    };
    let gear0 = LightTarget::Gear {
        bus: "bus-a".into(),
        address: 0,
    };
    let c1 = r.command("c1", set(gear0, 20.0)).await;
    settle().await;
    r.tap.offer("w/t", &json!(12), Quality::Good);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(r.writes(), vec![("plan".to_string(), json!(7))]);
    // The rule clears while its light action is queued: it is cancelled, never sent; group 2
    // goes back to the programme.
    r.tap.offer("w/t", &json!(3), Quality::Good);
    settle().await;
    drop(held);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c1.await.unwrap(), Ok(()));
    let lights = r.lights();
    assert!(!lights.contains(&("group:2".into(), 90.0)), "{lights:?}");
    assert_eq!(
        lights.last(),
        Some(&("group:2".to_string(), 100.0)),
        "{lights:?}"
    );

    // A bus that is down: the command fails, and the level is sent again once the bus answers.
    r.fail.store(true, Ordering::Relaxed);
    let gear1 = LightTarget::Gear {
        bus: "bus-a".into(),
        address: 1,
    };
    let c2 = r.command("c2", set(gear1, 30.0)).await;
    let e = c2.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, CommandError::Failed(m) if m.contains("down")),
        "{e:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.fail.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        r.lights().last(),
        Some(&("bus-a/1".to_string(), 30.0)),
        "{:?}",
        r.lights()
    );
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_mode_turns_autonomous_only_after_autonomous_after_and_a_reload_keeps_it() {
    let extra = format!("[uplink]\nautonomous_after = \"60s\"\n{}", RULES);
    let mut r = rig(&extra);
    settle().await;
    r.up.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        r.rules.view.borrow().mode,
        "connected",
        "a blip is not a crisis"
    );
    tokio::time::sleep(Duration::from_secs(32)).await;
    assert_eq!(r.rules.view.borrow().mode, "autonomous");
    assert_eq!(
        *r.modes.lock().unwrap(),
        vec![Mode::Connected, Mode::Autonomous]
    );
    assert!(r
        .metrics
        .render()
        .contains("cabinetd_mode{mode=\"autonomous\"} 1"));
    let ev = r.drain_events();
    let mc: Vec<_> = ev
        .iter()
        .filter(|e| e.kind == EventKind::ModeChanged)
        .collect();
    assert_eq!(mc.len(), 1);
    assert_eq!(mc[0].data, json!({"from": "connected", "to": "autonomous"}));
    // Enter the rule, then reload with a change elsewhere: mode, rule and its claim carry over
    // (no second mode_changed, no second rule_fired).
    r.tap.offer("w/t", &json!(12), Quality::Good);
    tokio::time::sleep(Duration::from_secs(6)).await;
    r.drain_events();
    let mut c = cfg_in(&r.dir, &extra);
    c.dali[0].poll = Duration::from_secs(5);
    r.running.send_replace(Arc::new(c));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ev = r.drain_events();
    assert!(
        !ev.iter()
            .any(|e| e.kind == EventKind::ModeChanged || e.kind == EventKind::RuleFired),
        "{}",
        kinds(&ev).join(",")
    );
    let view = r.rules.view.borrow().clone();
    assert_eq!(view.mode, "autonomous");
    assert_eq!(view.rules[0].state, "entered");
    assert_eq!(view.control["group:2"], "rule:hot");
    // Back: connected at once.
    r.up.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.rules.view.borrow().mode, "connected");
    r.stop().await;
}
