//! The consistency checks [`State::check_invariants`] runs after every step in the tests: every
//! message in exactly one place, and every index, count, timer, pool and session agreeing with the
//! messages.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::queue::MsgState;
use crate::timer::Timer;
use crate::{State, WaitTarget, ensure};

impl State {
    pub(crate) fn check_queues(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (&qid, q) in &self.queues {
            let name = &q.name;
            ensure!(self.queue_ids.get(name) == Some(&qid), "queue {name} not indexed by name");
            let (mut ready, mut delayed, mut in_flight, mut dead, mut bytes) = (0, 0, 0, 0, 0);
            for (&id, m) in &q.messages {
                ensure!(seen.insert(id), "message {id} stored twice");
                ensure!(id <= self.last_id, "message {id} from the future");
                ensure!(m.priority <= q.config.max_priority, "{name}: {id} above the max priority");
                bytes += m.size();
                dead += u64::from(m.dead.is_some());
                if let Some(g) = &m.group {
                    ensure!(
                        q.groups.get(g).is_some_and(|s| s.contains(&id)),
                        "{name}: {id} not in its group"
                    );
                }
                if let Some(at) = m.expires_at.filter(|_| m.ttl_timer_armed()) {
                    ensure!(
                        self.timers.contains(at, &Timer::MessageExpiry { queue: qid, id }),
                        "{name}: {id} ttl"
                    );
                }
                let eligible = q.eligible.contains(&(Reverse(m.priority), id));
                match &m.state {
                    MsgState::Ready => {
                        ready += 1;
                        ensure!(q.ready.contains(&id), "{name}: ready {id} not indexed");
                        ensure!(eligible == q.may_deliver(id, m), "{name}: {id} eligibility wrong");
                    }
                    MsgState::Delayed { until } => {
                        delayed += 1;
                        ensure!(!eligible && !q.ready.contains(&id), "{name}: delayed {id} indexed as ready");
                        ensure!(
                            self.timers.contains(*until, &Timer::MessageDue { queue: qid, id }),
                            "{name}: delay"
                        );
                    }
                    MsgState::InFlight { receipt, lease_until, .. } => {
                        in_flight += 1;
                        ensure!(
                            !eligible && !q.ready.contains(&id),
                            "{name}: in-flight {id} indexed as ready"
                        );
                        ensure!(
                            q.in_flight.get(receipt) == Some(&id),
                            "{name}: receipt {receipt} not indexed"
                        );
                        ensure!(*receipt <= self.last_token, "{name}: receipt from the future");
                        let timer = Timer::DeliveryLease { queue: qid, receipt: *receipt };
                        ensure!(self.timers.contains(*lease_until, &timer), "{name}: lease timer");
                    }
                }
            }
            ensure!(ready == q.ready.len(), "{name}: ready index size");
            ensure!(delayed == q.delayed, "{name}: delayed count");
            ensure!(in_flight == q.in_flight.len(), "{name}: in-flight index size");
            ensure!(dead == q.dead && bytes == q.payload_bytes, "{name}: dead or byte count");
            let stored = q.messages.len() as u64;
            let (entered, left) = (q.totals.entered(), q.totals.left());
            ensure!(entered == left + stored, "{name}: {entered} entered, {left} left, {stored} stored");
            for (g, members) in &q.groups {
                ensure!(!members.is_empty(), "{name}: empty group {g}");
                let out = members
                    .iter()
                    .filter(|id| !matches!(q.messages[id].state, MsgState::Ready | MsgState::Delayed { .. }));
                ensure!(out.count() <= 1, "{name}: group {g} has several messages in flight");
            }
            ensure!(q.takers.len() == q.pop_waiters.len() + q.consumers.len(), "{name}: taker line");
            if !q.eligible.is_empty() {
                ensure!(q.next_taker(&self.pools).is_none(), "{name}: a taker could be served");
            }
            if let Some(owner) = q.config.exclusive_owner {
                let s = self.sessions.get(&owner);
                ensure!(
                    s.is_some_and(|s| s.exclusive_queues.contains(&qid)),
                    "{name}: owner does not list it"
                );
            }
            if q.config.auto_delete && q.had_consumer {
                ensure!(!q.consumers.is_empty(), "{name}: auto-delete queue left without consumers");
            }
            ensure!(q.consumers.is_empty() || q.had_consumer, "{name}: consumers but never had one");
            if q.consumers.values().any(|c| c.exclusive) {
                ensure!(q.consumers.len() == 1, "{name}: an exclusive consumer shares the queue");
            }
            for (cid, c) in &q.consumers {
                let unacked = q
                    .messages
                    .values()
                    .filter(|m| matches!(m.state, MsgState::InFlight { consumer: Some(x), .. } if x == *cid))
                    .count();
                ensure!(unacked == c.unacked as usize, "{name}: consumer {cid} unacked count");
            }
            for (cid, c) in &q.consumers {
                if let Some(p) = c.pool {
                    let pool = self.pools.get(&(c.session, p));
                    ensure!(
                        pool.is_some_and(|p| p.consumers.contains(&(qid, *cid))),
                        "{name}: consumer {cid} pool"
                    );
                }
            }
            for wait_id in q.pop_waiters.keys() {
                ensure!(self.waits.get(wait_id) == Some(&WaitTarget::Pop(qid)), "{name}: pop wait {wait_id}");
            }
        }
        Ok(())
    }
}

impl State {
    /// Each pool: its consumers exist and name it, and its count is the sum of theirs.
    pub(crate) fn check_pools(&self) -> Result<(), String> {
        for ((session, id), pool) in &self.pools {
            ensure!(!pool.consumers.is_empty(), "pool {session}/{id} without consumers");
            let mut unacked = 0;
            for (qid, cid) in &pool.consumers {
                let c = self.queues.get(qid).and_then(|q| q.consumers.get(cid));
                ensure!(
                    c.is_some_and(|c| c.session == *session && c.pool == Some(*id)),
                    "pool {session}/{id}: consumer {cid} is not its own"
                );
                unacked += c.map_or(0, |c| c.unacked);
            }
            ensure!(
                unacked == pool.unacked,
                "pool {session}/{id}: {} unacked counted, {unacked} found",
                pool.unacked
            );
        }
        Ok(())
    }
}
