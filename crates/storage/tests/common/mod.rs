//! Helpers shared by the journal tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use turnstile_storage::{Journal, Record, StorageError};

pub fn entry(index: u64) -> Record {
    Record::Entry { index, data: data_of(index) }
}

pub fn data_of(index: u64) -> bytes::Bytes {
    format!("entry-{index}").into()
}

/// Appends and waits for the callback.
pub fn append_wait(journal: &Journal, records: Vec<Record>) -> Result<(), StorageError> {
    let (tx, rx) = mpsc::channel();
    journal.append(records, Box::new(move |result| tx.send(result).unwrap()));
    rx.recv_timeout(Duration::from_secs(30)).expect("append callback was never called")
}

/// The segment files under `dir/log`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    files.sort();
    files
}

/// Copies `from/log` into a fresh temp dir.
pub fn copy_journal(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    std::fs::create_dir(to.path().join("log")).unwrap();
    for file in segment_files(from) {
        std::fs::copy(&file, to.path().join("log").join(file.file_name().unwrap())).unwrap();
    }
    to
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}
