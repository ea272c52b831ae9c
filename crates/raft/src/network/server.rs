//! The listening side: [`serve`] accepts peers' connections, shakes hands, and hands each request
//! to this node's `Raft`.
//!
//! ```text
//!  accept ─► handshake ─┬─ Append:   requests of one stream ─► Raft::stream_append ─► replies, in order
//!                       ├─ Control:  each request in a task of its own (heartbeat, vote, pre-vote, transfer)
//!                       ├─ Snapshot: chunks ─► Assembly ─► Raft::install_full_snapshot
//!                       └─ Forward:  batches, queued in order ─► ForwardHandler; read points
//!  every reply ─► the connection's writer task ─► socket
//! ```
//!
//! A connection that sends a frame this node cannot read is closed; the others go on.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use openraft::raft::AppendEntriesRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use turnstile_tls::{MaybeTls, PeerTls, ReadHalf, WriteHalf};

use super::forward::Handler;
use super::handshake::{self, HandshakeError};
use super::message::{ConnectionKind, Reply, ReplyBody, Request, RequestBody};
use super::snapshot::Assembly;
use super::wire::{self, FrameReader, MAX_FRAME, MAX_HELLO_FRAME, WireError};
use crate::node::AdminRequest;
use crate::{Raft, TypeConfig};

/// Most peer connections open at once. A cluster of five needs twelve (three from each other
/// node); the rest is room for reconnects whose old connection has not timed out yet.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a new connection may take to say hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long to wait after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Replies queued for a connection's writer.
const REPLY_QUEUE: usize = 256;

/// Appends read off the socket ahead of `Raft::stream_append`: this is what lets the follower
/// take the next request while the log flushes the previous one.
const PIPELINE_DEPTH: usize = 64;

/// Control requests served at once on one connection; more wait to be read.
const CONTROL_CONCURRENCY: usize = 16;

/// Forwarded batches and read points in flight on one connection; more wait to be read. The
/// follower bounds its own (`max_in_flight`), so this only stops a peer gone wrong.
const FORWARDS_IN_FLIGHT: usize = 256;

/// Most bytes of replies written with one write.
const WRITE_BATCH: usize = 64 << 10;

/// Where the requests of one append stream go, each with its id.
type AppendQueue = mpsc::Sender<(u64, AppendEntriesRequest<TypeConfig>)>;

/// Serves the node-to-node connections of node `self_id` of cluster `cluster_id` on `listener`
/// until `shutdown` completes; then every connection is closed. Forwarded requests go to
/// `forwards` (refused when it is `None`). With `tls`, every peer must open with a TLS handshake
/// and present a certificate the cluster's CA signed.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    cluster_id: u64,
    self_id: u64,
    forwards: Handler,
    tls: Option<PeerTls>,
    shutdown: impl Future<Output = ()>,
) {
    let room = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections as they end, so the set does not grow.
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::error!("a peer connection's task failed: {e}");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&room).try_acquire_owned() else {
            tracing::warn!(%peer, "refused a peer connection: {MAX_CONNECTIONS} are open already");
            continue;
        };
        let (raft, forwards, tls) = (raft.clone(), forwards.clone(), tls.clone());
        connections.spawn(async move {
            serve_connection(stream, peer, raft, cluster_id, self_id, forwards, tls.as_ref()).await;
            drop(permit);
        });
    }
    // Dropping the set aborts every connection's task, which closes its socket.
}

/// One connection, from the handshake to its end.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    raft: Raft,
    cluster_id: u64,
    self_id: u64,
    forwards: Handler,
    tls: Option<&PeerTls>,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, "closing a peer connection: {e}");
        return;
    }
    // The TLS handshake, on this connection's task and within the hello's time: a peer that
    // never finishes one holds up no other.
    let stream = match tls {
        None => MaybeTls::Plain(stream),
        Some(tls) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::warn!(%peer, "refused a peer connection: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::warn!(%peer, "closing a peer connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                return;
            }
        },
    };
    let (read, mut write) = stream.into_split();
    let mut frames = FrameReader::new(read, MAX_HELLO_FRAME);
    let answered = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake::answer(&mut frames, &mut write, cluster_id, self_id),
    )
    .await;
    let hello = match answered {
        Ok(Ok(hello)) => hello,
        Ok(Err(HandshakeError::Refused(why))) => {
            tracing::warn!(%peer, "refused a peer connection: {why}");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, "closing a peer connection during the handshake: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "closing a peer connection: no hello within {HANDSHAKE_TIMEOUT:?}");
            return;
        }
    };
    frames.set_limit(MAX_FRAME);
    let who = handshake::describe(&hello, peer);
    tracing::debug!("accepted {who}");

    // Every task of this connection lives in `tasks`, so they all end with it.
    let mut tasks = JoinSet::new();
    let (replies, queue) = mpsc::channel(REPLY_QUEUE);
    tasks.spawn(write_replies(write, queue));
    let served = match hello.kind {
        ConnectionKind::Append => serve_appends(&mut frames, &raft, &replies, &mut tasks).await,
        ConnectionKind::Control => serve_control(&mut frames, &raft, &replies, &mut tasks).await,
        ConnectionKind::Snapshot => serve_snapshots(&mut frames, &raft, &replies).await,
        ConnectionKind::Forward => serve_forwards(&mut frames, forwards, &replies, &mut tasks).await,
        ConnectionKind::Join => serve_join(&mut frames, forwards, &replies, hello.from).await,
    };
    match served {
        Ok(()) => tracing::debug!("{who} closed the connection"),
        Err(e) => tracing::warn!("closing the connection from {who}: {e}"),
    }
}

/// The append connection: each stream's requests go into one `Raft::stream_append`.
async fn serve_appends(
    frames: &mut FrameReader<ReadHalf>,
    raft: &Raft,
    replies: &mpsc::Sender<Reply>,
    tasks: &mut JoinSet<()>,
) -> Result<(), WireError> {
    let mut pipeline: Option<(u64, AppendQueue)> = None;
    while let Some(request) = frames.next::<Request>().await? {
        while tasks.try_join_next().is_some() {}
        let (stream, rpc) = match request.body {
            RequestBody::Append { stream, rpc } => (stream, rpc),
            other => {
                let _ = replies.send(not_served(request.id, &other, ConnectionKind::Append)).await;
                continue;
            }
        };
        let requests = match &pipeline {
            Some((current, requests)) if *current == stream => requests.clone(),
            // A new stream: the previous one's sender is dropped, so its raft stream answers what
            // it has and ends.
            _ => {
                let requests = start_pipeline(raft.clone(), replies.clone(), tasks);
                pipeline = Some((stream, requests.clone()));
                requests
            }
        };
        // Fails only once this stream's raft stream ended on a conflict or a higher vote. The
        // sender ended its stream on that reply and waits for no more.
        let _ = requests.send((request.id, rpc)).await;
    }
    Ok(())
}

/// Starts one `Raft::stream_append` and the task that sends its answers back; returns where to
/// put the stream's requests.
fn start_pipeline(raft: Raft, replies: mpsc::Sender<Reply>, tasks: &mut JoinSet<()>) -> AppendQueue {
    let (requests, mut queue) = mpsc::channel(PIPELINE_DEPTH);
    // openraft takes the requests in order and answers them in that order: each id is noted as
    // its request is taken, and read back as its answer comes.
    let (taken, mut order) = mpsc::unbounded_channel::<u64>();
    let input = futures_util::stream::poll_fn(move |cx| {
        queue.poll_recv(cx).map(|next| {
            next.map(|(id, rpc)| {
                let _ = taken.send(id);
                rpc
            })
        })
    });
    tasks.spawn(async move {
        let mut answers = pin!(raft.stream_append(input));
        while let Some(answer) = answers.next().await {
            let Some(id) = order.recv().await else { break };
            let body = match answer {
                Ok(result) => ReplyBody::Appended(result),
                Err(fatal) => ReplyBody::Error(fatal.to_string()),
            };
            if replies.send(Reply { id, body }).await.is_err() {
                break;
            }
        }
    });
    requests
}

/// The control connection: every request is served in a task of its own and answered when done.
async fn serve_control(
    frames: &mut FrameReader<ReadHalf>,
    raft: &Raft,
    replies: &mpsc::Sender<Reply>,
    tasks: &mut JoinSet<()>,
) -> Result<(), WireError> {
    let room = Arc::new(Semaphore::new(CONTROL_CONCURRENCY));
    while let Some(request) = frames.next::<Request>().await? {
        while tasks.try_join_next().is_some() {}
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else { break };
        let (raft, replies) = (raft.clone(), replies.clone());
        tasks.spawn(async move {
            let body = answer_control(&raft, request.id, request.body).await;
            let _ = replies.send(body).await;
            drop(permit);
        });
    }
    Ok(())
}

async fn answer_control(raft: &Raft, id: u64, body: RequestBody) -> Reply {
    let answered = match body {
        // A heartbeat: alone, but through the same path as replication.
        RequestBody::Append { rpc, .. } => {
            let mut answers = pin!(raft.stream_append(futures_util::stream::iter([rpc])));
            match answers.next().await {
                Some(Ok(result)) => Ok(ReplyBody::Appended(result)),
                Some(Err(fatal)) => Err(fatal.to_string()),
                None => Err("raft gave no answer to the append".to_string()),
            }
        }
        RequestBody::Vote(rpc) => raft.vote(rpc).await.map(ReplyBody::Vote).map_err(|e| e.to_string()),
        RequestBody::PreVote(rpc) => raft.pre_vote(rpc).await.map(ReplyBody::Vote).map_err(|e| e.to_string()),
        RequestBody::TransferLeader(req) => {
            raft.handle_transfer_leader(req).await.map(ReplyBody::TransferLeader).map_err(|e| e.to_string())
        }
        other => return not_served(id, &other, ConnectionKind::Control),
    };
    Reply { id, body: answered.unwrap_or_else(ReplyBody::Error) }
}

/// The snapshot connection: chunks in order, the snapshot installed after the last.
async fn serve_snapshots(
    frames: &mut FrameReader<ReadHalf>,
    raft: &Raft,
    replies: &mpsc::Sender<Reply>,
) -> Result<(), WireError> {
    let mut assembly = None;
    while let Some(request) = frames.next::<Request>().await? {
        let chunk = match request.body {
            RequestBody::SnapshotChunk(chunk) => chunk,
            other => {
                let _ = replies.send(not_served(request.id, &other, ConnectionKind::Snapshot)).await;
                continue;
            }
        };
        let index = chunk.index;
        let body = match Assembly::receive(&mut assembly, chunk) {
            Ok(None) => ReplyBody::ChunkReceived { index },
            Ok(Some((vote, snapshot))) => {
                let (last_log_id, bytes) = (snapshot.meta.last_log_id, snapshot.snapshot.len());
                match raft.install_full_snapshot(vote, snapshot).await {
                    Ok(response) => {
                        tracing::info!(?last_log_id, bytes, "received and installed a snapshot");
                        ReplyBody::SnapshotInstalled(response)
                    }
                    Err(fatal) => ReplyBody::Error(fatal.to_string()),
                }
            }
            Err(e) => {
                tracing::warn!("refused a snapshot chunk: {e}");
                ReplyBody::Error(e.to_string())
            }
        };
        if replies.send(Reply { id: request.id, body }).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// The forward connection: each batch is queued before the next request is read (so batches are
/// applied in the order they came), and answered once applied; read points are served as they
/// come.
async fn serve_forwards(
    frames: &mut FrameReader<ReadHalf>,
    forwards: Handler,
    replies: &mpsc::Sender<Reply>,
    tasks: &mut JoinSet<()>,
) -> Result<(), WireError> {
    let room = Arc::new(Semaphore::new(FORWARDS_IN_FLIGHT));
    while let Some(request) = frames.next::<Request>().await? {
        while tasks.try_join_next().is_some() {}
        let Some(handler) = forwards.as_ref() else {
            let _ = replies.send(not_served(request.id, &request.body, ConnectionKind::Forward)).await;
            continue;
        };
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&room).acquire_owned().await else { break };
        let (id, replies) = (request.id, replies.clone());
        match request.body {
            RequestBody::Forward(commands) => {
                let queued = handler.submit(commands).await;
                tasks.spawn(async move {
                    let body = match queued {
                        Ok(applied) => ReplyBody::Forwarded(Ok(applied.await)),
                        Err(refused) => ReplyBody::Forwarded(Err(refused)),
                    };
                    let _ = replies.send(Reply { id, body }).await;
                    drop(permit);
                });
            }
            RequestBody::Admin(request) => {
                let done = handler.admin(request);
                tasks.spawn(async move {
                    let _ = replies.send(Reply { id, body: ReplyBody::Admin(done.await) }).await;
                    drop(permit);
                });
            }
            RequestBody::ReadIndex => {
                let point = handler.read_point();
                tasks.spawn(async move {
                    let _ = replies.send(Reply { id, body: ReplyBody::ReadPoint(point.await) }).await;
                    drop(permit);
                });
            }
            other => {
                let _ = replies.send(not_served(id, &other, ConnectionKind::Forward)).await;
            }
        }
    }
    Ok(())
}

/// A joining node's connection: it may ask for itself to be added, and for the status.
async fn serve_join(
    frames: &mut FrameReader<ReadHalf>,
    forwards: Handler,
    replies: &mpsc::Sender<Reply>,
    joining: u64,
) -> Result<(), WireError> {
    while let Some(request) = frames.next::<Request>().await? {
        let body = match (&forwards, request.body) {
            (Some(handler), RequestBody::Admin(admin))
                if admin == AdminRequest::Status
                    || matches!(admin, AdminRequest::Add { id, .. } | AdminRequest::Join { id, .. } if id == joining) =>
            {
                ReplyBody::Admin(handler.admin(admin).await)
            }
            (_, RequestBody::Admin(_)) => ReplyBody::Error(format!(
                "a joining node may only ask for itself (node {joining}) to be added"
            )),
            (_, other) => not_served(request.id, &other, ConnectionKind::Join).body,
        };
        if replies.send(Reply { id: request.id, body }).await.is_err() {
            break;
        }
    }
    Ok(())
}

fn not_served(id: u64, body: &RequestBody, kind: ConnectionKind) -> Reply {
    Reply {
        id,
        body: ReplyBody::Error(format!("{} requests are not served on a {kind:?} connection", body.name())),
    }
}

/// Writes the connection's replies, as many per write as are queued.
async fn write_replies(mut write: WriteHalf, mut queue: mpsc::Receiver<Reply>) {
    let mut batch = Vec::new();
    while let Some(reply) = queue.recv().await {
        let mut next = Some(reply);
        while let Some(reply) = next.take() {
            let frame = wire::encode(&reply, MAX_FRAME).or_else(|e| {
                // Tell the waiting peer rather than leave it to time out.
                wire::encode(
                    &Reply { id: reply.id, body: ReplyBody::Error(format!("unencodable reply: {e}")) },
                    MAX_FRAME,
                )
            });
            match frame {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(e) => tracing::warn!("dropped an unencodable reply: {e}"),
            }
            if batch.len() < WRITE_BATCH {
                next = queue.try_recv().ok();
            }
        }
        if let Err(e) = write.write_all(&batch).await {
            tracing::debug!("writing replies failed: {e}");
            return;
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use openraft::network::RPCOption;
    use openraft::raft::VoteRequest;
    use openraft::type_config::alias::VoteOf;
    use openraft::{BasicNode, Config, RaftNetworkFactory, RaftNetworkV2};
    use tokio::io::AsyncReadExt;
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::sync::oneshot;
    use tokio::time::timeout;

    use super::*;
    use crate::network::message::Hello;
    use crate::network::wire::VERSION;
    use crate::{LogStore, NoNetwork, StateMachineStore, TcpNetwork};

    const CLUSTER: u64 = 42;
    /// Every wait in these tests is bounded by this; none is expected to come near it.
    const WAIT: Duration = Duration::from_secs(10);

    type Vote = VoteOf<TypeConfig>;

    /// Node 2, serving on a free loopback port until the returned sender is used or dropped.
    async fn node_2() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let config = Arc::new(Config::default().validate().unwrap());
        let (state_machine, _effects) = StateMachineStore::new();
        let raft = Raft::new(2, config, NoNetwork, LogStore::in_memory(), state_machine).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, raft, CLUSTER, 2, None, None, async {
            let _ = stopped.await;
        }));
        (addr, stop, served)
    }

    /// A vote from node 1, through the real client.
    async fn vote_from_node_1(addr: SocketAddr) -> Result<bool, String> {
        let mut network = TcpNetwork::new(CLUSTER, 1);
        network.set_peer(2, addr.to_string());
        let mut client = network.new_client(2, &BasicNode::default()).await;
        let vote = VoteRequest::new(Vote::new(1, 1), None);
        client.vote(vote, RPCOption::new(WAIT)).await.map(|r| r.vote_granted).map_err(|e| e.to_string())
    }

    /// A raw connection, handshaken as node 1.
    async fn connect(addr: SocketAddr, kind: ConnectionKind) -> (FrameReader<OwnedReadHalf>, OwnedWriteHalf) {
        let (read, mut write) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut frames = FrameReader::new(read, MAX_FRAME);
        let hello = Hello { cluster_id: CLUSTER, from: 1, to: 2, kind };
        handshake::greet(&mut frames, &mut write, &hello, &addr.to_string()).await.unwrap();
        (frames, write)
    }

    /// Whether the server closed the connection (it sends nothing unasked).
    async fn closed_by_server(frames: &mut FrameReader<OwnedReadHalf>) -> bool {
        matches!(timeout(WAIT, frames.next::<Reply>()).await, Ok(Ok(None)))
    }

    #[tokio::test]
    async fn a_bad_frame_closes_only_its_connection() {
        let (addr, _stop, _served) = node_2().await;
        let (mut bad, mut bad_write) = connect(addr, ConnectionKind::Control).await;
        bad_write.write_all(&[0, 0, 0, 3, VERSION, 0xff, 0xff]).await.unwrap();
        assert!(closed_by_server(&mut bad).await);

        // Something that is not a peer at all: its first bytes read as a huge length.
        let mut stranger = TcpStream::connect(addr).await.unwrap();
        stranger.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut rest = Vec::new();
        let end = timeout(WAIT, stranger.read_to_end(&mut rest)).await;
        assert!(end.is_ok(), "the server closes it");
        assert!(rest.is_empty(), "and answers nothing");

        assert!(vote_from_node_1(addr).await.is_ok(), "the listener still serves");
    }

    #[tokio::test]
    async fn requests_on_the_wrong_connection_are_refused() {
        let (addr, _stop, _served) = node_2().await;
        let (mut frames, mut write) = connect(addr, ConnectionKind::Snapshot).await;
        let vote = VoteRequest::new(Vote::new(1, 1), None);
        let request = wire::encode(&Request { id: 5, body: RequestBody::Vote(vote) }, MAX_FRAME).unwrap();
        write.write_all(&request).await.unwrap();
        let reply: Reply = timeout(WAIT, frames.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(reply.id, 5);
        match reply.body {
            ReplyBody::Error(why) => assert_eq!(why, "vote requests are not served on a Snapshot connection"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_its_connections() {
        let (addr, stop, served) = node_2().await;
        let (mut open, _write) = connect(addr, ConnectionKind::Append).await;
        stop.send(()).unwrap();
        timeout(WAIT, served).await.expect("serve returns").unwrap();
        assert!(closed_by_server(&mut open).await);
        assert!(vote_from_node_1(addr).await.is_err());
    }
}
