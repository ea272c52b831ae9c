//! Stories about locks, read/write locks, semaphores, sessions and deadlocks.

mod common;

use common::*;
use turnstile_core::{
    Acquire, Command, CoreError, Effect, Fence, HolderView, LockInfo, Mode, Query, Reply, SetKey, WaitEdge,
    WaiterView,
};

#[test]
fn a_free_lock_is_granted_with_a_fresh_token_and_released_with_it() {
    let mut w = World::new();
    let a = w.session();
    let granted = w.reply(lock(a, "L", 5_000));
    assert_eq!(granted, Reply::Granted { token: 1, lease: 5_000 });
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: 1 }), Reply::Int(1));
    assert_eq!(w.reply(Command::Release { name: "L".into(), token: 1 }), Reply::Int(1));
    // Released twice: the token is no longer a hold.
    assert_eq!(w.reply(Command::Release { name: "L".into(), token: 1 }), Reply::Int(0));
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: 1 }), Reply::Int(0));
    assert_eq!(w.query(Query::ListLocks), Reply::Names(vec![]));
}

#[test]
fn a_held_lock_is_refused_without_waiting_and_tokens_keep_increasing() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let t1 = token(&w.reply(lock(a, "L", 5_000)));
    assert_eq!(w.reply(lock(b, "L", 5_000)), Reply::Nil);
    w.reply(Command::Release { name: "L".into(), token: t1 });
    let t2 = token(&w.reply(lock(b, "L", 5_000)));
    assert!(t2 > t1);
}

#[test]
fn re_acquire_by_the_owner_keeps_the_token_and_refreshes_the_lease() {
    let mut w = World::new();
    let a = w.session();
    let t = token(&w.reply(lock(a, "L", 1_000)));
    w.advance(900);
    // A retry after a lost reply: same token, lease counted from now.
    assert_eq!(w.reply(lock(a, "L", 1_000)), Reply::Granted { token: t, lease: 1_000 });
    assert_eq!(w.advance(900), vec![]);
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: t }), Reply::Int(1));
    // Asking for the same lock in another mode is refused, not silently upgraded.
    let shared = Command::Acquire(acquire(a, "L", Mode::Shared, 1_000));
    assert_eq!(
        w.reply(shared),
        Reply::Error(CoreError::ModeConflict { name: "L".into(), owner: "session:1".into() })
    );
}

#[test]
fn renew_extends_a_live_hold_and_a_lost_hold_is_reported() {
    let mut w = World::new();
    let a = w.session();
    let t = token(&w.reply(lock(a, "L", 1_000)));
    w.advance(800);
    assert_eq!(w.reply(Command::Renew { name: "L".into(), token: t, ttl: 1_000 }), Reply::Int(1_000));
    assert_eq!(w.advance(800), vec![]);
    assert_eq!(
        w.advance(200),
        vec![Effect::HoldExpired { name: "L".into(), token: t, owner: "session:1".into() }]
    );
    assert_eq!(
        w.reply(Command::Renew { name: "L".into(), token: t, ttl: 1_000 }),
        Reply::Error(CoreError::LostHold { token: t })
    );
    assert_eq!(
        w.reply(Command::Renew { name: "other".into(), token: t, ttl: 1_000 }),
        Reply::Error(CoreError::LostHold { token: t })
    );
}

#[test]
fn a_waiter_is_granted_on_release_and_three_waiters_are_served_in_order() {
    let mut w = World::new();
    let [a, b, c, d] = [w.session(), w.session(), w.session(), w.session()];
    let t1 = token(&w.reply(lock(a, "L", 10_000)));
    let waits: Vec<Reply> = [b, c, d].iter().map(|s| w.reply(lock_wait(*s, "L", 10_000, 5_000))).collect();
    assert_eq!(
        waits,
        vec![Reply::Waiting { wait_id: 5 }, Reply::Waiting { wait_id: 6 }, Reply::Waiting { wait_id: 7 }]
    );

    let (reply, fx) = w.apply(Command::Release { name: "L".into(), token: t1 });
    assert_eq!(reply, Reply::Int(1));
    // Only the first waiter is woken: no thundering herd.
    assert_eq!(
        fx,
        vec![Effect::Granted { session: b, wait_id: 5, name: "L".into(), token: 2, lease: 10_000 }]
    );
    let (_, fx) = w.apply(Command::Release { name: "L".into(), token: 2 });
    assert_eq!(
        fx,
        vec![Effect::Granted { session: c, wait_id: 6, name: "L".into(), token: 3, lease: 10_000 }]
    );
    let (_, fx) = w.apply(Command::Release { name: "L".into(), token: 3 });
    assert_eq!(
        fx,
        vec![Effect::Granted { session: d, wait_id: 7, name: "L".into(), token: 4, lease: 10_000 }]
    );
}

#[test]
fn a_waiter_times_out_at_its_deadline_and_an_expiring_lease_grants_the_next() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    let t1 = token(&w.reply(lock(a, "L", 3_000)));
    w.reply(lock_wait(b, "L", 1_000, 1_000));
    w.reply(lock_wait(c, "L", 1_000, 5_000));
    assert_eq!(w.advance(999), vec![]);
    assert_eq!(w.advance(1), vec![Effect::WaitTimedOut { session: b, wait_id: 4, name: "L".into() }]);
    assert_eq!(
        w.tick_at(4_000),
        vec![
            Effect::HoldExpired { name: "L".into(), token: t1, owner: "session:1".into() },
            Effect::Granted { session: c, wait_id: 5, name: "L".into(), token: 2, lease: 1_000 },
        ]
    );
}

#[test]
fn an_expiry_and_a_deadline_at_the_same_instant_grant_rather_than_refuse() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let t1 = token(&w.reply(lock(a, "L", 1_000)));
    w.reply(lock_wait(b, "L", 1_000, 1_000));
    let fx = w.advance(1_000);
    assert_eq!(
        fx,
        vec![
            Effect::HoldExpired { name: "L".into(), token: t1, owner: "session:1".into() },
            Effect::Granted { session: b, wait_id: 3, name: "L".into(), token: 2, lease: 1_000 },
        ]
    );
}

#[test]
fn readers_share_and_a_waiting_writer_is_not_starved_by_later_readers() {
    let mut w = World::new();
    let [r1, r2, wr, r3] = [w.session(), w.session(), w.session(), w.session()];
    let shared = |s| Command::Acquire(acquire(s, "RW", Mode::Shared, 10_000));
    let t1 = token(&w.reply(shared(r1)));
    let t2 = token(&w.reply(shared(r2)));
    assert_ne!(t1, t2);
    let writer = Command::Acquire(Acquire { wait: 5_000, ..acquire(wr, "RW", Mode::Exclusive, 10_000) });
    assert_eq!(w.reply(writer), Reply::Waiting { wait_id: 5 });
    // A reader arriving after the writer waits behind it instead of joining the readers.
    let late_reader = Command::Acquire(Acquire { wait: 5_000, ..acquire(r3, "RW", Mode::Shared, 10_000) });
    assert_eq!(w.reply(late_reader), Reply::Waiting { wait_id: 6 });

    assert_eq!(w.apply(Command::Release { name: "RW".into(), token: t1 }).1, vec![]);
    let (_, fx) = w.apply(Command::Release { name: "RW".into(), token: t2 });
    assert_eq!(
        fx,
        vec![Effect::Granted { session: wr, wait_id: 5, name: "RW".into(), token: 3, lease: 10_000 }]
    );
    let (_, fx) = w.apply(Command::Release { name: "RW".into(), token: 3 });
    assert_eq!(
        fx,
        vec![Effect::Granted { session: r3, wait_id: 6, name: "RW".into(), token: 4, lease: 10_000 }]
    );
}

#[test]
fn readers_queued_together_are_admitted_together_each_with_its_own_token() {
    let mut w = World::new();
    let [wr, r1, r2] = [w.session(), w.session(), w.session()];
    let t = token(&w.reply(lock(wr, "RW", 10_000)));
    for s in [r1, r2] {
        w.reply(Command::Acquire(Acquire { wait: 5_000, ..acquire(s, "RW", Mode::Shared, 10_000) }));
    }
    let (_, fx) = w.apply(Command::Release { name: "RW".into(), token: t });
    assert_eq!(
        fx,
        vec![
            Effect::Granted { session: r1, wait_id: 4, name: "RW".into(), token: 2, lease: 10_000 },
            Effect::Granted { session: r2, wait_id: 5, name: "RW".into(), token: 3, lease: 10_000 },
        ]
    );
    let Reply::LockInfo(info) = w.query(Query::LockInfo { name: "RW".into() }) else { panic!() };
    assert_eq!(info.mode, "shared");
    assert_eq!(info.holders.len(), 2);
}

#[test]
fn a_semaphore_grants_up_to_its_limit_and_wakes_waiters_that_fit_in_order() {
    let mut w = World::new();
    let [a, b, c, d] = [w.session(), w.session(), w.session(), w.session()];
    let permits = |s, count, wait| {
        Command::Acquire(Acquire { wait, ..acquire(s, "S", Mode::Permits { limit: 3, count }, 10_000) })
    };
    let ta = token(&w.reply(permits(a, 2, 0)));
    token(&w.reply(permits(b, 1, 0)));
    assert_eq!(w.reply(permits(c, 1, 0)), Reply::Nil);
    assert_eq!(w.reply(permits(c, 2, 5_000)), Reply::Waiting { wait_id: 5 });
    // d needs only one permit but stands behind c: strict FIFO, so c is not starved.
    assert_eq!(w.reply(permits(d, 1, 5_000)), Reply::Waiting { wait_id: 6 });
    let (_, fx) = w.apply(Command::Release { name: "S".into(), token: ta });
    assert_eq!(
        fx,
        vec![Effect::Granted { session: c, wait_id: 5, name: "S".into(), token: 3, lease: 10_000 }]
    );
    assert_eq!(
        w.query(Query::LockInfo { name: "S".into() }),
        Reply::LockInfo(LockInfo {
            mode: "semaphore".into(),
            limit: 3,
            holders: vec![
                HolderView { owner: "session:2".into(), token: 2, permits: 1, expires_in: 10_000 },
                HolderView { owner: "session:3".into(), token: 3, permits: 2, expires_in: 10_000 },
            ],
            waiters: vec![WaiterView {
                owner: "session:4".into(),
                wait_id: 6,
                mode: "permits".into(),
                permits: 1,
                deadline_in: 5_000,
            }],
        })
    );
}

#[test]
fn semaphore_arguments_are_checked_and_names_keep_their_kind() {
    let mut w = World::new();
    let a = w.session();
    let sem = |limit, count| Command::Acquire(acquire(a, "S", Mode::Permits { limit, count }, 1_000));
    assert!(matches!(w.reply(sem(2, 3)), Reply::Error(CoreError::InvalidArgument(_))));
    assert!(matches!(w.reply(sem(0, 0)), Reply::Error(CoreError::InvalidArgument(_))));
    token(&w.reply(sem(2, 1)));
    assert_eq!(
        w.reply(sem(5, 1)),
        Reply::Error(CoreError::LimitMismatch { name: "S".into(), limit: 2, asked: 5 })
    );
    assert_eq!(
        w.reply(lock(a, "S", 1_000)),
        Reply::Error(CoreError::WrongType {
            name: "S".into(),
            expected: "lock".into(),
            found: "semaphore".into()
        })
    );
    assert_eq!(w.reply(lock(a, "T", 0)), Reply::Error(CoreError::BadDuration));
}

#[test]
fn closing_a_session_releases_its_holds_drops_its_waits_and_keeps_keep_holds() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    let kept = Command::Acquire(Acquire { keep: true, ..acquire(a, "K", Mode::Exclusive, 10_000) });
    let tk = token(&w.reply(kept));
    let tl = token(&w.reply(lock(a, "L", 10_000)));
    token(&w.reply(lock(c, "M", 10_000)));
    assert_eq!(w.reply(lock_wait(a, "M", 10_000, 5_000)), Reply::Waiting { wait_id: 4 });
    assert_eq!(w.reply(lock_wait(b, "L", 10_000, 5_000)), Reply::Waiting { wait_id: 5 });

    let fx = w.close(a);
    assert_eq!(
        fx,
        vec![Effect::Granted { session: b, wait_id: 5, name: "L".into(), token: 4, lease: 10_000 }]
    );
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: tl }), Reply::Int(0));
    // The KEEP hold outlives its session until its lease runs out.
    assert_eq!(w.query(Query::FenceCheck { lock: "K".into(), token: tk }), Reply::Int(1));
    let Reply::LockInfo(m) = w.query(Query::LockInfo { name: "M".into() }) else { panic!() };
    assert_eq!(m.waiters, vec![]);
    assert_eq!(
        w.advance(10_000),
        vec![
            Effect::HoldExpired { name: "K".into(), token: tk, owner: "session:1".into() },
            Effect::HoldExpired { name: "M".into(), token: 3, owner: "session:3".into() },
            Effect::HoldExpired { name: "L".into(), token: 4, owner: "session:2".into() },
        ]
    );
    assert_eq!(
        w.reply(Command::CloseSession { session: a, binding: None }),
        Reply::Error(CoreError::UnknownSession(a))
    );
}

#[test]
fn a_closed_session_cannot_take_holds() {
    let mut w = World::new();
    let a = w.session();
    w.close(a);
    assert_eq!(w.reply(lock(a, "L", 1_000)), Reply::Error(CoreError::UnknownSession(a)));
    assert_eq!(w.query(Query::ListLocks), Reply::Names(vec![]));
}

#[test]
fn waiting_needs_a_session_but_an_owner_alone_can_hold() {
    let mut w = World::new();
    let a = w.session();
    token(&w.reply(lock(a, "L", 1_000)));
    let sessionless = Acquire {
        name: "L".into(),
        mode: Mode::Exclusive,
        ttl: 1_000,
        wait: 1_000,
        owner: Some("batch-job".into()),
        session: None,
        keep: false,
    };
    assert_eq!(w.reply(Command::Acquire(sessionless.clone())), Reply::Error(CoreError::WaitWithoutSession));
    let t = token(&w.reply(Command::Acquire(Acquire { name: "free".into(), wait: 0, ..sessionless })));
    assert_eq!(w.query(Query::FenceCheck { lock: "free".into(), token: t }), Reply::Int(1));
}

#[test]
fn a_two_cycle_is_refused_with_the_cycle_named() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    token(&w.reply(lock(a, "L1", 10_000)));
    token(&w.reply(lock(b, "L2", 10_000)));
    assert_eq!(w.reply(lock_wait(a, "L2", 10_000, 5_000)), Reply::Waiting { wait_id: 3 });
    let refused = w.reply(lock_wait(b, "L1", 10_000, 5_000));
    assert_eq!(
        refused,
        Reply::Error(CoreError::Deadlock {
            cycle: vec![
                WaitEdge { owner: "session:2".into(), name: "L1".into(), blocked_by: "session:1".into() },
                WaitEdge { owner: "session:1".into(), name: "L2".into(), blocked_by: "session:2".into() },
            ]
        })
    );
    let Reply::Error(e) = refused else { unreachable!() };
    assert_eq!(e.code(), "DEADLOCK");
    assert_eq!(
        e.to_string(),
        "waiting would deadlock: session:2 waits for 'L1' held by session:1 -> session:1 waits for 'L2' held by session:2"
    );
    // Refused means nothing changed: b does not wait.
    let Reply::LockInfo(l1) = w.query(Query::LockInfo { name: "L1".into() }) else { panic!() };
    assert_eq!(l1.waiters, vec![]);
}

#[test]
fn a_three_cycle_is_refused() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    for (s, l) in [(a, "L1"), (b, "L2"), (c, "L3")] {
        token(&w.reply(lock(s, l, 10_000)));
    }
    assert!(matches!(w.reply(lock_wait(a, "L2", 10_000, 5_000)), Reply::Waiting { .. }));
    assert!(matches!(w.reply(lock_wait(b, "L3", 10_000, 5_000)), Reply::Waiting { .. }));
    let Reply::Error(CoreError::Deadlock { cycle }) = w.reply(lock_wait(c, "L1", 10_000, 5_000)) else {
        panic!("expected a deadlock")
    };
    let hops: Vec<(&str, &str)> = cycle.iter().map(|e| (e.owner.as_str(), e.name.as_str())).collect();
    assert_eq!(hops, vec![("session:3", "L1"), ("session:1", "L2"), ("session:2", "L3")]);
}

#[test]
fn a_cycle_through_a_full_semaphore_is_refused() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let sem = |s, wait| {
        Command::Acquire(Acquire { wait, ..acquire(s, "S", Mode::Permits { limit: 1, count: 1 }, 10_000) })
    };
    token(&w.reply(sem(a, 0)));
    token(&w.reply(lock(b, "L", 10_000)));
    assert!(matches!(w.reply(lock_wait(a, "L", 10_000, 5_000)), Reply::Waiting { .. }));
    let Reply::Error(CoreError::Deadlock { cycle }) = w.reply(sem(b, 5_000)) else {
        panic!("expected a deadlock")
    };
    assert_eq!(cycle.len(), 2);
    assert_eq!(cycle[0].name, "S");
}

#[test]
fn a_semaphore_with_another_holder_that_can_leave_is_no_deadlock() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    let sem = |s, wait| {
        Command::Acquire(Acquire { wait, ..acquire(s, "S", Mode::Permits { limit: 2, count: 1 }, 10_000) })
    };
    token(&w.reply(sem(a, 0)));
    token(&w.reply(sem(c, 0))); // c holds the other permit and waits for nothing
    token(&w.reply(lock(b, "L", 10_000)));
    assert!(matches!(w.reply(lock_wait(a, "L", 10_000, 5_000)), Reply::Waiting { .. }));
    // b waits for a permit: a is stuck behind b, but c's release frees one, so this is allowed.
    assert!(matches!(w.reply(sem(b, 5_000)), Reply::Waiting { .. }));
}

#[test]
fn a_chain_without_a_cycle_is_allowed() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    token(&w.reply(lock(a, "L1", 10_000)));
    token(&w.reply(lock(b, "L2", 10_000)));
    // c → a (L1), a → b (L2): a chain, nobody waits for c.
    assert!(matches!(w.reply(lock_wait(a, "L2", 10_000, 5_000)), Reply::Waiting { .. }));
    assert!(matches!(w.reply(lock_wait(c, "L1", 10_000, 5_000)), Reply::Waiting { .. }));
    // Two readers waiting on each other's locks in shared mode would also be a chain only.
    let d = w.session();
    let shared =
        |s, name: &str, wait| Command::Acquire(Acquire { wait, ..acquire(s, name, Mode::Shared, 10_000) });
    token(&w.reply(shared(d, "R", 0)));
    assert!(matches!(w.reply(shared(c, "R", 0)), Reply::Granted { .. }));
}

#[test]
fn a_reader_queued_behind_a_writer_can_close_a_cycle() {
    // The line is strict FIFO, so a reader behind a waiting writer is blocked by that writer
    // even though the current holders are readers: a cycle through the queue is a deadlock.
    let mut w = World::new();
    let [r, wr, x] = [w.session(), w.session(), w.session()];
    let shared = |s, wait| Command::Acquire(Acquire { wait, ..acquire(s, "RW", Mode::Shared, 10_000) });
    token(&w.reply(shared(r, 0)));
    token(&w.reply(lock(x, "X", 10_000)));
    // The writer waits for the reader; the reader waits for X; x now asks to read RW behind the writer.
    assert!(matches!(w.reply(lock_wait(wr, "RW", 10_000, 5_000)), Reply::Waiting { .. }));
    assert!(matches!(w.reply(lock_wait(r, "X", 10_000, 5_000)), Reply::Waiting { .. }));
    let Reply::Error(CoreError::Deadlock { cycle }) = w.reply(shared(x, 5_000)) else {
        panic!("expected deadlock")
    };
    let hops: Vec<&str> = cycle.iter().map(|e| e.owner.as_str()).collect();
    assert_eq!(hops, vec!["session:3", "session:2", "session:1"]);
}

#[test]
fn named_owners_detect_deadlocks_across_connections() {
    let mut w = World::new();
    let (s1, s2, s3) = (w.session(), w.session(), w.session());
    let as_owner = |s, owner: &str, name: &str, wait| {
        Command::Acquire(Acquire {
            owner: Some(owner.into()),
            wait,
            ..acquire(s, name, Mode::Exclusive, 10_000)
        })
    };
    token(&w.reply(as_owner(s1, "worker-a", "L1", 0)));
    token(&w.reply(as_owner(s2, "worker-b", "L2", 0)));
    assert!(matches!(w.reply(as_owner(s3, "worker-a", "L2", 5_000)), Reply::Waiting { .. }));
    let Reply::Error(CoreError::Deadlock { cycle }) = w.reply(as_owner(s2, "worker-b", "L1", 5_000)) else {
        panic!("expected deadlock")
    };
    assert_eq!(cycle[0].owner, "worker-b");
}

#[test]
fn fenced_writes_apply_only_while_the_token_is_live() {
    let mut w = World::new();
    let a = w.session();
    let t = token(&w.reply(lock(a, "L", 1_000)));
    let fenced = |token| {
        Command::Set(SetKey { fence: Some(Fence { lock: "L".into(), token }), ..SetKey::new("k", "v") })
    };
    assert_eq!(w.reply(fenced(t)), Reply::Ok);
    w.advance(1_000);
    let before = w.state.clone();
    assert_eq!(w.reply(fenced(t)), Reply::Error(CoreError::Fenced { lock: "L".into(), token: t }));
    assert_eq!(w.state.clock(), before.clock());
    // A lease that has run out is not live even before the tick that ends it.
    let t2 = token(&w.reply(lock(a, "L", 1_000)));
    w.now += 1_000;
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: t2 }), Reply::Int(0));
}

#[test]
fn refresh_leases_gives_every_hold_a_full_ttl_from_now() {
    let mut w = World::new();
    let a = w.session();
    let t = token(&w.reply(lock(a, "L", 1_000)));
    w.now += 900;
    assert_eq!(w.reply(Command::RefreshLeases), Reply::Ok);
    assert_eq!(w.advance(999), vec![]);
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: t }), Reply::Int(1));
    assert_eq!(w.advance(1).len(), 1);
}

#[test]
fn the_same_log_replayed_gives_the_same_state_and_snapshots_round_trip() {
    let mut w = World::new();
    let [a, b, c] = [w.session(), w.session(), w.session()];
    let t = token(&w.reply(lock(a, "L", 1_000)));
    w.reply(lock_wait(b, "L", 1_000, 5_000));
    w.reply(Command::Acquire(acquire(c, "S", Mode::Permits { limit: 3, count: 2 }, 2_000)));
    w.apply(Command::Release { name: "L".into(), token: t });
    w.advance(500);
    w.close(c);
    assert_eq!(w.replay(), w.state);
    let restored = turnstile_core::State::restore(w.state.snapshot().into()).expect("snapshot reads back");
    assert_eq!(restored, w.state);
    assert!(turnstile_core::State::restore(bytes::Bytes::new()).is_err());
    assert!(turnstile_core::State::restore(bytes::Bytes::from_static(&[99, 1, 2])).is_err());
}

#[test]
fn detaching_sessions_after_a_restart_keeps_holds_and_drops_waits() {
    let mut w = World::new();
    let (a, b) = (w.session(), w.session());
    let t = token(&w.reply(lock(a, "L", 10_000)));
    assert_eq!(w.reply(lock_wait(b, "L", 10_000, 5_000)), Reply::Waiting { wait_id: 3 });
    assert_eq!(w.reply(Command::DetachSessions), Reply::Int(2));
    // The hold survives with its token; nobody waits any more; the sessions are gone.
    assert_eq!(w.query(Query::FenceCheck { lock: "L".into(), token: t }), Reply::Int(1));
    let Reply::LockInfo(info) = w.query(Query::LockInfo { name: "L".into() }) else { panic!() };
    assert_eq!(info.waiters, vec![]);
    assert_eq!(w.reply(lock(a, "L", 1_000)), Reply::Error(CoreError::UnknownSession(a)));
    // Its owner can still release it with the token, or its lease ends it.
    assert_eq!(w.reply(Command::Release { name: "L".into(), token: t }), Reply::Int(1));
}
