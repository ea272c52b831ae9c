//! Deadlock detection on the wait-for graph, before a wait is admitted.
//!
//! The state never holds a deadlock, so only the new wait can create one, and only among the
//! owners it can reach: `A` waits for `R` → every holder of `R` and every waiter ahead of `A` in
//! `R`'s line → what those owners wait for → …
//!
//! Among those owners the check runs the classic reduction (Coffman et al.): an owner that waits
//! for nothing will eventually release everything (at the latest when its leases run out); an
//! owner whose every wait can be served once the releasing owners are gone — and whose place in
//! each line is behind only such owners — will too. Repeat until nothing changes. If the new
//! waiter is left over, no sequence of releases can ever serve it: the wait is refused and the
//! cycle among the left-over owners is reported.
//!
//! The reduction is exact where a plain cycle search is not: a semaphore with free permits after
//! some other holder leaves is no deadlock, and a reader queued behind a writer (strict FIFO) is
//! blocked by that writer even though readers share.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::lock::Resource;
use crate::{Mode, State, WaitEdge, WaitTarget};

/// One wait of a pending owner: the resource and how many waiters stand ahead of it.
#[derive(Debug, Clone)]
struct PendingWait<'a> {
    name: &'a str,
    resource: &'a Resource,
    /// Position in the line (the new wait stands at the back).
    position: usize,
    mode: Mode,
}

impl State {
    /// Returns the cycle that `owner` waiting for `name` in `mode` would close, if any.
    pub(crate) fn find_deadlock(&self, owner: &str, name: &str, mode: Mode) -> Option<Vec<WaitEdge>> {
        let resource = self.resources.get(name)?;
        let new_wait = PendingWait { name, resource, position: resource.waiters.len(), mode };

        // Every owner reachable from the new wait, with its waits.
        let mut pending: BTreeMap<&str, Vec<PendingWait<'_>>> = BTreeMap::new();
        let mut frontier = VecDeque::from([owner]);
        pending.insert(owner, self.waits_of(owner));
        pending.get_mut(owner).expect("just inserted").push(new_wait);
        while let Some(current) = frontier.pop_front() {
            for wait in pending[current].clone() {
                for blocker in blockers(&wait) {
                    if blocker != current && !pending.contains_key(blocker) {
                        pending.insert(blocker, self.waits_of(blocker));
                        frontier.push_back(blocker);
                    }
                }
            }
        }

        // Reduce: mark owners that can finish until nothing changes.
        let mut finished: BTreeSet<&str> = BTreeSet::new();
        loop {
            let before = finished.len();
            for (&who, waits) in &pending {
                if !finished.contains(who) && waits.iter().all(|w| can_be_served(who, w, &pending, &finished))
                {
                    finished.insert(who);
                }
            }
            if finished.contains(owner) {
                return None;
            }
            if finished.len() == before {
                break;
            }
        }

        // Everyone left over is stuck; walk from the new waiter back to itself through them.
        let stuck = |o: &str| pending.contains_key(o) && !finished.contains(o);
        let mut came_from: BTreeMap<&str, (&str, &str)> = BTreeMap::new();
        let mut frontier = VecDeque::from([owner]);
        while let Some(current) = frontier.pop_front() {
            for wait in &pending[current] {
                for blocker in blockers(wait) {
                    if blocker == current || !stuck(blocker) || !blocks(wait, blocker) {
                        continue;
                    }
                    if blocker == owner {
                        let mut cycle = vec![edge(current, wait.name, owner)];
                        let mut at = current;
                        while at != owner {
                            let (prev, via) = came_from[at];
                            cycle.push(edge(prev, via, at));
                            at = prev;
                        }
                        cycle.reverse();
                        return Some(cycle);
                    }
                    if !came_from.contains_key(blocker) {
                        came_from.insert(blocker, (current, wait.name));
                        frontier.push_back(blocker);
                    }
                }
            }
        }
        // Unreachable while the reduction and the walk agree; report the wait alone rather than
        // admit a wait the reduction found stuck.
        Some(vec![edge(owner, name, owner)])
    }

    /// The lock waits an owner already has.
    fn waits_of(&self, owner: &str) -> Vec<PendingWait<'_>> {
        let Some(ids) = self.owner_waits.get(owner) else { return Vec::new() };
        ids.iter()
            .filter_map(|id| match self.waits.get(id) {
                Some(WaitTarget::Lock(name)) => {
                    let resource = &self.resources[name];
                    let position = resource.waiters.iter().position(|w| w.wait_id == *id)?;
                    let mode = resource.waiters[position].mode;
                    Some(PendingWait { name, resource, position, mode })
                }
                _ => None,
            })
            .collect()
    }
}

/// Owners a wait may depend on: the resource's holders and the waiters ahead of it.
fn blockers<'a>(wait: &PendingWait<'a>) -> impl Iterator<Item = &'a str> {
    let holders = wait.resource.holds.values().map(|h| h.owner.as_str());
    let ahead = wait.resource.waiters.iter().take(wait.position).map(|w| w.owner.as_str());
    holders.chain(ahead)
}

/// Whether `blocker` really stands in the way of this wait (for naming the cycle): it waits
/// ahead, or holds the resource in a mode that conflicts (any hold of a semaphore counts).
fn blocks(wait: &PendingWait<'_>, blocker: &str) -> bool {
    let ahead = wait.resource.waiters.iter().take(wait.position).any(|w| w.owner == blocker);
    let mut holds = wait.resource.holds.values().filter(|h| h.owner == blocker);
    ahead || holds.any(|h| wait.mode != Mode::Shared || h.mode != Mode::Shared)
}

/// Whether the wait can be served once every finished owner (and every owner outside the
/// reachable set) has released everything: all waiters ahead are finished, and the request fits
/// beside the holds of owners that are still stuck.
fn can_be_served(
    who: &str,
    wait: &PendingWait<'_>,
    pending: &BTreeMap<&str, Vec<PendingWait<'_>>>,
    finished: &BTreeSet<&str>,
) -> bool {
    let still_holding = |o: &str| o != who && pending.contains_key(o) && !finished.contains(o);
    let ahead_done = wait.resource.waiters.iter().take(wait.position).all(|w| !still_holding(&w.owner));
    ahead_done && wait.resource.fits(wait.mode, |h| still_holding(&h.owner))
}

fn edge(owner: &str, name: &str, blocked_by: &str) -> WaitEdge {
    WaitEdge { owner: owner.to_owned(), name: name.to_owned(), blocked_by: blocked_by.to_owned() }
}
