//! Takers and delivery: waiting pops and consumers in their line, and `serve`, which hands the
//! eligible messages to the first taker with credit while both last.

use crate::queue::{Consumer, MsgState, PopWaiter};
use crate::timer::Timer;
use crate::{
    Consume, CoreError, Delivery, Effect, Millis, Pop, QueueId, Reply, SessionId, State, Taker, Timestamp,
    WaitTarget,
};

impl State {
    pub(crate) fn pop(&mut self, p: Pop, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if p.count == 0 {
            return Err(CoreError::InvalidArgument("count must be at least 1".into()));
        }
        if let Some(lease) = p.lease {
            self.deadline(lease)?;
        }
        let deadline = if p.wait > 0 { Some(self.deadline(p.wait)?) } else { None };
        if let Some(session) = p.session {
            self.session(session)?;
        }
        let Some(&qid) = self.queue_ids.get(&p.queue) else {
            if deadline.is_none() {
                return Ok(Reply::Nil);
            }
            // Like Redis's BLPOP on a missing key, a waiting pop waits for the first push.
            let session = p.session.ok_or(CoreError::WaitWithoutSession)?;
            let qid = self.queue_or_create(&p.queue);
            let lease = p.lease.unwrap_or(self.queues[&qid].config.lease);
            let wait_id = self.add_pop_waiter(qid, session, &p, lease, deadline.expect("waiting"));
            return Ok(Reply::Waiting { wait_id });
        };
        self.check_exclusive(qid, p.session)?;
        let lease = p.lease.unwrap_or(self.queues[&qid].config.lease);
        if !self.queues[&qid].eligible.is_empty() {
            let owner = if p.keep { None } else { p.session };
            let deliveries = self.deliver(qid, p.count, owner, None, lease, p.auto_ack);
            if p.keep && !p.auto_ack {
                self.own_kept_deliveries(self.popping_user(p.session), &receipts(&deliveries));
            }
            self.serve(qid, fx);
            return Ok(Reply::Deliveries(deliveries));
        }
        match (deadline, p.session) {
            (None, _) => Ok(Reply::Nil),
            (Some(_), None) => Err(CoreError::WaitWithoutSession),
            (Some(deadline), Some(session)) => {
                let wait_id = self.add_pop_waiter(qid, session, &p, lease, deadline);
                Ok(Reply::Waiting { wait_id })
            }
        }
    }

    fn add_pop_waiter(
        &mut self,
        qid: QueueId,
        session: SessionId,
        p: &Pop,
        lease: Millis,
        deadline: Timestamp,
    ) -> u64 {
        let wait_id = self.next_id();
        let waiter =
            PopWaiter { session, count: p.count, lease, auto_ack: p.auto_ack, keep: p.keep, deadline };
        let q = self.q(qid);
        q.pop_waiters.insert(wait_id, waiter);
        q.takers.push_back(Taker::Pop { wait_id });
        self.waits.insert(wait_id, WaitTarget::Pop(qid));
        self.session_mut(session).waits.insert(wait_id);
        self.timers.add(deadline, Timer::WaitDeadline { wait_id });
        wait_id
    }

    /// Takes a waiting pop out of its line, with its timer; returns its session.
    pub(crate) fn remove_pop_waiter(&mut self, qid: QueueId, wait_id: u64) -> SessionId {
        let q = self.q(qid);
        let waiter = q.pop_waiters.remove(&wait_id).expect("pop waiter exists");
        q.takers.retain(|t| *t != Taker::Pop { wait_id });
        self.waits.remove(&wait_id);
        self.session_mut(waiter.session).waits.remove(&wait_id);
        self.timers.remove(waiter.deadline, Timer::WaitDeadline { wait_id });
        waiter.session
    }

    pub(crate) fn consume(&mut self, c: Consume, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if let Some(lease) = c.lease {
            self.deadline(lease)?;
        }
        self.session(c.session)?;
        if let Some(&qid) = self.queue_ids.get(&c.queue) {
            self.check_exclusive(qid, Some(c.session))?;
            let q = &self.queues[&qid];
            if q.consumers.values().any(|x| x.exclusive) || (c.exclusive && !q.consumers.is_empty()) {
                return Err(CoreError::AccessRefused(format!(
                    "queue '{}' in vhost '/' in exclusive use",
                    c.queue
                )));
            }
        }
        let qid = self.queue_or_create(&c.queue);
        let consumer_id = self.next_id();
        let lease = c.lease.unwrap_or(self.queues[&qid].config.lease);
        let consumer = Consumer {
            session: c.session,
            credit: c.credit,
            lease,
            auto_ack: c.auto_ack,
            exclusive: c.exclusive,
            pool: c.pool.map(|p| p.id),
            unacked: 0,
        };
        let q = self.q(qid);
        q.consumers.insert(consumer_id, consumer);
        q.had_consumer = true;
        q.takers.push_back(Taker::Consumer { consumer_id });
        self.session_mut(c.session).consumers.insert((qid, consumer_id));
        if let Some(p) = c.pool {
            let pool = self.pools.entry((c.session, p.id)).or_default();
            pool.consumers.insert((qid, consumer_id));
            // The latest limit wins; a raised one may let the pool's other consumers go on.
            if pool.limit != p.limit {
                pool.limit = p.limit;
                self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
            }
        }
        self.serve(qid, fx);
        Ok(Reply::Consumer { consumer_id })
    }

    pub(crate) fn cancel(&mut self, queue: &str, consumer_id: u64, fx: &mut Vec<Effect>) -> Reply {
        match self.queue_ids.get(queue) {
            Some(&qid) if self.queues[&qid].consumers.contains_key(&consumer_id) => {
                self.remove_consumer(qid, consumer_id);
                self.auto_delete_queue(qid, fx);
                Reply::Int(1)
            }
            _ => Reply::Int(0),
        }
    }

    /// Removes a consumer; its in-flight deliveries stay until acked, nacked or expired, but no
    /// longer count against its pool. With a single active consumer, the next one takes over.
    pub(crate) fn remove_consumer(&mut self, qid: QueueId, consumer_id: u64) {
        let q = self.q(qid);
        let consumer = q.consumers.remove(&consumer_id).expect("consumer exists");
        q.takers.retain(|t| *t != Taker::Consumer { consumer_id });
        if q.config.single_active_consumer {
            self.to_serve.insert(qid);
        }
        self.session_mut(consumer.session).consumers.remove(&(qid, consumer_id));
        if let Some(id) = consumer.pool {
            let key = (consumer.session, id);
            let pool = self.pools.get_mut(&key).expect("pool of a consumer");
            pool.consumers.remove(&(qid, consumer_id));
            pool.unacked -= consumer.unacked;
            if pool.consumers.is_empty() {
                self.pools.remove(&key);
            } else if consumer.unacked > 0 {
                self.to_serve.extend(pool.consumers.iter().map(|(q, _)| *q));
            }
        }
    }

    /// Serves the queues whose takers gained credit during this step (see `State::to_serve`).
    pub(crate) fn serve_pending(&mut self, fx: &mut Vec<Effect>) {
        while let Some(qid) = self.to_serve.pop_first() {
            if self.queues.contains_key(&qid) {
                self.serve(qid, fx);
            }
        }
    }

    /// Hands ready messages to the takers in line while both last.
    pub(super) fn serve(&mut self, qid: QueueId, fx: &mut Vec<Effect>) {
        loop {
            let q = &self.queues[&qid];
            if q.eligible.is_empty() {
                return;
            }
            let Some(at) = q.next_taker(&self.pools) else { return };
            let queue = q.name.clone();
            match q.takers[at] {
                Taker::Pop { wait_id } => {
                    let w = q.pop_waiters[&wait_id].clone();
                    self.remove_pop_waiter(qid, wait_id);
                    let owner = if w.keep { None } else { Some(w.session) };
                    let deliveries = self.deliver(qid, w.count, owner, None, w.lease, w.auto_ack);
                    if w.keep && !w.auto_ack {
                        // Served now, perhaps under another user's command: the waiter's session
                        // alone names whose they are.
                        self.own_kept_deliveries(self.user_of(Some(w.session)), &receipts(&deliveries));
                    }
                    fx.push(Effect::Delivered {
                        session: w.session,
                        to: Taker::Pop { wait_id },
                        queue,
                        deliveries,
                    });
                }
                Taker::Consumer { consumer_id } => {
                    let c = q.consumers[&consumer_id].clone();
                    let q = self.q(qid);
                    let taker = q.takers.remove(at).expect("taker exists");
                    q.takers.push_back(taker);
                    let deliveries =
                        self.deliver(qid, 1, Some(c.session), Some(consumer_id), c.lease, c.auto_ack);
                    let to = Taker::Consumer { consumer_id };
                    fx.push(Effect::Delivered { session: c.session, to, queue, deliveries });
                }
            }
        }
    }

    /// Delivers up to `count` eligible messages, each with its own receipt and lease.
    fn deliver(
        &mut self,
        qid: QueueId,
        count: u32,
        session: Option<SessionId>,
        consumer: Option<u64>,
        lease: Millis,
        auto_ack: bool,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        while out.len() < count as usize {
            let Some(&(_, id)) = self.queues[&qid].eligible.first() else { break };
            let receipt = self.next_token();
            let q = self.q(qid);
            q.totals.delivered += 1;
            let msg = q.messages.get_mut(&id).expect("eligible message exists");
            msg.deliveries += 1;
            let delivery = Delivery {
                id,
                receipt,
                payload: msg.payload.clone(),
                properties: msg.properties.clone(),
                deliveries: msg.deliveries,
                priority: msg.priority,
                lease,
                dead: msg.dead.as_deref().cloned(),
            };
            if auto_ack {
                self.remove_message(qid, id);
                self.q(qid).totals.acked += 1;
            } else {
                let lease_until = self.clock + lease;
                self.move_to(qid, id, MsgState::InFlight { receipt, lease_until, lease, session, consumer });
            }
            out.push(delivery);
        }
        out
    }
}

fn receipts(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.receipt).collect()
}
