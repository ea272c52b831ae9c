//! Transaction stories: `EXEC` as one entry, `WATCH`'s versions, and Turnstile's own commands as
//! steps. Given a state and an `Exec` at a time, exactly these replies, effects and state.

mod common;

use bytes::Bytes;
use common::{World, lock, lock_wait, pop, push, token};
use turnstile_core::{
    Acquire, Command, CoreError, Effect, ExpireCondition, Mode, NameKind, Query, QueueConfig, Reply,
    SessionId, SetKey, State, Step,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn set(key: &str, value: &str) -> Command {
    Command::Set(SetKey::new(key, value.to_owned()))
}

fn get(key: &str) -> Step {
    Step::Read(Query::Get { key: key.into() })
}

fn bytes(v: &str) -> Reply {
    Reply::Bytes(Bytes::from(v.to_owned()))
}

fn write(cmd: Command) -> Step {
    Step::Write(cmd)
}

fn exec(watches: &[(&str, u64)], steps: Vec<Step>) -> Command {
    exec_for(None, watches, steps)
}

fn exec_for(session: Option<SessionId>, watches: &[(&str, u64)], steps: Vec<Step>) -> Command {
    Command::Exec { session, watches: watches.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(), steps }
}

/// What `WATCH key` would remember now.
fn version(w: &World, key: &str) -> u64 {
    match w.query(Query::KeyVersions { keys: vec![key.into()] }) {
        Reply::Array(versions) => match versions.as_slice() {
            [Reply::Int(v)] => u64::try_from(*v).unwrap(),
            other => panic!("versions {other:?}"),
        },
        other => panic!("KeyVersions replied {other:?}"),
    }
}

fn create(name: &str) -> Command {
    Command::CreateQueue { name: name.into(), config: QueueConfig::default() }
}

fn ack(queue: &str, receipt: u64) -> Command {
    Command::Ack { queue: queue.into(), receipts: vec![receipt], fence: None }
}

fn release(name: &str, token: u64) -> Command {
    Command::Release { name: name.into(), token }
}

// ---------------------------------------------------------------------------------------------
// WATCH

#[test]
fn versions_are_the_index_of_the_last_change_and_zero_for_a_missing_key() {
    let mut w = World::new();
    assert_eq!(version(&w, "k"), 0);
    w.reply(set("k", "v")); // index 1
    w.reply(set("other", "v")); // index 2
    assert_eq!(version(&w, "k"), 1);
    assert_eq!(
        w.query(Query::KeyVersions { keys: vec!["other".into(), "k".into(), "none".into()] }),
        Reply::Array(vec![Reply::Int(2), Reply::Int(1), Reply::Int(0)])
    );
}

#[test]
fn a_watched_key_changed_since_aborts_the_whole_transaction() {
    let mut w = World::new();
    w.reply(set("k", "1"));
    let watched = version(&w, "k");
    // Another client writes the key after WATCH.
    w.reply(set("k", "2"));
    let expected = w.unchanged();
    let reply = w.reply(exec(&[("k", watched)], vec![write(set("k", "mine")), write(set("j", "mine"))]));
    assert_eq!(reply, Reply::Nil);
    assert_eq!(w.state, expected, "an aborted transaction applies nothing");
    assert_eq!(w.query(Query::Get { key: "k".into() }), bytes("2"));
    assert_eq!(w.query(Query::Get { key: "j".into() }), Reply::Nil);
}

#[test]
fn an_unchanged_watched_key_lets_every_step_run() {
    let mut w = World::new();
    w.reply(set("k", "1"));
    let watched = version(&w, "k");
    w.reply(set("unrelated", "x"));
    let reply = w.reply(exec(&[("k", watched), ("missing", 0)], vec![write(set("k", "2")), get("k")]));
    assert_eq!(reply, Reply::Array(vec![Reply::Ok, bytes("2")]));
}

#[test]
fn creating_a_watched_key_a_ttl_change_and_an_expiry_each_abort() {
    // Created since WATCH (0 then).
    let mut w = World::new();
    w.reply(set("k", "new"));
    assert_eq!(w.reply(exec(&[("k", 0)], vec![write(set("j", "1"))])), Reply::Nil);

    // A TTL set since WATCH, the value untouched.
    let mut w = World::new();
    w.reply(set("k", "v"));
    let watched = version(&w, "k");
    assert_eq!(
        w.reply(Command::Expire { key: "k".into(), ttl: 60_000, condition: ExpireCondition::Always }),
        Reply::Int(1)
    );
    assert_eq!(w.reply(exec(&[("k", watched)], vec![write(set("j", "1"))])), Reply::Nil);

    // Expired since WATCH, even before a tick removed it: the entry's stamp fires it first.
    let mut w = World::new();
    let mut with_ttl = SetKey::new("k", "v");
    with_ttl.expiry = turnstile_core::SetExpiry::In(100);
    w.reply(Command::Set(with_ttl));
    let watched = version(&w, "k");
    assert_ne!(watched, 0);
    w.now += 100;
    assert_eq!(w.reply(exec(&[("k", watched)], vec![write(set("j", "1"))])), Reply::Nil);
    assert_eq!(w.query(Query::Get { key: "j".into() }), Reply::Nil);
}

#[test]
fn a_key_created_and_deleted_again_since_watch_is_the_documented_gap() {
    let mut w = World::new();
    w.reply(set("k", "briefly"));
    w.reply(Command::Del { keys: vec!["k".into()], fence: None });
    // Back at version 0, as at WATCH: not seen as changed.
    assert_eq!(w.reply(exec(&[("k", 0)], vec![write(set("j", "1"))])), Reply::Array(vec![Reply::Ok]));
}

#[test]
fn a_transaction_that_changes_a_watched_key_aborts_a_later_one_in_the_same_entry() {
    // Two EXECs that watched the same version, coalesced into one log entry (one index): the
    // first changes the key, so the second sees a version other than the one it watched.
    let mut state = State::new();
    state.apply(1, 1_000, set("counter", "1"));
    let watched = 1;
    let first =
        exec(&[("counter", watched)], vec![write(Command::IncrBy { key: "counter".into(), delta: 1 })]);
    let second =
        exec(&[("counter", watched)], vec![write(Command::IncrBy { key: "counter".into(), delta: 1 })]);
    assert_eq!(state.apply(2, 1_000, first).0, Reply::Array(vec![Reply::Int(2)]));
    assert_eq!(state.apply(2, 1_000, second).0, Reply::Nil);
    assert_eq!(state.query(1_000, Query::Get { key: "counter".into() }), bytes("2"));
}

// ---------------------------------------------------------------------------------------------
// Steps

#[test]
fn a_step_failing_at_run_time_does_not_stop_the_others() {
    let mut w = World::new();
    w.reply(set("text", "not a number"));
    let reply = w.reply(exec(
        &[],
        vec![
            write(set("a", "1")),
            write(Command::IncrBy { key: "text".into(), delta: 1 }),
            write(Command::IncrBy { key: "a".into(), delta: 1 }),
            write(Command::Release { name: "no-such-lock".into(), token: 9 }),
        ],
    ));
    assert_eq!(
        reply,
        Reply::Array(vec![Reply::Ok, Reply::Error(CoreError::NotInteger), Reply::Int(2), Reply::Int(0)])
    );
    // No rollback: the steps around the failed one stay applied.
    assert_eq!(w.query(Query::Get { key: "a".into() }), bytes("2"));
    assert_eq!(w.query(Query::Get { key: "text".into() }), bytes("not a number"));
}

#[test]
fn reads_see_the_writes_before_them_and_not_the_ones_after() {
    let mut w = World::new();
    w.reply(set("k", "before"));
    let reply = w.reply(exec(
        &[],
        vec![
            get("k"),
            write(set("k", "during")),
            get("k"),
            Step::Read(Query::Exists { keys: vec!["k".into(), "gone".into()] }),
            write(Command::Del { keys: vec!["k".into()], fence: None }),
            get("k"),
        ],
    ));
    assert_eq!(
        reply,
        Reply::Array(vec![
            bytes("before"),
            Reply::Ok,
            bytes("during"),
            Reply::Int(1),
            Reply::Int(1),
            Reply::Nil
        ])
    );
}

#[test]
fn an_empty_transaction_answers_an_empty_array() {
    let mut w = World::new();
    assert_eq!(w.reply(exec(&[], vec![])), Reply::Array(vec![]));
}

#[test]
fn a_nested_exec_is_an_error_step() {
    let mut w = World::new();
    let inner = exec(&[], vec![write(set("inner", "1"))]);
    let reply = w.reply(exec(&[], vec![write(inner), write(set("outer", "1"))]));
    assert_eq!(
        reply,
        Reply::Array(vec![
            Reply::Error(CoreError::InvalidArgument("EXEC cannot be nested".into())),
            Reply::Ok
        ])
    );
    assert_eq!(w.query(Query::Get { key: "inner".into() }), Reply::Nil);
}

// ---------------------------------------------------------------------------------------------
// Locks and queues inside a transaction

#[test]
fn ack_release_and_push_commit_as_one_step() {
    let mut w = World::new();
    let s = w.session();
    let held = token(&w.reply(lock(s, "L", 10_000)));
    w.reply(create("in"));
    w.reply(create("out"));
    w.reply(push("in", "job"));
    let (popped, _) = w.apply(pop(s, "in", 1));
    let receipt = common::deliveries(&popped)[0].1;

    let reply = w.reply(exec_for(
        Some(s),
        &[],
        vec![
            write(ack("in", receipt)),
            write(release("L", held)),
            write(push("out", "result")),
            Step::Read(Query::FenceCheck { lock: "L".into(), token: held }),
        ],
    ));
    let Reply::Array(replies) = reply else { panic!("{reply:?}") };
    assert_eq!(replies[..2], [Reply::Int(1), Reply::Int(1)]);
    assert!(matches!(replies[2], Reply::Pushed { duplicate: false, .. }), "{:?}", replies[2]);
    assert_eq!(replies[3], Reply::Int(0), "the release is seen by the read after it");
    let stats = |q: &str| match w.query(Query::QueueStats { name: q.into() }) {
        Reply::QueueStats(stats) => stats,
        other => panic!("{other:?}"),
    };
    assert_eq!((stats("in").in_flight, stats("in").totals.acked), (0, 1));
    assert_eq!(stats("out").ready, 1);
    assert_eq!(w.state.summary().holds, 0);
}

#[test]
fn steps_that_act_for_a_session_are_given_the_transactions() {
    let mut w = World::new();
    let s = w.session();
    // The parser leaves the acquire's session empty; the server binds the transaction's.
    let acquire = Acquire {
        name: "L".into(),
        mode: Mode::Exclusive,
        ttl: 5_000,
        wait: 0,
        owner: None,
        session: None,
        keep: false,
    };
    let mut cmd = exec(&[], vec![write(Command::Acquire(acquire)), write(set("k", "v"))]);
    let slot = cmd.session_mut().expect("an acquire step needs the session");
    *slot = Some(s);
    let reply = w.reply(cmd);
    let Reply::Array(replies) = reply else { panic!("{reply:?}") };
    assert!(matches!(replies[0], Reply::Granted { .. }), "{replies:?}");
    let Reply::LockInfo(info) = w.query(Query::LockInfo { name: "L".into() }) else { panic!() };
    assert_eq!(info.holders[0].owner, turnstile_core::default_owner(s));
    // Its session's close releases it, as any hold of the session.
    w.close(s);
    assert_eq!(w.state.summary().holds, 0);

    // Plain key commands need no session: the server opens none for them.
    let mut keys_only = exec(&[], vec![write(set("k", "v")), get("k")]);
    assert!(keys_only.session_mut().is_none());
}

#[test]
fn a_release_inside_exec_grants_the_waiter_in_line() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let held = token(&w.reply(lock(a, "L", 10_000)));
    let Reply::Waiting { wait_id } = w.reply(lock_wait(b, "L", 10_000, 5_000)) else { panic!() };
    let (reply, fx) = w.apply(exec_for(Some(a), &[], vec![write(release("L", held)), write(set("k", "v"))]));
    assert_eq!(reply, Reply::Array(vec![Reply::Int(1), Reply::Ok]));
    assert_eq!(
        fx,
        vec![Effect::Granted { session: b, wait_id, name: "L".into(), token: held + 1, lease: 10_000 }]
    );
}

#[test]
fn a_waiting_acquire_or_pop_inside_exec_answers_at_once() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    w.reply(lock(a, "L", 10_000));
    w.reply(create("empty"));
    let mut waiting_pop = pop(b, "empty", 1);
    if let Command::Pop(p) = &mut waiting_pop {
        p.wait = 5_000;
    }
    let reply =
        w.reply(exec_for(Some(b), &[], vec![write(lock_wait(b, "L", 10_000, 5_000)), write(waiting_pop)]));
    // Not granted and nothing to pop: nil, as when a wait runs out; nobody is left in line.
    assert_eq!(reply, Reply::Array(vec![Reply::Nil, Reply::Nil]));
    let Reply::LockInfo(info) = w.query(Query::LockInfo { name: "L".into() }) else { panic!() };
    assert!(info.waiters.is_empty(), "{info:?}");
    assert_eq!(
        w.state.summary().timers,
        w.state.summary().holds + 1,
        "only the hold and the host have timers"
    );
}

#[test]
fn a_waiting_command_is_made_one_that_answers_at_once() {
    let mut cmd = lock_wait(SessionId(1), "L", 1_000, 5_000);
    assert!(cmd.may_wait());
    cmd.without_wait();
    assert!(!cmd.may_wait());
    assert!(!exec(&[], vec![write(lock_wait(SessionId(1), "L", 1_000, 5_000))]).may_wait());
}

#[test]
fn the_server_limits_see_every_step() {
    let cmd = exec(
        &[("watched-only", 0)],
        vec![
            write(set("key", "four")),
            write(push("queue", "longer payload")),
            get("read-only"),
            write(push("queue", "ab")),
        ],
    );
    let mut names = Vec::new();
    cmd.names(&mut |kind, name| names.push((kind, name.to_owned())));
    assert_eq!(
        names,
        vec![
            (NameKind::Key, "key".into()),
            (NameKind::Queue, "queue".into()),
            (NameKind::Queue, "queue".into())
        ]
    );
    assert_eq!(cmd.payload_len(), "longer payload".len());
    assert_eq!(cmd.message_len(), Some("longer payload".len() + 2));
    assert_eq!(exec(&[], vec![write(set("k", "v"))]).message_len(), None);
}

// ---------------------------------------------------------------------------------------------
// Determinism

#[test]
fn the_same_log_replayed_gives_an_equal_state_and_equal_snapshot_bytes() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let held = token(&w.reply(lock(a, "L", 10_000)));
    w.apply(lock_wait(b, "L", 10_000, 5_000));
    w.reply(create("q"));
    w.reply(set("k", "1"));
    let watched = version(&w, "k");
    w.apply(exec_for(
        Some(a),
        &[("k", watched)],
        vec![
            write(release("L", held)),
            write(push("q", "m1")),
            write(Command::IncrBy { key: "k".into(), delta: 5 }),
            get("k"),
            write(pop(a, "q", 1)),
        ],
    ));
    w.now += 50;
    w.apply(exec(&[("k", watched)], vec![write(set("k", "aborted"))]));
    w.apply(exec(
        &[],
        vec![
            write(set("h", "x")),
            write(Command::Expire { key: "h".into(), ttl: 10, condition: ExpireCondition::Always }),
        ],
    ));
    w.advance(20);

    let replayed = w.replay();
    assert_eq!(replayed, w.state);
    assert_eq!(replayed.snapshot(), w.state.snapshot());
    let restored = State::restore(w.state.snapshot().into()).expect("snapshot reads back");
    assert_eq!(restored, w.state);
}

#[test]
fn an_exec_survives_the_log_encoding() {
    // Entries travel between nodes and sit in the journal encoded: the transaction must decode
    // to itself, its steps and watches intact.
    let cmd = exec_for(
        Some(SessionId(7)),
        &[("k", 42)],
        vec![write(set("k", "v")), get("k"), write(lock_wait(SessionId(7), "L", 1_000, 0))],
    );
    let encoded = postcard::to_allocvec(&cmd).unwrap();
    assert_eq!(postcard::from_bytes::<Command>(&encoded).unwrap(), cmd);
}
