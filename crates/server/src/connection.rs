//! One RESP connection: read requests, run them, write replies, in order.
//!
//! ```text
//!  socket ──► buffer ──decode_request──► cmd::parse ──► Action
//!                                                        ├─ Connection  → answered here (PING, HELLO, INFO…)
//!                                                        ├─ Read        → node.read (read index) → State::query
//!                                                        └─ Write       → node.propose (log) → Reply
//!                                                                          └─ Waiting? park until the router
//!                                                                             delivers this session's effect
//!  socket ◄── out buffer ◄── cmd::render ◄─────────────────────────────────┘
//! ```
//!
//! Requests that arrive together (pipelining) are run one after another and their replies are
//! written in one go. The connection's session is opened in the log the first time a command
//! needs one (a lock, a pop), and closed in the log when the connection ends, which releases its
//! holds and returns its deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use turnstile_core::{Command, Effect, Reply, SessionId, Taker};
use turnstile_raft::NodeError;
use turnstile_resp::cmd::{self, Action, ConnCmd};
use turnstile_resp::{Frame, Protocol, ProtocolError, decode_request};

use crate::info;
use crate::server::Shared;
use crate::shutdown::Shutdown;
use crate::ticker::now_ms;

/// Replies are flushed once this much is buffered, even in the middle of a pipeline.
const FLUSH_AT: usize = 64 * 1024;

/// Why a connection ended other than by the client closing it cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("client closed the connection while blocked")]
    ClosedWhileBlocked,
    #[error("client sent more than {0} bytes while blocked")]
    FloodWhileBlocked(usize),
    #[error("server is shutting down")]
    Shutdown,
}

pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    protocol: Protocol,
    /// Opened on first need; see the module docs.
    session: Option<SessionId>,
    /// This session's effects, from the router.
    effects: Option<mpsc::UnboundedReceiver<Effect>>,
    /// Local connection number (`CLIENT ID`).
    id: u64,
    name: Option<Bytes>,
    shared: Arc<Shared>,
}

/// Whether to keep reading after a request.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

impl Connection {
    pub fn new(stream: TcpStream, id: u64, shared: Arc<Shared>) -> Connection {
        Connection {
            stream,
            buf: BytesMut::with_capacity(4 * 1024),
            out: BytesMut::with_capacity(4 * 1024),
            protocol: Protocol::Resp2,
            session: None,
            effects: None,
            id,
            name: None,
            shared,
        }
    }

    /// Serves the connection until it closes, then closes its session.
    pub async fn serve(mut self, mut shutdown: Shutdown) {
        let peer = self.stream.peer_addr().ok();
        match self.run(&mut shutdown).await {
            Ok(()) => tracing::debug!(?peer, id = self.id, "connection closed"),
            Err(e @ (ConnError::Protocol(_) | ConnError::FloodWhileBlocked(_))) => {
                tracing::info!(?peer, id = self.id, error = %e, "closing connection after bad input");
            }
            Err(e) => tracing::debug!(?peer, id = self.id, error = %e, "connection ended"),
        }
        if let Some(session) = self.session.take() {
            self.shared.router.unregister(session);
            if let Err(e) = self.shared.node.propose(Command::CloseSession { session }).await {
                tracing::warn!(%session, error = %e, "session not closed; its leases will end it");
            }
        }
    }

    async fn run(&mut self, shutdown: &mut Shutdown) -> Result<(), ConnError> {
        loop {
            loop {
                let request = match decode_request(&mut self.buf, &self.shared.limits) {
                    Ok(Some(request)) => request,
                    Ok(None) => break,
                    Err(e) => {
                        self.write(&Frame::error("ERR", &e));
                        self.flush().await?;
                        return Err(e.into());
                    }
                };
                if self.handle(request.args, shutdown).await? == Flow::Quit {
                    return self.flush().await;
                }
                if self.out.len() >= FLUSH_AT {
                    self.flush().await?;
                }
            }
            self.flush().await?;
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        // A close in the middle of a request is as clean as any other: nothing
                        // half-read was acted on.
                        return Ok(());
                    }
                }
                () = shutdown.recv() => return Ok(()),
            }
        }
    }

    async fn handle(&mut self, args: Vec<Bytes>, shutdown: &mut Shutdown) -> Result<Flow, ConnError> {
        self.shared.stats.commands.fetch_add(1, Ordering::Relaxed);
        let action = match cmd::parse(&args) {
            Ok(action) => action,
            Err(error) => {
                self.write(&error);
                return Ok(Flow::Continue);
            }
        };
        match action {
            Action::Connection(c) => return self.connection_command(c).await,
            Action::Read { query, shape } => {
                let reply = self.shared.node.read(|state| state.query(now_ms(), query)).await;
                let frame = match reply {
                    Ok(reply) => cmd::render(shape, reply, self.protocol),
                    Err(e) => node_error(&e),
                };
                self.write(&frame);
            }
            Action::Write { mut cmd, shape } => {
                if cmd.session_mut().is_some() {
                    let session = match self.session().await {
                        Ok(session) => session,
                        Err(e) => {
                            self.write(&node_error(&e));
                            return Ok(Flow::Continue);
                        }
                    };
                    *cmd.session_mut().expect("checked above") = Some(session);
                }
                let frame = match self.shared.node.propose(cmd).await {
                    Ok(Reply::Waiting { wait_id }) => {
                        // Replies already computed go out before the client is made to wait.
                        self.flush().await?;
                        let reply = self.wait_for(wait_id, shutdown).await?;
                        cmd::render(shape, reply, self.protocol)
                    }
                    Ok(reply) => cmd::render(shape, reply, self.protocol),
                    Err(e) => node_error(&e),
                };
                self.write(&frame);
            }
        }
        Ok(Flow::Continue)
    }

    /// The connection's session, opened in the log the first time it is needed.
    async fn session(&mut self) -> Result<SessionId, NodeError> {
        if let Some(session) = self.session {
            return Ok(session);
        }
        match self.shared.node.propose(Command::OpenSession).await? {
            Reply::Session(session) => {
                // Registered before any wait of this session exists, so no wake-up is missed.
                self.effects = Some(self.shared.router.register(session));
                self.session = Some(session);
                Ok(session)
            }
            other => Err(NodeError::Fatal(format!("open session replied {other:?}"))),
        }
    }

    /// Parks until the state machine settles wait `wait_id`, turning its effect into a reply.
    async fn wait_for(&mut self, wait_id: u64, shutdown: &mut Shutdown) -> Result<Reply, ConnError> {
        let stats = &self.shared.stats;
        stats.blocked_clients.fetch_add(1, Ordering::Relaxed);
        let result = self.wait_for_effect(wait_id, shutdown).await;
        self.shared.stats.blocked_clients.fetch_sub(1, Ordering::Relaxed);
        result
    }

    async fn wait_for_effect(&mut self, wait_id: u64, shutdown: &mut Shutdown) -> Result<Reply, ConnError> {
        let limit = self.shared.limits.max_bulk_len.saturating_mul(2);
        let effects = self.effects.as_mut().expect("a wait belongs to this connection's session");
        loop {
            tokio::select! {
                effect = effects.recv() => {
                    let Some(effect) = effect else { return Err(ConnError::Shutdown) };
                    match effect {
                        Effect::Granted { wait_id: w, token, lease, .. } if w == wait_id => {
                            return Ok(Reply::Granted { token, lease });
                        }
                        Effect::WaitTimedOut { wait_id: w, .. } | Effect::PopTimedOut { wait_id: w, .. }
                            if w == wait_id =>
                        {
                            return Ok(Reply::Nil);
                        }
                        Effect::Delivered { to: Taker::Pop { wait_id: w }, deliveries, .. } if w == wait_id => {
                            return Ok(Reply::Deliveries(deliveries));
                        }
                        other => tracing::debug!(?other, wait_id, "effect for another wait"),
                    }
                }
                // Keep reading while blocked, so a client that goes away is noticed at once
                // (its session closes and its wait is dropped). Pipelined requests stay buffered.
                read = self.stream.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        return Err(ConnError::ClosedWhileBlocked);
                    }
                    if self.buf.len() > limit {
                        return Err(ConnError::FloodWhileBlocked(limit));
                    }
                }
                () = shutdown.recv() => return Err(ConnError::Shutdown),
            }
        }
    }

    async fn connection_command(&mut self, c: ConnCmd) -> Result<Flow, ConnError> {
        let frame = match c {
            ConnCmd::Ping(None) => Frame::simple("PONG"),
            ConnCmd::Ping(Some(message)) | ConnCmd::Echo(message) => Frame::Bulk(message),
            ConnCmd::Hello { protover, auth, setname } => {
                let protocol = match protover {
                    None => self.protocol,
                    Some(2) => Protocol::Resp2,
                    Some(3) => Protocol::Resp3,
                    Some(_) => {
                        self.write(&Frame::error("NOPROTO", "unsupported protocol version"));
                        return Ok(Flow::Continue);
                    }
                };
                if let Some((user, pass)) = auth {
                    if let Err(e) = authenticate(Some(&user), &pass) {
                        self.write(&e);
                        return Ok(Flow::Continue);
                    }
                }
                if let Some(name) = setname {
                    if let Err(e) = check_client_name(&name) {
                        self.write(&e);
                        return Ok(Flow::Continue);
                    }
                    self.name = Some(name);
                }
                self.protocol = protocol;
                info::hello(self.id, protocol)
            }
            ConnCmd::Auth { user, pass } => match authenticate(user.as_ref(), &pass) {
                Ok(()) => Frame::ok(),
                Err(e) => e,
            },
            ConnCmd::Select(0) => Frame::ok(),
            ConnCmd::Select(_) => Frame::error("ERR", "DB index is out of range"),
            ConnCmd::ClientSetName(name) => match check_client_name(&name) {
                Ok(()) => {
                    self.name = Some(name);
                    Frame::ok()
                }
                Err(e) => e,
            },
            ConnCmd::ClientGetName => self.name.clone().map_or(Frame::Null, Frame::Bulk),
            ConnCmd::ClientId => Frame::Integer(i64::try_from(self.id).unwrap_or(i64::MAX)),
            ConnCmd::ClientSetInfo => Frame::ok(),
            ConnCmd::Info(sections) => match info::render(&self.shared, &sections).await {
                Ok(text) => match self.protocol {
                    Protocol::Resp3 => Frame::Verbatim { format: *b"txt", text: text.into() },
                    Protocol::Resp2 => Frame::Bulk(text.into()),
                },
                Err(e) => node_error(&e),
            },
            ConnCmd::Command(args) => info::command(&args),
            ConnCmd::Quit => {
                self.write(&Frame::ok());
                return Ok(Flow::Quit);
            }
        };
        self.write(&frame);
        Ok(Flow::Continue)
    }

    fn write(&mut self, frame: &Frame) {
        frame.encode(self.protocol, &mut self.out);
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// With no users configured there is only the passwordless `default` user, as in a fresh Redis.
fn authenticate(user: Option<&Bytes>, _pass: &Bytes) -> Result<(), Frame> {
    match user {
        None => Err(Frame::error(
            "ERR",
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        )),
        Some(user) if user.as_ref() == b"default" => Ok(()),
        Some(_) => Err(Frame::error("WRONGPASS", "invalid username-password pair or user is disabled.")),
    }
}

fn check_client_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().all(|b| (b'!'..=b'~').contains(b)) {
        Ok(())
    } else {
        Err(Frame::error("ERR", "Client names cannot contain spaces, newlines or special characters."))
    }
}

/// How a node failure reads to a client. A follower names the leader, so clients can redirect.
fn node_error(e: &NodeError) -> Frame {
    match e {
        NodeError::NotLeader { leader: Some(addr) } => Frame::Error(format!("NOTLEADER {addr}")),
        NodeError::NotLeader { leader: None } => Frame::error("NOTLEADER", "no leader elected"),
        NodeError::Unavailable(why) => Frame::error("TRYAGAIN", why),
        other => Frame::error("ERR", other),
    }
}
