//! Restoring the state machine from a snapshot, and reading a backup file.

use bytes::Bytes;
use turnstile_core::State;
use turnstile_storage::{BackupHeader, BackupWriter, read_backup, verify_backup};

/// Snapshot bytes, and the same bytes as a backup file (the first byte picks how: as they are,
/// or wrapped in a well-formed backup around them).
///
/// Asserts: restoring errs, or gives a state whose invariants hold, whose snapshot is the same
/// bytes read again and restores to an equal state; the state applies a `Tick` the same way as
/// its restored copy. A backup file: `read_backup` and `verify_backup` (whole and streamed)
/// agree on accepting it and on its header, and a backup written around the bytes reads back
/// exactly those bytes.
pub fn snapshot_restore(data: &[u8]) {
    let (c, input) = crate::control(data);
    restore(input);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("backup");
    if c & 1 == 0 {
        std::fs::write(&path, input).expect("backup written");
        let read = read_backup(&path);
        let verified = verify_backup(&path);
        match (&read, &verified) {
            (Ok((h1, state)), Ok((h2, size))) => {
                assert_eq!(h1, h2, "the two backup readers read different headers");
                assert_eq!(size, &(input.len() as u64));
                restore(state);
            }
            (Err(_), Err(_)) => {}
            _ => panic!("read_backup and verify_backup disagree: {read:?} / {verified:?}"),
        }
    } else {
        let header = BackupHeader { index: 7, cluster_id: 9, created_at: 11 };
        let file = std::fs::File::create(&path).expect("backup created");
        let mut writer = BackupWriter::new(file, &header).expect("header written");
        std::io::Write::write_all(&mut writer, input).expect("state written");
        writer.finish().expect("trailer written");
        let (read, state) = read_backup(&path).unwrap_or_else(|e| panic!("a backup just written: {e}"));
        assert_eq!((read, &state[..]), (header, input), "a backup reads back other bytes");
        assert!(verify_backup(&path).is_ok(), "a backup just written does not verify");
    }
}

fn restore(bytes: &[u8]) {
    let Ok(state) = State::restore(Bytes::copy_from_slice(bytes)) else { return };
    if let Err(e) = state.check_invariants() {
        panic!("a restored state breaks an invariant: {e}");
    }
    let snapshot = state.snapshot();
    let again = State::restore(Bytes::from(snapshot.clone()))
        .unwrap_or_else(|e| panic!("the snapshot of a restored state does not restore: {e}"));
    assert!(again == state, "a restored state snapshots to bytes that restore differently");
    assert_eq!(again.snapshot(), snapshot, "a snapshot changes when restored and taken again");
    let (mut a, mut b) = (state, again);
    let now = a.clock().saturating_add(1);
    let (index_a, index_b) = (a.applied_index() + 1, b.applied_index() + 1);
    assert_eq!(
        a.apply(index_a, now, turnstile_core::Command::Tick),
        b.apply(index_b, now, turnstile_core::Command::Tick),
        "a restored copy ticks differently"
    );
}
