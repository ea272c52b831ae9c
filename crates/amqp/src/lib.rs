#![doc = include_str!("../README.md")]

pub mod args;
pub mod content;
pub mod error;
pub mod frame;
pub mod props;

pub use amq_protocol::protocol::{
    AMQPClass, access, basic, channel, confirm, connection, exchange, queue, tx,
};
pub use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
pub use error::{AmqpError, Scope, code};
pub use frame::{Frame, FrameError, PROTOCOL_HEADER, decode, write_method};
