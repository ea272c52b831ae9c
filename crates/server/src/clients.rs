//! The node's live RESP connections, for `CLIENT LIST`, `CLIENT INFO` and `CLIENT KILL`, and each
//! one's pub/sub outbox.
//!
//! ```text
//!  resp connection ──register──► Clients { id → Arc<Client> } ◄── CLIENT LIST / KILL (any connection)
//!        │  name, library, protocol, last command          │
//!        │  (written by the connection itself)             └─ kill(): the connection's task ends
//!        └─ drop of its Registration: removed here and from every channel and pattern
//! ```
//!
//! A [`Client`] is shared between its connection's task, which writes its details as they change,
//! and whoever reads or kills it. Everything on it is behind a small lock or an atomic: a
//! `CLIENT LIST` never waits for a connection that is busy with a command.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::pubsub::Outbox;

/// Every RESP connection open on this node, by id.
#[derive(Debug, Default)]
pub struct Clients {
    open: Mutex<BTreeMap<u64, Arc<Client>>>,
}

impl Clients {
    /// Adds a connection; it stays listed until its [`Registration`] is dropped.
    pub fn register(&self, client: Arc<Client>) {
        self.open.lock().expect("clients lock").insert(client.id, client);
    }

    pub fn remove(&self, id: u64) {
        self.open.lock().expect("clients lock").remove(&id);
    }

    /// The open connections, by id (the order `CLIENT LIST` shows them in, as Redis's).
    pub fn list(&self) -> Vec<Arc<Client>> {
        self.open.lock().expect("clients lock").values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Client>> {
        self.open.lock().expect("clients lock").get(&id).cloned()
    }
}

/// One RESP connection as the other connections see it.
#[derive(Debug)]
pub struct Client {
    /// `CLIENT ID`: unique among this server's connections of every protocol.
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// The address it connected to (one of this node's).
    pub laddr: SocketAddr,
    /// The socket's file descriptor, as Redis shows it (-1 where there is none to show).
    pub fd: i64,
    created: Instant,
    /// Milliseconds after `created` when the last command came.
    last_command_ms: AtomicU64,
    details: Mutex<Details>,
    /// The channels and patterns it is subscribed to; changed only by [`crate::pubsub::PubSub`],
    /// under its lock, so that the two always agree.
    pub(crate) subscriptions: Mutex<Subscriptions>,
    /// Messages published to it, waiting to be written.
    pub outbox: Outbox,
    /// Mirrors of what the request loop checks for every request (RESP2 subscribers may send
    /// only some commands), readable without a lock.
    resp3: AtomicBool,
    subscribed: AtomicBool,
    killed: AtomicBool,
    kill: Notify,
}

/// What the connection says about itself, for CLIENT LIST.
#[derive(Debug, Clone, Default)]
struct Details {
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    /// The full name of the last command (`get`, `client|list`).
    last_command: &'static str,
    readonly: bool,
    /// The user it authenticated as; `None` is `default`.
    user: Option<String>,
}

/// A connection's subscriptions, in name order.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    pub(crate) channels: BTreeSet<Bytes>,
    pub(crate) patterns: BTreeSet<Bytes>,
}

impl Subscriptions {
    /// What Redis's confirmations count: channels and patterns together.
    pub(crate) fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

impl Client {
    /// `outbox_limit`: the bytes of pushed messages it may have waiting (`pubsub-output-limit`).
    pub fn new(id: u64, addr: SocketAddr, laddr: SocketAddr, fd: i64, outbox_limit: u64) -> Client {
        Client {
            id,
            addr,
            laddr,
            fd,
            created: Instant::now(),
            last_command_ms: AtomicU64::new(0),
            details: Mutex::new(Details { last_command: "NULL", ..Details::default() }),
            subscriptions: Mutex::default(),
            outbox: Outbox::new(outbox_limit),
            resp3: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
        }
    }

    /// Records a command: its full name, and now as the time of the last interaction (`idle`).
    pub fn command(&self, name: &'static str) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_command_ms.store(ms, Ordering::Relaxed);
        self.details().last_command = name;
    }

    pub fn name(&self) -> Option<Bytes> {
        self.details().name.clone()
    }

    pub fn set_name(&self, name: Option<Bytes>) {
        self.details().name = name.filter(|n| !n.is_empty());
    }

    /// `CLIENT SETINFO LIB-NAME` (`version` false) or `LIB-VER`; empty clears it.
    pub fn set_lib(&self, version: bool, value: Bytes) {
        let value = Some(value).filter(|v| !v.is_empty());
        let mut details = self.details();
        if version {
            details.lib_ver = value;
        } else {
            details.lib_name = value;
        }
    }

    pub fn set_resp3(&self, resp3: bool) {
        self.resp3.store(resp3, Ordering::Relaxed);
    }

    pub fn resp3(&self) -> bool {
        self.resp3.load(Ordering::Relaxed)
    }

    /// The user it authenticated as (`CLIENT LIST`'s `user=`).
    pub fn set_user(&self, user: &str) {
        self.details().user = Some(user.to_owned());
    }

    pub fn user(&self) -> String {
        self.details().user.clone().unwrap_or_else(|| turnstile_core::DEFAULT_USER.to_owned())
    }

    pub fn set_readonly(&self, readonly: bool) {
        self.details().readonly = readonly;
    }

    /// What `RESET` puts back: no name, no library, RESP2, read-write.
    pub fn reset(&self) {
        let mut details = self.details();
        let last_command = details.last_command;
        let user = details.user.take();
        *details = Details { last_command, user, ..Details::default() };
        self.set_resp3(false);
    }

    /// How many channels and patterns it is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.lock().expect("subscriptions lock").count()
    }

    /// Whether it is subscribed to anything: Redis's `P` flag, and `TYPE pubsub`.
    pub fn is_subscriber(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Called with its subscriptions' lock held, whenever they change.
    pub(crate) fn subscriptions_changed(&self, subscriptions: &Subscriptions) {
        self.subscribed.store(subscriptions.count() > 0, Ordering::Relaxed);
    }

    /// Asks its connection to close; the connection's task ends at its next step, whatever it
    /// was waiting for (a read, a blocked command, a write to a client that does not read).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_waiters();
    }

    /// Resolves once [`Client::kill`] was called.
    pub async fn killed(&self) {
        loop {
            // Made before the check: a kill between the check and the wait still wakes it.
            let notified = self.kill.notified();
            if self.killed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Its `CLIENT LIST` line (without the newline), in Redis's field order. Fields that
    /// describe Redis's own buffers (`qbuf`, `rbs` ...) are left out rather than made up;
    /// `oll` and `omem` are the messages and bytes waiting in its pub/sub outbox.
    pub fn line(&self) -> String {
        let now = self.created.elapsed();
        let idle_ms = u64::try_from(now.as_millis())
            .unwrap_or(u64::MAX)
            .saturating_sub(self.last_command_ms.load(Ordering::Relaxed));
        let (sub, psub) = {
            let subs = self.subscriptions.lock().expect("subscriptions lock");
            (subs.channels.len(), subs.patterns.len())
        };
        let (oll, omem) = self.outbox.pending();
        let details = self.details().clone();
        let mut flags = String::new();
        if sub + psub > 0 {
            flags.push('P');
        }
        if details.readonly {
            flags.push('r');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        let text =
            |b: &Option<Bytes>| b.as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
        let mut line = String::with_capacity(256);
        let _ = write!(
            line,
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={flags} db=0 sub={sub} psub={psub} \
             ssub=0 multi=-1 oll={oll} omem={omem} events=r cmd={} user={} redir=-1 resp={} \
             lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            text(&details.name),
            now.as_secs(),
            idle_ms / 1000,
            details.last_command,
            details.user.as_deref().unwrap_or(turnstile_core::DEFAULT_USER),
            if self.resp3() { 3 } else { 2 },
            text(&details.lib_name),
            text(&details.lib_ver),
        );
        line
    }

    fn details(&self) -> std::sync::MutexGuard<'_, Details> {
        self.details.lock().expect("client details lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client::new(7, "127.0.0.1:5000".parse().unwrap(), "127.0.0.1:7379".parse().unwrap(), 12, 1024)
    }

    #[test]
    fn a_new_connection_reads_as_redis_lists_it() {
        let c = client();
        assert_eq!(
            c.line(),
            "id=7 addr=127.0.0.1:5000 laddr=127.0.0.1:7379 fd=12 name= age=0 idle=0 flags=N db=0 sub=0 psub=0 \
             ssub=0 multi=-1 oll=0 omem=0 events=r cmd=NULL user=default redir=-1 resp=2 lib-name= lib-ver="
        );
    }

    #[test]
    fn details_show_in_the_line_and_reset_clears_them() {
        let c = client();
        c.set_name(Some(Bytes::from_static(b"worker-1")));
        c.set_lib(false, Bytes::from_static(b"redis-py"));
        c.set_lib(true, Bytes::from_static(b"5.0.1"));
        c.set_resp3(true);
        c.set_readonly(true);
        c.command("client|list");
        let mut subs = c.subscriptions.lock().unwrap();
        subs.channels.insert(Bytes::from_static(b"news"));
        c.subscriptions_changed(&subs);
        drop(subs);
        assert!(c.is_subscriber());
        let line = c.line();
        for field in [
            "name=worker-1 ",
            "flags=Pr ",
            "sub=1 psub=0 ",
            "cmd=client|list ",
            "resp=3 ",
            "lib-name=redis-py lib-ver=5.0.1",
        ] {
            assert!(line.contains(field), "{field:?} not in {line:?}");
        }
        c.reset();
        let line = c.line();
        assert!(
            line.contains("name= ") && line.contains("resp=2 ") && line.ends_with("lib-name= lib-ver="),
            "{line}"
        );
        assert!(line.contains("cmd=client|list "), "the last command stays: {line}");
    }

    #[tokio::test]
    async fn a_kill_before_or_during_the_wait_ends_it() {
        let c = Arc::new(client());
        c.kill();
        c.killed().await;
        let c = Arc::new(client());
        let waiter = tokio::spawn({
            let c = c.clone();
            async move { c.killed().await }
        });
        tokio::task::yield_now().await;
        c.kill();
        waiter.await.unwrap();
    }
}
