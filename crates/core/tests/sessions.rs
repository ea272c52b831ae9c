//! Sessions held by hosts: a host that stops sending keep-alives loses its sessions, exactly as
//! if each had been closed; a session resumed on another host keeps its holds and deliveries and
//! outlives the host it left; a new leader's `RefreshLeases` gives every host a full timeout.

mod common;

use common::{World, apply_checked, deliveries, lock, lock_wait, pop, push, token};
use turnstile_core::{
    Command, CoreError, Effect, HostId, Millis, Query, QueueStats, Reply, SessionId, State,
};

const A: HostId = HostId(0xa);
const B: HostId = HostId(0xb);
const TIMEOUT: Millis = 10_000;

fn open(w: &mut World, host: HostId, secret: u64) -> SessionId {
    match w.reply(Command::OpenSession { host, secret, timeout: TIMEOUT }) {
        Reply::Session(s) => s,
        other => panic!("open session replied {other:?}"),
    }
}

fn keep_alive(host: HostId) -> Command {
    Command::KeepAlive { host, timeout: TIMEOUT }
}

fn resume(session: SessionId, secret: u64, host: HostId) -> Command {
    Command::ResumeSession { session, secret, host, timeout: TIMEOUT }
}

/// Whether `token` is a live hold of `lock`.
fn held(w: &World, lock: &str, token: u64) -> bool {
    w.query(Query::FenceCheck { lock: lock.into(), token }) == Reply::Int(1)
}

fn ready(w: &World, queue: &str) -> u64 {
    match w.query(Query::QueueStats { name: queue.into() }) {
        Reply::QueueStats(QueueStats { ready, .. }) => ready,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_host_past_its_timeout_closes_exactly_its_own_sessions() {
    let mut w = World::new();
    let a = open(&mut w, A, 1);
    let b = open(&mut w, B, 2);
    let l1 = token(&w.reply(lock(a, "l1", 60_000)));
    let l2 = token(&w.reply(lock(b, "l2", 60_000)));
    w.apply(push("jobs", "m"));
    let popped = deliveries(&w.apply(pop(a, "jobs", 1)).0);
    assert_eq!(popped.len(), 1);
    // b waits for a's lock: a's end is what grants it.
    let (waiting, _) = w.apply(lock_wait(b, "l1", 60_000, 30_000));
    let Reply::Waiting { wait_id } = waiting else { panic!("{waiting:?}") };

    // B keeps sending keep-alives; A has gone silent.
    w.now += 6_000;
    assert_eq!(w.reply(keep_alive(B)), Reply::Ok);
    let fx = w.advance(3_999);
    assert_eq!(fx, vec![], "A's timeout has not passed yet");
    let fx = w.advance(1);
    let granted: Vec<&Effect> = fx.iter().filter(|e| matches!(e, Effect::Granted { .. })).collect();
    assert_eq!(granted.len(), 1, "{fx:?}");
    assert!(
        matches!(granted[0], Effect::Granted { session, wait_id: w, .. } if *session == b && *w == wait_id)
    );

    assert!(!held(&w, "l1", l1), "a's hold is released");
    assert!(held(&w, "l2", l2), "b's hold is not");
    assert_eq!(ready(&w, "jobs"), 1, "a's delivery went back to the queue");
    assert_eq!(
        w.reply(Command::CloseSession { session: a, binding: None }),
        Reply::Error(CoreError::UnknownSession(a))
    );
    // b is open: it can still act, and B's own expiry is still ahead.
    assert!(matches!(w.reply(lock(b, "l3", 60_000)), Reply::Granted { .. }));
    assert_eq!(w.state.summary().sessions, 1);
    assert_eq!(w.replay(), w.state, "the log replays to the same state");
}

#[test]
fn a_resumed_session_keeps_its_hold_and_delivery_and_outlives_the_host_it_left() {
    let mut w = World::new();
    let a = open(&mut w, A, 0xfeed);
    let other = open(&mut w, B, 9);
    let l = token(&w.reply(lock(a, "l", 60_000)));
    w.apply(push("jobs", "m"));
    let popped = deliveries(&w.apply(pop(a, "jobs", 1)).0);
    // a also waits for a lock another session holds: a wait does not survive a resume.
    w.reply(lock(other, "busy", 60_000));
    let (waiting, _) = w.apply(lock_wait(a, "busy", 60_000, 30_000));
    assert!(matches!(waiting, Reply::Waiting { .. }));

    w.now += 1_000;
    let (reply, fx) = w.apply(resume(a, 0xfeed, B));
    let Reply::Int(binding) = reply else { panic!("{reply:?}") };
    assert_ne!(u64::try_from(binding).unwrap(), a.0, "a new binding");
    assert_eq!(fx, vec![], "nothing was waiting behind a's wait");
    match w.query(Query::LockInfo { name: "busy".into() }) {
        Reply::LockInfo(info) => assert_eq!(info.waiters, vec![], "the wait ended with the resume"),
        other => panic!("{other:?}"),
    }

    // A never speaks again; B does. Past A's timeout the session is still there, under B.
    w.now += 6_000;
    w.reply(keep_alive(B));
    w.advance(5_000);
    assert!(held(&w, "l", l), "the hold outlived A");
    assert_eq!(
        w.reply(Command::Renew { name: "l".into(), token: l, ttl: 60_000 }),
        Reply::Int(60_000),
        "and renews"
    );
    assert_eq!(ready(&w, "jobs"), 0, "the delivery is still in flight");

    // The old connection's close names the old binding: it does nothing.
    assert_eq!(w.reply(Command::CloseSession { session: a, binding: Some(a.0) }), Reply::Int(0));
    assert!(held(&w, "l", l));
    // The new connection's close ends it: the hold is released, the delivery returned.
    let binding = u64::try_from(binding).unwrap();
    let (closed, _) = w.apply(Command::CloseSession { session: a, binding: Some(binding) });
    assert_eq!(closed, Reply::Int(1));
    assert!(!held(&w, "l", l));
    assert_eq!(ready(&w, "jobs"), 1);
    assert_eq!(popped.len(), 1);
}

#[test]
fn a_wrong_secret_and_an_unknown_session_are_refused_alike_and_change_nothing() {
    let mut w = World::new();
    let a = open(&mut w, A, 42);
    w.reply(lock(a, "l", 60_000));
    let before = w.unchanged();
    assert_eq!(w.reply(resume(a, 43, B)), Reply::Error(CoreError::NotResumable(a)));
    assert_eq!(w.state, before, "a refused resume changes nothing");
    let nobody = SessionId(999);
    let unknown = w.reply(resume(nobody, 42, B));
    assert_eq!(unknown, Reply::Error(CoreError::NotResumable(nobody)));
    let text = |r: Reply| match r {
        Reply::Error(e) => e.to_string().replace(" 999 ", " N ").replace(&format!(" {} ", a.0), " N "),
        other => panic!("{other:?}"),
    };
    assert_eq!(text(w.reply(resume(a, 0, B))), text(unknown), "one text for both");
    // Refusals were not a resume: A still holds the session, and its expiry still ends it.
    let fx = w.advance(TIMEOUT);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(w.state.summary().sessions, 0);
    assert_eq!(w.state.summary().holds, 0);
}

#[test]
fn a_keep_alive_with_no_timeout_is_refused() {
    let mut w = World::new();
    assert_eq!(w.reply(Command::KeepAlive { host: A, timeout: 0 }), Reply::Error(CoreError::BadDuration));
    assert_eq!(
        w.reply(Command::OpenSession { host: A, secret: 1, timeout: 0 }),
        Reply::Error(CoreError::BadDuration)
    );
    assert_eq!(w.state.summary().sessions, 0);
    assert_eq!(w.state.next_deadline(), None, "no host was added");
}

#[test]
fn refresh_leases_gives_every_host_a_full_timeout_from_now() {
    let mut w = World::new();
    let a = open(&mut w, A, 1);
    let l = token(&w.reply(lock(a, "l", 600_000)));
    // A's last keep-alive was at 1 000: it would expire at 11 000. A new leader takes office at
    // 9 000 and refreshes: A now has until 19 000.
    w.now = 9_000;
    assert_eq!(w.reply(Command::RefreshLeases), Reply::Ok);
    assert_eq!(w.state.next_deadline(), Some(19_000));
    w.tick_at(18_999);
    assert!(held(&w, "l", l), "A's sessions outlive its old expiry");
    w.tick_at(19_000);
    assert!(!held(&w, "l", l), "and end at the refreshed one");
    // A refresh never shortens: a host that just sent a keep-alive keeps its later expiry.
    let b = open(&mut w, B, 2);
    w.reply(Command::KeepAlive { host: B, timeout: 50_000 });
    w.reply(Command::RefreshLeases);
    assert_eq!(w.state.next_deadline(), Some(19_000 + 50_000));
    assert_eq!(w.state.summary().sessions, 1, "{b}");
}

#[test]
fn a_snapshot_keeps_hosts_sessions_and_secrets_and_goes_on_alike() {
    let mut w = World::new();
    let a = open(&mut w, A, 0xabc);
    let b = open(&mut w, B, 0xdef);
    w.reply(lock(a, "la", 60_000));
    w.reply(lock(b, "lb", 60_000));
    w.apply(resume(b, 0xdef, A));
    let mut restored = State::restore(w.state.snapshot().into()).expect("restores");
    restored.check_invariants().expect("indexes rebuilt");
    assert_eq!(restored, w.state);

    let steps = [
        (0, resume(a, 0xbad, B)),
        (0, resume(a, 0xabc, B)),
        (4_000, keep_alive(A)),
        (7_000, Command::Tick),
        (10_000, Command::Tick),
    ];
    let mut index = 100;
    for (advance, cmd) in steps {
        w.now += advance;
        index += 1;
        let live = apply_checked(&mut w.state, index, w.now, &cmd);
        assert_eq!(restored.apply(index, w.now, cmd.clone()), live, "{cmd:?}");
        assert_eq!(restored, w.state, "after {cmd:?}");
    }
    // B (holding a since its resume) expired first; A (holding b) after it.
    assert_eq!(w.state.summary().sessions, 0);
}
