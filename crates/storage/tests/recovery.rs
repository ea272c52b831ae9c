//! Recovery: a torn last record is cut and reported; anything else bad is `Corrupt` unless the operator asks
//! for `truncate_corrupt`.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{append_wait, copy_journal, data_of, entry, file_len, segment_files};
use turnstile_storage::{Journal, Options, Record, StorageError};

/// A journal with entries 1..=count, one append each; returns the segment they are in and the offset at which
/// each entry's record starts (plus the end of the file as the last element).
fn journal_with_entries(dir: &Path, count: u64) -> (PathBuf, Vec<u64>) {
    let (journal, _) = Journal::open(dir, Options::default()).unwrap();
    let segment = segment_files(dir).pop().unwrap();
    // The file is zero-filled ahead of its records while open: the records end where the bytes
    // written so far end.
    let start = file_len(&segment);
    let mut offsets = vec![start];
    for index in 1..=count {
        append_wait(&journal, vec![entry(index)]).unwrap();
        offsets.push(start + journal.stats().bytes);
    }
    journal.close().unwrap();
    (segment, offsets)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(offset).unwrap()] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn in_copy(copy: &Path, original: &Path) -> PathBuf {
    copy.join("log").join(original.file_name().unwrap())
}

fn truncate_corrupt() -> Options {
    Options { truncate_corrupt: true, ..Options::default() }
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 6);
    let (start, end) = (offsets[5], offsets[6]);
    assert!(end - start > 8, "the last record should have a header and a payload");
    for cut in start..end {
        let copy = copy_journal(dir.path());
        let torn = in_copy(copy.path(), &segment);
        OpenOptions::new().write(true).open(&torn).unwrap().set_len(cut).unwrap();

        let (journal, recovered) = Journal::open(copy.path(), Options::default()).unwrap();
        let expected_tail = (cut > start).then(|| (torn.clone(), start));
        assert_eq!(recovered.torn_tail, expected_tail, "cut at {cut}");
        assert_eq!(
            recovered.entries.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5],
            "cut at {cut}"
        );
        assert_eq!(recovered.entries[&5], data_of(5));
        assert_eq!(file_len(&torn), start, "the torn bytes are removed from the file (cut at {cut})");
        append_wait(&journal, vec![entry(6)]).unwrap();
        journal.close().unwrap();

        let (_journal, again) = Journal::open(copy.path(), Options::default()).unwrap();
        assert_eq!(again.torn_tail, None, "cut at {cut}: the second open finds nothing torn");
        assert_eq!(again.entries.len(), 6, "cut at {cut}");
    }
}

#[test]
fn an_all_zero_tail_is_the_zero_filled_space_and_is_cut_without_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 3);
    OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[0; 4096]).unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(recovered.entries.len(), 3);
    assert_eq!(file_len(&segment), offsets[3]);
}

#[test]
fn a_partial_record_followed_by_zeros_is_still_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 3);
    // A record's first bytes reached the disk, the rest of its page did not.
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[7, 0, 0, 0, 1, 2, 3, 4, 9]).unwrap();
    file.write_all(&[0; 4096]).unwrap();
    drop(file);
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.torn_tail, Some((segment.clone(), offsets[3])));
    assert_eq!(recovered.entries.len(), 3);
    assert_eq!(file_len(&segment), offsets[3]);
}

#[test]
fn a_checksum_failure_in_the_last_record_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 4);
    flip_byte(&segment, offsets[4] - 1);
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.torn_tail, Some((segment, offsets[3])));
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
}

#[test]
fn a_flipped_byte_in_a_middle_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 6);
    // A byte inside the payload of entry 3 (records 4..6 after it are intact).
    flip_byte(&segment, offsets[2] + 12);
    let before = std::fs::read(&segment).unwrap();

    let error = Journal::open(dir.path(), Options::default()).unwrap_err();
    match &error {
        StorageError::Corrupt { file, offset, .. } => {
            assert_eq!(file, &segment);
            assert_eq!(*offset, offsets[2]);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("--truncate-corrupt"), "{message}");
    assert!(message.contains(&segment.display().to_string()), "{message}");
    assert_eq!(std::fs::read(&segment).unwrap(), before, "a refused open must not touch the file");

    let (journal, recovered) = Journal::open(dir.path(), truncate_corrupt()).unwrap();
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(file_len(&segment), offsets[2]);
    append_wait(&journal, vec![entry(3)]).unwrap();
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 3, "after the cut the journal opens normally");
}

#[test]
fn a_corrupt_length_field_followed_by_valid_records_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, offsets) = journal_with_entries(dir.path(), 5);
    // Zero the length of entry 2: the frame cannot be followed, and valid records come after it.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = usize::try_from(offsets[1]).unwrap();
    bytes[at..at + 4].copy_from_slice(&[0; 4]);
    std::fs::write(&segment, bytes).unwrap();
    assert!(matches!(
        Journal::open(dir.path(), Options::default()),
        Err(StorageError::Corrupt { offset, .. }) if offset == offsets[1]
    ));
}

#[test]
fn a_bad_record_in_an_earlier_segment_is_corrupt_and_truncate_corrupt_drops_later_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (first, offsets) = journal_with_entries(dir.path(), 3);
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, vec![entry(4), Record::Vote(b"later vote".to_vec())]).unwrap();
    journal.close().unwrap();
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 2);
    assert_eq!(segments[0], first);

    // Cut the first segment in the middle of entry 3: a torn record, but not in the last segment.
    OpenOptions::new().write(true).open(&first).unwrap().set_len(offsets[3] - 2).unwrap();
    match Journal::open(dir.path(), Options::default()) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (first.clone(), offsets[2]))
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    let (_journal, recovered) = Journal::open(dir.path(), truncate_corrupt()).unwrap();
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(recovered.vote, None, "the later segment's vote went with it");
    let later_vote_on_disk = segment_files(dir.path())
        .iter()
        .any(|file| std::fs::read(file).unwrap().windows(10).any(|window| window == b"later vote"));
    assert!(!later_vote_on_disk, "the later segments are deleted");
}

/// A journal with entries 1..=3 (one write each), then entries 4..=40 of 500 bytes in ONE write (a group over
/// several pages), then, if `then_more`, entry 41 in a write of its own. Returns the segment, where the big
/// write starts and where it ends.
fn journal_with_a_big_write(dir: &Path, then_more: bool) -> (PathBuf, u64, u64) {
    let (journal, _) = Journal::open(dir, Options::default()).unwrap();
    let segment = segment_files(dir).pop().unwrap();
    let start = file_len(&segment);
    for index in 1..=3 {
        append_wait(&journal, vec![entry(index)]).unwrap();
    }
    let big_start = start + journal.stats().bytes;
    let big: Vec<Record> =
        (4..=40).map(|index| Record::Entry { index, data: vec![b'x'; 500].into() }).collect();
    append_wait(&journal, big).unwrap();
    let big_end = start + journal.stats().bytes;
    if then_more {
        append_wait(&journal, vec![entry(41)]).unwrap();
    }
    journal.close().unwrap();
    (segment, big_start, big_end)
}

/// Zeroes `[from, to)` of `path`: a page that never reached the disk.
fn zero_range(path: &Path, from: u64, to: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(from).unwrap()..usize::try_from(to).unwrap()].fill(0);
    std::fs::write(path, bytes).unwrap();
}

/// A power loss can leave a write's pages on disk in any order: here a page in the middle of the last write
/// is zeros while the records after it are intact. Nothing in that write was acknowledged, so it is a torn
/// last write, cut without the operator — whether the hole is in its middle or covers its start.
#[test]
fn a_last_write_with_a_hole_and_intact_records_after_the_hole_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, big_start, big_end) = journal_with_a_big_write(dir.path(), false);
    assert!(big_end - big_start > 3 * 4096, "the big write should span several pages");
    let page_after = |at: u64| at.next_multiple_of(4096);
    for (from, to) in
        [(page_after(big_start) + 4096, page_after(big_start) + 8192), (big_start, page_after(big_start + 1))]
    {
        let copy = copy_journal(dir.path());
        let torn = in_copy(copy.path(), &segment);
        zero_range(&torn, from, to);
        let (_journal, recovered) = Journal::open(copy.path(), Options::default())
            .unwrap_or_else(|e| panic!("zeros over [{from}, {to}): {e}"));
        assert_eq!(recovered.torn_tail, Some((torn.clone(), big_start)), "zeros over [{from}, {to})");
        assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(file_len(&torn), big_start, "the torn write is cut off");
    }
}

/// The same hole in a write that is followed by an intact one is damage to data that may have been
/// acknowledged: `Corrupt` at the start of the damaged write, and `truncate_corrupt` cuts there.
#[test]
fn a_write_with_a_hole_followed_by_an_intact_write_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (segment, big_start, _) = journal_with_a_big_write(dir.path(), true);
    let hole = big_start.next_multiple_of(4096) + 4096;
    zero_range(&segment, hole, hole + 4096);
    match Journal::open(dir.path(), Options::default()) {
        Err(StorageError::Corrupt { file, offset, .. }) => {
            assert_eq!((file, offset), (segment.clone(), big_start))
        }
        other => panic!("expected Corrupt at {big_start}, got {:?}", other.map(|(_, r)| r.entries.len())),
    }
    let (_journal, recovered) = Journal::open(dir.path(), truncate_corrupt()).unwrap();
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(file_len(&segment), big_start);
}
