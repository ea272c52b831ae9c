//! Making file-system changes durable: a file's data is fsynced by its owner, but creating, renaming or
//! deleting a file changes its directory, which needs an fsync of its own.

use std::fs::{self, File};
use std::path::Path;

use crate::error::{IoContext, StorageError};

/// fsyncs a directory so that files created, renamed or deleted in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .ctx(|| format!("fsync of directory {}", dir.display()))
}

/// Creates `dir` (and missing parents) and, if it did not exist, fsyncs its parent so the new entry is durable.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).ctx(|| format!("creating directory {}", dir.display()))?;
    if let Some(parent) = dir.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}
