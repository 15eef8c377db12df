//! The rack: status transitions, whole-generation reloads with rollback, one owner per bus.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::*;
use crate::config::{load_sources, Source};
use crate::event::EventKind;

fn config(storage: &std::path::Path, extra: &str) -> Config {
    let text = format!(
        "[cabinet]\nid = \"c1\"\nlatitude = 47.0\nlongitude = 5.0\n\
         [storage]\npath = \"{}\"\n\
         [uplink]\nbroker = \"mqtt://127.0.0.1:1883\"\n\
         [security]\nrequire_signed = false\n{extra}",
        storage.display()
    );
    load_sources(&[Source {
        name: "test.toml".into(),
        text,
    }])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn simulator(name: &str, port: u16) -> String {
    format!("[[simulator]]\nname = \"{name}\"\nkind = \"energy-meter\"\nlisten = \"127.0.0.1:{port}\"\n")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Harness {
    rack: Rack,
    records: mpsc::Receiver<RecordBody>,
    metrics: Metrics,
    root: CancellationToken,
}

fn rack(storage: &std::path::Path) -> Harness {
    let (tx, records) = mpsc::channel(1024);
    let metrics = Metrics::new("test");
    let root = CancellationToken::new();
    let ctx = Context {
        records: tx,
        metrics: metrics.clone(),
        storage: storage.to_path_buf(),
        beats: Arc::new(AtomicU64::new(0)),
        onvif: camera::Shared::default(),
        readings: Default::default(),
    };
    Harness {
        rack: Rack::new(ctx, root.child_token()),
        records,
        metrics,
        root,
    }
}

impl Harness {
    /// Waits (virtual or real time, bounded) until `name`'s status satisfies `pred`.
    async fn status(&self, name: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((_, st)) = self
                .rack
                .board()
                .snapshot()
                .into_iter()
                .find(|(n, _)| n == name)
            {
                if pred(&st) {
                    return st;
                }
            }
            assert!(Instant::now() < deadline, "{name} never reached the status");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(r) = self.records.try_recv() {
            if let RecordBody::Event(e) = r {
                out.push(e);
            }
        }
        out
    }
}

#[test]
fn status_transitions_raise_one_event_each() {
    let metrics = Metrics::new("test");
    let beats = Arc::new(AtomicU64::new(0));
    let (tx, rx) = StatusTx::channel("bus-a", EquipmentKind::Dali, 0, &metrics, beats.clone());
    assert_eq!(rx.borrow().health, Health::Starting);
    assert!(tx.up().is_none(), "no device_up after a start");
    let down = tx.down("port gone").expect("a transition");
    assert_eq!(down.kind, EventKind::DeviceDown);
    assert!(tx.down("still gone").is_none(), "not twice");
    assert_eq!(
        rx.borrow().health,
        Health::Down {
            error: "still gone".into()
        }
    );
    assert_eq!(tx.up().expect("after a down").kind, EventKind::DeviceUp);
    assert_eq!(rx.borrow().last_error, None);
    assert_eq!(beats.load(Ordering::Relaxed), 4);
    assert!(metrics
        .render()
        .contains("cabinetd_device_up{device=\"bus-a\",protocol=\"dali\"} 1"));
    // Starting → down also reports (a device never reached).
    let (tx, _rx) = StatusTx::channel("m", EquipmentKind::Modbus, 1, &metrics, beats);
    assert!(tx.down("refused").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_are_supervised_and_simulators_serve() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pw = dir.path().join("cam-pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    // Nothing listens on the camera's port: it is reported offline, once.
    let cam_port = free_port();
    let cfg = config(
        dir.path(),
        &format!(
            "{}[[camera]]\nname = \"cam-1\"\naddress = \"http://127.0.0.1:{cam_port}/onvif/device_service\"\nusername = \"u\"\npassword_file = \"{}\"\npoll = \"100ms\"\n",
            simulator("meter-sim", port),
            pw.display()
        ),
    );
    let mut h = rack(dir.path());
    h.rack.start(&cfg).await.unwrap();
    let cam = h.status("cam-1", |s| s.up() == Some(false)).await;
    assert_eq!(cam.kind, EquipmentKind::Onvif);
    assert!(h.rack.controls().cameras.contains_key("cam-1"));
    let offline: Vec<Event> = h
        .events()
        .into_iter()
        .filter(|e| e.kind == EventKind::CameraOffline)
        .collect();
    assert_eq!(offline.len(), 1, "{offline:?}");
    // A command to an offline camera fails (and names it), within the command bound.
    let r = h.rack.controls().cameras["cam-1"].goto_preset("1").await;
    assert!(
        matches!(&r, Err(camera::CameraError::Failed(m)) if m.starts_with("cam-1: ")),
        "{r:?}"
    );
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the simulator listens");
    let handle = h.rack.controls().cameras["cam-1"].clone();
    h.rack.stop(Instant::now() + RELOAD_STOP).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "the simulator's port is released at the stop"
    );
    let r = handle.reboot().await;
    assert!(
        matches!(&r, Err(camera::CameraError::Failed(m)) if m.contains("stopped")),
        "a handle kept past its generation does nothing: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_whose_password_file_vanished_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        &format!(
            "[[camera]]\nname = \"cam-1\"\naddress = \"http://127.0.0.1:9/onvif/device_service\"\nusername = \"u\"\npassword_file = \"{}\"\n",
            dir.path().join("gone").display()
        ),
    );
    let mut h = rack(dir.path());
    let e = h.rack.start(&cfg).await.unwrap_err();
    assert!(
        matches!(&e, EquipmentError::Secret { entry, .. } if entry == "camera cam-1"),
        "{e}"
    );
    assert!(e.to_string().contains("password_file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_rolls_back_and_a_failed_restore_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (good, taken) = (
        free_port(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let taken_port = taken.local_addr().unwrap().port();
    let a = config(dir.path(), &simulator("sim-a", good));
    let b = config(dir.path(), &simulator("sim-b", taken_port));
    let mut h = rack(dir.path());
    h.rack.start(&a).await.unwrap();
    let e = h.rack.reload(&a, &b).await.unwrap_err();
    assert!(matches!(e, ReloadError::RolledBack { .. }), "{e}");
    assert!(e.rolled_back());
    assert!(e.to_string().contains("sim-b"), "{e}");
    tokio::net::TcpStream::connect(("127.0.0.1", good))
        .await
        .expect("the previous equipment runs again");

    // Neither starts: said loudly, nothing runs.
    h.rack.stop(Instant::now() + RELOAD_STOP).await;
    let _hold_a = std::net::TcpListener::bind(("127.0.0.1", good)).unwrap();
    let e = h.rack.reload(&a, &b).await.unwrap_err();
    assert!(matches!(e, ReloadError::RestoreFailed { .. }), "{e}");
    assert!(e.to_string().contains("no equipment runs"), "{e}");
    assert!(h.rack.controls().writers.is_empty());
    h.root.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_sections_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a = config(dir.path(), "");
    let mut b = a.clone();
    b.cabinet.id = "c2".into();
    let mut h = rack(dir.path());
    h.rack.start(&a).await.unwrap();
    let e = h.rack.reload(&a, &b).await.unwrap_err();
    assert_eq!(
        e.messages(),
        ["[cabinet] changed: it takes effect only after a restart"]
    );
}

/// Regression (issue 8): a reload detached an old task that did not stop within 3 s, so it could
/// still own the DALI bus (its lock, its port) while the new generation opened it. A task that
/// ignores its cancellation and holds the bus lock stands for such a task: the new bus must find
/// the lock free, because the old generation is aborted and awaited before the new one starts.
#[tokio::test(start_paused = true)]
async fn a_reload_never_lets_two_tasks_own_one_bus() {
    let dir = tempfile::tempdir().unwrap();
    let a = config(dir.path(), "");
    let b = config(
        dir.path(),
        "[[dali]]\nname = \"bus-a\"\ninterface = \"sim\"\nluminaires = 2\n",
    );
    let mut h = rack(dir.path());
    h.rack.start(&a).await.unwrap();
    let lock = dali::try_lock(dir.path(), "bus-a").unwrap();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    h.rack
        .current
        .as_mut()
        .unwrap()
        .tasks
        .spawn("stubborn owner of bus-a", async move {
            let _lock = lock;
            let _ = held_tx.send(());
            std::future::pending::<()>().await
        });
    held_rx.await.unwrap();
    let started = Instant::now();
    h.rack.reload(&a, &b).await.unwrap();
    assert_eq!(
        Instant::now() - started,
        RELOAD_STOP,
        "the stubborn task was waited for, then aborted"
    );
    let st = h.status("bus-a", |s| s.up() == Some(true)).await;
    assert_eq!(st.kind, EquipmentKind::Dali);
    let events = h.events();
    assert!(
        !events.iter().any(|e| e.kind == EventKind::DeviceDown),
        "the new bus found its lock free: {events:#?}"
    );
    // And the rack holds it now: nobody else may take it.
    assert!(dali::try_lock(dir.path(), "bus-a").is_err());
    h.rack.stop(Instant::now() + RELOAD_STOP).await;
    dali::try_lock(dir.path(), "bus-a").expect("released at the stop");
    assert!(h.metrics.render().contains("protocol=\"dali\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modbus_device_polls_the_simulated_meter_through_the_rack() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        &format!(
            "{}[[modbus]]\nname = \"meter\"\naddress = \"127.0.0.1:{port}\"\npoll = \"100ms\"\n\
             [[modbus.point]]\nname = \"energy\"\ntable = \"input\"\naddress = 8\ntype = \"u32\"\n\
             [[modbus.point]]\nname = \"power_limit\"\ntable = \"holding\"\naddress = 0\nwritable = true\n",
            simulator("meter-sim", port)
        ),
    );
    let mut h = rack(dir.path());
    h.rack.start(&cfg).await.unwrap();
    let st = h
        .status("meter", |s| s.up() == Some(true) && s.last_poll.is_some())
        .await;
    assert_eq!((st.kind, st.points), (EquipmentKind::Modbus, 2));
    let deadline = Instant::now() + Duration::from_secs(30);
    let reading = loop {
        let r = tokio::time::timeout_at(deadline, h.records.recv())
            .await
            .expect("a reading within 30 s")
            .unwrap();
        if let RecordBody::Telemetry(t) = r {
            if &*t.point == "meter/energy" {
                break t;
            }
        }
    };
    assert!(
        reading.value.as_u64().is_some_and(|wh| wh >= 1_250_000),
        "{reading:?}"
    );
    // Commands reach the device through the controls.
    let (reply, rx) = tokio::sync::oneshot::channel();
    let write = cabinetd_modbus::WriteRequest {
        point: "power_limit".into(),
        value: cabinetd_modbus::Value::Int(4000),
        id: None,
        reply,
    };
    h.rack.controls().writers["meter"]
        .send(write)
        .await
        .unwrap();
    rx.await
        .unwrap()
        .expect("the simulated meter takes the write");
    h.rack.stop(Instant::now() + RELOAD_STOP).await;
    assert!(h.rack.controls().writers.is_empty());
}
