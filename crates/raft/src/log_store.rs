//! The Raft log: every change in the journal of `crates/storage` (checksummed segments, group
//! commit), and the newest entries also in memory.
//!
//! openraft reads back the entries it just appended in order to apply them: those reads are served
//! from memory. Only a window of the newest entries is kept there (at most [`WINDOW_ENTRIES`]
//! entries and [`WINDOW_BYTES`] bytes of them, the newest always): older ones — wanted only by
//! a lagging reader, such as a follower catching up — are read back from the journal. Without the
//! bound the whole log since the last snapshot stayed in memory, with every payload pinning the
//! connection buffer it was read into: ~320 MB of RSS under the queue benchmark with nothing
//! stored, and a heap growing by page faults until the next snapshot freed it all at once.
//! Only committed entries leave the window: they can no longer be truncated, so what the journal
//! holds for them is final. An in-memory log (no journal) keeps everything. After a restart, the
//! entries below the window that the journal replayed are decoded too, once, for the apply that
//! follows (see [`LogStore::with_replayed`]); each is handed out once and then read from the journal.
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
use std::ops::{Bound, RangeBounds};
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

/// Most entries kept in memory by a durable log (see the module docs).
pub const WINDOW_ENTRIES: usize = 1024;
/// Most bytes of encoded entries kept in memory by a durable log (the newest entry is kept whatever
/// its size).
pub const WINDOW_BYTES: usize = 16 << 20;

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
    /// Log index → entry and its encoded size: every entry of an in-memory log, the newest ones of
    /// a durable log (the others are read back from the journal).
    log: BTreeMap<u64, (Entry, usize)>,
    /// The encoded size of the entries in `log`.
    log_bytes: usize,
    /// The entries below the window that the journal held when it was opened, decoded then: a
    /// restart applies them right away, and takes them from here (once each) instead of reading
    /// them back. See [`LogStore::with_replayed`].
    replayed: BTreeMap<u64, Entry>,
    /// The newest entry's id, wherever it is (`None`: no entry above the purge point).
    last: Option<LogId>,
    committed: Option<LogId>,
    vote: Option<Vote>,
}

impl Inner {
    /// Drops the oldest committed entries from memory while the window is over its bounds.
    fn shrink_window(&mut self) {
        let committed = self.committed.map(|id| id.index());
        while self.log.len() > 1 && (self.log.len() > WINDOW_ENTRIES || self.log_bytes > WINDOW_BYTES) {
            match self.log.first_entry() {
                Some(oldest) if committed.is_some_and(|c| *oldest.key() <= c) => {
                    self.log_bytes -= oldest.remove().1;
                }
                _ => return,
            }
        }
    }

    /// Drops the replayed entries up to and including `index` (purged, or covered by a snapshot).
    fn forget_replayed_upto(&mut self, index: u64) {
        self.replayed = self.replayed.split_off(&(index + 1));
    }

    fn remove_from_window(&mut self, removed: BTreeMap<u64, (Entry, usize)>) {
        self.log_bytes -= removed.values().map(|(_, size)| size).sum::<usize>();
    }
}

/// The entries a journal replayed, being decoded by up to two threads at once: one takes them
/// from the newest end, the other from the oldest ([`ReplayedTail::decode`]), until they meet.
#[derive(Debug)]
pub(crate) struct ReplayedTail {
    inner: Mutex<Tail>,
}

#[derive(Debug, Default)]
struct Tail {
    raw: std::collections::VecDeque<(u64, bytes::Bytes)>,
    /// Log index → entry and its encoded size.
    decoded: BTreeMap<u64, (Entry, usize)>,
    /// The first entry that did not decode: the log cannot be opened.
    failed: Option<io::Error>,
}

impl ReplayedTail {
    pub(crate) fn new(entries: BTreeMap<u64, bytes::Bytes>) -> ReplayedTail {
        ReplayedTail { inner: Mutex::new(Tail { raw: entries.into_iter().collect(), ..Tail::default() }) }
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        // Nothing panics while holding it; if a decoder thread did, what it left is still usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decodes entries, the newest or the oldest left first, until none is left (or one fails).
    pub(crate) fn decode(&self, newest_first: bool) {
        loop {
            let next = {
                let mut tail = self.lock();
                if tail.failed.is_some() {
                    return;
                }
                if newest_first { tail.raw.pop_back() } else { tail.raw.pop_front() }
            };
            let Some((index, data)) = next else { return };
            let decoded = decode::<Entry>(&data);
            let mut tail = self.lock();
            match decoded {
                Ok(entry) => drop(tail.decoded.insert(index, (entry, data.len()))),
                Err(error) => tail.failed = Some(error),
            }
        }
    }

    /// Every entry, decoded (those no thread took yet are decoded now).
    fn into_entries(self) -> io::Result<BTreeMap<u64, (Entry, usize)>> {
        self.decode(true);
        let tail = self.inner.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        match tail.failed {
            Some(error) => Err(error),
            None => Ok(tail.decoded),
        }
    }
}

impl LogStore {
    /// A log kept in memory only: nothing survives a restart.
    pub fn in_memory() -> LogStore {
        LogStore::default()
    }

    /// A log backed by `journal`, starting from what the journal held when it was opened (its
    /// entries decoded here; `LogStore::with_replayed` takes them decoded already).
    pub fn durable(journal: Arc<Journal>, mut recovered: Recovered) -> io::Result<LogStore> {
        let tail = ReplayedTail::new(std::mem::take(&mut recovered.entries));
        LogStore::with_replayed(journal, recovered, tail)
    }

    /// A log backed by `journal`, from what the journal held when it was opened: `recovered` for
    /// the vote, committed marker and purge point, `tail` for its entries (whatever no thread
    /// decoded yet is decoded here).
    ///
    /// The newest entries go into the window, up to its bounds: those the committed marker covers
    /// may leave it again at the first shrink. The others are kept decoded for the apply that
    /// follows a restart, which then neither reads the log a second time nor decodes it: the
    /// decoding is done while the snapshot loads, by two threads (restart with 1,000,000 queued
    /// 1 KiB messages: see docs/benchmarks.md).
    pub(crate) fn with_replayed(
        journal: Arc<Journal>,
        recovered: Recovered,
        tail: ReplayedTail,
    ) -> io::Result<LogStore> {
        let mut entries = tail.into_entries()?;
        // See the module docs: the purged entry itself is kept just above the journal's purge point.
        let last_purged = recovered.purged.and_then(|p| entries.remove(&(p + 1))).map(|(e, _)| e.log_id);
        let (mut log, mut log_bytes, mut replayed) = (BTreeMap::new(), 0, BTreeMap::new());
        let mut window_full = false;
        while let Some((index, (entry, size))) = entries.pop_last() {
            window_full = window_full
                || (!log.is_empty() && (log.len() >= WINDOW_ENTRIES || log_bytes + size > WINDOW_BYTES));
            if !window_full {
                log.insert(index, (entry, size));
                log_bytes += size;
            } else {
                replayed.insert(index, entry);
            }
        }
        let inner = Inner {
            last_purged,
            last: log.values().next_back().map(|(e, _)| e.log_id),
            log,
            log_bytes,
            replayed,
            // `save_committed` journals the whole `Option<LogId>`; it must be read back as one.
            committed: recovered.committed.as_deref().map(decode::<Option<LogId>>).transpose()?.flatten(),
            vote: recovered.vote.as_deref().map(decode).transpose()?,
        };
        Ok(LogStore { inner: Arc::new(Mutex::new(inner)), journal: Some(journal) })
    }

    /// Drops the decoded entries a restart will not apply: those the snapshot it starts from covers
    /// (a crash after a snapshot, before the purge after it was on disk).
    pub(crate) fn forget_replayed_upto(&self, index: u64) -> io::Result<()> {
        self.lock()?.forget_replayed_upto(index);
        Ok(())
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
        let (mut entries, from_disk) = {
            let mut inner = self.lock()?;
            let mut in_memory: Vec<Entry> =
                inner.log.range(range.clone()).map(|(_, (e, _))| e.clone()).collect();
            // Below the window: entries left in the journal only.
            let first_in_memory = inner.log.keys().next().copied().unwrap_or(u64::MAX);
            let from = match range.start_bound() {
                Bound::Included(i) => *i,
                Bound::Excluded(i) => i.saturating_add(1),
                Bound::Unbounded => 0,
            };
            // Exclusive: below the window, and not past the newest entry.
            let end = match range.end_bound() {
                Bound::Included(i) => i.saturating_add(1),
                Bound::Excluded(i) => *i,
                Bound::Unbounded => u64::MAX,
            }
            .min(first_in_memory)
            .min(inner.last.map_or(0, |id| id.index() + 1));
            let from = from.max(inner.last_purged.map_or(0, |id| id.index() + 1));
            let mut from_disk = (from < end).then(|| (from, end - 1));
            // After a restart: the entries decoded when the journal was opened, if all are there.
            if let Some((from, to)) = from_disk
                && inner.replayed.range(from..=to).count() as u64 == to - from + 1
            {
                let mut older = inner.replayed.split_off(&from);
                let mut newer = older.split_off(&(to + 1));
                inner.replayed.append(&mut newer);
                let mut taken: Vec<Entry> = older.into_values().collect();
                taken.append(&mut in_memory);
                in_memory = taken;
                from_disk = None;
            }
            (in_memory, from_disk)
        };
        if let (Some((from, to)), Some(journal)) = (from_disk, &self.journal) {
            let read = journal.read_entries(from, to).map_err(storage_error)?;
            if read.len() as u64 != to - from + 1 {
                return Err(io::Error::other(format!(
                    "log entries {from}..={to} left memory but only {} of them are in the journal",
                    read.len()
                )));
            }
            let mut older = Vec::with_capacity(read.len() + entries.len());
            for (index, data) in read {
                let entry = decode::<Entry>(&data)?;
                if entry.log_id.index() != index {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("journal entry {index} holds log id {}", entry.log_id),
                    ));
                }
                older.push(entry);
            }
            older.append(&mut entries);
            entries = older;
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock()?.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock()?;
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: inner.last.or(inner.last_purged) })
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
        {
            let mut inner = self.lock()?;
            inner.committed = committed;
            if self.journal.is_some() {
                inner.shrink_window();
            }
        }
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
                let index = entry.log_id.index();
                let size = match self.journal {
                    Some(_) => {
                        let data: bytes::Bytes = encode(&entry)?.into();
                        let size = data.len();
                        records.push(Record::Entry { index, data });
                        size
                    }
                    None => 0,
                };
                inner.last = Some(entry.log_id);
                inner.log_bytes += size;
                if let Some((_, replaced)) = inner.log.insert(index, (entry, size)) {
                    inner.log_bytes -= replaced;
                }
            }
            if self.journal.is_some() {
                inner.shrink_window();
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
        let removed = inner.log.split_off(&from);
        inner.remove_from_window(removed);
        drop(inner.replayed.split_off(&from));
        inner.last = last_log_id.filter(|id| Some(id.index()) > inner.last_purged.map(|p| p.index()));
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
        // A follower that installed a snapshot from past its own log purges through an entry it
        // never had: that entry is written, blank, for its term (as a restore seeds a log).
        let holds_entry = inner.last.is_some_and(|last| last.index() >= log_id.index());
        let keep = inner.log.split_off(&(log_id.index() + 1));
        let removed = std::mem::replace(&mut inner.log, keep);
        inner.remove_from_window(removed);
        inner.forget_replayed_upto(log_id.index());
        inner.last_purged = Some(log_id);
        if inner.last.is_some_and(|last| last.index() <= log_id.index()) {
            inner.last = None;
        }
        drop(inner);
        // Entry `index` itself stays in the journal: it carries the purged log id's term.
        if !holds_entry {
            self.journal_quietly(purged_through(log_id)?);
        } else if let Some(below) = log_id.index().checked_sub(1) {
            self.journal_quietly(vec![Record::Purge(below)]);
        }
        Ok(())
    }
}

/// The journal records of a log that has taken a snapshot covering `log_id` and purged everything it
/// covers: the purge, and the purged entry itself, blank, kept above it to carry its term (see the module
/// docs). What a restore writes into a new data dir before its first start, so that the node opens it as
/// it would reopen its own.
pub(crate) fn purged_through(log_id: LogId) -> io::Result<Vec<Record>> {
    use openraft::entry::RaftEntry;
    let data = encode(&Entry::new_blank(log_id))?.into();
    let mut records = vec![Record::Entry { index: log_id.index(), data }];
    if let Some(below) = log_id.index().checked_sub(1) {
        records.push(Record::Purge(below));
    }
    Ok(records)
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

    /// A log seeded with `purged_through` (as a restore does) opens as one that purged there
    /// itself: the same purged log id, term included, and nothing above it.
    #[tokio::test]
    async fn a_seeded_log_opens_like_one_that_purged_itself() {
        let purged_itself = tempfile::tempdir().unwrap();
        let mut store = open(purged_itself.path());
        store.append((1..=40).map(entry), IOFlushed::noop()).await.unwrap();
        store.purge(log_id(1, 40)).await.unwrap();
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);

        let seeded = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(seeded.path(), Options::default()).unwrap();
        let (done, written) = std::sync::mpsc::channel();
        journal.append(purged_through(log_id(1, 40)).unwrap(), Box::new(move |r| done.send(r).unwrap()));
        written.recv().unwrap().unwrap();
        journal.close().unwrap();

        let expected = LogState { last_purged_log_id: Some(log_id(1, 40)), last_log_id: Some(log_id(1, 40)) };
        for dir in [purged_itself.path(), seeded.path()] {
            assert_eq!(open(dir).get_log_state().await.unwrap(), expected, "{}", dir.display());
        }
    }

    /// A follower that installs a snapshot from past its own log purges through an entry it never
    /// had. After a restart it must know that purge, term included: it once came back with no
    /// purge point, and the node could not start ("log entries 0..=0 left memory").
    #[tokio::test]
    async fn a_purge_past_the_last_entry_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        store.append((1..=10).map(entry), IOFlushed::noop()).await.unwrap();
        store.purge(log_id(2, 40)).await.unwrap();
        let mut next = entry(41);
        next.log_id = log_id(2, 41);
        store.append([next], IOFlushed::noop()).await.unwrap();
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);

        let mut store = open(dir.path());
        let state = store.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(2, 40)), Some(log_id(2, 41))));
        assert_eq!(ids(&store.try_get_log_entries(..).await.unwrap()), vec![(41, 1_041)]);
    }

    fn entry(index: u64) -> Entry {
        let batch = crate::Batch { now: 1_000 + index, commands: Vec::new() };
        Entry { log_id: log_id(1, index), payload: openraft::EntryPayload::Normal(batch) }
    }

    /// Log index and the batch's `now` of each entry: enough to tell entries apart.
    fn ids(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| match &e.payload {
                openraft::EntryPayload::Normal(batch) => (e.log_id.index(), batch.now),
                _ => (e.log_id.index(), 0),
            })
            .collect()
    }

    fn expected(indexes: std::ops::RangeInclusive<u64>) -> Vec<(u64, u64)> {
        indexes.map(|i| (i, 1_000 + i)).collect()
    }

    /// Only a window of committed entries stays in memory; every entry still reads back, older ones
    /// from the journal, before and after a restart and a purge.
    #[tokio::test]
    async fn a_durable_log_keeps_a_window_in_memory_and_reads_the_rest_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let total = WINDOW_ENTRIES as u64 * 2 + 100;
        for chunk in (1..=total).collect::<Vec<_>>().chunks(100) {
            store.append(chunk.iter().map(|i| entry(*i)), IOFlushed::noop()).await.unwrap();
        }
        let in_memory = |store: &LogStore| store.inner.lock().unwrap().log.len();
        assert_eq!(in_memory(&store) as u64, total, "nothing leaves memory before it is committed");
        store.save_committed(Some(log_id(1, total - 10))).await.unwrap();
        assert_eq!(in_memory(&store), WINDOW_ENTRIES);
        assert_eq!(ids(&store.try_get_log_entries(1..=total).await.unwrap()), expected(1..=total));
        assert_eq!(ids(&store.try_get_log_entries(5..8).await.unwrap()), expected(5..=7));
        assert!(store.try_get_log_entries(5..5).await.unwrap().is_empty());
        assert!(store.try_get_log_entries(0..0).await.unwrap().is_empty());
        assert_eq!(ids(&store.try_get_log_entries(total - 1..).await.unwrap()), expected(total - 1..=total));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(log_id(1, total)));

        store.purge(log_id(1, 50)).await.unwrap();
        assert_eq!(ids(&store.try_get_log_entries(..).await.unwrap()), expected(51..=total));
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);

        let mut store = open(dir.path());
        assert!(in_memory(&store) <= WINDOW_ENTRIES);
        assert_eq!(ids(&store.try_get_log_entries(..).await.unwrap()), expected(51..=total));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            (state.last_purged_log_id, state.last_log_id),
            (Some(log_id(1, 50)), Some(log_id(1, total)))
        );

        // A truncation inside the window, then new entries: the log reads back as rewritten.
        store.truncate_after(Some(log_id(1, total - 5))).await.unwrap();
        let mut rewritten = entry(total - 4);
        rewritten.log_id = log_id(2, total - 4);
        store.append([rewritten], IOFlushed::noop()).await.unwrap();
        let read = store.try_get_log_entries(total - 6..).await.unwrap();
        assert_eq!(ids(&read), expected(total - 6..=total - 4));
        assert_eq!(read[2].log_id, log_id(2, total - 4));
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(2, total - 4)));
    }

    /// After a restart the entries below the window are decoded already: each is served from
    /// memory once (what the apply after a restart reads), then from the journal; a snapshot's
    /// coverage, a truncation and a purge drop them too.
    #[tokio::test]
    async fn a_restart_serves_the_replayed_entries_once_then_reads_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path());
        let total = WINDOW_ENTRIES as u64 * 2 + 100;
        store.append((1..=total).map(entry), IOFlushed::noop()).await.unwrap();
        store.save_committed(Some(log_id(1, total))).await.unwrap();
        store.journal.as_ref().unwrap().sync().unwrap();
        drop(store);

        let mut store = open(dir.path());
        let replayed =
            |store: &LogStore| store.inner.lock().unwrap().replayed.keys().copied().collect::<Vec<_>>();
        let below_window = total - WINDOW_ENTRIES as u64;
        assert_eq!(replayed(&store), (1..=below_window).collect::<Vec<_>>());
        store.forget_replayed_upto(100).unwrap();
        assert_eq!(replayed(&store), (101..=below_window).collect::<Vec<_>>());

        assert_eq!(ids(&store.try_get_log_entries(101..=600).await.unwrap()), expected(101..=600));
        assert_eq!(replayed(&store), (601..=below_window).collect::<Vec<_>>(), "taken, not copied");
        assert_eq!(ids(&store.try_get_log_entries(101..=600).await.unwrap()), expected(101..=600));
        // Partly replayed (50..=100 are not): all of it from the journal, nothing taken.
        assert_eq!(ids(&store.try_get_log_entries(50..=700).await.unwrap()), expected(50..=700));
        assert_eq!(replayed(&store).first(), Some(&601));

        store.truncate_after(Some(log_id(1, 800))).await.unwrap();
        store.purge(log_id(1, 650)).await.unwrap();
        assert_eq!(replayed(&store), (651..=800).collect::<Vec<_>>());
        assert_eq!(ids(&store.try_get_log_entries(..).await.unwrap()), expected(651..=800));
        assert!(replayed(&store).is_empty());
    }

    /// Two threads decoding a replayed tail from both ends leave every entry decoded, once; an
    /// entry that does not decode fails the whole tail.
    #[test]
    fn a_replayed_tail_decoded_from_both_ends_holds_every_entry_once() {
        let raw = |i: u64| bytes::Bytes::from(encode(&entry(i)).unwrap());
        let tail = ReplayedTail::new((1..=500).map(|i| (i, raw(i))).collect());
        std::thread::scope(|scope| {
            scope.spawn(|| tail.decode(true));
            tail.decode(false);
        });
        let decoded: Vec<Entry> = tail.into_entries().unwrap().into_values().map(|(e, _)| e).collect();
        assert_eq!(ids(&decoded), expected(1..=500));

        let mut damaged: BTreeMap<u64, bytes::Bytes> = (1..=500).map(|i| (i, raw(i))).collect();
        damaged.insert(250, bytes::Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(ReplayedTail::new(damaged).into_entries().is_err());
    }

    /// An in-memory log has nowhere else to read from: it keeps every entry.
    #[tokio::test]
    async fn an_in_memory_log_keeps_everything() {
        let mut store = LogStore::in_memory();
        let total = WINDOW_ENTRIES as u64 + 10;
        store.append((1..=total).map(entry), IOFlushed::noop()).await.unwrap();
        store.save_committed(Some(log_id(1, total))).await.unwrap();
        assert_eq!(ids(&store.try_get_log_entries(..).await.unwrap()), expected(1..=total));
    }

    #[test]
    fn decode_refuses_bytes_left_over() {
        let bytes = encode(&Some(log_id(1, 7))).unwrap();
        assert!(decode::<LogId>(&bytes).is_err());
        assert_eq!(decode::<Option<LogId>>(&bytes).unwrap(), Some(log_id(1, 7)));
    }
}
