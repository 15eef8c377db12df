//! Acknowledged seqs inside blocks that are still stored (pure, no I/O).
//!
//! A block is deleted once every one of its records was acknowledged; until then the
//! acknowledged part is kept here as disjoint inclusive intervals — usually one, the *ack
//! frontier* at the start of the oldest block, plus a few while acks arrive out of order. The
//! set is bounded by the in-flight window (each batch adds at most one interval) and persisted
//! at each flush as meta `acked/<stream>` (pairs of big-endian `u64`), so a clean restart never
//! sends an acknowledged record again.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive intervals of seqs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckSet {
    /// start → end (inclusive).
    spans: BTreeMap<u64, u64>,
}

impl AckSet {
    /// Cover `a..=b`; returns how many seqs were not covered before.
    pub fn insert(&mut self, a: u64, b: u64) -> u64 {
        if a > b {
            return 0;
        }
        let before = self.count_in(a, b);
        let (mut lo, mut hi) = (a, b);
        // Merge with every span that overlaps or touches [a, b].
        let touching: Vec<(u64, u64)> = self
            .spans
            .range(..=b.saturating_add(1))
            .rev()
            .take_while(|(_, &e)| e.saturating_add(1) >= a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.spans.remove(&s);
            lo = lo.min(s);
            hi = hi.max(e);
        }
        self.spans.insert(lo, hi);
        (b - a + 1) - before
    }

    /// Forget `a..=b` (its block was deleted).
    pub fn remove(&mut self, a: u64, b: u64) {
        let overlapping: Vec<(u64, u64)> = self
            .spans
            .range(..=b)
            .rev()
            .take_while(|(_, &e)| e >= a)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in overlapping {
            self.spans.remove(&s);
            if s < a {
                self.spans.insert(s, a - 1);
            }
            if e > b {
                self.spans.insert(b + 1, e);
            }
        }
    }

    /// Whether `seq` is covered.
    pub fn contains(&self, seq: u64) -> bool {
        self.spans
            .range(..=seq)
            .next_back()
            .is_some_and(|(_, &e)| e >= seq)
    }

    /// How many seqs of `a..=b` are covered.
    pub fn count_in(&self, a: u64, b: u64) -> u64 {
        if a > b {
            return 0;
        }
        self.spans
            .range(..=b)
            .rev()
            .take_while(|(_, &e)| e >= a)
            .map(|(&s, &e)| e.min(b) - s.max(a) + 1)
            .sum()
    }

    /// The intervals, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.spans.iter().map(|(&s, &e)| (s, e))
    }

    /// Number of intervals.
    pub fn spans(&self) -> usize {
        self.spans.len()
    }

    /// Encoding for meta `acked/<stream>`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.spans.len() * 16);
        for (s, e) in &self.spans {
            out.extend_from_slice(&s.to_be_bytes());
            out.extend_from_slice(&e.to_be_bytes());
        }
        out
    }

    /// Inverse of [`AckSet::encode`]; `None` if malformed.
    pub fn decode(v: &[u8]) -> Option<AckSet> {
        if v.len() % 16 != 0 {
            return None;
        }
        let mut set = AckSet::default();
        for pair in v.chunks_exact(16) {
            let s = u64::from_be_bytes(pair[..8].try_into().ok()?);
            let e = u64::from_be_bytes(pair[8..].try_into().ok()?);
            if s > e {
                return None;
            }
            set.insert(s, e);
        }
        Some(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_and_count_only_new_seqs() {
        let mut a = AckSet::default();
        assert_eq!(a.insert(10, 19), 10);
        assert_eq!(a.insert(30, 39), 10);
        assert_eq!(a.spans(), 2);
        assert_eq!(a.insert(15, 32), 10, "20..=29 were new");
        assert_eq!(a.spans(), 1);
        assert_eq!(a.insert(40, 40), 1, "adjacent spans merge");
        assert_eq!(a.spans(), 1);
        assert_eq!(a.insert(12, 13), 0);
        assert!(a.contains(10) && a.contains(40) && !a.contains(41) && !a.contains(9));
        assert_eq!(a.count_in(0, 100), 31);
        assert_eq!(a.count_in(35, 45), 6);
    }

    #[test]
    fn remove_cuts_spans_and_encoding_round_trips() {
        let mut a = AckSet::default();
        a.insert(1, 100);
        a.remove(20, 29);
        assert_eq!(a.count_in(1, 100), 90);
        assert!(!a.contains(25) && a.contains(19) && a.contains(30));
        a.remove(0, 19);
        assert_eq!(a.count_in(0, 200), 71);
        let back = AckSet::decode(&a.encode()).unwrap();
        assert_eq!(back, a);
        assert_eq!(AckSet::decode(&[1, 2, 3]), None);
    }
}
