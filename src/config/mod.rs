//! Configuration: TOML files → raw document with positions → validated [`Config`].
//!
//! Several files merge in order, later keys win (`cabinetd.toml` then `conf.d/*.toml`). Validation
//! reports every problem at once, each as `FILE:LINE:COL: message` ([`ConfigErrors`]); a config is
//! either valid as a whole or not used at all. Defaults are named constants below, each with why.
//!
//! Entry points: [`load_files`] (the `--config` files), [`load_sources`] and
//! [`load_sources_with_version`] (a config received over MQTT, as one source named `<desired>`).
//! Pipeline: `tree` (span-preserving parse and merge; the merge rule is in its docs and in
//! `config/cabinetd.example.toml`) → `validate` (walks the merged tree, collecting every error) →
//! `load` (sorts errors by file order then position). `units` holds the pure value parsers.

mod automation;
pub mod desired;
pub mod files;
mod load;
#[cfg(test)]
mod tests;
mod tree;
mod units;
mod validate;

pub use automation::*;
pub use files::{read_secret, MAX_SECRET_BYTES};
pub use load::{digest, load_files, load_sources, load_sources_with_version};
pub use remote::{check_remote_source, DESIRED_SOURCE, LOCAL_ONLY_SECTIONS};

mod remote;

/// `mqtt[s]://host[:port]` → [`Broker`] (also for the ops tool's `--broker`).
pub fn parse_broker(url: &str) -> Result<Broker, String> {
    units::parse_broker(url)
}
pub use units::time_zone;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::light::{LightTarget, StepTime};
pub use cabinetd_modbus::{
    DataType, DeviceSpec, Parity, PointSpec, SerialSettings, Table, Transport, WordOrder,
};

/// Minimum interval between two publications of an unchanged point (SPEC: report by exception).
/// A minute keeps the uplink quiet on a stable cabinet while proving every point is alive.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(60);
/// How often appended records are made durable (group commit). 25 ms bounds the latency a record
/// waits before it may be published while keeping fsyncs to ≤ 40/s on SD cards.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(25);
/// MQTT keep-alive: a black-holed broker is noticed within 1–2 × this (rumqttc pings once per period).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Largest MQTT message the cabinet publishes; batches are cut to fit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest incoming message (command or desired config) read; larger ones are dropped unread and
/// counted, never a reason to lose the session (issue 12). A signed desired config of a big
/// cabinet is ~100 KiB; 1 MiB leaves ample room.
pub const DEFAULT_MAX_INCOMING_BYTES: usize = 1024 * 1024;
/// Remote desired configs may not set a DALI `system_failure_level` below this (percent): the
/// level the street keeps when the cabinet computer or the bus fails.
pub const DEFAULT_DALI_MIN_SYSTEM_FAILURE_LEVEL: f64 = 50.0;
/// Remote desired configs may not set a DALI `power_on_level` below this (percent): the level
/// after a power cut, before the daemon is back.
pub const DEFAULT_DALI_MIN_POWER_ON_LEVEL: f64 = 50.0;
/// How long a desired configuration must keep the daemon healthy before it is confirmed; an
/// unhealthy one (uplink not back, a device that was up stuck down) is rolled back to the last
/// good one (`config.confirm_after`, issue 12). Two minutes: several reconnect attempts and
/// several polls of the slowest usual device, short enough that a broken cabinet is back soon.
pub const DEFAULT_CONFIRM_AFTER: Duration = Duration::from_secs(120);
/// Unacknowledged publishes in flight at once (the replay window).
pub const DEFAULT_INFLIGHT: u16 = 32;
/// Default outbox budget (SPEC example).
pub const DEFAULT_STORAGE_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default HTTP endpoint (SPEC example): loopback only, ops scrape through the cabinet's agent.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:9108";
/// Default MQTT topic prefix (SPEC).
pub const DEFAULT_TOPIC_PREFIX: &str = "cabinets/v1";
/// Default Modbus poll period.
pub const DEFAULT_MODBUS_POLL: Duration = Duration::from_secs(1);
/// Default Modbus request timeout.
pub const DEFAULT_MODBUS_TIMEOUT: Duration = Duration::from_millis(500);
/// Default DALI status poll period.
pub const DEFAULT_DALI_POLL: Duration = Duration::from_secs(30);
/// DALI energy/diagnostic banks are slow to read; every 15 min is enough for daily energy.
pub const DEFAULT_DALI_ENERGY_POLL: Duration = Duration::from_secs(15 * 60);

/// The validated configuration of one cabinet.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// A short stable digest of the merged configuration (or the `version` of a desired config).
    pub version: String,
    /// `[cabinet]`.
    pub cabinet: CabinetConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[uplink]`.
    pub uplink: UplinkConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[modbus]]`, in configuration order.
    pub modbus: Vec<ModbusDevice>,
    /// `[[dali]]`, in configuration order.
    pub dali: Vec<DaliBus>,
    /// `[[camera]]`, in configuration order.
    pub cameras: Vec<Camera>,
    /// `[[simulator]]`: built-in simulated equipment (demo cabinet, tests).
    pub simulators: Vec<Simulator>,
    /// `[onvif]`: WS-Discovery in the daemon.
    pub onvif: OnvifConfig,
    /// `[lighting]`: the night's programme (empty when the section is absent).
    pub lighting: LightingConfig,
    /// `[security]`: signed commands and desired configs (local files only).
    pub security: crate::auth::SecurityConfig,
    /// `[safety]`: the envelope no desired config may widen (local files only).
    pub safety: SafetyConfig,
    /// `[[rule]]`, `[[scene]]`, `[[lighting.adaptive]]`, `uplink.autonomous_after`.
    pub automation: Automation,
    /// `[config]`: the confirmation window of desired configurations (local files only).
    pub rollback: RollbackConfig,
}

/// `[config]`: when a desired configuration is confirmed or rolled back (`daemon::confirm`).
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackConfig {
    /// `confirm_after`: how long a new desired configuration must keep the daemon healthy
    /// (0: confirmed at once, never rolled back).
    pub confirm_after: Duration,
    /// `uplink_critical`: devices the cabinet's uplink depends on (e.g. the 4G router polled
    /// over Modbus). A desired configuration that removes one that was up is rolled back, like
    /// one that leaves a device that was up stuck down.
    pub uplink_critical: Vec<String>,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        RollbackConfig {
            confirm_after: DEFAULT_CONFIRM_AFTER,
            uplink_critical: Vec::new(),
        }
    }
}

/// `[safety]`: what a remote desired configuration may not do (checked by [`crate::safety`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyConfig {
    /// Lowest DALI `system_failure_level` (percent) a desired config may set.
    pub dali_min_system_failure_level: f64,
    /// Lowest DALI `power_on_level` (percent) a desired config may set.
    pub dali_min_power_on_level: f64,
    /// `DEVICE/POINT`s a desired config may add as writable or change (none by default).
    pub desired_may_write: Vec<String>,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            dali_min_system_failure_level: DEFAULT_DALI_MIN_SYSTEM_FAILURE_LEVEL,
            dali_min_power_on_level: DEFAULT_DALI_MIN_POWER_ON_LEVEL,
            desired_may_write: Vec::new(),
        }
    }
}

impl Config {
    /// The first section whose change needs a restart: the store, the uplink session, the HTTP
    /// socket and the cabinet's identity are not swapped while running. The broker list
    /// (`uplink.broker`) is the exception: the uplink switches to a new list at once (and a
    /// desired configuration pointing at an unreachable broker is rolled back).
    pub fn restart_section(&self, new: &Config) -> Option<&'static str> {
        let session = |u: &UplinkConfig| UplinkConfig {
            brokers: Vec::new(),
            ..u.clone()
        };
        [
            ("cabinet", self.cabinet != new.cabinet),
            ("storage", self.storage != new.storage),
            ("uplink", session(&self.uplink) != session(&new.uplink)),
            ("http", self.http != new.http),
        ]
        .into_iter()
        .find_map(|(section, changed)| changed.then_some(section))
    }
}

/// A thing only one entry can own at a time (as Vector's `Resource`). Validation refuses two
/// owners of one; the equipment rack never lets two generations hold one at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A serial line (opened exclusively): a Modbus RTU line, a DALI interface.
    SerialLine(PathBuf),
    /// A listening socket.
    Listen(SocketAddr),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::SerialLine(p) => write!(f, "serial line {}", p.display()),
            Resource::Listen(a) => write!(f, "listening address {a}"),
        }
    }
}

impl ModbusDevice {
    /// An RTU device's line (shared with the other units on it: see [`SerialSettings`]).
    pub fn resources(&self) -> Vec<Resource> {
        match &self.spec.transport {
            Transport::Rtu(s) => vec![Resource::SerialLine(s.path.clone())],
            Transport::Tcp { .. } => Vec::new(),
        }
    }
}

impl DaliBus {
    /// An ATX HAT's serial port.
    pub fn resources(&self) -> Vec<Resource> {
        match &self.interface {
            DaliInterface::AtxHat { port } => vec![Resource::SerialLine(port.clone())],
            DaliInterface::Sim { .. } => Vec::new(),
        }
    }
}

impl Simulator {
    /// Its listening address.
    pub fn resources(&self) -> Vec<Resource> {
        vec![Resource::Listen(self.listen)]
    }
}

/// `[cabinet]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CabinetConfig {
    /// `[a-z0-9-]{1,64}`, used in topics.
    pub id: String,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
    /// IANA name, e.g. `Europe/Paris`.
    pub timezone: String,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// Directory of the sled database and state.
    pub path: PathBuf,
    /// Hard budget of the outbox on disk, in bytes.
    pub max_bytes: u64,
    /// Group-commit interval.
    pub flush_interval: Duration,
}

/// One broker of the failover list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `mqtt` or `mqtts`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// Port (1883 / 8883 by default).
    pub port: u16,
}

impl Broker {
    /// `mqtt://host:port` or `mqtts://host:port` (`[v6]` hosts bracketed): the one spelling of
    /// a broker in logs, `/status`, `cabinetd status` and metric labels.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// `[uplink]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    /// Brokers, tried in order (failover).
    pub brokers: Vec<Broker>,
    /// `P` of the topics.
    pub topic_prefix: String,
    /// MQTT client id (default `cabinetd-<cabinet id>`).
    pub client_id: String,
    /// MQTT user name, if the broker wants one.
    pub username: Option<String>,
    /// File holding the MQTT password (secrets never live in the TOML).
    pub password_file: Option<PathBuf>,
    /// PEM CA bundle for `mqtts://` (default: none → system roots are not used, TLS needs a CA).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mTLS; given together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, SEC1 or PKCS#1).
    pub key_file: Option<PathBuf>,
    /// Incoming messages larger than this are dropped unread (event `message_dropped`).
    pub max_incoming_bytes: usize,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Largest message published.
    pub max_message_bytes: usize,
    /// Publishes in flight at once.
    pub inflight: u16,
    /// Optional cap on replayed records per second (thin links).
    pub replay_rate: Option<u32>,
    /// Payload encoding of record messages (`uplink.compression`, SPEC v1.1).
    pub compression: Compression,
}

/// `uplink.compression`: how record envelopes go on the wire (SPEC §3, v1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain JSON (v1; the default, for central posts that predate v1.1).
    #[default]
    None,
    /// One zstd frame whose content is the JSON envelope.
    Zstd,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address of `/metrics`, `/healthz`, `/readyz`, `/status`.
    pub listen: SocketAddr,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Plain lines, journald-friendly (no timestamps when under systemd).
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter, e.g. `info,cabinetd_modbus=debug`.
    pub filter: String,
    /// Line format.
    pub format: LogFormat,
}

/// When an unchanged reading is published again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportPolicy {
    /// Publish when `|new - last published| > deadband`; `None` = on any change.
    pub deadband: Option<f64>,
    /// Publish at least this often.
    pub heartbeat: Duration,
}

/// A `[[modbus]]` device with its report policies.
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusDevice {
    /// What to poll.
    pub spec: DeviceSpec,
    /// Per point, same order as `spec.points`.
    pub report: Vec<ReportPolicy>,
}

/// DALI interface kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaliInterface {
    /// ATX DALI HAT serial line protocol on `port`.
    AtxHat {
        /// Serial device.
        port: PathBuf,
    },
    /// Built-in simulated bus with this many luminaires.
    Sim {
        /// Number of simulated gear (short addresses 0..n).
        luminaires: u8,
    },
}

/// A DALI group and the fallback the gear keeps on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct DaliGroup {
    /// Group number 0..=15.
    pub number: u8,
    /// Short addresses in this group.
    pub members: Vec<u8>,
    /// Level (percent) the gear goes to at power-on.
    pub power_on_level: Option<f64>,
    /// Level (percent) the gear goes to when the bus fails.
    pub system_failure_level: Option<f64>,
    /// Fade time (DALI fade time code 0..=15).
    pub fade_time: Option<u8>,
    /// Minimum level (percent).
    pub min_level: Option<f64>,
    /// Maximum level (percent).
    pub max_level: Option<f64>,
}

/// A `[[dali]]` bus.
#[derive(Debug, Clone, PartialEq)]
pub struct DaliBus {
    /// Unique device name.
    pub name: String,
    /// Interface.
    pub interface: DaliInterface,
    /// Status poll period.
    pub poll: Duration,
    /// Energy / diagnostics poll period.
    pub energy_poll: Duration,
    /// Groups.
    pub groups: Vec<DaliGroup>,
    /// Rated power of one luminaire in watts, for energy estimates when the gear does not meter.
    pub rated_power_w: Option<f64>,
}

/// A `[[camera]]`: an ONVIF camera, supervised for health, clock and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Camera {
    /// Unique device name.
    pub name: String,
    /// ONVIF device service URL (`http://host[:port]/path`).
    pub address: String,
    /// ONVIF user.
    pub username: String,
    /// File holding the password (read when the camera starts; checked by `check-config`).
    pub password_file: PathBuf,
    /// Health poll period (clock, liveness, response time).
    pub poll: Duration,
    /// Timeout of each request to the camera.
    pub timeout: Duration,
    /// Subscribe to the camera's events (motion, tamper) through a pull point.
    pub events: bool,
    /// `camera_clock_drift` when the camera's clock is off by more than this.
    pub clock_drift_threshold: Duration,
    /// After the camera refuses the credentials, no credentialed request for this long
    /// (doubling up to an hour): cameras lock accounts after repeated failed logins.
    pub auth_retry: Duration,
    /// Report-by-exception heartbeat of the camera's points.
    pub heartbeat: Duration,
}

/// Default camera health poll: liveness and clock every 30 s is plenty for supervision and
/// costs one anonymous request.
pub const DEFAULT_CAMERA_POLL: Duration = Duration::from_secs(30);
/// Default camera request timeout: cameras on a cabinet's LAN answer in milliseconds; some
/// take seconds for GetProfiles.
pub const DEFAULT_CAMERA_TIMEOUT: Duration = Duration::from_secs(5);
/// Default clock drift threshold: beyond a few seconds a camera's timestamps mislead whoever
/// reads its recordings (and some cameras refuse WS-Security at ±5 s).
pub const DEFAULT_CLOCK_DRIFT_THRESHOLD: Duration = Duration::from_secs(5);
/// Default first wait after a credential refusal (doubling to an hour): slow enough that a
/// wrong password never locks the account (Reolink locks after a few failures).
pub const DEFAULT_CAMERA_AUTH_RETRY: Duration = Duration::from_secs(300);
/// Default WS-Discovery period when `[onvif] discovery = true`.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(600);
/// Default WS-Discovery answer window (ProbeMatches arrive within 2–3 s).
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(3);

/// `[onvif]`: WS-Discovery in the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnvifConfig {
    /// Probe the camera network every `discovery_interval` and raise `camera_unknown` for a
    /// camera that answers but is not configured. Off by default.
    pub discovery: bool,
    /// Period of the probes.
    pub discovery_interval: Duration,
    /// How long answers are collected after each probe.
    pub discovery_timeout: Duration,
    /// Interface the probes go out of (a name like `eth1`, or its IPv4 address).
    pub discovery_interface: Option<String>,
}

impl Default for OnvifConfig {
    fn default() -> Self {
        OnvifConfig {
            discovery: false,
            discovery_interval: DEFAULT_DISCOVERY_INTERVAL,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
            discovery_interface: None,
        }
    }
}

/// What a simulator imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatorKind {
    /// A three-phase energy meter on Modbus TCP whose registers change every second.
    EnergyMeter,
}

/// A `[[simulator]]`: equipment served in-process on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulator {
    /// Name, for logs.
    pub name: String,
    /// What it imitates.
    pub kind: SimulatorKind,
    /// Loopback address to serve on.
    pub listen: SocketAddr,
}

/// Which sun depression below the horizon defines dusk and dawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Twilight {
    /// Sunset/sunrise: centre of the sun 0.833° below the horizon (zenith 90.833°).
    #[default]
    Official,
    /// Civil twilight: centre of the sun 6° below the horizon (zenith 96°).
    Civil,
}

/// One `[[lighting.step]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LightingStep {
    /// What it sets (same syntax as `light.set`).
    pub target: LightTarget,
    /// When.
    pub at: StepTime,
    /// 0..=100.
    pub level_percent: f64,
    /// Shown in the plan and in logs (default: the `at` text).
    pub reason: String,
    /// `nights`: the day types of the nights it applies on (weekday names `mon`…`sun` and
    /// calendar names); `None`: every night.
    pub nights: Option<Vec<String>>,
}

/// Dates of one `[[lighting.calendar]]` entry, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarDates {
    /// `"MM-DD"` or `"MM-DD..MM-DD"`: every year (a range may run over the year end).
    Yearly {
        /// First (month, day).
        from: (i8, i8),
        /// Last (month, day).
        to: (i8, i8),
    },
    /// `"YYYY-MM-DD"` or `"YYYY-MM-DD..YYYY-MM-DD"`: once.
    Once {
        /// First date.
        from: jiff::civil::Date,
        /// Last date.
        to: jiff::civil::Date,
    },
}

impl CalendarDates {
    /// Whether `d` is one of these dates.
    pub fn contains(&self, d: jiff::civil::Date) -> bool {
        match *self {
            CalendarDates::Once { from, to } => from <= d && d <= to,
            CalendarDates::Yearly { from, to } => {
                let md = (d.month(), d.day());
                if from <= to {
                    from <= md && md <= to
                } else {
                    md >= from || md <= to
                }
            }
        }
    }
}

/// A `[[lighting.calendar]]`: named dates of exception (holidays, city events). A night whose
/// date is in a calendar is of that calendar's day type instead of its weekday.
#[derive(Debug, Clone, PartialEq)]
pub struct LightingCalendar {
    /// `[a-z0-9_-]+`, not a weekday name; what `nights` names.
    pub name: String,
    /// Its dates.
    pub dates: Vec<CalendarDates>,
}

impl LightingConfig {
    /// The day type of the night of `date`: the first calendar (configuration order) holding
    /// the date, else its weekday (`mon`…`sun`).
    pub fn day_type(&self, date: jiff::civil::Date) -> &str {
        self.calendars
            .iter()
            .find(|c| c.dates.iter().any(|d| d.contains(date)))
            .map_or_else(
                || Weekdays::NAMES[date.weekday().to_monday_zero_offset() as usize],
                |c| c.name.as_str(),
            )
    }

    /// Whether the programme has weekday variants or calendar exceptions.
    pub fn has_day_types(&self) -> bool {
        !self.calendars.is_empty() || self.steps.iter().any(|s| s.nights.is_some())
    }
}

/// `[lighting]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LightingConfig {
    /// Dusk/dawn definition.
    pub twilight: Twilight,
    /// `DEVICE/POINT` of a Modbus Wh counter metering the lighting circuit.
    pub energy_meter: Option<String>,
    /// The night's programme, in configuration order.
    pub steps: Vec<LightingStep>,
    /// `[[lighting.calendar]]`, in configuration order (the first holding a date wins).
    pub calendars: Vec<LightingCalendar>,
}

/// One problem in a config file, with its position (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File name as given (or `<desired>` for a config received over MQTT).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

/// Every problem found, in file then position order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A named TOML text (a file's path and content, or a desired config from MQTT).
#[derive(Debug, Clone)]
pub struct Source {
    /// Shown in errors.
    pub name: String,
    /// TOML text.
    pub text: String,
}
