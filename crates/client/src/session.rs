//! Sessions that outlive a connection: what a lock guard or a consumer needs to take its
//! session to another node when the one it talked to dies.
//!
//! ```text
//!  dedicated connection ─► SESSION INFO ─► SessionKey { id, secret }
//!  the connection breaks, or its node is no longer the leader
//!      └─► Client::resume(key): a new connection (the leader hint, else the next address),
//!          SESSION RESUME id secret ─► +OK: holds and deliveries are the new connection's
//!                                      -NOTLEADER / -TRYAGAIN / no answer: the next node, backoff
//!                                      -ERR no session ...: it ended (past the server's
//!                                       session timeout, or closed): what it held is gone
//! ```
//!
//! A wait in progress does not follow a session (the server ends it at the resume): the caller
//! asks again on the resumed connection, which is safe for an acquire — the same session is the
//! same owner, and an owner that already holds the lock gets the same hold back.

use tokio::time::Instant;

use crate::client::{Client, Retry};
use crate::conn::{Cmd, Connection};
use crate::error::{Error, Result};
use crate::reply;

/// A server session's id and secret (`SESSION INFO`): what resumes it on another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKey {
    pub id: u64,
    pub secret: u64,
}

impl SessionKey {
    fn info_cmd() -> Cmd {
        Cmd::new("SESSION").arg("INFO")
    }

    /// Reads a `SESSION INFO` reply, `[id, secret]`.
    fn from_reply(frame: crate::Frame) -> Result<SessionKey> {
        let [id, secret] = reply::tuple(frame)?;
        Ok(SessionKey { id: reply::unsigned(id)?, secret: reply::unsigned(secret)? })
    }
}

impl Client {
    /// The id and secret of `conn`'s session, opening it if it is not open yet.
    pub async fn session_key(conn: &mut Connection) -> Result<SessionKey> {
        SessionKey::from_reply(conn.call(&SessionKey::info_cmd()).await?)
    }

    /// A new dedicated connection with its session open, and the session's key; on the leader
    /// (following `-NOTLEADER`, waiting out an election).
    pub async fn new_session(&self) -> Result<(Connection, SessionKey)> {
        let mut retry = Retry::new(self.options());
        loop {
            let mut conn = self.open().await?;
            match Client::session_key(&mut conn).await {
                Err(e) if self.refused_here(&e, &mut conn) && retry.again().await => {}
                Err(e) => return Err(e),
                Ok(key) => return Ok((conn, key)),
            }
        }
    }

    /// A new connection bound to the session `key`, on whichever node takes it: the leader hint
    /// or the next address, following `-NOTLEADER` and waiting out an election, until
    /// `give_up`. An error reply other than those means the session is gone.
    pub async fn resume(&self, key: SessionKey, give_up: Instant) -> Result<Connection> {
        let cmd = Cmd::new("SESSION").arg("RESUME").arg(key.id).arg(key.secret);
        let mut retry = Retry::until(give_up);
        loop {
            match self.open().await {
                Ok(mut conn) => match conn.call(&cmd).await {
                    Ok(_) => {
                        tracing::debug!(session = key.id, addr = conn.addr(), "session resumed");
                        return Ok(conn);
                    }
                    Err(e) if self.refused_here(&e, &mut conn) => {}
                    Err(Error::Io { addr, .. }) => self.skip(&addr),
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            }
            if !retry.again().await {
                return Err(Error::Server {
                    code: "ERR".into(),
                    message: format!("session {} could not be resumed on any node in time", key.id),
                });
            }
        }
    }

    /// [`Client::call_dedicated`] with the session's key learned first, in the same round trip
    /// (`SESSION INFO` opens the session, `cmd` then runs in it).
    pub(crate) async fn call_in_session(
        &self,
        cmd: &Cmd,
    ) -> Result<(Connection, SessionKey, Result<crate::Frame>)> {
        let mut retry = Retry::new(self.options());
        loop {
            let mut conn = self.open().await?;
            conn.send(&[SessionKey::info_cmd(), cmd.clone()]).await?;
            let info = crate::conn::reply(conn.receive().await?);
            let key = match info {
                Err(e) if self.refused_here(&e, &mut conn) && retry.again().await => continue,
                Err(e) => return Err(e),
                Ok(frame) => SessionKey::from_reply(frame)?,
            };
            // A broken connection here is the caller's to judge: it has the key to resume with.
            let reply = match conn.receive().await {
                Ok(frame) => crate::conn::reply(frame),
                Err(e) => Err(e),
            };
            return Ok((conn, key, reply));
        }
    }
}
