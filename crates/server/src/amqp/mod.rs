//! The AMQP 0-9-1 listener: RabbitMQ clients publish to and consume from the same queues as RESP.
//!
//! ```text
//!  socket ─► connection.rs ─► Input ─► machine.rs (channel.rs, methods.rs, message.rs) ─► Action
//!   ▲        (I/O: frames,                                                                  │
//!   │         heartbeats)  ◄──── replies by id, effects (deliveries, cancels) ◄─ session.rs ◄┤
//!   └──────────────────── writer task ◄─ frames to send ◄───────────────────────────────────┘
//! ```
//!
//! `handshake.rs` opens the connection. After that, `machine.rs` is the whole protocol as a pure
//! state machine (frames, replies and effects in; frames to send, commands for the log and
//! queries out), `connection.rs` only does I/O, and `session.rs` is the one place that reaches
//! the node and the router. One connection is one core session (opened after the handshake,
//! closed when the connection ends, which returns every unacked delivery). Channels, consumer
//! tags and delivery tags are the machine's; queues, exchanges, bindings, consumers and their
//! credit are the core's, so RESP and AMQP see the same state. Replies the client waits for are
//! sent in order per channel: a synchronous method first waits for the connection's earlier
//! publishes to be applied.
//!
//! A login (PLAIN, AMQPLAIN) names a user of the table every protocol shares (`auth.rs`); the
//! connection's session runs as that user, so its permissions are checked on every method and a
//! refusal closes the channel in RabbitMQ's words (`session.rs`). Delivery tags belong to their
//! channel, so no client can ack or nack another user's delivery over AMQP.

mod channel;
mod connection;
mod handshake;
mod machine;
mod message;
mod methods;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use turnstile_amqp::{AmqpError, code};
use turnstile_tls::MaybeTls;

use crate::listener::Admitted;
use crate::server::Shared;
use crate::shutdown::Shutdown;

/// Deliveries to AMQP consumers have no visibility timeout of their own: a message stays with its
/// consumer until acked or the channel closes. This is the lease they are given, RabbitMQ's
/// default `consumer_timeout` (30 minutes).
const DELIVERY_LEASE_MS: u64 = 30 * 60 * 1000;
/// Largest frame the server offers in `Connection.Tune` (RabbitMQ's default).
const FRAME_MAX: u32 = 131_072;
/// Most channels per connection offered in `Connection.Tune` (RabbitMQ's default).
const CHANNEL_MAX: u16 = 2047;
/// Heartbeat interval the server proposes, in seconds; the client's answer is used.
const HEARTBEAT: u16 = 60;

/// Serves one admitted AMQP connection until it closes.
pub async fn serve(admitted: Admitted, shared: Arc<Shared>, shutdown: Shutdown) {
    let Admitted { stream, peer, id, slot, tls, .. } = admitted;
    // The verified client certificate's name is where a user can be taken from (not yet).
    if let Some(tls) = tls {
        tracing::debug!(%peer, client_name = ?tls.client_name, "amqp client over TLS");
    }
    connection::serve(stream, peer, id, shared, shutdown).await;
    drop(slot);
}

/// Who a connection is, for the log and `ACL LOG` (the words RESP's use).
fn client_info(peer: SocketAddr, id: u64) -> String {
    format!("protocol=amqp addr={peer} id={id}")
}

/// Refuses a connection the AMQP way: the handshake runs until `Connection.Open`, which is
/// answered with `Connection.Close` `530 NOT_ALLOWED` and `reason`, as RabbitMQ refuses a
/// connection over a limit.
pub async fn refuse(
    stream: &mut MaybeTls,
    peer: SocketAddr,
    shared: &Shared,
    reason: &str,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let refusal = AmqpError::new(code::NOT_ALLOWED, reason.to_owned());
    match handshake::handshake(stream, &mut buf, peer, &shared.users, &client_info(peer, 0)).await {
        Ok(_) => return handshake::refuse_open(stream, refusal).await,
        Err(handshake::HandshakeError::Io(e)) => return Err(e),
        Err(e) => tracing::debug!(%peer, error = %e, "amqp connection refused"),
    }
    drain(stream).await
}

/// Refuses a connection in protected mode: its login, whatever it names, is answered with
/// `Connection.Close` `403 ACCESS_REFUSED` and `reason`.
pub async fn deny(stream: &mut MaybeTls, peer: SocketAddr, reason: &str) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    match handshake::deny(stream, &mut buf, AmqpError::access_refused(reason.to_owned())).await {
        Err(handshake::HandshakeError::Io(e)) => return Err(e),
        Err(e) => tracing::debug!(%peer, error = %e, "amqp connection denied"),
        Ok(()) => {}
    }
    drain(stream).await
}

/// Waits for the client's CloseOk (or for it to go), so the close reaches it before the socket
/// does; the caller bounds the wait.
async fn drain(stream: &mut MaybeTls) -> std::io::Result<()> {
    let mut rest = [0u8; 512];
    while stream.read(&mut rest).await? > 0 {}
    Ok(())
}
