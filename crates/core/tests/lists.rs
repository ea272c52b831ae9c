//! Redis list stories: given a state and a command at a time, exactly these replies and effects.
//! Blocking pops wait in the state (FIFO per key, woken in the step that pushes, timed out by
//! the clock, ended with their session) and survive a snapshot.

mod common;

use bytes::Bytes;
use common::World;
use turnstile_core::{
    BlockingPop, Command, CoreError, Effect, End, Millis, Query, Reply, SessionId, SetKey, State,
    WAIT_FOREVER,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn b(v: &str) -> Reply {
    Reply::Bytes(Bytes::from(v.to_owned()))
}

fn arr(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|v| b(v)).collect())
}

fn push(key: &str, end: End, elements: &[&str]) -> Command {
    Command::ListPush {
        key: key.into(),
        end,
        elements: elements.iter().map(|e| Bytes::from(e.to_string())).collect(),
        only_if_exists: false,
    }
}

fn lpush(key: &str, elements: &[&str]) -> Command {
    push(key, End::Left, elements)
}

fn rpush(key: &str, elements: &[&str]) -> Command {
    push(key, End::Right, elements)
}

fn lrange(w: &World, key: &str) -> Reply {
    w.query(Query::ListRange { key: key.into(), start: 0, stop: -1 })
}

fn blpop(session: SessionId, keys: &[&str], wait: Millis) -> Command {
    Command::BlockingPop(BlockingPop {
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        from: End::Left,
        to: None,
        wait,
        session: Some(session),
    })
}

fn blmove(session: SessionId, source: &str, destination: &str, wait: Millis) -> Command {
    Command::BlockingPop(BlockingPop {
        keys: vec![source.into()],
        from: End::Left,
        to: Some((destination.into(), End::Right)),
        wait,
        session: Some(session),
    })
}

fn waiting(reply: &Reply) -> u64 {
    match reply {
        Reply::Waiting { wait_id } => *wait_id,
        other => panic!("expected a wait, got {other:?}"),
    }
}

fn done(session: SessionId, wait_id: u64, reply: Reply) -> Effect {
    Effect::ListWaitDone { session, wait_id, reply }
}

fn wrongtype() -> Reply {
    Reply::Error(CoreError::WrongKind)
}

// ---------------------------------------------------------------------------------------------
// Non-blocking commands

#[test]
fn pushes_and_pops_at_both_ends() {
    let mut w = World::new();
    assert_eq!(w.reply(rpush("l", &["a", "b"])), Reply::Int(2));
    assert_eq!(w.reply(lpush("l", &["x", "y"])), Reply::Int(4));
    assert_eq!(lrange(&w, "l"), arr(&["y", "x", "a", "b"]));
    let pop = |end, count| Command::ListPop { key: "l".into(), end, count };
    assert_eq!(w.reply(pop(End::Left, None)), b("y"));
    assert_eq!(w.reply(pop(End::Right, Some(2))), arr(&["b", "a"]));
    assert_eq!(w.reply(pop(End::Left, Some(0))), arr(&[]), "count 0 of a list: an empty array");
    assert_eq!(w.reply(pop(End::Left, Some(5))), arr(&["x"]));
    // The last element took the key with it.
    assert_eq!(w.query(Query::Exists { keys: vec!["l".into()] }), Reply::Int(0));
    assert_eq!(w.reply(pop(End::Left, None)), Reply::Nil);
    assert_eq!(w.reply(pop(End::Left, Some(2))), Reply::Nil, "a missing key is nil even with a count");
    let pushx = Command::ListPush {
        key: "l".into(),
        end: End::Left,
        elements: vec![Bytes::from("a")],
        only_if_exists: true,
    };
    assert_eq!(w.reply(pushx), Reply::Int(0));
    assert_eq!(w.query(Query::ListLen { key: "l".into() }), Reply::Int(0));
}

#[test]
fn ranges_indexes_and_positions_count_from_either_end() {
    let mut w = World::new();
    w.reply(rpush("l", &["a", "b", "c", "b", "d"]));
    let range = |w: &World, start, stop| w.query(Query::ListRange { key: "l".into(), start, stop });
    assert_eq!(range(&w, 1, 2), arr(&["b", "c"]));
    assert_eq!(range(&w, -2, -1), arr(&["b", "d"]));
    assert_eq!(range(&w, -100, 100), arr(&["a", "b", "c", "b", "d"]));
    assert_eq!(range(&w, 3, 1), arr(&[]));
    assert_eq!(range(&w, 5, 9), arr(&[]));
    let index = |w: &World, index| w.query(Query::ListIndex { key: "l".into(), index });
    assert_eq!((index(&w, 0), index(&w, -1), index(&w, 5)), (b("a"), b("d"), Reply::Nil));
    let pos = |w: &World, rank, count, max_len| {
        w.query(Query::ListPos { key: "l".into(), element: Bytes::from("b"), rank, count, max_len })
    };
    assert_eq!(pos(&w, 1, None, 0), Reply::Int(1));
    assert_eq!(pos(&w, 2, None, 0), Reply::Int(3));
    assert_eq!(pos(&w, -1, None, 0), Reply::Int(3));
    assert_eq!(pos(&w, 1, Some(0), 0), Reply::Array(vec![Reply::Int(1), Reply::Int(3)]));
    assert_eq!(pos(&w, -1, Some(0), 0), Reply::Array(vec![Reply::Int(3), Reply::Int(1)]));
    assert_eq!(pos(&w, 1, Some(0), 2), Reply::Array(vec![Reply::Int(1)]), "MAXLEN looks at 2 elements");
    assert_eq!(pos(&w, 3, None, 0), Reply::Nil);
    assert!(matches!(pos(&w, 0, None, 0), Reply::Error(CoreError::InvalidArgument(_))));
}

#[test]
fn set_rem_trim_and_insert_edit_in_place() {
    let mut w = World::new();
    w.reply(rpush("l", &["a", "b", "a", "c", "a"]));
    let set =
        |index, v: &str| Command::ListSet { key: "l".into(), index, element: Bytes::from(v.to_owned()) };
    assert_eq!(w.reply(set(-1, "z")), Reply::Ok);
    assert_eq!(w.reply(set(5, "z")), Reply::Error(CoreError::InvalidArgument("index out of range".into())));
    let missing = Command::ListSet { key: "none".into(), index: 0, element: Bytes::from("v") };
    assert_eq!(w.reply(missing), Reply::Error(CoreError::InvalidArgument("no such key".into())));
    let rem = |count| Command::ListRem { key: "l".into(), count, element: Bytes::from("a") };
    assert_eq!(w.reply(rem(-1)), Reply::Int(1), "from the tail");
    assert_eq!(lrange(&w, "l"), arr(&["a", "b", "c", "z"]));
    w.reply(rpush("l", &["a", "a"]));
    assert_eq!(w.reply(rem(1)), Reply::Int(1), "from the head");
    assert_eq!(w.reply(rem(0)), Reply::Int(2), "all");
    assert_eq!(lrange(&w, "l"), arr(&["b", "c", "z"]));
    let insert = |before, pivot: &str| Command::ListInsert {
        key: "l".into(),
        before,
        pivot: Bytes::from(pivot.to_owned()),
        element: Bytes::from("n"),
    };
    assert_eq!(w.reply(insert(true, "c")), Reply::Int(4));
    assert_eq!(w.reply(insert(false, "z")), Reply::Int(5));
    assert_eq!(w.reply(insert(true, "nope")), Reply::Int(-1));
    assert_eq!(lrange(&w, "l"), arr(&["b", "n", "c", "z", "n"]));
    let trim = |start, stop| Command::ListTrim { key: "l".into(), start, stop };
    assert_eq!(w.reply(trim(1, -2)), Reply::Ok);
    assert_eq!(lrange(&w, "l"), arr(&["n", "c", "z"]));
    assert_eq!(w.reply(trim(5, 10)), Reply::Ok);
    assert_eq!(w.query(Query::Exists { keys: vec!["l".into()] }), Reply::Int(0), "trimmed to nothing: gone");
}

#[test]
fn lmove_moves_between_lists_and_rotates_one() {
    let mut w = World::new();
    w.reply(rpush("a", &["1", "2", "3"]));
    let mv =
        |s: &str, d: &str, from, to| Command::ListMove { source: s.into(), destination: d.into(), from, to };
    assert_eq!(w.reply(mv("a", "b", End::Right, End::Left)), b("3"));
    assert_eq!(w.reply(mv("a", "a", End::Left, End::Right)), b("1"));
    assert_eq!(lrange(&w, "a"), arr(&["2", "1"]));
    assert_eq!(lrange(&w, "b"), arr(&["3"]));
    assert_eq!(w.reply(mv("none", "b", End::Left, End::Left)), Reply::Nil);
}

#[test]
fn every_list_command_refuses_another_type_with_wrongtype() {
    let mut w = World::new();
    w.reply(Command::Set(SetKey::new("s", "v".to_owned())));
    w.reply(rpush("l", &["a"]));
    let s = w.session();
    let cmds = [
        lpush("s", &["a"]),
        Command::ListPop { key: "s".into(), end: End::Left, count: None },
        Command::ListSet { key: "s".into(), index: 0, element: Bytes::from("v") },
        Command::ListRem { key: "s".into(), count: 0, element: Bytes::from("v") },
        Command::ListTrim { key: "s".into(), start: 0, stop: 1 },
        Command::ListInsert {
            key: "s".into(),
            before: true,
            pivot: Bytes::from("a"),
            element: Bytes::from("b"),
        },
        Command::ListMove { source: "s".into(), destination: "l".into(), from: End::Left, to: End::Left },
        Command::ListMove { source: "l".into(), destination: "s".into(), from: End::Left, to: End::Left },
        blpop(s, &["s"], 0),
        blpop(s, &["none", "s"], 1000),
        blmove(s, "l", "s", 1000),
    ];
    for cmd in cmds {
        assert_eq!(w.reply(cmd.clone()), wrongtype(), "{cmd:?}");
    }
    for q in [
        Query::ListLen { key: "s".into() },
        Query::ListRange { key: "s".into(), start: 0, stop: 1 },
        Query::ListIndex { key: "s".into(), index: 0 },
        Query::ListPos { key: "s".into(), element: Bytes::from("v"), rank: 1, count: None, max_len: 0 },
    ] {
        assert_eq!(w.query(q.clone()), wrongtype(), "{q:?}");
    }
    assert_eq!(lrange(&w, "l"), arr(&["a"]), "nothing moved");
    // A list is not a string either.
    assert_eq!(w.query(Query::Get { key: "l".into() }), wrongtype());
}

#[test]
fn list_bytes_count_toward_memory() {
    let mut w = World::new();
    w.reply(rpush("l", &["aaaa", "bb"]));
    assert_eq!(w.state.payload_bytes(), 1 + 6);
    w.reply(Command::ListSet { key: "l".into(), index: 0, element: Bytes::from("x") });
    assert_eq!(w.state.payload_bytes(), 1 + 3);
    w.reply(Command::ListInsert {
        key: "l".into(),
        before: true,
        pivot: Bytes::from("x"),
        element: Bytes::from("ccc"),
    });
    assert_eq!(w.state.payload_bytes(), 1 + 6);
    w.reply(Command::ListPop { key: "l".into(), end: End::Left, count: Some(2) });
    assert_eq!(w.state.payload_bytes(), 1 + 2);
    w.reply(Command::ListPop { key: "l".into(), end: End::Left, count: None });
    assert_eq!(w.state.payload_bytes(), 0);
}

// ---------------------------------------------------------------------------------------------
// Blocking pops

#[test]
fn a_blocking_pop_with_elements_answers_at_once_from_the_first_key_that_has_some() {
    let mut w = World::new();
    let s = w.session();
    w.reply(rpush("b", &["1", "2"]));
    assert_eq!(w.reply(blpop(s, &["a", "b"], 1000)), arr(&["b", "1"]));
    let brpop = Command::BlockingPop(BlockingPop {
        keys: vec!["b".into()],
        from: End::Right,
        to: None,
        wait: 1000,
        session: Some(s),
    });
    assert_eq!(w.reply(brpop), arr(&["b", "2"]));
    // Wait 0 (inside MULTI or a script) answers nil at once, and waits for nothing.
    assert_eq!(w.reply(blpop(s, &["a", "b"], 0)), Reply::Nil);
    // Waiting needs a session.
    let no_session = Command::BlockingPop(BlockingPop {
        keys: vec!["a".into()],
        from: End::Left,
        to: None,
        wait: 1000,
        session: None,
    });
    assert_eq!(w.reply(no_session), Reply::Error(CoreError::WaitWithoutSession));
}

#[test]
fn a_push_hands_the_element_to_the_waiter_in_the_same_step() {
    let mut w = World::new();
    let s = w.session();
    let wait_id = waiting(&w.reply(blpop(s, &["a", "b"], 5_000)));
    let (reply, fx) = w.apply(lpush("b", &["x"]));
    assert_eq!(reply, Reply::Int(1), "Redis replies the length before the waiter took it");
    assert_eq!(fx, vec![done(s, wait_id, arr(&["b", "x"]))]);
    assert_eq!(w.query(Query::Exists { keys: vec!["b".into()] }), Reply::Int(0), "never stored");
    assert_eq!(w.state.payload_bytes(), 0);
    // The wait is over: its deadline fires nothing, and a later push is stored.
    assert_eq!(w.advance(10_000), vec![]);
    assert_eq!(w.reply(lpush("a", &["y"])), Reply::Int(1));
    assert_eq!(lrange(&w, "a"), arr(&["y"]));
}

#[test]
fn a_push_of_several_serves_after_the_command_as_redis_does() {
    let mut w = World::new();
    let s = w.session();
    let wait_id = waiting(&w.reply(blpop(s, &["k"], WAIT_FOREVER)));
    let (reply, fx) = w.apply(lpush("k", &["a", "b"]));
    assert_eq!(reply, Reply::Int(2));
    assert_eq!(fx, vec![done(s, wait_id, arr(&["k", "b"]))], "the head after the whole push");
    assert_eq!(lrange(&w, "k"), arr(&["a"]));
}

#[test]
fn waiters_are_served_longest_waiting_first() {
    let mut w = World::new();
    let (s1, s2, s3) = (w.session(), w.session(), w.session());
    let w1 = waiting(&w.reply(blpop(s1, &["k"], 10_000)));
    let w2 = waiting(&w.reply(blpop(s2, &["other", "k"], 10_000)));
    let w3 = waiting(&w.reply(blpop(s3, &["k"], WAIT_FOREVER)));
    let (_, fx) = w.apply(rpush("k", &["1", "2"]));
    assert_eq!(fx, vec![done(s1, w1, arr(&["k", "1"])), done(s2, w2, arr(&["k", "2"]))]);
    // The second waiter left every line it was in: a push to `other` goes to nobody.
    assert_eq!(w.reply(rpush("other", &["o"])), Reply::Int(1));
    let (_, fx) = w.apply(rpush("k", &["3"]));
    assert_eq!(fx, vec![done(s3, w3, arr(&["k", "3"]))]);
}

#[test]
fn a_wait_times_out_with_nil_and_forever_has_no_deadline() {
    let mut w = World::new();
    let s = w.session();
    let timed = waiting(&w.reply(blpop(s, &["k"], 1_500)));
    let forever = waiting(&w.reply(blpop(s, &["k"], WAIT_FOREVER)));
    assert_eq!(w.advance(1_499), vec![]);
    assert_eq!(w.advance(1), vec![done(s, timed, Reply::Nil)]);
    assert_eq!(w.next_deadline(), None, "the forever wait has no timer");
    let (_, fx) = w.apply(rpush("k", &["v"]));
    assert_eq!(fx, vec![done(s, forever, arr(&["k", "v"]))]);
}

#[test]
fn closing_or_resuming_the_session_ends_its_waits_without_an_answer() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    waiting(&w.reply(blpop(s1, &["k"], WAIT_FOREVER)));
    let later = waiting(&w.reply(blpop(s2, &["k"], 5_000)));
    assert_eq!(w.close(s1), vec![]);
    let resume =
        Command::ResumeSession { session: s2, secret: common::SECRET, host: common::HOST, timeout: 60_000 };
    let (reply, fx) = w.apply(resume);
    assert!(matches!(reply, Reply::Int(_)), "{reply:?}");
    assert_eq!(fx, vec![], "a resumed session's waits end: nobody reads the old connection");
    assert_eq!(w.reply(rpush("k", &["v"])), Reply::Int(1), "stored: nobody waits any more");
    assert_eq!(w.advance(10_000), vec![], "the ended wait's deadline fires nothing");
    let _ = later;
}

#[test]
fn blmove_waits_and_chains_to_the_destination_waiters() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    let mover = waiting(&w.reply(blmove(s1, "src", "dst", 10_000)));
    let popper = waiting(&w.reply(blpop(s2, &["dst"], 10_000)));
    let (reply, fx) = w.apply(rpush("src", &["x", "y"]));
    assert_eq!(reply, Reply::Int(2));
    assert_eq!(fx, vec![done(s1, mover, b("x")), done(s2, popper, arr(&["dst", "x"]))]);
    assert_eq!(lrange(&w, "src"), arr(&["y"]));
    assert_eq!(w.query(Query::Exists { keys: vec!["dst".into()] }), Reply::Int(0));
    // An LMOVE onto a key with waiters serves them too.
    let popper = waiting(&w.reply(blpop(s2, &["dst"], 10_000)));
    let mv =
        Command::ListMove { source: "src".into(), destination: "dst".into(), from: End::Left, to: End::Left };
    let (reply, fx) = w.apply(mv);
    assert_eq!(reply, b("y"));
    assert_eq!(fx, vec![done(s2, popper, arr(&["dst", "y"]))]);
}

#[test]
fn a_blmove_whose_destination_became_another_type_gets_wrongtype_and_the_element_stays() {
    let mut w = World::new();
    let s = w.session();
    let mover = waiting(&w.reply(blmove(s, "src", "dst", 10_000)));
    w.reply(Command::Set(SetKey::new("dst", "string".to_owned())));
    let (_, fx) = w.apply(rpush("src", &["x"]));
    assert_eq!(fx, vec![done(s, mover, wrongtype())]);
    assert_eq!(lrange(&w, "src"), arr(&["x"]));
}

#[test]
fn waits_survive_a_snapshot_and_go_on_the_same() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    let w1 = waiting(&w.reply(blpop(s1, &["a", "b"], 3_000)));
    let w2 = waiting(&w.reply(blmove(s2, "b", "c", WAIT_FOREVER)));
    w.reply(rpush("c", &["kept"]));
    let restored = State::restore(w.state.snapshot().into()).expect("restores");
    restored.check_invariants().expect("rebuilt indexes are consistent");
    assert_eq!(restored, w.state, "every field, every index");
    assert_eq!(restored.next_deadline(), w.state.next_deadline());
    let mut copy = restored;
    let next_index = w.log.len() as u64 + 1;
    let (_, fx) = copy.apply(next_index, w.now, rpush("b", &["1", "2"]));
    assert_eq!(fx, vec![done(s1, w1, arr(&["b", "1"])), done(s2, w2, b("2"))]);
    copy.check_invariants().unwrap();
    assert_eq!(
        copy.query(w.now, Query::ListRange { key: "c".into(), start: 0, stop: -1 }),
        arr(&["kept", "2"])
    );
    // The live state, given the same entry, comes out equal.
    w.apply(rpush("b", &["1", "2"]));
    assert_eq!(w.state, copy);
}

#[test]
fn a_replayed_log_gives_the_same_state() {
    let mut w = World::new();
    let (s1, s2) = (w.session(), w.session());
    w.reply(blpop(s1, &["k"], 2_000));
    w.reply(blpop(s2, &["k"], WAIT_FOREVER));
    w.apply(rpush("k", &["a", "b", "c"]));
    w.advance(5_000);
    w.reply(blmove(s1, "k", "m", 1_000));
    assert_eq!(w.replay(), w.state);
}
