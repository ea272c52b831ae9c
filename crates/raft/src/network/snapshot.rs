//! Snapshots over the wire: the leader sends one in chunks on the snapshot connection ([`send`]),
//! the follower puts them back together ([`Assembly`]) and installs the whole.
//!
//! ```text
//!  leader                                         follower
//!  chunk 0 (vote, meta, size, bytes) ──────────►  start an assembly of `size` bytes
//!                                    ◄──────────  ChunkReceived 0
//!  chunk 1 …                         ──────────►  append (in order, never past `size`)
//!  chunk n, done                     ──────────►  Raft::install_full_snapshot(vote, snapshot)
//!                                    ◄──────────  SnapshotInstalled(follower's vote)
//! ```
//!
//! Each chunk waits for its acknowledgement, and the timeout is per chunk (openraft's
//! `install_snapshot_timeout`, as its soft TTL): a snapshot of any size gets through a link that
//! carries a chunk per timeout, and a link that stalls is noticed within one. A timeout for the
//! whole snapshot would instead fail every large one forever, resending it from the start.

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::OptionalSend;
use openraft::errors::{ReplicationClosed, StreamingError};
use openraft::network::RPCOption;
use openraft::raft::SnapshotResponse;
use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, VoteOf};

use super::client::PeerClient;
use super::connection::Deadline;
use super::message::{ConnectionKind, ReplyBody, RequestBody, SnapshotChunk};
use crate::TypeConfig;

type Vote = VoteOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, Bytes>;

/// The most bytes one chunk carries. openraft suggests 3 MiB (`snapshot_max_chunk_size`); a
/// smaller chunk needs less bandwidth to arrive within the per-chunk timeout. A smaller size
/// asked for in the `RPCOption` is used instead.
pub const CHUNK: usize = 1 << 20;

/// How long the reply to the last chunk may take: the follower answers it after installing the
/// snapshot, which restores the whole state and can take seconds. The chunks before it have shown
/// the link works; this bounds only a follower that hangs.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The most memory an assembly reserves up front; past it, the buffer grows as chunks arrive.
const RESERVE_MAX: usize = 64 << 20;

/// Sends `snapshot` to the client's peer, chunk by chunk, until the peer installed it or
/// `cancel` fires (openraft stopped replicating to it).
pub async fn send(
    client: &PeerClient,
    vote: Vote,
    snapshot: Snapshot,
    cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
    option: &RPCOption,
) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
    let chunk = option.snapshot_chunk_size().filter(|&n| n > 0).map_or(CHUNK, |n| n.min(CHUNK));
    let ttl = option.soft_ttl();
    let size = snapshot.snapshot.len();
    let last_log_id = snapshot.meta.last_log_id;
    // Never more chunks than their u32 index counts, however large the snapshot.
    let chunk = chunk.max(size.div_ceil(u32::MAX as usize));
    let transfer = async {
        let chunks = u32::try_from(size.div_ceil(chunk).max(1)).unwrap_or(u32::MAX);
        let body = |index: u32| {
            let start = index as usize * chunk;
            RequestBody::SnapshotChunk(SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                size: size as u64,
                index,
                data: snapshot.snapshot.slice(start..size.min(start + chunk)),
                done: index + 1 == chunks,
            })
        };
        for index in 0..chunks - 1 {
            match client.call(ConnectionKind::Snapshot, body(index), Deadline::after(ttl)).await? {
                ReplyBody::ChunkReceived { index: got } if got == index => {}
                other => return Err(client.unexpected("snapshot chunk", &other)),
            }
        }
        let deadline = Deadline::after(ttl.max(INSTALL_TIMEOUT));
        match client.call(ConnectionKind::Snapshot, body(chunks - 1), deadline).await? {
            ReplyBody::SnapshotInstalled(response) => Ok((response, chunks)),
            other => Err(client.unexpected("last snapshot chunk", &other)),
        }
    };
    tokio::select! {
        closed = cancel => Err(StreamingError::Closed(closed)),
        sent = transfer => match sent {
            Ok((response, chunks)) => {
                tracing::info!(?last_log_id, bytes = size, chunks, "sent a snapshot");
                Ok(response)
            }
            Err(e) => Err(e.into_streaming(client.self_id())),
        },
    }
}

/// Why a chunk was refused. The snapshot assembled so far is dropped; the leader starts over.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("snapshot chunk {got} arrived when chunk {expected} was next")]
    OutOfOrder { expected: u32, got: u32 },
    #[error("snapshot chunk {index} belongs to another snapshot than the chunks before it")]
    Mixed { index: u32 },
    #[error("snapshot chunks add up to {received} bytes, more than the {size} announced")]
    TooLarge { size: u64, received: u64 },
    #[error("snapshot ended after {received} bytes, {size} were announced")]
    Short { size: u64, received: u64 },
}

/// A snapshot being received: what chunk 0 announced, and the bytes so far.
#[derive(Debug)]
pub struct Assembly {
    vote: Vote,
    meta: SnapshotMetaOf<TypeConfig>,
    size: u64,
    next: u32,
    data: BytesMut,
}

impl Assembly {
    /// Takes one chunk into `slot`: `None` while more are due; once the last one arrived, the
    /// whole snapshot and the vote to install it under. Chunk 0 starts a new snapshot; any error
    /// leaves the slot empty.
    pub fn receive(
        slot: &mut Option<Assembly>,
        chunk: SnapshotChunk,
    ) -> Result<Option<(Vote, Snapshot)>, ChunkError> {
        let mut assembly = match slot.take() {
            _ if chunk.index == 0 => Assembly {
                vote: chunk.vote,
                meta: chunk.meta.clone(),
                size: chunk.size,
                next: 0,
                data: BytesMut::with_capacity(
                    usize::try_from(chunk.size).unwrap_or(usize::MAX).min(RESERVE_MAX),
                ),
            },
            Some(assembly) => assembly,
            None => return Err(ChunkError::OutOfOrder { expected: 0, got: chunk.index }),
        };
        if chunk.index != assembly.next {
            return Err(ChunkError::OutOfOrder { expected: assembly.next, got: chunk.index });
        }
        if chunk.vote != assembly.vote || chunk.meta != assembly.meta || chunk.size != assembly.size {
            return Err(ChunkError::Mixed { index: chunk.index });
        }
        let received = (assembly.data.len() + chunk.data.len()) as u64;
        if received > assembly.size {
            return Err(ChunkError::TooLarge { size: assembly.size, received });
        }
        assembly.data.extend_from_slice(&chunk.data);
        if !chunk.done {
            assembly.next = assembly.next.saturating_add(1);
            *slot = Some(assembly);
            return Ok(None);
        }
        if received != assembly.size {
            return Err(ChunkError::Short { size: assembly.size, received });
        }
        Ok(Some((assembly.vote, Snapshot { meta: assembly.meta, snapshot: assembly.data.freeze() })))
    }
}

#[cfg(test)]
mod tests {
    use openraft::type_config::alias::LogIdOf;
    use openraft::vote::RaftLeaderId;

    use super::*;

    /// Whether the snapshot is complete, or why the chunk was refused.
    fn take(slot: &mut Option<Assembly>, chunk: SnapshotChunk) -> Result<bool, ChunkError> {
        Assembly::receive(slot, chunk).map(|whole| whole.is_some())
    }

    fn meta(index: u64) -> SnapshotMetaOf<TypeConfig> {
        let leader = openraft::impls::leader_id_adv::LeaderId::new(2, 1);
        SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(LogIdOf::<TypeConfig>::new(leader, index)),
            last_membership: Default::default(),
        }
    }

    fn chunk(index: u32, data: &'static [u8], size: u64, done: bool) -> SnapshotChunk {
        SnapshotChunk {
            vote: Vote::new_committed(2, 1),
            meta: meta(10),
            size,
            index,
            data: Bytes::from_static(data),
            done,
        }
    }

    #[test]
    fn chunks_in_order_make_the_snapshot() {
        let mut slot = None;
        assert_eq!(take(&mut slot, chunk(0, b"abc", 7, false)), Ok(false));
        assert_eq!(take(&mut slot, chunk(1, b"de", 7, false)), Ok(false));
        let (vote, snapshot) = Assembly::receive(&mut slot, chunk(2, b"fg", 7, true)).unwrap().unwrap();
        assert_eq!(vote, Vote::new_committed(2, 1));
        assert_eq!(snapshot.meta, meta(10));
        assert_eq!(&snapshot.snapshot[..], b"abcdefg");
        assert!(slot.is_none());
    }

    #[test]
    fn an_empty_snapshot_is_one_chunk() {
        let mut slot = None;
        let (_, snapshot) = Assembly::receive(&mut slot, chunk(0, b"", 0, true)).unwrap().unwrap();
        assert!(snapshot.snapshot.is_empty());
    }

    #[test]
    fn a_gap_is_refused_and_drops_the_assembly() {
        let mut slot = None;
        Assembly::receive(&mut slot, chunk(0, b"abc", 7, false)).unwrap();
        assert_eq!(
            take(&mut slot, chunk(2, b"de", 7, false)),
            Err(ChunkError::OutOfOrder { expected: 1, got: 2 })
        );
        assert!(slot.is_none());
        // Without a chunk 0 first, nothing is accepted.
        assert_eq!(
            take(&mut slot, chunk(1, b"de", 7, false)),
            Err(ChunkError::OutOfOrder { expected: 0, got: 1 })
        );
    }

    #[test]
    fn no_more_than_the_announced_size_is_held() {
        let mut slot = None;
        Assembly::receive(&mut slot, chunk(0, b"abcd", 5, false)).unwrap();
        assert_eq!(
            take(&mut slot, chunk(1, b"ef", 5, false)),
            Err(ChunkError::TooLarge { size: 5, received: 6 })
        );
        assert!(slot.is_none());
        assert_eq!(
            take(&mut slot, chunk(0, b"abc", 5, true)),
            Err(ChunkError::Short { size: 5, received: 3 })
        );
    }

    #[test]
    fn chunk_zero_starts_over_and_a_foreign_chunk_is_refused() {
        let mut slot = None;
        Assembly::receive(&mut slot, chunk(0, b"old", 9, false)).unwrap();
        Assembly::receive(&mut slot, chunk(0, b"ab", 4, false)).unwrap();
        let (_, snapshot) = Assembly::receive(&mut slot, chunk(1, b"cd", 4, true)).unwrap().unwrap();
        assert_eq!(&snapshot.snapshot[..], b"abcd");

        Assembly::receive(&mut slot, chunk(0, b"ab", 4, false)).unwrap();
        let other = SnapshotChunk { meta: meta(11), ..chunk(1, b"cd", 4, true) };
        assert_eq!(take(&mut slot, other), Err(ChunkError::Mixed { index: 1 }));
    }
}
