#![doc = include_str!("../README.md")]
//!
//! # Modules
//! - `client`: [`Client`], its connection pool and leader redirects.
//! - `lock`: [`LockBuilder`] → [`LockGuard`], renewed in the background, with [`LockGuard::lost`].
//! - `queue`: pushes, pops, [`Consumer`] streams of [`Delivery`], queue admin.
//! - `conn`: one RESP [`Connection`] and the [`Cmd`]s it sends; `reply`: reading replies.
//! - `session`: [`SessionKey`], and resuming a session on another node ([`Client::resume`]).

mod client;
mod conn;
mod error;
mod lock;
mod queue;
mod reply;
mod session;

pub use client::{Client, Credentials, DEFAULT_ADDR, Options, Pooled, parse_addrs};
pub use conn::{Arg, Cmd, Connection};
pub use error::{Error, Result};
pub use lock::{Holder, Kind, LockBuilder, LockGuard, LockInfo, Lost, Waiter};
pub use queue::{
    Consumer, ConsumerBuilder, Delivery, Message, Overflow, PopBuilder, PushBuilder, QueueBuilder, QueueStats,
};
pub use reply::map as map_reply;
pub use session::SessionKey;
pub use turnstile_resp::Frame;
