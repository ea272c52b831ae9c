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
//!
//! Every command runs as the request's user ([`Client::session`]): the session checks the user's
//! rules and names, and with authentication on the core records whose holds and deliveries are,
//! and refuses another user's release, renew, ack or nack by token / receipt (403 `NOPERM`)
//! unless the caller is an admin.

use std::sync::Arc;

use turnstile_core::{Command, CoreError, Query, Reply};

use super::ApiError;
use super::client::Client;
use crate::server::Shared;
use crate::session::Refused;

/// Proposes one command as `client`'s user; a refusal or an error reply becomes an [`ApiError`].
///
/// Flow control (`queue-flow-limit`, see `flow.rs`): a push that took a queue another
/// session consumes to the limit is answered once its consumers have taken it below half, so an
/// HTTP publisher, sending its next request after each answer, waits as a RESP one does.
pub async fn write(shared: &Arc<Shared>, client: &Client, cmd: Command) -> Result<Reply, ApiError> {
    let name = cmd.categories().0;
    let mut session = client.session(shared);
    let reply = session.propose(cmd).await.map_err(|e| client.refused(shared, e, name))?;
    session.flow_wait().await;
    ok(shared, client, name, reply)
}

/// Runs one query as `client`'s user at a linearizable read point.
pub async fn read(shared: &Arc<Shared>, client: &Client, query: Query) -> Result<Reply, ApiError> {
    let name = query.categories().0;
    let reply = client.session(shared).query(query).await.map_err(|e| client.refused(shared, e, name))?;
    ok(shared, client, name, reply)
}

/// Proposes a command in a session opened for it: one that may wait in line, or an acquire
/// whose default owner is that session.
pub async fn write_in_session(
    shared: &Arc<Shared>,
    client: &Client,
    cmd: Command,
) -> Result<Reply, ApiError> {
    let name = cmd.categories().0;
    let refused = |e: Refused| client.refused(shared, e, name);
    let mut session = client.session(shared);
    session.open().await.map_err(refused)?;
    let reply = match session.propose(cmd).await.map_err(refused)? {
        Reply::Waiting { wait_id } => {
            // The ticker stops at shutdown, so this wait would never time out: end it.
            let mut shutdown = shared.shutdown.clone();
            tokio::select! {
                settled = session.settled(wait_id) => settled.map_err(refused)?,
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
    ok(shared, client, name, reply)
}

/// An error reply becomes an [`ApiError`]; the core's refusal of another user's hold, delivery
/// or session (`NOPERM`) is recorded in `ACL LOG` as well.
fn ok(shared: &Shared, client: &Client, name: &str, reply: Reply) -> Result<Reply, ApiError> {
    match reply {
        Reply::Error(e) => {
            if matches!(e, CoreError::NoPerm(_)) {
                client.refused_by_owner(shared, name);
            }
            Err(e.into())
        }
        reply => Ok(reply),
    }
}
