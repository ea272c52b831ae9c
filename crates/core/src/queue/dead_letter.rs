//! Dead letters (past max deliveries, rejected, TTL over, pushed out of a full queue) and redrive:
//! a message moved to another queue starts afresh there.

use crate::queue::{DeadLetterExchange, Message, MsgState};
use crate::{CoreError, DeadLetter, DeadReason, Effect, MsgId, QueueId, Reply, State};

impl State {
    /// Moves a message to the queue's dead-letter queue, or counts it gone when there is none.
    pub(super) fn dead_letter(&mut self, qid: QueueId, id: MsgId, reason: DeadReason, fx: &mut Vec<Effect>) {
        let msg = self.remove_message(qid, id);
        // Its leaving may free a consumer's credit or let its group's next message go.
        self.serve(qid, fx);
        let q = &self.queues[&qid];
        let from = q.name.clone();
        let mut via = None;
        let targets = match (&q.config.dead_letter, &q.config.dead_letter_exchange) {
            (Some(dlq), _) => {
                let dlq = dlq.clone();
                vec![self.queue_or_create(&dlq)]
            }
            // Through an exchange: a copy per queue reached, but never back into this queue.
            (None, Some(dlx)) => {
                let key = dlx.routing_key.clone().unwrap_or_else(|| from.clone());
                let routed = self.route(&dlx.exchange, &key).unwrap_or_default();
                via = Some(DeadLetterExchange { exchange: dlx.exchange.clone(), routing_key: Some(key) });
                routed.into_iter().filter(|&t| t != qid).collect()
            }
            (None, None) => Vec::new(),
        };
        let q = self.q(qid);
        if targets.is_empty() {
            match reason {
                DeadReason::Expired => q.totals.expired += 1,
                DeadReason::MaxLen => q.totals.dropped += 1,
                DeadReason::MaxDeliveries | DeadReason::Rejected => q.totals.discarded += 1,
            }
            return;
        }
        q.totals.dead_lettered += 1;
        let dead = Some(DeadLetter { reason, from, via });
        let mut msg = Some(msg);
        let last = targets.len() - 1;
        for (i, target) in targets.into_iter().enumerate() {
            // The first copy keeps the message's id; ids are unique across queues, so each other
            // copy takes a new one.
            let copy_id = if i == 0 { id } else { self.next_id() };
            self.q(target).totals.dead_letters_in += 1;
            let copy = if i == last { msg.take() } else { msg.clone() }.expect("a copy is left");
            self.arrive(target, copy_id, copy, dead.clone(), fx);
        }
    }

    /// A message moved in from another queue (dead-lettered or redriven) starts afresh there:
    /// no deliveries, no group, the target queue's TTL and priority bound.
    fn arrive(
        &mut self,
        qid: QueueId,
        id: MsgId,
        msg: Message,
        dead: Option<DeadLetter>,
        fx: &mut Vec<Effect>,
    ) {
        let config = &self.queues[&qid].config;
        let (ttl, priority) = (config.ttl, msg.priority.min(config.max_priority));
        let msg = Message {
            priority,
            deliveries: 0,
            group: None,
            expires_at: ttl.map(|t| self.clock + t),
            dead: dead.map(Box::new),
            state: MsgState::Ready,
            ..msg
        };
        self.insert_message(qid, id, msg, None, fx);
    }

    pub(crate) fn redrive(
        &mut self,
        from: &str,
        to: String,
        count: u64,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        let source = self.queue_id(from)?;
        if from == to {
            return Err(CoreError::InvalidArgument("redrive source and target must differ".into()));
        }
        let ids: Vec<MsgId> = self.queues[&source]
            .ready
            .iter()
            .take(usize::try_from(count).unwrap_or(usize::MAX))
            .copied()
            .collect();
        let target = self.queue_or_create(&to);
        for &id in &ids {
            let msg = self.remove_message(source, id);
            self.q(source).totals.redriven_out += 1;
            self.q(target).totals.redriven_in += 1;
            self.arrive(target, id, msg, None, fx);
        }
        self.serve(source, fx);
        Ok(Reply::Int(ids.len() as i64))
    }

    pub(crate) fn message_expired(&mut self, qid: QueueId, id: MsgId, fx: &mut Vec<Effect>) {
        self.dead_letter(qid, id, DeadReason::Expired, fx);
    }
}
