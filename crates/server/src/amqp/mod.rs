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

mod channel;
mod connection;
mod handshake;
mod machine;
mod message;
mod methods;
mod session;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

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

pub async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    shutdown: &Shutdown,
    done: &mpsc::Sender<()>,
) {
    let slots = Arc::new(Semaphore::new(shared.max_clients));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "amqp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::info!(%peer, "amqp connection refused: max number of clients reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, shutdown, done) = (shared.clone(), shutdown.clone(), done.clone());
        tokio::spawn(async move {
            shared.stats.amqp_connections.fetch_add(1, Ordering::Relaxed);
            connection::serve(stream, peer, shared.clone(), shutdown).await;
            shared.stats.amqp_connections.fetch_sub(1, Ordering::Relaxed);
            drop((slot, done));
        });
    }
}
