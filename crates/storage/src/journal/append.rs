//! An append, encoded on the caller's thread before it is queued: its frames, and what the writer
//! must note about them (the checkpoint's changes, the entries' places, whether it needs an
//! fdatasync).

use crate::error::StorageError;
use crate::index::EntryAt;
use crate::record::{Record, encode_record};

use super::Done;

/// One `append` call, encoded on the caller's thread, with what the writer must remember about it.
pub(super) struct EncodedAppend {
    /// The frames, or the error that encoding hit (delivered to `done` by the writer, in order).
    pub(super) frames: Result<Vec<u8>, StorageError>,
    pub(super) records: u64,
    pub(super) changes: StateChanges,
    /// Whether it holds a log entry or a vote, which `Always` must make durable before `done`.
    /// Markers alone (committed index, purge, truncate) ride along with the next fdatasync: the
    /// file is synced as a whole and written in order, so they are durable before any entry that
    /// follows them, and losing the newest of them in a crash is harmless (the committed index is
    /// found again, purged entries are purged again, truncated entries were never acknowledged).
    pub(super) needs_sync: bool,
    /// How the records change the index of entry places, in order; an entry's place is its frame's
    /// offset within `frames` until the writer knows where `frames` goes.
    pub(super) index_changes: Vec<IndexChange>,
    pub(super) done: Done,
}

/// One record's effect on the index (see `crate::index`).
#[derive(Debug, Clone, Copy)]
pub(super) enum IndexChange {
    Entry { index: u64, at: EntryAt },
    TruncateAfter(Option<u64>),
    Purge(u64),
}

/// The parts of an append that a checkpoint or segment deletion depends on.
#[derive(Default)]
pub(super) struct StateChanges {
    pub(super) vote: Option<Vec<u8>>,
    pub(super) committed: Option<Vec<u8>>,
    pub(super) purged: Option<u64>,
    pub(super) max_entry: Option<u64>,
}

/// Encodes one append's records on the caller's thread, noting what the writer must know about them.
pub(super) fn encode_append(records: &[Record], done: Done) -> EncodedAppend {
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
