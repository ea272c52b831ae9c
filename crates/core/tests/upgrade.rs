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
