//! The background fdatasync of `Interval` and `Never` on the `journal-sync` thread, run without the
//! files so that writers keep writing; and `fdatasync`, with its test hooks, which every sync goes
//! through. A failed background fdatasync poisons the journal at once.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::commit::Inner;
use super::writer::Writer;
use super::{FsyncPolicy, Shared};
use crate::error::{StorageError, clone_io_error};

/// Under `Interval` and `Never`, a background fdatasync also starts once this many record bytes
/// were written since the last one began. A segment roll must fsync the segment it ends, on the
/// writers' path; without this, a roll under `Never` wrote back the whole 64 MiB segment while every
/// write waited (132 ms here, the longest stall of a `SET` + `GET` run). Redis syncs its
/// append-only file's rewrite in 4 MB steps for the same reason.
pub(super) const SYNC_EVERY_BYTES: u64 = 4 << 20;

/// The background thread (`Interval` and `Never`): an fdatasync when one is due (see
/// [`SYNC_EVERY_BYTES`]; under `Interval` also once `interval` has passed since the last one while
/// there are unsynced writes), until told to stop. Without `interval` it waits for a writer to start
/// one. The fdatasync runs without the files: the writer keeps writing meanwhile (a second of writes
/// took up to 62 ms to sync here, and every write waited for it while the sync held the files). This
/// thread holds them only to start and to finish one.
pub(super) fn background_syncs(inner: &Inner, interval: Option<Duration>, inbox: &mpsc::Receiver<ToSyncer>) {
    let mut wait = interval;
    loop {
        let received = match wait {
            Some(wait) => inbox.recv_timeout(wait),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let sync = match received {
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
            .map(|due| due.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)))
            .or(interval);
    }
}

impl Inner {
    /// With the files held: takes note of a background fdatasync that ended, then starts the next one if
    /// it is due (to be run by [`Inner::run_background_sync`], without the files).
    pub(super) fn start_background_sync(&self, writer: &mut Writer) -> Option<BackgroundSync> {
        self.note_finished_sync(writer);
        writer.start_background_sync()
    }

    /// The fdatasync itself; a failure poisons the journal at once. Its outcome waits for whoever holds the
    /// files next ([`Inner::note_finished_sync`]).
    pub(super) fn run_background_sync(&self, sync: BackgroundSync) {
        let began = Instant::now();
        let result = fdatasync(&self.shared, &sync.file);
        if let Err(error) = &result {
            tracing::error!(file = %sync.path.display(), %error, "journal: background fdatasync failed");
            let context = format!("background fdatasync of segment {}", sync.path.display());
            self.shared.poison(&StorageError::io(context, clone_io_error(error)));
        }
        let finished = FinishedSync { sync, result, took: began.elapsed() };
        *self.finished_sync.lock().unwrap_or_else(PoisonError::into_inner) = Some(finished);
    }

    pub(super) fn note_finished_sync(&self, writer: &mut Writer) {
        let finished = self.finished_sync.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(FinishedSync { sync, result, took }) = finished {
            writer.finish_background_sync(&sync, result, took);
        }
    }
}

impl Writer {
    /// When the next background fdatasync is due, while there are unsynced writes: at once past
    /// [`SYNC_EVERY_BYTES`]; under `Interval`, `interval` after the last one otherwise.
    fn background_sync_due(&self) -> Option<Instant> {
        if !self.dirty || self.background_sync_running || self.is_poisoned() {
            return None;
        }
        let by_bytes = (self.unsynced_bytes >= SYNC_EVERY_BYTES).then(Instant::now);
        match self.policy {
            FsyncPolicy::Interval(interval) => by_bytes.or(Some(self.last_sync + interval)),
            FsyncPolicy::Never => by_bytes,
            FsyncPolicy::Always => None,
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
        self.unsynced_bytes = 0;
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
}

/// A background fdatasync in progress: the file (shared with the writer, which keeps writing to it), and what
/// was written when it started.
pub(super) struct BackgroundSync {
    file: Arc<File>,
    path: PathBuf,
    /// [`Writer::writes`] when it started.
    writes: u64,
    /// The purge point of what was written when it started: durable once it succeeds.
    purged: Option<u64>,
}

/// Work for the `journal-sync` thread.
pub(super) enum ToSyncer {
    Run(BackgroundSync),
    Stop,
}

/// A background fdatasync that ended.
pub(super) struct FinishedSync {
    sync: BackgroundSync,
    result: std::io::Result<()>,
    took: Duration,
}

/// fdatasync, with the test hooks
/// ([`Journal::fail_next_sync_for_test`](super::Journal::fail_next_sync_for_test),
/// [`Journal::delay_next_sync_for_test`](super::Journal::delay_next_sync_for_test)) and the standing
/// delay ([`Journal::set_sync_delay`](super::Journal::set_sync_delay)).
pub(super) fn fdatasync(shared: &Shared, file: &File) -> std::io::Result<()> {
    let once = shared.delay_next_sync_ms.swap(0, Ordering::SeqCst);
    let standing = shared.sync_delay_ms.load(Ordering::SeqCst);
    let delay = once.saturating_add(standing);
    if delay > 0 {
        shared.stats().delayed_fsyncs += 1;
        std::thread::sleep(Duration::from_millis(delay));
    }
    if shared.fail_next_sync.swap(false, Ordering::SeqCst) {
        return Err(std::io::Error::other("injected fsync failure (fail_next_sync_for_test)"));
    }
    file.sync_data()
}
