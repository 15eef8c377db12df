//! The simulated energy meter, polled through the real client stack with its documented map.

mod support;

use std::time::Duration;

use cabinetd_modbus::sim::serve_energy_meter;
use cabinetd_modbus::{DataType, Error, Table, Value};
use support::*;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meter_serves_its_documented_map() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(serve_energy_meter(listener, async move {
        let _ = stop_rx.wait_for(|stop| *stop).await;
    }));

    let mut power_limit = writable(pt("power_limit", Table::Holding, 0, DataType::U16));
    power_limit.max = Some(10_000.0);
    let points = vec![
        scaled(pt("voltage_l1", Table::Input, 0, DataType::U16), 0.1, 0.0),
        scaled(pt("voltage_l2", Table::Input, 1, DataType::U16), 0.1, 0.0),
        scaled(pt("voltage_l3", Table::Input, 2, DataType::U16), 0.1, 0.0),
        scaled(pt("current_l1", Table::Input, 3, DataType::U16), 0.01, 0.0),
        scaled(pt("current_l2", Table::Input, 4, DataType::U16), 0.01, 0.0),
        scaled(pt("current_l3", Table::Input, 5, DataType::U16), 0.01, 0.0),
        pt("active_power", Table::Input, 6, DataType::F32),
        pt("energy", Table::Input, 8, DataType::U32),
        scaled(pt("frequency", Table::Input, 10, DataType::U16), 0.01, 0.0),
        scaled(
            pt("power_factor", Table::Input, 11, DataType::I16),
            0.001,
            0.0,
        ),
        power_limit,
        writable(pt("relay", Table::Coil, 0, DataType::Bool)),
        pt("door_open", Table::Discrete, 0, DataType::Bool),
    ];
    let mut dev = Running::start(tcp_device("meter", addr, 200, 2000, points));
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = dev.next_poll(deadline).await;
    for i in 0..3 {
        let v = float(reading(&r, i));
        assert!((225.0..235.0).contains(&v), "voltage {v}");
    }
    for i in 3..6 {
        let a = float(reading(&r, i));
        assert!((2.0..3.0).contains(&a), "current {a}");
    }
    let p = float(reading(&r, 6));
    assert!((1000.0..2500.0).contains(&p), "power {p}");
    match reading(&r, 7) {
        Ok(Value::UInt(e)) => assert!(e >= 1_250_000, "energy {e}"),
        other => panic!("energy {other:?}"),
    }
    let f = float(reading(&r, 8));
    assert!((49.9..50.1).contains(&f), "frequency {f}");
    let pf = float(reading(&r, 9));
    assert!((0.9..1.0).contains(&pf), "power factor {pf}");
    assert_eq!(reading(&r, 10), Ok(Value::UInt(5000)));
    assert_eq!(reading(&r, 11), Ok(Value::Bool(true)));
    assert_eq!(reading(&r, 12), Ok(Value::Bool(false)));

    dev.write("power_limit", Value::UInt(1234)).await.unwrap();
    dev.write("relay", Value::Bool(false)).await.unwrap();
    assert!(matches!(
        dev.write("power_limit", Value::UInt(10_001)).await,
        Err(Error::Rejected { field: "value", .. })
    ));
    let r = loop {
        let r = dev.next_poll(deadline).await;
        if reading(&r, 11) == Ok(Value::Bool(false)) {
            break r;
        }
    };
    assert_eq!(reading(&r, 10), Ok(Value::UInt(1234)));
    assert_eq!(float(reading(&r, 3)), 0.0);
    assert_eq!(reading(&r, 6), Ok(Value::Float(0.0)));

    dev.stop().await;
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("meter stops on shutdown")
        .unwrap()
        .unwrap();
}
