//! Snapshots: the state's primary data as bytes, and a state rebuilt from them.
//!
//! ```text
//!  snapshot ─► [u8 version = 3][postcard(Image)]
//!              Image: clock, applied index, last token, last id,
//!                     sessions (when opened), locks (holds, lines of waiters),
//!                     queues (config, totals, takers, waiting pops, consumers, dedup ids,
//!                             then every message in id order), keys
//!
//!  restore  ─► decode the Image, message payloads borrowed from the buffer
//!           ─► messages keep them as `Bytes` slices of that one buffer (no copy, no allocation each)
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
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::kv::KvEntry;
use crate::lock::Resource;
use crate::queue::{Message, Queue};
use crate::session::Session;
use crate::timer::{Timer, Timers};
use crate::{MsgId, QueueId, SessionId, State, Timestamp};

/// The format written by [`State::snapshot`]; [`State::restore`] reads only this one.
/// 2: the whole state, indexes included. 3: primary data only, indexes rebuilt on restore.
pub(crate) const SNAPSHOT_VERSION: u8 = 3;

/// A snapshot that could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot format version {0} is not supported (this build reads version {SNAPSHOT_VERSION})")]
    Version(u8),
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
    resources: Cow<'a, BTreeMap<String, Resource>>,
    #[serde(borrow)]
    queues: Vec<QueueImage<'a>>,
    keys: Cow<'a, BTreeMap<String, KvEntry>>,
}

/// One queue: its own fields (those that are not indexes), then its messages.
#[derive(Serialize, Deserialize)]
struct QueueImage<'a> {
    id: QueueId,
    queue: Cow<'a, Queue>,
    #[serde(borrow)]
    messages: Messages<'a>,
}

/// A queue's messages in id order, as a sequence of `(id, message)`.
enum Messages<'a> {
    /// Being written: the queue's own map.
    Stored(&'a BTreeMap<MsgId, Message>),
    /// Read back: payloads still in the snapshot buffer.
    Read(Vec<(MsgId, Message<Borrowed<'a>>)>),
}

impl Serialize for Messages<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Messages::Stored(map) => serializer.collect_seq(map.iter()),
            Messages::Read(list) => serializer.collect_seq(list.iter().map(|(id, m)| (id, m))),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Messages<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::deserialize(deserializer).map(Messages::Read)
    }
}

/// Bytes read in place from the snapshot buffer. Written like `Bytes` (a length, then the
/// bytes), so a payload is laid out the same whichever way it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Borrowed<'a>(&'a [u8]);

impl Serialize for Borrowed<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(deserializer).map(Borrowed)
    }
}

/// Timers gathered while indexes are rebuilt, set in one bulk build at the end.
pub(crate) type TimerList = Vec<(Timestamp, Timer)>;

impl State {
    /// The state's primary data as bytes: a version byte, then postcard (see the module docs).
    pub fn snapshot(&self) -> Vec<u8> {
        let image = Image {
            clock: self.clock,
            applied_index: self.applied_index,
            last_token: self.last_token,
            last_id: self.last_id,
            sessions: Cow::Borrowed(&self.sessions),
            resources: Cow::Borrowed(&self.resources),
            queues: self
                .queues
                .iter()
                .map(|(&id, q)| QueueImage {
                    id,
                    queue: Cow::Borrowed(q),
                    messages: Messages::Stored(&q.messages),
                })
                .collect(),
            keys: Cow::Borrowed(&self.keys),
        };
        // Sized up front for what dominates (payloads, keys, a few dozen bytes per message), and
        // written in place after the version byte: no reallocations, no second copy.
        let messages: usize = self.queues.values().map(Queue::len).sum();
        let estimate = usize::try_from(self.payload_bytes()).unwrap_or(0) + 64 * messages + 4096;
        let mut out = Vec::with_capacity(estimate);
        out.push(SNAPSHOT_VERSION);
        // Serializing plain data into a Vec cannot fail.
        postcard::to_io(&image, out).expect("state serializes")
    }

    /// The state a [`State::snapshot`] describes, indexes rebuilt. Message payloads are slices of
    /// `bytes` (no copy): keep the buffer in a `Bytes` that owns it, e.g. `Bytes::from(vec)`.
    pub fn restore(bytes: Bytes) -> Result<State, SnapshotError> {
        let body = match bytes.split_first() {
            None => return Err(SnapshotError::Empty),
            Some((&SNAPSHOT_VERSION, body)) => body,
            Some((&v, _)) => return Err(SnapshotError::Version(v)),
        };
        let image: Image<'_> = postcard::from_bytes(body)?;
        let mut state = State {
            clock: image.clock,
            applied_index: image.applied_index,
            last_token: image.last_token,
            last_id: image.last_id,
            sessions: image.sessions.into_owned(),
            resources: image.resources.into_owned(),
            keys: image.keys.into_owned(),
            ..State::default()
        };
        let mut timers = TimerList::new();
        state.rebuild_lock_indexes(&mut timers).map_err(SnapshotError::Inconsistent)?;
        for QueueImage { id, queue, messages } in image.queues {
            let Messages::Read(messages) = messages else { unreachable!("decoding gives Read") };
            let messages = messages.into_iter().map(|(id, m)| (id, m.map_payload(|p| bytes.slice_ref(p.0))));
            state
                .restore_queue(id, queue.into_owned(), messages.collect(), &mut timers)
                .map_err(SnapshotError::Inconsistent)?;
        }
        state.rebuild_key_indexes(&mut timers);
        state.timers = Timers::from_list(timers);
        Ok(state)
    }
}
