//! A fault-injecting TCP proxy for the links between the nodes of a cluster, so tests (and the
//! torture run) can partition, slow down and cut nodes off on loopback, with no root and no
//! firewall.
//!
//! One [`Proxy`] stands in front of each node's Raft listener; the nodes are given the proxies'
//! addresses as their peers (the same list on every node), and listen on their own. A node names
//! itself and the node it dialed in the first frame of every connection, so the proxy reads that
//! to know the pair, and applies the pair's [`Rule`] from the shared [`Faults`] table:
//!
//! ```text
//!   node 1 ──► proxy of 2 ──(rule 1→2)──► node 2        Faults: (from, to) → Pass | Drop |
//!   node 1 ──► proxy of 3 ──(rule 1→3)──► node 3                 BlackHole | Delay(ms)
//!   node 2 ──► proxy of 1 ──(rule 2→1)──► node 1        isolate, split, bridge, one_way, heal
//!   ...                                                  (changes apply to open connections)
//! ```
//!
//! - `faults.rs`: [`Rule`], the [`Faults`] table, the partitions built from it, [`LinkStats`].
//! - `proxy.rs`: [`Proxy`]: accepting, learning the pair ([`Identify`]), the first decision.
//! - `link.rs`: one connection's two pumps, and what each rule does to bytes already flowing.

mod faults;
mod link;
mod proxy;

pub use faults::{Faults, LinkStats, Rule};
pub use proxy::{Identify, Proxy};
