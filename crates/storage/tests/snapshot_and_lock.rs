//! Snapshots (atomic save, newest wins, corruption is loud) and the data-directory lock.

use turnstile_storage::{SnapshotStore, StorageError, lock_dir};

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn save_then_load_latest_returns_the_newest_and_deletes_older() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert_eq!(store.load_latest().unwrap(), None);

    store.save(5, b"meta-5", b"data-5").unwrap();
    store.save(12, b"meta-12", &vec![7u8; 100_000]).unwrap();
    assert_eq!(snapshot_files(dir.path()), vec![format!("snapshot-{:020}.snap", 12)]);

    let reopened = SnapshotStore::open(dir.path()).unwrap();
    let (index, meta, data) = reopened.load_latest().unwrap().unwrap();
    assert_eq!((index, meta.as_slice()), (12, &b"meta-12"[..]));
    assert_eq!(data, vec![7u8; 100_000]);

    store.save(13, b"", b"").unwrap();
    assert_eq!(store.load_latest().unwrap(), Some((13, Vec::new(), bytes::Bytes::new())));
}

/// A snapshot larger than the write step is written (and flushed) in pieces; every byte comes back in place.
#[test]
fn a_snapshot_written_in_pieces_reads_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    // 2.5 pieces of 1 MiB, each byte telling its position: a piece written twice or out of place shows.
    let data: Vec<u8> = (0..(5usize << 19)).map(|i| u8::try_from(i % 251).unwrap()).collect();
    store.save(7, b"meta", &data).unwrap();
    let (index, meta, loaded) = SnapshotStore::open(dir.path()).unwrap().load_latest().unwrap().unwrap();
    assert_eq!((index, meta.as_slice()), (7, &b"meta"[..]));
    assert!(loaded == data, "{} bytes read back, {} written, or they differ", loaded.len(), data.len());
}

#[test]
fn a_leftover_temp_file_is_removed_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.save(3, b"m", b"d").unwrap();
    let temp = dir.path().join(format!("snapshot-{:020}.snap.tmp", 9));
    std::fs::write(&temp, b"half a snapshot").unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    assert!(!temp.exists());
    assert_eq!(store.load_latest().unwrap().map(|(index, ..)| index), Some(3));
}

#[test]
fn a_corrupt_newest_snapshot_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.save(20, b"meta", b"the state machine").unwrap();
    let path = dir.path().join(format!("snapshot-{:020}.snap", 20));
    let good = std::fs::read(&path).unwrap();

    for (what, bad) in [
        ("flipped data byte", {
            let mut bad = good.clone();
            let at = bad.len() - 6;
            bad[at] ^= 0x10;
            bad
        }),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("empty", Vec::new()),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let error = store.load_latest().unwrap_err();
        assert!(
            matches!(&error, StorageError::CorruptSnapshot { file, .. } if *file == path),
            "{what}: {error:?}"
        );
        assert!(error.to_string().contains(&format!("snapshot-{:020}.snap", 20)), "{what}: {error}");
        assert!(error.to_string().contains("older snapshot"), "{what}: {error}");
    }
}

#[test]
fn a_corrupt_newest_snapshot_does_not_fall_back_to_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.save(1, b"m", b"old").unwrap();
    // An older snapshot that save() would have deleted, put back by hand, and a corrupt newer one.
    let old = std::fs::read(dir.path().join(format!("snapshot-{:020}.snap", 1))).unwrap();
    store.save(2, b"m", b"new").unwrap();
    std::fs::write(dir.path().join(format!("snapshot-{:020}.snap", 1)), old).unwrap();
    std::fs::write(dir.path().join(format!("snapshot-{:020}.snap", 2)), b"garbage").unwrap();
    assert!(matches!(store.load_latest(), Err(StorageError::CorruptSnapshot { .. })));
}

/// A snapshot whose magic names a later file format is refused as newer (with both versions), not as corrupt.
#[test]
fn a_snapshot_of_a_newer_format_is_refused_as_newer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.save(6, b"m", b"d").unwrap();
    let path = dir.path().join(format!("snapshot-{:020}.snap", 6));
    let mut bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"TSSNAP01", "version 1 is what this build writes");
    bytes[6..8].copy_from_slice(b"02");
    std::fs::write(&path, &bytes).unwrap();
    let error = store.load_latest().unwrap_err();
    assert!(
        matches!(&error, StorageError::NewerFormat { file, found: 2, supported: 1, .. } if *file == path),
        "{error:?}"
    );
    assert!(error.to_string().contains("newer format (snapshot file version 2 > 1"), "{error}");
    // Another magic altogether is still "not a snapshot".
    bytes[..8].copy_from_slice(b"TSSNAPxy");
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(store.load_latest(), Err(StorageError::CorruptSnapshot { .. })));
}

#[test]
fn a_snapshot_renamed_to_another_index_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(dir.path()).unwrap();
    store.save(4, b"m", b"d").unwrap();
    std::fs::rename(
        dir.path().join(format!("snapshot-{:020}.snap", 4)),
        dir.path().join(format!("snapshot-{:020}.snap", 8)),
    )
    .unwrap();
    assert!(matches!(store.load_latest(), Err(StorageError::CorruptSnapshot { .. })));
}

#[test]
fn locking_a_dir_twice_fails_with_the_dir_and_our_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let held = lock_dir(&data).unwrap();
    assert_eq!(held.dir(), data.as_path());
    match lock_dir(&data) {
        Err(StorageError::Locked { dir, pid }) => {
            assert_eq!(dir, data);
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    let message = lock_dir(&data).unwrap_err().to_string();
    assert!(message.contains(&data.display().to_string()) && message.contains("pid"), "{message}");
    drop(held);
    let again = lock_dir(&data).unwrap();
    assert_eq!(std::fs::read_to_string(data.join("LOCK")).unwrap().trim(), std::process::id().to_string());
    drop(again);
}
