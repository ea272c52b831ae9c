//! Both ends of forwarding, as the node sees them: [`Route`], where a follower's batches and
//! reads go, and [`Forwards`], what a leader does with the ones followers send it. The wire
//! between them is `crate::network` (`forward.rs` there has the picture).

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::base::BoxFuture;
use openraft::{RaftMetrics, ReadPolicy};
use tokio::sync::{mpsc, oneshot};
use turnstile_core::Command;

use super::NodeError;
use super::batcher::Proposal;
use super::error::read_error;
use super::membership::{self, AdminRequest, ClusterStatus};
use crate::network::{Deadline, ForwardHandler, ForwardedReplies, PendingForward, ReadPoint, TcpNetwork};
use crate::{Clock, Raft, StateMachineStore, TypeConfig};

/// How long a request waits for a leader to be known before it is refused (no leader
/// reachable). A little more than an election takes with the cluster's timing.
pub(super) const NO_LEADER_WAIT: Duration = Duration::from_secs(2);

/// How long a forwarded batch or read may take, from writing it to the leader's answer. Past it
/// the outcome of a write is unknown.
pub(super) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an admin request may take: adding a node waits until it has caught up.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where requests made on this node go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// This node leads: into its own log.
    Here,
    /// To the leader, this node id.
    Leader(u64),
}

/// How a node of a cluster reaches the leader.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) network: TcpNetwork,
    pub(super) self_id: u64,
}

impl Route {
    /// Where a request goes now: here when this node leads, else to the leader; waits up to
    /// [`NO_LEADER_WAIT`] for one to be known.
    pub(super) async fn target(&self, raft: &Raft) -> Result<Target, NodeError> {
        let known = {
            let metrics = raft.metrics();
            let m = metrics.borrow_watched();
            m.current_leader.inspect(|&leader| self.note_address(&m, leader))
        };
        let leader = match known {
            Some(leader) => leader,
            None => raft
                .wait(Some(NO_LEADER_WAIT))
                .metrics(|m| m.current_leader.is_some(), "a leader is known")
                .await
                .ok()
                .and_then(|m| m.current_leader.inspect(|&leader| self.note_address(&m, leader)))
                .ok_or(NodeError::NotLeader { leader: None })?,
        };
        Ok(if leader == self.self_id { Target::Here } else { Target::Leader(leader) })
    }

    /// Addresses live in the membership: a node that joined later, or a leader that joined after
    /// this node started, is reached where the membership says.
    fn note_address(&self, m: &RaftMetrics<TypeConfig>, leader: u64) {
        if leader == self.self_id {
            return;
        }
        if let Some(node) = m.membership_config.membership().get_node(&leader)
            && crate::network::dialable(&node.addr)
        {
            self.network.set_peer(leader, node.addr.as_str());
        }
    }

    /// Writes a batch to the leader, behind the batches written before it. An error here means
    /// the leader did not get it whole, unless the connection broke while it was written.
    pub(super) async fn forward(
        &self,
        leader: u64,
        commands: Vec<Command>,
    ) -> Result<PendingForward, NodeError> {
        self.network.forward(leader, commands, Deadline::after(FORWARD_TIMEOUT)).await.map_err(|e| {
            if e.is_unreachable() {
                NodeError::Unavailable(format!("the leader (node {leader}) cannot be reached: {e}"))
            } else {
                indeterminate(leader, &e)
            }
        })
    }

    /// Has the leader run an admin request.
    pub(super) async fn admin(&self, leader: u64, request: AdminRequest) -> Result<ClusterStatus, NodeError> {
        // Adding a node waits for it to catch up: give it time.
        match self.network.admin(leader, request, Deadline::after(ADMIN_TIMEOUT)).await {
            Ok(done) => done,
            Err(e) => Err(NodeError::Unavailable(format!("the leader (node {leader}) did not answer: {e}"))),
        }
    }

    /// A read point from the leader.
    pub(super) async fn read_point(&self, leader: u64) -> Result<ReadPoint, NodeError> {
        match self.network.read_point(leader, Deadline::after(FORWARD_TIMEOUT)).await {
            Ok(point) => point,
            Err(e) => {
                Err(NodeError::Unavailable(format!("no read point from the leader (node {leader}): {e}")))
            }
        }
    }
}

/// What a forwarded batch's proposers get: the leader's replies, in order.
pub(super) async fn replies(
    pending: PendingForward,
    leader: u64,
    count: usize,
) -> Result<ForwardedReplies, NodeError> {
    match pending.replies(Deadline::after(FORWARD_TIMEOUT)).await {
        Ok(Ok(replies)) if replies.len() == count => Ok(replies),
        Ok(Ok(replies)) => Err(NodeError::Fatal(format!(
            "the leader (node {leader}) answered {} of {count} forwarded commands",
            replies.len()
        ))),
        // The leader took none of it: it no longer leads (or is stopping).
        Ok(Err(refused)) => Err(NodeError::Unavailable(format!(
            "the leader changed while the request was forwarded; nothing was applied, retry ({refused})"
        ))),
        Err(e) => Err(indeterminate(leader, &e)),
    }
}

fn indeterminate(leader: u64, e: &dyn std::fmt::Display) -> NodeError {
    NodeError::Indeterminate(format!(
        "forwarding to the leader (node {leader}) failed, it may have been applied: {e}"
    ))
}

/// The leader's end: forwarded batches join this node's own proposal queue, in the order they
/// came, so the batcher stamps them with this node's clock and puts them in its log entries as
/// if they had been proposed here.
#[derive(Debug)]
pub(super) struct Forwards {
    pub(super) raft: Raft,
    pub(super) state_machine: StateMachineStore,
    pub(super) proposals: mpsc::Sender<Proposal>,
    pub(super) clock: Clock,
    pub(super) self_id: u64,
    /// Held while an admin request runs: one membership change at a time.
    pub(super) admin: Arc<tokio::sync::Mutex<()>>,
    /// Where an admin request goes when this node does not lead (a joining node may have
    /// reached any member).
    pub(super) route: Route,
}

impl ForwardHandler for Forwards {
    fn submit(
        &self,
        commands: Vec<Command>,
    ) -> BoxFuture<'_, Result<BoxFuture<'static, ForwardedReplies>, NodeError>> {
        Box::pin(async move {
            // A node that does not lead refuses rather than forwarding again: a batch never
            // travels in circles while leadership moves.
            let leader = self.raft.metrics().borrow_watched().current_leader;
            if leader != Some(self.self_id) {
                return Err(NodeError::NotLeader { leader: None });
            }
            let mut answers = Vec::with_capacity(commands.len());
            for cmd in commands {
                let (reply, answer) = oneshot::channel();
                self.proposals.send(Proposal { cmd, reply }).await.map_err(|_| NodeError::ShuttingDown)?;
                answers.push(answer);
            }
            let replies: BoxFuture<'static, ForwardedReplies> = Box::pin(async move {
                let mut replies = Vec::with_capacity(answers.len());
                for answer in answers {
                    replies.push(answer.await.unwrap_or(Err(NodeError::ShuttingDown)));
                }
                replies
            });
            Ok(replies)
        })
    }

    fn admin(&self, request: AdminRequest) -> BoxFuture<'static, Result<ClusterStatus, NodeError>> {
        let (raft, state_machine, proposals) =
            (self.raft.clone(), self.state_machine.clone(), self.proposals.clone());
        let (self_id, lock, route) = (self.self_id, Arc::clone(&self.admin), self.route.clone());
        Box::pin(async move {
            match route.target(&raft).await? {
                Target::Here => {
                    let _one_at_a_time = lock.lock().await;
                    membership::run(&raft, &state_machine, &proposals, self_id, request).await
                }
                Target::Leader(leader) => route.admin(leader, request).await,
            }
        })
    }

    fn read_point(&self) -> BoxFuture<'static, Result<ReadPoint, NodeError>> {
        let (raft, clock) = (self.raft.clone(), self.clock.clone());
        Box::pin(async move {
            let linearizer = raft.get_read_linearizer(ReadPolicy::ReadIndex).await.map_err(read_error)?;
            Ok(ReadPoint { index: linearizer.read_log_id().index(), now: clock.now() })
        })
    }
}
