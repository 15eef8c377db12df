//! What each gear of one bus was last told (pure, no I/O): the bus is a plain executor of
//! levels (who decides them, and for how long, is the rules core's), but it remembers the last
//! level that reached each gear so a gear that comes back — `gear_found` after a replacement, a
//! bus power return after which every gear sits at its SYSTEM FAILURE LEVEL — gets it again at
//! once instead of waiting for the next change (issue 13 item 6).
//!
//! Invariants:
//! - a level set on a scope is what every gear that scope covers was last told, until a later
//!   set covers it: `All` covers everything, `Group(g)` covers the configured members of `g`,
//!   `Gear(a)` only itself; the most recent covering set wins;
//! - memory is bounded by the bus: one entry for `All`, at most 16 groups and 64 gear.

use std::collections::BTreeMap;

/// Configured group membership of one bus: group number → short addresses.
pub type Groups = BTreeMap<u8, Vec<u8>>;

/// What a light request addresses on one bus.
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
    /// Whether the gear `a` is addressed by `self`.
    pub fn covers_gear(self, a: u8, groups: &Groups) -> bool {
        match self {
            Scope::All => true,
            Scope::Group(g) => groups.get(&g).is_some_and(|m| m.contains(&a)),
            Scope::Gear(b) => a == b,
        }
    }

    /// The known gear this scope reaches (`known`: gear found on the bus).
    pub fn addresses(self, known: &[u8], groups: &Groups) -> Vec<u8> {
        known
            .iter()
            .copied()
            .filter(|a| self.covers_gear(*a, groups))
            .collect()
    }
}

/// The last arc level sent to each scope, with its order.
#[derive(Debug, Default, Clone)]
pub struct Commanded {
    seq: u64,
    all: Option<(u64, u8)>,
    groups: BTreeMap<u8, (u64, u8)>,
    gear: BTreeMap<u8, (u64, u8)>,
}

impl Commanded {
    /// `arc` was sent to `scope`.
    pub fn set(&mut self, scope: Scope, arc: u8) {
        self.seq += 1;
        let entry = (self.seq, arc);
        match scope {
            Scope::All => self.all = Some(entry),
            Scope::Group(g) => {
                self.groups.insert(g, entry);
            }
            Scope::Gear(a) => {
                self.gear.insert(a, entry);
            }
        }
    }

    /// The level gear `a` was last told, if any set covered it.
    pub fn level_of(&self, a: u8, groups: &Groups) -> Option<u8> {
        let in_groups = self
            .groups
            .iter()
            .filter(|(g, _)| Scope::Group(**g).covers_gear(a, groups))
            .map(|(_, e)| *e);
        self.all
            .into_iter()
            .chain(in_groups)
            .chain(self.gear.get(&a).copied())
            .max_by_key(|(seq, _)| *seq)
            .map(|(_, arc)| arc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> Groups {
        Groups::from([(0, vec![0, 1, 2]), (1, vec![3])])
    }

    #[test]
    fn coverage() {
        let g = groups();
        assert!(Scope::All.covers_gear(9, &g));
        assert!(Scope::Group(0).covers_gear(1, &g));
        assert!(!Scope::Group(0).covers_gear(3, &g));
        assert!(Scope::Gear(1).covers_gear(1, &g));
        assert!(!Scope::Gear(1).covers_gear(2, &g));
        assert_eq!(Scope::Group(0).addresses(&[1, 2, 3, 4], &g), vec![1, 2]);
        assert_eq!(Scope::Group(7).addresses(&[1, 2], &g), Vec::<u8>::new());
        assert_eq!(Scope::All.addresses(&[1, 2], &g), vec![1, 2]);
    }

    #[test]
    fn the_most_recent_covering_level_is_what_a_gear_was_told() {
        let g = groups();
        let mut c = Commanded::default();
        assert_eq!(c.level_of(0, &g), None, "nothing sent yet");
        c.set(Scope::All, 254);
        c.set(Scope::Gear(1), 100);
        c.set(Scope::Group(0), 200);
        assert_eq!(c.level_of(0, &g), Some(200));
        assert_eq!(c.level_of(1, &g), Some(200), "the group set came after");
        assert_eq!(c.level_of(3, &g), Some(254), "not in group 0");
        c.set(Scope::Gear(1), 50);
        assert_eq!(c.level_of(1, &g), Some(50));
        c.set(Scope::All, 10);
        for a in 0..4 {
            assert_eq!(c.level_of(a, &g), Some(10));
        }
        // Unconfigured gear follow broadcasts only.
        assert_eq!(c.level_of(40, &g), Some(10));
    }
}
