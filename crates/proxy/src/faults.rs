//! [`Faults`]: the rule for every directed pair of nodes, shared by all the proxies of a cluster,
//! and the partitions made of those rules.
//!
//! A rule belongs to the pair `(from, to)`: the node that opened a connection and the node it
//! dialed. It covers the bytes of that connection in both directions (requests and their replies
//! travel on the connection the requester opened), so cutting `(a, b)` alone is a one-way
//! partition: `a` can no longer reach `b`, while `b` still reaches `a`.
//!
//! Changing a rule wakes every proxied connection, which applies the new rule at once (see
//! `link.rs`): a partition cuts the connections already open, not only the next ones.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// What happens to the connections one node opens to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rule {
    /// Bytes go through as they come.
    #[default]
    Pass,
    /// Connections open are closed, and new ones are closed as soon as they say who they are: the
    /// node sees a connection reset at once, as when its peer's process is gone.
    Drop,
    /// Connections stay open but every byte is discarded silently, both ways, as a network that
    /// loses every packet: the node learns nothing until its own timeouts fire.
    BlackHole,
    /// Each chunk of bytes is forwarded this long after it arrived, both ways (a round trip takes
    /// twice as long), in order.
    Delay(Duration),
}

/// The rules between the nodes of one cluster. Cheap to clone; every clone is the same table.
#[derive(Debug, Clone)]
pub struct Faults {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The cluster's nodes, for the partitions that name only some of them.
    nodes: BTreeSet<u64>,
    /// Pairs without an entry pass.
    rules: Mutex<HashMap<(u64, u64), Rule>>,
    counters: Mutex<HashMap<(u64, u64), Arc<Counters>>>,
    /// Bumped after every change; each proxied connection waits on it.
    changed: watch::Sender<u64>,
}

/// What the proxies did with one pair's connections, for tests to observe each rule at work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections that said who they were (whatever the rule then did with them).
    pub connections: u64,
    /// Connections closed by [`Rule::Drop`], when they came or later.
    pub dropped: u64,
    /// Connections closed when a black hole lifted, because bytes were lost in it.
    pub closed_after_loss: u64,
    /// Bytes forwarded, both ways.
    pub bytes_passed: u64,
    /// Bytes a black hole swallowed, both ways.
    pub bytes_discarded: u64,
    /// Chunks forwarded later than they came, by [`Rule::Delay`].
    pub chunks_delayed: u64,
}

/// The live counters behind [`LinkStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connections: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) closed_after_loss: AtomicU64,
    pub(crate) bytes_passed: AtomicU64,
    pub(crate) bytes_discarded: AtomicU64,
    pub(crate) chunks_delayed: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn stats(&self) -> LinkStats {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LinkStats {
            connections: read(&self.connections),
            dropped: read(&self.dropped),
            closed_after_loss: read(&self.closed_after_loss),
            bytes_passed: read(&self.bytes_passed),
            bytes_discarded: read(&self.bytes_discarded),
            chunks_delayed: read(&self.chunks_delayed),
        }
    }
}

impl Faults {
    /// A table for the cluster of `nodes`, every pair passing.
    pub fn new(nodes: impl IntoIterator<Item = u64>) -> Faults {
        Faults {
            shared: Arc::new(Shared {
                nodes: nodes.into_iter().collect(),
                rules: Mutex::new(HashMap::new()),
                counters: Mutex::new(HashMap::new()),
                changed: watch::Sender::new(0),
            }),
        }
    }

    /// The cluster's nodes, in order.
    pub fn nodes(&self) -> Vec<u64> {
        self.shared.nodes.iter().copied().collect()
    }

    /// The rule for connections `from` opens to `to`.
    pub fn rule(&self, from: u64, to: u64) -> Rule {
        lock(&self.shared.rules).get(&(from, to)).copied().unwrap_or_default()
    }

    /// Sets the rule for connections `from` opens to `to`; the other rules stay.
    pub fn set(&self, from: u64, to: u64, rule: Rule) {
        self.change(|rules| {
            rules.insert((from, to), rule);
        });
    }

    /// Connections `from` opens to `to` are black-holed; those `to` opens to `from` pass. `from`
    /// can no longer reach `to` (its requests and votes vanish), but `to` still reaches `from` and
    /// hears its replies. The other rules stay.
    pub fn one_way(&self, from: u64, to: u64) {
        self.change(|rules| {
            rules.insert((from, to), Rule::BlackHole);
            rules.remove(&(to, from));
        });
    }

    /// Every pair passes again. Connections that lost bytes in a black hole are closed then (see
    /// `link.rs`); the nodes open new ones.
    pub fn heal(&self) {
        self.change(HashMap::clear);
    }

    /// Replaces every rule: nodes in the same group pass, and `cut` applies both ways between
    /// nodes of different groups. A node of the cluster in no group is a group of its own.
    pub fn split(&self, groups: &[&[u64]], cut: Rule) {
        let group_of = |node: u64| groups.iter().position(|g| g.contains(&node));
        let nodes = &self.shared.nodes;
        self.change(|rules| {
            rules.clear();
            for &a in nodes {
                for &b in nodes {
                    let apart = match (group_of(a), group_of(b)) {
                        (Some(x), Some(y)) => x != y,
                        _ => a != b,
                    };
                    if apart {
                        rules.insert((a, b), cut);
                    }
                }
            }
        });
    }

    /// Replaces every rule: `node` is cut off from every other node (`cut` both ways); the others
    /// still talk to each other.
    pub fn isolate(&self, node: u64, cut: Rule) {
        let others: Vec<u64> = self.shared.nodes.iter().copied().filter(|&n| n != node).collect();
        self.split(&[&[node], &others], cut);
    }

    /// Replaces every rule: `left` and `right` are cut from each other (`cut` both ways), and
    /// `bridge` talks to both; the nodes on one side still talk to each other. Under openraft a
    /// stale leader's heartbeats through the bridge can keep it from being replaced: the case
    /// `quorum_loss_probe_interval` exists for.
    pub fn bridge(&self, left: &[u64], bridge: u64, right: &[u64], cut: Rule) {
        self.change(|rules| {
            rules.clear();
            for &a in left.iter().filter(|&&n| n != bridge) {
                for &b in right.iter().filter(|&&n| n != bridge) {
                    rules.insert((a, b), cut);
                    rules.insert((b, a), cut);
                }
            }
        });
    }

    /// What the proxies did with the connections `from` opened to `to`.
    pub fn stats(&self, from: u64, to: u64) -> LinkStats {
        self.counters(from, to).stats()
    }

    pub(crate) fn counters(&self, from: u64, to: u64) -> Arc<Counters> {
        Arc::clone(lock(&self.shared.counters).entry((from, to)).or_default())
    }

    /// A receiver that sees every change of the table from now on.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    fn change(&self, edit: impl FnOnce(&mut HashMap<(u64, u64), Rule>)) {
        edit(&mut lock(&self.shared.rules));
        self.shared.changed.send_modify(|version| *version += 1);
    }
}

/// A poisoned lock only means a test thread panicked while holding it; the table is still whole
/// (every edit is a few map operations).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUT: Rule = Rule::BlackHole;

    /// Every directed pair of the cluster whose rule is not `Pass`.
    fn cuts(faults: &Faults) -> Vec<(u64, u64)> {
        let nodes = faults.nodes();
        let mut cut = Vec::new();
        for &a in &nodes {
            for &b in &nodes {
                if a != b && faults.rule(a, b) != Rule::Pass {
                    cut.push((a, b));
                }
            }
        }
        cut
    }

    #[test]
    fn every_pair_passes_until_told_otherwise() {
        let faults = Faults::new(1..=3);
        assert_eq!(faults.nodes(), [1, 2, 3]);
        assert!(cuts(&faults).is_empty());
        faults.set(1, 2, Rule::Delay(Duration::from_millis(5)));
        assert_eq!(faults.rule(1, 2), Rule::Delay(Duration::from_millis(5)));
        assert_eq!(faults.rule(2, 1), Rule::Pass, "a rule has a direction");
        faults.heal();
        assert!(cuts(&faults).is_empty());
    }

    #[test]
    fn isolate_cuts_one_node_both_ways() {
        let faults = Faults::new(1..=3);
        faults.isolate(2, CUT);
        assert_eq!(cuts(&faults), [(1, 2), (2, 1), (2, 3), (3, 2)]);
        // A partition replaces the table: isolating another node heals the first.
        faults.isolate(3, Rule::Drop);
        assert_eq!(cuts(&faults), [(1, 3), (2, 3), (3, 1), (3, 2)]);
        assert_eq!(faults.rule(3, 1), Rule::Drop);
    }

    #[test]
    fn split_cuts_between_groups_and_strands_the_unnamed() {
        let faults = Faults::new(1..=5);
        faults.split(&[&[1, 2], &[3, 4, 5]], CUT);
        let cut = cuts(&faults);
        assert_eq!(cut.len(), 12, "2 × 3 pairs, both ways: {cut:?}");
        assert!(cut.iter().all(|&(a, b)| (a <= 2) != (b <= 2)), "{cut:?}");
        // Node 5 named in no group is alone.
        faults.split(&[&[1, 2], &[3, 4]], CUT);
        assert!(faults.rule(5, 4) == CUT && faults.rule(4, 5) == CUT && faults.rule(3, 4) == Rule::Pass);
    }

    #[test]
    fn a_bridge_talks_to_both_sides() {
        let faults = Faults::new(1..=5);
        faults.bridge(&[1, 2], 3, &[4, 5], CUT);
        for side in [1, 2, 4, 5] {
            assert_eq!((faults.rule(side, 3), faults.rule(3, side)), (Rule::Pass, Rule::Pass));
        }
        assert_eq!(cuts(&faults), [(1, 4), (1, 5), (2, 4), (2, 5), (4, 1), (4, 2), (5, 1), (5, 2)]);
    }

    #[test]
    fn one_way_cuts_only_the_connections_one_node_opens() {
        let faults = Faults::new(1..=3);
        faults.set(2, 1, Rule::Drop);
        faults.one_way(1, 2);
        assert_eq!(cuts(&faults), [(1, 2)]);
        assert_eq!(faults.rule(1, 2), Rule::BlackHole);
    }

    #[test]
    fn each_change_is_announced() {
        let faults = Faults::new(1..=2);
        let mut seen = faults.watch();
        assert!(!seen.has_changed().unwrap());
        faults.set(1, 2, Rule::Drop);
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        faults.heal();
        assert!(seen.has_changed().unwrap());
    }
}
