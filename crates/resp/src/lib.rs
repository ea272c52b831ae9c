#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! - `request`: client → server, [`decode_request`] / [`parse_request`] with [`Limits`].
//! - `frame`: server → client, [`Frame`] and [`Frame::encode`] for a [`Protocol`];
//!   `frame::parse` reads replies back with [`parse_frame`].
//! - `wire`: the syntax both directions share (lines, integers, blobs).
//! - `error`: [`ProtocolError`], whose texts are Redis's.
//! - [`glob`]: Redis's glob patterns (pub/sub patterns, `CONFIG GET`).
//! - [`cmd`]: request arguments → a core `Command`/`Query` ([`cmd::parse`]) and the core's
//!   `Reply` → a [`Frame`] ([`cmd::render`]); one file per command group.

pub mod cmd;
mod error;
mod frame;
pub mod glob;
mod request;
mod wire;

pub use error::ProtocolError;
pub use frame::parse::{MAX_REPLY_DEPTH, parse_frame};
pub use frame::{Frame, Protocol};
pub use request::{Limits, Request, decode_request, parse_request};
