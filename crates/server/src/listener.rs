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
//!
//! A TLS listener admits the same way, then shakes hands on a task of the connection's own,
//! within [`HANDSHAKE_TIMEOUT`]: a client that connects and never finishes its handshake holds
//! one slot for that long and delays nobody. Only connections whose handshake succeeded reach
//! the front end, which serves them exactly as the plain listener's.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc};
use turnstile_tls::{MaybeTls, ServerTls, TlsInfo};

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

/// How long a client of a TLS listener has to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// A bound listener of one protocol, plain or under TLS.
#[derive(Debug)]
pub struct Listener {
    inner: TcpListener,
    protocol: Protocol,
    shared: Arc<Shared>,
    tls: Option<Handshakes>,
}

/// A TLS listener's handshakes under way: each on a task of its own, which hands the connection
/// over here when it is done.
#[derive(Debug)]
struct Handshakes {
    tls: Arc<ServerTls>,
    done: mpsc::Sender<Admitted>,
    ready: Mutex<mpsc::Receiver<Admitted>>,
}

/// An admitted connection. It holds one of the `max-clients` slots, and counts as open, until
/// dropped.
#[derive(Debug)]
pub struct Admitted {
    pub stream: MaybeTls,
    pub peer: SocketAddr,
    /// What the TLS handshake established; `None` on a plain listener.
    pub tls: Option<TlsInfo>,
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
        Listener { inner, protocol, shared, tls: None }
    }

    /// A listener whose clients speak TLS, with the certificate `tls` holds when each connects.
    pub fn with_tls(
        inner: TcpListener,
        protocol: Protocol,
        shared: Arc<Shared>,
        tls: Arc<ServerTls>,
    ) -> Listener {
        // A handful of handshakes done and not yet taken is plenty: the accept loop takes them as
        // fast as they come.
        let (done, ready) = mpsc::channel(64);
        Listener { inner, protocol, shared, tls: Some(Handshakes { tls, done, ready: Mutex::new(ready) }) }
    }

    /// The next connection this server serves; connections over `max-clients` are refused
    /// (from a task of their own, so a slow refused client delays nobody) in the meantime.
    pub async fn accept(&self) -> Admitted {
        let Some(handshakes) = &self.tls else {
            return self.admit().await;
        };
        let mut ready = handshakes.ready.lock().await;
        loop {
            tokio::select! {
                Some(admitted) = ready.recv() => return admitted,
                admitted = self.admit() => {
                    let (tls, done) = (handshakes.tls.clone(), handshakes.done.clone());
                    tokio::spawn(async move {
                        if let Some(admitted) = handshake(admitted, &tls).await {
                            let _ = done.send(admitted).await;
                        }
                    });
                }
            }
        }
    }

    /// The next TCP connection, with its slot.
    async fn admit(&self) -> Admitted {
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
                self.refuse(stream, peer, Refusal::Protected);
                continue;
            }
            let Ok(permit) = self.shared.client_slots.clone().try_acquire_owned() else {
                bump(&counts.refused);
                tracing::info!(%peer, protocol = self.protocol.as_str(), "refused: {MAX_CLIENTS_REACHED}");
                self.refuse(stream, peer, Refusal::MaxClients);
                continue;
            };
            bump(&counts.accepted);
            bump(&counts.open);
            let _ = stream.set_nodelay(true);
            let id = self.shared.next_client_id.fetch_add(1, Ordering::Relaxed) + 1;
            let slot = Slot { _permit: permit, protocol: self.protocol, shared: self.shared.clone() };
            return Admitted { stream: MaybeTls::Plain(stream), peer, tls: None, id, slot };
        }
    }

    /// Whether protected mode refuses a connection from `peer`: it is on, no authentication is
    /// configured, and `peer` is another host. AMQP is exempt when `[amqp-users]` names a user
    /// other than `guest`: each AMQP connection must then log in with a password the operator
    /// chose (and `guest` is refused beyond loopback whatever the mode).
    /// Answers a refused connection on a task of its own (after a TLS handshake, on a TLS
    /// listener), so the accept loop goes on at once.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr, why: Refusal) {
        let tls = self.tls.as_ref().map(|handshakes| handshakes.tls.clone());
        tokio::spawn(refuse(self.protocol, stream, peer, self.shared.clone(), tls, why));
    }

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

/// The TLS handshake of an admitted connection, within [`HANDSHAKE_TIMEOUT`]; `None` (and the
/// connection closed, its slot given back) when it fails.
async fn handshake(admitted: Admitted, tls: &ServerTls) -> Option<Admitted> {
    let Admitted { stream: MaybeTls::Plain(tcp), peer, id, slot, .. } = admitted else {
        unreachable!("a connection is admitted plain and shakes hands once")
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(tcp)).await {
        Ok(Ok(stream)) => {
            let info = TlsInfo::of(stream.get_ref().1);
            let stream = MaybeTls::Tls(Box::new(stream.into()));
            Some(Admitted { stream, peer, tls: Some(info), id, slot })
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, protocol = slot.protocol.as_str(), error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, protocol = slot.protocol.as_str(), "no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
            None
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

/// Answers a refused connection in its protocol's way (after a TLS handshake, on a TLS
/// listener), then closes it.
async fn refuse(
    protocol: Protocol,
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tls: Option<Arc<ServerTls>>,
    why: Refusal,
) {
    let (code, message, status) = match why {
        Refusal::MaxClients => ("ERR", MAX_CLIENTS_REACHED, "503 Service Unavailable"),
        Refusal::Protected => ("DENIED", PROTECTED_MODE_DENIED, "403 Forbidden"),
    };
    let answered = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        let mut stream = match tls {
            None => MaybeTls::Plain(stream),
            Some(tls) => MaybeTls::Tls(Box::new(tls.acceptor().accept(stream).await?.into())),
        };
        let answered = match protocol {
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
        };
        let _ = stream.shutdown().await;
        answered
    })
    .await;
    if let Ok(Err(e)) = answered {
        tracing::debug!(%peer, error = %e, "refused connection not answered");
    }
}

/// Says at start what a listener beyond loopback without authentication means: refused by
/// protected mode, or open to every host that reaches it.
pub fn warn_if_exposed(shared: &Shared) {
    if shared.users.required() {
        return;
    }
    let tls = &shared.tls_addrs;
    let listeners = [
        (Protocol::Resp, Some(shared.resp_addr)),
        (Protocol::Amqp, Some(shared.amqp_addr)),
        (Protocol::Http, Some(shared.http_addr)),
        (Protocol::Resp, tls.resp),
        (Protocol::Amqp, tls.amqp),
        (Protocol::Http, tls.http),
    ];
    for (protocol, addr) in listeners.into_iter().filter_map(|(protocol, addr)| Some((protocol, addr?))) {
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
