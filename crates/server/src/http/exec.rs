//! Running commands for HTTP requests, through the session layer. HTTP has no connection to hang
//! a session on, so a command that may wait gets a session of its own for the length of the
//! request:
//!
//! ```text
//!  Session::open ─► propose (KEEP) ─► Waiting? park until the effect
//!  └─ the session closes when the request ends — also when the client goes away mid-wait (drop)
//! ```
//!
//! Holds and deliveries taken over HTTP are `KEEP`: they outlive that session, and only their
//! lease (or a release, ack or nack by token / receipt) ends them.

use std::sync::Arc;

use turnstile_core::{Command, Query, Reply};

use super::ApiError;
use crate::server::Shared;
use crate::session::Session;

/// Proposes one command; a refusal or an error reply becomes an [`ApiError`].
pub async fn write(shared: &Arc<Shared>, cmd: Command) -> Result<Reply, ApiError> {
    let reply = Session::new(shared.clone()).propose(cmd).await?;
    ok(reply)
}

/// Runs one query at a linearizable read point.
pub async fn read(shared: &Arc<Shared>, query: Query) -> Result<Reply, ApiError> {
    let reply = Session::new(shared.clone()).query(query).await?;
    ok(reply)
}

/// Proposes a command in a session opened for it: one that may wait in line, or an acquire
/// whose default owner is that session.
pub async fn write_in_session(shared: &Arc<Shared>, cmd: Command) -> Result<Reply, ApiError> {
    let mut session = Session::new(shared.clone());
    session.open().await?;
    let reply = match session.propose(cmd).await? {
        Reply::Waiting { wait_id } => {
            // The ticker stops at shutdown, so this wait would never time out: end it.
            let mut shutdown = shared.shutdown.clone();
            tokio::select! {
                settled = session.settled(wait_id) => settled?,
                () = shutdown.recv() => return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "TRYAGAIN",
                    "server is shutting down",
                )),
            }
        }
        reply => reply,
    };
    // Dropped, not closed here: the close goes to the log from a task of its own, so the reply
    // does not wait for it.
    drop(session);
    ok(reply)
}

fn ok(reply: Reply) -> Result<Reply, ApiError> {
    match reply {
        Reply::Error(e) => Err(e.into()),
        reply => Ok(reply),
    }
}
