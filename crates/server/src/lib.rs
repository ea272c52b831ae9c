//! Turnstile's server: three front ends (RESP, AMQP, HTTP) on one accept loop and one session
//! layer, blocking waits, and the ticker that makes time pass in the state machine.
//!
//! ```text
//!  listener.rs ─accept─► resp/ | amqp/ | http/ (framing, parsing, rendering)
//!                              │ Command / Query
//!                              ▼
//!                         session.rs (limits, open/close, propose, read, wait) ──► turnstile_raft::Node
//!                              ▲                                                     │ applies entries
//!                              └──── router.rs ◄──── effects, in log order ──────────┘
//!  ticker.rs ── proposes Tick when State::next_deadline is due
//!  flow.rs ── flow control: a connection publishing to a consumed queue past queue-flow-limit
//!             is not read until the consumers catch up
//!  host.rs ── proposes this process's KeepAlive, which keeps its sessions alive
//!  pubsub.rs ── this node's subscribers; router.rs hands them published messages
//!  clients.rs ── this node's RESP connections (CLIENT LIST / KILL)
//!  auth.rs ── the user table (config file + ACL SETUSER's layer) and each connection's identity
//!  stats.rs ── counters and the one snapshot INFO, /metrics and the dashboard render
//! ```

mod amqp;
pub mod auth;
mod clients;
pub mod config;
mod embedded;
mod flow;
mod host;
mod http;
mod listener;
mod metrics;
mod pubsub;
mod resp;
mod router;
mod server;
mod session;
mod shutdown;
mod stats;
mod ticker;

pub use config::{
    Config, ConfigError, DEFAULT_AMQP_PORT, DEFAULT_HTTP_PORT, DEFAULT_RESP_PORT, Fsync, parse_peers,
};
pub use embedded::Embedded;
/// The HTTP API's body decoding, for the fuzz targets (see [`http::body_command`]).
#[doc(hidden)]
pub use http::{ApiError, BODY_OPERATIONS, body_command};
pub use server::{Server, ServerError, TlsAddrs};
pub use turnstile_raft::{Clock, ManualClock};
pub use turnstile_tls::ServerTls;
