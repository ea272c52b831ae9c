//! Journal records and their framing on disk. Pure: no I/O.
//!
//! ```text
//! frame   = [u32 LE payload length][u32 LE crc32c(payload)][payload]
//! payload = [u8 tag][fields, little-endian]
//! group   = [group frame: tag 7, u32 LE length, u32 LE crc32c of the frames that follow][frames]
//! ```
//! Every write after a segment's checkpoint is one group: the frames of one `write(2)`, preceded by their
//! length and checksum, so that recovery can tell a write that was cut short — in whatever order its pages
//! reached the disk — from damage to data written before it.
//! The byte-by-byte layout of every tag is in the crate README.

use bytes::Bytes;

/// Bytes before the payload: length and checksum.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// The largest payload a frame can describe.
pub(crate) const MAX_PAYLOAD_BYTES: usize = u32::MAX as usize;

const TAG_ENTRY: u8 = 1;
const TAG_VOTE: u8 = 2;
const TAG_COMMITTED: u8 = 3;
const TAG_TRUNCATE_AFTER: u8 = 4;
const TAG_PURGE: u8 = 5;
const TAG_CHECKPOINT: u8 = 6;
const TAG_GROUP: u8 = 7;

/// The checkpoint format this version writes: 2 = the writes after it are groups. Version 1 (same layout,
/// frames not grouped) is still read.
const CHECKPOINT_VERSION: u8 = 2;
const CHECKPOINT_VERSION_UNGROUPED: u8 = 1;

/// A group frame's payload: tag, length, checksum.
const GROUP_PAYLOAD_BYTES: u32 = 1 + 4 + 4;
/// The size of a group's frame (see the module docs).
pub(crate) const GROUP_FRAME_BYTES: usize = FRAME_HEADER_BYTES + GROUP_PAYLOAD_BYTES as usize;
const CHECKPOINT_HAS_VOTE: u8 = 1;
const CHECKPOINT_HAS_COMMITTED: u8 = 2;
const CHECKPOINT_HAS_PURGED: u8 = 4;

/// One change to the log, as the caller sees it. The journal stores the byte strings opaquely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A log entry. Writing an index that already exists replaces it. Read back, `data` is a slice
    /// of the segment buffer (entries are most of the log: they are not copied out one by one).
    Entry { index: u64, data: Bytes },
    /// The latest vote (replaces the previous one).
    Vote(Vec<u8>),
    /// The latest committed marker (replaces the previous one).
    Committed(Vec<u8>),
    /// Drops entries with index > n; `None` drops all of them.
    TruncateAfter(Option<u64>),
    /// Entries with index <= n are no longer needed (dropped on replay; whole segments are deleted).
    Purge(u64),
}

/// The state a new segment starts with, so that every older segment can be deleted once it holds only
/// purged entries. Internal: callers never see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) vote: Option<Vec<u8>>,
    pub(crate) committed: Option<Vec<u8>>,
    pub(crate) purged: Option<u64>,
}

/// A payload as decoded from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded {
    Record(Record),
    /// `grouped`: the writes after it in its segment are groups (checkpoint version 2).
    Checkpoint {
        state: Checkpoint,
        grouped: bool,
    },
    /// The start of a group: `len` bytes of frames follow, whose crc32c is `crc`.
    Group {
        len: usize,
        crc: u32,
    },
}

/// Appends the frame for `record` to `out`.
pub(crate) fn encode_record(record: &Record, out: &mut Vec<u8>) -> Result<(), crate::StorageError> {
    let start = begin_frame(out);
    match record {
        Record::Entry { index, data } => {
            out.push(TAG_ENTRY);
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(data);
        }
        Record::Vote(vote) => {
            out.push(TAG_VOTE);
            out.extend_from_slice(vote);
        }
        Record::Committed(committed) => {
            out.push(TAG_COMMITTED);
            out.extend_from_slice(committed);
        }
        Record::TruncateAfter(after) => {
            out.push(TAG_TRUNCATE_AFTER);
            out.push(u8::from(after.is_some()));
            out.extend_from_slice(&after.unwrap_or(0).to_le_bytes());
        }
        Record::Purge(upto) => {
            out.push(TAG_PURGE);
            out.extend_from_slice(&upto.to_le_bytes());
        }
    }
    finish_frame(out, start)
}

/// Appends the frame for `checkpoint` to `out`.
pub(crate) fn encode_checkpoint(
    checkpoint: &Checkpoint,
    out: &mut Vec<u8>,
) -> Result<(), crate::StorageError> {
    let start = begin_frame(out);
    let mut flags = 0;
    if checkpoint.vote.is_some() {
        flags |= CHECKPOINT_HAS_VOTE;
    }
    if checkpoint.committed.is_some() {
        flags |= CHECKPOINT_HAS_COMMITTED;
    }
    if checkpoint.purged.is_some() {
        flags |= CHECKPOINT_HAS_PURGED;
    }
    out.push(TAG_CHECKPOINT);
    out.push(CHECKPOINT_VERSION);
    out.push(flags);
    out.extend_from_slice(&checkpoint.purged.unwrap_or(0).to_le_bytes());
    for bytes in [&checkpoint.vote, &checkpoint.committed] {
        let bytes = bytes.as_deref().unwrap_or(&[]);
        let len = u32::try_from(bytes.len()).map_err(|_| crate::StorageError::RecordTooLarge {
            bytes: bytes.len(),
            max: MAX_PAYLOAD_BYTES,
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    finish_frame(out, start)
}

/// The frame that starts a group of `frames` (written in front of them).
pub(crate) fn group_frame(frames: &[u8]) -> Result<[u8; GROUP_FRAME_BYTES], crate::StorageError> {
    let len = u32::try_from(frames.len())
        .map_err(|_| crate::StorageError::RecordTooLarge { bytes: frames.len(), max: MAX_PAYLOAD_BYTES })?;
    let mut out = Vec::with_capacity(GROUP_FRAME_BYTES);
    let start = begin_frame(&mut out);
    out.push(TAG_GROUP);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(frames).to_le_bytes());
    finish_frame(&mut out, start)?;
    Ok(out.try_into().expect("a group frame has a fixed size"))
}

/// If `buf` starts with an intact group — its frame, and the frames it covers with a matching checksum — the
/// group's whole size. (A write that was cut short fails this, whichever of its pages are missing.)
pub(crate) fn intact_group(buf: &[u8]) -> Option<usize> {
    let frame = buf.get(..GROUP_FRAME_BYTES)?;
    let (header, payload) = frame.split_at(FRAME_HEADER_BYTES);
    // Most offsets fail this first test, which matters when recovery searches a file for a group.
    if header[..4] != GROUP_PAYLOAD_BYTES.to_le_bytes()
        || payload[0] != TAG_GROUP
        || header[4..] != crc32c::crc32c(payload).to_le_bytes()
    {
        return None;
    }
    let len = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize;
    let crc = u32::from_le_bytes([payload[5], payload[6], payload[7], payload[8]]);
    let frames = buf.get(GROUP_FRAME_BYTES..GROUP_FRAME_BYTES.checked_add(len)?)?;
    (crc32c::crc32c(frames) == crc).then_some(GROUP_FRAME_BYTES + len)
}

fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    start
}

fn finish_frame(out: &mut Vec<u8>, start: usize) -> Result<(), crate::StorageError> {
    let payload = &out[start + FRAME_HEADER_BYTES..];
    let Ok(len) = u32::try_from(payload.len()) else {
        let bytes = payload.len();
        out.truncate(start);
        return Err(crate::StorageError::RecordTooLarge { bytes, max: MAX_PAYLOAD_BYTES });
    };
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What is found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A frame whose checksum matches and whose payload decodes; `len` is the whole frame's size.
    Valid { decoded: Decoded, len: usize },
    /// Fewer bytes remain than the frame needs (header or payload): what a write cut short looks like.
    Truncated,
    /// The length field is zero, so the next frame cannot be located.
    ZeroLength,
    /// The checksum does not match; `len` is the size the header claims (it fits in the buffer).
    BadChecksum { len: usize },
    /// The checksum matches but the payload does not decode: not a torn write, a format problem.
    Undecodable { reason: String },
}

/// Reads the frame at the start of `buf`. Never allocates more than the payload that is actually present;
/// an entry's data is a slice of `buf`.
pub(crate) fn read_frame(buf: &Bytes) -> Frame {
    read(buf, true)
}

/// [`read_frame`] for a frame inside a group whose checksum matched (see [`intact_group`]): the frame's own
/// checksum covers bytes already checked, and is not computed again (on restart, a second pass over the log).
pub(crate) fn read_frame_in_checked_group(buf: &Bytes) -> Frame {
    read(buf, false)
}

fn read(buf: &Bytes, check: bool) -> Frame {
    let Some((header, rest)) = buf.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Frame::Truncated;
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return Frame::ZeroLength;
    }
    let Some(payload) = rest.get(..len) else {
        return Frame::Truncated;
    };
    if check && crc32c::crc32c(payload) != crc {
        return Frame::BadChecksum { len: FRAME_HEADER_BYTES + len };
    }
    match decode_payload(buf, payload) {
        Ok(decoded) => Frame::Valid { decoded, len: FRAME_HEADER_BYTES + len },
        Err(reason) => Frame::Undecodable { reason },
    }
}

/// Decodes `payload`, a part of `buf`.
fn decode_payload(buf: &Bytes, payload: &[u8]) -> Result<Decoded, String> {
    let (&tag, body) = payload.split_first().ok_or("empty payload")?;
    let record = match tag {
        TAG_ENTRY => {
            let (index, data) = take_u64(body).ok_or("entry shorter than its index")?;
            Record::Entry { index, data: buf.slice_ref(data) }
        }
        TAG_VOTE => Record::Vote(body.to_vec()),
        TAG_COMMITTED => Record::Committed(body.to_vec()),
        TAG_TRUNCATE_AFTER => match body {
            [0, rest @ ..] if rest.len() == 8 => Record::TruncateAfter(None),
            [1, rest @ ..] if rest.len() == 8 => Record::TruncateAfter(take_u64(rest).map(|(n, _)| n)),
            _ => return Err(format!("truncate-after record has a bad body of {} bytes", body.len())),
        },
        TAG_PURGE => match take_u64(body) {
            Some((upto, [])) => Record::Purge(upto),
            _ => return Err(format!("purge record has {} bytes instead of 8", body.len())),
        },
        TAG_CHECKPOINT => return decode_checkpoint(body),
        TAG_GROUP => {
            let [l0, l1, l2, l3, c0, c1, c2, c3] = body else {
                return Err(format!("group record has {} bytes instead of 8", body.len()));
            };
            let len = u32::from_le_bytes([*l0, *l1, *l2, *l3]) as usize;
            return Ok(Decoded::Group { len, crc: u32::from_le_bytes([*c0, *c1, *c2, *c3]) });
        }
        other => return Err(format!("unknown record tag {other}")),
    };
    Ok(Decoded::Record(record))
}

fn decode_checkpoint(body: &[u8]) -> Result<Decoded, String> {
    let [version, flags, rest @ ..] = body else {
        return Err("checkpoint shorter than its header".into());
    };
    let grouped = match *version {
        CHECKPOINT_VERSION => true,
        CHECKPOINT_VERSION_UNGROUPED => false,
        other => {
            return Err(format!(
                "unsupported checkpoint version {other} (this build reads {CHECKPOINT_VERSION_UNGROUPED} and \
                 {CHECKPOINT_VERSION})"
            ));
        }
    };
    let (purged, rest) = take_u64(rest).ok_or("checkpoint shorter than its header")?;
    let (vote, rest) = take_bytes(rest).ok_or("checkpoint vote runs past the record")?;
    let (committed, rest) = take_bytes(rest).ok_or("checkpoint committed runs past the record")?;
    if !rest.is_empty() {
        return Err(format!("checkpoint has {} trailing bytes", rest.len()));
    }
    let state = Checkpoint {
        vote: (flags & CHECKPOINT_HAS_VOTE != 0).then(|| vote.to_vec()),
        committed: (flags & CHECKPOINT_HAS_COMMITTED != 0).then(|| committed.to_vec()),
        purged: (flags & CHECKPOINT_HAS_PURGED != 0).then_some(purged),
    };
    Ok(Decoded::Checkpoint { state, grouped })
}

fn take_u64(buf: &[u8]) -> Option<(u64, &[u8])> {
    let (bytes, rest) = buf.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*bytes), rest))
}

fn take_bytes(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_of(record: &Record) -> Bytes {
        let mut out = Vec::new();
        encode_record(record, &mut out).unwrap();
        out.into()
    }

    #[test]
    fn every_record_kind_round_trips() {
        let records = [
            Record::Entry { index: 7, data: Bytes::from_static(b"hello") },
            Record::Entry { index: u64::MAX, data: Bytes::new() },
            Record::Vote(b"v".to_vec()),
            Record::Vote(Vec::new()),
            Record::Committed(b"c".to_vec()),
            Record::TruncateAfter(None),
            Record::TruncateAfter(Some(0)),
            Record::TruncateAfter(Some(42)),
            Record::Purge(9),
        ];
        for record in records {
            let frame = frame_of(&record);
            assert_eq!(
                read_frame(&frame),
                Frame::Valid { decoded: Decoded::Record(record.clone()), len: frame.len() },
                "{record:?}"
            );
        }
        for checkpoint in [
            Checkpoint::default(),
            Checkpoint { vote: Some(b"vote".to_vec()), committed: Some(Vec::new()), purged: Some(3) },
            Checkpoint { vote: None, committed: Some(b"c".to_vec()), purged: None },
        ] {
            let mut frame = Vec::new();
            encode_checkpoint(&checkpoint, &mut frame).unwrap();
            let frame = Bytes::from(frame);
            assert_eq!(
                read_frame(&frame),
                Frame::Valid {
                    decoded: Decoded::Checkpoint { state: checkpoint, grouped: true },
                    len: frame.len()
                }
            );
        }
    }

    #[test]
    fn entry_frame_layout_is_exact() {
        let frame = frame_of(&Record::Entry { index: 0x0102, data: Bytes::from_static(&[0xAA, 0xBB]) });
        let payload = [1, 0x02, 0x01, 0, 0, 0, 0, 0, 0, 0xAA, 0xBB];
        let mut expected = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        expected.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        expected.extend_from_slice(&payload);
        assert_eq!(frame, expected);
    }

    #[test]
    fn small_record_layouts_are_exact() {
        assert_eq!(&frame_of(&Record::Purge(5))[8..], &[5, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&frame_of(&Record::TruncateAfter(None))[8..], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&frame_of(&Record::TruncateAfter(Some(1)))[8..], &[4, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&frame_of(&Record::Vote(vec![9]))[8..], &[2, 9]);
        assert_eq!(&frame_of(&Record::Committed(vec![8]))[8..], &[3, 8]);
        let mut checkpoint = Vec::new();
        let state = Checkpoint { vote: Some(vec![7]), committed: None, purged: Some(2) };
        encode_checkpoint(&state, &mut checkpoint).unwrap();
        assert_eq!(&checkpoint[8..], &[6, 2, 5, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 0]);
        // A version-1 checkpoint (written before groups) is still read, as ungrouped.
        checkpoint[9] = 1;
        let crc = crc32c::crc32c(&checkpoint[8..]);
        checkpoint[4..8].copy_from_slice(&crc.to_le_bytes());
        let len = checkpoint.len();
        assert_eq!(
            read_frame(&checkpoint.into()),
            Frame::Valid { decoded: Decoded::Checkpoint { state, grouped: false }, len }
        );
        let crc = crc32c::crc32c(b"frames");
        let group = group_frame(b"frames").unwrap();
        let [c0, c1, c2, c3] = crc.to_le_bytes();
        assert_eq!(&group[8..], &[7, 6, 0, 0, 0, c0, c1, c2, c3]);
        assert_eq!(
            read_frame(&Bytes::copy_from_slice(&group)),
            Frame::Valid { decoded: Decoded::Group { len: 6, crc }, len: GROUP_FRAME_BYTES }
        );
    }

    #[test]
    fn every_truncation_of_a_frame_is_truncated() {
        let frame = frame_of(&Record::Entry { index: 1, data: Bytes::from_static(b"abcdef") });
        for cut in 0..frame.len() {
            assert_eq!(read_frame(&frame.slice(..cut)), Frame::Truncated, "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_payload_byte_fails_the_checksum() {
        let frame = frame_of(&Record::Entry { index: 1, data: Bytes::from_static(b"abcdef") });
        for at in FRAME_HEADER_BYTES..frame.len() {
            let mut bad = frame.to_vec();
            bad[at] ^= 0x40;
            assert_eq!(read_frame(&bad.into()), Frame::BadChecksum { len: frame.len() }, "flip at {at}");
        }
    }

    #[test]
    fn huge_length_is_truncated_not_allocated() {
        let mut frame = frame_of(&Record::Vote(b"x".to_vec())).to_vec();
        frame[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(read_frame(&frame.into()), Frame::Truncated);
    }

    #[test]
    fn checksummed_garbage_is_undecodable() {
        let payload = [99u8, 1, 2];
        let mut frame = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        frame.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        assert!(matches!(read_frame(&frame.into()), Frame::Undecodable { .. }));
        assert_eq!(read_frame(&Bytes::from_static(&[0; 16])), Frame::ZeroLength);
    }
}
