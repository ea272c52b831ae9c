//! The connecting side of one connection to a peer ([`Connection`]), and the slot that opens it
//! when first needed and again after it failed ([`Link`]).
//!
//! ```text
//!  callers ── send(id, frame) ──► writer (one frame at a time, in order) ──► socket
//!     ▲                                                                        │
//!     └── oneshot by id ◄── waiting: id → sender ◄── reader task ◄── replies ◄─┘
//! ```
//!
//! Replies are matched to requests by id, so several requests can be in flight at once (the
//! appends of a pipeline, a vote next to a heartbeat). A reply nobody waits for any more (its
//! caller timed out) is dropped. But a caller that times out also closes the connection: the
//! late reply could otherwise be taken for the answer to something else by a peer that does
//! not echo ids faithfully, and a peer that stopped answering is better reached afresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout_at};
use turnstile_tls::{MaybeTls, PeerTls, ReadHalf, WriteHalf};

use super::error::TransportError;
use super::handshake::{self, Refused};
use super::message::{ConnectionKind, Hello, Reply, ReplyBody, Request, RequestBody};
use super::wire::{self, FrameReader, MAX_FRAME, MAX_HELLO_FRAME, WireError};

/// When a call must be answered by, and the TTL it came from (for the error).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub ttl: Duration,
}

impl Deadline {
    pub fn after(ttl: Duration) -> Deadline {
        Deadline { at: Instant::now() + ttl, ttl }
    }
}

/// An open, handshaken connection to one peer.
#[derive(Debug)]
pub struct Connection {
    node: u64,
    addr: String,
    /// `None` once closed. Locked while one frame is written, so frames never interleave.
    writer: tokio::sync::Mutex<Option<WriteHalf>>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
    /// The listener's cluster id, from its welcome.
    cluster_id: u64,
}

/// The requests still waiting for a reply.
#[derive(Debug, Default)]
struct Waiting {
    /// Set when the connection failed or was closed; nothing more is sent on it.
    closed: bool,
    replies: HashMap<u64, oneshot::Sender<ReplyBody>>,
}

fn lock(waiting: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    // Nothing panics while holding it; if something did, the map is still consistent.
    waiting.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Connection {
    /// Connects to `addr` (under mutual TLS with `tls`) and shakes hands as `hello` says. The
    /// caller bounds the time.
    pub async fn open(addr: &str, hello: Hello, tls: Option<&PeerTls>) -> Result<Connection, TransportError> {
        let node = hello.to;
        let stream = TcpStream::connect(addr).await.map_err(|source| TransportError::Connect {
            node,
            addr: addr.to_string(),
            source,
        })?;
        // Heartbeats and votes are small: they must not wait for more bytes to fill a segment.
        stream.set_nodelay(true).map_err(|e| TransportError::Wire {
            node,
            addr: addr.to_string(),
            source: e.into(),
        })?;
        let stream = match tls {
            None => MaybeTls::Plain(stream),
            Some(tls) => tls.connect(addr, stream).await.map_err(|source| TransportError::Tls {
                node,
                addr: addr.to_string(),
                source,
            })?,
        };
        let (read, mut write) = stream.into_split();
        let mut frames = FrameReader::new(read, MAX_HELLO_FRAME);
        let cluster_id = handshake::greet(&mut frames, &mut write, &hello, addr).await?;
        frames.set_limit(MAX_FRAME);
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let reader = tokio::spawn(read_replies(frames, Arc::clone(&waiting), node, addr.to_string()));
        Ok(Connection {
            node,
            addr: addr.to_string(),
            writer: tokio::sync::Mutex::new(Some(write)),
            waiting,
            next_id: AtomicU64::new(1),
            reader,
            cluster_id,
        })
    }

    /// The cluster the listener belongs to, as its welcome said.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// An id for the next request on this connection.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes one encoded request whose id is `id`, and returns where its reply will arrive.
    /// Frames are written whole and in the order of the calls. If this future is dropped halfway
    /// through a frame, the connection is closed: the peer could not find the next frame's start.
    pub async fn send(&self, id: u64, frame: &[u8]) -> Result<oneshot::Receiver<ReplyBody>, TransportError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = lock(&self.waiting);
            if waiting.closed {
                return Err(self.closed());
            }
            waiting.replies.insert(id, reply);
        }
        let mut writer = self.writer.lock().await;
        let Some(socket) = writer.as_mut() else { return Err(self.closed()) };
        let mut unfinished = CloseUnlessDone { connection: self, done: false };
        let written = socket.write_all(frame).await;
        unfinished.done = true;
        match written {
            Ok(()) => Ok(answer),
            Err(e) => {
                drop(writer);
                self.close();
                Err(self.wire(e.into()))
            }
        }
    }

    /// Sends one request and waits for its reply until `deadline`.
    pub async fn call(&self, body: RequestBody, deadline: Deadline) -> Result<ReplyBody, TransportError> {
        let id = self.next_id();
        let frame = wire::encode(&Request { id, body }, MAX_FRAME).map_err(|e| self.wire(e))?;
        let exchange = async {
            let answer = self.send(id, &frame).await?;
            answer.await.map_err(|_| self.closed())
        };
        timeout_at(deadline.at, exchange).await.unwrap_or(Err(self.timeout(deadline)))
    }

    /// Waits for a reply from [`Connection::send`] until `deadline`.
    pub async fn reply(
        &self,
        answer: &mut oneshot::Receiver<ReplyBody>,
        deadline: Deadline,
    ) -> Result<ReplyBody, TransportError> {
        match timeout_at(deadline.at, answer).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(self.closed()),
            Err(_) => Err(self.timeout(deadline)),
        }
    }

    pub fn is_closed(&self) -> bool {
        lock(&self.waiting).closed
    }

    /// Closes the connection: every waiting call fails at once, and the socket is shut (at once
    /// unless a frame is being written, then when the writer lets go).
    pub fn close(&self) {
        {
            let mut waiting = lock(&self.waiting);
            waiting.closed = true;
            waiting.replies.clear();
        }
        self.reader.abort();
        if let Ok(mut writer) = self.writer.try_lock() {
            writer.take();
        }
    }

    pub fn closed(&self) -> TransportError {
        TransportError::Closed { node: self.node, addr: self.addr.clone() }
    }

    pub fn wire(&self, source: WireError) -> TransportError {
        TransportError::Wire { node: self.node, addr: self.addr.clone(), source }
    }

    pub fn timeout(&self, deadline: Deadline) -> TransportError {
        TransportError::Timeout { node: self.node, after: deadline.ttl }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Closes the connection if a frame's write is abandoned halfway.
struct CloseUnlessDone<'a> {
    connection: &'a Connection,
    done: bool,
}

impl Drop for CloseUnlessDone<'_> {
    fn drop(&mut self) {
        if !self.done {
            // The writer lock is held by the abandoned write: mark closed, drop the waiters.
            let mut waiting = lock(&self.connection.waiting);
            waiting.closed = true;
            waiting.replies.clear();
        }
    }
}

/// Hands each reply to the request waiting for it, until the connection ends.
async fn read_replies(
    mut frames: FrameReader<ReadHalf>,
    waiting: Arc<Mutex<Waiting>>,
    node: u64,
    addr: String,
) {
    let end = loop {
        match frames.next::<Reply>().await {
            Ok(Some(reply)) => {
                let waiter = lock(&waiting).replies.remove(&reply.id);
                match waiter {
                    // The caller may have given up in the meantime; then nobody needs it.
                    Some(waiter) => drop(waiter.send(reply.body)),
                    None => tracing::trace!(node, id = reply.id, "reply to a request nobody waits for"),
                }
            }
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    match end {
        None => tracing::debug!(node, %addr, "peer closed the connection"),
        Some(e) => tracing::debug!(node, %addr, "closing the connection: {e}"),
    }
    let mut waiting = lock(&waiting);
    waiting.closed = true;
    waiting.replies.clear();
}

/// One of a peer's connections, opened when first needed and again after it failed.
#[derive(Debug)]
pub struct Link {
    kind: ConnectionKind,
    /// Locked while connecting, so that callers who all find it closed open one connection.
    current: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The refusal last logged, so that a misconfigured peer is logged when it starts (or
    /// changes), not on every retry: heartbeats alone retry 20 times a second.
    last_refusal: Mutex<Option<Refused>>,
}

impl Link {
    pub fn new(kind: ConnectionKind) -> Link {
        Link { kind, current: tokio::sync::Mutex::new(None), last_refusal: Mutex::new(None) }
    }

    /// The open connection, or a new one to `addr`, by `deadline`.
    pub async fn connection(
        &self,
        addr: &str,
        hello: Hello,
        tls: Option<&PeerTls>,
        deadline: Deadline,
    ) -> Result<Arc<Connection>, TransportError> {
        let node = hello.to;
        let opening = async {
            let mut current = self.current.lock().await;
            if let Some(open) = current.as_ref().filter(|c| !c.is_closed()) {
                return Ok(Arc::clone(open));
            }
            *current = None;
            let connection = Arc::new(Connection::open(addr, hello, tls).await?);
            *current = Some(Arc::clone(&connection));
            Ok(connection)
        };
        let opened = timeout_at(deadline.at, opening)
            .await
            .unwrap_or_else(|_| Err(TransportError::ConnectTimeout { node, addr: addr.to_string() }));
        self.note(node, &opened);
        opened
    }

    /// Logs a refusal once, and the connection that follows it.
    fn note(&self, node: u64, opened: &Result<Arc<Connection>, TransportError>) {
        let mut last = self.last_refusal.lock().unwrap_or_else(PoisonError::into_inner);
        match opened {
            Err(TransportError::Refused(refused)) => {
                if last.as_ref() != Some(refused) {
                    tracing::warn!(node, kind = ?self.kind, "refused: {refused}");
                    *last = Some(refused.clone());
                }
            }
            Ok(_) => {
                if last.take().is_some() {
                    tracing::info!(node, kind = ?self.kind, "connected after earlier refusals");
                }
            }
            Err(_) => {}
        }
    }

    /// Closes `connection` (after a timeout or a broken frame); the next call opens a new one.
    pub fn discard(&self, connection: &Arc<Connection>) {
        connection.close();
        if let Ok(mut current) = self.current.try_lock() {
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
                *current = None;
            }
        }
    }

    /// Closes the open connection, if any (the peer's address changed).
    pub fn close(&self) {
        if let Ok(mut current) = self.current.try_lock() {
            if let Some(connection) = current.take() {
                connection.close();
            }
        }
    }
}
