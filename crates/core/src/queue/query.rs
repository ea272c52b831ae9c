//! What a read (`Query::QueueStats`, `Query::Peek`) sees of a queue; nothing here changes state.

use crate::{CoreError, MessageView, QueueStats, Reply, State, Timestamp};

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
