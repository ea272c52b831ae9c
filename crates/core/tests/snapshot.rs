//! Snapshots hold the primary data only: a restored state rebuilds every index, equal to the
//! live one, goes on exactly like it, and shares the snapshot buffer for payloads.

mod common;

use bytes::Bytes;
use common::{World, lock, lock_wait, pop, push};
use turnstile_core::{
    Command, Consume, Pop, Push, QueueConfig, Reply, SetExpiry, SetKey, SnapshotError, State,
};

/// A state with something in every index: groups, priorities, delays, TTLs, dedup ids, dead
/// letters, deliveries owned by a session, by a consumer and by nobody (KEEP), a waiting pop,
/// holds, a line of lock waiters, a semaphore and keys with and without expiry.
fn busy_world() -> World {
    let mut w = World::new();
    let (a, b, c) = (w.session(), w.session(), w.session());
    let config = QueueConfig {
        max_deliveries: 2,
        dead_letter: Some("dlq".into()),
        dedup_window: 9_000,
        ..QueueConfig::default()
    };
    w.reply(Command::CreateQueue { name: "jobs".into(), config });
    for i in 0..40u8 {
        w.apply(Command::Push(Push {
            priority: i % 3,
            group: (i % 4 == 0).then(|| format!("g{}", i % 8)),
            delay: if i % 5 == 0 { 2_000 } else { 0 },
            ttl: (i % 7 == 0).then_some(60_000),
            dedup: (i % 6 == 0).then(|| format!("d{i}")),
            ..Push::new("jobs", vec![i; 1 + usize::from(i)])
        }));
    }
    w.apply(pop(a, "jobs", 3));
    w.apply(Command::Pop(Pop { keep: true, ..pop_one(b, "jobs") }));
    w.apply(Command::Consume(Consume {
        queue: "jobs".into(),
        session: c,
        credit: 2,
        lease: None,
        auto_ack: false,
        exclusive: false,
        pool: None,
    }));
    w.apply(Command::Pop(Pop { wait: 5_000, ..pop_one(b, "empty") }));
    w.apply(push("dlq", "old"));
    w.reply(lock(a, "L", 10_000));
    w.apply(lock_wait(b, "L", 10_000, 4_000));
    w.apply(lock_wait(c, "L", 10_000, 6_000));
    w.apply(Command::Acquire(common::acquire(
        c,
        "S",
        turnstile_core::Mode::Permits { limit: 3, count: 2 },
        3_000,
    )));
    w.reply(Command::Set(SetKey::new("plain", "v")));
    w.reply(Command::Set(SetKey { expiry: SetExpiry::In(7_000), ..SetKey::new("ttl", "w") }));
    w.advance(2_500);
    w
}

fn pop_one(session: turnstile_core::SessionId, queue: &str) -> Pop {
    match pop(session, queue, 1) {
        Command::Pop(p) => p,
        _ => unreachable!(),
    }
}

#[test]
fn a_restored_state_equals_the_live_one_indexes_included() {
    let w = busy_world();
    let restored = State::restore(w.state.snapshot().into()).expect("snapshot restores");
    restored.check_invariants().expect("rebuilt indexes are consistent");
    assert_eq!(restored, w.state, "every field, every index");
    assert_eq!(restored.next_deadline(), w.state.next_deadline());
    assert_eq!(restored.summary(), w.state.summary());
}

#[test]
fn a_restored_state_goes_on_exactly_like_the_live_one() {
    let mut live = busy_world();
    let mut copy = State::restore(live.state.snapshot().into()).unwrap();
    let session = turnstile_core::SessionId(1);
    let steps = [
        (0, Command::Tick),
        (500, Command::Pop(Pop { count: 5, ..pop_one(session, "jobs") })),
        (0, Command::CloseSession { session, binding: None }),
        (0, Command::Ack { queue: "jobs".into(), receipts: vec![2, 3, 4], fence: None }),
        (3_000, Command::Tick),
        (0, Command::RefreshLeases),
        (0, Command::DetachSessions),
        (30_000, Command::Tick),
        (60_000, Command::Tick),
    ];
    for (advance, cmd) in steps {
        live.now += advance;
        let index = live.log.len() as u64 + 1;
        let expected = live.apply(cmd.clone());
        assert_eq!(copy.apply(index, live.now, cmd.clone()), expected, "{cmd:?}");
        assert_eq!(copy, live.state, "after {cmd:?}");
    }
}

/// Payloads are slices of the buffer the snapshot was restored from, not copies of it.
#[test]
fn restored_payloads_share_the_snapshot_buffer() {
    let mut w = World::new();
    let s = w.session();
    w.apply(push("q", &"x".repeat(1024)));
    let bytes = Bytes::from(w.state.snapshot());
    let range = bytes.as_ptr_range();
    let mut restored = State::restore(bytes.clone()).unwrap();
    let (reply, _) = restored.apply(10, w.now, pop(s, "q", 1));
    let Reply::Deliveries(delivered) = reply else { panic!("{reply:?}") };
    assert_eq!(delivered[0].payload, "x".repeat(1024).as_bytes());
    assert!(range.contains(&delivered[0].payload.as_ptr()), "the payload points into the snapshot");
}

#[test]
fn another_format_version_is_refused_by_name() {
    let mut bytes = busy_world().state.snapshot();
    bytes[0] = 2;
    let err = State::restore(bytes.into()).unwrap_err();
    assert!(matches!(err, SnapshotError::Version(2)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "snapshot format version 2 is not supported (this build reads versions 5 to 8)"
    );
    assert!(matches!(State::restore(Bytes::new()), Err(SnapshotError::Empty)));
}

/// Retired node ids survive a snapshot.
#[test]
fn retired_nodes_are_kept() {
    let mut w = busy_world();
    w.reply(Command::RetireNode { node: 4 });
    let bytes = w.state.snapshot();
    let restored = State::restore(Bytes::from(bytes.clone())).unwrap();
    assert!(restored.is_retired_node(4) && !restored.is_retired_node(3));
    assert_eq!(restored, w.state);
}

#[test]
fn a_newer_format_version_is_refused_as_newer() {
    let mut bytes = busy_world().state.snapshot();
    bytes[0] = 9;
    let err = State::restore(bytes.into()).unwrap_err();
    assert!(matches!(err, SnapshotError::Newer(9)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "snapshot written by a newer format (state version 9 > 8, the newest this build reads); it needs a newer \
         turnstile"
    );
}

/// Streamed to a writer, a snapshot is the same bytes as made whole.
#[test]
fn a_written_snapshot_is_the_same_bytes() {
    let state = busy_world().state;
    let written = state.write_snapshot(Vec::new()).unwrap();
    assert_eq!(written, state.snapshot());
    assert_eq!(State::restore(written.into()).unwrap(), state);
}

#[test]
fn a_truncated_or_extended_snapshot_is_refused() {
    let bytes = busy_world().state.snapshot();
    for len in [1, 2, bytes.len() / 2, bytes.len() - 1] {
        let cut = Bytes::copy_from_slice(&bytes[..len]);
        assert!(matches!(State::restore(cut), Err(SnapshotError::Decode(_))), "cut at {len}");
    }
    let mut longer = bytes;
    longer.push(0);
    assert!(matches!(State::restore(longer.into()), Err(SnapshotError::Inconsistent(_))));
}

/// Found by the `snapshot_restore` fuzz target: a damaged snapshot whose bindings name an
/// exchange it does not hold restored, and the state broke its invariants on the first check.
#[test]
fn a_snapshot_binding_a_missing_exchange_is_inconsistent() {
    let file = include_bytes!("../../../fuzz/regressions/snapshot_restore/binding_of_missing_exchange");
    // The fuzz input's first byte is the target's control byte; the snapshot follows.
    match turnstile_core::State::restore(Bytes::copy_from_slice(&file[1..])) {
        Err(turnstile_core::SnapshotError::Inconsistent(why)) => {
            assert!(why.contains("missing exchange"), "{why}")
        }
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}
