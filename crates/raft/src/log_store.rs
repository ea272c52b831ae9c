//! The Raft log, in memory.
//!
//! This is the stand-in for the durable log of `crates/storage`: it implements the same openraft
//! traits ([`RaftLogStorage`], [`RaftLogReader`]) so the node code does not change when the durable
//! one replaces it. Nothing here survives a restart, so [`crate::Node::start`] initializes a fresh
//! one-voter cluster every time.
//!
//! openraft's contract, which a durable replacement must keep too:
//! - `append` returns at once, and the appended entries must be readable from that moment (the
//!   leader reads them back to apply them); `IOFlushed::io_completed` is called only once they are
//!   durable. In memory they are "durable" immediately, so it is called inside `append`.
//! - `truncate_after` removes entries after a log id (a follower's conflicting tail); `purge`
//!   removes entries up to one (after a snapshot covers them).
//!
//! A `std::sync::Mutex` guards the map: every critical section is a few map operations and never
//! spans an `.await`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::{LogState, OptionalSend, RaftLogReader};

use crate::TypeConfig;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The in-memory Raft log. Cheap to clone: clones share the same log (openraft asks for a
/// separate reader handle, which is a clone).
#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last entry removed by `purge` (covered by a snapshot).
    last_purged: Option<LogId>,
    /// Log index → entry.
    log: BTreeMap<u64, Entry>,
    committed: Option<LogId>,
    vote: Option<Vote>,
}

impl MemLogStore {
    pub fn new() -> MemLogStore {
        MemLogStore::default()
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        // A panic while holding the lock leaves the log in an unknown shape: report it to
        // openraft as a storage error (which stops the node) rather than continue on it.
        self.inner.lock().map_err(|_| io::Error::other("log store lock poisoned"))
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let inner = self.lock()?;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock()?.vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock()?;
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.lock()?.vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.lock()?.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock()?.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.lock()?;
            for entry in entries {
                inner.log.insert(entry.log_id.index(), entry);
            }
        }
        // In memory, written is flushed. A durable log calls this after its (group) fsync.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut inner = self.lock()?;
        // split_off keeps [..from) in place and returns the tail, which is dropped.
        drop(inner.log.split_off(&from));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.lock()?;
        if inner.last_purged.is_some_and(|p| p > log_id) {
            return Err(io::Error::other(format!(
                "purge to {log_id} is behind the last purge {}",
                inner.last_purged.map(|p| p.to_string()).unwrap_or_default()
            )));
        }
        let keep = inner.log.split_off(&(log_id.index() + 1));
        inner.log = keep;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}
