//! Forwarding: a follower sends its clients' writes to the leader, in batches, and asks it for
//! read points; the replies come back through the follower.
//!
//! ```text
//!  follower                                                     leader
//!  batcher ── Forward(batch) ─► forward connection, in order ─► serve ─► ForwardHandler::submit
//!     ▲                                                                   (queued behind earlier
//!     └─ replies[i] ─► proposers ◄─ Forwarded(replies) ◄──────────────────  batches, stamped and
//!                                                                           applied as its own)
//!  Node::read ─ ReadIndex ────────────────────────────────────────────► ForwardHandler::read_point
//!     └─ waits until applied ≥ index, reads its own state ◄─ ReadPoint { index, now }
//! ```
//!
//! One ordered connection per follower carries the batches, and the leader queues each before it
//! reads the next, so a client's pipelined commands are applied in the order it sent them, even
//! when the follower has several batches in flight.

use std::sync::Arc;

use openraft::base::BoxFuture;
use turnstile_core::{Command, Reply};

use super::message::ReadPoint;
use crate::NodeError;
use crate::node::{AdminRequest, ClusterStatus};

/// Each forwarded command's reply, in order.
pub type ForwardedReplies = Vec<Result<Reply, NodeError>>;

/// What a node does with the requests followers forward to it (the node implements it; `serve`
/// calls it).
pub trait ForwardHandler: Send + Sync + 'static {
    /// Queues `commands` behind everything queued before (the connection calls this one batch
    /// at a time, in order) and returns the wait for their replies; or refuses the whole batch,
    /// applying none of it (this node does not lead).
    fn submit(
        &self,
        commands: Vec<Command>,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, ForwardedReplies>, NodeError>>;

    /// A linearizable read point: leadership confirmed by a quorum, and the index that a node
    /// must have applied to serve a read that sees every write acknowledged before it.
    fn read_point(&self) -> BoxFuture<'static, Result<ReadPoint, NodeError>>;

    /// Runs a membership change or status request (see `node/membership.rs`).
    fn admin(&self, request: AdminRequest) -> BoxFuture<'static, Result<ClusterStatus, NodeError>>;
}

/// What `serve` hands forwarded requests to: `None` on a node that serves none (tests).
pub type Handler = Option<Arc<dyn ForwardHandler>>;
