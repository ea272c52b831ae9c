//! Snapshots: the state's primary data as bytes, and a state rebuilt from them.
//!
//! ```text
//!  snapshot ─► [u8 version = 8][postcard(Image)][messages of queue 1]…[messages of queue n][Cluster]
//!              [Redis][Acl]
//!              Image: clock, applied index, last token, last id,
//!                     sessions (when opened, host, secret, binding), hosts (expiry, timeout),
//!                     locks (holds, lines of waiters),
//!                     queues (id, config, totals, takers, waiting pops, consumers, dedup ids),
//!                     keys, exchanges and bindings, credit pools (limits)
//!              messages: postcard sequence of (id, message), in id order, in the order of the
//!                     Image's queues
//!              Cluster: what the cluster itself keeps (retired node ids); absent in version 5
//!              Redis: the Lua script cache (sha1 → source) and the blocking list pops waiting;
//!                     absent before version 7
//!              Acl: the users ACL SETUSER made, the user of each session, hold and delivery;
//!                     absent before version 8
//!
//!  restore  ─► decode the Image, then each queue's messages straight into their final form:
//!              payloads are `Bytes` slices of the one snapshot buffer (no copy, no allocation each)
//!           ─► rebuild every index from the data: holds by token, waits, owners' waits, what each
//!              session owns, each queue's ready / eligible / in-flight sets, groups and counts,
//!              and the timers — sorted, built in bulk
//! ```
//!
//! Indexes are not stored: each is a function of the data above (the same one `check_invariants`
//! checks), and building them in bulk costs less than decoding them entry by entry. A restored
//! state is equal (`==`) to the one snapshotted, indexes included; the tests check exactly that.
//!
//! Zero copy has a price: every payload restored from a snapshot shares its buffer, so the buffer
//! is freed only when the last of those messages is gone (acked, expired, purged).

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use std::fmt;

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::exchange::Exchanges;
use crate::kv::{KvEntry, Value};
use crate::list::ListWaiter;
use crate::lock::Resource;
use crate::queue::{CreditPoolState, Message, Queue};
use crate::session::{Host, HostId, Session};
use crate::timer::{Timer, Timers};
use crate::{MsgId, QueueId, SessionId, State, Timestamp};

/// The format written by [`State::snapshot`]; [`State::restore`] reads only this one.
/// 2: the whole state, indexes included. 3: primary data only, indexes rebuilt on restore, each
/// queue's messages inside its image. 4: the same, messages in their own sections after the image.
/// 5: exchanges and bindings, credit pools, and the queue and consumer fields AMQP added.
/// 6: hosts, and each session's host, secret and binding; the [`ClusterImage`] after the
/// messages. 7: typed keys (strings, hashes, lists) with their versions, and the [`RedisImage`]
/// last. 8: the [`AclImage`] last (users, and who owns each session, hold and delivery).
/// Versions 5 to 7 are still read (version 5's sessions are given to
/// [`crate::LEGACY_HOST`], and there are no retired nodes; their keys are strings of version 0),
/// so a node upgraded in place restarts from the snapshot the old binary wrote.
pub(crate) const SNAPSHOT_VERSION: u8 = 8;

/// The oldest version [`State::restore`] reads.
const OLDEST_READABLE: u8 = 5;

/// The cluster's own records, after the messages (version 6 on).
#[derive(Serialize, Deserialize)]
struct ClusterImage<'a> {
    retired_nodes: Cow<'a, std::collections::BTreeSet<u64>>,
}

/// What the Redis commands keep besides keys, after the cluster's records (version 7 on): the
/// script cache, and the blocking list pops waiting (their lines and timers are rebuilt).
#[derive(Serialize, Deserialize)]
struct RedisImage<'a> {
    scripts: Cow<'a, BTreeMap<String, Bytes>>,
    list_waits: Cow<'a, BTreeMap<u64, ListWaiter>>,
}

/// The users' records, last (version 8 on); see `acl.rs`.
#[derive(Serialize, Deserialize)]
struct AclImage<'a> {
    layer: Cow<'a, BTreeMap<String, Option<crate::User>>>,
    session_users: Cow<'a, BTreeMap<SessionId, String>>,
    token_users: Cow<'a, BTreeMap<u64, String>>,
}

/// A key as versions 5 and 6 wrote it: a string, no version.
#[derive(Clone, Serialize, Deserialize)]
struct KvEntryV6 {
    value: Bytes,
    expires_at: Option<Timestamp>,
}

/// Version 6's keys as this version's: strings, last changed before any index this log holds.
fn upgrade_keys(keys: BTreeMap<String, KvEntryV6>) -> Cow<'static, BTreeMap<String, KvEntry>> {
    let upgrade = |e: KvEntryV6| KvEntry { value: Value::Str(e.value), expires_at: e.expires_at, version: 0 };
    Cow::Owned(keys.into_iter().map(|(k, e)| (k, upgrade(e))).collect())
}

/// The image as version 6 wrote it: this version's, with string keys.
#[derive(Deserialize)]
struct ImageV6<'a> {
    clock: Timestamp,
    applied_index: u64,
    last_token: u64,
    last_id: u64,
    sessions: Cow<'a, BTreeMap<SessionId, Session>>,
    hosts: Cow<'a, BTreeMap<HostId, Host>>,
    resources: Cow<'a, BTreeMap<String, Resource>>,
    #[serde(borrow)]
    queues: Vec<QueueImage<'a>>,
    keys: BTreeMap<String, KvEntryV6>,
    exchanges: Cow<'a, Exchanges>,
    pools: Cow<'a, BTreeMap<(SessionId, u64), CreditPoolState>>,
}

impl<'a> ImageV6<'a> {
    fn upgrade(self) -> Image<'a> {
        Image {
            clock: self.clock,
            applied_index: self.applied_index,
            last_token: self.last_token,
            last_id: self.last_id,
            sessions: self.sessions,
            hosts: self.hosts,
            resources: self.resources,
            queues: self.queues,
            keys: upgrade_keys(self.keys),
            exchanges: self.exchanges,
            pools: self.pools,
        }
    }
}

/// A session as version 5 wrote it: when it opened, nothing else.
#[derive(Clone, Serialize, Deserialize)]
struct SessionV5 {
    opened_at: Timestamp,
}

/// The image as version 5 wrote it: no hosts, sessions without host, secret or binding.
#[derive(Deserialize)]
struct ImageV5<'a> {
    clock: Timestamp,
    applied_index: u64,
    last_token: u64,
    last_id: u64,
    sessions: BTreeMap<SessionId, SessionV5>,
    resources: Cow<'a, BTreeMap<String, Resource>>,
    #[serde(borrow)]
    queues: Vec<QueueImage<'a>>,
    keys: BTreeMap<String, KvEntryV6>,
    exchanges: Cow<'a, Exchanges>,
    pools: Cow<'a, BTreeMap<(SessionId, u64), CreditPoolState>>,
}

impl<'a> ImageV5<'a> {
    /// As this version's image: each session held by [`crate::LEGACY_HOST`] (which does not
    /// expire: see there).
    fn upgrade(self) -> Image<'a> {
        let sessions: BTreeMap<SessionId, Session> = self
            .sessions
            .into_iter()
            .map(|(id, s)| {
                let session = Session {
                    opened_at: s.opened_at,
                    host: crate::LEGACY_HOST,
                    binding: id.0,
                    ..Session::default()
                };
                (id, session)
            })
            .collect();
        let hosts = if sessions.is_empty() {
            BTreeMap::new()
        } else {
            let expires_at = self.clock.saturating_add(crate::LEGACY_TIMEOUT);
            let host = Host { expires_at, timeout: crate::LEGACY_TIMEOUT, ..Host::default() };
            BTreeMap::from([(crate::LEGACY_HOST, host)])
        };
        Image {
            clock: self.clock,
            applied_index: self.applied_index,
            last_token: self.last_token,
            last_id: self.last_id,
            sessions: Cow::Owned(sessions),
            hosts: Cow::Owned(hosts),
            resources: self.resources,
            queues: self.queues,
            keys: upgrade_keys(self.keys),
            exchanges: self.exchanges,
            pools: self.pools,
        }
    }
}

/// A snapshot that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "snapshot format version {0} is not supported (this build reads versions {OLDEST_READABLE} to {SNAPSHOT_VERSION})"
    )]
    Version(u8),
    /// Written by a later build: a rolling upgrade must not hand a new node's state to an old one.
    #[error(
        "snapshot written by a newer format (state version {0} > {SNAPSHOT_VERSION}, the newest this build \
         reads); it needs a newer turnstile"
    )]
    Newer(u8),
    #[error("snapshot is empty")]
    Empty,
    #[error("snapshot is corrupt: {0}")]
    Decode(#[from] postcard::Error),
    /// It decoded, but its parts do not fit together (e.g. a hold of a session that is not there).
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// What a snapshot holds. Written from borrowed parts of a [`State`], read back as owned ones
/// (`Cow`), except message payloads, which stay borrowed from the snapshot buffer.
#[derive(Serialize, Deserialize)]
struct Image<'a> {
    clock: Timestamp,
    applied_index: u64,
    last_token: u64,
    last_id: u64,
    sessions: Cow<'a, BTreeMap<SessionId, Session>>,
    hosts: Cow<'a, BTreeMap<HostId, Host>>,
    resources: Cow<'a, BTreeMap<String, Resource>>,
    #[serde(borrow)]
    queues: Vec<QueueImage<'a>>,
    keys: Cow<'a, BTreeMap<String, KvEntry>>,
    exchanges: Cow<'a, Exchanges>,
    /// Each pool's limit; its consumers and count are rebuilt from the queues.
    pools: Cow<'a, BTreeMap<(SessionId, u64), CreditPoolState>>,
}

/// One queue's own fields (those that are not indexes). Its messages follow the Image.
#[derive(Serialize, Deserialize)]
struct QueueImage<'a> {
    id: QueueId,
    queue: Cow<'a, Queue>,
}

/// A queue's messages, written as a sequence of `(id, message)` in id order.
struct Messages<'a>(&'a BTreeMap<MsgId, Message>);

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter())
    }
}

/// Reads a queue's messages back, each payload a slice of `source` (the buffer being decoded).
struct MessagesSeed<'s> {
    source: &'s Bytes,
}

/// The fewest bytes one encoded message takes: bounds what a length field can make us allocate.
const MIN_MESSAGE_BYTES: usize = 10;

impl<'de> DeserializeSeed<'de> for MessagesSeed<'_> {
    type Value = Vec<(MsgId, Message)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for MessagesSeed<'_> {
    type Value = Vec<(MsgId, Message)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of (id, message)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let most = self.source.len() / MIN_MESSAGE_BYTES;
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(most));
        while let Some((id, message)) = seq.next_element::<(MsgId, Message<Borrowed<'de>>)>()? {
            messages.push((id, message.map_payload(|p| self.source.slice_ref(p.0))));
        }
        Ok(messages)
    }
}

/// Bytes read in place from the snapshot buffer (written as `Bytes` writes itself: a length, then
/// the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Borrowed<'a>(&'a [u8]);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(deserializer).map(Borrowed)
    }
}

/// Timers gathered while indexes are rebuilt, set in one bulk build at the end.
pub(crate) type TimerList = Vec<(Timestamp, Timer)>;

impl State {
    /// A copy holding what [`State::snapshot`] writes and nothing else: the indexes a snapshot
    /// leaves out (rebuilt on restore) stay empty, and message payloads are shared, not copied.
    /// Its `snapshot()` bytes equal this state's; it is for that alone (not a working state).
    /// Taking it is what a snapshot costs the writes that wait for it; serializing the copy can
    /// then happen elsewhere.
    pub fn snapshot_copy(&self) -> State {
        State {
            clock: self.clock,
            applied_index: self.applied_index,
            last_token: self.last_token,
            last_id: self.last_id,
            // What each session owns, and each host's sessions, are rebuilt on restore.
            sessions: self.sessions.iter().map(|(&id, s)| (id, s.snapshot_copy())).collect(),
            hosts: self
                .hosts
                .iter()
                .map(|(&id, h)| {
                    (id, Host { expires_at: h.expires_at, timeout: h.timeout, ..Host::default() })
                })
                .collect(),
            resources: self.resources.clone(),
            queues: self.queues.iter().map(|(&id, q)| (id, q.snapshot_copy())).collect(),
            keys: self.keys.clone(),
            key_bytes: self.key_bytes,
            scripts: self.scripts.clone(),
            list_waits: self.list_waits.clone(),
            exchanges: self.exchanges.clone(),
            pools: self.pools.clone(),
            retired_nodes: self.retired_nodes.clone(),
            acl_layer: self.acl_layer.clone(),
            session_users: self.session_users.clone(),
            token_users: self.token_users.clone(),
            ..State::default()
        }
    }

    /// The state's primary data as bytes: a version byte, then postcard (see the module docs).
    pub fn snapshot(&self) -> Vec<u8> {
        // Sized up front for what dominates (payloads, keys, a few dozen bytes per message), and
        // written in place: no reallocations, no second copy.
        let messages: usize = self.queues.values().map(Queue::len).sum();
        let estimate = usize::try_from(self.payload_bytes()).unwrap_or(0) + 64 * messages + 4096;
        // Serializing plain data into a Vec cannot fail.
        self.write_snapshot(Vec::with_capacity(estimate)).expect("state serializes")
    }

    /// Writes [`State::snapshot`]'s bytes to `out` as they are made, and hands `out` back: for a
    /// copy that streams somewhere (a backup sent over HTTP) instead of being held whole. The only
    /// errors are `out`'s.
    pub fn write_snapshot<W: std::io::Write>(&self, mut out: W) -> std::io::Result<W> {
        let image = Image {
            clock: self.clock,
            applied_index: self.applied_index,
            last_token: self.last_token,
            last_id: self.last_id,
            sessions: Cow::Borrowed(&self.sessions),
            hosts: Cow::Borrowed(&self.hosts),
            resources: Cow::Borrowed(&self.resources),
            queues: self.queues.iter().map(|(&id, q)| QueueImage { id, queue: Cow::Borrowed(q) }).collect(),
            keys: Cow::Borrowed(&self.keys),
            exchanges: Cow::Borrowed(&self.exchanges),
            pools: Cow::Borrowed(&self.pools),
        };
        out.write_all(&[SNAPSHOT_VERSION])?;
        // postcard reports a failed write as a full buffer, without the cause; the writer may keep it.
        let failed = |e: postcard::Error| std::io::Error::other(format!("writing the snapshot: {e}"));
        let mut out = postcard::to_io(&image, out).map_err(failed)?;
        for q in self.queues.values() {
            out = postcard::to_io(&Messages(&q.messages), out).map_err(failed)?;
        }
        let cluster = ClusterImage { retired_nodes: Cow::Borrowed(&self.retired_nodes) };
        let out = postcard::to_io(&cluster, out).map_err(failed)?;
        let redis =
            RedisImage { scripts: Cow::Borrowed(&self.scripts), list_waits: Cow::Borrowed(&self.list_waits) };
        let out = postcard::to_io(&redis, out).map_err(failed)?;
        let acl = AclImage {
            layer: Cow::Borrowed(&self.acl_layer),
            session_users: Cow::Borrowed(&self.session_users),
            token_users: Cow::Borrowed(&self.token_users),
        };
        postcard::to_io(&acl, out).map_err(failed)
    }

    /// The state a [`State::snapshot`] describes, indexes rebuilt. Message payloads are slices of
    /// `bytes` (no copy): keep the buffer in a `Bytes` that owns it, e.g. `Bytes::from(vec)`.
    pub fn restore(bytes: Bytes) -> Result<State, SnapshotError> {
        let (version, body) = match bytes.split_first() {
            None => return Err(SnapshotError::Empty),
            Some((&v, body)) if (OLDEST_READABLE..=SNAPSHOT_VERSION).contains(&v) => (v, body),
            Some((&v, _)) if v > SNAPSHOT_VERSION => return Err(SnapshotError::Newer(v)),
            Some((&v, _)) => return Err(SnapshotError::Version(v)),
        };
        let (image, mut rest): (Image<'_>, _) = match version {
            5 => {
                let (old, rest): (ImageV5<'_>, _) = postcard::take_from_bytes(body)?;
                (old.upgrade(), rest)
            }
            6 => {
                let (old, rest): (ImageV6<'_>, _) = postcard::take_from_bytes(body)?;
                (old.upgrade(), rest)
            }
            _ => postcard::take_from_bytes(body)?,
        };
        let mut state = State {
            clock: image.clock,
            applied_index: image.applied_index,
            last_token: image.last_token,
            last_id: image.last_id,
            sessions: image.sessions.into_owned(),
            hosts: image.hosts.into_owned(),
            resources: image.resources.into_owned(),
            keys: image.keys.into_owned(),
            exchanges: image.exchanges.into_owned(),
            pools: image.pools.into_owned(),
            ..State::default()
        };
        state.exchanges.rebuild_index();
        let mut timers = TimerList::new();
        state.rebuild_host_indexes(&mut timers).map_err(SnapshotError::Inconsistent)?;
        state.rebuild_lock_indexes(&mut timers).map_err(SnapshotError::Inconsistent)?;
        for QueueImage { id, queue } in image.queues {
            let mut decoder = postcard::Deserializer::from_bytes(rest);
            // In id order already: building the map finds one sorted run and builds it in bulk.
            let messages = MessagesSeed { source: &bytes }.deserialize(&mut decoder)?;
            rest = decoder.finalize()?;
            state
                .restore_queue(id, queue.into_owned(), messages.into_iter().collect(), &mut timers)
                .map_err(SnapshotError::Inconsistent)?;
        }
        // Bindings name exchanges and queues that the image holds apart: a binding whose
        // exchange or queue is not there would make routing and deletes misbehave later.
        state.check_exchanges().map_err(SnapshotError::Inconsistent)?;
        if version >= 6 {
            let (cluster, after): (ClusterImage<'_>, _) = postcard::take_from_bytes(rest)?;
            state.retired_nodes = cluster.retired_nodes.into_owned();
            rest = after;
        }
        if version >= 7 {
            let (redis, after): (RedisImage<'_>, _) = postcard::take_from_bytes(rest)?;
            state.scripts = redis.scripts.into_owned();
            state.list_waits = redis.list_waits.into_owned();
            state.rebuild_list_indexes(&mut timers).map_err(SnapshotError::Inconsistent)?;
            rest = after;
        }
        if version >= 8 {
            let (acl, after): (AclImage<'_>, _) = postcard::take_from_bytes(rest)?;
            state.acl_layer = acl.layer.into_owned();
            state.session_users = acl.session_users.into_owned();
            state.token_users = acl.token_users.into_owned();
            rest = after;
        }
        if !rest.is_empty() {
            return Err(SnapshotError::Inconsistent(format!("{} bytes after the last section", rest.len())));
        }
        state.rebuild_key_indexes(&mut timers);
        state.timers = Timers::from_list(timers);
        Ok(state)
    }
}
