//! Where each stored message is: the ready, eligible, delayed and in-flight indexes, its group,
//! and the timers each state arms. Every message enters, moves and leaves through here, and a
//! snapshot's queues are rebuilt here.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::queue::{Message, MsgState, Queue};
use crate::session::Session;
use crate::snapshot::TimerList;
use crate::timer::Timer;
use crate::{Effect, MsgId, QueueId, State, Timestamp, WaitTarget};

impl State {
    /// Stores a message arriving in a queue (pushed, dead-lettered or redriven) and serves it.
    pub(super) fn insert_message(
        &mut self,
        qid: QueueId,
        id: MsgId,
        msg: Message,
        due: Option<Timestamp>,
        fx: &mut Vec<Effect>,
    ) {
        let q = self.q(qid);
        q.payload_bytes += msg.size();
        q.dead += u64::from(msg.dead.is_some());
        if let Some(group) = &msg.group {
            q.groups.entry(group.clone()).or_default().insert(id);
        }
        q.messages.insert(id, msg);
        let state = match due {
            Some(until) => MsgState::Delayed { until },
            None => MsgState::Ready,
        };
        self.enter_state(qid, id, state);
        self.serve(qid, fx);
    }

    pub(crate) fn message_due(&mut self, qid: QueueId, id: MsgId, fx: &mut Vec<Effect>) {
        self.move_to(qid, id, MsgState::Ready);
        self.serve(qid, fx);
    }

    /// Moves a stored message from its state to `state`.
    pub(super) fn move_to(&mut self, qid: QueueId, id: MsgId, state: MsgState) {
        self.leave_state(qid, id);
        self.enter_state(qid, id, state);
    }

    /// Indexes a message (stored, but in no index yet) in `state`, and arms its timers.
    fn enter_state(&mut self, qid: QueueId, id: MsgId, state: MsgState) {
        let q = self.queues.get_mut(&qid).expect("queue id is live");
        let msg = q.messages.get_mut(&id).expect("message exists");
        msg.state = state.clone();
        let (priority, expires_at) = (msg.priority, msg.expires_at);
        match state {
            MsgState::Ready => {
                q.ready.insert(id);
                if q.may_deliver(id, &q.messages[&id]) {
                    q.eligible.insert((Reverse(priority), id));
                }
            }
            MsgState::Delayed { until } => {
                q.delayed += 1;
                self.timers.add(until, Timer::MessageDue { queue: qid, id });
            }
            MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                q.in_flight.insert(receipt, id);
                if let Some(user) = session.and_then(|s| self.session_users.get(&s)) {
                    self.token_users.insert(receipt, user.clone());
                }
                if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                    c.unacked += 1;
                    if let Some(pool) = c.pool.and_then(|p| self.pools.get_mut(&(c.session, p))) {
                        pool.unacked += 1;
                    }
                }
                self.timers.add(lease_until, Timer::DeliveryLease { queue: qid, receipt });
                if let Some(session) = session {
                    self.session_mut(session).deliveries.insert((qid, receipt));
                }
            }
        }
        if self.queues[&qid].messages[&id].ttl_timer_armed() {
            self.timers.add(expires_at.expect("armed"), Timer::MessageExpiry { queue: qid, id });
        }
    }

    /// Clears a message out of the indexes and timers of its current state (and its TTL timer).
    fn leave_state(&mut self, qid: QueueId, id: MsgId) {
        let q = self.queues.get_mut(&qid).expect("queue id is live");
        let msg = &q.messages[&id];
        if msg.ttl_timer_armed() {
            let at = msg.expires_at.expect("armed");
            self.timers.remove(at, Timer::MessageExpiry { queue: qid, id });
        }
        match msg.state {
            MsgState::Ready => {
                q.ready.remove(&id);
                q.eligible.remove(&(Reverse(msg.priority), id));
            }
            MsgState::Delayed { until } => {
                q.delayed -= 1;
                self.timers.remove(until, Timer::MessageDue { queue: qid, id });
            }
            MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                q.in_flight.remove(&receipt);
                self.token_users.remove(&receipt);
                if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                    c.unacked -= 1;
                    if let Some(pool) = c.pool.and_then(|p| self.pools.get_mut(&(c.session, p))) {
                        // Freed credit may let the pool's consumers on other queues go on.
                        if !pool.has_credit() {
                            self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
                        }
                        pool.unacked -= 1;
                    }
                }
                self.timers.remove(lease_until, Timer::DeliveryLease { queue: qid, receipt });
                if let Some(session) = session {
                    self.session_mut(session).deliveries.remove(&(qid, receipt));
                }
            }
        }
    }

    /// Takes a message out of its queue entirely (every index, every timer).
    pub(super) fn remove_message(&mut self, qid: QueueId, id: MsgId) -> Message {
        self.leave_state(qid, id);
        let q = self.q(qid);
        let msg = q.messages.remove(&id).expect("message exists");
        q.payload_bytes -= msg.size();
        q.dead -= u64::from(msg.dead.is_some());
        if let Some(group) = &msg.group {
            let members = q.groups.get_mut(group).expect("group of a message");
            members.remove(&id);
            // The group's next message may now be delivered.
            match members.first().copied() {
                None => {
                    q.groups.remove(group);
                }
                Some(next) if q.messages[&next].state == MsgState::Ready => {
                    q.eligible.insert((Reverse(q.messages[&next].priority), next));
                }
                Some(_) => {}
            }
        }
        msg
    }

    /// Puts back a queue read from a snapshot, with its messages, and rebuilds what the snapshot
    /// leaves out (see `snapshot.rs`): groups first (a ready message is eligible only as its
    /// group's oldest), then each message's place, counts and timers, then its takers' waits and
    /// sessions. Sets built from id-ordered lists are built in bulk.
    pub(crate) fn restore_queue(
        &mut self,
        qid: QueueId,
        mut q: Queue,
        messages: BTreeMap<MsgId, Message>,
        timers: &mut TimerList,
    ) -> Result<(), String> {
        q.messages = messages;
        for (&id, m) in &q.messages {
            if let Some(group) = &m.group {
                q.groups.entry(group.clone()).or_default().insert(id);
            }
        }
        let (mut ready, mut eligible) = (Vec::new(), Vec::new());
        for (&id, m) in &q.messages {
            q.payload_bytes += m.size();
            q.dead += u64::from(m.dead.is_some());
            if let Some(at) = m.expires_at.filter(|_| m.ttl_timer_armed()) {
                timers.push((at, Timer::MessageExpiry { queue: qid, id }));
            }
            match m.state {
                MsgState::Ready => {
                    ready.push(id);
                    if q.may_deliver(id, m) {
                        eligible.push((Reverse(m.priority), id));
                    }
                }
                MsgState::Delayed { until } => {
                    q.delayed += 1;
                    timers.push((until, Timer::MessageDue { queue: qid, id }));
                }
                MsgState::InFlight { receipt, lease_until, session, consumer, .. } => {
                    q.in_flight.insert(receipt, id);
                    if let Some(c) = consumer.and_then(|c| q.consumers.get_mut(&c)) {
                        c.unacked += 1;
                        if let Some(p) = c.pool {
                            let pool = self.pools.get_mut(&(c.session, p));
                            pool.ok_or_else(|| format!("consumer of a missing pool {p}"))?.unacked += 1;
                        }
                    }
                    timers.push((lease_until, Timer::DeliveryLease { queue: qid, receipt }));
                    if let Some(session) = session {
                        Session::restored(&mut self.sessions, session)?.deliveries.insert((qid, receipt));
                    }
                }
            }
        }
        q.ready = ready.into_iter().collect();
        q.eligible = eligible.into_iter().collect();
        for (&wait_id, w) in &q.pop_waiters {
            self.waits.insert(wait_id, WaitTarget::Pop(qid));
            Session::restored(&mut self.sessions, w.session)?.waits.insert(wait_id);
            timers.push((w.deadline, Timer::WaitDeadline { wait_id }));
        }
        for (&consumer_id, c) in &q.consumers {
            Session::restored(&mut self.sessions, c.session)?.consumers.insert((qid, consumer_id));
            if let Some(p) = c.pool {
                let pool = self.pools.get_mut(&(c.session, p));
                pool.ok_or_else(|| format!("consumer of a missing pool {p}"))?
                    .consumers
                    .insert((qid, consumer_id));
            }
        }
        if let Some(owner) = q.config.exclusive_owner {
            Session::restored(&mut self.sessions, owner)?.exclusive_queues.insert(qid);
        }
        for (dedup, &(_, until)) in &q.dedup {
            timers.push((until, Timer::DedupExpiry { queue: qid, dedup: dedup.clone() }));
        }
        if self.queue_ids.insert(q.name.clone(), qid).is_some() {
            return Err(format!("two queues are named {}", q.name));
        }
        self.queues.insert(qid, q);
        Ok(())
    }
}
