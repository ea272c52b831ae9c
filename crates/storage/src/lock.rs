//! One process per data directory: a `LOCK` file held with an exclusive advisory lock (flock on Unix) for as
//! long as the `DirLock` lives. The lock, not the file, is what counts: a `LOCK` file left by a crashed process
//! is simply locked again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::file::create_dir_durable;

/// Holds the data directory exclusively until dropped.
#[derive(Debug)]
pub struct DirLock {
    dir: PathBuf,
    /// Closing the file releases the lock.
    _file: File,
}

impl DirLock {
    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Takes the exclusive lock on `dir` (creating it if needed) and writes our pid into `dir/LOCK`. Another holder
/// (another process, or another `DirLock` in this one) makes this fail with `StorageError::Locked`.
pub fn lock_dir(dir: &Path) -> Result<DirLock, StorageError> {
    create_dir_durable(dir)?;
    let path = dir.join("LOCK");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut contents = String::new();
            let pid = file.read_to_string(&mut contents).ok().and_then(|_| contents.trim().parse().ok());
            return Err(StorageError::Locked { dir: dir.to_path_buf(), pid });
        }
        Err(std::fs::TryLockError::Error(error)) => {
            return Err(StorageError::io(format!("locking {}", path.display()), error));
        }
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .ctx(|| format!("writing our pid into {}", path.display()))?;
    Ok(DirLock { dir: dir.to_path_buf(), _file: file })
}
