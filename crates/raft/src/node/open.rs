//! Opening a node's storage: the data dir's lock, the newest snapshot and the log after it, or
//! an in-memory log and state when there is no data dir.

use std::sync::Arc;

use tokio::sync::mpsc;
use turnstile_storage::{DirLock, Journal, SnapshotStore, lock_dir};

use super::{NodeError, Storage};
use crate::log_store::{LogStore, ReplayedTail};
use crate::state_machine::{AppliedEffects, StateMachineStore};

/// What [`open_storage`] hands to openraft and keeps for the node.
pub(super) struct Opened {
    pub(super) log: LogStore,
    pub(super) state_machine: StateMachineStore,
    pub(super) effects: mpsc::UnboundedReceiver<AppliedEffects>,
    pub(super) journal: Option<Arc<Journal>>,
    pub(super) dir_lock: Option<DirLock>,
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
    let fatal = |e: &dyn std::fmt::Display| NodeError::Fatal(e.to_string());
    let dir_lock = lock_dir(&storage.dir).map_err(|e| fatal(&e))?;
    let started = std::time::Instant::now();
    let (snapshot, journal) = std::thread::scope(|scope| {
        let (share_tail, shared_tail) = std::sync::mpsc::sync_channel(1);
        let journal = std::thread::Builder::new()
            .name("open-journal".into())
            .spawn_scoped(scope, move || {
                let (journal, mut recovered) =
                    Journal::open(&storage.dir, storage.options.clone()).map_err(|e| fatal(&e))?;
                let read = started.elapsed();
                let entries = recovered.entries.len();
                let tail = Arc::new(ReplayedTail::new(std::mem::take(&mut recovered.entries)));
                let _ = share_tail.send(Arc::clone(&tail));
                tail.decode(true);
                let decoded = started.elapsed() - read;
                Ok::<_, NodeError>((journal, recovered, tail, entries, read, decoded))
            })
            .map_err(|e| fatal(&e));
        let snapshot = SnapshotStore::open(&storage.dir.join("snapshots"))
            .map_err(|e| fatal(&e))
            .and_then(|snapshots| StateMachineStore::open(Some(snapshots)).map_err(|e| fatal(&e)));
        let snapshot_loaded = started.elapsed();
        // The snapshot is in: help decode the log after it, from its oldest end.
        if let (Ok(_), Ok(tail)) = (&snapshot, shared_tail.recv()) {
            tail.decode(false);
        }
        let journal = journal.and_then(|handle| {
            handle.join().unwrap_or_else(|_| Err(NodeError::Fatal("opening the journal panicked".into())))
        });
        (snapshot.map(|opened| (opened, snapshot_loaded)), journal)
    });
    let ((state_machine, effects), snapshot_loaded) = snapshot?;
    let (journal, recovered, tail, entries, journal_read, decoded) = journal?;
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
