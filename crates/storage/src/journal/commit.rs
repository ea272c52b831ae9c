//! Group commit: appends wait in a queue, and whichever thread finds the files free becomes the
//! writer, taking everything queued, again until the queue is empty.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, TryLockError};

use crate::error::StorageError;

use super::Shared;
use super::append::EncodedAppend;
use super::sync::{FinishedSync, ToSyncer};
use super::writer::Writer;

/// What waits in the queue for a writer.
pub(super) enum Command {
    Append(EncodedAppend),
    Sync(Sender<Result<(), StorageError>>),
}

/// The queue and the files, shared with the background sync thread.
pub(super) struct Inner {
    pub(super) log_dir: PathBuf,
    /// Where a writer hands a due background fdatasync (`Always` has no thread reading it).
    pub(super) syncer: Sender<ToSyncer>,
    /// A background fdatasync that ended, until whoever holds the files next takes note of it.
    pub(super) finished_sync: Mutex<Option<FinishedSync>>,
    /// Appends and syncs not yet taken by a writer, in arrival order.
    pub(super) queue: Mutex<Vec<Command>>,
    /// Held by whichever thread is writing; only it touches the files.
    pub(super) writer: Mutex<Writer>,
    /// Set by `close`: later appends and syncs get `Closed`.
    pub(super) closed: AtomicBool,
    /// `write_behind`: signalled (under the queue's lock) when something is queued.
    pub(super) queued: Condvar,
    /// Whether appends only queue, for the writer thread ([`Inner::write_behind`]).
    pub(super) write_behind: bool,
    pub(super) shared: Arc<Shared>,
}

impl Inner {
    pub(super) fn queue(&self) -> MutexGuard<'_, Vec<Command>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the files. A panic while writing poisons the journal (what it wrote is unknown).
    pub(super) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|poisoned| {
            self.shared.poisoned.store(true, Ordering::SeqCst);
            poisoned.into_inner()
        })
    }

    /// Runs `f` with the files if nobody is writing (then writes what was queued meanwhile); `None` if
    /// somebody is.
    pub(super) fn with_idle_writer<T>(&self, f: impl FnOnce(&mut Writer) -> T) -> Option<T> {
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
    pub(super) fn submit(&self, command: Command) {
        self.queue().push(command);
        if self.write_behind {
            self.queued.notify_one();
        } else {
            self.drain();
        }
    }

    /// The writer thread of a write-behind journal: writes whatever is queued, group after group,
    /// until the journal closes (which writes what is left itself).
    pub(super) fn write_behind(&self) {
        loop {
            {
                let mut queue = self.queue();
                while queue.is_empty() && !self.closed.load(Ordering::SeqCst) {
                    queue = self.queued.wait(queue).unwrap_or_else(PoisonError::into_inner);
                }
                if self.closed.load(Ordering::SeqCst) {
                    return;
                }
            }
            self.drain();
        }
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
