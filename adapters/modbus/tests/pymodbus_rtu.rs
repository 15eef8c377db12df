//! cabinetd-modbus against a real pymodbus server over Modbus RTU, on a socat pty pair.

mod support;

use std::time::Duration;

use cabinetd_modbus::{
    DataType, DeviceEvent, DeviceSpec, Error, Parity, PointError, SerialSettings, Table, Transport,
    Value,
};
use support::*;
use tokio::time::Instant;

fn rtu_device(path: &str, unit: u8, points: Vec<cabinetd_modbus::PointSpec>) -> DeviceSpec {
    DeviceSpec {
        name: "rtu".into(),
        transport: Transport::Rtu(SerialSettings {
            path: path.into(),
            baud: 19200,
            // Linux ptys refuse pyserial's termios call with parity enabled (EINVAL), so the
            // pair runs 8N1; framing and CRC are what this test exercises.
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        }),
        unit_id: unit,
        poll: Duration::from_millis(300),
        timeout: Duration::from_millis(1500),
        points,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_reads_writes_and_exceptions() {
    let ptys = PtyPair::new().await;
    let json = r#"{
      "holding": [
        {"address": 0, "raw": [0, 0]},
        {"address": 2, "type": "f32", "value": -2.75, "word_order": "little"},
        {"address": 4, "type": "i32", "value": -7}
      ],
      "input": [{"address": 0, "raw": 1}],
      "coils": [{"address": 0, "raw": [false, true]}]
    }"#;
    let mut peer = Peer::start(
        &[
            "--rtu",
            &ptys.a,
            "--baud",
            "19200",
            "--parity",
            "N",
            "--unit",
            "7",
            "--exception-at",
            "1",
        ],
        Some(json),
    )
    .await;
    let points = vec![
        writable(pt("setpoint", Table::Holding, 0, DataType::U16)),
        pt("refused", Table::Holding, 1, DataType::U16),
        little(pt("temp", Table::Holding, 2, DataType::F32)),
        pt("delta", Table::Holding, 4, DataType::I32),
        pt("in", Table::Input, 0, DataType::U16),
        writable(pt("relay", Table::Coil, 0, DataType::Bool)),
        pt("lamp", Table::Coil, 1, DataType::Bool),
    ];
    // `refused` is contiguous with the other holding points, so it shares their read and the
    // exception covers every holding point, while the other tables read fine.
    let mut dev = Running::start(rtu_device(&ptys.b, 7, points));
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = dev.next_poll(deadline).await;
    for i in 0..4 {
        assert_eq!(reading(&r, i), Err(PointError::Exception(2)), "point {i}");
    }
    assert_eq!(reading(&r, 4), Ok(Value::UInt(1)));
    assert_eq!(reading(&r, 5), Ok(Value::Bool(false)));
    assert_eq!(reading(&r, 6), Ok(Value::Bool(true)));
    dev.stop().await;

    // Without the refused point in the plan, the holding block reads.
    peer.proc.kill().await;
    let mut peer = Peer::start(
        &[
            "--rtu", &ptys.a, "--baud", "19200", "--parity", "N", "--unit", "7",
        ],
        Some(json),
    )
    .await;
    let points = vec![
        writable(pt("setpoint", Table::Holding, 0, DataType::U16)),
        little(pt("temp", Table::Holding, 2, DataType::F32)),
        pt("delta", Table::Holding, 4, DataType::I32),
        writable(pt("relay", Table::Coil, 0, DataType::Bool)),
    ];
    let mut dev = Running::start(rtu_device(&ptys.b, 7, points));
    let r = dev
        .next_poll(Instant::now() + Duration::from_secs(20))
        .await;
    assert_eq!(reading(&r, 0), Ok(Value::UInt(0)));
    assert_eq!(reading(&r, 1), Ok(Value::Float(-2.75)));
    assert_eq!(reading(&r, 2), Ok(Value::Int(-7)));
    assert_eq!(reading(&r, 3), Ok(Value::Bool(false)));

    dev.write("setpoint", Value::UInt(321)).await.unwrap();
    dev.write("relay", Value::Bool(true)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = dev.next_poll(deadline).await;
        if reading(&r, 0) == Ok(Value::UInt(321)) && reading(&r, 3) == Ok(Value::Bool(true)) {
            break;
        }
    }
    assert_eq!(
        peer.requests("WRITE "),
        vec!["WRITE fc=6 addr=0 values=321", "WRITE fc=5 addr=0 values=1"]
    );
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_silent_device_times_out_and_goes_down_once() {
    let ptys = PtyPair::new().await;
    let _peer = Peer::start(&["--rtu", &ptys.a, "--unit", "7", "--silent"], None).await;
    let points = vec![pt("x", Table::Holding, 0, DataType::U16)];
    let mut spec = rtu_device(&ptys.b, 7, points);
    spec.timeout = Duration::from_millis(300);
    let mut dev = Running::start(spec);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut downs, mut failures) = (0, 0);
    while failures < 3 {
        match dev.next(deadline).await {
            DeviceEvent::PollFailed { error } => {
                assert!(matches!(error, Error::Timeout { .. }), "{error}");
                failures += 1;
            }
            DeviceEvent::Down { .. } => downs += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(downs, 1);
    dev.stop().await;
}

/// Issue 13 item 0: three units on one RS-485 line (one pty pair), the third silent. One line
/// owner serves them all; the two others keep their poll rate within their own timeouts, the
/// silent one is down, each with its own events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_units_on_one_line_one_silent() {
    let ptys = PtyPair::new().await;
    let json = r#"{"holding": [{"address": 0, "raw": [17, 18]}]}"#;
    let mut peer = Peer::start(
        &[
            "--rtu", &ptys.a, "--baud", "19200", "--parity", "N", "--unit", "1", "--unit", "2",
        ],
        Some(json),
    )
    .await;
    let points = || {
        vec![
            pt("a", Table::Holding, 0, DataType::U16),
            pt("b", Table::Holding, 1, DataType::U16),
        ]
    };
    let unit = |name: &str, id: u8, timeout_ms: u64| {
        let mut spec = rtu_device(&ptys.b, id, points());
        spec.name = name.into();
        spec.poll = Duration::from_millis(300);
        spec.timeout = Duration::from_millis(timeout_ms);
        spec
    };
    let healthy_timeout = Duration::from_millis(600);
    let line = SharedLine::start(&unit("m1", 1, 600).transport);
    let mut m1 = Running::unit(unit("m1", 1, 600), &line);
    let mut m2 = Running::unit(unit("m2", 2, 600), &line);
    let mut m3 = Running::unit(unit("m3", 3, 400), &line);

    let until = Instant::now() + Duration::from_secs(8);
    let ((p1, o1), (p2, o2), (p3, o3)) = tokio::join!(
        collect(&mut m1, until),
        collect(&mut m2, until),
        collect(&mut m3, until)
    );
    for (name, polls, other) in [("m1", &p1, &o1), ("m2", &p2, &o2)] {
        assert!(
            other.iter().all(|e| matches!(e, DeviceEvent::Up)),
            "{name}: {other:?}"
        );
        assert!(polls.len() >= 10, "{name}: {} polls in 8 s", polls.len());
        let worst = worst_gap(polls);
        assert!(
            worst < Duration::from_millis(300) + healthy_timeout,
            "{name}: {worst:?} between two polls"
        );
    }
    assert!(
        p3.is_empty(),
        "{} polls of m3; {o3:?}; peer: {:?}",
        p3.len(),
        peer.requests("")
    );
    let downs = o3
        .iter()
        .filter(|e| matches!(e, DeviceEvent::Down { .. }))
        .count();
    let failures: Vec<&Error> = o3
        .iter()
        .filter_map(|e| match e {
            DeviceEvent::PollFailed { error } => Some(error),
            _ => None,
        })
        .collect();
    assert_eq!(downs, 1, "{o3:?}");
    assert!(failures.len() >= 2, "{o3:?}");
    for e in failures {
        assert!(
            matches!(e, Error::Timeout { device, .. } if device == "m3"),
            "{e}"
        );
    }
    // Both answering units were really asked, on the one line.
    let reqs = peer.requests("REQ ");
    for u in ["unit=1", "unit=2"] {
        assert!(reqs.iter().any(|r| r.ends_with(u)), "{u}: {reqs:?}");
    }
    for r in [m1, m2, m3] {
        r.stop().await;
    }
}
