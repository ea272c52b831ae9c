//! Sessions: what a connection owns, so that closing it cleans up in one step.
//!
//! Sessions live in the replicated state, not on the node that serves the connection, so a
//! failover orphans nothing: any node can close a session and every node agrees on what it freed.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{CoreError, Effect, QueueId, Reply, SessionId, State, Timestamp, WaitTarget, ensure};

/// How a session ends: closed by its connection, or detached from a connection that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Close,
    Detach,
}

/// What a session owns. A snapshot holds only `opened_at`: the rest are indexes of holds, waiters,
/// deliveries and consumers that name the session, rebuilt from them on restore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Session {
    pub(crate) opened_at: Timestamp,
    /// Hold tokens taken without KEEP.
    #[serde(skip)]
    pub(crate) holds: BTreeSet<u64>,
    /// Waiting acquires and pops.
    #[serde(skip)]
    pub(crate) waits: BTreeSet<u64>,
    /// In-flight deliveries: (queue, receipt).
    #[serde(skip)]
    pub(crate) deliveries: BTreeSet<(QueueId, u64)>,
    #[serde(skip)]
    pub(crate) consumers: BTreeSet<(QueueId, u64)>,
    /// Queues exclusive to this session (`QueueConfig::exclusive_owner`): they end with it.
    #[serde(skip)]
    pub(crate) exclusive_queues: BTreeSet<QueueId>,
}

impl Session {
    /// The session an item read from a snapshot names, for rebuilding what it owns.
    pub(crate) fn restored(
        sessions: &mut BTreeMap<SessionId, Session>,
        id: SessionId,
    ) -> Result<&mut Session, String> {
        sessions.get_mut(&id).ok_or_else(|| format!("an item names session {id}, which is not open"))
    }
}

impl State {
    pub(crate) fn open_session(&mut self) -> SessionId {
        let id = SessionId(self.next_id());
        self.sessions.insert(id, Session { opened_at: self.clock, ..Session::default() });
        id
    }

    /// Releases holds, drops waits and consumers, and returns in-flight deliveries.
    pub(crate) fn close_session(&mut self, id: SessionId, fx: &mut Vec<Effect>) -> Result<Reply, CoreError> {
        self.session(id)?;
        self.end_session(id, Ending::Close, fx);
        Ok(Reply::Int(1))
    }

    /// Ends every session after a restart, when no connection survived: their waits and
    /// consumers go, but their holds and deliveries stay, owned by no session, until released,
    /// acked or their leases run out (leases the same restart refreshed). Replies the count.
    pub(crate) fn detach_sessions(&mut self, fx: &mut Vec<Effect>) -> Reply {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for &id in &ids {
            self.end_session(id, Ending::Detach, fx);
        }
        Reply::Int(ids.len() as i64)
    }

    fn end_session(&mut self, id: SessionId, ending: Ending, fx: &mut Vec<Effect>) {
        // Its exclusive queues go first, as a `DeleteQueue` of each would (consumers cancelled,
        // messages gone), whether the session is closed or detached.
        for qid in self.sessions[&id].exclusive_queues.clone() {
            let name = self.queues[&qid].name.clone();
            self.delete_queue(&name, fx);
        }
        let session = self.sessions[&id].clone();
        // Consumers go first, so returned messages are not handed straight back to them.
        for &(queue, consumer_id) in &session.consumers {
            self.remove_consumer(queue, consumer_id);
        }
        // Waits leave every line before any line moves up, so nothing is granted to this session.
        let mut lines = BTreeSet::new();
        for wait_id in session.waits {
            match self.waits[&wait_id].clone() {
                WaitTarget::Lock(name) => {
                    self.remove_lock_waiter(&name, wait_id);
                    lines.insert(name);
                }
                WaitTarget::Pop(queue) => {
                    self.remove_pop_waiter(queue, wait_id);
                }
            }
        }
        match ending {
            Ending::Close => {
                for token in session.holds {
                    let name = self.holds[&token].clone();
                    self.release(&name, token, fx);
                }
                for (queue, receipt) in session.deliveries {
                    self.return_delivery(queue, receipt, fx);
                }
            }
            Ending::Detach => {
                for token in session.holds {
                    self.detach_hold(token);
                }
                for (queue, receipt) in session.deliveries {
                    self.detach_delivery(queue, receipt);
                }
            }
        }
        self.sessions.remove(&id);
        for name in lines {
            self.wake(&name, fx);
        }
        // Auto-delete queues that just lost their last consumer go too.
        for (queue, _) in session.consumers {
            self.auto_delete_queue(queue, fx);
        }
    }

    pub(crate) fn refresh_leases(&mut self) -> Reply {
        self.refresh_hold_leases();
        self.refresh_delivery_leases();
        Reply::Ok
    }

    pub(crate) fn session(&self, id: SessionId) -> Result<&Session, CoreError> {
        self.sessions.get(&id).ok_or(CoreError::UnknownSession(id))
    }

    /// The session of an item that references it; its existence is an invariant.
    pub(crate) fn session_mut(&mut self, id: SessionId) -> &mut Session {
        self.sessions.get_mut(&id).expect("items reference only open sessions")
    }

    /// A timed-out wait (lock or pop): take it out of its line and tell its session.
    pub(crate) fn wait_timed_out(&mut self, wait_id: u64, fx: &mut Vec<Effect>) {
        match self.waits[&wait_id].clone() {
            WaitTarget::Lock(name) => {
                let waiter = self.remove_lock_waiter(&name, wait_id);
                fx.push(Effect::WaitTimedOut { session: waiter.session, wait_id, name: name.clone() });
                self.wake(&name, fx);
            }
            WaitTarget::Pop(queue) => {
                let session = self.remove_pop_waiter(queue, wait_id);
                let queue = self.queues[&queue].name.clone();
                fx.push(Effect::PopTimedOut { session, wait_id, queue });
            }
        }
    }

    pub(crate) fn check_sessions(&self) -> Result<(), String> {
        for (id, s) in &self.sessions {
            for token in &s.holds {
                let name = self.holds.get(token);
                let hold = name.and_then(|n| self.resources.get(n)).and_then(|r| r.holds.get(token));
                ensure!(
                    hold.is_some_and(|h| h.session == Some(*id)),
                    "session {id}: hold {token} not its own"
                );
            }
            for wait_id in &s.waits {
                ensure!(self.waits.contains_key(wait_id), "session {id}: wait {wait_id} unknown");
            }
            for (queue, receipt) in &s.deliveries {
                let q = self.queues.get(queue);
                ensure!(
                    q.is_some_and(|q| q.in_flight.contains_key(receipt)),
                    "session {id}: delivery {receipt}"
                );
            }
            for (queue, consumer) in &s.consumers {
                let q = self.queues.get(queue);
                ensure!(q.is_some_and(|q| q.consumers.contains_key(consumer)), "session {id}: consumer");
            }
            for queue in &s.exclusive_queues {
                let q = self.queues.get(queue);
                ensure!(
                    q.is_some_and(|q| q.config.exclusive_owner == Some(*id)),
                    "session {id}: exclusive queue {queue} not its own"
                );
            }
        }
        Ok(())
    }
}

/// A session as operators see it (the admin API, the dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    pub id: SessionId,
    /// The owner name holds and waits of this session go by unless they name another.
    pub default_owner: String,
    /// Time since the session was opened.
    pub age: crate::Millis,
    /// Holds that end with the session (taken without KEEP).
    pub holds: usize,
    pub waits: usize,
    pub deliveries: usize,
    pub consumers: usize,
}

impl State {
    /// Every open session, oldest first.
    pub fn sessions(&self) -> Vec<SessionView> {
        self.sessions
            .iter()
            .map(|(id, s)| SessionView {
                id: *id,
                default_owner: crate::default_owner(*id),
                age: self.clock.saturating_sub(s.opened_at),
                holds: s.holds.len(),
                waits: s.waits.len(),
                deliveries: s.deliveries.len(),
                consumers: s.consumers.len(),
            })
            .collect()
    }
}
