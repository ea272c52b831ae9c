//! A queue's life: created (by `Q.CREATE`, `Queue.Declare` or the first push), purged, and
//! deleted, by command or as an `auto_delete` queue's last consumer goes; exclusive queues are
//! locked to their owner's session.

use crate::queue::{MsgState, Queue, QueueConfig};
use crate::timer::Timer;
use crate::{CoreError, Effect, MsgId, QueueId, Reply, SessionId, State, Timestamp};

impl State {
    pub(crate) fn create_queue(&mut self, name: String, config: QueueConfig) -> Result<Reply, CoreError> {
        validate_config(&name, &config)?;
        if let Some(qid) = self.queue_ids.get(&name) {
            // Another session's exclusive queue is locked to it; and, as in RabbitMQ, a shared
            // queue cannot be redeclared as exclusive.
            let q = &self.queues[qid];
            return match (q.config.exclusive_owner, config.exclusive_owner) {
                (Some(owner), new) if new != Some(owner) => Err(q.locked()),
                (None, Some(_)) => Err(q.locked()),
                _ if q.config == config => Ok(Reply::Int(0)),
                _ => Err(CoreError::QueueConfigMismatch(name)),
            };
        }
        if let Some(owner) = config.exclusive_owner {
            self.session(owner)?;
        }
        self.insert_queue(name, config);
        Ok(Reply::Int(1))
    }

    fn insert_queue(&mut self, name: String, config: QueueConfig) -> QueueId {
        let qid = self.next_id();
        if let Some(owner) = config.exclusive_owner {
            self.session_mut(owner).exclusive_queues.insert(qid);
        }
        self.queue_ids.insert(name.clone(), qid);
        self.queues.insert(qid, Queue::new(name, config));
        qid
    }

    pub(super) fn queue_or_create(&mut self, name: &str) -> QueueId {
        match self.queue_ids.get(name) {
            Some(&qid) => qid,
            None => self.insert_queue(name.to_owned(), QueueConfig::default()),
        }
    }

    /// Refuses a session other than the owner of an exclusive queue. Without a session (a
    /// command not sent for one) there is nothing to check.
    pub(crate) fn check_exclusive(&self, qid: QueueId, actor: Option<SessionId>) -> Result<(), CoreError> {
        let q = &self.queues[&qid];
        match (q.config.exclusive_owner, actor) {
            (Some(owner), Some(actor)) if owner != actor => Err(q.locked()),
            _ => Ok(()),
        }
    }

    /// `DeleteQueue`: the exclusivity, `if_unused` and `if_empty` checks, then the delete.
    pub(crate) fn delete_queue_checked(
        &mut self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        actor: Option<SessionId>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let Some(&qid) = self.queue_ids.get(name) else { return Ok(Reply::Int(0)) };
        self.check_exclusive(qid, actor)?;
        let q = &self.queues[&qid];
        if if_unused && !q.consumers.is_empty() {
            return Err(CoreError::Precondition(format!("queue '{name}' in vhost '/' in use")));
        }
        if if_empty && !q.messages.is_empty() {
            return Err(CoreError::Precondition(format!("queue '{name}' in vhost '/' not empty")));
        }
        Ok(self.delete_queue(name, fx))
    }

    /// Deletes a queue: its waiting pops time out, its consumers are cancelled, its messages
    /// and bindings go.
    pub(crate) fn delete_queue(&mut self, name: &str, fx: &mut Vec<Effect>) -> Reply {
        let Some(&qid) = self.queue_ids.get(name) else { return Reply::Int(0) };
        let q = &self.queues[&qid];
        let waiters: Vec<u64> = q.pop_waiters.keys().copied().collect();
        let consumers: Vec<(u64, SessionId)> = q.consumers.iter().map(|(id, c)| (*id, c.session)).collect();
        let messages: Vec<MsgId> = q.messages.keys().copied().collect();
        let dedups: Vec<(String, Timestamp)> = q.dedup.iter().map(|(d, (_, at))| (d.clone(), *at)).collect();
        for wait_id in waiters {
            let session = self.remove_pop_waiter(qid, wait_id);
            fx.push(Effect::PopTimedOut { session, wait_id, queue: name.to_owned() });
        }
        for (consumer_id, session) in consumers {
            self.remove_consumer(qid, consumer_id);
            fx.push(Effect::ConsumerCancelled { session, consumer_id, queue: name.to_owned() });
        }
        for id in messages {
            self.remove_message(qid, id);
        }
        for (dedup, at) in dedups {
            self.timers.remove(at, Timer::DedupExpiry { queue: qid, dedup });
        }
        let q = self.queues.remove(&qid).expect("queue id is live");
        if let Some(owner) = q.config.exclusive_owner {
            self.session_mut(owner).exclusive_queues.remove(&qid);
        }
        self.queue_ids.remove(name);
        self.exchanges.unbind_queue(name);
        Reply::Int(1)
    }

    pub(crate) fn purge_queue(&mut self, name: &str, actor: Option<SessionId>) -> Result<Reply, CoreError> {
        let Some(&qid) = self.queue_ids.get(name) else { return Ok(Reply::Int(0)) };
        self.check_exclusive(qid, actor)?;
        let waiting: Vec<MsgId> = self.queues[&qid]
            .messages
            .iter()
            .filter(|(_, m)| !matches!(m.state, MsgState::InFlight { .. }))
            .map(|(id, _)| *id)
            .collect();
        for &id in &waiting {
            self.remove_message(qid, id);
        }
        self.q(qid).totals.purged += waiting.len() as u64;
        Ok(Reply::Int(waiting.len() as i64))
    }

    /// Deletes an `auto_delete` queue that has had a consumer and has none left.
    pub(crate) fn auto_delete_queue(&mut self, qid: QueueId, fx: &mut Vec<Effect>) {
        let Some(q) = self.queues.get(&qid) else { return };
        if q.config.auto_delete && q.had_consumer && q.consumers.is_empty() {
            let name = q.name.clone();
            self.delete_queue(&name, fx);
        }
    }
}

fn validate_config(name: &str, c: &QueueConfig) -> Result<(), CoreError> {
    let bad = |what: &str| Err(CoreError::InvalidArgument(what.to_owned()));
    if c.dead_letter.as_deref() == Some(name) {
        return bad("a queue cannot be its own dead-letter queue");
    }
    if c.lease == 0 || c.lease > crate::MAX_DURATION || c.dedup_window > crate::MAX_DURATION {
        return bad("lease must be between 1 ms and the maximum duration");
    }
    if c.ttl.is_some_and(|t| t == 0 || t > crate::MAX_DURATION) {
        return bad("ttl must be at least 1 ms");
    }
    Ok(())
}
