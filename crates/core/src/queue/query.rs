//! What a read (`Query::QueueStats`, `Query::Peek`) sees of a queue, and the backlog flow
//! control weighs; nothing here changes state.

use super::MsgState;
use crate::{CoreError, MessageView, QueueStats, Reply, SessionId, State, Timestamp};

/// How many of a queue's deliveries in flight [`State::flow_backlog`] looks at.
const FLOW_IN_FLIGHT_LOOK: usize = 64;

impl State {
    pub(crate) fn queue_stats(&self, name: &str, now: Timestamp) -> Result<Reply, CoreError> {
        let q = &self.queues[&self.queue_id(name)?];
        let oldest = q.ready.first().map(|id| now.saturating_sub(q.messages[id].pushed_at)).unwrap_or(0);
        Ok(Reply::QueueStats(QueueStats {
            ready: q.ready.len() as u64,
            delayed: q.delayed,
            in_flight: q.in_flight.len() as u64,
            dead: q.dead,
            consumers: q.consumers.len() as u64,
            waiting_pops: q.pop_waiters.len() as u64,
            oldest_ready_age: oldest,
            payload_bytes: q.payload_bytes,
            totals: q.totals,
        }))
    }

    /// The backlog a message published to `exchange` with `routing_key` would join, as flow
    /// control weighs it: the most ready messages in any queue it would be stored in that another
    /// session than `sender` takes from (a consumer, a waiting pop, or a delivery it holds — a
    /// client that pops in a loop without waiting). A push to a queue is a publish to the default
    /// exchange (`""`) with the queue's name as key.
    ///
    /// Deliveries are looked at up to [`FLOW_IN_FLIGHT_LOOK`] of them, oldest receipt first: the
    /// look stays cheap when the sender itself holds many.
    ///
    /// `None` when no such queue takes: a backlog nobody consumes is the user's intent (a bulk
    /// load, work for later), bounded by `max-memory`, not something to slow a publisher for. The
    /// sender's own consumers do not count, so a connection that publishes to a queue it also
    /// consumes from is never stopped waiting for acks it would have to read itself.
    pub fn flow_backlog(&self, exchange: &str, routing_key: &str, sender: Option<SessionId>) -> Option<u64> {
        let targets = self.route(exchange, routing_key).ok()?;
        targets
            .iter()
            .map(|id| &self.queues[id])
            .filter(|q| {
                let other = |session: SessionId| Some(session) != sender;
                q.consumers.values().any(|c| other(c.session))
                    || q.pop_waiters.values().any(|w| other(w.session))
                    || q.in_flight.values().take(FLOW_IN_FLIGHT_LOOK).any(|id| {
                        matches!(q.messages[id].state, MsgState::InFlight { session: Some(s), .. } if other(s))
                    })
            })
            .map(|q| q.ready.len() as u64)
            .max()
    }

    pub(crate) fn peek(&self, name: &str, count: u32, now: Timestamp) -> Result<Reply, CoreError> {
        let q = &self.queues[&self.queue_id(name)?];
        // A message whose TTL has run out is gone to a reader, even before the tick that ends it.
        let views = q
            .eligible
            .iter()
            .map(|(_, id)| (id, &q.messages[id]))
            .filter(|(_, m)| m.expires_at.is_none_or(|at| at > now))
            .take(count as usize)
            .map(|(id, m)| MessageView {
                id: *id,
                payload: m.payload.clone(),
                priority: m.priority,
                deliveries: m.deliveries,
                age: now.saturating_sub(m.pushed_at),
                group: m.group.clone(),
                dead: m.dead.as_deref().cloned(),
            })
            .collect();
        Ok(Reply::Messages(views))
    }
}
