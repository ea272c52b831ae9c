//! Graceful shutdown: one signal that every task can wait on.
//!
//! The server holds the sender; each connection, the ticker and the effect router hold a
//! [`Shutdown`]. When the signal fires, listeners stop accepting, connections finish the request
//! in hand, close their sessions through the log, and the node stops last.

use tokio::sync::watch;

/// A handle that resolves once shutdown has begun.
#[derive(Debug, Clone)]
pub struct Shutdown {
    signal: watch::Receiver<bool>,
}

/// The sending side, held by whoever decides to stop.
#[derive(Debug)]
pub struct ShutdownTrigger {
    signal: watch::Sender<bool>,
}

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { signal: tx }, Shutdown { signal: rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.signal.send_replace(true);
    }
}

impl Shutdown {
    /// Waits until shutdown begins (at once if it already has, or if the trigger is gone).
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped: treat that as shutdown too.
        let _ = self.signal.wait_for(|stop| *stop).await;
    }
}
