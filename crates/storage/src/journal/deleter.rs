//! Deleting the segments a purge made obsolete, on the `journal-delete` thread: an unlink and the
//! directory fsync after it stay off the path of every write.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::error::{IoContext, StorageError};
use crate::file::sync_dir;

use super::Journal;
use super::writer::Writer;

/// Work for the `journal-delete` thread.
pub(super) enum Deletion {
    /// Delete these obsolete segments, oldest first, then fsync the log directory.
    Segments(Vec<PathBuf>),
    /// Answered once everything sent before it is done.
    Flush(Sender<()>),
}

/// Starts the `journal-delete` thread: it deletes what it is sent, in order, until its sender is dropped.
pub(super) fn spawn_deleter(log_dir: PathBuf) -> Result<(Sender<Deletion>, JoinHandle<()>), StorageError> {
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

impl Writer {
    /// Takes the oldest segments off the list while each holds only purged entries and has them deleted (by the
    /// `journal-delete` thread, or here while opening or closed). Only a prefix is ever deleted: a later
    /// segment's truncation may refer to entries in an earlier one. Called only when everything written is
    /// durable, so the checkpoint and purge records that make them obsolete are on disk. Failure is not fatal:
    /// a segment left behind is replayed harmlessly and deleted on the next open.
    pub(super) fn delete_obsolete_segments(&mut self) {
        self.delete_obsolete_segments_upto(self.checkpoint.purged);
    }

    /// [`Writer::delete_obsolete_segments`] by a purge point known to be durable.
    pub(super) fn delete_obsolete_segments_upto(&mut self, purged: Option<u64>) {
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
}

impl Journal {
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
}
