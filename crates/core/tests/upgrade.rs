//! A binary upgraded in place reads what the previous release wrote: its log entries (commands)
//! and its snapshots (state version 5). The fixtures were written by that release (commit
//! 2106fe3): two sessions, a kept hold, pushes, a pop, keys; a snapshot after the first seven
//! commands; then another hold, a push, a close, a lease refresh, the restart's detach.

use bytes::Bytes;
use turnstile_core::{Command, Query, Reply, SessionId, State, Summary, Timestamp};

const COMMANDS: &[u8] = include_bytes!("fixtures/v5.commands");
const SNAPSHOT: &[u8] = include_bytes!("fixtures/v5.snapshot");

/// The log as the old release encoded it: (index, stamp, command).
fn old_log() -> Vec<(u64, Timestamp, Command)> {
    postcard::from_bytes(COMMANDS).expect("the old release's commands decode")
}

/// What the old release's state held after the whole log (its `summary()`, timers aside: this
/// release keeps a timer of its own for the old sessions' host).
fn expected(summary: &Summary) {
    let fields = (
        summary.sessions,
        summary.locks,
        summary.holds,
        summary.queues,
        summary.messages,
        summary.keys,
        summary.payload_bytes,
        summary.last_token,
    );
    assert_eq!(fields, (0, 1, 1, 1, 3, 1, 14, 3));
}

fn replay(state: &mut State, log: &[(u64, Timestamp, Command)]) {
    for (index, now, cmd) in log {
        if let (Reply::Error(e), _) = state.apply(*index, *now, cmd.clone()) {
            panic!("command {index} ({cmd:?}) failed: {e}");
        }
    }
}

#[test]
fn old_log_entries_decode_as_the_commands_they_were() {
    let log = old_log();
    assert_eq!(log.len(), 14);
    assert_eq!(log[0].2, Command::LegacyOpenSession);
    assert!(matches!(&log[2].2, Command::Acquire(a) if a.name == "held" && a.keep));
    assert_eq!(log[10].2, Command::LegacyCloseSession { session: SessionId(2) });
    assert_eq!(log[11].2, Command::RefreshLeases);
    assert_eq!(log[12].2, Command::DetachSessions);
}

#[test]
fn the_old_log_replays_and_the_old_snapshot_restores_to_the_same_state() {
    let log = old_log();
    let mut replayed = State::new();
    replay(&mut replayed, &log);
    expected(&replayed.summary());

    let mut restored = State::restore(Bytes::from_static(SNAPSHOT)).expect("a version-5 snapshot restores");
    assert_eq!(restored.applied_index(), 7);
    replay(&mut restored, &log[7..]);
    expected(&restored.summary());
    let now = log.last().map(|(_, now, _)| *now).unwrap_or_default();
    for state in [&replayed, &restored] {
        assert_eq!(state.query(now, Query::Get { key: "k".into() }), Reply::Bytes(Bytes::from_static(b"v2")));
    }
}

/// The old release's sessions end as they did there (closed, or detached by a restart), never by
/// a host expiry that release did not have: a replayed log must come out as it did.
#[test]
fn old_sessions_do_not_expire_on_their_own() {
    let mut restored = State::restore(Bytes::from_static(SNAPSHOT)).expect("restores");
    let sessions = restored.summary().sessions;
    assert_eq!(sessions, 2);
    let later = restored.clock() + 3_600_000;
    replay(&mut restored, &[(8, later, Command::Tick)]);
    assert_eq!(restored.summary().sessions, sessions, "an hour on, the old sessions are open");
    replay(&mut restored, &[(9, later + 1, Command::LegacyOpenSession)]);
    replay(&mut restored, &[(10, later + 3_600_000, Command::Tick)]);
    assert_eq!(restored.summary().sessions, sessions + 1);
}

/// A snapshot the release before typed keys wrote (format 6, commit 572e2ca): a session, three
/// string keys (`ttl` expiring at 51 010), a kept lock hold and a queued message, the last
/// written at index 6 and time 1 040. Its keys come back as strings with their TTLs; the lock and
/// the queue are untouched.
const SNAPSHOT_V6: &[u8] = include_bytes!("fixtures/v6.snapshot");

#[test]
fn a_version_6_snapshot_restores_its_keys_as_strings() {
    assert_eq!(SNAPSHOT_V6[0], 6, "the fixture is a version-6 snapshot");
    let mut state = State::restore(Bytes::from_static(SNAPSHOT_V6)).expect("a version-6 snapshot restores");
    state.check_invariants().expect("the restored state is consistent");
    assert_eq!((state.applied_index(), state.clock()), (6, 1_040));
    let now = state.clock();
    let get = |state: &State, key: &str| state.query(now, Query::Get { key: key.into() });
    assert_eq!(get(&state, "plain"), Reply::Bytes(Bytes::from_static(b"value")));
    assert_eq!(get(&state, "ttl"), Reply::Bytes(Bytes::from_static(b"expiring")));
    assert_eq!(get(&state, "counter"), Reply::Bytes(Bytes::from_static(b"41")));
    assert_eq!(state.query(now, Query::Pttl { key: "ttl".into() }), Reply::Int(51_010 - 1_040));
    assert_eq!(state.query(now, Query::Pttl { key: "plain".into() }), Reply::Int(-1));
    let summary = state.summary();
    assert_eq!((summary.keys, summary.holds, summary.queues, summary.messages), (3, 1, 1, 1));
    // The upgraded keys are ordinary keys: a counter counts on, a TTL still fires.
    assert_eq!(state.apply(7, 2_000, Command::IncrBy { key: "counter".into(), delta: 1 }).0, Reply::Int(42));
    state.apply(8, 51_010, Command::Tick);
    assert_eq!(state.query(51_010, Query::Get { key: "ttl".into() }), Reply::Nil);
    assert_eq!(state.summary().keys, 2);
    state.check_invariants().expect("consistent after the TTL fired");
    // And a snapshot of the upgraded state is this version's, and reads back equal.
    let again = State::restore(state.snapshot().into()).expect("restores");
    assert_eq!(again, state);
}

/// A snapshot the release before users wrote (format 7, commit 3b575a8): session 1 holding `lk`
/// (token 1) and a kept hold of `kept` (token 2), a message in `q`, a hash `h` and a list `l`,
/// the last entry (a refused script load) at index 7 and time 1 060. It restores with no users and no owners: what it
/// holds belongs to nobody, as it did.
const SNAPSHOT_V7: &[u8] = include_bytes!("fixtures/v7.snapshot");

#[test]
fn a_version_7_snapshot_restores_with_no_users() {
    assert_eq!(SNAPSHOT_V7[0], 7, "the fixture is a version-7 snapshot");
    let state = State::restore(Bytes::from_static(SNAPSHOT_V7)).expect("a version-7 snapshot restores");
    state.check_invariants().expect("the restored state is consistent");
    assert_eq!((state.applied_index(), state.clock()), (7, 1_060));
    let summary = state.summary();
    assert_eq!((summary.sessions, summary.holds, summary.messages, summary.keys), (1, 2, 1, 2));
    assert!(state.acl_layer().is_empty());
    assert_eq!((state.token_user(1), state.token_user(2)), (None, None));
    let again = State::restore(state.snapshot().into()).expect("restores");
    assert_eq!(again, state);
}
