//! The Raft log: entries in memory, and — when durable — every change also in the journal of
//! `crates/storage` (checksummed segments, group commit).
//!
//! Reads are served from memory: openraft reads back the entries it just appended in order to
//! apply them, and the journal is write-ahead only. It is read once, at start, to rebuild this
//! map ([`LogStore::durable`]).
//!
//! openraft's contract:
//! - The appended entries must be readable once `append` returns; `IOFlushed::io_completed` is
//!   called only once they are durable — for the journal, after the fdatasync that covers them
//!   (with `fsync = "always"`). This is what makes a reply mean "on disk". The journal writes and
//!   syncs on the calling thread (the log runtime's), so `append` returns after the fdatasync:
//!   while it runs, proposals gather in the batcher's queue and become the next entry.
//! - `save_vote` returns only once the vote is on disk.
//! - `truncate_after` removes entries after a log id (a follower's conflicting tail); `purge`
//!   removes entries up to one (after a snapshot covers them). Both are journaled in order with
//!   the appends, so replay reaches the same log.
//!
//! The purged log id must survive a restart with its term, but the journal's purge record holds
//! only an index. So a purge to index `p` journals "purge up to `p - 1`" and keeps entry `p`:
//! after a restart, the lowest entry above the journal's purge point is the purged one, and it is
//! taken out of the readable log again (see [`LogStore::durable`]).
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
use serde::Serialize;
use serde::de::DeserializeOwned;
use turnstile_storage::{Journal, Record, Recovered, StorageError};

use crate::TypeConfig;

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// The Raft log. Cheap to clone: clones share the same log (openraft asks for a separate reader
/// handle, which is a clone).
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// `None`: in memory only (tests, and `fsync`-less experiments).
    journal: Option<Arc<Journal>>,
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

impl LogStore {
    /// A log kept in memory only: nothing survives a restart.
    pub fn in_memory() -> LogStore {
        LogStore::default()
    }

    /// A log backed by `journal`, starting from what the journal held when it was opened.
    pub fn durable(journal: Arc<Journal>, recovered: Recovered) -> io::Result<LogStore> {
        let mut log = BTreeMap::new();
        for (index, data) in recovered.entries {
            log.insert(index, decode::<Entry>(&data)?);
        }
        // See the module docs: the purged entry itself is kept just above the journal's purge point.
        let last_purged = match recovered.purged {
            Some(p) => log.remove(&(p + 1)).map(|e| e.log_id),
            None => None,
        };
        let inner = Inner {
            last_purged,
            log,
            // `save_committed` journals the whole `Option<LogId>`; it must be read back as one.
            committed: recovered.committed.as_deref().map(decode::<Option<LogId>>).transpose()?.flatten(),
            vote: recovered.vote.as_deref().map(decode).transpose()?,
        };
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)), journal: Some(journal) })
    }

    /// Journals records whose durability nobody waits for (they ride on the next group commit,
    /// in order with the appends). A failure poisons the journal, and the next append reports it.
    fn journal_quietly(&self, records: Vec<Record>) {
        if let Some(journal) = &self.journal {
            journal.append(records, log_failure());
        }
    }

    /// Like [`LogStore::journal_quietly`], but the records wait for the next append's group instead
    /// of being written now: for the committed marker, saved after every commit, which would
    /// otherwise cost a write of its own per entry.
    fn journal_deferred(&self, records: Vec<Record>) {
        if let Some(journal) = &self.journal {
            journal.append_deferred(records, log_failure());
        }
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Inner>> {
        // A panic while holding the lock leaves the log in an unknown shape: report it to
        // openraft as a storage error (which stops the node) rather than continue on it.
        self.inner.lock().map_err(|_| io::Error::other("log store lock poisoned"))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
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

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

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
        if let Some(journal) = &self.journal {
            // Votes are rare (start, elections); this one must be on disk before it counts.
            journal.append(vec![Record::Vote(encode(vote)?)], Box::new(|_| {}));
            journal.sync().map_err(storage_error)?;
        }
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.lock()?.committed = committed;
        // Losing the latest committed marker is allowed: it only saves re-applying after a restart.
        self.journal_deferred(vec![Record::Committed(encode(&committed)?)]);
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
        let mut records = Vec::new();
        {
            let mut inner = self.lock()?;
            for entry in entries {
                if self.journal.is_some() {
                    records.push(Record::Entry { index: entry.log_id.index(), data: encode(&entry)?.into() });
                }
                inner.log.insert(entry.log_id.index(), entry);
            }
        }
        match &self.journal {
            // Called back once the group this belongs to is on disk (here, before `append` returns).
            Some(journal) => journal.append(
                records,
                Box::new(move |result| callback.io_completed(result.map_err(storage_error))),
            ),
            // In memory, written is flushed.
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut inner = self.lock()?;
        // split_off keeps [..from) in place and returns the tail, which is dropped.
        drop(inner.log.split_off(&from));
        self.journal_quietly(vec![Record::TruncateAfter(last_log_id.map(|id| id.index()))]);
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
        drop(inner);
        // Entry `index` itself stays in the journal: it carries the purged log id's term.
        if let Some(below) = log_id.index().checked_sub(1) {
            self.journal_quietly(vec![Record::Purge(below)]);
        }
        Ok(())
    }
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let invalid = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    // Sized first, so the buffer is allocated once: grown by doubling, a batch's payloads were
    // copied several times over.
    let size = postcard::experimental::serialized_size(value).map_err(invalid)?;
    let encoded = postcard::to_extend(value, Vec::with_capacity(size)).map_err(invalid)?;
    debug_assert_eq!(encoded.len(), size);
    Ok(encoded)
}

/// Decodes exactly one `T` from `bytes`: bytes left over mean they were written as another type
/// (postcard alone would quietly ignore them).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let invalid = |e: postcard::Error| io::Error::new(io::ErrorKind::InvalidData, e);
    match postcard::take_from_bytes(bytes).map_err(invalid)? {
        (value, []) => Ok(value),
        (_, rest) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} bytes left over after decoding a {}", rest.len(), std::any::type_name::<T>()),
        )),
    }
}

/// The `done` of a write nobody waits for: a failure is logged (and has poisoned the journal).
fn log_failure() -> turnstile_storage::Done {
    Box::new(|result| {
        if let Err(e) = result {
            tracing::error!(error = %e, "journal write failed");
        }
    })
}

fn storage_error(e: StorageError) -> io::Error {
    io::Error::other(e)
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;
    use turnstile_storage::Options;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::impls::leader_id_adv::LeaderId::new(term, 1), index)
    }

    fn open(dir: &std::path::Path) -> LogStore {
        let (journal, recovered) = Journal::open(dir, Options::default()).unwrap();
        LogStore::durable(Arc::new(journal), recovered).unwrap()
    }

    /// The committed marker comes back as saved, not as the first bytes of the `Option` read as
    /// a bare log id (which once read back as `T1-N1.1` whatever was saved).
    #[tokio::test]
    async fn the_committed_marker_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.save_committed(Some(log_id(3, 4_242))).await.unwrap();
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);

        let mut store = open(dir.path());
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(3, 4_242)));
        store.save_committed(None).await.unwrap();
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);
        assert_eq!(open(dir.path()).read_committed().await.unwrap(), None);
    }

    #[test]
    fn decode_refuses_bytes_left_over() {
        let bytes = encode(&Some(log_id(1, 7))).unwrap();
        assert!(decode::<LogId>(&bytes).is_err());
        assert_eq!(decode::<Option<LogId>>(&bytes).unwrap(), Some(log_id(1, 7)));
    }
}
