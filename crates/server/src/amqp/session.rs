//! This connection's core session, and the one place the AMQP front end reaches the node, the
//! router and the server's limits and counters: open and close, submit, propose, query, and the
//! memory limit. Everything else in `amqp/` is protocol. The shared session layer is meant to
//! take this file's place.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;
use turnstile_amqp::{AmqpError, code};
use turnstile_core::{Command, Effect, Query, Reply, SessionId};
use turnstile_raft::{Answer, NodeError};

use super::machine::NotApplied;
use crate::server::Shared;

#[derive(Debug)]
pub(super) struct Session {
    shared: Arc<Shared>,
    id: SessionId,
}

/// Where a proposed command's reply will come from.
#[derive(Debug)]
pub(super) enum Proposed {
    /// The log took it; the reply comes when it is applied.
    Pending(Answer),
    /// Refused before the log (the memory limit, a log that takes nothing).
    Known(Result<Reply, NotApplied>),
}

impl Session {
    /// Opens a session in the core and registers it with the router for its effects.
    pub async fn open(shared: &Arc<Shared>) -> Result<(Session, mpsc::UnboundedReceiver<Effect>), AmqpError> {
        match shared.node.propose(Command::OpenSession).await {
            Ok(Reply::Session(id)) => {
                let effects = shared.router.register(id);
                Ok((Session { shared: shared.clone(), id }, effects))
            }
            other => {
                tracing::warn!(?other, "amqp connection without a session");
                Err(AmqpError::internal("cannot open a session; try again"))
            }
        }
    }

    /// Ends the session: unacked deliveries go back to their queues and exclusive queues go, in
    /// this one step.
    pub async fn close(self) {
        self.shared.router.unregister(self.id);
        if let Err(e) = self.shared.node.propose(Command::CloseSession { session: self.id }).await {
            tracing::warn!(session = %self.id, error = %e, "session not closed; its leases will end it");
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The largest message body accepted (`--max-payload`).
    pub fn max_payload(&self) -> u64 {
        self.shared.limits.max_bulk_len as u64
    }

    /// Puts a command in the log without waiting for its reply (acks, returns, cancels): later
    /// commands from this connection are still applied after it.
    pub async fn submit(&self, command: Command) {
        if let Err(e) = self.shared.node.submit(command).await {
            tracing::debug!(session = %self.id, error = %e, "command not submitted");
        }
    }

    /// Puts a command in the log, checked against the memory limit first.
    pub async fn propose(&self, command: Command) -> Proposed {
        if matches!(command, Command::Publish(_)) {
            self.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
        }
        if self.shared.over_memory(&command) {
            self.shared.stats.rejected_oom.fetch_add(1, Ordering::Relaxed);
            return Proposed::Known(Err(NotApplied::MemoryFull));
        }
        match self.shared.node.submit(command).await {
            Ok(answer) => Proposed::Pending(answer),
            Err(e) => Proposed::Known(Err(not_applied(&e))),
        }
    }

    /// Runs a query at the local clock after a read-index check.
    pub async fn query(&self, query: Query) -> Result<Reply, NotApplied> {
        self.shared
            .node
            .read(move |state| state.query(crate::ticker::now_ms(), query))
            .await
            .map_err(|e| not_applied(&e))
    }

    /// Whether stored messages are at the memory limit (`Connection.Blocked` lasts until not).
    pub fn memory_full(&self) -> bool {
        self.shared.max_memory > 0 && self.shared.node.payload_bytes() >= self.shared.max_memory
    }
}

/// A pending reply as it arrives; `None` when its sender was dropped (the log stopped before
/// answering).
pub(super) fn answered(answer: Option<Result<Reply, NodeError>>) -> Result<Reply, NotApplied> {
    match answer {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(e)) => Err(not_applied(&e)),
        None => Err(not_applied(&NodeError::ShuttingDown)),
    }
}

/// The AMQP error for a command the log could not take.
fn not_applied(e: &NodeError) -> NotApplied {
    NotApplied::Log(match e {
        NodeError::NotLeader { .. } => {
            AmqpError::new(code::CONNECTION_FORCED, format!("{e}; connect to the leader"))
        }
        _ => AmqpError::internal(e.to_string()),
    })
}
