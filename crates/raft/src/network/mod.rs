//! Node-to-node network: framed TCP between the nodes of a cluster.
//!
//! Each node runs [`serve`] on its Raft address and gives openraft a [`TcpNetwork`]. Between
//! every two nodes there are, in each direction, three connections, opened when first needed
//! and again after a failure:
//!
//! ```text
//!   node 1 (leader)                                            node 2 (follower)
//!   TcpNetwork ── Append   : appends, pipelined, in order ───►  serve ─► Raft::stream_append
//!   (PeerClient)── Control : heartbeats, (pre-)votes,      ───►        ─► Raft::append_entries*,
//!              │             transfer-leader, any order                   vote, pre_vote, …
//!              └─ Snapshot : chunks, one at a time         ───►        ─► Raft::install_full_snapshot
//!                                                                 * as a stream of one
//! ```
//!
//! Three connections rather than one so that a heartbeat or a vote never waits behind a large
//! append or a snapshot on the same socket: a late heartbeat costs the leader its lease and can
//! start an election. Every connection begins with a handshake naming the cluster and both nodes,
//! and a mismatch is refused, so a wrong address cannot make a leader replicate to the wrong node
//! or to itself.
//!
//! - `wire.rs`: frames (length, version, postcard message, size limit), no I/O but a reader.
//! - `message.rs`: the handshake, request and reply messages.
//! - `handshake.rs`: the checks both ends make, how a refusal reads in each one's log, and
//!   [`peek_hello`] for whatever sits between two nodes and needs to know which pair a connection joins.
//! - `connection.rs`: one client connection (replies matched by id) and the [`Link`] slot that
//!   (re)opens it.
//! - `client.rs`: [`TcpNetwork`] (openraft's factory) and [`PeerClient`] (its calls), timeouts,
//!   the append pipeline.
//! - `snapshot.rs`: sending a snapshot in chunks, and assembling one.
//! - `server.rs`: [`serve`]: accepting, the handshake, and handing requests to `Raft`.
//! - `error.rs`: [`TransportError`], and which of openraft's errors each becomes.
//! - `stub.rs`: [`NoNetwork`], for a single node, which never calls it.
//!
//! [`Link`]: connection::Link
//! [`TransportError`]: error::TransportError

mod client;
mod connection;
mod error;
mod forward;
mod handshake;
mod message;
mod server;
mod snapshot;
mod stub;
mod wire;

pub(crate) use client::dialable;
pub use client::{Joining, PeerClient, PendingForward, TcpNetwork};
pub use connection::Deadline;
pub use forward::{ForwardHandler, ForwardedReplies, Handler};
pub use handshake::peek_hello;
pub use message::ReadPoint;
pub use server::serve;
pub use stub::{NoNetwork, NoPeer};
