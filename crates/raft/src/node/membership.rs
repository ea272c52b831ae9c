//! Membership and the cluster's status: what `turnstile cluster status | add | remove |
//! transfer-leader` and `--join` ask of the leader. A follower forwards these requests (see
//! `forward.rs`); the leader runs them one at a time.
//!
//! - **add**: the node joins as a learner, is sent the log (or a snapshot) until it has caught up,
//!   and only then is promoted to voter, so a slow new node never stalls commits.
//! - **remove**: the id is retired first (`Command::RetireNode`, in the state, so every node
//!   refuses it forever after), then the node leaves the membership.
//! - **ids are never reused**: a node that took a removed node's id could replay its votes and
//!   log, and the cluster could not tell it apart.

use std::collections::{BTreeMap, BTreeSet};

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Instant, ReadPolicy, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use turnstile_core::Command;

use super::NodeError;
use super::batcher::Proposal;
use super::error::read_error;

use crate::{Raft, StateMachineStore, TypeConfig};

/// What can be asked of the leader about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    Status,
    /// Add node `id`, whose Raft listener is at `addr`: learner first, voter once caught up.
    Add {
        id: u64,
        addr: String,
    },
    Remove {
        id: u64,
    },
    TransferLeader {
        to: u64,
    },
    /// What a joining node asks for itself: [`AdminRequest::Add`], except that a node already a
    /// member at `addr` is not refused (it restarted while joining, or after): it is made a voter
    /// if its add was cut short while it was a learner. Last, for the encoding's sake.
    Join {
        id: u64,
        addr: String,
    },
}

/// The cluster as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered (the leader, when there is one).
    pub node_id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// One member, with the leader's view of its replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    /// Its Raft listener.
    pub addr: String,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// The last log index the leader knows it holds (the leader's own last index for itself).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's last log index.
    pub lag: Option<u64>,
    /// Milliseconds since it last answered the leader (none for the leader itself).
    pub last_contact_ms: Option<u64>,
}

/// The cluster's status as this node knows it: replication figures only on the leader.
pub(super) fn local_status(raft: &Raft, state_machine: &StateMachineStore, self_id: u64) -> ClusterStatus {
    let applied = state_machine.last_applied_index();
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    let leads = m.state == ServerState::Leader;
    let last_index = m.last_log_index;
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let matched: BTreeMap<u64, Option<u64>> = m
        .replication
        .as_ref()
        .map(|r| r.iter().map(|(id, log)| (*id, log.as_ref().map(|l| l.index()))).collect())
        .unwrap_or_default();
    let contact: BTreeMap<u64, Option<u64>> = m
        .heartbeat
        .as_ref()
        .map(|h| {
            h.iter()
                .map(|(id, at)| {
                    (*id, at.as_ref().map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)))
                })
                .collect()
        })
        .unwrap_or_default();
    let members = membership
        .nodes()
        .map(|(&id, node)| {
            let is_leader = m.current_leader == Some(id);
            let matched_index =
                if is_leader && leads { last_index } else { matched.get(&id).copied().flatten() };
            MemberStatus {
                id,
                addr: node.addr.clone(),
                role: if is_leader {
                    "leader"
                } else if voters.contains(&id) {
                    "voter"
                } else {
                    "learner"
                }
                .to_string(),
                matched_index: if leads { matched_index } else { None },
                lag: if leads {
                    last_index.map(|last| last.saturating_sub(matched_index.unwrap_or(0)))
                } else {
                    None
                },
                last_contact_ms: if leads && !is_leader { contact.get(&id).copied().flatten() } else { None },
            }
        })
        .collect();
    ClusterStatus {
        node_id: self_id,
        leader: m.current_leader,
        term: m.current_term,
        committed_index: m.local_committed.map(|id| id.index()).max(applied),
        applied_index: applied,
        members,
    }
}

/// The leader's side of an [`AdminRequest`]. The caller holds the admin lock: one membership
/// change at a time.
pub(super) async fn run(
    raft: &Raft,
    state_machine: &StateMachineStore,
    proposals: &mpsc::Sender<Proposal>,
    self_id: u64,
    request: AdminRequest,
) -> Result<ClusterStatus, NodeError> {
    match request {
        AdminRequest::Status => {}
        AdminRequest::Add { id, addr } => {
            if membership(raft).nodes().any(|(&n, _)| n == id) {
                return Err(NodeError::Refused(format!("node id {id} is already a member of the cluster")));
            }
            add(raft, state_machine, id, addr).await?;
        }
        AdminRequest::Join { id, addr } => {
            let membership = membership(raft);
            match membership.get_node(&id) {
                None => add(raft, state_machine, id, addr).await?,
                Some(node) if node.addr != addr => {
                    return Err(NodeError::Refused(format!(
                        "node id {id} is already a member of the cluster, at {}",
                        node.addr
                    )));
                }
                Some(_) if membership.voter_ids().any(|v| v == id) => {}
                Some(_) => {
                    tracing::info!(id, "a learner asks again to join: making it a voter");
                    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                        .await
                        .map_err(change_error)?;
                }
            }
        }
        AdminRequest::Remove { id } => {
            let membership = membership(raft);
            if !membership.nodes().any(|(&n, _)| n == id) {
                return Err(NodeError::Refused(format!("node {id} is not a member of the cluster")));
            }
            if membership.voter_ids().eq([id]) {
                return Err(NodeError::Refused(format!("node {id} is the only voter; a cluster needs one")));
            }
            propose(proposals, Command::RetireNode { node: id }).await?;
            let change = if membership.voter_ids().any(|v| v == id) {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            raft.change_membership(change, false).await.map_err(change_error)?;
            tracing::info!(id, "node removed; its id is retired");
        }
        AdminRequest::TransferLeader { to } => {
            if !membership(raft).voter_ids().any(|v| v == to) {
                return Err(NodeError::Refused(format!("node {to} is not a voter of the cluster")));
            }
            if to != self_id {
                raft.trigger().transfer_leader(to).await.map_err(super::error::fatal_error)?;
                raft.wait(Some(super::forward::NO_LEADER_WAIT))
                    .metrics(|m| m.current_leader == Some(to), "the new leader takes over")
                    .await
                    .map_err(|e| NodeError::Unavailable(format!("node {to} did not take over: {e}")))?;
            }
        }
    }
    Ok(local_status(raft, state_machine, self_id))
}

/// Adds node `id` at `addr`: a learner until it has caught up, then a voter. Refused for an id
/// that was retired or an address that cannot be dialed.
async fn add(raft: &Raft, state_machine: &StateMachineStore, id: u64, addr: String) -> Result<(), NodeError> {
    // Linearizable: a retirement committed just before is applied before the check.
    raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map_err(read_error)?;
    let retired = state_machine
        .with_state(|state| state.is_retired_node(id))
        .map_err(|e| NodeError::Fatal(e.to_string()))?;
    if retired {
        return Err(NodeError::Refused(format!(
            "node id {id} belonged to a node that left the cluster; ids are never reused: give the new node an id never used before"
        )));
    }
    if !crate::network::dialable(&addr) {
        return Err(NodeError::Refused(format!("{addr:?} is not a HOST:PORT address")));
    }
    tracing::info!(id, %addr, "adding a node: as a learner until it has caught up");
    raft.add_learner(id, BasicNode::new(&addr), true).await.map_err(change_error)?;
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
        .map_err(change_error)?;
    tracing::info!(id, "node added as a voter");
    Ok(())
}

fn membership(raft: &Raft) -> openraft::Membership<u64, BasicNode> {
    raft.metrics().borrow_watched().membership_config.membership().clone()
}

async fn propose(proposals: &mpsc::Sender<Proposal>, cmd: Command) -> Result<(), NodeError> {
    let (reply, answer) = oneshot::channel();
    proposals.send(Proposal { cmd, reply }).await.map_err(|_| NodeError::ShuttingDown)?;
    answer.await.map_err(|_| NodeError::ShuttingDown)?.map(|_| ())
}

fn change_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> NodeError {
    match e {
        // Another change not yet committed (one proposed just before, or the membership of a
        // new term): worth asking again shortly.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(ChangeMembershipError::InProgress(
            e,
        ))) => NodeError::Unavailable(format!("another membership change is in progress: {e}")),
        RaftError::APIError(e) => match super::error::write_error(e) {
            NodeError::Fatal(why) => NodeError::Refused(why),
            other => other,
        },
        RaftError::Fatal(f) => super::error::fatal_error(f),
    }
}
