//! [`TransportError`]: why a call to a peer failed, and which of openraft's errors it becomes.
//!
//! openraft treats the kinds differently, so the choice matters:
//! - `Unreachable` makes it back off (200 ms doubling to 1 s by default) before trying the peer
//!   again: right for a peer that is down or misconfigured, which retrying at once will not fix.
//! - `Timeout` and `NetworkError` are retried soon: right for one lost or late reply.

use std::io;
use std::time::Duration;

use openraft::RPCTypes;
use openraft::errors::{NetworkError, RPCError, StreamingError, Timeout, Unreachable};

use super::handshake::Refused;
use super::wire::WireError;
use crate::TypeConfig;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no address is known for node {node}")]
    NoAddress { node: u64 },
    /// openraft asked this node to talk to itself: never connect, or a leader would replicate to
    /// itself.
    #[error("node {node} is this node: refusing to connect to itself")]
    SelfTarget { node: u64 },
    #[error("cannot connect to node {node} at {addr}: {source}")]
    Connect { node: u64, addr: String, source: io::Error },
    /// The TLS handshake failed: a certificate another CA signed, or one that does not name the
    /// address dialed.
    #[error("TLS handshake with node {node} at {addr} failed: {source}")]
    Tls { node: u64, addr: String, source: io::Error },
    #[error("connecting to node {node} at {addr} timed out")]
    ConnectTimeout { node: u64, addr: String },
    /// The handshake was refused (by either side): a wrong address or another cluster.
    #[error("{0}")]
    Refused(Refused),
    #[error("no reply from node {node} within {after:?}")]
    Timeout { node: u64, after: Duration },
    #[error("connection to node {node} at {addr} closed")]
    Closed { node: u64, addr: String },
    #[error("connection to node {node} at {addr}: {source}")]
    Wire { node: u64, addr: String, source: WireError },
    #[error("node {node} could not serve the request: {message}")]
    Remote { node: u64, message: String },
    #[error("node {node} answered a {sent} request with {got}")]
    Unexpected { node: u64, sent: &'static str, got: &'static str },
}

impl TransportError {
    /// Whether the peer could not be reached at all (see the module docs).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::NoAddress { .. }
                | TransportError::SelfTarget { .. }
                | TransportError::Connect { .. }
                | TransportError::Tls { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::Refused(_)
        )
    }

    /// Whether the connection it happened on can no longer be trusted to match replies to
    /// requests (a reply may still be on its way): it is closed and a new one opened.
    pub fn spoils_connection(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. } | TransportError::Closed { .. } | TransportError::Wire { .. }
        )
    }

    /// As openraft's error for an RPC of kind `action` from `from` to the failed peer.
    pub fn into_rpc(self, action: RPCTypes, from: u64) -> RPCError<TypeConfig> {
        match self {
            TransportError::Timeout { node, after } => {
                RPCError::Timeout(Timeout { action, id: from, target: node, timeout: after })
            }
            e if e.is_unreachable() => RPCError::Unreachable(Unreachable::new(&e)),
            e => RPCError::Network(NetworkError::new(&e)),
        }
    }

    /// As openraft's error for a snapshot transfer.
    pub fn into_streaming(self, from: u64) -> StreamingError<TypeConfig> {
        match self.into_rpc(RPCTypes::InstallSnapshot, from) {
            RPCError::Timeout(e) => StreamingError::Timeout(e),
            RPCError::Unreachable(e) => StreamingError::Unreachable(e),
            RPCError::Network(e) => StreamingError::Network(e),
            // `into_rpc` never makes one: its remote error type is uninhabited.
            RPCError::RemoteError(e) => match e.source {},
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_peers_are_unreachable_and_lost_replies_are_not() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let down = TransportError::Connect { node: 2, addr: "127.0.0.1:1".into(), source: refused };
        assert!(matches!(down.into_rpc(RPCTypes::Vote, 1), RPCError::Unreachable(_)));
        let late = TransportError::Timeout { node: 2, after: Duration::from_millis(30) };
        match late.into_rpc(RPCTypes::AppendEntries, 1) {
            RPCError::Timeout(t) => assert_eq!((t.id, t.target, t.action), (1, 2, RPCTypes::AppendEntries)),
            other => panic!("expected a timeout, got {other:?}"),
        }
        let closed = TransportError::Closed { node: 2, addr: "127.0.0.1:1".into() };
        assert!(closed.spoils_connection());
        assert!(matches!(closed.into_streaming(1), StreamingError::Network(_)));
    }
}
