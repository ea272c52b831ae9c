//! This connection's core session as the AMQP front end needs it, on the shared session layer
//! (`crate::session`): the one place `amqp/` reaches the node, the router and the server's limits
//! and counters. Everything else in `amqp/` is protocol.

use std::sync::Arc;

use tokio::sync::mpsc;
use turnstile_amqp::{AmqpError, code};
use turnstile_core::{Command, Denied, Effect, NameKind, Query, Reply, SessionId};
use turnstile_raft::{Answer, NodeError};

use super::machine::NotApplied;
use crate::auth::Identity;
use crate::server::Shared;
use crate::session::{self, Refused};

#[derive(Debug)]
pub(super) struct Session {
    inner: session::Session,
    id: SessionId,
    shared: Arc<Shared>,
    /// Who, from where, for `ACL LOG`.
    client: String,
}

/// Where a proposed command's reply will come from.
#[derive(Debug)]
pub(super) enum Proposed {
    /// The log took it; the reply comes when it is applied.
    Pending(Answer),
    /// Refused before the log (a limit, a log that takes nothing).
    Known(Result<Reply, NotApplied>),
}

impl Session {
    /// Opens a session in the core for the user who logged in; its effects (deliveries,
    /// cancels) come on the receiver.
    pub async fn open(
        shared: &Arc<Shared>,
        identity: Identity,
        client: String,
    ) -> Result<(Session, mpsc::UnboundedReceiver<Effect>), AmqpError> {
        let mut inner = session::Session::new(shared.clone());
        inner.set_identity(identity);
        match inner.open().await {
            Ok(id) => {
                let effects = inner.take_effects().expect("an open session has its effects");
                Ok((Session { inner, id, shared: shared.clone(), client }, effects))
            }
            Err(e) if e.cluster_down() => Err(cluster_down(&e)),
            Err(e) => {
                tracing::warn!(error = %e, "amqp connection without a session");
                Err(AmqpError::internal("cannot open a session; try again"))
            }
        }
    }

    /// Ends the session: unacked deliveries go back to their queues and exclusive queues go, in
    /// this one step.
    pub async fn close(self) {
        self.inner.close().await;
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The server's counters (AMQP methods are counted as they complete).
    pub fn stats(&self) -> &crate::stats::Stats {
        &self.shared.stats
    }

    /// The largest message body accepted (`max-payload`).
    pub fn max_payload(&self) -> u64 {
        self.shared.limits.max_payload as u64
    }

    /// Puts a command in the log without waiting for its reply (acks, returns, cancels): later
    /// commands from this connection are still applied after it.
    pub async fn submit(&mut self, command: Command) {
        if let Err(e) = self.inner.submit(command).await {
            tracing::debug!(session = %self.id, error = %e, "command not submitted");
        }
    }

    /// Puts a command in the log, checked against the user's permissions and the limits first.
    pub async fn propose(&mut self, command: Command) -> Proposed {
        if let Err(e) = self.permit(|mut f| command.names(&mut f), |who| who.check(&command)) {
            return Proposed::Known(Err(NotApplied::Log(e)));
        }
        match self.inner.submit(command).await {
            Ok(answer) => Proposed::Pending(answer),
            Err(Refused::OutOfMemory) => Proposed::Known(Err(NotApplied::MemoryFull)),
            Err(Refused::Node(e)) => Proposed::Known(Err(not_applied(&e))),
            Err(e @ (Refused::NoPerm(_) | Refused::Auth(_))) => {
                Proposed::Known(Err(NotApplied::Log(AmqpError::access_refused(e.to_string()))))
            }
            Err(
                e @ (Refused::PayloadTooLarge { .. } | Refused::NameTooLong { .. } | Refused::SessionOpen),
            ) => Proposed::Known(Err(NotApplied::Log(AmqpError::precondition(e.to_string())))),
        }
    }

    /// Runs a query at a linearizable read point.
    pub async fn query(&mut self, query: Query) -> Result<Reply, NotApplied> {
        self.permit(|mut f| query.names(&mut f), |who| who.check_query(&query)).map_err(NotApplied::Log)?;
        self.inner.query(query).await.map_err(|e| match e {
            Refused::Node(e) => not_applied(&e),
            e @ (Refused::NoPerm(_) | Refused::Auth(_)) => {
                NotApplied::Log(AmqpError::access_refused(e.to_string()))
            }
            other => NotApplied::Log(AmqpError::precondition(other.to_string())),
        })
    }

    /// With authentication on, checks what a method does against the user's permissions first
    /// (the session checks again), to refuse it in RabbitMQ's words, which name the queue or
    /// exchange: `ACCESS_REFUSED - access to queue 'x' in vhost '/' refused for user 'alice'`.
    /// The refusal is recorded in `ACL LOG`.
    fn permit(
        &mut self,
        names: impl Fn(&mut dyn FnMut(NameKind, &str)),
        check: impl FnOnce(&Identity) -> Result<(), Denied>,
    ) -> Result<(), AmqpError> {
        if !self.shared.users.required() {
            return Ok(());
        }
        let who = self.inner.who().map_err(|e| AmqpError::access_refused(e.to_string()))?;
        let Err(denied) = check(who) else { return Ok(()) };
        let (reason, object, text) = refusal(who, &denied, names);
        self.shared.users.log.record(reason, "amqp", &object, who.name(), &self.client);
        Err(AmqpError::access_refused(text))
    }

    /// After a read round: whether flow control stops reading this connection, because a queue
    /// it published to is at `queue-flow-limit` (`crate::flow`); `unapplied` counts its
    /// proposals with no reply yet.
    pub fn flow_check(&mut self, unapplied: impl FnOnce() -> u64) -> bool {
        self.inner.flow_check(unapplied)
    }

    /// While stopped: whether the queues that stopped it are below half the limit now.
    pub fn flow_released(&mut self, unapplied: impl FnOnce() -> u64) -> bool {
        self.inner.flow_released(unapplied)
    }

    /// Whether stored messages are at the memory limit (`Connection.Blocked` lasts until not).
    pub fn memory_full(&self) -> bool {
        let max = self.shared.limits.max_memory;
        max > 0 && self.shared.node.payload_bytes() >= max
    }
}

/// What `ACL LOG` and the client are told of a refusal: its reason and object there, and
/// RabbitMQ's text. The queue or exchange named is the first the user may not touch, or, when
/// the command itself was refused (its category), the first the method names.
fn refusal(
    who: &Identity,
    denied: &Denied,
    names: impl Fn(&mut dyn FnMut(NameKind, &str)),
) -> (&'static str, String, String) {
    let mut first = None;
    let mut refused = None;
    names(&mut |kind, name| {
        if matches!(kind, NameKind::Queue | NameKind::Exchange) {
            first.get_or_insert_with(|| (kind, name.to_owned()));
            if refused.is_none() && !who.perms().allows_name(kind, name.as_bytes()) {
                refused = Some((kind, name.to_owned()));
            }
        }
    });
    let user = who.name();
    let reason = match denied {
        Denied::Command { .. } => "command",
        _ => refused.as_ref().map_or("command", |(kind, _)| kind.as_str()),
    };
    match refused.or(first) {
        Some((kind, name)) => {
            let text = format!("access to {} '{name}' in vhost '/' refused for user '{user}'", kind.as_str());
            (reason, name, text)
        }
        None => (reason, String::new(), format!("access refused for user '{user}': {denied}")),
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

/// The AMQP error for a command the log could not take. A node that can reach no leader closes
/// the channel (or, before a session could be opened, the connection) with the reason, as
/// RabbitMQ does with `CONNECTION_FORCED` when a node cannot serve: the client learns why, and
/// the connection stays usable once the cluster is back.
fn not_applied(e: &NodeError) -> NotApplied {
    NotApplied::Log(match e {
        NodeError::NotLeader { leader: None } | NodeError::Unavailable(_) => {
            cluster_down(&Refused::Node(e.clone()))
        }
        NodeError::NotLeader { .. } => {
            AmqpError::new(code::CONNECTION_FORCED, format!("{e}; connect to the leader"))
        }
        _ => AmqpError::internal(e.to_string()),
    })
}

/// `CONNECTION_FORCED - CLUSTERDOWN no leader reachable`, the words every protocol uses.
fn cluster_down(e: &Refused) -> AmqpError {
    tracing::debug!(reason = %e, "refused: no leader reachable");
    AmqpError::new(code::CONNECTION_FORCED, format!("CLUSTERDOWN {}", session::CLUSTER_DOWN))
}
