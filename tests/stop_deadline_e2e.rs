//! The stop deadline (SPEC §1: exit 0 within 10 s of SIGTERM) against hung equipment: real TCP
//! peers that accept Modbus connections and never answer, with a 60 s request timeout, and
//! commands in flight to them. Before issue 8 each equipment task got 3 s in turn and in-flight
//! commands were detached without a result. Real Mosquitto.

mod support;

use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// A peer that accepts connections and never answers (a frozen device behind a gateway).
struct Hung {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Hung {
    fn start() -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                keep.lock().unwrap().push(stream);
            }
        });
        Hung { port, held }
    }

    fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

fn device(name: &str, port: u16) -> String {
    format!(
        "[[modbus]]\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\npoll = \"1s\"\ntimeout = \"60s\"\n\
         [[modbus.point]]\nname = \"setpoint\"\ntable = \"holding\"\naddress = 0\nwritable = true\n"
    )
}

fn metric(daemon: &Daemon, name: &str) -> Option<f64> {
    let (_, body) = daemon.get("/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn stop_completes_within_the_deadline_with_three_hung_devices_and_commands_get_results() {
    let peers: Vec<Hung> = (0..3).map(|_| Hung::start()).collect();
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/#");
    let extra: String = peers
        .iter()
        .enumerate()
        .map(|(i, p)| device(&format!("hung-{i}"), p.port))
        .collect();
    let mut daemon = Daemon::start_logged(broker.port, &extra, &[]);
    wait_until(
        "the three devices connected",
        Duration::from_secs(20),
        || peers.iter().all(|p| p.connections() >= 1).then_some(()),
    );
    for i in 0..3 {
        let cmd = json!({"id": format!("w{i}"), "action": "point.write",
            "args": {"point": format!("hung-{i}/setpoint"), "value": 7},
            "expires_at": "2099-01-01T00:00:00Z"});
        probe.publish(
            "cabinets/v1/test-cab/cmd",
            cmd.to_string().as_bytes(),
            false,
        );
    }
    wait_until("three commands in flight", Duration::from_secs(20), || {
        (metric(&daemon, "cabinetd_commands_in_flight") == Some(3.0)).then_some(())
    });

    let asked = Instant::now();
    let status = daemon.stop();
    let took = asked.elapsed();
    assert!(
        status.success(),
        "exit status {status}\n{}",
        daemon.log_text()
    );
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    // Every command got its final result before the uplink's last flush: failed, not lost.
    for i in 0..3 {
        let id = format!("w{i}");
        let r = wait_until(&format!("result of {id}"), Duration::from_secs(10), || {
            probe
                .records("/cmd/result")
                .into_iter()
                .map(|(r, _)| r)
                .find(|r| r["id"] == id.as_str())
        });
        assert_eq!(r["status"], "failed", "{r}");
    }
    let offline = wait_until("offline status", Duration::from_secs(10), || {
        probe
            .on("/status")
            .into_iter()
            .map(|m| m.json())
            .rfind(|j| j["online"] == false)
    });
    assert_eq!(offline["cabinet"], "test-cab");
}

#[test]
fn a_second_stop_signal_skips_to_the_final_flush() {
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/test-cab/status");
    let mut daemon = Daemon::start_logged(broker.port, "", &[]);
    wait_until("online", Duration::from_secs(20), || {
        probe
            .on("/status")
            .into_iter()
            .find(|m| m.json()["online"] == true)
    });
    // A frozen broker: the clean stop would wait for the offline status's acknowledgement.
    broker.freeze();
    let asked = Instant::now();
    daemon.proc.signal(nix::sys::signal::Signal::SIGTERM);
    wait_until("the stop started", Duration::from_secs(5), || {
        daemon
            .log_text()
            .contains("SIGTERM: stopping")
            .then_some(())
    });
    daemon.proc.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.proc.wait_exit(Duration::from_secs(15));
    broker.thaw();
    let log = daemon.log_text();
    assert!(status.success(), "exit status {status}\n{log}");
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert!(
        log.contains("second stop signal: skipping to the final flush"),
        "{log}"
    );
}
