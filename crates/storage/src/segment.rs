//! Segment files: `log/{seq:020}.seg`, numbered from 1 in the order they were created.
//!
//! A sequence number rather than a first index names them because a segment also holds votes, truncations and
//! purges, and a truncation can make indexes go backwards.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};

/// The file-name extension of segment files.
const EXTENSION: &str = "seg";

/// One segment file and what the writer needs to know to delete it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
    /// The highest entry index written into this segment; `None` if it holds no entries. The segment can be
    /// deleted (with every older one) once this is <= the durable purge point.
    pub(crate) max_entry: Option<u64>,
}

impl Segment {
    pub(crate) fn new(log_dir: &Path, seq: u64) -> Segment {
        Segment { seq, path: log_dir.join(format!("{seq:020}.{EXTENSION}")), max_entry: None }
    }

    /// Whether this segment holds nothing that replay still needs, given the durable purge point and that a
    /// newer segment starts with a checkpoint.
    pub(crate) fn is_obsolete(&self, purged: Option<u64>) -> bool {
        match (self.max_entry, purged) {
            (None, _) => true,
            (Some(max), Some(purged)) => max <= purged,
            (Some(_), None) => false,
        }
    }
}

/// The segment files in `log_dir`, oldest first. Files that are not segments are ignored (with a warning).
pub(crate) fn list_segments(log_dir: &Path) -> Result<Vec<Segment>, StorageError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(log_dir).ctx(|| format!("listing {}", log_dir.display()))?;
    for entry in entries {
        let path = entry.ctx(|| format!("listing {}", log_dir.display()))?.path();
        let seq = path
            .extension()
            .filter(|extension| *extension == EXTENSION)
            .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
        match seq {
            Some(seq) => segments.push(Segment { seq, path, max_entry: None }),
            None => tracing::warn!(file = %path.display(), "ignoring a file that is not a journal segment"),
        }
    }
    segments.sort_by_key(|segment| segment.seq);
    Ok(segments)
}
