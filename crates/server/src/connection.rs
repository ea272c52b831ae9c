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
//! Requests that arrive together (pipelining) are run in order and their replies are written in
//! one go; consecutive writes share log entries and consecutive reads share one read-index check. The connection's session is opened in the log the first time a command
//! needs one (a lock, a pop), and closed in the log when the connection ends, which releases its
//! holds and returns its deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use turnstile_core::{Command, CoreError, Effect, Query, Reply, SessionId};
use turnstile_raft::{Answer, NodeError};
use turnstile_resp::cmd::{self, Action, ConnCmd, ReplyShape};
use turnstile_resp::{Frame, Protocol, ProtocolError, decode_request};

use crate::info;
use crate::metrics;
use crate::router::settled;
use crate::server::Shared;
use crate::shutdown::Shutdown;
use crate::ticker::now_ms;

/// Replies are flushed once this much is buffered, even in the middle of a pipeline.
const FLUSH_AT: usize = 64 * 1024;
/// Most requests of one pipeline acted on before replies are flushed.
const MAX_RUN: usize = 1024;
/// A read is made with at least this much room in the buffer (it grows by [`READ_CHUNK`] when
/// less is left): a read into a nearly full buffer returns the front of a request, and the rest
/// then costs a second read and a copy into a new buffer.
const READ_ROOM: usize = 2 * 1024;
const READ_CHUNK: usize = 4 * 1024;

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
    /// Buffers reused from one pipeline to the next, so a request costs no allocation for them.
    requests: Vec<Vec<Bytes>>,
    writes: Vec<(Command, ReplyShape)>,
    pending: Vec<(Option<Result<Answer, NodeError>>, ReplyShape)>,
    command_metrics: metrics::RespCommands,
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
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(4 * 1024),
            protocol: Protocol::Resp2,
            session: None,
            effects: None,
            id,
            name: None,
            shared,
            requests: Vec::new(),
            writes: Vec::new(),
            pending: Vec::new(),
            command_metrics: metrics::RespCommands::default(),
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
        // One wait for shutdown for the connection's whole life: a new one per read would register
        // and unregister a waiter every time.
        let mut watched = shutdown.clone();
        let stopped = watched.recv();
        tokio::pin!(stopped);
        loop {
            // Take every complete request already buffered (a pipeline), up to a bound.
            let mut requests = std::mem::take(&mut self.requests);
            let mut bad = None;
            while requests.len() < MAX_RUN {
                match decode_request(&mut self.buf, &self.shared.limits) {
                    Ok(Some(request)) => requests.push(request.args),
                    Ok(None) => break,
                    Err(e) => {
                        bad = Some(e);
                        break;
                    }
                }
            }
            let more = requests.len() == MAX_RUN;
            // Requests before a malformed one are answered, as Redis does; then the connection
            // gets the protocol error and is closed.
            if self.handle_all(&requests, shutdown).await? == Flow::Quit {
                return self.flush().await;
            }
            requests.clear();
            self.requests = requests;
            if let Some(e) = bad {
                self.write(&Frame::error("ERR", &e));
                self.flush().await?;
                return Err(e.into());
            }
            self.flush().await?;
            if more {
                continue;
            }
            self.make_read_room();
            tokio::select! {
                read = self.stream.read_buf(&mut self.buf) => {
                    if read? == 0 {
                        // A close in the middle of a request is as clean as any other: nothing
                        // half-read was acted on.
                        return Ok(());
                    }
                }
                () = &mut stopped => return Ok(()),
            }
        }
    }

    /// Runs a pipeline's requests in order. Consecutive writes that cannot wait go to the log
    /// together (each submitted, then the replies awaited); consecutive reads share one read-index
    /// check. A command that may wait runs alone, so the ones after it run after it, as in Redis.
    async fn handle_all(
        &mut self,
        requests: &[Vec<Bytes>],
        shutdown: &mut Shutdown,
    ) -> Result<Flow, ConnError> {
        // For the metrics, each request takes from the start of its pipeline to its reply being
        // ready: what a pipelining client waits for it. Requests run together share an end time.
        let started = Instant::now();
        let mut timed = 0;
        self.shared.stats.commands.fetch_add(requests.len() as u64, Ordering::Relaxed);
        let mut actions = requests.iter().map(Vec::as_slice).map(cmd::parse).peekable();
        while let Some(action) = actions.next() {
            match action {
                Err(error) => self.write(&error),
                // The rare kinds run boxed: their futures are large (INFO, a blocking wait), and
                // inline they would be copied into place on every call of this one.
                Ok(Action::Connection(c)) => {
                    if Box::pin(self.connection_command(c)).await? == Flow::Quit {
                        let handled = requests.len() - actions.len();
                        self.command_metrics.record(&requests[timed..handled], started.elapsed());
                        return Ok(Flow::Quit);
                    }
                }
                Ok(Action::Read { query, shape }) => {
                    let mut reads = vec![(query, shape)];
                    while let Some(Ok(Action::Read { query, shape })) =
                        actions.next_if(|a| matches!(a, Ok(Action::Read { .. })))
                    {
                        reads.push((query, shape));
                    }
                    self.run_reads(reads).await;
                }
                Ok(Action::Write { cmd, shape }) if cmd.may_wait() => {
                    Box::pin(self.run_waiting(cmd, shape, shutdown)).await?
                }
                Ok(Action::Write { cmd, shape }) => {
                    let mut writes = std::mem::take(&mut self.writes);
                    writes.push((cmd, shape));
                    while let Some(Ok(Action::Write { cmd, shape })) =
                        actions.next_if(|a| matches!(a, Ok(Action::Write { cmd, .. }) if !cmd.may_wait()))
                    {
                        writes.push((cmd, shape));
                    }
                    self.run_writes(&mut writes).await;
                    self.writes = writes;
                }
            }
            let handled = requests.len() - actions.len();
            self.command_metrics.record(&requests[timed..handled], started.elapsed());
            timed = handled;
            if self.out.len() >= FLUSH_AT {
                self.flush().await?;
            }
        }
        Ok(Flow::Continue)
    }

    async fn run_reads(&mut self, reads: Vec<(Query, ReplyShape)>) {
        let (queries, shapes): (Vec<Query>, Vec<ReplyShape>) = reads.into_iter().unzip();
        let replies = self
            .shared
            .node
            .read(move |state| {
                let now = now_ms();
                queries.into_iter().map(|q| state.query(now, q)).collect::<Vec<_>>()
            })
            .await;
        match replies {
            Ok(replies) => {
                for (reply, shape) in replies.into_iter().zip(shapes) {
                    self.write(&cmd::render(shape, reply, self.protocol));
                }
            }
            Err(e) => shapes.iter().for_each(|_| self.write(&node_error(&e))),
        }
    }

    /// Runs consecutive writes; `writes` is left empty.
    async fn run_writes(&mut self, writes: &mut Vec<(Command, ReplyShape)>) {
        if writes.iter_mut().any(|(cmd, _)| cmd.session_mut().is_some()) {
            match self.session().await {
                Ok(session) => {
                    for slot in writes.iter_mut().filter_map(|(cmd, _)| cmd.session_mut()) {
                        *slot = Some(session);
                    }
                }
                Err(e) => {
                    writes.drain(..).for_each(|_| self.write(&node_error(&e)));
                    return;
                }
            }
        }
        // Every command is queued before the first reply is awaited, so the run shares log entries
        // and is applied in order. Pushes past the memory limit are refused here, before the log.
        let mut pending = std::mem::take(&mut self.pending);
        for (cmd, shape) in writes.drain(..) {
            let queued = match self.shared.over_memory(&cmd) {
                true => None,
                false => Some(self.shared.node.submit(cmd).await),
            };
            pending.push((queued, shape));
        }
        for (queued, shape) in pending.drain(..) {
            let reply = match queued {
                None => {
                    self.shared.stats.rejected_oom.fetch_add(1, Ordering::Relaxed);
                    self.write(&Frame::error("OOM", "command not allowed when used memory > 'max-memory'"));
                    continue;
                }
                Some(Ok(answer)) => answer.await.unwrap_or(Err(NodeError::ShuttingDown)),
                Some(Err(e)) => Err(e),
            };
            let frame = match reply {
                Ok(reply) => {
                    metrics::observe_reply(&self.shared.stats, &reply);
                    cmd::render(shape, reply, self.protocol)
                }
                Err(e) => node_error(&e),
            };
            self.write(&frame);
        }
        self.pending = pending;
    }

    /// A command that may wait in line: proposed alone, then parked until its wait is settled.
    async fn run_waiting(
        &mut self,
        mut cmd: Command,
        shape: ReplyShape,
        shutdown: &mut Shutdown,
    ) -> Result<(), ConnError> {
        if let Some(slot) = cmd.session_mut() {
            match self.session().await {
                Ok(session) => *slot = Some(session),
                Err(e) => {
                    self.write(&node_error(&e));
                    return Ok(());
                }
            }
        }
        let frame = match self.shared.node.propose(cmd).await {
            Ok(Reply::Waiting { wait_id }) => {
                // Replies already computed go out before the client is made to wait.
                self.flush().await?;
                let reply = self.wait_for(wait_id, shutdown).await?;
                cmd::render(shape, reply, self.protocol)
            }
            Ok(reply) => {
                if let Reply::Error(CoreError::Deadlock { cycle }) = &reply {
                    self.shared.stats.deadlocks.record(cycle);
                }
                metrics::observe_reply(&self.shared.stats, &reply);
                cmd::render(shape, reply, self.protocol)
            }
            Err(e) => node_error(&e),
        };
        self.write(&frame);
        Ok(())
    }

    /// The connection's session, opened in the log the first time it is needed.
    async fn session(&mut self) -> Result<SessionId, NodeError> {
        if let Some(session) = self.session {
            return Ok(session);
        }
        // Once per connection: boxed, so the callers' futures do not carry its state.
        match Box::pin(self.shared.node.propose(Command::OpenSession)).await? {
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
                    if let Some(reply) = settled(effect, wait_id) {
                        return Ok(reply);
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

    /// See [`READ_ROOM`]. Payloads taken from the buffer share its allocation, so growing it
    /// usually starts a new one rather than moving the unread bytes to the front.
    fn make_read_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_CHUNK);
        }
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
