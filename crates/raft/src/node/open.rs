//! Opening a node's storage: the data dir's lock and meta file, the newest snapshot and the log
//! after it, or an in-memory log and state when there is no data dir.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use turnstile_storage::{
    DataDirMeta, DirLock, Journal, Recovered, SnapshotStore, lock_dir, random_cluster_id,
};

use super::{NodeError, Storage};
use crate::log_store::{LogStore, ReplayedTail};
use crate::state_machine::{AppliedEffects, StateMachineStore};

/// What [`open_storage`] hands to openraft and keeps for the node.
pub(super) struct Opened {
    /// The Raft log for openraft: on the journal, with the entries replayed from it, or in memory.
    pub(super) log: LogStore,
    /// The state machine for openraft, restored from the newest snapshot if there is one. The
    /// node keeps a clone for reads, status and the snapshotter.
    pub(super) state_machine: StateMachineStore,
    /// Effects of every applied entry; [`super::Node::take_effects`] hands this out.
    pub(super) effects: mpsc::UnboundedReceiver<AppliedEffects>,
    /// The journal under `log`, for its stats, the snapshotter and the final sync; `None` in
    /// memory.
    pub(super) journal: Option<Arc<Journal>>,
    /// The data dir's lock, held as long as the node lives; `None` in memory.
    pub(super) dir_lock: Option<DirLock>,
}

/// What the thread that reads the journal hands back.
struct JournalRead {
    journal: Journal,
    /// What the journal's recovery found, its entries taken out into `tail`.
    recovered: Recovered,
    /// The log's entries after the snapshot, decoded (from both ends, see [`open_storage`]). The
    /// snapshot's thread holds a clone while it helps decode; it has let go of it by the time this
    /// is read.
    tail: Arc<ReplayedTail>,
    /// How many entries `tail` holds, for the log line.
    entries: usize,
    /// Reading the journal's files, from the start of [`open_storage`].
    read: Duration,
    /// Decoding the log's newest entries after that, on this thread.
    decoded: Duration,
}

/// What the thread that loads the snapshot hands back.
struct SnapshotRead {
    state_machine: StateMachineStore,
    effects: mpsc::UnboundedReceiver<AppliedEffects>,
    /// Loading the newest snapshot, from the start of [`open_storage`].
    loaded: Duration,
}

/// Opens the data dir: its lock, the newest snapshot, the journal after it. Refuses a log whose
/// purged part no snapshot covers (a deleted or older snapshot): starting would lose data.
///
/// The snapshot and the journal are read at the same time, on two threads: each is mostly reading
/// a file into fresh memory, and a restart with a large state waits for both. Then both decode the
/// log's entries, from its two ends, so that the apply after the start reads them from memory.
pub(super) fn open_storage(storage: Option<&Storage>) -> Result<Opened, NodeError> {
    let Some(storage) = storage else {
        let (state_machine, effects) = StateMachineStore::new();
        return Ok(Opened {
            log: LogStore::in_memory(),
            state_machine,
            effects,
            journal: None,
            dir_lock: None,
        });
    };
    let dir_lock = lock_dir(&storage.dir).map_err(|e| fatal(&e))?;
    // Before the log or a snapshot is read: a dir of a newer format is refused, not misread. (The
    // server has written the meta already, with the cluster id it chose; a node started on its
    // own gets a random one.)
    DataDirMeta::load_or_create(&storage.dir, random_cluster_id).map_err(|e| fatal(&e))?;
    let started = Instant::now();
    let (snapshot, journal) = std::thread::scope(|scope| {
        let (share_tail, shared_tail) = std::sync::mpsc::sync_channel(1);
        let journal = std::thread::Builder::new()
            .name("open-journal".into())
            .spawn_scoped(scope, move || read_journal(storage, started, &share_tail))
            .map_err(|e| fatal(&e));
        let snapshot = load_snapshot(storage, started);
        // The snapshot is in: help decode the log after it, from its oldest end.
        if let (Ok(_), Ok(tail)) = (&snapshot, shared_tail.recv()) {
            tail.decode(false);
        }
        let journal = journal.and_then(|handle| {
            handle.join().unwrap_or_else(|_| Err(NodeError::Fatal("opening the journal panicked".into())))
        });
        (snapshot, journal)
    });
    let SnapshotRead { state_machine, effects, loaded: snapshot_loaded } = snapshot?;
    let JournalRead { journal, recovered, tail, entries, read: journal_read, decoded } = journal?;
    let torn_tail = recovered.torn_tail.clone();
    let purged = recovered.purged;
    let journal = Arc::new(journal);
    let tail = Arc::into_inner(tail).ok_or_else(|| fatal(&"the log tail is still shared"))?;
    let log = LogStore::with_replayed(journal.clone(), recovered, tail).map_err(|e| fatal(&e))?;
    if let Some((file, offset)) = &torn_tail {
        tracing::warn!(file = %file.display(), offset, "cut off a torn last log record (a crash mid-write)");
    }
    if let Some(purged) = purged {
        // The journal keeps the purged entry itself at purged + 1 (see log_store.rs).
        let needed = purged + 1;
        if state_machine.snapshot_index().is_none_or(|covered| covered < needed) {
            return Err(NodeError::Fatal(format!(
                "the log in {} starts after entry {needed}, but no snapshot in {} covers it (missing or older \
                 snapshot); refusing to start rather than lose data",
                storage.dir.display(),
                storage.dir.join("snapshots").display()
            )));
        }
    }
    if let Some(covered) = state_machine.snapshot_index() {
        log.forget_replayed_upto(covered).map_err(|e| fatal(&e))?;
    }
    // snapshot_ms on one thread, then decoding the log's oldest entries; journal_ms, then
    // log_decode_ms decoding its newest, on the other.
    tracing::info!(
        snapshot_index = ?state_machine.snapshot_index(),
        log_entries = entries,
        log_bytes = journal.log_bytes(),
        snapshot_ms = snapshot_loaded.as_millis(),
        journal_ms = journal_read.as_millis(),
        log_decode_ms = decoded.as_millis(),
        total_ms = started.elapsed().as_millis(),
        "opened the data dir"
    );
    Ok(Opened { log, state_machine, effects, journal: Some(journal), dir_lock: Some(dir_lock) })
}

/// Reads the journal, shares its entries with the snapshot's thread and decodes them from the
/// newest end.
fn read_journal(
    storage: &Storage,
    started: Instant,
    share_tail: &SyncSender<Arc<ReplayedTail>>,
) -> Result<JournalRead, NodeError> {
    let (journal, mut recovered) =
        Journal::open(&storage.dir, storage.options.clone()).map_err(|e| fatal(&e))?;
    let read = started.elapsed();
    let entries = recovered.entries.len();
    let tail = Arc::new(ReplayedTail::new(std::mem::take(&mut recovered.entries)));
    let _ = share_tail.send(Arc::clone(&tail));
    tail.decode(true);
    let decoded = started.elapsed() - read;
    Ok(JournalRead { journal, recovered, tail, entries, read, decoded })
}

/// Loads the newest snapshot in the data dir into a state machine (an empty one if there is none).
fn load_snapshot(storage: &Storage, started: Instant) -> Result<SnapshotRead, NodeError> {
    let snapshots = SnapshotStore::open(&storage.dir.join("snapshots")).map_err(|e| fatal(&e))?;
    let (state_machine, effects) = StateMachineStore::open(Some(snapshots)).map_err(|e| fatal(&e))?;
    Ok(SnapshotRead { state_machine, effects, loaded: started.elapsed() })
}

fn fatal(e: &dyn std::fmt::Display) -> NodeError {
    NodeError::Fatal(e.to_string())
}
