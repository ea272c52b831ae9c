//! The one error type of this crate.
//!
//! It is `Clone` because one failure is handed to many callbacks (every append of a failed group commit gets the
//! same error), so the `io::Error` inside is kept behind an `Arc`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What went wrong in the journal, the snapshot store or the data-directory lock.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// An operating-system call failed; `context` says which call on which file.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<io::Error>,
    },

    /// A journal record that is not a torn last write failed its checksum or could not be decoded.
    #[error(
        "corrupt journal record in {file} at byte offset {offset}: {reason}. Refusing to start so that nothing \
         is silently lost; to cut the log at this record (dropping it and everything after it, including later \
         segments), restart with --truncate-corrupt"
    )]
    Corrupt { file: PathBuf, offset: u64, reason: String },

    /// The newest snapshot failed its checksum or could not be decoded.
    #[error(
        "corrupt snapshot {file}: {reason}. Not falling back to an older snapshot: the log entries it covered may \
         already be purged, so starting from it could silently lose data"
    )]
    CorruptSnapshot { file: PathBuf, reason: String },

    /// A file written by a newer version of the on-disk format than this build knows: the data dir's meta
    /// file or a snapshot. Refused whole, before anything is read past the version: a newer format may have
    /// moved or changed anything after it, and guessing could lose data.
    #[error(
        "{file} was written by a newer format ({what} version {found} > {supported}, the newest this build \
         reads); run a newer turnstile on it"
    )]
    NewerFormat { file: PathBuf, what: &'static str, found: u32, supported: u32 },

    /// The data dir's meta file is not one, or is damaged.
    #[error("{file} is not a valid Turnstile data dir meta file: {reason}")]
    BadMeta { file: PathBuf, reason: String },

    /// An earlier write or fsync failed. After a failed fsync the state of the page cache is unknown, so the
    /// journal refuses every later write instead of retrying; restart the process to recover from disk.
    #[error("journal is poisoned: an earlier write or fsync failed, so writes are refused until restart")]
    Poisoned,

    /// Another process (or another `DirLock` in this one) holds the data directory.
    #[error("data directory {dir} is locked by another process{}", pid_suffix(.pid))]
    Locked { dir: PathBuf, pid: Option<u32> },

    /// The journal was closed.
    #[error("journal is closed")]
    Closed,

    /// One record does not fit the frame's 32-bit length field.
    #[error("record of {bytes} bytes is too large for the journal (at most {max} bytes)")]
    RecordTooLarge { bytes: usize, max: usize },
}

fn pid_suffix(pid: &Option<u32>) -> String {
    pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
}

impl StorageError {
    /// Whether this is a full disk: an operating-system call that failed with ENOSPC (or EDQUOT, a
    /// quota: full for this user).
    pub fn is_no_space(&self) -> bool {
        matches!(self, StorageError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }

    /// Wraps an `io::Error` with the operation and file it came from.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        StorageError::Io { context: context.into(), source: Arc::new(source) }
    }
}

/// A copy of `error` (`io::Error` is not `Clone`): the same OS error code, or the same kind and text.
pub(crate) fn clone_io_error(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

/// `result.ctx(|| format!("..."))` turns an `io::Result` into a `StorageError` with context.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StorageError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, StorageError> {
        self.map_err(|source| StorageError::io(context(), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_a_full_disk_and_nothing_else_is() {
        let os = |code| StorageError::io("writing segment 1", io::Error::from_raw_os_error(code));
        assert!(os(28).is_no_space(), "ENOSPC");
        assert!(os(122).is_no_space(), "EDQUOT");
        assert!(!os(5).is_no_space(), "EIO");
        assert!(!StorageError::Poisoned.is_no_space());
        let copy = clone_io_error(&io::Error::from_raw_os_error(28));
        assert_eq!(copy.raw_os_error(), Some(28));
    }
}
