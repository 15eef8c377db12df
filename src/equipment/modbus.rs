//! Modbus devices in the daemon: per `[[modbus]]` device, the adapter's task
//! (`cabinetd_modbus::run_device`, which polls, writes and reconnects) and a [`Bridge`] turning
//! its reports into records; and the built-in `[[simulator]]` energy meter.
//!
//! What the bridge does with each [`DeviceEvent`]:
//! - `Poll`: every reading goes through its point's [`PointReporter`] (report by exception: first
//!   reading, a change beyond the deadband, or the heartbeat); a point whose read failed repeats
//!   its last value with quality `bad`; the poll's duration feeds
//!   `cabinetd_poll_duration_seconds`, a failed point `cabinetd_poll_errors_total`;
//! - `PollFailed`: `cabinetd_poll_errors_total` and the status's last error;
//! - `Down`: status down and one `device_down` event ([`StatusTx::down`]), then every point
//!   republished with quality `bad` (its last value, or null);
//! - `Up`: status up and, after a `Down`, one `device_up` event ([`StatusTx::up`]).
//!
//! Invariant: the bridge is the only producer of this device's records, in the order the device
//! task reported, so events and readings are never duplicated by a reconnect.

use std::time::{Instant, SystemTime};

use cabinetd_modbus::{DeviceEvent, PollReport};
use prometheus::{Histogram, IntCounter};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Equipment, EquipmentError, Starter, StatusTx};
use crate::config::{ModbusDevice, Resource, Simulator};
use crate::event::EquipmentKind;
use crate::metrics::Metrics;
use crate::record::{Quality, RecordBody, Telemetry};
use crate::report::PointReporter;

/// Reports of a device task waiting for its bridge.
const EVENT_CHANNEL: usize = 16;
/// Writes waiting for a device task.
const WRITE_CHANNEL: usize = 16;

impl Equipment for ModbusDevice {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn resources(&self) -> Vec<Resource> {
        ModbusDevice::resources(self)
    }

    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError> {
        let name = self.spec.name.clone();
        let status = s.status(&name, EquipmentKind::Modbus, self.spec.points.len());
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
        let (w_tx, w_rx) = mpsc::channel(WRITE_CHANNEL);
        s.controls().writers.insert(name.clone(), w_tx);
        let stop = s.entry_token().cancelled_owned();
        s.spawn(
            format!("modbus {name}"),
            cabinetd_modbus::run_device(self.spec.clone(), ev_tx, w_rx, stop),
        );
        let bridge = Bridge::new(self.clone(), status, &s.context().metrics)
            .with_tap(s.context().readings.clone());
        let records = s.context().records.clone();
        // Ends when the device task does (its event sender drops).
        s.spawn(format!("modbus {name} bridge"), bridge.run(ev_rx, records));
        Ok(())
    }
}

impl Equipment for Simulator {
    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<Resource> {
        Simulator::resources(self)
    }

    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError> {
        let failed = |e: std::io::Error| EquipmentError::Listen {
            entry: format!("simulator {}", self.name),
            addr: self.listen,
            reason: e.to_string(),
        };
        // SO_REUSEADDR: after a reload the port may still have connections in TIME_WAIT.
        let socket = match self.listen {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(failed)?;
        socket.set_reuseaddr(true).map_err(failed)?;
        socket.bind(self.listen).map_err(failed)?;
        let listener = socket.listen(64).map_err(failed)?;
        tracing::info!(simulator = %self.name, listen = %self.listen, "simulated energy meter serving");
        let name = self.name.clone();
        let stop = s.entry_token().cancelled_owned();
        s.spawn(format!("simulator {name}"), async move {
            if let Err(e) = cabinetd_modbus::sim::serve_energy_meter(listener, stop).await {
                tracing::error!(simulator = %name, error = %e, "simulator stopped");
            }
        });
        Ok(())
    }
}

/// JSON form of a Modbus value (a NaN float, which JSON cannot carry, becomes null).
pub fn modbus_value(v: &cabinetd_modbus::Value) -> Value {
    match *v {
        cabinetd_modbus::Value::Bool(b) => Value::Bool(b),
        cabinetd_modbus::Value::Int(i) => Value::from(i),
        cabinetd_modbus::Value::UInt(u) => Value::from(u),
        cabinetd_modbus::Value::Float(f) => {
            serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
        }
    }
}

/// Turns one device's reports into records and keeps its status and metrics.
pub struct Bridge {
    dev: ModbusDevice,
    reporters: Vec<PointReporter>,
    last_values: Vec<Value>,
    status: StatusTx,
    errors: IntCounter,
    durations: Histogram,
    /// Every reading also goes here, before report by exception (full point names by index).
    tap: Option<(crate::readings::ReadingTap, Vec<String>)>,
}

impl Bridge {
    /// A bridge for `dev`, publishing its status on `status`.
    pub fn new(dev: ModbusDevice, status: StatusTx, metrics: &Metrics) -> Bridge {
        let name = dev.spec.name.as_str();
        Bridge {
            reporters: dev.report.iter().map(|p| PointReporter::new(*p)).collect(),
            last_values: vec![Value::Null; dev.spec.points.len()],
            errors: metrics.poll_errors_total.with_label_values(&[name]),
            durations: metrics.poll_duration_seconds.with_label_values(&[name]),
            status,
            dev,
            tap: None,
        }
    }

    /// Shares every reading (each poll's, before report by exception) on `tap`.
    pub fn with_tap(mut self, tap: crate::readings::ReadingTap) -> Bridge {
        let names = (self.dev.spec.points.iter())
            .map(|p| format!("{}/{}", self.dev.spec.name, p.name))
            .collect();
        self.tap = Some((tap, names));
        self
    }

    /// Forwards records until the device task ends (or the record channel closes).
    pub async fn run(
        mut self,
        mut events: mpsc::Receiver<DeviceEvent>,
        records: mpsc::Sender<RecordBody>,
    ) {
        while let Some(ev) = events.recv().await {
            for r in self.on_event(ev, Instant::now()) {
                if records.send(r).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The records one report makes, in order; updates the status and metrics. `now` is the
    /// report-by-exception clock.
    pub fn on_event(&mut self, ev: DeviceEvent, now: Instant) -> Vec<RecordBody> {
        match ev {
            DeviceEvent::Poll(report) => self.poll(report, now),
            DeviceEvent::PollFailed { error } => {
                self.errors.inc();
                self.status
                    .update(|s| s.last_error = Some(error.to_string()));
                Vec::new()
            }
            DeviceEvent::Down { error } => {
                tracing::warn!(device = %self.dev.spec.name, error = %error, "device down");
                let mut out: Vec<RecordBody> = self
                    .status
                    .down(&error.to_string())
                    .map(RecordBody::Event)
                    .into_iter()
                    .collect();
                let ts = SystemTime::now();
                for idx in 0..self.dev.spec.points.len() {
                    let value = self.last_values[idx].clone();
                    out.extend(self.offer(idx, value, Quality::Bad, ts, now));
                }
                out
            }
            DeviceEvent::Up => {
                tracing::info!(device = %self.dev.spec.name, "device up");
                self.status
                    .up()
                    .map(RecordBody::Event)
                    .into_iter()
                    .collect()
            }
        }
    }

    fn poll(&mut self, report: PollReport, now: Instant) -> Vec<RecordBody> {
        self.durations.observe(report.duration.as_secs_f64());
        let mut out = Vec::new();
        let mut failed = false;
        for (idx, reading) in &report.readings {
            if *idx >= self.dev.spec.points.len() {
                continue;
            }
            let (value, quality) = match reading {
                Ok(v) => {
                    let v = modbus_value(v);
                    self.last_values[*idx] = v.clone();
                    (v, Quality::Good)
                }
                Err(_) => {
                    failed = true;
                    (self.last_values[*idx].clone(), Quality::Bad)
                }
            };
            out.extend(self.offer(*idx, value, quality, report.at, now));
        }
        if failed {
            self.errors.inc();
        }
        self.status.update(|s| s.last_poll = Some(report.at));
        out
    }

    /// A telemetry record when point `idx`'s reporter says this reading is due.
    fn offer(
        &mut self,
        idx: usize,
        value: Value,
        quality: Quality,
        ts: SystemTime,
        now: Instant,
    ) -> Option<RecordBody> {
        if let Some((tap, names)) = &self.tap {
            tap.offer(&names[idx], &value, quality);
        }
        self.reporters[idx].offer(&value, quality, now).then(|| {
            RecordBody::Telemetry(Telemetry {
                ts,
                point: format!("{}/{}", self.dev.spec.name, self.dev.spec.points[idx].name),
                value,
                quality,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReportPolicy;
    use crate::event::EventKind;
    use crate::record::Severity;
    use cabinetd_modbus::{DataType, DeviceSpec, Error, PointSpec, Table};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    fn device() -> ModbusDevice {
        let policy = ReportPolicy {
            deadband: None,
            heartbeat: Duration::from_secs(60),
        };
        let points = vec![
            PointSpec::new("power", Table::Input, 0, DataType::U16),
            PointSpec::new("relay", Table::Coil, 0, DataType::Bool),
        ];
        ModbusDevice {
            spec: DeviceSpec::tcp("meter", "127.0.0.1:502", points),
            report: vec![policy, policy],
        }
    }

    struct Harness {
        bridge: Bridge,
        status: tokio::sync::watch::Receiver<super::super::Status>,
        metrics: Metrics,
        beats: Arc<AtomicU64>,
    }

    fn harness() -> Harness {
        let metrics = Metrics::new("test");
        let beats = Arc::new(AtomicU64::new(0));
        let (tx, status) =
            StatusTx::channel("meter", EquipmentKind::Modbus, 2, &metrics, beats.clone());
        Harness {
            bridge: Bridge::new(device(), tx, &metrics),
            status,
            metrics,
            beats,
        }
    }

    fn poll(power: Result<u64, u8>, relay: bool) -> DeviceEvent {
        DeviceEvent::Poll(PollReport {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
            duration: Duration::from_millis(3),
            readings: vec![
                (
                    0,
                    power
                        .map(cabinetd_modbus::Value::UInt)
                        .map_err(cabinetd_modbus::PointError::Exception),
                ),
                (1, Ok(cabinetd_modbus::Value::Bool(relay))),
            ],
        })
    }

    fn telemetry(r: &RecordBody) -> (&str, &Value, Quality) {
        match r {
            RecordBody::Telemetry(t) => (t.point.as_str(), &t.value, t.quality),
            other => panic!("not telemetry: {other:?}"),
        }
    }

    fn timeout() -> Error {
        Error::Timeout {
            device: "meter".into(),
            request: "read input registers 0".into(),
            after: Duration::from_millis(500),
        }
    }

    #[test]
    fn readings_are_reported_by_exception_and_keep_the_status() {
        let mut h = harness();
        let t0 = Instant::now();
        assert!(
            h.bridge.on_event(DeviceEvent::Up, t0).is_empty(),
            "no device_up after a start"
        );
        assert_eq!(h.status.borrow().up(), Some(true));
        let out = h.bridge.on_event(poll(Ok(42), true), t0);
        assert_eq!(out.len(), 2);
        assert_eq!(
            telemetry(&out[0]),
            ("meter/power", &Value::from(42u64), Quality::Good)
        );
        assert_eq!(
            telemetry(&out[1]),
            ("meter/relay", &Value::Bool(true), Quality::Good)
        );
        // Unchanged within the heartbeat: nothing; a change: only that point.
        assert!(h
            .bridge
            .on_event(poll(Ok(42), true), t0 + Duration::from_secs(1))
            .is_empty());
        let out = h
            .bridge
            .on_event(poll(Ok(43), true), t0 + Duration::from_secs(2));
        assert_eq!(out.len(), 1);
        assert_eq!(telemetry(&out[0]).1, &Value::from(43u64));
        // A failed point repeats its last value as bad and counts as a poll error.
        let out = h
            .bridge
            .on_event(poll(Err(2), true), t0 + Duration::from_secs(3));
        assert_eq!(
            telemetry(&out[0]),
            ("meter/power", &Value::from(43u64), Quality::Bad)
        );
        let st = h.status.borrow().clone();
        assert_eq!(
            st.last_poll,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000))
        );
        let m = h.metrics.render();
        assert!(
            m.contains("cabinetd_poll_errors_total{device=\"meter\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("cabinetd_poll_duration_seconds_count{device=\"meter\"} 4"),
            "{m}"
        );
        assert!(
            h.beats.load(Ordering::Relaxed) >= 5,
            "every report is a sign of life"
        );
    }

    #[test]
    fn down_and_up_raise_one_event_each_and_mark_the_points_bad() {
        let mut h = harness();
        let t0 = Instant::now();
        h.bridge.on_event(DeviceEvent::Up, t0);
        h.bridge.on_event(poll(Ok(7), false), t0);
        let failed = h
            .bridge
            .on_event(DeviceEvent::PollFailed { error: timeout() }, t0);
        assert!(failed.is_empty());
        assert!(h
            .status
            .borrow()
            .last_error
            .as_deref()
            .unwrap()
            .contains("no response from meter"));
        let out = h
            .bridge
            .on_event(DeviceEvent::Down { error: timeout() }, t0);
        let RecordBody::Event(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (&e.kind, e.severity),
            (&EventKind::DeviceDown, Severity::Major)
        );
        assert_eq!(e.data["protocol"], "modbus");
        assert!(
            e.message
                .starts_with("meter stopped answering: no response"),
            "{}",
            e.message
        );
        assert_eq!(
            telemetry(&out[1]),
            ("meter/power", &Value::from(7u64), Quality::Bad)
        );
        assert_eq!(
            telemetry(&out[2]),
            ("meter/relay", &Value::Bool(false), Quality::Bad)
        );
        assert_eq!(h.status.borrow().up(), Some(false));
        assert!(h
            .metrics
            .render()
            .contains("cabinetd_device_up{device=\"meter\",protocol=\"modbus\"} 0"));
        // A second Down (the adapter sends one per transition) would not repeat the event.
        assert!(h
            .bridge
            .on_event(DeviceEvent::Down { error: timeout() }, t0)
            .is_empty());
        let out = h.bridge.on_event(DeviceEvent::Up, t0);
        let RecordBody::Event(e) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (&e.kind, e.severity),
            (&EventKind::DeviceUp, Severity::Info)
        );
        assert_eq!(h.status.borrow().last_error, None);
        assert!(h
            .metrics
            .render()
            .contains("cabinetd_device_up{device=\"meter\",protocol=\"modbus\"} 1"));
        // Back up, a good reading is published at once (its quality changed).
        let out = h.bridge.on_event(poll(Ok(7), false), t0);
        assert_eq!(
            telemetry(&out[0]),
            ("meter/power", &Value::from(7u64), Quality::Good)
        );
    }

    #[test]
    fn a_device_never_reached_reports_null_bad_points() {
        let mut h = harness();
        let out = h
            .bridge
            .on_event(DeviceEvent::Down { error: timeout() }, Instant::now());
        assert_eq!(out.len(), 3);
        assert_eq!(
            telemetry(&out[1]),
            ("meter/power", &Value::Null, Quality::Bad)
        );
    }
}
