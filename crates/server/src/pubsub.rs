//! This node's pub/sub subscribers, and the delivery of published messages to them.
//!
//! ```text
//!  PUBLISH (any node, a script, MULTI) ─► log ─► every node applies it ─► Effect::Message
//!        router.rs (each node) ─► PubSub::deliver ─┬─► channel subscribers' outboxes
//!                                                  └─► matching patterns' subscribers' outboxes
//!  connection task ◄── Outbox::ready ── writes `message` / `pmessage` frames
//! ```
//!
//! Subscriptions are not replicated: they belong to a connection, which lives on one node, and a
//! message goes to whoever is subscribed when that node applies it, at most once, as in Redis. So
//! the state machine keeps nothing and every node keeps its own subscribers here; a publish is a
//! log entry only so that every node sees it (and so that scripts and transactions can publish).
//!
//! **Late entries are dropped.** A node applies an entry long after it was published when it
//! replays its log at start, or catches up after a partition or a pause. Delivering then would
//! hand its subscribers a burst of stale messages, which Redis never does (it does not keep
//! them at all). So a message whose entry was stamped more than [`LATE_AFTER`] before this
//! node's clock is dropped and counted (`pubsub_messages_late`). Clocks of the nodes must agree
//! to within that much (they must for leases already, by far less).
//!
//! **A slow subscriber is disconnected**, as Redis does past its pub/sub output buffer's hard
//! limit: each connection has an [`Outbox`] of at most `pubsub-output-limit` bytes (32 MiB by
//! default, Redis's); a message that would pass it empties the outbox, kills the connection and
//! is counted (`pubsub_clients_disconnected`), so memory stays bounded whatever a client does.
//!
//! **`PUBLISH`'s reply** is the number of receivers on the node the publisher is connected to
//! (Redis Cluster answers the same way): the connection counts them here, with
//! [`PubSub::receivers`], when the log answers. The count is of subscribers at that moment, as
//! Redis's is of subscribers when it delivers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use turnstile_core::{Millis, Timestamp};
use turnstile_raft::Clock;
use turnstile_resp::glob;

use crate::clients::{Client, Subscriptions};
use crate::stats::{Stats, bump};

/// How old (by this node's clock against the entry's stamp) a published message may be and still
/// be delivered; see the module docs.
pub const LATE_AFTER: Millis = 5_000;

/// A subscription to a channel by name, or to every channel a pattern matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
}

/// Subscribers by channel and by pattern. One lock for all: subscribing and publishing are short
/// and memory-only.
#[derive(Debug)]
pub struct PubSub {
    subscribers: Mutex<Subscribers>,
    stats: Arc<Stats>,
    clock: Clock,
}

#[derive(Debug, Default)]
struct Subscribers {
    channels: HashMap<Bytes, BTreeMap<u64, Arc<Client>>>,
    patterns: BTreeMap<Bytes, BTreeMap<u64, Arc<Client>>>,
}

impl Subscribers {
    fn of(&mut self, kind: Kind) -> &mut dyn Names {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
        }
    }
}

/// The two maps of [`Subscribers`], used alike.
trait Names {
    fn add(&mut self, name: Bytes, client: &Arc<Client>);
    fn drop_one(&mut self, name: &Bytes, client: u64);
}

macro_rules! names {
    ($map:ty) => {
        impl Names for $map {
            fn add(&mut self, name: Bytes, client: &Arc<Client>) {
                self.entry(name).or_default().insert(client.id, client.clone());
            }

            fn drop_one(&mut self, name: &Bytes, client: u64) {
                if let Some(clients) = self.get_mut(name) {
                    clients.remove(&client);
                    if clients.is_empty() {
                        self.remove(name);
                    }
                }
            }
        }
    };
}
names!(HashMap<Bytes, BTreeMap<u64, Arc<Client>>>);
names!(BTreeMap<Bytes, BTreeMap<u64, Arc<Client>>>);

fn names_of(subs: &mut Subscriptions, kind: Kind) -> &mut std::collections::BTreeSet<Bytes> {
    match kind {
        Kind::Channel => &mut subs.channels,
        Kind::Pattern => &mut subs.patterns,
    }
}

impl PubSub {
    /// `clock` is the node's: what published messages' stamps are compared with.
    pub fn new(stats: Arc<Stats>, clock: Clock) -> PubSub {
        PubSub { subscribers: Mutex::default(), stats, clock }
    }

    /// Subscribes `client` to `name`; returns how many channels and patterns it then has.
    pub fn subscribe(&self, client: &Arc<Client>, kind: Kind, name: Bytes) -> usize {
        let mut all = self.lock();
        let mut subs = client.subscriptions.lock().expect("subscriptions lock");
        if names_of(&mut subs, kind).insert(name.clone()) {
            all.of(kind).add(name, client);
            client.subscriptions_changed(&subs);
        }
        subs.count()
    }

    /// Unsubscribes `client` from `name` (nothing if it was not subscribed); returns how many
    /// channels and patterns it then has.
    pub fn unsubscribe(&self, client: &Arc<Client>, kind: Kind, name: &Bytes) -> usize {
        let mut all = self.lock();
        let mut subs = client.subscriptions.lock().expect("subscriptions lock");
        if names_of(&mut subs, kind).remove(name) {
            all.of(kind).drop_one(name, client.id);
            client.subscriptions_changed(&subs);
        }
        subs.count()
    }

    /// The channels (or patterns) `client` is subscribed to, in name order.
    pub fn subscribed(&self, client: &Client, kind: Kind) -> Vec<Bytes> {
        let mut subs = client.subscriptions.lock().expect("subscriptions lock");
        names_of(&mut subs, kind).iter().cloned().collect()
    }

    /// Drops every subscription of a connection that is closing.
    pub fn forget(&self, client: &Client) {
        let mut all = self.lock();
        let mut subs = client.subscriptions.lock().expect("subscriptions lock");
        for channel in std::mem::take(&mut subs.channels) {
            all.channels.drop_one(&channel, client.id);
        }
        for pattern in std::mem::take(&mut subs.patterns) {
            all.patterns.drop_one(&pattern, client.id);
        }
        client.subscriptions_changed(&subs);
    }

    /// Hands a message published at `at` (its entry's stamp) to this node's subscribers: those of
    /// its channel, then those of each matching pattern (a client subscribed both ways gets it
    /// twice, as in Redis). Returns how many outboxes took it; 0 for a late message.
    pub fn deliver(&self, channel: &Bytes, message: &Bytes, at: Timestamp) -> usize {
        let counters = &self.stats.counters;
        if self.clock.now().saturating_sub(at) > LATE_AFTER {
            bump(&counters.pubsub_messages_late);
            return 0;
        }
        let all = self.lock();
        let mut delivered = 0;
        let mut give = |client: &Arc<Client>, pattern: Option<&Bytes>| match client.outbox.push(
            pattern.cloned(),
            channel.clone(),
            message.clone(),
        ) {
            Pushed::Queued => delivered += 1,
            Pushed::Overflowed => {
                bump(&counters.pubsub_clients_disconnected);
                tracing::info!(
                    id = client.id,
                    addr = %client.addr,
                    limit = client.outbox.limit(),
                    "closing a subscriber that reads too slowly (pubsub-output-limit)"
                );
                client.kill();
            }
            Pushed::Dropped => {}
        };
        if let Some(clients) = all.channels.get(channel) {
            clients.values().for_each(|client| give(client, None));
        }
        for (pattern, clients) in &all.patterns {
            if glob::matches(pattern, channel, false) {
                clients.values().for_each(|client| give(client, Some(pattern)));
            }
        }
        if delivered > 0 {
            counters.pubsub_messages.fetch_add(delivered as u64, Ordering::Relaxed);
        }
        delivered
    }

    /// How many would receive a message on `channel` now: `PUBLISH`'s reply.
    pub fn receivers(&self, channel: &[u8]) -> usize {
        let all = self.lock();
        let direct = all.channels.get(channel).map_or(0, BTreeMap::len);
        let by_pattern: usize = all
            .patterns
            .iter()
            .filter(|(pattern, _)| glob::matches(pattern, channel, false))
            .map(|(_, clients)| clients.len())
            .sum();
        direct + by_pattern
    }

    /// `PUBSUB CHANNELS [pattern]`: channels with a subscriber here, in name order.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let all = self.lock();
        let mut names: Vec<Bytes> = all
            .channels
            .keys()
            .filter(|name| pattern.is_none_or(|p| glob::matches(p, name, false)))
            .cloned()
            .collect();
        names.sort_unstable();
        names
    }

    /// `PUBSUB NUMSUB`: subscribers of one channel here (patterns not counted).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.lock().channels.get(channel).map_or(0, BTreeMap::len)
    }

    /// `PUBSUB NUMPAT`: distinct patterns subscribed to here.
    pub fn numpat(&self) -> usize {
        self.lock().patterns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().expect("pubsub lock")
    }
}

/// One message waiting for its subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The pattern it matched, for a pattern subscription (a `pmessage`).
    pub pattern: Option<Bytes>,
    pub channel: Bytes,
    pub message: Bytes,
}

impl Message {
    /// What it costs in the outbox: its bytes plus the framing around them, about.
    fn size(&self) -> u64 {
        let bytes = self.pattern.as_ref().map_or(0, Bytes::len) + self.channel.len() + self.message.len();
        bytes as u64 + 48
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// It would have passed the limit: the outbox was emptied and will take nothing more; the
    /// connection must be closed.
    Overflowed,
    /// The outbox overflowed before: its connection is closing.
    Dropped,
}

/// The messages published to one connection and not yet written to it, at most `limit` bytes.
#[derive(Debug)]
pub struct Outbox {
    pending: Mutex<Pending>,
    /// Woken (one permit kept) when a message is queued.
    ready: Notify,
    limit: u64,
}

#[derive(Debug, Default)]
struct Pending {
    messages: VecDeque<Message>,
    bytes: u64,
    overflowed: bool,
}

impl Outbox {
    pub fn new(limit: u64) -> Outbox {
        Outbox { pending: Mutex::default(), ready: Notify::new(), limit }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn push(&self, pattern: Option<Bytes>, channel: Bytes, message: Bytes) -> Pushed {
        let message = Message { pattern, channel, message };
        let mut pending = self.pending.lock().expect("outbox lock");
        if pending.overflowed {
            return Pushed::Dropped;
        }
        let size = message.size();
        if pending.bytes.saturating_add(size) > self.limit {
            *pending = Pending { overflowed: true, ..Pending::default() };
            return Pushed::Overflowed;
        }
        pending.bytes += size;
        pending.messages.push_back(message);
        drop(pending);
        self.ready.notify_one();
        Pushed::Queued
    }

    /// Resolves when messages may be waiting (at once if some were queued since the last take).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes every waiting message, oldest first.
    pub fn take(&self) -> VecDeque<Message> {
        let mut pending = self.pending.lock().expect("outbox lock");
        pending.bytes = 0;
        std::mem::take(&mut pending.messages)
    }

    /// How many messages and bytes wait (`oll`, `omem` in CLIENT LIST).
    pub fn pending(&self) -> (usize, u64) {
        let pending = self.pending.lock().expect("outbox lock");
        (pending.messages.len(), pending.bytes)
    }
}

#[cfg(test)]
mod tests {
    use turnstile_raft::ManualClock;

    use super::*;

    fn b(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    fn setup() -> (PubSub, ManualClock, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let (clock, hand) = Clock::manual(10_000);
        (PubSub::new(stats.clone(), clock), hand, stats)
    }

    fn client(id: u64, limit: u64) -> Arc<Client> {
        let addr = format!("127.0.0.1:{}", 5000 + id).parse().unwrap();
        Arc::new(Client::new(id, addr, "127.0.0.1:7379".parse().unwrap(), -1, limit))
    }

    fn taken(client: &Client) -> Vec<Message> {
        client.outbox.take().into_iter().collect()
    }

    #[test]
    fn counts_run_over_channels_and_patterns_together() {
        let (pubsub, _, _) = setup();
        let c = client(1, 1 << 20);
        assert_eq!(pubsub.subscribe(&c, Kind::Channel, b("a")), 1);
        assert_eq!(pubsub.subscribe(&c, Kind::Channel, b("a")), 1, "twice is once");
        assert_eq!(pubsub.subscribe(&c, Kind::Pattern, b("a*")), 2);
        assert_eq!(pubsub.unsubscribe(&c, Kind::Channel, &b("zzz")), 2, "not subscribed: unchanged");
        assert_eq!(pubsub.unsubscribe(&c, Kind::Channel, &b("a")), 1);
        assert_eq!(pubsub.subscribed(&c, Kind::Pattern), vec![b("a*")]);
    }

    #[test]
    fn a_message_reaches_channel_and_pattern_subscribers() {
        let (pubsub, _, stats) = setup();
        let (one, two, other) = (client(1, 1 << 20), client(2, 1 << 20), client(3, 1 << 20));
        pubsub.subscribe(&one, Kind::Channel, b("news.sport"));
        pubsub.subscribe(&two, Kind::Pattern, b("news.*"));
        pubsub.subscribe(&two, Kind::Channel, b("news.sport"));
        pubsub.subscribe(&other, Kind::Channel, b("weather"));
        assert_eq!(pubsub.receivers(b"news.sport"), 3);
        assert_eq!(pubsub.deliver(&b("news.sport"), &b("goal"), 10_000), 3);
        let plain = Message { pattern: None, channel: b("news.sport"), message: b("goal") };
        assert_eq!(taken(&one), vec![plain.clone()]);
        assert_eq!(taken(&two), vec![plain.clone(), Message { pattern: Some(b("news.*")), ..plain }]);
        assert_eq!(taken(&other), vec![]);
        assert_eq!(stats.counters.pubsub_messages.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn pubsub_introspection_is_of_this_node() {
        let (pubsub, _, _) = setup();
        let (one, two) = (client(1, 1 << 20), client(2, 1 << 20));
        pubsub.subscribe(&one, Kind::Channel, b("b"));
        pubsub.subscribe(&two, Kind::Channel, b("b"));
        pubsub.subscribe(&two, Kind::Channel, b("a"));
        pubsub.subscribe(&one, Kind::Pattern, b("x*"));
        pubsub.subscribe(&two, Kind::Pattern, b("x*"));
        assert_eq!(pubsub.channels(None), vec![b("a"), b("b")]);
        assert_eq!(pubsub.channels(Some(b"b*")), vec![b("b")]);
        assert_eq!((pubsub.numsub(b"b"), pubsub.numsub(b"x1"), pubsub.numpat()), (2, 0, 1));
        pubsub.forget(&two);
        assert_eq!(pubsub.channels(None), vec![b("b")]);
        assert_eq!((pubsub.numsub(b"b"), pubsub.numpat()), (1, 1));
        pubsub.forget(&one);
        assert_eq!((pubsub.channels(None), pubsub.numpat()), (vec![], 0));
        assert_eq!(one.subscription_count(), 0);
    }

    #[test]
    fn late_messages_are_dropped_and_counted() {
        let (pubsub, hand, stats) = setup();
        let c = client(1, 1 << 20);
        pubsub.subscribe(&c, Kind::Channel, b("c"));
        hand.set(10_000 + LATE_AFTER);
        assert_eq!(pubsub.deliver(&b("c"), &b("just in time"), 10_000), 1);
        hand.set(10_001 + LATE_AFTER);
        assert_eq!(pubsub.deliver(&b("c"), &b("late"), 10_000), 0);
        assert_eq!(taken(&c).len(), 1);
        assert_eq!(stats.counters.pubsub_messages_late.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_subscriber_past_its_outbox_limit_is_killed_and_its_outbox_emptied() {
        let (pubsub, _, stats) = setup();
        // Each message costs its 301 bytes and 48 of framing: three fit in 1100 bytes, not four.
        let slow = client(1, 1100);
        let fast = client(2, 1 << 20);
        pubsub.subscribe(&slow, Kind::Channel, b("c"));
        pubsub.subscribe(&fast, Kind::Channel, b("c"));
        let body = Bytes::from(vec![b'x'; 300]);
        for _ in 0..3 {
            assert_eq!(pubsub.deliver(&b("c"), &body, 10_000), 2);
        }
        assert_eq!(slow.outbox.pending().0, 3);
        assert_eq!(pubsub.deliver(&b("c"), &body, 10_000), 1, "the fourth would pass 1100 bytes");
        assert_eq!(slow.outbox.pending(), (0, 0), "emptied: memory goes back at once");
        assert_eq!(pubsub.deliver(&b("c"), &body, 10_000), 1);
        assert_eq!(slow.outbox.pending(), (0, 0), "takes nothing more");
        assert_eq!(stats.counters.pubsub_clients_disconnected.load(Ordering::Relaxed), 1, "counted once");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(slow.killed());
        assert_eq!(fast.outbox.pending().0, 5);
    }

    #[test]
    fn a_pattern_that_would_blow_up_a_naive_matcher_is_cheap() {
        let (pubsub, _, _) = setup();
        let c = client(1, 1 << 20);
        pubsub.subscribe(&c, Kind::Pattern, Bytes::from("*a".repeat(50) + "b"));
        assert_eq!(pubsub.receivers("a".repeat(5000).as_bytes()), 0);
    }
}
