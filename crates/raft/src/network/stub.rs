//! The network of a single node: [`NoNetwork`].
//!
//! openraft needs a [`RaftNetworkFactory`] even for a one-voter cluster, but a single node never
//! calls it: there is nobody to replicate to or ask for votes. Every method of [`NoPeer`] therefore
//! fails with "unreachable". [`crate::Node`] starts with it until clusters are wired in; then
//! [`crate::TcpNetwork`] takes its place.

use std::future::Future;

use bytes::Bytes;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::alias::{NodeOf, SnapshotOf, VoteOf};
use openraft::{OptionalSend, RaftNetworkFactory, RaftNetworkV2};

use crate::TypeConfig;

/// Creates [`NoPeer`] clients. See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNetwork;

/// A client for a peer that does not exist: every call returns an "unreachable" error.
#[derive(Debug, Clone, Copy)]
pub struct NoPeer {
    target: u64,
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, target: u64, _node: &NodeOf<TypeConfig>) -> NoPeer {
        NoPeer { target }
    }
}

impl NoPeer {
    fn unreachable(&self) -> Unreachable<TypeConfig> {
        Unreachable::from_string(format!(
            "node {} is unreachable: this build has no node-to-node network (single node only)",
            self.target
        ))
    }
}

impl RaftNetworkV2<TypeConfig> for NoPeer {
    type SnapshotData = Bytes;

    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    /// Overridden: the default grants the pre-vote without asking anyone.
    async fn pre_vote(
        &mut self,
        _rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Err(RPCError::Unreachable(self.unreachable()))
    }

    async fn full_snapshot(
        &mut self,
        _vote: VoteOf<TypeConfig>,
        _snapshot: SnapshotOf<TypeConfig, Bytes>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        Err(StreamingError::Unreachable(self.unreachable()))
    }
}
