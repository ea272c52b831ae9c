//! One accept loop for the three front ends: it admits a connection while fewer than
//! `max-clients` are open (over every protocol), counts it under its protocol, and otherwise
//! answers the refusal in the protocol's own way.
//!
//! ```text
//!  TcpListener ─accept─► slot free? ──yes─► Admitted (holds the slot; counted open) ─► front end
//!                                    └─no──► refused: RESP `-ERR max number of clients reached`,
//!                                            AMQP `connection.close 530`, HTTP `503`, then closed
//! ```
//!
//! Before that, protected mode (Redis's): while no authentication is configured, a connection
//! from another host is answered with [`PROTECTED_MODE_DENIED`] in its protocol and closed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::server::Shared;
use crate::stats::bump;

/// The text of a refusal for `max-clients`, on every protocol (Redis's words).
pub const MAX_CLIENTS_REACHED: &str = "max number of clients reached";

/// Redis's `-DENIED` answer in protected mode, in Turnstile's settings (RESP, HTTP).
pub const PROTECTED_MODE_DENIED: &str = "Turnstile is running in protected mode because protected mode is \
enabled and no password is set for the default user. In this mode connections are only accepted from the \
loopback interface. If you want to connect from external computers to Turnstile you may adopt one of the \
following solutions: 1) Set a password for the default user with 'requirepass' in the config file (or \
--requirepass), or configure users in [users.NAME] tables, and restart the server. 2) Disable protected mode \
by setting 'protected-mode = false' in the config file, and restarting the server, however MAKE SURE \
Turnstile is not publicly accessible from internet if you do so. 3) If you started the server manually just \
for testing, restart it with the '--protected-mode no' option. NOTE: You only need to do one of the above \
things in order for the server to start accepting connections from the outside.";

/// The same for AMQP, whose reply text has room for 255 bytes.
pub const PROTECTED_MODE_DENIED_AMQP: &str = "Turnstile is running in protected mode: no password is set, \
so only loopback clients are served. Set requirepass or [users.NAME], name an [amqp-users] user other \
than guest, or start with --protected-mode no";

/// How long a refused connection is given to say what it wanted before it gets its answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The front ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Resp,
    Amqp,
    Http,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Resp, Protocol::Amqp, Protocol::Http];

    /// Its place in [`Protocol::ALL`] (and in per-protocol counters).
    pub const fn index(self) -> usize {
        match self {
            Protocol::Resp => 0,
            Protocol::Amqp => 1,
            Protocol::Http => 2,
        }
    }

    /// Its `protocol` label in the metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Resp => "resp",
            Protocol::Amqp => "amqp",
            Protocol::Http => "http",
        }
    }
}

/// A bound listener of one protocol.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
}

/// An admitted connection. It holds one of the `max-clients` slots, and counts as open, until
/// dropped.
#[derive(Debug)]
pub struct Admitted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Unique among this server's connections of every protocol (`CLIENT ID`).
    pub id: u64,
    pub slot: Slot,
}

/// A `max-clients` slot, given back (and the open-connections gauge lowered) on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    protocol: Protocol,
    shared: Arc<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.stats.connections(self.protocol).open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Listener {
    pub fn new(inner: TcpListener, protocol: Protocol, shared: Arc<Shared>) -> Listener {
        Listener { inner, protocol, shared }
    }

    /// The next connection this server serves; connections over `max-clients` are refused
    /// (from a task of their own, so a slow refused client delays nobody) in the meantime.
    pub async fn accept(&self) -> Admitted {
        let counts = self.shared.stats.connections(self.protocol);
        loop {
            let (stream, peer) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(protocol = self.protocol.as_str(), error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if self.protected(peer) {
                bump(&self.shared.stats.counters.protected_mode_refused);
                tracing::info!(
                    %peer,
                    protocol = self.protocol.as_str(),
                    "refused: protected mode (no authentication configured; only loopback clients are served)"
                );
                tokio::spawn(refuse(self.protocol, stream, peer, self.shared.clone(), Refusal::Protected));
                continue;
            }
            let Ok(permit) = self.shared.client_slots.clone().try_acquire_owned() else {
                bump(&counts.refused);
                tracing::info!(%peer, protocol = self.protocol.as_str(), "refused: {MAX_CLIENTS_REACHED}");
                tokio::spawn(refuse(self.protocol, stream, peer, self.shared.clone(), Refusal::MaxClients));
                continue;
            };
            bump(&counts.accepted);
            bump(&counts.open);
            let _ = stream.set_nodelay(true);
            let id = self.shared.next_client_id.fetch_add(1, Ordering::Relaxed) + 1;
            let slot = Slot { _permit: permit, protocol: self.protocol, shared: self.shared.clone() };
            return Admitted { stream, peer, id, slot };
        }
    }

    /// Whether protected mode refuses a connection from `peer`: it is on, no authentication is
    /// configured, and `peer` is another host. AMQP is exempt when `[amqp-users]` names a user
    /// other than `guest`: each AMQP connection must then log in with a password the operator
    /// chose (and `guest` is refused beyond loopback whatever the mode).
    fn protected(&self, peer: SocketAddr) -> bool {
        let shared = &self.shared;
        if !shared.protected_mode || shared.users.required() || peer.ip().to_canonical().is_loopback() {
            return false;
        }
        !(self.protocol == Protocol::Amqp && shared.amqp_users.keys().any(|user| user != "guest"))
    }

    /// Accepts until dropped, serving each connection on a task of its own. Each task holds a
    /// clone of `done`, so its owner knows when every connection is over.
    pub async fn serve_each<F, Fut>(&self, done: &mpsc::Sender<()>, serve: F)
    where
        F: Fn(Admitted) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let served = serve(self.accept().await);
            let done = done.clone();
            tokio::spawn(async move {
                served.await;
                drop(done);
            });
        }
    }
}

/// Why a connection is refused before it is served.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `max-clients` connections are open.
    MaxClients,
    /// Protected mode: another host, and no authentication configured.
    Protected,
}

/// Answers a refused connection in its protocol's way, then closes it.
async fn refuse(
    protocol: Protocol,
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    why: Refusal,
) {
    let (code, message, status) = match why {
        Refusal::MaxClients => ("ERR", MAX_CLIENTS_REACHED, "503 Service Unavailable"),
        Refusal::Protected => ("DENIED", PROTECTED_MODE_DENIED, "403 Forbidden"),
    };
    let answered = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        match protocol {
            Protocol::Resp => {
                let refusal = format!("-{code} {message}\r\n");
                stream.write_all(refusal.as_bytes()).await
            }
            Protocol::Http => {
                // Read the request head first: closing with it unread would reset the
                // connection, and the client might never see the answer.
                let mut head = Vec::with_capacity(1024);
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
                    if stream.read_buf(&mut head).await? == 0 {
                        break;
                    }
                }
                let body = format!(r#"{{"code":"{code}","message":"{message}"}}"#);
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await
            }
            Protocol::Amqp => match why {
                Refusal::MaxClients => {
                    crate::amqp::refuse(&mut stream, peer, &shared, MAX_CLIENTS_REACHED).await
                }
                Refusal::Protected => crate::amqp::deny(&mut stream, peer, PROTECTED_MODE_DENIED_AMQP).await,
            },
        }
    })
    .await;
    if let Ok(Err(e)) = answered {
        tracing::debug!(%peer, error = %e, "refused connection not answered");
    }
    let _ = stream.shutdown().await;
}

/// Says at start what a listener beyond loopback without authentication means: refused by
/// protected mode, or open to every host that reaches it.
pub fn warn_if_exposed(shared: &Shared) {
    if shared.users.required() {
        return;
    }
    let listeners = [
        (Protocol::Resp, shared.resp_addr),
        (Protocol::Amqp, shared.amqp_addr),
        (Protocol::Http, shared.http_addr),
    ];
    for (protocol, addr) in listeners {
        if addr.ip().to_canonical().is_loopback() {
            continue;
        }
        let protocol = protocol.as_str();
        if shared.protected_mode {
            tracing::warn!(
                %addr,
                protocol,
                "listening beyond loopback without authentication: protected mode refuses connections from \
                 other hosts; set requirepass or [users.NAME] to serve them, or --protected-mode no"
            );
        } else {
            tracing::warn!(
                %addr,
                protocol,
                "listening beyond loopback without authentication and protected mode off: every host that \
                 can reach this address has full access; set requirepass or [users.NAME]"
            );
        }
    }
}

/// HTTP is served by axum from this listener.
impl axum::serve::Listener for Listener {
    type Io = Admitted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Admitted, SocketAddr) {
        let admitted = Listener::accept(self).await;
        let peer = admitted.peer;
        (admitted, peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
