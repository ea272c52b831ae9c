//! The messages nodes exchange, each sent as one frame (`wire.rs`).
//!
//! A connection starts with the connecting node's [`Hello`] and the listener's [`HelloReply`]
//! (see `handshake.rs`). After that the connecting node sends [`Request`]s and the listener
//! answers each with a [`Reply`] carrying the request's id; on the control connection replies can
//! come back in any order, so they are always matched by id.

use bytes::Bytes;
use openraft::raft::{
    AppendEntriesRequest, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{EntryOf, SnapshotMetaOf, VoteOf};
use serde::{Deserialize, Serialize};
use turnstile_core::{Command, Reply as CommandReply, Timestamp};

use crate::node::{AdminRequest, ClusterStatus};
use crate::{NodeError, TypeConfig};

/// What a connection carries. Each peer gets one connection of each kind, so that a large append
/// or a snapshot never holds up a heartbeat or a vote queued behind it on the same socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionKind {
    /// Log replication: pipelined appends, answered in order.
    Append,
    /// Heartbeats, votes, pre-votes and leadership transfers: small, answered as each is done.
    Control,
    /// Snapshots, in chunks, one at a time.
    Snapshot,
    /// Clients' writes and reads that a follower forwards to the leader: batches in order,
    /// pipelined, and read points.
    Forward,
    /// A new node asking to join (`--join`): it knows neither the cluster id nor whom it
    /// dialed, and learns the cluster id from the welcome. Only a request to add the
    /// connecting node itself, and the status, are served on it.
    Join,
}

/// The first frame on a connection, from the connecting node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The cluster the connecting node belongs to: nodes of two clusters never talk, even when
    /// an address points from one to the other.
    pub cluster_id: u64,
    /// The connecting node's id.
    pub from: u64,
    /// The node the connecting node believes it dialed. The listener refuses if that is not it:
    /// a wrong address must not make a leader replicate to the wrong node, or to itself.
    pub to: u64,
    pub kind: ConnectionKind,
}

/// The listener's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// Accepted. The listener says who it is, and the connecting node checks it too.
    Welcome {
        cluster_id: u64,
        node_id: u64,
    },
    Refused(Refusal),
}

/// Why a listener refused a [`Hello`]. Each side words it for its own log (`handshake.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    ClusterMismatch {
        listener: u64,
        connecting: u64,
    },
    /// The listener is `listener`, not the `wanted` node the connecting node dialed.
    WrongNode {
        listener: u64,
        wanted: u64,
    },
    /// The connection came from the listening node itself: one of its peer addresses is its own.
    SelfConnection {
        node: u64,
    },
}

/// A request, after the handshake.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Chosen by the sender, unique on its connection; the reply carries it back.
    pub id: u64,
    pub body: RequestBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RequestBody {
    /// One AppendEntries of a stream. On the append connection, the listener feeds every request
    /// of one `stream` into one `Raft::stream_append`, in order, so they are pipelined through the
    /// follower's log too; a new `stream` starts a new one. On the control connection (heartbeats)
    /// each request is handled alone.
    Append {
        stream: u64,
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    SnapshotChunk(SnapshotChunk),
    /// A batch of clients' commands a follower forwards to the leader. The leader queues each
    /// batch behind the ones before it on the connection, so a client's pipelined commands are
    /// applied in the order it sent them, and stamps them with its own clock.
    Forward(Vec<Command>),
    /// A follower asks the leader for a linearizable read point.
    ReadIndex,
    /// A membership change or a status request, run by the leader.
    Admin(AdminRequest),
}

impl RequestBody {
    /// The entries of an append, to cut one too large for a frame.
    pub fn entries_mut(&mut self) -> Option<&mut Vec<EntryOf<TypeConfig>>> {
        match self {
            RequestBody::Append { rpc, .. } => Some(&mut rpc.entries),
            _ => None,
        }
    }

    /// For errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RequestBody::Append { .. } => "append",
            RequestBody::Vote(_) => "vote",
            RequestBody::PreVote(_) => "pre-vote",
            RequestBody::TransferLeader(_) => "transfer-leader",
            RequestBody::SnapshotChunk(_) => "snapshot chunk",
            RequestBody::Forward(_) => "forward",
            RequestBody::ReadIndex => "read-index",
            RequestBody::Admin(_) => "admin",
        }
    }
}

/// One piece of a snapshot. The listener assembles the pieces of one snapshot in index order and
/// installs it when the one marked `done` arrives; a chunk with index 0 starts a new snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The sending leader's vote; the follower installs only if it still accepts it.
    pub vote: VoteOf<TypeConfig>,
    pub meta: SnapshotMetaOf<TypeConfig>,
    /// The whole snapshot's size in bytes: the receiver holds no more than this.
    pub size: u64,
    /// 0, 1, 2, … within this snapshot.
    pub index: u32,
    pub data: Bytes,
    /// The last chunk: the reply comes after the follower installed the snapshot.
    pub done: bool,
}

/// A reply, matched to its request by `id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub body: ReplyBody,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplyBody {
    Appended(StreamAppendResult<TypeConfig>),
    /// To a vote or a pre-vote.
    Vote(VoteResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// A chunk that is not the last was taken.
    ChunkReceived {
        index: u32,
    },
    /// The last chunk was taken and the snapshot installed (or refused for an old vote: the
    /// response carries the follower's vote).
    SnapshotInstalled(SnapshotResponse<TypeConfig>),
    /// The replies to a forwarded batch, one per command; or why the listener took none of it
    /// (it does not lead: nothing was applied, so the follower may send the batch elsewhere).
    Forwarded(Result<Vec<Result<CommandReply, NodeError>>, NodeError>),
    /// A read point, or why there is none.
    ReadPoint(Result<ReadPoint, NodeError>),
    /// The cluster's status after an admin request, or why it was not done.
    Admin(Result<ClusterStatus, NodeError>),
    /// The listener could not serve the request; the text says why.
    Error(String),
}

/// Where a linearizable read may be served: once a node has applied the log up to `index`, its
/// state holds every write acknowledged before the leader handed out the read point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadPoint {
    pub index: u64,
    /// The leader's clock when it handed out the read point: what the read takes as "now".
    pub now: Timestamp,
}

impl ReplyBody {
    /// For errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            ReplyBody::Appended(_) => "appended",
            ReplyBody::Vote(_) => "vote",
            ReplyBody::TransferLeader(_) => "transfer-leader",
            ReplyBody::ChunkReceived { .. } => "chunk received",
            ReplyBody::SnapshotInstalled(_) => "snapshot installed",
            ReplyBody::Forwarded(_) => "forwarded",
            ReplyBody::ReadPoint(_) => "read point",
            ReplyBody::Admin(_) => "admin",
            ReplyBody::Error(_) => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use bytes::BytesMut;
    use openraft::raft::{StreamAppendError, TransferLeaderError};
    use openraft::type_config::alias::{LogIdOf, StoredMembershipOf};
    use openraft::vote::RaftLeaderId;
    use openraft::{BasicNode, EntryPayload, Membership};
    use serde::de::DeserializeOwned;
    use turnstile_core::Command;

    use super::*;
    use crate::Batch;
    use crate::network::wire::{MAX_FRAME, decode, encode};

    type Vote = VoteOf<TypeConfig>;
    type LogId = LogIdOf<TypeConfig>;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::impls::leader_id_adv::LeaderId::new(term, 1), index)
    }

    /// Encodes and decodes through a frame; what comes out must print the same as what went in
    /// (openraft's messages are not all `PartialEq`).
    fn round_trip<T: Serialize + DeserializeOwned + Debug>(msg: &T) -> T {
        let mut buf = BytesMut::from(&encode(msg, MAX_FRAME).unwrap()[..]);
        let back: T = decode(&mut buf, MAX_FRAME).unwrap().expect("a whole frame");
        assert!(buf.is_empty());
        assert_eq!(format!("{back:?}"), format!("{msg:?}"));
        back
    }

    fn request(body: RequestBody) {
        round_trip(&Request { id: 7, body });
    }

    fn reply(body: ReplyBody) {
        round_trip(&Reply { id: u64::MAX, body });
    }

    fn membership() -> Membership<u64, BasicNode> {
        let nodes = (1..=3).map(|id| (id, BasicNode::new(format!("127.0.0.1:{}", 7000 + id))));
        Membership::new(vec![BTreeSet::from([1, 2, 3])], BTreeMap::from_iter(nodes)).unwrap()
    }

    #[test]
    fn handshake_round_trips() {
        for kind in [
            ConnectionKind::Append,
            ConnectionKind::Control,
            ConnectionKind::Snapshot,
            ConnectionKind::Forward,
        ] {
            assert_eq!(round_trip(&Hello { cluster_id: u64::MAX, from: 1, to: 2, kind }).kind, kind);
        }
        round_trip(&HelloReply::Welcome { cluster_id: 9, node_id: 2 });
        for refusal in [
            Refusal::ClusterMismatch { listener: 1, connecting: 2 },
            Refusal::WrongNode { listener: 3, wanted: 2 },
            Refusal::SelfConnection { node: 1 },
        ] {
            assert_eq!(round_trip(&HelloReply::Refused(refusal.clone())), HelloReply::Refused(refusal));
        }
    }

    #[test]
    fn requests_round_trip() {
        let entries: Vec<EntryOf<TypeConfig>> = vec![
            EntryOf::<TypeConfig> { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            EntryOf::<TypeConfig> { log_id: log_id(1, 2), payload: EntryPayload::Membership(membership()) },
            EntryOf::<TypeConfig> {
                log_id: log_id(2, 3),
                payload: EntryPayload::Normal(Batch {
                    now: 1_000,
                    commands: vec![Command::IncrBy { key: "k".into(), delta: -3 }, Command::Tick],
                }),
            },
        ];
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(1, 0)),
            entries,
            leader_commit: Some(log_id(1, 2)),
        };
        request(RequestBody::Append { stream: 3, rpc });
        let vote = VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 9)));
        request(RequestBody::Vote(vote.clone()));
        request(RequestBody::PreVote(vote));
        request(RequestBody::TransferLeader(TransferLeaderRequest::new(
            Vote::new_committed(4, 1),
            3,
            Some(log_id(4, 10)),
        )));
        let meta = SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(log_id(4, 10)),
            last_membership: StoredMembershipOf::<TypeConfig>::new(Some(log_id(1, 2)), membership()),
        };
        let chunk = SnapshotChunk {
            vote: Vote::new_committed(4, 1),
            meta,
            size: 5,
            index: 1,
            data: Bytes::from_static(b"state"),
            done: true,
        };
        let back = round_trip(&Request { id: 1, body: RequestBody::SnapshotChunk(chunk.clone()) });
        assert!(matches!(back.body, RequestBody::SnapshotChunk(c) if c == chunk));
        let commands = vec![Command::Tick, Command::IncrBy { key: "k".into(), delta: 2 }];
        let back = round_trip(&Request { id: 2, body: RequestBody::Forward(commands.clone()) });
        assert!(matches!(back.body, RequestBody::Forward(c) if c == commands));
        request(RequestBody::ReadIndex);
        request(RequestBody::Admin(AdminRequest::Add { id: 4, addr: "127.0.0.1:7411".into() }));
    }

    #[test]
    fn replies_round_trip() {
        reply(ReplyBody::Appended(Ok(Some(log_id(2, 3)))));
        reply(ReplyBody::Appended(Ok(None)));
        reply(ReplyBody::Appended(Err(StreamAppendError::Conflict(log_id(1, 1)))));
        reply(ReplyBody::Appended(Err(StreamAppendError::HigherVote(Vote::new(5, 3)))));
        reply(ReplyBody::Vote(VoteResponse::new(Vote::new(4, 2), Some(log_id(3, 9)), true)));
        reply(ReplyBody::TransferLeader(Ok(())));
        reply(ReplyBody::TransferLeader(Err(TransferLeaderError::LogNotFlushed {
            expected: Some(log_id(4, 10)),
            actual: None,
        })));
        reply(ReplyBody::ChunkReceived { index: 41 });
        reply(ReplyBody::SnapshotInstalled(SnapshotResponse::new(Vote::new_committed(4, 1))));
        reply(ReplyBody::Forwarded(Ok(vec![
            Ok(CommandReply::Int(3)),
            Err(NodeError::Indeterminate("x".into())),
        ])));
        reply(ReplyBody::Forwarded(Err(NodeError::NotLeader { leader: Some("127.0.0.1:7391".into()) })));
        reply(ReplyBody::ReadPoint(Ok(ReadPoint { index: 12, now: 1_700_000_000_000 })));
        reply(ReplyBody::ReadPoint(Err(NodeError::Unavailable("no quorum".into()))));
        reply(ReplyBody::Admin(Err(NodeError::Refused("node id 2 is already a member".into()))));
        reply(ReplyBody::Error("raft stopped".into()));
    }
}
