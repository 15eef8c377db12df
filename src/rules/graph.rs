//! Loops between rules, found at load: a rule whose actions change its own inputs, directly or
//! through other rules and scenes, would enter and clear for ever. The configuration validator
//! (`config/rules.rs`) builds the graph "rule A writes something rule B reads" with
//! [`Topology::affects`] and reports every cycle [`cycles`] finds as an error naming its rules.
//!
//! What a write changes:
//! - `point.write P` changes the point `P`;
//! - `light.set`/`light.release` on `all` changes `BUS/ADDR/level` of every configured bus,
//!   on `group:N` that of the members of group N (`[[dali.group]]`, on each bus that has it), on
//!   `BUS/ADDR` that gear's `level`;
//! - `camera.reboot C` changes `C/online` and `C/response_ms`; `camera.sync_time C` changes
//!   `C/clock_offset_s`;
//! - `scene.run`/`scene.release S` changes what the actions of scene S change.
//!
//! This module is a leaf (it knows nothing of the configuration), so the validator can use it.

use std::collections::{BTreeMap, VecDeque};

use crate::light::LightTarget;

/// Something an action changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A point, by full name.
    Point(String),
    /// Light levels of a target.
    Light(LightTarget),
}

/// The DALI layout writes are resolved against.
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Configured bus names.
    pub buses: Vec<String>,
    /// `(bus, group)` → member short addresses.
    pub groups: BTreeMap<(String, u8), Vec<u8>>,
}

impl Topology {
    /// Whether `w` changes the point `input`.
    pub fn affects(&self, w: &Write, input: &str) -> bool {
        match w {
            Write::Point(p) => p == input,
            Write::Light(t) => {
                let Some((bus, addr)) =
                    input.strip_suffix("/level").and_then(|g| g.split_once('/'))
                else {
                    return false;
                };
                let Ok(addr) = addr.parse::<u8>() else {
                    return false;
                };
                match t {
                    LightTarget::All => self.buses.iter().any(|b| b == bus),
                    LightTarget::Group(g) => self
                        .groups
                        .get(&(bus.to_string(), *g))
                        .is_some_and(|m| m.contains(&addr)),
                    LightTarget::Gear { bus: b, address } => b == bus && *address == addr,
                }
            }
        }
    }
}

/// The cycles of a directed graph given as adjacency lists: one per strongly connected component
/// that contains a cycle (several nodes, or one node with an edge to itself). Each is a path
/// `[n0, n1, …]` meaning n0 → n1 → … → n0, starting at the component's lowest node and as short
/// as breadth-first search finds it. Components come in order of their lowest node.
pub fn cycles(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let comp = components(adj);
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (n, c) in comp.iter().enumerate() {
        groups.entry(*c).or_default().push(n);
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    for members in groups.values() {
        let start = members[0];
        let cyclic = members.len() > 1 || adj[start].contains(&start);
        if !cyclic {
            continue;
        }
        // Shortest path from start back to start, inside the component.
        let c = comp[start];
        let mut prev: Vec<Option<usize>> = vec![None; adj.len()];
        let mut queue = VecDeque::from([start]);
        let mut last = None;
        'bfs: while let Some(n) = queue.pop_front() {
            for &m in &adj[n] {
                if comp[m] != c {
                    continue;
                }
                if m == start {
                    last = Some(n);
                    break 'bfs;
                }
                if prev[m].is_none() {
                    prev[m] = Some(n);
                    queue.push_back(m);
                }
            }
        }
        let mut path = Vec::new();
        let mut n = last.expect("a cyclic component has a cycle through each member");
        while n != start {
            path.push(n);
            n = prev[n].expect("BFS tree reaches start");
        }
        path.push(start);
        path.reverse();
        out.push(path);
    }
    out.sort_by_key(|p| p[0]);
    out
}

/// Tarjan's strongly connected components, iterative (a configuration may hold many rules):
/// the component id of each node.
fn components(adj: &[Vec<usize>]) -> Vec<usize> {
    let n = adj.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comp = vec![usize::MAX; n];
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, next edge to look at)
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = call.last_mut() {
            if let Some(&w) = adj[v].get(*e) {
                *e += 1;
                if index[w] == usize::MAX {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(parent, _)) = call.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                loop {
                    let w = stack.pop().expect("v is on the stack");
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_self_loops_and_longer_cycles_only() {
        // 0 → 1 → 2 → 0, 3 → 3, 4 → 5 (no cycle), 6 → 7 → 6 and 6 → 0.
        let adj = vec![
            vec![1],
            vec![2],
            vec![0],
            vec![3],
            vec![5],
            vec![],
            vec![7, 0],
            vec![6],
        ];
        assert_eq!(cycles(&adj), vec![vec![0, 1, 2], vec![3], vec![6, 7]]);
        assert!(cycles(&[vec![1], vec![], vec![0, 1]]).is_empty());
    }

    #[test]
    fn shortest_cycle_through_the_lowest_node() {
        // 0 → 1 → 2 → 3 → 0 and a shortcut 1 → 0.
        let adj = vec![vec![1], vec![2, 0], vec![3], vec![0]];
        assert_eq!(cycles(&adj), vec![vec![0, 1]]);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let n = 100_000;
        let mut adj: Vec<Vec<usize>> = (0..n).map(|i| vec![i + 1]).collect();
        adj[n - 1] = vec![0];
        let c = cycles(&adj);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].len(), n);
    }

    #[test]
    fn light_writes_change_level_points() {
        let topo = Topology {
            buses: vec!["bus-a".into(), "bus-b".into()],
            groups: BTreeMap::from([(("bus-a".to_string(), 1), vec![3, 4])]),
        };
        let all = Write::Light(LightTarget::All);
        assert!(topo.affects(&all, "bus-b/9/level"));
        assert!(!topo.affects(&all, "bus-c/9/level"));
        assert!(!topo.affects(&all, "bus-a/9/lamp_failure"));
        let g = Write::Light(LightTarget::Group(1));
        assert!(topo.affects(&g, "bus-a/4/level"));
        assert!(!topo.affects(&g, "bus-a/5/level"));
        assert!(!topo.affects(&g, "bus-b/4/level"));
        let gear = Write::Light(LightTarget::Gear {
            bus: "bus-a".into(),
            address: 5,
        });
        assert!(topo.affects(&gear, "bus-a/5/level"));
        assert!(!topo.affects(&gear, "bus-a/50/level"));
        assert!(topo.affects(&Write::Point("tc/plan".into()), "tc/plan"));
    }
}
