//! Turnstile's server: the RESP and AMQP listeners, one session per connection, blocking waits, and the
//! ticker that makes time pass in the state machine.
//!
//! ```text
//!  TcpListener ─accept─► Connection (one task each) ──propose/read──► turnstile_raft::Node
//!                              ▲                                           │ applies entries
//!                              └──── Router ◄──── effects, in log order ───┘
//!  Ticker ── proposes Tick when State::next_deadline is due
//! ```

mod amqp;
pub mod config;
mod connection;
mod http;
mod info;
mod metrics;
mod router;
mod server;
mod shutdown;
mod ticker;

pub use config::{Config, ConfigError, DEFAULT_AMQP_PORT, DEFAULT_HTTP_PORT, DEFAULT_RESP_PORT, Fsync};
pub use server::{Server, ServerError};
