//! The state-machine adapter: openraft's [`RaftStateMachine`] over [`turnstile_core::State`].
//!
//! openraft hands committed entries to [`RaftStateMachine::apply`] in log order. For each one this
//! adapter:
//! 1. applies every command of a Normal entry's [`Batch`] in order, with the entry's log index and
//!    the batch's leader-stamped `now` (the core never reads a clock);
//! 2. sends the entry's effects, if any, to the effects channel as `(log index, effects)` — an
//!    unbounded channel, because the apply path must never wait for a slow consumer;
//! 3. publishes the state's next timer deadline on a watch (the server's ticker proposes
//!    `Command::Tick` when it is due);
//! 4. answers the entry's responder with a [`BatchReply`] — for *every* entry that has one,
//!    blank and membership entries included (they get an empty reply). A responder that is never
//!    answered leaves its `client_write` waiting forever.
//!
//! Effects and the deadline are published before the responder is answered, so a client that got
//! its reply can rely on the watch and the channel already reflecting its entry.
//!
//! The [`State`] sits in a `std::sync::RwLock` shared with [`crate::Node::read`]; every critical
//! section is synchronous (no `.await` while holding it). The last applied log id and the
//! membership sit in the same lock as the state so a snapshot always pairs a state with the log
//! position it reflects. A snapshot copies the state and its position under the read lock (applies
//! wait for the copy only) and serializes and writes the copy on a blocking thread, off the log
//! runtime. Snapshots are `State::snapshot()` bytes, held as [`Bytes`]: a state
//! restored from one keeps its message payloads as slices of that buffer, so handing the same
//! bytes to openraft again costs nothing. With a [`SnapshotStore`] they are also written to disk
//! (atomically) before openraft is told they exist, because openraft purges the log entries a
//! snapshot covers.

use std::io;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::type_config::alias::{LogIdOf, PayloadOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use tokio::sync::{mpsc, watch};
use turnstile_core::{Effect, State, Timestamp};
use turnstile_storage::{SnapshotStore, StorageError};

use crate::{Batch, BatchReply, TypeConfig};

type LogId = LogIdOf<TypeConfig>;
type StoredMembership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, Bytes>;

/// The effects of one applied log entry: `(log index, effects)`, never with an empty list.
pub type AppliedEffects = (u64, Vec<Effect>);

/// A function that takes each applied entry's effects inside apply, before the entry's proposers
/// get their replies: what a wait's outcome is handed to without a task or a wake-up in between.
/// It must be quick and never block (it runs on the log's thread, under the state's write lock).
pub type EffectHandler = Box<dyn Fn(u64, Vec<Effect>) + Send + Sync>;

/// Where applied effects go.
enum EffectSink {
    /// The channel [`crate::Node::take_effects`] hands out.
    Channel(mpsc::UnboundedSender<AppliedEffects>),
    /// The handler [`crate::Node::route_effects`] installed.
    Handler(EffectHandler),
}

impl std::fmt::Debug for EffectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EffectSink::Channel(_) => "EffectSink::Channel",
            EffectSink::Handler(_) => "EffectSink::Handler",
        })
    }
}

/// The state-machine adapter handed to openraft. Cheap to clone: clones share one state (the
/// snapshot builder is a clone, and so is the handle [`crate::Node`] reads through).
#[derive(Debug, Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    applied: RwLock<Applied>,
    /// The latest snapshot built or installed, served to openraft (e.g. to send to a follower).
    snapshot: Mutex<Option<StoredSnapshot>>,
    /// Where applied effects go: the channel until a handler is installed.
    effects: Mutex<EffectSink>,
    deadline: watch::Sender<Option<Timestamp>>,
    /// Where snapshots are persisted; `None` keeps them in memory only.
    disk: Option<SnapshotStore>,
    /// Payload bytes stored in the state after the latest apply, for memory limits.
    payload_bytes: std::sync::atomic::AtomicU64,
}

/// The state and the log position it reflects, changed together.
#[derive(Debug, Default)]
struct Applied {
    state: State,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// The newest snapshot: where it was taken, and its `State::snapshot()` bytes. Without a disk the
/// bytes stay in memory. With one they are on disk, and in memory only when the state was restored
/// from them at start: the state's payloads share that buffer anyway, and openraft asks for the
/// current snapshot (twice) while it starts. A snapshot built later is not kept in memory, so a
/// large state is not held twice.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    pub data: Option<Bytes>,
    /// The size of its state bytes.
    pub bytes: u64,
}

fn poisoned<T>(_: PoisonError<T>) -> io::Error {
    // A panic inside State::apply leaves the state half-applied: stop rather than go on with it.
    io::Error::other("state machine lock poisoned by a panic during apply")
}

impl StateMachineStore {
    /// An empty state machine kept in memory, and the receiving end of its effects channel.
    pub fn new() -> (StateMachineStore, mpsc::UnboundedReceiver<AppliedEffects>) {
        StateMachineStore::open(None).expect("an in-memory state machine opens")
    }

    /// A state machine whose snapshots live in `disk`, starting from the newest one there.
    pub fn open(
        disk: Option<SnapshotStore>,
    ) -> Result<(StateMachineStore, mpsc::UnboundedReceiver<AppliedEffects>), io::Error> {
        let mut applied = Applied::default();
        let mut snapshot = None;
        if let Some((_, meta, data)) =
            disk.as_ref().map(SnapshotStore::load_latest).transpose().map_err(io::Error::other)?.flatten()
        {
            let meta: SnapshotMeta =
                postcard::from_bytes(&meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // The restored payloads are slices of the buffer the file was read into.
            applied.state =
                State::restore(data.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            snapshot = Some(StoredSnapshot { meta, bytes: data.len() as u64, data: Some(data) });
        }
        let (effects, effects_rx) = mpsc::unbounded_channel();
        let (deadline, _) = watch::channel(applied.state.next_deadline());
        let payload_bytes = applied.state.payload_bytes().into();
        let shared = Shared {
            applied: RwLock::new(applied),
            snapshot: Mutex::new(snapshot),
            effects: Mutex::new(EffectSink::Channel(effects)),
            deadline,
            disk,
            payload_bytes,
        };
        Ok((StateMachineStore { shared: Arc::new(shared) }, effects_rx))
    }

    /// Payload bytes stored after the latest apply ([`State::payload_bytes`]), read without a lock.
    pub fn payload_bytes(&self) -> u64 {
        self.shared.payload_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The log index the newest snapshot covers, if any.
    pub fn snapshot_index(&self) -> Option<u64> {
        let snapshot = self.shared.snapshot.lock().ok()?;
        snapshot.as_ref().and_then(|s| s.meta.last_log_id.map(|id| id.index()))
    }

    /// The size of the latest snapshot's state bytes; 0 before the first.
    pub fn snapshot_bytes(&self) -> u64 {
        let snapshot = self.shared.snapshot.lock();
        snapshot.ok().and_then(|s| s.as_ref().map(|s| s.bytes)).unwrap_or(0)
    }

    /// Records a new snapshot: on disk first (when there is a disk), before anyone may rely on it.
    fn keep_snapshot(&self, meta: &SnapshotMeta, data: &Bytes) -> io::Result<()> {
        let in_memory = match &self.shared.disk {
            Some(disk) => {
                save_snapshot(disk, meta, data)?;
                None
            }
            None => Some(data.clone()),
        };
        *self.shared.snapshot.lock().map_err(poisoned)? =
            Some(StoredSnapshot { meta: meta.clone(), data: in_memory, bytes: data.len() as u64 });
        Ok(())
    }

    /// Writes a snapshot built here, trying again while the disk is full. openraft stops for good
    /// on any error of a snapshot build, and a full disk is no reason to: the log still holds
    /// everything the snapshot would (nothing is purged before it is saved), and freed space lets
    /// the next try succeed. The failed tries leave nothing behind (the temp file is removed).
    /// Waits between tries are async sleeps, so shutdown is not held up by a disk that stays full.
    async fn keep_snapshot_when_there_is_room(&self, meta: &SnapshotMeta, data: &Bytes) -> io::Result<()> {
        let mut pause = SNAPSHOT_RETRY_FIRST;
        loop {
            let (store, meta, data) = (self.clone(), meta.clone(), data.clone());
            let kept = tokio::task::spawn_blocking(move || store.keep_snapshot(&meta, &data)).await.map_err(
                |e| io::Error::other(format!("writing the snapshot panicked or was cancelled: {e}")),
            )?;
            match kept {
                Err(error) if no_space(&error) => {
                    tracing::warn!(%error, retry_in_ms = pause.as_millis(), "snapshot not written: the disk is full");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(SNAPSHOT_RETRY_MAX);
                }
                kept => return kept,
            }
        }
    }

    /// Holds snapshot writes (see [`SnapshotStore::hold_saves_for_test`]); `None` without a disk.
    #[doc(hidden)]
    pub fn hold_snapshot_saves_for_test(&self) -> Option<turnstile_storage::HeldSaves> {
        self.shared.disk.as_ref().map(SnapshotStore::hold_saves_for_test)
    }

    /// Runs `f` on the current state (no linearizability check: see [`crate::Node::read`]).
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> Result<R, io::Error> {
        let applied = self.shared.applied.read().map_err(poisoned)?;
        Ok(f(&applied.state))
    }

    /// The state's next timer deadline, updated after every applied entry and snapshot install.
    pub fn next_deadline(&self) -> watch::Receiver<Option<Timestamp>> {
        self.shared.deadline.subscribe()
    }

    /// The log index of the last entry applied (or covered by an installed snapshot).
    pub fn last_applied_index(&self) -> Option<u64> {
        self.shared.applied.read().ok().and_then(|a| a.last_applied.map(|id| id.index()))
    }

    fn publish_deadline(&self, deadline: Option<Timestamp>) {
        self.shared.deadline.send_if_modified(|current| {
            let changed = *current != deadline;
            *current = deadline;
            changed
        });
    }

    /// Applies one entry and returns its reply. Takes the write lock for this entry only.
    /// From now on, hands applied effects to `handler` inside apply instead of sending them on
    /// the channel; what the channel still holds (`queued`, its receiver) goes to the handler
    /// first, so nothing is lost or reordered.
    pub(crate) fn route_effects(
        &self,
        handler: EffectHandler,
        mut queued: mpsc::UnboundedReceiver<AppliedEffects>,
    ) -> io::Result<()> {
        let mut sink = self.shared.effects.lock().map_err(poisoned)?;
        while let Ok((index, effects)) = queued.try_recv() {
            handler(index, effects);
        }
        *sink = EffectSink::Handler(handler);
        Ok(())
    }

    fn apply_entry(&self, log_id: LogId, payload: PayloadOf<TypeConfig>) -> io::Result<BatchReply> {
        let index = log_id.index();
        let mut applied = self.shared.applied.write().map_err(poisoned)?;
        applied.last_applied = Some(log_id);
        let reply = match payload {
            EntryPayload::Blank => BatchReply::default(),
            EntryPayload::Membership(membership) => {
                applied.membership = StoredMembership::new(Some(log_id), membership);
                BatchReply::default()
            }
            EntryPayload::Normal(Batch { now, commands }) => {
                let mut replies = Vec::with_capacity(commands.len());
                let mut effects = Vec::new();
                for cmd in commands {
                    let (reply, fx) = applied.state.apply(index, now, cmd);
                    replies.push(reply);
                    effects.extend(fx);
                }
                if !effects.is_empty() {
                    match &*self.shared.effects.lock().map_err(poisoned)? {
                        // The receiver may be gone (server shutting down); effects are then moot.
                        EffectSink::Channel(tx) => drop(tx.send((index, effects))),
                        EffectSink::Handler(handler) => handler(index, effects),
                    }
                }
                BatchReply(replies)
            }
        };
        let deadline = applied.state.next_deadline();
        self.shared.payload_bytes.store(applied.state.payload_bytes(), std::sync::atomic::Ordering::Relaxed);
        drop(applied);
        self.publish_deadline(deadline);
        Ok(reply)
    }
}

/// The first pause before a snapshot that found the disk full is written again; it doubles up to
/// [`SNAPSHOT_RETRY_MAX`].
const SNAPSHOT_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const SNAPSHOT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a snapshot write failed for want of space (see [`save_snapshot`], which wraps the
/// storage error).
fn no_space(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StorageError>())
        .is_some_and(StorageError::is_no_space)
}

/// Writes a snapshot file: `meta` (postcard) and the `State::snapshot` bytes, under the log index
/// the snapshot covers. [`StateMachineStore::open`] reads it back.
pub(crate) fn save_snapshot(disk: &SnapshotStore, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let encoded = postcard::to_stdvec(meta).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let index = meta.last_log_id.map_or(0, |id| id.index());
    disk.save(index, &encoded, data).map_err(io::Error::other)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Bytes;

    /// Copies the state under the read lock — applies wait only for the copy, whose message
    /// payloads are shared, not copied — then serializes the copy and writes it to disk on a
    /// blocking thread. openraft runs this in a task on the log runtime's one thread, which also
    /// appends, fsyncs and applies: serializing and writing a large state there (measured with
    /// 300,000 queued 1 KiB messages: 0.3–0.4 s to serialize, 1.4–1.6 s with the write and
    /// fsync) stopped every write for that long.
    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let started = std::time::Instant::now();
        let (meta, state) = {
            let applied = self.shared.applied.read().map_err(poisoned)?;
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
            };
            (meta, applied.state.snapshot_copy())
        };
        let copied = started.elapsed();
        let (data, serialized) = tokio::task::spawn_blocking(move || {
            let data = Bytes::from(state.snapshot());
            // The copy is dropped here, off the log thread, too.
            drop(state);
            (data, started.elapsed())
        })
        .await
        .map_err(|e| io::Error::other(format!("building the snapshot panicked or was cancelled: {e}")))?;
        self.keep_snapshot_when_there_is_room(&meta, &data).await?;
        tracing::info!(
            index = ?meta.last_log_id.map(|id| id.index()),
            bytes = data.len(),
            copy_ms = copied.as_millis(),
            serialize_ms = (serialized - copied).as_millis(),
            total_ms = started.elapsed().as_millis(),
            "built a snapshot"
        );
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Bytes;
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.shared.applied.read().map_err(poisoned)?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let reply = self.apply_entry(entry.log_id, entry.payload)?;
            if let Some(responder) = responder {
                responder.send(reply);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Bytes) -> Result<(), io::Error> {
        let state =
            State::restore(snapshot.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let deadline = state.next_deadline();
        self.keep_snapshot(meta, &snapshot)?;
        {
            let mut applied = self.shared.applied.write().map_err(poisoned)?;
            applied.state = state;
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        self.publish_deadline(deadline);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let slot = self.shared.snapshot.lock().map_err(poisoned)?;
        let Some(stored) = slot.as_ref() else { return Ok(None) };
        match (&self.shared.disk, &stored.data) {
            // In memory (and shared with the state, when restored from it): a clone is a reference.
            (_, Some(data)) => Ok(Some(Snapshot { meta: stored.meta.clone(), snapshot: data.clone() })),
            // The newest file, with the meta saved beside it. It may be newer than the slot says:
            // a snapshot is written before the slot is updated, and the older file is gone then.
            // Failing here stopped the leader for good, when it sent a snapshot to a node that
            // joined while another was being written.
            (Some(disk), None) => {
                let wanted = stored.meta.last_log_id.map_or(0, |id| id.index());
                match disk.load_latest().map_err(io::Error::other)? {
                    Some((index, _, data)) if index == wanted => {
                        Ok(Some(Snapshot { meta: stored.meta.clone(), snapshot: data }))
                    }
                    Some((index, meta, data)) if index > wanted => {
                        let meta: SnapshotMeta = postcard::from_bytes(&meta)
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                        Ok(Some(Snapshot { meta, snapshot: data }))
                    }
                    _ => Err(io::Error::other(format!("snapshot {wanted} is no longer on disk"))),
                }
            }
            (None, None) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use turnstile_core::{Command, Reply};

    use super::*;

    fn log_id(index: u64) -> LogId {
        use openraft::vote::RaftLeaderId;
        LogId::new(openraft::impls::leader_id_adv::LeaderId::new(1, 1), index)
    }

    /// openraft asks for the current snapshot (to send it to a node that lags or joins) while
    /// another is being written: the file is replaced before the slot is updated. The newer one
    /// is served, with its own meta; this once failed and stopped the leader for good.
    #[tokio::test]
    async fn a_snapshot_newer_on_disk_than_in_the_slot_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let disk = SnapshotStore::open(dir.path()).unwrap();
        let (mut sm, _fx) = StateMachineStore::open(Some(disk.clone())).unwrap();
        let batch = |delta| Batch { now: 1_000, commands: vec![Command::IncrBy { key: "k".into(), delta }] };
        sm.apply_entry(log_id(3), EntryPayload::Normal(batch(1))).unwrap();
        let older = sm.build_snapshot().await.unwrap();
        assert_eq!(older.meta.last_log_id, Some(log_id(3)));

        // The next snapshot's file is written, and its slot not yet updated.
        sm.apply_entry(log_id(4), EntryPayload::Normal(batch(2))).unwrap();
        let mut newer = older.meta.clone();
        newer.last_log_id = Some(log_id(4));
        let data = sm.with_state(State::snapshot).unwrap();
        save_snapshot(&disk, &newer, &data).unwrap();

        let current = sm.get_current_snapshot().await.unwrap().expect("a snapshot");
        assert_eq!(current.meta, newer);
        assert_eq!(current.snapshot.as_ref(), data.as_slice());
    }

    /// build_snapshot → install_snapshot on a fresh adapter gives an equal state, log position
    /// and deadline.
    #[tokio::test]
    async fn snapshot_round_trip() {
        let (mut sm, _fx) = StateMachineStore::new();
        let batch = Batch {
            now: 1_000,
            commands: vec![
                Command::OpenSession {
                    host: turnstile_core::HostId(1),
                    secret: 1,
                    timeout: turnstile_core::MAX_DURATION,
                },
                Command::IncrBy { key: "k".into(), delta: 7 },
                Command::Set(turnstile_core::SetKey {
                    expiry: turnstile_core::SetExpiry::In(5_000),
                    ..turnstile_core::SetKey::new("ttl", "v")
                }),
            ],
        };
        let reply = sm.apply_entry(log_id(3), EntryPayload::Normal(batch)).unwrap();
        assert_eq!(reply.0[1], Reply::Int(7));
        let deadline = *sm.next_deadline().borrow();
        assert_eq!(deadline, Some(6_000));

        let snap = sm.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(3)));

        let (mut fresh, _fx2) = StateMachineStore::new();
        assert_ne!(fresh.with_state(State::clone).unwrap(), sm.with_state(State::clone).unwrap());
        fresh.install_snapshot(&snap.meta, snap.snapshot.clone()).await.unwrap();

        assert_eq!(fresh.with_state(State::clone).unwrap(), sm.with_state(State::clone).unwrap());
        assert_eq!(fresh.applied_state().await.unwrap().0, Some(log_id(3)));
        assert_eq!(*fresh.next_deadline().borrow(), Some(6_000));
        let current = fresh.get_current_snapshot().await.unwrap().expect("installed snapshot kept");
        assert_eq!(current.snapshot, snap.snapshot);
    }

    /// A corrupt snapshot is refused and leaves the state untouched.
    #[tokio::test]
    async fn corrupt_snapshot_is_refused() {
        let (mut sm, _fx) = StateMachineStore::new();
        let meta =
            SnapshotMeta { last_log_id: Some(log_id(9)), last_membership: StoredMembership::default() };
        let err = sm.install_snapshot(&meta, Bytes::from_static(&[1, 0xff, 0xff])).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(sm.applied_state().await.unwrap().0, None);
    }
}
