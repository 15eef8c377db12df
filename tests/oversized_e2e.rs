//! Issue 12: a retained message over 1 MiB on `P/all/cmd` used to put every cabinet in a
//! reconnect loop (the MQTT client dropped the session on an oversized packet). Now it is
//! dropped unread, counted and reported once, and the session stays up.

mod support;

use std::time::Duration;

use support::{wait_until, Daemon, Mosquitto, MqttProbe};

#[test]
fn a_2_mb_retained_command_is_dropped_once_and_the_session_stays() {
    let broker = Mosquitto::start();
    let probe = MqttProbe::start(broker.port, "cabinets/v1/#");
    let big = vec![b'x'; 2_000_000];
    probe.publish("cabinets/v1/all/cmd", &big, true);
    wait_until(
        "the retained message at the broker",
        Duration::from_secs(10),
        || {
            probe
                .on("/all/cmd")
                .iter()
                .any(|m| m.payload.len() == big.len())
                .then_some(())
        },
    );

    let mut d = Daemon::start(broker.port, "");
    let dropped = wait_until("a message_dropped event", Duration::from_secs(20), || {
        probe
            .records("/events")
            .into_iter()
            .map(|(r, _)| r)
            .find(|r| r["kind"] == "message_dropped")
    });
    assert_eq!(dropped["data"]["topic"], "cabinets/v1/all/cmd");
    assert_eq!(dropped["data"]["size"], 2_000_000);
    assert_eq!(dropped["data"]["limit"], 1_048_576);

    // The session is alive after the drop: a command sent now gets its result...
    probe.publish(
        "cabinets/v1/test-cab/cmd",
        br#"{"id":"after-drop","action":"camera.reboot","args":{"camera":"none"}}"#,
        false,
    );
    wait_until(
        "the result of a later command",
        Duration::from_secs(20),
        || {
            probe
                .records("/cmd/result")
                .into_iter()
                .any(|(r, _)| r["id"] == "after-drop")
                .then_some(())
        },
    );
    // ...and by then any reconnect caused by the big message would have been counted.
    let status = d.status();
    assert_eq!(status["uplink"]["connected"], true, "{status}");
    assert_eq!(status["uplink"]["reconnects"], 0, "{status}");
    let metrics = d.get("/metrics").1;
    assert!(
        metrics.contains("cabinetd_incoming_dropped_total 1"),
        "{metrics}"
    );
    // The series exists from the start (issue 14), at 0: no reconnect.
    let reconnects: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cabinetd_uplink_reconnects_total{"))
        .collect();
    assert!(
        !reconnects.is_empty() && reconnects.iter().all(|l| l.ends_with(" 0")),
        "{metrics}"
    );
    let dropped_events = probe
        .records("/events")
        .into_iter()
        .filter(|(r, _)| r["kind"] == "message_dropped")
        .count();
    assert_eq!(dropped_events, 1);
    assert!(d.stop().success());
}
