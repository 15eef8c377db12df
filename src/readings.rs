//! The readings tap: every reading the equipment takes — each poll's value and quality, *before*
//! report by exception — for the tasks that act on values (the rules core, the energy
//! accountant). Report by exception saves uplink bandwidth; as an input to a reflex its deadband
//! would hide a crossing and its heartbeat would add latency, so the rules read here instead of
//! the recorded telemetry.
//!
//! Design (bounded, coalescing, never blocking a producer):
//! - a [`Subscription`] says which points it wants ([`Subscription::want`]) and keeps, per
//!   wanted point, only the latest reading not yet taken: a burst of readings of one point
//!   between two drains becomes its newest one (values are levels, not events: the newest is
//!   what the point reads now). Memory is bounded by the number of wanted points;
//! - [`ReadingTap::offer`] (called by the equipment tasks for every reading) takes a short
//!   lock per subscription that wants the point and wakes it; it never waits for a consumer,
//!   so a slow consumer can never slow polling or the recorder;
//! - the consumer waits with [`Subscription::changed`] and takes everything with
//!   [`Subscription::drain`], in the order the points first changed since the last drain.
//!
//! Overwritten readings are counted ([`Subscription::coalesced`]); a consumer that drains after
//! each wake-up loses none in practice (the rules task drains within microseconds).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;
use tokio::sync::Notify;

use crate::record::Quality;

/// One reading as the tap carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `DEVICE/POINT`.
    pub point: String,
    /// The value (JSON number, boolean or null).
    pub value: Value,
    /// Its quality.
    pub quality: Quality,
}

#[derive(Default)]
struct Pending {
    order: Vec<Reading>,
    index: HashMap<String, usize>,
}

/// A consumer of the tap.
pub struct Subscription {
    name: &'static str,
    wanted: RwLock<HashSet<String>>,
    pending: Mutex<Pending>,
    notify: Notify,
    coalesced: AtomicU64,
}

impl Subscription {
    /// Replaces the set of wanted points (readings of other points are not kept).
    pub fn want(&self, points: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = points.into_iter().collect();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.order.retain(|r| set.contains(&r.point));
        p.index = p
            .order
            .iter()
            .enumerate()
            .map(|(i, r)| (r.point.clone(), i))
            .collect();
        *self.wanted.write().unwrap_or_else(|e| e.into_inner()) = set;
    }

    /// Whether `point` is wanted.
    pub fn wants(&self, point: &str) -> bool {
        self.wanted
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(point)
    }

    fn put(&self, point: &str, value: &Value, quality: Quality) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match p.index.get(point).copied() {
            Some(i) => {
                let r = &mut p.order[i];
                r.value = value.clone();
                r.quality = quality;
                self.coalesced.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let i = p.order.len();
                p.order.push(Reading {
                    point: point.to_owned(),
                    value: value.clone(),
                    quality,
                });
                p.index.insert(point.to_owned(), i);
            }
        }
        drop(p);
        self.notify.notify_one();
    }

    /// Resolves when readings are waiting (at once if some arrived since the last drain).
    /// Cancel-safe.
    pub async fn changed(&self) {
        self.notify.notified().await;
    }

    /// Takes the waiting readings, one per point, in the order the points first changed.
    pub fn drain(&self) -> Vec<Reading> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.index.clear();
        std::mem::take(&mut p.order)
    }

    /// Readings replaced by a newer one of the same point before they were taken.
    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    /// Its name (logs).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The producers' side: cheap to clone, shared by every equipment task.
#[derive(Clone, Default)]
pub struct ReadingTap {
    subs: Arc<RwLock<Vec<Arc<Subscription>>>>,
}

impl std::fmt::Debug for ReadingTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        let names: Vec<&str> = subs.iter().map(|s| s.name).collect();
        f.debug_struct("ReadingTap")
            .field("subscribers", &names)
            .finish()
    }
}

impl ReadingTap {
    /// A new consumer named `name`, wanting nothing yet.
    pub fn subscribe(&self, name: &'static str) -> Arc<Subscription> {
        let sub = Arc::new(Subscription {
            name,
            wanted: RwLock::new(HashSet::new()),
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            coalesced: AtomicU64::new(0),
        });
        self.subs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(sub.clone());
        sub
    }

    /// One reading of `point` (every poll, whatever report by exception decides). Never waits.
    pub fn offer(&self, point: &str, value: &Value, quality: Quality) {
        let subs = self.subs.read().unwrap_or_else(|e| e.into_inner());
        for s in subs.iter() {
            if s.wants(point) {
                s.put(point, value, quality);
            }
        }
    }

    /// Whether some consumer wants `point` (lets a producer skip building a reading).
    pub fn wanted(&self, point: &str) -> bool {
        self.subs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|s| s.wants(point))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn wanted_points_coalesce_in_first_change_order_and_wake_the_consumer() {
        let tap = ReadingTap::default();
        let sub = tap.subscribe("rules");
        sub.want(["a/x".to_string(), "b/y".to_string()]);
        tap.offer("a/x", &json!(1), Quality::Good);
        tap.offer("c/z", &json!(9), Quality::Good);
        tap.offer("b/y", &json!(true), Quality::Good);
        tap.offer("a/x", &json!(2), Quality::Bad);
        sub.changed().await;
        let got = sub.drain();
        assert_eq!(
            got,
            vec![
                Reading {
                    point: "a/x".into(),
                    value: json!(2),
                    quality: Quality::Bad
                },
                Reading {
                    point: "b/y".into(),
                    value: json!(true),
                    quality: Quality::Good
                },
            ]
        );
        assert_eq!(sub.coalesced(), 1);
        assert!(sub.drain().is_empty());
        assert!(tap.wanted("a/x") && !tap.wanted("c/z"));
    }

    #[test]
    fn memory_is_bounded_by_the_wanted_points_and_a_new_set_drops_the_rest() {
        let tap = ReadingTap::default();
        let sub = tap.subscribe("energy");
        sub.want(["a/x".to_string(), "b/y".to_string()]);
        for i in 0..10_000 {
            tap.offer("a/x", &json!(i), Quality::Good);
            tap.offer("b/y", &json!(i), Quality::Good);
        }
        sub.want(["b/y".to_string()]);
        let got = sub.drain();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].value, json!(9_999));
    }
}
