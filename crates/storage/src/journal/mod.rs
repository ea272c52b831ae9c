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
//! periodic fdatasync, while writers keep writing. Segments a purge made obsolete are deleted by a thread of their own (`journal-delete`):
//! an unlink of a 64 MiB segment and the directory fsync after it took ~47 ms here, on the path of every write.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{IoContext, StorageError};
use crate::file::{create_dir_durable, sync_dir};
use crate::index::{Entries, EntryAt, drop_above, drop_upto};
use crate::record::{
    Checkpoint, Decoded, Frame, GROUP_FRAME_BYTES, Record, encode_checkpoint, encode_record, group_frame,
    read_frame,
};
use crate::recovery::{Recovered, replay};
use crate::segment::Segment;

/// When an append is acknowledged, and what a crash can therefore lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Acknowledge only after fdatasync (shared by everything queued together: group commit). Nothing
    /// acknowledged is lost, whatever crashes.
    Always,
    /// Acknowledge after write(2); a background fdatasync runs at most once per interval while there are
    /// unsynced writes. A process crash loses nothing acknowledged; a power loss or kernel crash can lose up to
    /// about one interval of acknowledged writes.
    Interval(Duration),
    /// Acknowledge after write(2); fdatasync only on `sync`, segment roll and close. A power loss or kernel crash
    /// can lose everything the kernel had not yet written back.
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
}

impl Default for Options {
    fn default() -> Self {
        Options { fsync: FsyncPolicy::Always, segment_bytes: 64 * 1024 * 1024, truncate_corrupt: false }
    }
}

/// How far ahead of the records the active segment is zero-filled. A segment grows in these steps,
/// so most fdatasyncs find its size unchanged and write only data: on ext4 without a journal (this
/// machine) that took a group commit's fdatasync from 327–368 µs to 257–270 µs under load.
const ZERO_STEP: u64 = 1 << 20;

/// Number of buckets in [`JournalStats::fsync_micros_log2`].
pub const FSYNC_HISTOGRAM_BUCKETS: usize = 24;

/// Counters since the journal was opened (fsyncs made while opening are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// fdatasync calls on segment files (group commits, background syncs, rolls, `sync`, close).
    pub fsyncs: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segment files (frames and checkpoints).
    pub bytes: u64,
    /// `append` calls processed.
    pub appends: u64,
    /// Groups a writer took from the queue (each group is written together and shares one fsync).
    pub batches: u64,
    /// Appends in the most recent group.
    pub last_batch_appends: u64,
    /// Appends in the largest group so far.
    pub max_batch_appends: u64,
    pub fsync_nanos_total: u64,
    pub fsync_nanos_max: u64,
    /// fsync latency histogram: bucket `i` counts fsyncs that took less than 2^i µs and at least 2^(i-1) µs
    /// (bucket 0: under 1 µs); the last bucket also counts everything slower.
    pub fsync_micros_log2: [u64; FSYNC_HISTOGRAM_BUCKETS],
    /// Segment files currently on disk.
    pub segments: u64,
    /// Bytes of the entries after the purge point, which a restart replays ([`Journal::log_bytes`]).
    pub log_bytes: u64,
}

impl JournalStats {
    /// The exclusive upper bound of histogram bucket `bucket`, in microseconds (for Prometheus' `le`).
    pub fn fsync_bucket_upper_micros(bucket: usize) -> u64 {
        1u64 << bucket.min(63)
    }

    fn record_fsync(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs += 1;
        self.fsync_nanos_total = self.fsync_nanos_total.saturating_add(nanos);
        self.fsync_nanos_max = self.fsync_nanos_max.max(nanos);
        let micros = nanos / 1_000;
        let bucket = if micros == 0 { 0 } else { (u64::BITS - micros.leading_zeros()) as usize };
        self.fsync_micros_log2[bucket.min(FSYNC_HISTOGRAM_BUCKETS - 1)] += 1;
    }
}

/// Called once, on the thread that wrote the group (the appender's own, or another appender's), when an
/// append is durable under the policy (or failed). Keep it cheap (send on a channel): the next group commit
/// waits for it.
pub type Done = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// What waits in the queue for a writer.
enum Command {
    Append(EncodedAppend),
    Sync(Sender<Result<(), StorageError>>),
}

/// One `append` call, encoded on the caller's thread, with what the writer must remember about it.
struct EncodedAppend {
    /// The frames, or the error that encoding hit (delivered to `done` by the writer, in order).
    frames: Result<Vec<u8>, StorageError>,
    records: u64,
    changes: StateChanges,
    /// Whether it holds a log entry or a vote, which `Always` must make durable before `done`.
    /// Markers alone (committed index, purge, truncate) ride along with the next fdatasync: the
    /// file is synced as a whole and written in order, so they are durable before any entry that
    /// follows them, and losing the newest of them in a crash is harmless (the committed index is
    /// found again, purged entries are purged again, truncated entries were never acknowledged).
    needs_sync: bool,
    /// How the records change the index of entry places, in order; an entry's place is its frame's
    /// offset within `frames` until the writer knows where `frames` goes.
    index_changes: Vec<IndexChange>,
    done: Done,
}

/// One record's effect on the index (see `crate::index`).
#[derive(Debug, Clone, Copy)]
enum IndexChange {
    Entry { index: u64, at: EntryAt },
    TruncateAfter(Option<u64>),
    Purge(u64),
}

/// The parts of an append that a checkpoint or segment deletion depends on.
#[derive(Default)]
struct StateChanges {
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<u64>,
    max_entry: Option<u64>,
}

/// State shared by the handle, the writing caller and the background sync thread.
#[derive(Debug, Default)]
struct Shared {
    poisoned: AtomicBool,
    fail_next_sync: AtomicBool,
    /// Test hook: milliseconds the next fdatasync sleeps before it starts (0: none).
    delay_next_sync_ms: std::sync::atomic::AtomicU64,
    stats: Mutex<JournalStats>,
    /// Where every entry in the log is, as of what is in the files.
    index: Mutex<Places>,
}

/// The index of entry places, and the bytes of the frames it lists.
#[derive(Debug, Default)]
struct Places {
    at: Entries<EntryAt>,
    bytes: u64,
}

impl Places {
    fn new(at: Entries<EntryAt>) -> Places {
        let bytes = at.values().map(|at| at.len as u64).sum();
        Places { at, bytes }
    }

    /// Applies one record's change, keeping `bytes` the sum of the places' lengths.
    fn apply(&mut self, change: IndexChange) {
        let length = |at: &EntryAt| at.len as u64;
        let removed: u64 = match change {
            IndexChange::Entry { index, at } => {
                self.bytes += length(&at);
                self.at.insert(index, at).as_ref().map_or(0, length)
            }
            IndexChange::TruncateAfter(after) => drop_above(&mut self.at, after).values().map(length).sum(),
            IndexChange::Purge(upto) => drop_upto(&mut self.at, upto).values().map(length).sum(),
        };
        self.bytes -= removed;
    }
}

/// The queue and the files, shared with the background sync thread.
struct Inner {
    log_dir: PathBuf,
    /// Where a writer hands a due background fdatasync (only `Interval` has a thread reading it).
    syncer: Sender<ToSyncer>,
    /// A background fdatasync that ended, until whoever holds the files next takes note of it.
    finished_sync: Mutex<Option<FinishedSync>>,
    /// Appends and syncs not yet taken by a writer, in arrival order.
    queue: Mutex<Vec<Command>>,
    /// Held by whichever thread is writing; only it touches the files.
    writer: Mutex<Writer>,
    /// Set by `close`: later appends and syncs get `Closed`.
    closed: AtomicBool,
    shared: Arc<Shared>,
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, Vec<Command>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the files. A panic while writing poisons the journal (what it wrote is unknown).
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            self.shared.poisoned.store(true, Ordering::SeqCst);
            poisoned.into_inner()
        })
    }

    /// With the files held: takes note of a background fdatasync that ended, then starts the next one if
    /// it is due (to be run by [`Inner::run_background_sync`], without the files).
    fn start_background_sync(&self, writer: &mut Writer) -> Option<BackgroundSync> {
        self.note_finished_sync(writer);
        writer.start_background_sync()
    }

    /// The fdatasync itself; a failure poisons the journal at once. Its outcome waits for whoever holds the
    /// files next ([`Inner::note_finished_sync`]).
    fn run_background_sync(&self, sync: BackgroundSync) {
        let began = Instant::now();
        let result = fdatasync(&self.shared, &sync.file);
        if let Err(error) = &result {
            tracing::error!(file = %sync.path.display(), %error, "journal: background fdatasync failed");
            self.shared.poison();
        }
        let finished = FinishedSync { sync, result, took: began.elapsed() };
        *self.finished_sync.lock().unwrap_or_else(PoisonError::into_inner) = Some(finished);
    }

    fn note_finished_sync(&self, writer: &mut Writer) {
        let finished = self.finished_sync.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(FinishedSync { sync, result, took }) = finished {
            writer.finish_background_sync(&sync, result, took);
        }
    }

    /// Runs `f` with the files if nobody is writing (then writes what was queued meanwhile); `None` if
    /// somebody is.
    fn with_idle_writer<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> Option<T> {
        let mut writer = match self.writer.try_lock() {
            Ok(writer) => writer,
            Err(TryLockError::WouldBlock) => return None,
            Err(TryLockError::Poisoned(poisoned)) => {
                self.shared.poisoned.store(true, Ordering::SeqCst);
                poisoned.into_inner()
            }
        };
        let out = f(&mut writer);
        drop(writer);
        // An appender that found the files taken just now left its append queued.
        self.drain();
        Some(out)
    }

    /// Queues `command`, then writes everything queued unless another thread is writing already.
    fn submit(&self, command: Command) {
        self.queue().push(command);
        self.drain();
    }

    /// Writes everything queued, unless another thread holds the files: that one drains the queue when it
    /// lets go (whoever holds the writer calls this after letting go), so nothing is left queued.
    fn drain(&self) {
        loop {
            let mut writer = match self.writer.try_lock() {
                Ok(writer) => writer,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(poisoned)) => {
                    self.shared.poisoned.store(true, Ordering::SeqCst);
                    poisoned.into_inner()
                }
            };
            loop {
                // Checked before taking more work, so that a steady stream of appends cannot keep the
                // background thread from starting one (it would never get the files); it runs there.
                if let Some(sync) = self.start_background_sync(&mut writer)
                    && let Err(mpsc::SendError(ToSyncer::Run(sync))) = self.syncer.send(ToSyncer::Run(sync))
                {
                    // Closing: the background thread is gone; sync here.
                    self.run_background_sync(sync);
                    self.note_finished_sync(&mut writer);
                }
                let group = std::mem::take(&mut *self.queue());
                if group.is_empty() {
                    break;
                }
                writer.commit_group(group);
            }
            drop(writer);
            // Something queued after the last look but before the writer was let go would be stranded.
            if self.queue().is_empty() {
                return;
            }
        }
    }
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, JournalStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn poison(&self) {
        if !self.poisoned.swap(true, Ordering::SeqCst) {
            tracing::error!(
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
    /// `Interval` only: the thread that makes the periodic fdatasync, and what stops it.
    syncer: Option<(Sender<ToSyncer>, JoinHandle<()>)>,
    /// The thread that deletes obsolete segments; it ends when the writer drops its sender.
    deleter: Option<JoinHandle<()>>,
}

/// Work for the `journal-delete` thread.
enum Deletion {
    /// Delete these obsolete segments, oldest first, then fsync the log directory.
    Segments(Vec<PathBuf>),
    /// Answered once everything sent before it is done.
    Flush(Sender<()>),
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
            shared,
        });
        let syncer = match options.fsync {
            FsyncPolicy::Interval(interval) => {
                let inner = Arc::clone(&inner);
                let handle = std::thread::Builder::new()
                    .name("journal-sync".into())
                    .spawn(move || background_syncs(&inner, interval, &syncer_inbox))
                    .ctx(|| "spawning the journal's background sync thread".to_string())?;
                Some((to_syncer, handle))
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok((Journal { inner, syncer, deleter: Some(deleter) }, recovered))
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

    /// Reads back the entries with indexes in `from..=to` that are in the files, in index order, each
    /// checked against its checksum: for entries their user no longer keeps in memory. An entry still
    /// queued (appended while another thread was writing) is not in the files yet and is left out, as
    /// are purged and truncated ones. Reads from the page cache or the disk; never waits for a writer.
    pub fn read_entries(&self, from: u64, to: u64) -> Result<Vec<(u64, Bytes)>, StorageError> {
        if from > to {
            return Ok(Vec::new());
        }
        let places: Vec<(u64, EntryAt)> =
            self.inner.shared.index().at.range(from..=to).map(|(index, at)| (*index, *at)).collect();
        let mut entries = Vec::with_capacity(places.len());
        // One read per run of entries in the same segment.
        for run in places.chunk_by(|(_, a), (_, b)| a.seq == b.seq) {
            let path = Segment::new(&self.inner.log_dir, run[0].1.seq).path;
            let start = run.iter().map(|(_, at)| at.offset).min().unwrap_or(0);
            let end = run.iter().map(|(_, at)| at.offset + at.len as u64).max().unwrap_or(0);
            let within = |offset: u64| {
                usize::try_from(offset - start)
                    .map_err(|_| std::io::Error::other("more than this machine can address"))
            };
            let buf = within(end)
                .and_then(|len| {
                    let mut buf = vec![0; len];
                    File::open(&path)?.read_exact_at(&mut buf, start)?;
                    Ok(Bytes::from(buf))
                })
                .ctx(|| format!("reading entries back from segment {}", path.display()))?;
            for (index, at) in run {
                let from = within(at.offset).ctx(|| format!("reading entry {index} back"))?;
                match read_frame(&buf.slice(from..from + at.len)) {
                    Frame::Valid {
                        decoded: Decoded::Record(Record::Entry { index: found, data }), ..
                    } if found == *index => {
                        entries.push((*index, data));
                    }
                    other => {
                        let what = match other {
                            Frame::Valid { .. } => "another record is there",
                            Frame::Truncated => "the file ends inside it",
                            Frame::ZeroLength => "its length is zero",
                            Frame::BadChecksum { .. } => "its checksum does not match",
                            Frame::Undecodable { ref reason } => reason,
                        };
                        return Err(StorageError::Corrupt {
                            file: path,
                            offset: at.offset,
                            reason: format!("entry {index} does not read back: {what}"),
                        });
                    }
                }
            }
        }
        Ok(entries)
    }

    /// The bytes of the log's entries in the files: those after the purge point, which a restart
    /// replays (frames, so a little more than the entries' data).
    pub fn log_bytes(&self) -> u64 {
        self.inner.shared.index().bytes
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

    /// Returns once every segment deletion asked for so far is done (deletions happen on a thread of their own,
    /// after the fdatasync that made the segments obsolete). For tests that look at the files.
    #[doc(hidden)]
    pub fn wait_for_deletions(&self) {
        let deletions = self.inner.lock_writer().deleter.clone();
        if let Some(deletions) = deletions {
            let (done, finished) = mpsc::channel();
            if deletions.send(Deletion::Flush(done)).is_ok() {
                let _ = finished.recv();
            }
        }
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
        let mut writer = self.inner.lock_writer();
        let group = std::mem::take(&mut *self.inner.queue());
        if !group.is_empty() {
            writer.commit_group(group);
        }
        let ended = if writer.is_poisoned() {
            Err(StorageError::Poisoned)
        } else {
            writer.end_active().inspect_err(|_| writer.poison())
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

/// `Interval`'s background thread: an fdatasync once `interval` has passed since the last one while there
/// are unsynced writes, until told to stop. The fdatasync runs without the files: the writer keeps
/// writing meanwhile (a second of writes took up to 62 ms to sync here, and every write waited for it while
/// the sync held the files). This thread holds them only to start and to finish one.
fn background_syncs(inner: &Inner, interval: Duration, inbox: &mpsc::Receiver<ToSyncer>) {
    let mut wait = interval;
    loop {
        let sync = match inbox.recv_timeout(wait) {
            // Started by a writer (see `Inner::drain`).
            Ok(ToSyncer::Run(sync)) => Some(sync),
            // Nobody writing started it: start it here if nobody is writing now (else they will).
            Err(RecvTimeoutError::Timeout) => {
                inner.with_idle_writer(|writer| inner.start_background_sync(writer)).flatten()
            }
            Ok(ToSyncer::Stop) | Err(RecvTimeoutError::Disconnected) => return,
        };
        if let Some(sync) = sync {
            inner.run_background_sync(sync);
        }
        // Takes note of the one just run (if the files are free; else their holder will) and asks when
        // the next is due.
        let due = inner
            .with_idle_writer(|writer| {
                inner.note_finished_sync(writer);
                writer.background_sync_due()
            })
            .flatten();
        wait = due
            .map_or(interval, |due| due.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Err(error) = self.shut_down() {
            tracing::error!(%error, "journal: closing on drop failed");
        }
    }
}

/// Encodes one append's records on the caller's thread, noting what the writer must know about them.
fn encode_append(records: &[Record], done: Done) -> EncodedAppend {
    let mut frames = Vec::with_capacity(records.iter().map(encoded_size_hint).sum());
    let mut changes = StateChanges::default();
    let mut index_changes = Vec::new();
    let mut encoded = Ok(());
    for record in records {
        let offset = frames.len();
        encoded = encoded.and_then(|()| encode_record(record, &mut frames));
        match record {
            Record::Entry { index, .. } => {
                changes.max_entry = Some(changes.max_entry.map_or(*index, |max| max.max(*index)));
                let at = EntryAt { seq: 0, offset: offset as u64, len: frames.len() - offset };
                index_changes.push(IndexChange::Entry { index: *index, at });
            }
            Record::Vote(vote) => changes.vote = Some(vote.clone()),
            Record::Committed(committed) => changes.committed = Some(committed.clone()),
            Record::Purge(upto) => {
                changes.purged = Some(changes.purged.map_or(*upto, |p| p.max(*upto)));
                index_changes.push(IndexChange::Purge(*upto));
            }
            Record::TruncateAfter(after) => index_changes.push(IndexChange::TruncateAfter(*after)),
        }
    }
    let needs_sync = records.iter().any(|r| matches!(r, Record::Entry { .. } | Record::Vote(_)));
    EncodedAppend {
        frames: encoded.map(|()| frames),
        records: records.len() as u64,
        changes,
        needs_sync,
        index_changes,
        done,
    }
}

fn encoded_size_hint(record: &Record) -> usize {
    let body = match record {
        Record::Entry { data, .. } => 8 + data.len(),
        Record::Vote(bytes) | Record::Committed(bytes) => bytes.len(),
        Record::TruncateAfter(_) | Record::Purge(_) => 9,
    };
    crate::record::FRAME_HEADER_BYTES + 1 + body
}

/// Starts the `journal-delete` thread: it deletes what it is sent, in order, until its sender is dropped.
fn spawn_deleter(log_dir: PathBuf) -> Result<(Sender<Deletion>, JoinHandle<()>), StorageError> {
    let (deletions, received) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("journal-delete".into())
        .spawn(move || {
            for deletion in received {
                match deletion {
                    Deletion::Segments(paths) => delete_segments(&log_dir, &paths),
                    Deletion::Flush(done) => drop(done.send(())),
                }
            }
        })
        .ctx(|| "spawning the journal's segment-deleting thread".to_string())?;
    Ok((deletions, handle))
}

/// Deletes obsolete segments, oldest first, then fsyncs the directory. Stops at the first failure, so what is
/// left is still a prefix of the log: a segment left behind is replayed harmlessly and deleted on the next open.
fn delete_segments(log_dir: &Path, paths: &[PathBuf]) {
    let mut deleted = 0;
    for path in paths {
        if let Err(error) = std::fs::remove_file(path) {
            tracing::warn!(file = %path.display(), %error, "journal: could not delete an obsolete segment");
            break;
        }
        deleted += 1;
    }
    if deleted > 0
        && let Err(error) = sync_dir(log_dir)
    {
        tracing::warn!(%error, "journal: fsync of the log directory after deleting segments failed");
    }
}

/// Writes zeros to `file` over `[from, to)`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let len = usize::try_from(to - at).map_or(CHUNK.len(), |left| left.min(CHUNK.len()));
        file.write_all_at(&CHUNK[..len], at)?;
        at += len as u64;
    }
    Ok(())
}

/// A background fdatasync in progress: the file (shared with the writer, which keeps writing to it), and what
/// was written when it started.
struct BackgroundSync {
    file: Arc<File>,
    path: PathBuf,
    /// [`Writer::writes`] when it started.
    writes: u64,
    /// The purge point of what was written when it started: durable once it succeeds.
    purged: Option<u64>,
}

/// Work for the `journal-sync` thread.
enum ToSyncer {
    Run(BackgroundSync),
    Stop,
}

/// A background fdatasync that ended.
struct FinishedSync {
    sync: BackgroundSync,
    result: std::io::Result<()>,
    took: Duration,
}

/// fdatasync, with the test hooks ([`Journal::fail_next_sync_for_test`], [`Journal::delay_next_sync_for_test`]).
fn fdatasync(shared: &Shared, file: &File) -> std::io::Result<()> {
    let delay = shared.delay_next_sync_ms.swap(0, Ordering::SeqCst);
    if delay > 0 {
        std::thread::sleep(Duration::from_millis(delay));
    }
    if shared.fail_next_sync.swap(false, Ordering::SeqCst) {
        return Err(std::io::Error::other("injected fsync failure (fail_next_sync_for_test)"));
    }
    file.sync_data()
}

/// The files and what is known about them; behind `Inner::writer`.
struct Writer {
    log_dir: PathBuf,
    policy: FsyncPolicy,
    segment_bytes: u64,
    /// Every segment on disk, oldest first; the last one is being written.
    segments: VecDeque<Segment>,
    file: Option<Arc<File>>,
    /// Counts writes and new segments: a background fdatasync covers everything only if this did not
    /// move while it ran.
    writes: u64,
    /// Whether the background thread is making an fdatasync (without the files) right now.
    background_sync_running: bool,
    /// Where the active segment's records end: the next write goes here.
    active_len: u64,
    /// The active segment's file size: zeros from `active_len` up to here (see [`ZERO_STEP`]).
    zeroed_until: u64,
    /// Whether the active segment holds anything besides its checkpoint (a roll would be pointless otherwise).
    active_has_records: bool,
    /// The vote, committed marker and purge point as of everything written so far.
    checkpoint: Checkpoint,
    /// Bytes written since the last fdatasync.
    dirty: bool,
    last_sync: Instant,
    /// Frames of the current group not yet written, reused between groups.
    pending: Vec<u8>,
    shared: Arc<Shared>,
    /// Where obsolete segments go to be deleted; `None` while opening and after close (deleted here then).
    deleter: Option<Sender<Deletion>>,
}

impl Writer {
    /// Writes one group, fsyncs it if the policy (or a `sync` in it) asks, then answers everyone in order.
    fn commit_group(&mut self, group: Vec<Command>) {
        let appends = group.iter().filter(|command| matches!(command, Command::Append(_))).count() as u64;
        let must_be_durable = group.iter().any(|command| match command {
            Command::Append(append) => append.needs_sync,
            Command::Sync(_) => false,
        });
        let wants_sync = group.iter().any(|command| matches!(command, Command::Sync(_)))
            || (self.policy == FsyncPolicy::Always && must_be_durable);
        let outcome = if self.is_poisoned() {
            Err(StorageError::Poisoned)
        } else {
            let written = self.write_group(&group);
            let synced =
                written.and_then(|()| if wants_sync && self.dirty { self.sync_active() } else { Ok(()) });
            if synced.is_err() {
                self.poison();
            }
            synced
        };
        {
            let mut stats = self.shared.stats();
            stats.appends += appends;
            stats.batches += 1;
            stats.last_batch_appends = appends;
            stats.max_batch_appends = stats.max_batch_appends.max(appends);
            stats.segments = self.segments.len() as u64;
        }
        for command in group {
            match command {
                Command::Append(append) => {
                    let result = match (&outcome, append.frames) {
                        (Err(error), _) => Err(error.clone()),
                        (Ok(()), Err(encoding)) => Err(encoding),
                        (Ok(()), Ok(_)) => Ok(()),
                    };
                    // A panicking callback must not take the journal down with it.
                    if catch_unwind(AssertUnwindSafe(|| (append.done)(result))).is_err() {
                        tracing::error!("journal: an append callback panicked");
                    }
                }
                Command::Sync(reply) => drop(reply.send(outcome.clone())),
            }
        }
    }

    /// Writes every append of the group to the active segment, rolling to a new segment between appends.
    fn write_group(&mut self, group: &[Command]) -> Result<(), StorageError> {
        let mut records = 0;
        let mut index_changes = Vec::new();
        for command in group {
            let Command::Append(append) = command else { continue };
            let Ok(frames) = &append.frames else { continue };
            if frames.is_empty() {
                continue;
            }
            let active_bytes = self.active_len + self.pending.len() as u64;
            if self.active_has_records && active_bytes >= self.segment_bytes {
                self.flush_pending()?;
                self.roll()?;
            }
            if self.pending.is_empty() {
                // Room for the group's frame, filled in when the group is written (flush_pending).
                self.pending.extend_from_slice(&[0; GROUP_FRAME_BYTES]);
            }
            let seq = self.segments.back().ok_or(StorageError::Closed)?.seq;
            let base = self.active_len + self.pending.len() as u64;
            index_changes.extend(append.index_changes.iter().map(|change| match *change {
                IndexChange::Entry { index, at } => {
                    IndexChange::Entry { index, at: EntryAt { seq, offset: base + at.offset, len: at.len } }
                }
                other => other,
            }));
            self.pending.extend_from_slice(frames);
            self.active_has_records = true;
            records += append.records;
            let changes = &append.changes;
            if let Some(vote) = &changes.vote {
                self.checkpoint.vote = Some(vote.clone());
            }
            if let Some(committed) = &changes.committed {
                self.checkpoint.committed = Some(committed.clone());
            }
            if let Some(upto) = changes.purged {
                self.checkpoint.purged = Some(self.checkpoint.purged.map_or(upto, |purged| purged.max(upto)));
            }
            if let (Some(index), Some(active)) = (changes.max_entry, self.segments.back_mut()) {
                active.max_entry = Some(active.max_entry.map_or(index, |max| max.max(index)));
            }
        }
        self.flush_pending()?;
        self.shared.stats().records += records;
        // Only now is all of it in the file, where a read would look.
        let mut places = self.shared.index();
        for change in index_changes {
            places.apply(change);
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = group_frame(&self.pending[GROUP_FRAME_BYTES..]).and_then(|header| {
            self.pending[..GROUP_FRAME_BYTES].copy_from_slice(&header);
            self.write_active_raw()
        });
        let len = self.pending.len() as u64;
        self.pending.clear();
        written?;
        self.active_len += len;
        self.shared.stats().bytes += len;
        Ok(())
    }

    fn write_active_raw(&mut self) -> Result<(), StorageError> {
        let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
        let file = self.file.as_ref().ok_or(StorageError::Closed)?;
        self.dirty = true;
        self.writes += 1;
        let end = self.active_len + self.pending.len() as u64;
        if end > self.zeroed_until {
            // Small segments (tests) need no more than their own size.
            let step = ZERO_STEP.min(self.segment_bytes).max(4096);
            let upto = end.div_ceil(step) * step;
            write_zeros(file, self.zeroed_until, upto)
                .ctx(|| format!("zero-filling segment {}", path.display()))?;
            self.zeroed_until = upto;
        }
        file.write_all_at(&self.pending, self.active_len)
            .ctx(|| format!("writing to segment {}", path.display()))
    }

    /// Cuts the active segment's zero-filled end and makes it all durable: before a roll (only the last
    /// segment may end in zeros) and at close.
    fn end_active(&mut self) -> Result<(), StorageError> {
        if self.zeroed_until > self.active_len {
            let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
            let file = self.file.as_ref().ok_or(StorageError::Closed)?;
            file.set_len(self.active_len)
                .ctx(|| format!("cutting segment {} to its records", path.display()))?;
            self.zeroed_until = self.active_len;
            self.dirty = true;
            self.writes += 1;
        }
        if self.dirty {
            self.sync_active()?;
        }
        Ok(())
    }

    /// Ends the active segment (fsynced) and starts the next one with a checkpoint, then deletes what that
    /// checkpoint makes obsolete.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.end_active()?;
        self.start_segment()?;
        self.delete_obsolete_segments();
        Ok(())
    }

    /// Creates the next segment, writes the checkpoint into it and makes both the file and its directory entry
    /// durable before anything else is written.
    fn start_segment(&mut self) -> Result<(), StorageError> {
        let seq = self.segments.back().map_or(1, |segment| segment.seq + 1);
        let segment = Segment::new(&self.log_dir, seq);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&segment.path)
            .ctx(|| format!("creating segment {}", segment.path.display()))?;
        let mut frame = Vec::new();
        encode_checkpoint(&self.checkpoint, &mut frame)?;
        file.write_all(&frame).ctx(|| format!("writing checkpoint to {}", segment.path.display()))?;
        self.segments.push_back(segment);
        self.file = Some(Arc::new(file));
        self.writes += 1;
        self.active_len = frame.len() as u64;
        self.zeroed_until = self.active_len;
        self.active_has_records = false;
        self.dirty = true;
        self.sync_active()?;
        sync_dir(&self.log_dir)
    }

    /// fdatasync of the active segment; afterwards everything written is durable, so segments made obsolete by
    /// the purge point are deleted.
    fn sync_active(&mut self) -> Result<(), StorageError> {
        let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
        let file = self.file.as_ref().ok_or(StorageError::Closed)?;
        let started = Instant::now();
        let synced = fdatasync(&self.shared, file);
        let took = started.elapsed();
        synced.ctx(|| format!("fdatasync of segment {}", path.display()))?;
        self.shared.stats().record_fsync(took);
        self.dirty = false;
        self.last_sync = Instant::now();
        self.delete_obsolete_segments();
        Ok(())
    }

    /// Takes the oldest segments off the list while each holds only purged entries and has them deleted (by the
    /// `journal-delete` thread, or here while opening or closed). Only a prefix is ever deleted: a later
    /// segment's truncation may refer to entries in an earlier one. Called only when everything written is
    /// durable, so the checkpoint and purge records that make them obsolete are on disk. Failure is not fatal:
    /// a segment left behind is replayed harmlessly and deleted on the next open.
    fn delete_obsolete_segments(&mut self) {
        self.delete_obsolete_segments_upto(self.checkpoint.purged);
    }

    /// [`Writer::delete_obsolete_segments`] by a purge point known to be durable.
    fn delete_obsolete_segments_upto(&mut self, purged: Option<u64>) {
        let mut obsolete = Vec::new();
        while self.segments.len() > 1
            && self.segments.front().is_some_and(|oldest| oldest.is_obsolete(purged))
        {
            let Some(oldest) = self.segments.pop_front() else { break };
            obsolete.push(oldest.path);
        }
        if obsolete.is_empty() {
            return;
        }
        self.shared.stats().segments = self.segments.len() as u64;
        let unsent = match &self.deleter {
            Some(deleter) => match deleter.send(Deletion::Segments(obsolete)) {
                Ok(()) => return,
                Err(mpsc::SendError(Deletion::Segments(paths))) => paths,
                Err(mpsc::SendError(Deletion::Flush(_))) => return,
            },
            None => obsolete,
        };
        delete_segments(&self.log_dir, &unsent);
    }

    /// Under `Interval`, when the next background fdatasync is due (only while there are unsynced writes).
    fn background_sync_due(&self) -> Option<Instant> {
        match self.policy {
            FsyncPolicy::Interval(interval)
                if self.dirty && !self.background_sync_running && !self.is_poisoned() =>
            {
                Some(self.last_sync + interval)
            }
            _ => None,
        }
    }

    /// If a background fdatasync is due: what it needs to run without the files.
    fn start_background_sync(&mut self) -> Option<BackgroundSync> {
        if self.background_sync_due().is_none_or(|due| due > Instant::now()) {
            return None;
        }
        let sync = BackgroundSync {
            file: Arc::clone(self.file.as_ref()?),
            path: self.segments.back()?.path.clone(),
            writes: self.writes,
            purged: self.checkpoint.purged,
        };
        self.background_sync_running = true;
        Some(sync)
    }

    /// Takes note of a background fdatasync's outcome (a failure has poisoned the journal already): the
    /// writes made while it ran are still unsynced.
    fn finish_background_sync(&mut self, sync: &BackgroundSync, result: std::io::Result<()>, took: Duration) {
        self.background_sync_running = false;
        self.last_sync = Instant::now();
        if result.is_ok() {
            self.shared.stats().record_fsync(took);
            if self.writes == sync.writes {
                self.dirty = false;
            }
            self.delete_obsolete_segments_upto(sync.purged);
        }
    }

    fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    fn poison(&self) {
        self.shared.poison();
    }
}
