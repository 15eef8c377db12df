//! Prometheus metrics (SPEC §4). One [`Metrics`] per daemon, shared by `Arc`; every part updates
//! its own series and `/metrics` renders the registry. Names are fixed by the SPEC: do not rename.
//!
//! # Every series exists from the first scrape
//! A labelled series that appears only at its first increment breaks `rate()`, `increase()` and
//! absent-series alerts (issue 14). So every label value the daemon can produce is created at 0
//! before READY, from one list per label:
//! - fixed vocabularies, in [`Metrics::new`]: [`Stream::BY_PRIORITY`], [`MODES`],
//!   [`SPEC_ACTIONS`] × [`COMMAND_STATUSES`], `auth::REASONS`, [`STORE_RECOVERY_REASONS`];
//! - what the configuration names, when the part that owns it starts: [`Metrics::init_device`]
//!   (every equipment entry: `device_up`, `poll_errors_total`, `poll_duration_seconds`),
//!   [`Metrics::init_dali_bus`], [`Metrics::init_broker`], [`Metrics::init_rule`].
//!
//! A new labelled metric adds its label values to one of these lists (or a new `init_*`), and
//! `tests/metrics_scrape.rs` checks a fresh daemon's scrape has them. Counters end in `_total`,
//! nothing else does (`promtool check metrics`, checked by the same test).

use prometheus::{
    CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::record::Stream;

/// The command actions of SPEC §3 (v1, and v1.1's scenes): the `action` labels of
/// `cabinetd_commands_total` (anything else is counted as [`UNKNOWN_ACTION`]) and what a trusted
/// key's `actions` may name.
pub const SPEC_ACTIONS: [&str; 8] = [
    "point.write",
    "light.set",
    "light.release",
    "camera.goto_preset",
    "camera.reboot",
    "camera.sync_time",
    "scene.run",
    "scene.release",
];

/// Every final status of a command (the `status` label of `cabinetd_commands_total`).
pub const COMMAND_STATUSES: [&str; 4] = ["succeeded", "failed", "rejected", "expired"];

/// The modes of `cabinetd_mode{mode}`.
pub const MODES: [&str; 2] = ["connected", "autonomous"];

/// The `reason` labels of `cabinetd_store_recoveries_total` (what `outbox::Outbox::open` counts:
/// a store moved aside as corrupt, or missing although its seq marks exist).
pub const STORE_RECOVERY_REASONS: [&str; 2] = ["corrupt", "missing"];

/// The one `action` label of every command whose action is not in [`SPEC_ACTIONS`]: a new label
/// per name sent would let any sender grow the metric without bound.
pub const UNKNOWN_ACTION: &str = "unknown";

/// Every series the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `cabinetd_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
    /// `cabinetd_uplink_connected`: 1 while a broker session is up.
    pub uplink_connected: IntGauge,
    /// `cabinetd_mode{mode}`: 1 for the current of `connected` / `autonomous`.
    pub mode: IntGaugeVec,
    /// `cabinetd_outbox_records{stream}`: records stored and not yet acknowledged.
    pub outbox_records: IntGaugeVec,
    /// `cabinetd_outbox_bytes`: bytes the outbox takes on disk.
    pub outbox_bytes: IntGauge,
    /// `cabinetd_outbox_budget_bytes`: `storage.max_bytes`.
    pub outbox_budget_bytes: IntGauge,
    /// `cabinetd_outbox_oldest_record_age_seconds`.
    pub outbox_oldest_record_age_seconds: Gauge,
    /// `cabinetd_published_records_total{stream}`: records acknowledged by the broker.
    pub published_records_total: IntCounterVec,
    /// `cabinetd_evicted_records_total{stream}`: records dropped because the budget was full.
    pub evicted_records_total: IntCounterVec,
    /// `cabinetd_device_up{device,protocol}`.
    pub device_up: IntGaugeVec,
    /// `cabinetd_poll_duration_seconds{device}`.
    pub poll_duration_seconds: HistogramVec,
    /// `cabinetd_poll_errors_total{device}`.
    pub poll_errors_total: IntCounterVec,
    /// `cabinetd_commands_total{action,status}`.
    pub commands_total: IntCounterVec,
    /// `cabinetd_commands_in_flight`: commands executing now (at most the executor's limit).
    pub commands_in_flight: IntGauge,
    /// `cabinetd_uplink_reconnects_total`: broker sessions established after the first.
    pub uplink_reconnects_total: IntCounterVec,
    /// `cabinetd_energy_kwh_total`: luminaire energy of the nights accounted (`energy_daily`).
    pub energy_kwh_total: prometheus::Counter,
    /// `cabinetd_energy_baseline_kwh_total`: the same luminaires at full power over the same nights.
    pub energy_baseline_kwh_total: prometheus::Counter,
    /// `cabinetd_time_seconds`: the cabinet's clock when `/metrics` is rendered (clock drift alert).
    pub time_seconds: Gauge,
    /// `process_start_time_seconds`: when the daemon started (restart alerts), the Prometheus
    /// convention's name.
    pub process_start_time_seconds: Gauge,
    /// `cabinetd_store_recoveries_total`: corrupt stores moved aside at start.
    pub store_recoveries_total: IntCounterVec,
    /// `cabinetd_dali_lamp_failures{bus}`: gear reporting a lamp failure now.
    pub dali_lamp_failures: IntGaugeVec,
    /// `cabinetd_dali_gear_present{bus}`: gear answering on the bus.
    pub dali_gear_present: IntGaugeVec,
    /// `cabinetd_energy_wh_total{device}`: active energy metered by the device's gear since the
    /// daemon started (a counter: the sum of the increases of their cumulative meters).
    pub energy_wh_total: CounterVec,
    /// `cabinetd_rule_firings_total{rule}`: entries of each `[[rule]]` (SPEC v1.1).
    pub rule_firings_total: IntCounterVec,
    /// `cabinetd_auth_rejected_total{reason}`: commands and desired configs refused by
    /// `auth::verify` (reasons: `auth::REASONS`).
    pub auth_rejected_total: IntCounterVec,
    /// `cabinetd_tls_cert_expiry_seconds`: notAfter (Unix seconds) of the mTLS client certificate.
    pub tls_cert_expiry_seconds: Gauge,
    /// `cabinetd_incoming_dropped_total`: incoming messages over `uplink.max_incoming_bytes`,
    /// dropped unread.
    pub incoming_dropped_total: prometheus::IntCounter,
    /// `cabinetd_energy_night_kwh`: energy of the night running so far (0 by day).
    pub energy_night_kwh: Gauge,
    /// `cabinetd_energy_night_baseline_kwh`: the same luminaires at full power over the same part
    /// of the night.
    pub energy_night_baseline_kwh: Gauge,
    /// `cabinetd_energy_night_savings_percent`: savings of the night running so far.
    pub energy_night_savings_percent: Gauge,
    /// `cabinetd_energy_night_coverage_ratio`: share of the night running so far for which
    /// readings were received (an `energy_daily` below 0.9 says so).
    pub energy_night_coverage_ratio: Gauge,
    /// `cabinetd_outbox_storage_full`: 1 while the store's filesystem is full.
    pub outbox_storage_full: IntGauge,
    /// `cabinetd_uplink_payload_bytes_total{stream}`: bytes of record payloads published (after
    /// compression), for the cost of the link.
    pub uplink_payload_bytes_total: IntCounterVec,
}

impl Metrics {
    /// Create and register every series.
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "cabinetd_build_info",
                "Build of the running daemon (always 1).",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info.with_label_values(&[version]).set(1);
        let uplink_connected = IntGauge::new(
            "cabinetd_uplink_connected",
            "1 while a session with the central post's broker is up.",
        )
        .expect("valid metric");
        let mode = IntGaugeVec::new(
            Opts::new(
                "cabinetd_mode",
                "1 for the current mode (connected or autonomous).",
            ),
            &["mode"],
        )
        .expect("valid metric");
        let outbox_records = IntGaugeVec::new(
            Opts::new(
                "cabinetd_outbox_records",
                "Records stored and not yet acknowledged.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let outbox_bytes =
            IntGauge::new("cabinetd_outbox_bytes", "Bytes the outbox takes on disk.")
                .expect("valid metric");
        let outbox_budget_bytes = IntGauge::new(
            "cabinetd_outbox_budget_bytes",
            "Hard budget of the outbox on disk (storage.max_bytes).",
        )
        .expect("valid metric");
        let outbox_oldest_record_age_seconds = Gauge::new(
            "cabinetd_outbox_oldest_record_age_seconds",
            "Age of the oldest record still waiting in the outbox (0 when empty).",
        )
        .expect("valid metric");
        let published_records_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_published_records_total",
                "Records whose message the broker acknowledged.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let evicted_records_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_evicted_records_total",
                "Records dropped unsent because the outbox budget was full.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let device_up = IntGaugeVec::new(
            Opts::new("cabinetd_device_up", "1 while the device answers."),
            &["device", "protocol"],
        )
        .expect("valid metric");
        let poll_duration_seconds = HistogramVec::new(
            HistogramOpts::new(
                "cabinetd_poll_duration_seconds",
                "Time to poll all points of a device once.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["device"],
        )
        .expect("valid metric");
        let poll_errors_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_poll_errors_total",
                "Polls that failed (timeout, transport, exception).",
            ),
            &["device"],
        )
        .expect("valid metric");
        let commands_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_commands_total",
                "Commands received, by action and final status.",
            ),
            &["action", "status"],
        )
        .expect("valid metric");
        let commands_in_flight = IntGauge::new(
            "cabinetd_commands_in_flight",
            "Commands executing now; beyond the executor's limit new ones are rejected busy.",
        )
        .expect("valid metric");
        let uplink_reconnects_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_uplink_reconnects_total",
                "Broker sessions established, by broker.",
            ),
            &["broker"],
        )
        .expect("valid metric");
        let store_recoveries_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_store_recoveries_total",
                "Stores that could not be opened and were moved aside at start.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let dali_lamp_failures = IntGaugeVec::new(
            Opts::new(
                "cabinetd_dali_lamp_failures",
                "DALI gear reporting a lamp failure now.",
            ),
            &["bus"],
        )
        .expect("valid metric");
        let dali_gear_present = IntGaugeVec::new(
            Opts::new(
                "cabinetd_dali_gear_present",
                "DALI gear answering on the bus.",
            ),
            &["bus"],
        )
        .expect("valid metric");
        let energy_wh_total = CounterVec::new(
            Opts::new(
                "cabinetd_energy_wh_total",
                "Active energy metered by the device's gear since the daemon started, Wh.",
            ),
            &["device"],
        )
        .expect("valid metric");
        let outbox_storage_full = IntGauge::new(
            "cabinetd_outbox_storage_full",
            "1 while the outbox's filesystem is full (telemetry is evicted to keep room).",
        )
        .expect("valid metric");
        let uplink_payload_bytes_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_uplink_payload_bytes_total",
                "Bytes of record payloads published, after compression.",
            ),
            &["stream"],
        )
        .expect("valid metric");
        let rule_firings_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_rule_firings_total",
                "Times each rule entered (its condition held for its `for`).",
            ),
            &["rule"],
        )
        .expect("valid metric");

        let auth_rejected_total = IntCounterVec::new(
            Opts::new(
                "cabinetd_auth_rejected_total",
                "Commands and desired configs refused by signature verification, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in crate::auth::REASONS {
            auth_rejected_total.with_label_values(&[reason]);
        }
        let tls_cert_expiry_seconds = Gauge::new(
            "cabinetd_tls_cert_expiry_seconds",
            "Expiry (notAfter, Unix seconds) of the uplink's mTLS client certificate.",
        )
        .expect("valid metric");
        let incoming_dropped_total = prometheus::IntCounter::new(
            "cabinetd_incoming_dropped_total",
            "Incoming MQTT messages over uplink.max_incoming_bytes, dropped unread.",
        )
        .expect("valid metric");
        let energy_kwh_total = prometheus::Counter::new(
            "cabinetd_energy_kwh_total",
            "Luminaire energy of the nights accounted (metered or estimated), kWh.",
        )
        .expect("valid metric");
        let energy_baseline_kwh_total = prometheus::Counter::new(
            "cabinetd_energy_baseline_kwh_total",
            "The same luminaires at full power from dusk to dawn over the same nights, kWh.",
        )
        .expect("valid metric");
        let time_seconds = Gauge::new(
            "cabinetd_time_seconds",
            "The cabinet's clock (Unix seconds) when this scrape was rendered.",
        )
        .expect("valid metric");
        let process_start_time_seconds = Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
        )
        .expect("valid metric");
        process_start_time_seconds.set(unix_now());
        for stream in Stream::BY_PRIORITY {
            outbox_records.with_label_values(&[stream.as_str()]).set(0);
            published_records_total.with_label_values(&[stream.as_str()]);
            evicted_records_total.with_label_values(&[stream.as_str()]);
            uplink_payload_bytes_total.with_label_values(&[stream.as_str()]);
        }
        for m in MODES {
            mode.with_label_values(&[m]).set(0);
        }
        // Every SPEC action × status exists from the start, so `rate()` and alerts see a 0, not
        // an absent series, before the first command.
        for action in SPEC_ACTIONS {
            for status in COMMAND_STATUSES {
                commands_total.with_label_values(&[action, status]);
            }
        }
        commands_total.with_label_values(&[UNKNOWN_ACTION, "rejected"]);
        for reason in STORE_RECOVERY_REASONS {
            store_recoveries_total.with_label_values(&[reason]);
        }

        let gauge = |name: &str, help: &str| Gauge::new(name, help).expect("valid metric");
        let energy_night_kwh = gauge(
            "cabinetd_energy_night_kwh",
            "Luminaire energy of the night running so far, kWh (0 by day).",
        );
        let energy_night_baseline_kwh = gauge(
            "cabinetd_energy_night_baseline_kwh",
            "The same luminaires at full power over the same part of the night, kWh.",
        );
        let energy_night_savings_percent = gauge(
            "cabinetd_energy_night_savings_percent",
            "Savings of the night running so far against its baseline, percent.",
        );
        let energy_night_coverage_ratio = gauge(
            "cabinetd_energy_night_coverage_ratio",
            "Share of the night running so far covered by readings (0..1).",
        );
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(build_info.clone()),
            Box::new(uplink_connected.clone()),
            Box::new(mode.clone()),
            Box::new(outbox_records.clone()),
            Box::new(outbox_bytes.clone()),
            Box::new(outbox_budget_bytes.clone()),
            Box::new(outbox_oldest_record_age_seconds.clone()),
            Box::new(published_records_total.clone()),
            Box::new(evicted_records_total.clone()),
            Box::new(device_up.clone()),
            Box::new(poll_duration_seconds.clone()),
            Box::new(poll_errors_total.clone()),
            Box::new(commands_total.clone()),
            Box::new(commands_in_flight.clone()),
            Box::new(uplink_reconnects_total.clone()),
            Box::new(store_recoveries_total.clone()),
            Box::new(dali_lamp_failures.clone()),
            Box::new(dali_gear_present.clone()),
            Box::new(energy_wh_total.clone()),
            Box::new(rule_firings_total.clone()),
            Box::new(energy_kwh_total.clone()),
            Box::new(energy_baseline_kwh_total.clone()),
            Box::new(time_seconds.clone()),
            Box::new(process_start_time_seconds.clone()),
            Box::new(auth_rejected_total.clone()),
            Box::new(tls_cert_expiry_seconds.clone()),
            Box::new(incoming_dropped_total.clone()),
            Box::new(energy_night_kwh.clone()),
            Box::new(energy_night_baseline_kwh.clone()),
            Box::new(energy_night_savings_percent.clone()),
            Box::new(energy_night_coverage_ratio.clone()),
            Box::new(outbox_storage_full.clone()),
            Box::new(uplink_payload_bytes_total.clone()),
        ];
        for c in collectors {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            build_info,
            uplink_connected,
            mode,
            outbox_records,
            outbox_bytes,
            outbox_budget_bytes,
            outbox_oldest_record_age_seconds,
            published_records_total,
            evicted_records_total,
            device_up,
            poll_duration_seconds,
            poll_errors_total,
            commands_total,
            commands_in_flight,
            uplink_reconnects_total,
            store_recoveries_total,
            dali_lamp_failures,
            dali_gear_present,
            energy_wh_total,
            rule_firings_total,
            energy_kwh_total,
            energy_baseline_kwh_total,
            time_seconds,
            process_start_time_seconds,
            auth_rejected_total,
            tls_cert_expiry_seconds,
            incoming_dropped_total,
            energy_night_kwh,
            energy_night_baseline_kwh,
            energy_night_savings_percent,
            energy_night_coverage_ratio,
            outbox_storage_full,
            uplink_payload_bytes_total,
        }
    }

    /// The `action` label of `cabinetd_commands_total` for an action name as sent: itself when
    /// SPEC knows it, [`UNKNOWN_ACTION`] otherwise.
    pub fn action_label(name: &str) -> &str {
        if SPEC_ACTIONS.contains(&name) {
            name
        } else {
            UNKNOWN_ACTION
        }
    }

    /// The series of one equipment entry (a Modbus device, a DALI bus, a camera), at 0 when it
    /// starts: `device_up` (down until it answers), `poll_errors_total`, `poll_duration_seconds`.
    pub fn init_device(&self, device: &str, protocol: &str) {
        self.device_up.with_label_values(&[device, protocol]).set(0);
        self.poll_errors_total.with_label_values(&[device]);
        self.poll_duration_seconds.with_label_values(&[device]);
    }

    /// The series of one DALI bus: gear present, lamp failures, metered energy.
    pub fn init_dali_bus(&self, bus: &str) {
        self.dali_gear_present.with_label_values(&[bus]).set(0);
        self.dali_lamp_failures.with_label_values(&[bus]).set(0);
        self.energy_wh_total.with_label_values(&[bus]);
    }

    /// The series of one broker of the failover list (`Broker::url`, the one spelling).
    pub fn init_broker(&self, url: &str) {
        self.uplink_reconnects_total.with_label_values(&[url]);
    }

    /// The series of one `[[rule]]`.
    pub fn init_rule(&self, rule: &str) {
        self.rule_firings_total.with_label_values(&[rule]);
    }

    /// Set `cabinetd_mode`: exactly one of the modes is 1.
    pub fn set_mode(&self, current: &str) {
        for m in MODES {
            self.mode
                .with_label_values(&[m])
                .set(i64::from(m == current));
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        self.time_seconds.set(unix_now());
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into memory cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_spec_names() {
        let m = Metrics::new("0.1.0");
        m.set_mode("autonomous");
        m.device_up
            .with_label_values(&["meter-main", "modbus"])
            .set(1);
        m.poll_duration_seconds
            .with_label_values(&["meter-main"])
            .observe(0.01);
        m.poll_errors_total.with_label_values(&["meter-main"]).inc();
        m.commands_total
            .with_label_values(&["point.write", "succeeded"])
            .inc();
        m.dali_lamp_failures.with_label_values(&["bus-a"]).set(2);
        m.dali_gear_present.with_label_values(&["bus-a"]).set(6);
        m.energy_wh_total
            .with_label_values(&["bus-a"])
            .inc_by(1500.0);
        let text = m.render();
        for name in [
            "cabinetd_build_info{version=\"0.1.0\"} 1",
            "cabinetd_uplink_connected 0",
            "cabinetd_mode{mode=\"autonomous\"} 1",
            "cabinetd_mode{mode=\"connected\"} 0",
            "cabinetd_outbox_records{stream=\"telemetry\"} 0",
            "cabinetd_outbox_bytes",
            "cabinetd_outbox_oldest_record_age_seconds",
            "cabinetd_published_records_total{stream=\"events\"} 0",
            "cabinetd_evicted_records_total{stream=\"results\"} 0",
            "cabinetd_device_up{device=\"meter-main\",protocol=\"modbus\"} 1",
            "cabinetd_poll_duration_seconds_bucket{device=\"meter-main\"",
            "cabinetd_poll_errors_total{device=\"meter-main\"} 1",
            "cabinetd_commands_total{action=\"point.write\",status=\"succeeded\"} 1",
            "cabinetd_dali_lamp_failures{bus=\"bus-a\"} 2",
            "cabinetd_dali_gear_present{bus=\"bus-a\"} 6",
            "cabinetd_energy_wh_total{device=\"bus-a\"} 1500",
            "cabinetd_auth_rejected_total{reason=\"bad_signature\"} 0",
            "cabinetd_tls_cert_expiry_seconds 0",
            "cabinetd_incoming_dropped_total 0",
            "cabinetd_commands_total{action=\"unknown\",status=\"rejected\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn unknown_actions_share_one_label() {
        assert_eq!(Metrics::action_label("light.set"), "light.set");
        assert_eq!(Metrics::action_label("scene.run"), "scene.run");
        assert_eq!(Metrics::action_label("fly.to.the.moon"), "unknown");
    }
}
