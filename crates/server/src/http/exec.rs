//! Running commands for HTTP requests. HTTP has no connection to hang a session on, so a command
//! that may wait gets a session of its own for the length of the request:
//!
//! ```text
//!  OpenSession ─► register with the router ─► propose (KEEP) ─► Waiting? park until the effect
//!  └─ CloseSession when the request ends — also when the client goes away mid-wait (Drop)
//! ```
//!
//! Holds and deliveries taken over HTTP are `KEEP`: they outlive that session, and only their
//! lease (or a release, ack or nack by token / receipt) ends them.

use std::sync::Arc;

use turnstile_core::{Command, CoreError, Query, Reply, SessionId};
use turnstile_raft::NodeError;

use super::ApiError;
use crate::router::settled;
use crate::server::Shared;
use crate::ticker::now_ms;

/// Proposes one command; an error reply becomes an [`ApiError`].
pub async fn write(shared: &Shared, cmd: Command) -> Result<Reply, ApiError> {
    if shared.over_memory(&cmd) {
        shared.stats.rejected_oom.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(
            axum::http::StatusCode::INSUFFICIENT_STORAGE,
            "OOM",
            "command not allowed when used memory > 'max-memory'",
        ));
    }
    let reply = shared.node.propose(cmd).await?;
    crate::metrics::observe_reply(&shared.stats, &reply);
    ok(shared, reply)
}

/// Runs one query at a linearizable read point.
pub async fn read(shared: &Shared, query: Query) -> Result<Reply, ApiError> {
    let reply = shared.node.read(move |state| state.query(now_ms(), query)).await?;
    ok(shared, reply)
}

/// Proposes a command in a session opened for it: one that may wait in line, or an acquire
/// whose default owner is that session.
pub async fn write_in_session(shared: &Arc<Shared>, mut cmd: Command) -> Result<Reply, ApiError> {
    let session = match shared.node.propose(Command::OpenSession).await? {
        Reply::Session(session) => session,
        other => return Err(ApiError::bad_request(format!("open session replied {other:?}"))),
    };
    // Registered before the wait exists, so its wake-up cannot be missed.
    let mut effects = shared.router.register(session);
    let _closer = SessionCloser { shared: shared.clone(), session };
    if let Some(slot) = cmd.session_mut() {
        *slot = Some(session);
    }
    match shared.node.propose(cmd).await? {
        Reply::Waiting { wait_id } => {
            let mut shutdown = shared.shutdown.clone();
            loop {
                let effect = tokio::select! {
                    effect = effects.recv() => effect,
                    // The ticker stops at shutdown, so this wait would never time out: end it.
                    () = shutdown.recv() => None,
                };
                let Some(effect) = effect else {
                    return Err(ApiError::new(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "TRYAGAIN",
                        "server is shutting down",
                    ));
                };
                if let Some(reply) = settled(effect, wait_id) {
                    return ok(shared, reply);
                }
            }
        }
        reply => {
            // A grant after a wait is counted from its effect; this one came at once.
            crate::metrics::observe_reply(&shared.stats, &reply);
            ok(shared, reply)
        }
    }
}

/// Ends a request's session however the request ends (finished, or dropped by a client that
/// went away): its wait is dropped; its KEEP holds and deliveries stay.
struct SessionCloser {
    shared: Arc<Shared>,
    session: SessionId,
}

impl Drop for SessionCloser {
    fn drop(&mut self) {
        self.shared.router.unregister(self.session);
        let (shared, session) = (self.shared.clone(), self.session);
        tokio::spawn(async move {
            match shared.node.propose(Command::CloseSession { session }).await {
                Ok(_) => {}
                // Stopping: the next start detaches every session of this run anyway.
                Err(NodeError::ShuttingDown) => tracing::debug!(%session, "session left to the next start"),
                Err(e) => tracing::warn!(%session, error = %e, "session not closed; its leases will end it"),
            }
        });
    }
}

fn ok(shared: &Shared, reply: Reply) -> Result<Reply, ApiError> {
    match reply {
        Reply::Error(e) => {
            if let CoreError::Deadlock { cycle } = &e {
                shared.stats.deadlocks.record(cycle);
            }
            Err(e.into())
        }
        reply => Ok(reply),
    }
}
