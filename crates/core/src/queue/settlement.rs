//! How a delivery ends or goes on: ack, nack, a lease extended or run out, a session that closes.
//! A message that comes back is requeued, or dead-lettered past its last delivery or its TTL.

use crate::queue::MsgState;
use crate::timer::Timer;
use crate::{CoreError, DeadReason, Effect, Fence, Millis, MsgId, QueueId, Reply, State, Timestamp};

impl State {
    pub(crate) fn ack(
        &mut self,
        queue: &str,
        receipts: &[u64],
        fence: Option<&Fence>,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        self.check_fence(fence)?;
        let Some(&qid) = self.queue_ids.get(queue) else { return Ok(Reply::Int(0)) };
        let mut acked = 0;
        for receipt in receipts {
            if let Some(&id) = self.queues[&qid].in_flight.get(receipt) {
                self.remove_message(qid, id);
                self.q(qid).totals.acked += 1;
                acked += 1;
            }
        }
        self.serve(qid, fx);
        Ok(Reply::Int(acked))
    }

    pub(crate) fn nack(
        &mut self,
        queue: &str,
        receipt: u64,
        delay: Millis,
        dead_letter: bool,
        fx: &mut Vec<Effect>,
    ) -> Result<Reply, CoreError> {
        if delay > 0 {
            self.deadline(delay)?;
        }
        let Some(&qid) = self.queue_ids.get(queue) else { return Ok(Reply::Int(0)) };
        let Some(&id) = self.queues[&qid].in_flight.get(&receipt) else { return Ok(Reply::Int(0)) };
        if dead_letter {
            self.dead_letter(qid, id, DeadReason::Rejected, fx);
        } else {
            self.requeue(qid, id, delay, fx);
        }
        Ok(Reply::Int(1))
    }

    pub(crate) fn extend(&mut self, queue: &str, receipt: u64, lease: Millis) -> Result<Reply, CoreError> {
        let until = self.deadline(lease)?;
        let lost = CoreError::LostDelivery { receipt };
        let qid = self.queue_ids.get(queue).copied().ok_or(lost.clone())?;
        let id = self.queues[&qid].in_flight.get(&receipt).copied().ok_or(lost)?;
        self.set_lease(qid, id, until, lease);
        Ok(Reply::Int(lease as i64))
    }

    fn set_lease(&mut self, qid: QueueId, id: MsgId, until: Timestamp, new_lease: Millis) {
        let msg = self.q(qid).messages.get_mut(&id).expect("message exists");
        let MsgState::InFlight { receipt, lease_until, lease, .. } = &mut msg.state else {
            unreachable!("set_lease on a message not in flight")
        };
        let (receipt, old) = (*receipt, *lease_until);
        (*lease_until, *lease) = (until, new_lease);
        self.timers.reschedule(old, until, Timer::DeliveryLease { queue: qid, receipt });
    }

    pub(crate) fn refresh_delivery_leases(&mut self) {
        let mut leases = Vec::new();
        for (&qid, q) in &self.queues {
            for &id in q.in_flight.values() {
                if let MsgState::InFlight { lease_until, lease, .. } = q.messages[&id].state {
                    leases.push((qid, id, lease_until.max(self.clock + lease), lease));
                }
            }
        }
        for (qid, id, until, lease) in leases {
            self.set_lease(qid, id, until, lease);
        }
    }

    /// Keeps a delivery in flight but frees it from its session (the session is ending).
    pub(crate) fn detach_delivery(&mut self, qid: QueueId, receipt: u64) {
        let q = self.q(qid);
        let id = q.in_flight[&receipt];
        let msg = q.messages.get_mut(&id).expect("in-flight message exists");
        if let MsgState::InFlight { session: slot, .. } = &mut msg.state {
            if let Some(session) = slot.take() {
                self.session_mut(session).deliveries.remove(&(qid, receipt));
            }
        }
    }

    /// A delivery that comes back unacked (lease expiry, session close).
    pub(crate) fn return_delivery(&mut self, qid: QueueId, receipt: u64, fx: &mut Vec<Effect>) {
        let id = self.queues[&qid].in_flight[&receipt];
        self.requeue(qid, id, 0, fx);
    }

    pub(crate) fn delivery_expired(&mut self, qid: QueueId, receipt: u64, fx: &mut Vec<Effect>) {
        let id = self.queues[&qid].in_flight[&receipt];
        fx.push(Effect::DeliveryExpired { queue: self.queues[&qid].name.clone(), id, receipt });
        self.requeue(qid, id, 0, fx);
    }

    /// Puts an in-flight message back for another delivery, unless it has used its last one or
    /// its TTL ran out while it was out.
    fn requeue(&mut self, qid: QueueId, id: MsgId, delay: Millis, fx: &mut Vec<Effect>) {
        let q = self.q(qid);
        q.totals.returned += 1;
        let max = q.config.max_deliveries;
        let msg = &q.messages[&id];
        if max > 0 && msg.deliveries >= max {
            self.dead_letter(qid, id, DeadReason::MaxDeliveries, fx);
        } else if msg.expires_at.is_some_and(|at| at <= self.clock) {
            self.dead_letter(qid, id, DeadReason::Expired, fx);
        } else {
            let state =
                if delay > 0 { MsgState::Delayed { until: self.clock + delay } } else { MsgState::Ready };
            self.move_to(qid, id, state);
            self.serve(qid, fx);
        }
    }
}
