//! Event kinds and the other wire names of events, as enums: a typo in a kind is a compile error,
//! not a silent change of the contract (SPEC §3).
//!
//! [`EventKind`] lists every kind the daemon raises (SPEC v1.1 plus the v1 additions the README
//! documents); [`EventKind::ALL`] pins them and a test checks each name round-trips. Rules may
//! raise kinds of their own ([`CustomKind`]): checked at load (`[a-z0-9_]+`, at most 64
//! characters, not a built-in name). [`EquipmentKind`] is the `protocol` of `/status`, of
//! `cabinetd_device_up` and of `device_down`/`device_up` data.
//!
//! Each kind with a fixed `data` shape has one constructor on `record::Event` (or, for the DALI
//! gear transitions, in `equipment::dali::points`), so each shape is written once. This module
//! is a leaf: `record` builds on it, not the other way round.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// The `kind` of an event record.
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
            /// A kind named by a rule (`[[rule.then]] action = "event"`), e.g. `ice_risk`.
            Custom(CustomKind),
        }

        impl EventKind {
            /// Every built-in kind, in declaration order.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The wire name (`device_down`, …).
            pub fn as_str(&self) -> &str {
                match self {
                    $(EventKind::$variant => $name,)*
                    EventKind::Custom(c) => c.as_str(),
                }
            }

            /// The built-in kind of this name, if any.
            pub fn builtin(name: &str) -> Option<EventKind> {
                match name {
                    $($name => Some(EventKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A device or bus stopped answering (data `{protocol, error}`).
    DeviceDown = "device_down",
    /// It answers again (data `{protocol}`).
    DeviceUp = "device_up",
    /// The outbox dropped unsent records to stay within its budget.
    OutboxEvicted = "outbox_evicted",
    /// The outbox store was lost and started fresh.
    StoreRecovered = "store_recovered",
    /// A DALI gear answers (again).
    GearFound = "gear_found",
    /// A DALI gear stopped answering.
    GearMissing = "gear_missing",
    /// A DALI lamp failure appeared or cleared.
    LampFailure = "lamp_failure",
    /// A DALI control gear failure appeared or cleared.
    GearFailure = "gear_failure",
    /// Several DALI gear answer one short address.
    DaliCollision = "dali_collision",
    /// A gear's groups or fallback differed from the configuration and were reprogrammed.
    DaliConfigDrift = "dali_config_drift",
    /// A gear refused its configuration.
    DaliConfigError = "dali_config_error",
    /// The energy of the night just ended (SPEC §3 Energy).
    EnergyDaily = "energy_daily",
    /// Connected ↔ autonomous (data `{from, to}`).
    ModeChanged = "mode_changed",
    /// Who controls a target changed (data `{target, from, to}`).
    ControlChanged = "control_changed",
    /// A rule entered or cleared (data `{rule, state}`).
    RuleFired = "rule_fired",
    /// The wall clock jumped (data `{offset_s}`).
    ClockJump = "clock_jump",
    /// The wall clock cannot be trusted.
    ClockUntrusted = "clock_untrusted",
    /// A signed message failed its checks (data `{kid, reason, id}`).
    AuthRejected = "auth_rejected",
    /// A configuration could not be started; the previous one runs again.
    ConfigRolledBack = "config_rolled_back",
    /// ONVIF motion detected.
    Motion = "motion",
    /// ONVIF tampering detected.
    Tamper = "tamper",
    /// A camera stopped answering.
    CameraOffline = "camera_offline",
    /// A camera answers again.
    CameraOnline = "camera_online",
    /// A camera's clock is off.
    CameraClockDrift = "camera_clock_drift",
    /// A camera refused the credentials.
    CameraAuthFailed = "camera_auth_failed",
    /// An ONVIF event of a topic the daemon does not map.
    CameraUnknown = "camera_unknown",
    /// A message was dropped (over a limit, unparseable).
    MessageDropped = "message_dropped",
    /// The storage is full.
    StorageFull = "storage_full",
    /// The outbox store could not be opened for a while; records were held in memory (data
    /// `{since, until, reason, kept, discarded}`).
    OutboxUnavailable = "outbox_unavailable",
    /// The outbox store stopped taking records (the devices are held back).
    OutboxWriteFailed = "outbox_write_failed",
    /// The outcome of a write whose result was unknown when it was reported (data `{point,
    /// requested, read, applied, id}`).
    WriteOutcome = "write_outcome",
    /// A command was rejected without an id to answer to (missing, not a string, too long, or
    /// the payload unreadable): data `{action, reason, suppressed}`.
    CommandRejected = "command_rejected",
}

impl EventKind {
    /// A built-in kind for its name, else a custom kind (what a stored or received record says).
    pub fn parse(name: &str) -> Result<EventKind, String> {
        match EventKind::builtin(name) {
            Some(k) => Ok(k),
            None => CustomKind::new(name).map(EventKind::Custom),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        EventKind::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The name of a rule-defined event kind: `[a-z0-9_]+`, at most 64 characters, not a built-in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomKind(String);

impl CustomKind {
    /// Checks a rule's kind name; the error says why it cannot be one.
    pub fn new(name: &str) -> Result<CustomKind, String> {
        let shape = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !shape {
            return Err(format!(
                "event kind {name:?} must match [a-z0-9_]+ (at most 64 characters)"
            ));
        }
        if EventKind::builtin(name).is_some() {
            return Err(format!(
                "event kind {name:?} is a built-in kind the daemon raises itself"
            ));
        }
        Ok(CustomKind(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A kind of equipment: the `protocol` label of `cabinetd_device_up` and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EquipmentKind {
    /// A `[[modbus]]` device.
    Modbus,
    /// A `[[dali]]` bus.
    Dali,
    /// A `[[camera]]` (ONVIF).
    Onvif,
}

impl EquipmentKind {
    /// Every kind.
    pub const ALL: [EquipmentKind; 3] = [
        EquipmentKind::Modbus,
        EquipmentKind::Dali,
        EquipmentKind::Onvif,
    ];

    /// The wire name (`modbus`, `dali`, `onvif`).
    pub fn as_str(self) -> &'static str {
        match self {
            EquipmentKind::Modbus => "modbus",
            EquipmentKind::Dali => "dali",
            EquipmentKind::Onvif => "onvif",
        }
    }

    /// How a person calls one: `DALI bus bus-a`, `meter-main` (a Modbus device by its name).
    pub fn describe(self, name: &str) -> String {
        match self {
            EquipmentKind::Dali => format!("DALI bus {name}"),
            EquipmentKind::Modbus | EquipmentKind::Onvif => name.to_owned(),
        }
    }
}

impl fmt::Display for EquipmentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_name_round_trips() {
        let mut names = std::collections::BTreeSet::new();
        for k in EventKind::ALL {
            let name = k.as_str();
            assert!(names.insert(name), "{name} twice");
            assert_eq!(EventKind::builtin(name).as_ref(), Some(k));
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, name);
            assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), *k);
            assert!(CustomKind::new(name).is_err(), "{name} accepted as custom");
        }
        // SPEC v1.1 names, spelled out once more on purpose: renaming one is a contract change.
        for spec in [
            "device_down",
            "device_up",
            "outbox_evicted",
            "energy_daily",
            "mode_changed",
            "control_changed",
            "rule_fired",
            "clock_jump",
            "clock_untrusted",
            "auth_rejected",
            "config_rolled_back",
            "motion",
            "tamper",
            "camera_offline",
            "camera_online",
            "camera_clock_drift",
            "camera_auth_failed",
            "camera_unknown",
        ] {
            assert!(names.contains(spec), "{spec} missing");
        }
    }

    #[test]
    fn custom_kinds_are_checked() {
        let k = EventKind::parse("ice_risk").unwrap();
        assert_eq!(k, EventKind::Custom(CustomKind::new("ice_risk").unwrap()));
        assert_eq!(serde_json::to_value(&k).unwrap(), "ice_risk");
        for bad in ["", "Ice", "ice-risk", "ice risk", &"x".repeat(65)] {
            assert!(CustomKind::new(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<EventKind>("\"Bad\"").is_err());
    }

    #[test]
    fn equipment_kinds_are_lowercase() {
        for k in EquipmentKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
