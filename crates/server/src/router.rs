//! Routes the state machine's effects to the connections they concern.
//!
//! Effects arrive in log order from the node, inside apply on the log's thread ([`Router::install`]). An effect that names a session goes to the channel
//! that session's connection registered when it opened the session, so a connection never misses
//! the wake-up for a wait it started: the channel exists before the wait does. Effects that name
//! no session (leases running out) only update counters. A published message goes to this node's
//! subscribers ([`PubSub::deliver`]), whichever node it was published on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use turnstile_core::{Effect, Reply, SessionId, Taker};

use crate::auth::Users;
use crate::pubsub::PubSub;
use crate::shutdown::Shutdown;
use crate::stats::{Stats, bump};

/// The reply a wait gets when `effect` settles it; `None` when the effect is about another wait.
pub fn settled(effect: Effect, wait_id: u64) -> Option<Reply> {
    match effect {
        Effect::Granted { wait_id: w, token, lease, .. } if w == wait_id => {
            Some(Reply::Granted { token, lease })
        }
        Effect::WaitTimedOut { wait_id: w, .. } | Effect::PopTimedOut { wait_id: w, .. } if w == wait_id => {
            Some(Reply::Nil)
        }
        Effect::Delivered { to: Taker::Pop { wait_id: w }, deliveries, .. } if w == wait_id => {
            Some(Reply::Deliveries(deliveries))
        }
        Effect::ListWaitDone { wait_id: w, reply, .. } if w == wait_id => Some(reply),
        _ => None,
    }
}

/// Session → the connection that serves it, on this node, under which binding (the open or
/// resume that bound it there: a connection that lost its session to a resume on this same node
/// must not take the new connection's registration with it when it ends).
#[derive(Debug)]
pub struct Router {
    sessions: Mutex<HashMap<SessionId, (u64, mpsc::UnboundedSender<Effect>)>>,
    /// Where grants after a wait, waits timed out and leases run out are counted.
    stats: Arc<Stats>,
    pubsub: Arc<PubSub>,
    users: Arc<Users>,
}

impl Router {
    pub fn new(stats: Arc<Stats>, pubsub: Arc<PubSub>, users: Arc<Users>) -> Router {
        Router { sessions: Mutex::default(), stats, pubsub, users }
    }

    /// Registers a session's connection under `binding`, in place of any earlier one; effects
    /// for it arrive on the returned receiver.
    pub fn register(&self, session: SessionId, binding: u64) -> mpsc::UnboundedReceiver<Effect> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.sessions.lock().expect("router lock").insert(session, (binding, tx));
        rx
    }

    /// Forgets a session's connection, if it is still the one registered under `binding`.
    pub fn unregister(&self, session: SessionId, binding: u64) {
        let mut sessions = self.sessions.lock().expect("router lock");
        if sessions.get(&session).is_some_and(|(b, _)| *b == binding) {
            sessions.remove(&session);
        }
    }

    /// Routes one effect, on the log's thread inside apply (see [`Router::install`]); a published
    /// message is handed back instead, to be delivered off that thread (its fan-out to every
    /// subscriber is the one effect whose cost grows with the clients).
    fn route_now(&self, effect: Effect) -> Option<Effect> {
        if matches!(effect, Effect::Message { .. }) {
            return Some(effect);
        }
        self.route(effect);
        None
    }

    fn route(&self, effect: Effect) {
        let counters = &self.stats.counters;
        let session = match &effect {
            Effect::Granted { session, .. } => {
                bump(&counters.lock_grants);
                *session
            }
            Effect::WaitTimedOut { session, .. } => {
                bump(&counters.lock_wait_timeouts);
                *session
            }
            Effect::Delivered { session, .. }
            | Effect::PopTimedOut { session, .. }
            | Effect::ConsumerCancelled { session, .. }
            | Effect::ListWaitDone { session, .. } => *session,
            Effect::HoldExpired { .. } => {
                bump(&counters.lock_leases_expired);
                return;
            }
            Effect::DeliveryExpired { .. } => {
                bump(&counters.delivery_leases_expired);
                return;
            }
            // Pub/sub:
            Effect::Message { channel, message, at } => {
                self.pubsub.deliver(channel, message, *at);
                return;
            }
            Effect::UsersChanged => {
                self.users.mark_changed();
                return;
            }
        };
        let sessions = self.sessions.lock().expect("router lock");
        match sessions.get(&session) {
            // A send fails only when the connection is gone; closing its session cleans up.
            Some((_, tx)) => drop(tx.send(effect)),
            None => tracing::debug!(%session, ?effect, "effect for a session not served here"),
        }
    }

    /// Has the node hand every applied entry's effects to this router inside apply, so a wait's
    /// outcome (the grant after a release, a delivery after a push) reaches its connection's
    /// channel before the entry's own proposers get their replies — with no task and no wake-up
    /// in between. Published messages go to a task that fans them out until shutdown begins.
    pub fn install(
        self: &Arc<Self>,
        node: &turnstile_raft::Node,
        mut shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        let (later, mut messages) = mpsc::unbounded_channel();
        let router = Arc::clone(self);
        let installed = node.route_effects(Box::new(move |_, effects| {
            for message in effects.into_iter().filter_map(|e| router.route_now(e)) {
                // The receiver is gone only at shutdown; messages are then moot.
                let _ = later.send(message);
            }
        }));
        if let Err(e) = installed {
            tracing::error!(error = %e, "effects are not routed");
        }
        let router = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    message = messages.recv() => match message {
                        Some(message) => router.route(message),
                        None => return,
                    },
                    () = shutdown.recv() => return,
                }
            }
        })
    }
}
