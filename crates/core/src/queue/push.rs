//! Pushes and publishes: the checks they make, the dedup window, the queue's bound (`max_len` and
//! its [`Overflow`]), and the new message stored ready or delayed.

use crate::queue::{Message, MsgState, Overflow};
use crate::timer::Timer;
use crate::{CoreError, DeadReason, Effect, MsgId, Push, QueueId, Reply, State, Timestamp};

impl State {
    pub(crate) fn push(&mut self, p: Push, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        if p.priority > 9 {
            return Err(CoreError::InvalidArgument("priority must be between 0 and 9".into()));
        }
        let due = self.check_push(&p)?;
        let qid = self.queue_or_create(&p.queue);
        let (id, duplicate) = self.store_push(qid, p, due, fx)?;
        Ok(Reply::Pushed { id, duplicate })
    }

    /// The checks a push makes before any queue is touched; returns when it is due.
    fn check_push(&self, p: &Push) -> Result<Option<Timestamp>, CoreError> {
        let due = if p.delay > 0 { Some(self.deadline(p.delay)?) } else { None };
        if let Some(ttl) = p.ttl {
            self.deadline(ttl)?;
        }
        self.check_fence(p.fence.as_ref())?;
        Ok(due)
    }

    /// Routes a message through an exchange and stores a copy in every queue it reaches, each
    /// as a push to that queue (its own id, the queue's TTL, bounds and dedup window).
    pub(crate) fn publish(&mut self, p: crate::Publish, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        let exchange = self.exchanges.get(&p.exchange);
        if exchange.is_some_and(|x| x.internal) {
            return Err(CoreError::AccessRefused(format!(
                "cannot publish to internal exchange '{}' in vhost '/'",
                p.exchange
            )));
        }
        let targets = self.route(&p.exchange, &p.routing_key)?;
        let due = self.check_push(&p.push)?;
        let (mut routed, mut refused) = (0, 0);
        for qid in targets {
            let push = Push { queue: self.queues[&qid].name.clone(), ..p.push.clone() };
            match self.store_push(qid, push, due, fx) {
                Ok(_) => routed += 1,
                Err(_) => refused += 1,
            }
        }
        Ok(Reply::Published { routed, refused })
    }

    /// Stores a checked push in queue `qid`: returns its id and whether it was a duplicate, or
    /// `QueueFull` (and nothing changed) when the queue is full and refuses.
    fn store_push(
        &mut self,
        qid: QueueId,
        p: Push,
        due: Option<Timestamp>,
        fx: &mut Vec<Effect>,
    ) -> Result<(MsgId, bool), CoreError> {
        let now = self.clock;
        let q = &self.queues[&qid];
        if let Some(&(id, until)) = p.dedup.as_ref().and_then(|d| q.dedup.get(d)) {
            if until > now {
                self.q(qid).totals.deduplicated += 1;
                return Ok((id, true));
            }
        }
        let max_len = q.config.max_len;
        if max_len > 0 && q.messages.len() as u64 >= max_len {
            let head = q.eligible.first().map(|(_, id)| *id).or_else(|| q.ready.first().copied());
            match (q.config.overflow, head) {
                (Overflow::DropHead, Some(head)) => self.dead_letter(qid, head, DeadReason::MaxLen, fx),
                _ => return Err(CoreError::QueueFull { name: q.name.clone(), max_len }),
            }
        }
        let id = self.next_id();
        let q = self.q(qid);
        let ttl = p.ttl.or(q.config.ttl);
        let priority = p.priority.min(q.config.max_priority);
        if let Some(dedup) = p.dedup {
            let until = now + q.config.dedup_window;
            if let Some((_, old)) = q.dedup.insert(dedup.clone(), (id, until)) {
                self.timers.remove(old, Timer::DedupExpiry { queue: qid, dedup: dedup.clone() });
            }
            self.timers.add(until, Timer::DedupExpiry { queue: qid, dedup });
        }
        let msg = Message {
            payload: p.payload,
            properties: p.properties,
            priority,
            pushed_at: now,
            deliveries: 0,
            group: p.group,
            expires_at: ttl.map(|t| now + t),
            dead: None,
            state: MsgState::Ready,
        };
        self.q(qid).totals.pushed += 1;
        self.insert_message(qid, id, msg, due, fx);
        Ok((id, false))
    }

    pub(crate) fn dedup_expired(&mut self, qid: QueueId, dedup: &str) {
        let (_, until) = self.q(qid).dedup.remove(dedup).expect("dedup entry of a timer");
        self.timers.remove(until, Timer::DedupExpiry { queue: qid, dedup: dedup.to_owned() });
    }
}
