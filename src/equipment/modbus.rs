//! Modbus devices in the daemon: per line (one serial path, or one TCP `host:port` such as a
//! TCP→RTU gateway) one [`ModbusLine`] entry running the adapter's line owner
//! (`cabinetd_modbus::Line::run`, the only owner of the connection); per `[[modbus]]` device on
//! it, the adapter's unit task (`cabinetd_modbus::run_unit`: polls, writes, its own up/down
//! state and backoff) and a [`Bridge`] turning its reports into records; and the built-in
//! `[[simulator]]` energy meter. Each device keeps its own status, events and metrics, whatever
//! line it shares.
//!
//! What the bridge does with each [`DeviceEvent`]:
//! - `Poll`: every reading goes through its point's [`PointReporter`] (report by exception: first
//!   reading, a change beyond the deadband, or the heartbeat — measured on the poll's own
//!   instant, [`PollReport::started`], never on when the bridge gets to it, so a busy recorder
//!   cannot make a point skip a heartbeat); a point whose read failed repeats its last value
//!   with quality `bad`; the poll's duration feeds `cabinetd_poll_duration_seconds`, a failed
//!   point `cabinetd_poll_errors_total`;
//! - `PollFailed`: `cabinetd_poll_errors_total` and the status's last error;
//! - `Down`: status down and one `device_down` event ([`StatusTx::down`]), then every point
//!   republished with quality `bad` (its last value, or null);
//! - `Up`: status up and, after a `Down`, one `device_up` event ([`StatusTx::up`]);
//! - `WriteOutcome`: one `write_outcome` event ([`write_outcome_event`]): what a write whose
//!   result was `unknown` left on the device.
//!
//! Invariant: the bridge is the only producer of this device's records, in the order the device
//! task reported, so events and readings are never duplicated by a reconnect.

use std::time::{Instant, SystemTime};

use cabinetd_modbus::{DeviceEvent, LineKey, PollReport, WriteOutcome};
use prometheus::{Histogram, IntCounter};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::{Equipment, EquipmentError, Starter, StatusTx};
use crate::config::{ModbusDevice, Resource, Simulator};
use crate::event::{EquipmentKind, EventKind};
use crate::metrics::Metrics;
use crate::record::{Event, Quality, RecordBody, Severity, Telemetry};
use crate::report::PointReporter;

/// Reports of a device task waiting for its bridge.
const EVENT_CHANNEL: usize = 16;
/// Writes waiting for a device task.
const WRITE_CHANNEL: usize = 16;

/// The Modbus devices of one line, started together around one line owner.
#[derive(Debug, Clone)]
pub struct ModbusLine {
    /// `serial /dev/ttyUSB0`, `tcp 10.0.0.5:502`.
    name: String,
    /// In configuration order; all on this line (validation made their serial settings agree).
    devices: Vec<ModbusDevice>,
}

/// The `[[modbus]]` devices grouped by line, in the order each line first appears.
pub fn lines(devices: &[ModbusDevice]) -> Vec<ModbusLine> {
    let mut lines: Vec<(LineKey, ModbusLine)> = Vec::new();
    for dev in devices {
        let key = LineKey::of(&dev.spec.transport);
        match lines.iter_mut().find(|(k, _)| *k == key) {
            Some((_, line)) => line.devices.push(dev.clone()),
            None => {
                let line = ModbusLine {
                    name: key.to_string(),
                    devices: vec![dev.clone()],
                };
                lines.push((key, line));
            }
        }
    }
    lines.into_iter().map(|(_, l)| l).collect()
}

impl ModbusLine {
    /// Its devices.
    pub fn devices(&self) -> &[ModbusDevice] {
        &self.devices
    }
}

impl Equipment for ModbusLine {
    fn name(&self) -> &str {
        &self.name
    }

    fn resources(&self) -> Vec<Resource> {
        let mut all: Vec<Resource> = self.devices.iter().flat_map(|d| d.resources()).collect();
        all.sort();
        all.dedup();
        all
    }

    fn start(&self, s: &mut Starter<'_>) -> Result<(), EquipmentError> {
        let token = s.entry_token();
        let (handle, line) = cabinetd_modbus::line_for(&self.devices[0].spec.transport);
        // Ends at the stop, or when its last unit does (the handles drop).
        s.spawn(
            format!("modbus line {}", self.name),
            line.run(token.clone().cancelled_owned()),
        );
        for dev in &self.devices {
            let name = dev.spec.name.clone();
            let status = s.status(&name, EquipmentKind::Modbus, dev.spec.points.len());
            let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
            let (w_tx, w_rx) = mpsc::channel(WRITE_CHANNEL);
            s.controls().writers.insert(name.clone(), w_tx);
            s.spawn(
                format!("modbus {name}"),
                cabinetd_modbus::run_unit(
                    dev.spec.clone(),
                    handle.clone(),
                    ev_tx,
                    w_rx,
                    token.clone().cancelled_owned(),
                ),
            );
            let bridge = Bridge::new(dev.clone(), status, &s.context().metrics)
                .with_tap(s.context().readings.clone());
            let records = s.context().records.clone();
            // Ends when the device task does (its event sender drops).
            s.spawn(format!("modbus {name} bridge"), bridge.run(ev_rx, records));
        }
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

/// The `write_outcome` event of point `point` (`DEVICE/POINT`): a write answered `unknown`
/// (no confirmation) read back once the device answered again. Data: `point`, `requested`,
/// `read` (null when the point could not be read), `applied`, `id` (the command id, null for a
/// write without one). Severity `info` when the requested value is there, `minor` when not.
pub fn write_outcome_event(point: &str, o: &WriteOutcome) -> Event {
    let requested = modbus_value(&o.requested);
    let read = o.read.as_ref().map_or(Value::Null, modbus_value);
    let cmd =
        o.id.as_deref()
            .map_or(String::new(), |id| format!(" (command {id})"));
    let (severity, message) = match (&o.read, o.applied) {
        (Ok(_), true) => (
            Severity::Info,
            format!("the unconfirmed write of {requested} to {point}{cmd} was applied: it reads {read}"),
        ),
        (Ok(_), false) => (
            Severity::Minor,
            format!("the unconfirmed write of {requested} to {point}{cmd} was not applied: it reads {read}"),
        ),
        (Err(e), _) => (
            Severity::Minor,
            format!("the unconfirmed write of {requested} to {point}{cmd} is still unknown: the point cannot be read ({e})"),
        ),
    };
    Event::new(
        EventKind::WriteOutcome,
        severity,
        point,
        message,
        json!({
            "point": point,
            "requested": requested,
            "read": read,
            "applied": o.applied,
            "id": o.id,
        }),
    )
}

/// Turns one device's reports into records and keeps its status and metrics.
pub struct Bridge {
    dev: ModbusDevice,
    /// Full point names, built once per configuration and shared by every reading.
    point_names: Vec<std::sync::Arc<str>>,
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
            point_names: dev
                .spec
                .points
                .iter()
                .map(|p| format!("{name}/{}", p.name).into())
                .collect(),
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

    /// The records one report makes, in order; updates the status and metrics. `now` is when
    /// the report is processed: the report-by-exception clock of what has no instant of its own
    /// (a poll has: [`PollReport::started`]).
    pub fn on_event(&mut self, ev: DeviceEvent, now: Instant) -> Vec<RecordBody> {
        match ev {
            DeviceEvent::Poll(report) => self.poll(report),
            DeviceEvent::WriteOutcome(outcome) => {
                let point = &self.dev.spec.points[outcome.point];
                let name = format!("{}/{}", self.dev.spec.name, point.name);
                vec![RecordBody::Event(write_outcome_event(&name, &outcome))]
            }
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

    fn poll(&mut self, report: PollReport) -> Vec<RecordBody> {
        // Heartbeats and deadband timing on the poll's own instant (issue 13 item 16).
        let now = report.started.into_std();
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
                point: self.point_names[idx].clone(),
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

    /// A bridge of `dev` with a status and metrics of its own.
    fn bridge_of(dev: ModbusDevice) -> Bridge {
        let metrics = Metrics::new("test");
        let (tx, _status) = StatusTx::channel(
            "meter",
            EquipmentKind::Modbus,
            2,
            &metrics,
            Arc::new(AtomicU64::new(0)),
        );
        Bridge::new(dev, tx, &metrics)
    }

    fn poll(power: Result<u64, u8>, relay: bool) -> DeviceEvent {
        poll_at(power, relay, tokio::time::Instant::now())
    }

    fn poll_at(power: Result<u64, u8>, relay: bool, started: tokio::time::Instant) -> DeviceEvent {
        DeviceEvent::Poll(PollReport {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
            started,
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
            RecordBody::Telemetry(t) => (&*t.point, &t.value, t.quality),
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
        let p0 = tokio::time::Instant::from_std(t0);
        let secs = |n| p0 + Duration::from_secs(n);
        assert!(
            h.bridge.on_event(DeviceEvent::Up, t0).is_empty(),
            "no device_up after a start"
        );
        assert_eq!(h.status.borrow().up(), Some(true));
        let out = h.bridge.on_event(poll_at(Ok(42), true, secs(0)), t0);
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
            .on_event(poll_at(Ok(42), true, secs(1)), t0)
            .is_empty());
        let out = h.bridge.on_event(poll_at(Ok(43), true, secs(2)), t0);
        assert_eq!(out.len(), 1);
        assert_eq!(telemetry(&out[0]).1, &Value::from(43u64));
        // A failed point repeats its last value as bad and counts as a poll error.
        let out = h.bridge.on_event(poll_at(Err(2), true, secs(3)), t0);
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

    /// Issue 13 item 16: with `heartbeat` equal to `poll`, readings processed late (a busy
    /// recorder, ~250 ms) skipped heartbeats, because the heartbeat was measured from when the
    /// bridge processed a reading. Measured on the poll's own instant, every one is published.
    #[test]
    fn heartbeats_are_measured_on_the_poll_not_on_its_processing() {
        let mut dev = device();
        let every_poll = ReportPolicy {
            deadband: None,
            heartbeat: Duration::from_secs(1),
        };
        dev.report = vec![every_poll, every_poll];
        let mut bridge = bridge_of(dev.clone());
        let t0 = Instant::now();
        let p0 = tokio::time::Instant::from_std(t0);
        // Polls exactly 1 s apart, processed 0 to 300 ms after each.
        let delays = [0, 250, 0, 300, 10, 280, 0, 0, 250, 40];
        for (k, delay) in delays.into_iter().enumerate() {
            let started = p0 + Duration::from_secs(k as u64);
            let processed = t0 + Duration::from_secs(k as u64) + Duration::from_millis(delay);
            let out = bridge.on_event(poll_at(Ok(7), true, started), processed);
            assert_eq!(
                out.len(),
                2,
                "poll {k} (processed {delay} ms late): {out:?}"
            );
        }
    }

    #[test]
    fn an_unconfirmed_write_read_back_is_one_event_naming_the_command() {
        let mut h = harness();
        let t0 = Instant::now();
        let outcome = |read, applied| {
            DeviceEvent::WriteOutcome(WriteOutcome {
                point: 0,
                requested: cabinetd_modbus::Value::UInt(42),
                read,
                applied,
                id: Some("c-9".into()),
            })
        };
        let out = h
            .bridge
            .on_event(outcome(Ok(cabinetd_modbus::Value::UInt(42)), true), t0);
        let [RecordBody::Event(e)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(
            (&e.kind, e.severity),
            (&EventKind::WriteOutcome, Severity::Info)
        );
        assert_eq!(e.source, "meter/power");
        assert_eq!(
            e.data,
            json!({"point": "meter/power", "requested": 42, "read": 42, "applied": true, "id": "c-9"})
        );
        assert!(
            e.message.contains("(command c-9) was applied"),
            "{}",
            e.message
        );
        let out = h
            .bridge
            .on_event(outcome(Ok(cabinetd_modbus::Value::UInt(7)), false), t0);
        let [RecordBody::Event(e)] = &out[..] else {
            panic!("{out:?}")
        };
        assert_eq!(e.severity, Severity::Minor);
        assert_eq!(e.data["read"], 7);
        assert!(
            e.message.contains("was not applied: it reads 7"),
            "{}",
            e.message
        );
    }

    /// Issue 14 item 4: `"value":232.10000000000002` on the wire. The record's JSON text carries
    /// the decimals the scale implies.
    #[test]
    fn scaled_readings_have_no_float_noise_in_the_records_json() {
        let mut dev = device();
        dev.spec.points[0].scale = 0.1;
        dev.spec.points[1] = PointSpec::new("current", Table::Input, 1, DataType::U16);
        dev.spec.points[1].scale = 0.01;
        let mut bridge = bridge_of(dev.clone());
        // As the unit task decodes them.
        let decode = |i: usize, raw: u16| {
            cabinetd_modbus::decode::decode_registers(&dev.spec.points[i], &[raw])
        };
        let ev = DeviceEvent::Poll(PollReport {
            at: SystemTime::UNIX_EPOCH,
            started: tokio::time::Instant::now(),
            duration: Duration::from_millis(1),
            readings: vec![(0, decode(0, 2321)), (1, decode(1, 276))],
        });
        let out = bridge.on_event(ev, Instant::now());
        let texts: Vec<String> = out
            .iter()
            .map(|r| String::from_utf8(r.to_json_with_seq(1)).unwrap())
            .collect();
        assert!(texts[0].contains(r#""value":232.1,"#), "{}", texts[0]);
        assert!(texts[1].contains(r#""value":2.76,"#), "{}", texts[1]);
    }

    #[test]
    fn devices_are_started_by_line() {
        let rtu = |name: &str, path: &str, unit: u8| {
            let mut d = device();
            d.spec.name = name.into();
            d.spec.unit_id = unit;
            d.spec.transport = cabinetd_modbus::Transport::Rtu(cabinetd_modbus::SerialSettings {
                path: path.into(),
                baud: 19200,
                parity: cabinetd_modbus::Parity::Even,
                data_bits: 8,
                stop_bits: 1,
            });
            d
        };
        let tcp = |name: &str, addr: &str| {
            let mut d = device();
            d.spec.name = name.into();
            d.spec.transport = cabinetd_modbus::Transport::Tcp {
                address: addr.into(),
            };
            d
        };
        let ls = lines(&[
            rtu("m1", "/dev/ttyUSB0", 1),
            tcp("g1", "gw:502"),
            rtu("m2", "/dev/ttyUSB0", 2),
            tcp("g2", "GW:502"),
            tcp("other", "gw:503"),
            rtu("m3", "/dev/ttyUSB0", 3),
        ]);
        let names: Vec<(&str, Vec<&str>)> = ls
            .iter()
            .map(|l| {
                (
                    l.name(),
                    l.devices().iter().map(|d| d.spec.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("serial /dev/ttyUSB0", vec!["m1", "m2", "m3"]),
                ("tcp gw:502", vec!["g1", "g2"]),
                ("tcp gw:503", vec!["other"]),
            ]
        );
        assert_eq!(
            ls[0].resources(),
            vec![Resource::SerialLine("/dev/ttyUSB0".into())]
        );
    }
}
