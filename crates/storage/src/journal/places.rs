//! Where each entry is in the files, as the writer last wrote them, and reading entries back from
//! there.

use std::fs::File;
use std::os::unix::fs::FileExt;

use bytes::Bytes;

use crate::error::{IoContext, StorageError};
use crate::index::{Entries, EntryAt, drop_above, drop_upto};
use crate::record::{Decoded, Frame, Record, read_frame};
use crate::segment::Segment;

use super::Journal;
use super::append::IndexChange;

/// The index of entry places, and the bytes of the frames it lists.
#[derive(Debug, Default)]
pub(super) struct Places {
    at: Entries<EntryAt>,
    bytes: u64,
}

impl Places {
    pub(super) fn new(at: Entries<EntryAt>) -> Places {
        let bytes = at.values().map(|at| at.len as u64).sum();
        Places { at, bytes }
    }

    /// Applies one record's change, keeping `bytes` the sum of the places' lengths.
    pub(super) fn apply(&mut self, change: IndexChange) {
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

impl Journal {
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
}
