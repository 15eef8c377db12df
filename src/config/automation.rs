//! Validated automation settings: `[[rule]]`, `[[scene]]`, `[[lighting.adaptive]]` and
//! `uplink.autonomous_after` (SPEC §2 v1.1), plus the catalogue of the points a rule may read or
//! write. Plain data; validation is in `config/rules.rs`, behaviour in `crate::rules`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Camera, DaliBus, DataType, ModbusDevice};
use crate::command::Action;
use crate::light::LightTarget;
use crate::record::Severity;
use crate::rules::expr::{Expr, ValueType};

/// Default `uplink.autonomous_after` (SPEC): an outage shorter than a minute is a blip.
pub const DEFAULT_AUTONOMOUS_AFTER: Duration = Duration::from_secs(60);
/// Default `hold` of `[[lighting.adaptive]]`: five minutes without activity before fading back,
/// long enough that a car every few minutes keeps the street at its traffic class.
pub const DEFAULT_ADAPTIVE_HOLD: Duration = Duration::from_secs(5 * 60);
/// Default `fade` of `[[lighting.adaptive]]`: back to the programme over 30 s (DALI fade time
/// code 13 ≈ 32 s), slow enough not to be noticed as a switch-off.
pub const DEFAULT_ADAPTIVE_FADE: Duration = Duration::from_secs(30);

/// Everything the cabinet does on its own besides the lighting programme.
#[derive(Debug, Clone, PartialEq)]
pub struct Automation {
    /// `uplink.autonomous_after`.
    pub autonomous_after: Duration,
    /// `[[rule]]`, in configuration order (the evaluation order).
    pub rules: Vec<Rule>,
    /// `[[scene]]`, in configuration order.
    pub scenes: Vec<Scene>,
    /// `[[lighting.adaptive]]`, in configuration order.
    pub adaptive: Vec<Adaptive>,
}

impl Default for Automation {
    fn default() -> Self {
        Automation {
            autonomous_after: DEFAULT_AUTONOMOUS_AFTER,
            rules: Vec::new(),
            scenes: Vec::new(),
            adaptive: Vec::new(),
        }
    }
}

/// When a rule is armed, by the cabinet's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleMode {
    /// Whatever the mode.
    #[default]
    Always,
    /// Only while the cabinet runs on its own.
    Autonomous,
    /// Only while connected to the central post.
    Connected,
}

/// `during`: the part of the day a rule (or adaptive lighting) is armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum During {
    /// Dusk to dawn, from the astronomical clock (the programme's twilight).
    Night,
    /// Local clock times in `cabinet.timezone`, minutes after midnight; `end < start` crosses
    /// midnight.
    Clock {
        /// Start, included.
        start: u16,
        /// End, excluded.
        end: u16,
    },
}

/// A set of weekdays; bit 0 is Monday … bit 6 Sunday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weekdays(pub u8);

impl Weekdays {
    /// Day names as written in the config, Monday first.
    pub const NAMES: [&'static str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

    /// Whether the day (0 = Monday) is in the set.
    pub fn contains(self, monday_zero: u8) -> bool {
        self.0 & (1 << monday_zero) != 0
    }
}

/// An action of a rule or scene, validated at load like a command.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleAction {
    /// A command action (`point.write`, `light.set`, `light.release`, `camera.*`; never
    /// `scene.*`, see [`RuleAction::from_command`]).
    Command(Action),
    /// `scene.run {scene, hold_s?}`.
    SceneRun {
        /// A configured scene.
        scene: String,
        /// Overrides the scene's own `hold`.
        hold_s: Option<f64>,
    },
    /// `scene.release {scene}`.
    SceneRelease {
        /// A configured scene.
        scene: String,
    },
    /// `event {kind, severity, message, source?}`.
    Event(EventSpec),
}

impl RuleAction {
    /// Parses an action with its arguments as the central post sends it (SPEC §3): `scene.run
    /// {scene, hold_s?}`, `scene.release {scene}`, or any command action
    /// (`command::parse_action`). Not `event` (rules and scenes only). The reason names the
    /// field. The scene is not looked up here.
    pub fn parse(
        name: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<RuleAction, String> {
        crate::command::parse_action(name, args).map(RuleAction::from_command)
    }

    /// The rule action of a command action: `scene.*` become [`RuleAction::SceneRun`] /
    /// [`RuleAction::SceneRelease`], so a [`RuleAction::Command`] never holds a scene action.
    pub fn from_command(a: Action) -> RuleAction {
        match a {
            Action::SceneRun { scene, hold_s } => RuleAction::SceneRun { scene, hold_s },
            Action::SceneRelease { scene } => RuleAction::SceneRelease { scene },
            a => RuleAction::Command(a),
        }
    }

    /// The action's name as written.
    pub fn name(&self) -> &'static str {
        match self {
            RuleAction::Command(a) => a.name(),
            RuleAction::SceneRun { .. } => "scene.run",
            RuleAction::SceneRelease { .. } => "scene.release",
            RuleAction::Event(_) => "event",
        }
    }
}

/// An event a rule or scene raises.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    /// `[a-z0-9_]+`, not a built-in kind (checked at load).
    pub kind: crate::event::CustomKind,
    /// Severity.
    pub severity: Severity,
    /// One human sentence.
    pub message: String,
    /// `DEVICE` or `DEVICE/POINT` the event is about (default `cabinetd`).
    pub source: Option<String>,
}

/// A `[[rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// `[a-z0-9_-]+`, unique.
    pub name: String,
    /// The entry condition.
    pub when: Expr,
    /// How long `when` must hold before entry.
    pub for_: Duration,
    /// Hysteresis: clear only once this holds (instead of when `when` stops holding).
    pub clear_when: Option<Expr>,
    /// How long `clear_when` must hold before the rule clears.
    pub clear_for: Duration,
    /// When the rule is armed, by mode.
    pub mode: RuleMode,
    /// When the rule is armed, by time of day.
    pub during: Option<During>,
    /// When the rule is armed, by day (of the window's start).
    pub weekdays: Option<Weekdays>,
    /// Actions on entry, in order.
    pub then: Vec<RuleAction>,
    /// Actions on clear, in order.
    pub on_clear: Vec<RuleAction>,
}

/// A `[[scene]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// `[a-z0-9_-]+`, unique.
    pub name: String,
    /// Reverts by itself after this long, unless `scene.run` gives `hold_s`.
    pub hold: Option<Duration>,
    /// Applied together, in order.
    pub actions: Vec<RuleAction>,
}

/// One row of the flow → level table: at or above `flow`, at least `level_percent`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowLevel {
    /// Usage (vehicles or people per hour; a presence boolean counts as 1).
    pub flow: f64,
    /// Light level, percent.
    pub level_percent: f64,
}

/// The default flow → level table, in the spirit of EN 13201 (CEN/TR 13201-1 picks the M class
/// from the traffic volume; one class step is ≈ −25 % luminance around M3, M3 1.0, M4 0.75,
/// M5 0.5, M6 0.3 cd/m²; with LEDs, output ∝ luminance): vehicles per hour → percent of full
/// output. Any activity at all gets the lowest class. Flows are indicative; set your own
/// `[[lighting.adaptive.level]]` from the street's design class.
pub const DEFAULT_FLOW_LEVELS: [FlowLevel; 4] = [
    FlowLevel {
        flow: 1.0,
        level_percent: 30.0,
    },
    FlowLevel {
        flow: 100.0,
        level_percent: 50.0,
    },
    FlowLevel {
        flow: 400.0,
        level_percent: 75.0,
    },
    FlowLevel {
        flow: 1000.0,
        level_percent: 100.0,
    },
];

/// A `[[lighting.adaptive]]`: usage-adaptive lighting of one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Adaptive {
    /// `[a-z0-9_-]+`, unique; the controller is `adaptive:NAME`.
    pub name: String,
    /// What it raises.
    pub target: LightTarget,
    /// The usage point (a rate or a presence boolean).
    pub usage: String,
    /// How long the level is kept after the last activity that justified it.
    pub hold: Duration,
    /// How long the fade back takes.
    pub fade: Duration,
    /// Flow → level, flows strictly increasing.
    pub levels: Vec<FlowLevel>,
}

/// What is known of a point a rule reads or writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointInfo {
    /// Its value type.
    pub ty: ValueType,
    /// Whether `point.write` may write it.
    pub writable: bool,
    /// Lowest value a write may set.
    pub min: Option<f64>,
    /// Highest value a write may set.
    pub max: Option<f64>,
}

/// The points of DALI gear (SPEC §2) and their types. DALI part 303 input devices (occupancy
/// sensors) are not among them: the DALI adapter supervises control gear (part 102) only, and
/// their points would need its part 103 control-device layer (24-bit frames, instance
/// discovery, event messages); a presence sensor over Modbus serves usage-adaptive lighting.
pub const DALI_POINTS: [(&str, ValueType); 7] = [
    ("level", ValueType::Number),
    ("lamp_failure", ValueType::Bool),
    ("gear_failure", ValueType::Bool),
    ("present", ValueType::Bool),
    ("power_w", ValueType::Number),
    ("energy_wh", ValueType::Number),
    ("operating_hours", ValueType::Number),
];

/// The points of an ONVIF camera (SPEC §2) and their types.
pub const CAMERA_POINTS: [(&str, ValueType); 3] = [
    ("online", ValueType::Bool),
    ("clock_offset_s", ValueType::Number),
    ("response_ms", ValueType::Number),
];

/// Every point of a configuration: Modbus points from their `[[modbus.point]]`, DALI points
/// `BUS/ADDR/POINT` for a configured bus and ADDR 0..=63, camera points `CAM/POINT`.
#[derive(Debug, Clone, Default)]
pub struct PointCatalog {
    modbus: BTreeMap<String, PointInfo>,
    dali: Vec<String>,
    cameras: Vec<String>,
}

impl PointCatalog {
    /// The catalogue of the given devices.
    pub fn new(modbus: &[ModbusDevice], dali: &[DaliBus], cameras: &[Camera]) -> PointCatalog {
        let mut m = BTreeMap::new();
        for d in modbus {
            for p in &d.spec.points {
                m.insert(
                    format!("{}/{}", d.spec.name, p.name),
                    PointInfo {
                        ty: if p.data_type == DataType::Bool {
                            ValueType::Bool
                        } else {
                            ValueType::Number
                        },
                        writable: p.writable,
                        min: p.min,
                        max: p.max,
                    },
                );
            }
        }
        PointCatalog {
            modbus: m,
            dali: dali.iter().map(|b| b.name.clone()).collect(),
            cameras: cameras.iter().map(|c| c.name.clone()).collect(),
        }
    }

    /// What is known of `point`, `None` when it is not a point of this cabinet.
    pub fn get(&self, point: &str) -> Option<PointInfo> {
        if let Some(i) = self.modbus.get(point) {
            return Some(*i);
        }
        let read_only = |ty| PointInfo {
            ty,
            writable: false,
            min: None,
            max: None,
        };
        let parts: Vec<&str> = point.split('/').collect();
        match parts.as_slice() {
            [bus, addr, name] if self.dali.iter().any(|b| b == bus) => {
                // Canonical short addresses only ("07" would name a point nobody publishes).
                let a: u8 = addr.parse().ok().filter(|a| *a <= 63)?;
                (a.to_string() == *addr).then_some(())?;
                DALI_POINTS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, ty)| read_only(*ty))
            }
            [cam, name] if self.cameras.iter().any(|c| c == cam) => CAMERA_POINTS
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, ty)| read_only(*ty)),
            _ => None,
        }
    }

    /// Whether `name` is a configured device (Modbus, DALI bus or camera).
    pub fn is_device(&self, name: &str) -> bool {
        self.dali.iter().any(|b| b == name)
            || self.cameras.iter().any(|c| c == name)
            || self
                .modbus
                .keys()
                .any(|k| k.split_once('/').is_some_and(|(d, _)| d == name))
    }

    /// Known names for "did you mean": Modbus points, and the point names of each bus and
    /// camera with `ADDR` as written in `like` (so `bus-a/12/levl` suggests `bus-a/12/level`).
    pub fn names_like(&self, like: &str) -> Vec<String> {
        let mut out: Vec<String> = self.modbus.keys().cloned().collect();
        let parts: Vec<&str> = like.split('/').collect();
        let addr = parts.get(1).copied().unwrap_or("0");
        for b in &self.dali {
            out.extend(DALI_POINTS.iter().map(|(n, _)| format!("{b}/{addr}/{n}")));
        }
        for c in &self.cameras {
            out.extend(CAMERA_POINTS.iter().map(|(n, _)| format!("{c}/{n}")));
        }
        out
    }
}
