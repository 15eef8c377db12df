//! Maps vendor event topics to cabinetd's `motion` and `tamper` states, one transition per
//! change (pure).
//!
//! Topics are compared on their path with prefixes removed, whatever the namespace, because
//! vendors put the standard trees under their own namespaces too:
//! - motion: `VideoSource/MotionAlarm` (`State`), `RuleEngine/CellMotionDetector/Motion`
//!   (`IsMotion`), `RuleEngine/MotionRegionDetector/Motion` (`State`);
//! - tamper: `VideoSource/GlobalSceneChange/*`, `VideoSource/ImageTooDark|ImageTooBright|
//!   ImageTooBlurry/*`, `VideoSource/SignalLoss`, `RuleEngine/TamperDetector/Tamper`
//!   (`IsTamper`), `RuleEngine/CellMotionDetector/Tamper`.
//!
//! Invariants: state is kept per (kind, topic, source); a transition is emitted only when the
//! state changes (unknown counts as inactive for `Changed`); `Initialized` of an unknown state
//! is recorded and reported only when active (a motion in progress when we subscribe), and
//! after a resubscription it reports any difference (clears "stuck on" motion after a camera
//! reboot); `Deleted` forgets the state, reporting inactive if it was active. The state table
//! is bounded ([`MAX_STATES`]).

use std::collections::BTreeMap;

use crate::model::{Notification, PropertyOperation};
use crate::time::UtcDateTime;

/// Most (kind, topic, source) states tracked per camera.
pub const MAX_STATES: usize = 128;

/// What a transition is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventKind {
    /// Motion detected / ended.
    Motion,
    /// Tamper (scene change, covered, defocused, signal lost) / cleared.
    Tamper,
}

impl EventKind {
    /// The SPEC event kind (`motion`, `tamper`).
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Motion => "motion",
            EventKind::Tamper => "tamper",
        }
    }
}

/// A change of a motion or tamper state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Motion or tamper.
    pub kind: EventKind,
    /// The topic path (`VideoSource/MotionAlarm`).
    pub topic: String,
    /// The source (`VideoSourceConfigurationToken=1`), empty if the camera gave none.
    pub source: String,
    /// New state.
    pub active: bool,
    /// The camera's timestamp of the message.
    pub at: Option<UtcDateTime>,
}

fn classify(path: &str) -> Option<(EventKind, &'static [&'static str])> {
    const MOTION_ITEMS: &[&str] = &["State", "IsMotion", "Motion", "Value"];
    const TAMPER_ITEMS: &[&str] = &[
        "State",
        "IsTamper",
        "Tamper",
        "Value",
        "IsGlobalSceneChange",
    ];
    let p = path.trim_matches('/');
    let motion = p.ends_with("VideoSource/MotionAlarm")
        || p.ends_with("CellMotionDetector/Motion")
        || p.ends_with("MotionRegionDetector/Motion");
    if motion {
        return Some((EventKind::Motion, MOTION_ITEMS));
    }
    let tamper = p.contains("VideoSource/GlobalSceneChange")
        || p.contains("VideoSource/ImageTooDark")
        || p.contains("VideoSource/ImageTooBright")
        || p.contains("VideoSource/ImageTooBlurry")
        || p.ends_with("VideoSource/SignalLoss")
        || p.ends_with("TamperDetector/Tamper")
        || p.ends_with("CellMotionDetector/Tamper");
    tamper.then_some((EventKind::Tamper, TAMPER_ITEMS))
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "active" => Some(true),
        "false" | "0" | "off" | "inactive" => Some(false),
        _ => None,
    }
}

/// Per-camera event state.
#[derive(Debug, Default)]
pub struct EventMapper {
    states: BTreeMap<(EventKind, String, String), bool>,
    resubscribed: bool,
}

impl EventMapper {
    /// An empty mapper.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after a (re)subscription: the next `Initialized` messages report any difference
    /// from the last known state.
    pub fn resubscribed(&mut self) {
        self.resubscribed = !self.states.is_empty();
    }

    /// The current state of every tracked (kind, topic, source).
    pub fn states(&self) -> impl Iterator<Item = (EventKind, &str, &str, bool)> {
        self.states
            .iter()
            .map(|((k, t, s), v)| (*k, t.as_str(), s.as_str(), *v))
    }

    /// Feeds one notification; returns the transition it causes, if any.
    pub fn map(&mut self, n: &Notification) -> Option<Transition> {
        let (kind, names) = classify(&n.topic.path)?;
        let value = names
            .iter()
            .find_map(|want| n.data.iter().find(|(k, _)| k == want))
            .or_else(|| n.data.first())
            .and_then(|(_, v)| parse_bool(v));
        let source = n
            .source
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let key = (kind, n.topic.path.clone(), source.clone());
        let known = self.states.get(&key).copied();
        let transition = |active: bool| Transition {
            kind,
            topic: n.topic.path.clone(),
            source: source.clone(),
            active,
            at: n.utc_time,
        };
        if n.operation == Some(PropertyOperation::Deleted) {
            return match self.states.remove(&key) {
                Some(true) => Some(transition(false)),
                _ => None,
            };
        }
        let active = value?;
        if known.is_none() && self.states.len() >= MAX_STATES {
            return None;
        }
        self.states.insert(key, active);
        let report = match (n.operation, known) {
            (Some(PropertyOperation::Initialized), None) => active,
            (Some(PropertyOperation::Initialized), Some(was)) => self.resubscribed && was != active,
            (_, was) => was.unwrap_or(false) != active,
        };
        report.then(|| transition(active))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Topic;

    fn n(path: &str, op: Option<PropertyOperation>, item: (&str, &str)) -> Notification {
        Notification {
            topic: Topic {
                ns: None,
                path: path.into(),
            },
            operation: op,
            utc_time: None,
            source: vec![("VideoSourceConfigurationToken".into(), "1".into())],
            data: vec![(item.0.into(), item.1.into())],
        }
    }

    use PropertyOperation::*;

    #[test]
    fn one_transition_per_change() {
        let mut m = EventMapper::new();
        assert_eq!(
            m.map(&n(
                "VideoSource/MotionAlarm",
                Some(Initialized),
                ("State", "false")
            )),
            None
        );
        let t = m
            .map(&n(
                "VideoSource/MotionAlarm",
                Some(Changed),
                ("State", "true"),
            ))
            .unwrap();
        assert_eq!(
            (t.kind, t.active, t.source.as_str()),
            (EventKind::Motion, true, "VideoSourceConfigurationToken=1")
        );
        assert_eq!(
            m.map(&n(
                "VideoSource/MotionAlarm",
                Some(Changed),
                ("State", "true")
            )),
            None,
            "repeat"
        );
        assert!(
            !m.map(&n(
                "VideoSource/MotionAlarm",
                Some(Changed),
                ("State", "false")
            ))
            .unwrap()
            .active
        );
        let t = m
            .map(&n(
                "RuleEngine/CellMotionDetector/Motion",
                None,
                ("IsMotion", "true"),
            ))
            .unwrap();
        assert!(t.active && t.kind == EventKind::Motion);
        assert_eq!(
            m.map(&n(
                "Monitoring/ProcessorUsage",
                Some(Changed),
                ("Value", "0.4")
            )),
            None
        );
        assert_eq!(
            m.map(&n(
                "VideoSource/MotionAlarm",
                Some(Changed),
                ("State", "maybe")
            )),
            None
        );
    }

    #[test]
    fn initialized_active_and_after_resubscription() {
        let mut m = EventMapper::new();
        let t = m
            .map(&n(
                "RuleEngine/TamperDetector/Tamper",
                Some(Initialized),
                ("IsTamper", "true"),
            ))
            .unwrap();
        assert_eq!((t.kind, t.active), (EventKind::Tamper, true));
        assert_eq!(
            m.map(&n(
                "RuleEngine/TamperDetector/Tamper",
                Some(Initialized),
                ("IsTamper", "true")
            )),
            None
        );
        // Camera rebooted: motion was stuck on, the new subscription initialises it to false.
        m.map(&n(
            "VideoSource/MotionAlarm",
            Some(Changed),
            ("State", "true"),
        ))
        .unwrap();
        m.resubscribed();
        let t = m
            .map(&n(
                "VideoSource/MotionAlarm",
                Some(Initialized),
                ("State", "false"),
            ))
            .unwrap();
        assert!(!t.active);
    }

    #[test]
    fn tamper_topics_and_deleted() {
        let mut m = EventMapper::new();
        for p in [
            "VideoSource/GlobalSceneChange/ImagingService",
            "VideoSource/ImageTooDark/AnalyticsService",
            "VideoSource/SignalLoss",
        ] {
            assert_eq!(
                m.map(&n(p, Some(Changed), ("State", "true"))).unwrap().kind,
                EventKind::Tamper,
                "{p}"
            );
        }
        let t = m
            .map(&n(
                "VideoSource/SignalLoss",
                Some(Deleted),
                ("State", "true"),
            ))
            .unwrap();
        assert!(!t.active);
        assert_eq!(
            m.map(&n(
                "VideoSource/SignalLoss",
                Some(Deleted),
                ("State", "true")
            )),
            None
        );
    }

    #[test]
    fn bounded() {
        let mut m = EventMapper::new();
        for i in 0..(MAX_STATES + 10) {
            let mut x = n("VideoSource/MotionAlarm", Some(Changed), ("State", "true"));
            x.source = vec![("S".into(), i.to_string())];
            m.map(&x);
        }
        assert_eq!(m.states().count(), MAX_STATES);
    }
}
