//! Override bookkeeping of `light.set` / `light.release` on one bus (pure, no I/O).
//!
//! "Back to the programme" means: back to the level each gear had **before the first override**
//! that touched it, updated by every programme step that reached it while overridden
//! ([`Overrides::replace_saved`]). Invariants:
//! - a gear's saved level is taken once, before the first override reaching it, and is kept
//!   through later overrides until a release covering that gear restores it (then forgotten);
//! - a hold belongs to the target it was set with; a later `light.set` or `light.release` whose
//!   target covers that target cancels it (a newer command wins over an older timer), and an
//!   expired hold releases exactly its own target;
//! - `All` covers everything, `Group(g)` covers itself and the configured members of `g`,
//!   `Gear(a)` covers only itself.

use std::collections::BTreeMap;

use tokio::time::Instant;

/// Configured group membership of one bus: group number → short addresses.
pub type Groups = BTreeMap<u8, Vec<u8>>;

/// What a light command addresses on one bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Broadcast.
    All,
    /// A DALI group.
    Group(u8),
    /// One gear by short address.
    Gear(u8),
}

impl Scope {
    /// Whether every gear `other` addresses is also addressed by `self`.
    pub fn covers(self, other: Scope, groups: &Groups) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::Group(g), Scope::Group(h)) => g == h,
            (Scope::Group(g), Scope::Gear(a)) => groups.get(&g).is_some_and(|m| m.contains(&a)),
            (Scope::Gear(a), Scope::Gear(b)) => a == b,
            _ => false,
        }
    }

    /// The known gear this scope reaches (`known`: gear found on the bus).
    pub fn addresses(self, known: &[u8], groups: &Groups) -> Vec<u8> {
        match self {
            Scope::All => known.to_vec(),
            Scope::Group(g) => known
                .iter()
                .copied()
                .filter(|a| groups.get(&g).is_some_and(|m| m.contains(a)))
                .collect(),
            Scope::Gear(a) => vec![a],
        }
    }
}

/// Saved levels and pending holds of one bus.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    saved: BTreeMap<u8, u8>,
    holds: Vec<(Scope, Instant)>,
}

impl Overrides {
    /// Of `addresses`, those without a saved level yet (read their level before overriding).
    pub fn unsaved(&self, addresses: &[u8]) -> Vec<u8> {
        addresses
            .iter()
            .copied()
            .filter(|a| !self.saved.contains_key(a))
            .collect()
    }

    /// Remembers `arc` as the level of `address` before its first override; an existing saved
    /// level is kept.
    pub fn save(&mut self, address: u8, arc: u8) {
        self.saved.entry(address).or_insert(arc);
    }

    /// Replaces the saved level of an overridden gear (the programme moved on meanwhile).
    pub fn replace_saved(&mut self, address: u8, arc: u8) {
        if let Some(level) = self.saved.get_mut(&address) {
            *level = arc;
        }
    }

    /// The saved level of a gear.
    pub fn saved(&self, address: u8) -> Option<u8> {
        self.saved.get(&address).copied()
    }

    /// Records a successful `light.set` on `scope`: cancels the holds it covers, then arms its
    /// own hold if any.
    pub fn set(&mut self, scope: Scope, hold_until: Option<Instant>, groups: &Groups) {
        self.holds.retain(|(s, _)| !scope.covers(*s, groups));
        if let Some(at) = hold_until {
            self.holds.push((scope, at));
        }
    }

    /// A `light.release` on `scope`: cancels the holds it covers and returns the `(address, arc)`
    /// to restore, forgetting them.
    pub fn release(&mut self, scope: Scope, groups: &Groups) -> Vec<(u8, u8)> {
        self.holds.retain(|(s, _)| !scope.covers(*s, groups));
        let restore: Vec<(u8, u8)> = self
            .saved
            .iter()
            .filter(|(a, _)| scope.covers(Scope::Gear(**a), groups))
            .map(|(a, l)| (*a, *l))
            .collect();
        for (a, _) in &restore {
            self.saved.remove(a);
        }
        restore
    }

    /// When the next hold expires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.holds.iter().map(|(_, at)| *at).min()
    }

    /// Removes and returns the holds expired at `now`, earliest first.
    pub fn expired(&mut self, now: Instant) -> Vec<Scope> {
        let mut due: Vec<(Scope, Instant)> = Vec::new();
        self.holds.retain(|h| {
            if h.1 <= now {
                due.push(*h);
                false
            } else {
                true
            }
        });
        due.sort_by_key(|h| h.1);
        due.into_iter().map(|h| h.0).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn groups() -> Groups {
        Groups::from([(0, vec![0, 1, 2]), (1, vec![3])])
    }

    #[test]
    fn coverage() {
        let g = groups();
        assert!(Scope::All.covers(Scope::Gear(9), &g));
        assert!(Scope::Group(0).covers(Scope::Gear(1), &g));
        assert!(!Scope::Group(0).covers(Scope::Gear(3), &g));
        assert!(!Scope::Group(0).covers(Scope::All, &g));
        assert!(!Scope::Gear(1).covers(Scope::Group(0), &g));
        assert!(Scope::Gear(1).covers(Scope::Gear(1), &g));
        assert_eq!(Scope::Group(0).addresses(&[1, 2, 3, 4], &g), vec![1, 2]);
        assert_eq!(Scope::Group(7).addresses(&[1, 2], &g), Vec::<u8>::new());
        assert_eq!(Scope::All.addresses(&[1, 2], &g), vec![1, 2]);
    }

    #[test]
    fn first_level_is_kept_until_release() {
        let g = groups();
        let mut o = Overrides::default();
        assert_eq!(o.unsaved(&[0, 1]), vec![0, 1]);
        o.save(0, 254);
        o.save(1, 200);
        o.set(Scope::Group(0), None, &g);
        // A second override does not overwrite the level before the first.
        assert_eq!(o.unsaved(&[0, 1, 3]), vec![3]);
        o.save(0, 100);
        assert_eq!(o.saved(0), Some(254));
        // Releasing one gear restores only it.
        assert_eq!(o.release(Scope::Gear(1), &g), vec![(1, 200)]);
        assert_eq!(o.saved(1), None);
        // Releasing something not overridden restores nothing.
        assert!(o.release(Scope::Group(1), &g).is_empty());
        assert_eq!(o.release(Scope::All, &g), vec![(0, 254)]);
        assert!(o.release(Scope::All, &g).is_empty());
    }

    #[test]
    fn holds_expire_in_order_and_newer_commands_cancel_them() {
        let g = groups();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut o = Overrides::default();
        o.set(Scope::Gear(1), Some(t0 + s(10)), &g);
        o.set(Scope::Gear(3), Some(t0 + s(5)), &g);
        assert_eq!(o.next_deadline(), Some(t0 + s(5)));
        assert!(o.expired(t0 + s(4)).is_empty());
        assert_eq!(o.expired(t0 + s(11)), vec![Scope::Gear(3), Scope::Gear(1)]);
        assert_eq!(o.next_deadline(), None);

        // A group set replaces the hold of a member, not of a non-member.
        o.set(Scope::Gear(1), Some(t0 + s(10)), &g);
        o.set(Scope::Gear(3), Some(t0 + s(10)), &g);
        o.set(Scope::Group(0), None, &g);
        assert_eq!(o.expired(t0 + s(20)), vec![Scope::Gear(3)]);

        // A release cancels the holds it covers.
        o.set(Scope::Group(1), Some(t0 + s(10)), &g);
        o.release(Scope::All, &g);
        assert_eq!(o.next_deadline(), None);
    }
}
