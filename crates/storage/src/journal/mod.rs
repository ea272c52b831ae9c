//! The journal: an append-only, checksummed, segmented log with group commit.
//!
//! ```text
//!  append(records, done) ── encode ──► queue ──► is a thread writing already?
//!                                                  yes: return; that thread takes this append too
//!                                                  no:  this thread becomes the writer:
//!                                                       loop {
//!                                                         take everything queued
//!                                                         write it (one write per segment)
//!                                                         Always: ONE fdatasync for the group
//!                                                         call every `done` in order
//!                                                       } until the queue is empty
//!  append_deferred(records, done) ── encode ──► queue (written with the next group, or at close)
//! ```
//! While one fdatasync runs, new appends queue up and share the next one: that is where durable throughput
//! comes from (one fdatasync costs milliseconds on some disks). The writing is done by a caller, not by a
//! thread of the journal's own: with one caller (the Raft log, whose batcher already gathers everything that
//! arrived during the last fdatasync into the next entry) an append costs no hand-off to another thread and
//! back, two wake-ups on the path of every durable write. Under `Interval` a background thread makes the
//! periodic fdatasync, while writers keep writing; under `Interval` and `Never` it also makes one every
//! few MiB written, so that a segment roll (which fsyncs the segment it ends) has little left to write back.
//! Segments a purge made obsolete are deleted by a thread of their own (`journal-delete`): an unlink of a
//! 64 MiB segment and the directory fsync after it took ~47 ms here, on the path of every write.
//!
//! | file | what |
//! |---|---|
//! | `commit.rs` | the queue appends wait in, and group commit: whoever finds the files free writes it all |
//! | `append.rs` | an append encoded on the caller's thread: its frames and what they change |
//! | `writer.rs` | the files: a group written under one frame, segment rolls, the group's fdatasync |
//! | `sync.rs` | the background fdatasync thread (`Interval`, `Never`), and the fdatasync every sync goes through |
//! | `deleter.rs` | deleting obsolete segments on the `journal-delete` thread |
//! | `places.rs` | where each entry is in the files, and reading entries back |
//! | `stats.rs` | `JournalStats` and its fsync histogram |

mod append;
mod commit;
mod deleter;
mod places;
mod stats;
mod sync;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{IoContext, StorageError};
use crate::file::create_dir_durable;
use crate::record::Record;
use crate::recovery::{Recovered, replay};

use append::encode_append;
use commit::{Command, Inner};
use deleter::spawn_deleter;
use places::Places;
pub use stats::{FSYNC_HISTOGRAM_BUCKETS, JournalStats};
use sync::{ToSyncer, background_syncs};
use writer::Writer;

/// When an append is acknowledged, and what a crash can therefore lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after fdatasync (shared by everything queued together: group commit). Nothing
    /// acknowledged is lost, whatever crashes.
    Always,
    /// Acknowledge after write(2); a background fdatasync runs once per interval while there are unsynced
    /// writes, and every few MiB written. A process crash loses nothing acknowledged; a power loss or kernel
    /// crash can lose up to about one interval of acknowledged writes.
    Interval(Duration),
    /// Acknowledge after write(2); fdatasync on `sync`, segment roll and close, and in the background every few
    /// MiB written (so that a roll has little to write back; no acknowledgement waits for it). A power loss or
    /// kernel crash can lose everything not yet written back.
    Never,
}

/// How the journal is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub fsync: FsyncPolicy,
    /// A new segment is started once the current one reaches this size (checked between appends, so a segment
    /// can exceed it by one append).
    pub segment_bytes: u64,
    /// Operator flag: cut the log at a corrupt record instead of refusing to start.
    pub truncate_corrupt: bool,
    /// Appends only queue on the caller's thread; a writer thread of the journal's own writes and
    /// fsyncs the groups. For a node of a cluster: its Raft thread then goes on (the leader sends
    /// the entries to the followers) while its own fsync runs, so a commit takes about the longer
    /// of the two rather than their sum. On a single node it costs a wake-up per group and wins
    /// nothing (measured; docs/benchmarks.md).
    pub write_behind: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 * 1024 * 1024,
            truncate_corrupt: false,
            write_behind: false,
        }
    }
}

/// Called once, on the thread that wrote the group (the appender's own, or another appender's), when an
/// append is durable under the policy (or failed). Keep it cheap (send on a channel): the next group commit
/// waits for it.
pub type Done = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// State shared by the handle, the writing caller and the background sync thread.
#[derive(Debug, Default)]
struct Shared {
    poisoned: AtomicBool,
    /// The failure that poisoned the journal (the first one), for whoever must say why writes stop.
    poisoned_by: Mutex<Option<StorageError>>,
    fail_next_sync: AtomicBool,
    /// Test hook: milliseconds the next fdatasync sleeps before it starts (0: none).
    delay_next_sync_ms: std::sync::atomic::AtomicU64,
    /// Fault hook: milliseconds every fdatasync sleeps before it starts while this is set (0: none).
    sync_delay_ms: std::sync::atomic::AtomicU64,
    stats: Mutex<JournalStats>,
    /// Where every entry in the log is, as of what is in the files.
    index: Mutex<Places>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, JournalStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poison(&self, cause: &StorageError) {
        let mut poisoned_by = self.poisoned_by.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            *poisoned_by = Some(cause.clone());
            tracing::error!(
                %cause,
                "journal: a write or fsync failed; refusing all further writes (restart to recover)"
            );
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Places> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The durable log. `Send + Sync`: share it behind an `Arc`.
pub struct Journal {
    inner: Arc<Inner>,
    /// `Interval` and `Never`: the thread that makes the background fdatasyncs, and what stops it.
    syncer: Option<(Sender<ToSyncer>, JoinHandle<()>)>,
    /// The thread that deletes obsolete segments; it ends when the writer drops its sender.
    deleter: Option<JoinHandle<()>>,
    /// `write_behind` only: the thread that writes what appends queue.
    write_behind: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("shared", &self.inner.shared).finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, replays every segment, and returns the state it describes.
    ///
    /// Segments live in `dir/log/`. A fresh segment, starting with a checkpoint, is begun on every open, so the
    /// segments replayed are never written again.
    pub fn open(dir: &Path, options: Options) -> Result<(Journal, Recovered), StorageError> {
        let log_dir = dir.join("log");
        create_dir_durable(&log_dir)?;
        let (mut recovered, segments) = replay(&log_dir, options.truncate_corrupt)?;
        let shared = Arc::new(Shared {
            index: Mutex::new(Places::new(std::mem::take(&mut recovered.places))),
            ..Shared::default()
        });
        let mut writer = Writer {
            log_dir: log_dir.clone(),
            policy: options.fsync,
            segment_bytes: options.segment_bytes,
            segments: segments.into(),
            file: None,
            writes: 0,
            background_sync_running: false,
            active_len: 0,
            zeroed_until: 0,
            active_has_records: false,
            checkpoint: recovered.checkpoint(),
            dirty: false,
            unsynced_bytes: 0,
            last_sync: Instant::now(),
            pending: Vec::new(),
            shared: Arc::clone(&shared),
            deleter: None,
        };
        writer.start_segment()?;
        // At open, on this thread: the journal is not serving writes yet.
        writer.delete_obsolete_segments();
        let (deletions, deleter) = spawn_deleter(writer.log_dir.clone())?;
        writer.deleter = Some(deletions);
        *shared.stats() = JournalStats { segments: writer.segments.len() as u64, ..JournalStats::default() };
        let (to_syncer, syncer_inbox) = mpsc::channel();
        let inner = Arc::new(Inner {
            log_dir,
            syncer: to_syncer.clone(),
            finished_sync: Mutex::new(None),
            queue: Mutex::new(Vec::new()),
            writer: Mutex::new(writer),
            closed: AtomicBool::new(false),
            queued: Condvar::new(),
            write_behind: options.write_behind,
            shared,
        });
        let write_behind = if options.write_behind {
            let inner = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("journal-write".into())
                .spawn(move || inner.write_behind())
                .ctx(|| "spawning the journal's writer thread".to_string())?;
            Some(handle)
        } else {
            None
        };
        // `Always` syncs every group; the others sync in the background (`sync.rs`).
        let syncer = if options.fsync == FsyncPolicy::Always {
            None
        } else {
            let interval = match options.fsync {
                FsyncPolicy::Interval(interval) => Some(interval),
                _ => None,
            };
            let inner = Arc::clone(&inner);
            let handle = std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || background_syncs(&inner, interval, &syncer_inbox))
                .ctx(|| "spawning the journal's background sync thread".to_string())?;
            Some((to_syncer, handle))
        };
        Ok((Journal { inner, syncer, deleter: Some(deleter), write_behind }, recovered))
    }

    /// Writes records in order; `done` is called exactly once when they are durable under the policy (or with
    /// the error). Unless another thread is writing already (which then writes these too, and calls `done`),
    /// the write and fdatasync happen on the caller's thread before this returns: call it where blocking on
    /// the disk is fine.
    ///
    /// After `close`, `done` gets `Closed`.
    pub fn append(&self, records: Vec<Record>, done: Done) {
        self.send(Command::Append(encode_append(&records, done)));
    }

    /// Like [`Journal::append`], but never writes on the caller's thread: the records wait in the queue and go
    /// out with the next append's group (or the background sync's, or at close). For records nobody waits
    /// for and whose loss in a crash is harmless (the committed marker): they then cost no write of their own.
    /// Until something else is appended they are not even in the kernel.
    pub fn append_deferred(&self, records: Vec<Record>, done: Done) {
        let append = Command::Append(encode_append(&records, done));
        if self.inner.closed.load(Ordering::SeqCst) {
            return self.send(append);
        }
        self.inner.queue().push(append);
    }

    /// Blocks until everything appended so far is durable (fdatasync, whatever the policy). For votes and clean
    /// shutdown.
    pub fn sync(&self) -> Result<(), StorageError> {
        let (reply, answer) = mpsc::channel();
        self.send(Command::Sync(reply));
        answer.recv().unwrap_or(Err(StorageError::Closed))
    }

    /// Counters since open.
    pub fn stats(&self) -> JournalStats {
        let mut stats = self.inner.shared.stats().clone();
        stats.log_bytes = self.log_bytes();
        stats
    }

    /// Whether an earlier write or fsync failed (every later write is refused).
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::SeqCst)
    }

    /// The failure that poisoned the journal, if one has: what a refused write should name (a full
    /// disk, say: [`StorageError::is_no_space`]).
    /// Asked on every proposal: the flag is read first, the lock only once it is set.
    pub fn poisoned_by(&self) -> Option<StorageError> {
        if !self.inner.shared.poisoned.load(Ordering::Acquire) {
            return None;
        }
        self.inner.shared.poisoned_by.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Final fdatasync, background threads joined. Fails if the journal is poisoned or the final fsync fails.
    pub fn close(mut self) -> Result<(), StorageError> {
        self.shut_down()
    }

    /// Makes the next fdatasync fail, as if the disk had reported an error. For tests of poisoning, here and in
    /// the crates that use the journal.
    #[doc(hidden)]
    pub fn fail_next_sync_for_test(&self) {
        self.inner.shared.fail_next_sync.store(true, Ordering::SeqCst);
    }

    /// Makes the next fdatasync take at least `delay` longer, as a slow disk would. For tests of what
    /// waits for it.
    #[doc(hidden)]
    pub fn delay_next_sync_for_test(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.shared.delay_next_sync_ms.store(millis, Ordering::SeqCst);
    }

    /// Makes every fdatasync take at least `delay` longer until this is called again with zero, as a
    /// slow disk would: the fault hook a torture run's nemesis uses (the server offers it only with
    /// `--fault-injection`). Each delayed fdatasync is counted in [`JournalStats::delayed_fsyncs`],
    /// so a test can tell the hook acted without timing anything.
    #[doc(hidden)]
    pub fn set_sync_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.inner.shared.sync_delay_ms.store(millis, Ordering::SeqCst);
    }

    /// The standing fdatasync delay set by [`Journal::set_sync_delay`].
    #[doc(hidden)]
    pub fn sync_delay(&self) -> Duration {
        Duration::from_millis(self.inner.shared.sync_delay_ms.load(Ordering::SeqCst))
    }

    fn send(&self, command: Command) {
        if self.inner.closed.load(Ordering::SeqCst) {
            match command {
                Command::Append(append) => (append.done)(Err(StorageError::Closed)),
                Command::Sync(reply) => drop(reply.send(Err(StorageError::Closed))),
            }
            return;
        }
        self.inner.submit(command);
    }

    /// Once: stops the background thread, writes what is still queued, makes it all durable.
    fn shut_down(&mut self) -> Result<(), StorageError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if let Some((stop, handle)) = self.syncer.take() {
            let _ = stop.send(ToSyncer::Stop);
            let _ = handle.join();
        }
        if let Some(handle) = self.write_behind.take() {
            // It sees `closed` and ends; what it left queued is written below. Notified under
            // the queue's lock, so it cannot miss this between its look at `closed` and its wait.
            let queue = self.inner.queue();
            self.inner.queued.notify_all();
            drop(queue);
            let _ = handle.join();
        }
        let mut writer = self.inner.lock_writer();
        let group = std::mem::take(&mut *self.inner.queue());
        if !group.is_empty() {
            writer.commit_group(group);
        }
        let ended = if writer.is_poisoned() {
            Err(StorageError::Poisoned)
        } else {
            writer.end_active().inspect_err(|e| writer.poison(e))
        };
        // Its sender gone, the deleter finishes what it was given and ends.
        writer.deleter = None;
        drop(writer);
        if let Some(deleter) = self.deleter.take() {
            let _ = deleter.join();
        }
        ended
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::error!(%error, "journal: closing on drop failed");
        }
    }
}
