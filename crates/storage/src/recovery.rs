//! Replaying the segments at startup, and the rules for a bad record.
//!
//! ```text
//!  segment 1 ─► segment 2 ─► … ─► last segment
//!  every valid record is applied in order (a group's records once the group's checksum matches);
//!  at the first bad group or record:
//!    last segment, only zeros from a record boundary on ─► the zero-filled space ahead of the records
//!                                                          (the journal fills segments in steps): cut it there
//!    last segment, no intact write after it ─► torn tail: cut the file there, warn, go on
//!    anything else ─► StorageError::Corrupt, or with truncate_corrupt: cut there, drop later segments
//! ```
//! Only a torn *last* write is tolerated: it is what a crash in the middle of a write leaves behind, and it was
//! never acknowledged under `FsyncPolicy::Always`. A bad write followed by good ones is damage to data that may
//! have been acknowledged, so the operator decides.
//!
//! In a segment whose checkpoint says its writes are groups (all written since groups exist), a write is a
//! group and "no intact write after it" means no intact group starts anywhere later in the file. A power loss
//! can leave a write's pages on disk in any order — a hole of zeros followed by intact records of the same
//! write — and that is still a torn last write. In older segments a write is a record, and the rule follows
//! the chain of record lengths after the bad one (see `torn_reason`).

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{IoContext, StorageError};
use crate::file::sync_dir;
use crate::index::{Entries, EntryAt, drop_above, drop_upto};
use crate::record::{
    Checkpoint, Decoded, Frame, GROUP_FRAME_BYTES, Record, intact_group, read_frame,
    read_frame_in_checked_group,
};
use crate::segment::{Segment, list_segments};

/// The state the journal described when it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every entry still in the log (not truncated away, index above `purged`), by index. Each is a
    /// slice of the buffer its segment was read into.
    pub entries: BTreeMap<u64, Bytes>,
    /// Where each of `entries` is on disk: the journal's index to start from.
    pub(crate) places: Entries<EntryAt>,
    /// The last vote written.
    pub vote: Option<Vec<u8>>,
    /// The last committed marker written.
    pub committed: Option<Vec<u8>>,
    /// The highest purge point written.
    pub purged: Option<u64>,
    /// If the last record of the last segment was torn by a crash: the file and the offset it was cut at.
    pub torn_tail: Option<(PathBuf, u64)>,
}

impl Recovered {
    /// Applies one decoded record, found at `at`; returns the entry index if it was an entry.
    fn apply(&mut self, decoded: Decoded, at: EntryAt) -> Option<u64> {
        match decoded {
            Decoded::Record(Record::Entry { index, data }) => {
                self.entries.insert(index, data);
                self.places.insert(index, at);
                return Some(index);
            }
            Decoded::Record(Record::Vote(vote)) => self.vote = Some(vote),
            Decoded::Record(Record::Committed(committed)) => self.committed = Some(committed),
            Decoded::Record(Record::TruncateAfter(after)) => {
                drop_above(&mut self.entries, after);
                drop_above(&mut self.places, after);
            }
            Decoded::Record(Record::Purge(upto)) => self.purge(upto),
            Decoded::Checkpoint { state: Checkpoint { vote, committed, purged }, .. } => {
                self.vote = vote;
                self.committed = committed;
                if let Some(upto) = purged {
                    self.purge(upto);
                }
            }
            // Checked by `replay` before the records it covers are read.
            Decoded::Group { .. } => {}
        }
        None
    }

    fn purge(&mut self, upto: u64) {
        self.purged = Some(self.purged.map_or(upto, |purged| purged.max(upto)));
        drop_upto(&mut self.entries, upto);
        drop_upto(&mut self.places, upto);
    }

    /// The checkpoint a new segment starts with.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint { vote: self.vote.clone(), committed: self.committed.clone(), purged: self.purged }
    }
}

/// Replays every segment in `log_dir`; returns the state and the segments that remain.
pub(crate) fn replay(
    log_dir: &Path,
    truncate_corrupt: bool,
) -> Result<(Recovered, Vec<Segment>), StorageError> {
    let mut segments = list_segments(log_dir)?;
    let mut recovered = Recovered::default();
    let last = segments.len().checked_sub(1);
    for position in 0..segments.len() {
        let segment = &mut segments[position];
        let bytes = Bytes::from(
            fs::read(&segment.path).ctx(|| format!("reading segment {}", segment.path.display()))?,
        );
        let mut offset = 0;
        // Whether the writes after the checkpoint are groups.
        let mut grouped = false;
        // Where the group being read ends: its records' checksums were covered by the group's.
        let mut checked_until = 0;
        let bad = loop {
            if offset == bytes.len() {
                break None;
            }
            // Inside a checked group a frame is read within the group's bounds: one that claimed to run past
            // them would read as truncated, not be trusted.
            let frame = if offset < checked_until {
                read_frame_in_checked_group(&bytes.slice(offset..checked_until))
            } else {
                read_frame(&bytes.slice(offset..))
            };
            match frame {
                Frame::Valid { decoded: Decoded::Group { len, .. }, .. } => {
                    let rest = &bytes[offset..];
                    let Some(size) = intact_group(rest) else {
                        let truncated = GROUP_FRAME_BYTES.saturating_add(len) > rest.len();
                        break Some(Bad::Group { truncated });
                    };
                    grouped = true;
                    checked_until = offset + size;
                    offset += GROUP_FRAME_BYTES;
                }
                Frame::Valid { decoded, len } => {
                    if let Decoded::Checkpoint { grouped: writes_are_groups, .. } = &decoded {
                        grouped = *writes_are_groups;
                    }
                    let at = EntryAt { seq: segment.seq, offset: offset as u64, len };
                    if let Some(index) = recovered.apply(decoded, at) {
                        segment.max_entry = Some(segment.max_entry.map_or(index, |max| max.max(index)));
                    }
                    offset += len;
                }
                bad => break Some(Bad::Frame(bad)),
            }
        };
        let Some(bad) = bad else { continue };
        let cut_at = offset as u64;
        if Some(position) == last
            && matches!(bad, Bad::Frame(Frame::ZeroLength))
            && bytes[offset..].iter().all(|b| *b == 0)
        {
            // The zero-filled space ahead of the records (see the journal's ZERO_STEP), left by a crash
            // or a kill: nothing was written there. Cut so the segment ends with its records.
            tracing::debug!(
                file = %segment.path.display(),
                offset = cut_at,
                bytes_dropped = bytes.len() - offset,
                "journal: cutting the zero-filled end of the last segment"
            );
            cut_file(&segment.path, cut_at)?;
            break;
        }
        let tail = bytes.slice(offset..);
        // Only the last segment can end in a torn write.
        let torn = (Some(position) == last).then(|| match &bad {
            Bad::Group { truncated } => torn_write(*truncated, &tail),
            Bad::Frame(frame @ Frame::Undecodable { .. }) => torn_reason(frame, &tail),
            Bad::Frame(frame) if grouped => torn_write(matches!(frame, Frame::Truncated), &tail),
            Bad::Frame(frame) => torn_reason(frame, &tail),
        });
        if let Some(Some(why)) = torn {
            tracing::warn!(
                file = %segment.path.display(),
                offset = cut_at,
                bytes_dropped = bytes.len() - offset,
                "journal: torn last write ({why}); cutting the file there (it was never acknowledged as durable)"
            );
            cut_file(&segment.path, cut_at)?;
            recovered.torn_tail = Some((segment.path.clone(), cut_at));
            break;
        }
        let reason = describe(&bad);
        if !truncate_corrupt {
            return Err(StorageError::Corrupt { file: segment.path.clone(), offset: cut_at, reason });
        }
        let dropped_segments: Vec<Segment> = segments.drain(position + 1..).collect();
        let segment = &segments[position];
        tracing::error!(
            file = %segment.path.display(),
            offset = cut_at,
            reason,
            bytes_dropped = bytes.len() - offset,
            later_segments_dropped = dropped_segments.len(),
            "journal: CORRUPT record; --truncate-corrupt is set, so the log is cut here and EVERYTHING AFTER IT \
             IS DISCARDED, including records that may have been acknowledged"
        );
        for dropped in dropped_segments.iter().rev() {
            fs::remove_file(&dropped.path).ctx(|| format!("deleting segment {}", dropped.path.display()))?;
        }
        sync_dir(log_dir)?;
        cut_file(&segment.path, cut_at)?;
        break;
    }
    Ok((recovered, segments))
}

/// What stopped the replay of a segment.
#[derive(Debug)]
enum Bad {
    /// A group whose frame is intact but whose records' checksum does not match (`truncated`: they run past
    /// the end of the file).
    Group { truncated: bool },
    /// A frame that is not valid: a group's or, in older segments, a record's.
    Frame(Frame),
}

/// Why the write that starts at `tail` (a bad group, or a bad frame where a group should start) in a grouped
/// segment is torn, or `None` if an intact group follows it somewhere in the file.
fn torn_write(truncated: bool, tail: &[u8]) -> Option<&'static str> {
    if (1..tail.len()).any(|at| intact_group(&tail[at..]).is_some()) {
        return None;
    }
    Some(if truncated {
        "the last write runs past the end of the file"
    } else {
        "the last write does not match its checksum, and no intact write follows it"
    })
}

/// Why the bad frame at the start of `tail` (in the last segment) is a torn write, or `None` if it is not.
///
/// Torn: a frame that runs past the end of the file, an all-zero tail, or a checksum mismatch with no valid
/// record anywhere in the chain of frames after it.
fn torn_reason(bad: &Frame, tail: &Bytes) -> Option<&'static str> {
    if tail.iter().all(|byte| *byte == 0) {
        return Some("the rest of the file is zeros");
    }
    let mut rest = match bad {
        Frame::Truncated => return Some("the record runs past the end of the file"),
        Frame::BadChecksum { len } => tail.slice(*len..),
        Frame::ZeroLength | Frame::Undecodable { .. } | Frame::Valid { .. } => return None,
    };
    // Follow the lengths after the bad record: if any later frame is intact, this is damage, not a torn write.
    loop {
        if rest.iter().all(|byte| *byte == 0) {
            return Some("checksum mismatch, and only zeros after it");
        }
        match read_frame(&rest) {
            Frame::Truncated => return Some("checksum mismatch, and only a partial record after it"),
            Frame::BadChecksum { len } => rest = rest.slice(len..),
            Frame::ZeroLength | Frame::Undecodable { .. } | Frame::Valid { .. } => return None,
        }
    }
}

fn describe(bad: &Bad) -> String {
    let bad = match bad {
        Bad::Group { truncated: true } => {
            return "a write runs past the end of a segment that is not the last".into();
        }
        Bad::Group { truncated: false } => {
            return "a write's checksum does not match, with more data after it".into();
        }
        Bad::Frame(frame) => frame,
    };
    match bad {
        Frame::Truncated => "the record runs past the end of a segment that is not the last".into(),
        Frame::ZeroLength => "the record's length field is zero".into(),
        Frame::BadChecksum { .. } => "checksum mismatch with more data after it".into(),
        Frame::Undecodable { reason } => {
            format!("the checksum matches but the record does not decode: {reason}")
        }
        Frame::Valid { .. } => "valid record".into(),
    }
}

/// Cuts `path` to `len` bytes and fsyncs it.
fn cut_file(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new().write(true).open(path).ctx(|| format!("opening {}", path.display()))?;
    file.set_len(len).ctx(|| format!("cutting {} to {len} bytes", path.display()))?;
    file.sync_all().ctx(|| format!("fsync of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{encode_checkpoint, encode_record};

    /// A segment as versions before groups wrote it: a version-1 checkpoint, then record frames, no groups.
    fn ungrouped_segment(entries: u64) -> (Vec<u8>, Vec<usize>) {
        let mut out = Vec::new();
        encode_checkpoint(&Checkpoint::default(), &mut out).unwrap();
        // The checkpoint's version byte (after the frame header and the tag), back to 1, and its checksum.
        out[9] = 1;
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        let mut starts = Vec::new();
        for index in 1..=entries {
            starts.push(out.len());
            encode_record(&Record::Entry { index, data: format!("entry-{index}").into() }, &mut out).unwrap();
        }
        (out, starts)
    }

    #[test]
    fn segments_written_before_groups_still_replay_with_their_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, starts) = ungrouped_segment(5);
        let path = Segment::new(dir.path(), 1).path;
        std::fs::write(&path, &bytes).unwrap();
        let (recovered, _) = replay(dir.path(), false).unwrap();
        assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(recovered.torn_tail, None);

        // A torn last record is cut as before...
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (recovered, _) = replay(dir.path(), false).unwrap();
        assert_eq!(recovered.torn_tail, Some((path.clone(), starts[4] as u64)));
        assert_eq!(recovered.entries.len(), 4);

        // ...and a bad record followed by intact ones is still corrupt.
        let mut damaged = bytes.clone();
        damaged[starts[1] + 10] ^= 1;
        std::fs::write(&path, &damaged).unwrap();
        match replay(dir.path(), false) {
            Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, starts[1] as u64),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }
}
