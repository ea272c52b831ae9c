//! End-to-end tests of [`Node`] against real openraft (one voter, in-memory log).
//!
//! Tests about time run on a manual clock: the test moves it, so leases and waits run out exactly
//! when it says, and nothing sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::timeout;
use turnstile_core::{Acquire, Command, Effect, Mode, Query, Reply, SessionId, SetKey, State, Timestamp};
use turnstile_raft::{AppliedEffects, Clock, ManualClock, Node, NodeConfig, NodeError};

const WAIT: Duration = Duration::from_secs(5);

/// Where the manual clocks of these tests start: an arbitrary time, far from the wall clock's.
const T0: Timestamp = 1_000_000;

async fn start() -> Node {
    start_with(NodeConfig::default()).await
}

/// A node on a manual clock standing at [`T0`], and the hand that moves it.
async fn start_on_manual_clock() -> (Node, ManualClock) {
    let (clock, hand) = Clock::manual(T0);
    (start_with(NodeConfig { clock, ..NodeConfig::default() }).await, hand)
}

async fn start_with(config: NodeConfig) -> Node {
    timeout(WAIT, Node::start(config)).await.expect("start in time").expect("start")
}

/// When the host of [`open_session`]'s sessions expires: as late as a deadline can be, so that
/// it outlives every test.
const HOST_EXPIRY: u64 = T0 + turnstile_core::MAX_DURATION;

/// Opens a session held by a host that does not expire within any test.
async fn open_session(node: &Node) -> SessionId {
    match node
        .propose(Command::OpenSession {
            host: turnstile_core::HostId(1),
            secret: 1,
            timeout: turnstile_core::MAX_DURATION,
        })
        .await
        .unwrap()
    {
        Reply::Session(s) => s,
        other => panic!("expected a session, got {other:?}"),
    }
}

fn acquire(name: &str, session: SessionId, ttl: u64, wait: u64) -> Command {
    Command::Acquire(Acquire {
        name: name.to_string(),
        mode: Mode::Exclusive,
        ttl,
        wait,
        owner: None,
        session: Some(session),
        keep: false,
    })
}

/// Receives effect batches until one contains an effect matching `pred`.
async fn wait_for_effect(
    rx: &mut UnboundedReceiver<AppliedEffects>,
    pred: impl Fn(&Effect) -> bool,
) -> (u64, Effect) {
    timeout(WAIT, async {
        loop {
            let (index, effects) = rx.recv().await.expect("effects channel open");
            assert!(!effects.is_empty(), "empty effect lists are not sent");
            if let Some(e) = effects.into_iter().find(&pred) {
                return (index, e);
            }
        }
    })
    .await
    .expect("effect arrives in time")
}

/// Asserts that no applied entry has had effects since the last receive. Deterministic once the
/// proposal in question has been answered: effects are sent before the reply.
fn assert_no_effects(rx: &mut UnboundedReceiver<AppliedEffects>) {
    match rx.try_recv() {
        Err(TryRecvError::Empty) => {}
        other => panic!("expected no effects, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_leads_and_refreshes_leases() {
    let node = start().await;
    let status = node.status();
    assert_eq!(status.leader, Some(1));
    assert!(status.term >= 1);
    // The RefreshLeases proposal went through as its own entry and was applied.
    assert_eq!((status.entries_proposed, status.commands_proposed), (1, 1));
    // Entries 0 (membership), 1 (the leader's blank entry), 2 (RefreshLeases).
    assert_eq!(status.applied_index, Some(2));
    assert_eq!(status.committed_index, Some(2));
    assert_eq!(node.read(State::applied_index).await.unwrap(), 2);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_wait_and_grant_effect() {
    let node = start().await;
    let mut effects = node.take_effects().expect("effects available once");
    assert!(node.take_effects().is_none(), "effects can be taken only once");

    let a = open_session(&node).await;
    let b = open_session(&node).await;
    assert_ne!(a, b);

    let Reply::Granted { token, lease } = node.propose(acquire("L", a, 10_000, 0)).await.unwrap() else {
        panic!("first acquire must be granted");
    };
    assert_eq!(lease, 10_000);
    let Reply::Waiting { wait_id } = node.propose(acquire("L", b, 10_000, 5_000)).await.unwrap() else {
        panic!("second acquire must wait");
    };

    let released = node.propose(Command::Release { name: "L".into(), token }).await.unwrap();
    assert_eq!(released, Reply::Int(1));

    let (index, granted) = wait_for_effect(&mut effects, |e| matches!(e, Effect::Granted { .. })).await;
    let Effect::Granted { session, wait_id: w, name, token: t2, .. } = granted else { unreachable!() };
    assert_eq!((session, w, name.as_str()), (b, wait_id, "L"));
    assert!(t2 > token, "fencing tokens increase");
    assert!(index <= node.status().applied_index.unwrap());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_are_batched_and_answered_in_order() {
    const TASKS: usize = 50;
    const PER_TASK: i64 = 200;
    let node = start().await;
    let before = node.status();

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let node = node.clone();
        handles.push(tokio::spawn(async move {
            let key = format!("counter-{t}");
            for expected in 1..=PER_TASK {
                let reply = node.propose(Command::IncrBy { key: key.clone(), delta: 1 }).await.unwrap();
                assert_eq!(reply, Reply::Int(expected), "task {t}");
            }
        }));
    }
    for h in handles {
        timeout(Duration::from_secs(20), h).await.expect("tasks finish in time").unwrap();
    }

    let after = node.status();
    let commands = after.commands_proposed - before.commands_proposed;
    let entries = after.entries_proposed - before.entries_proposed;
    assert_eq!(commands, TASKS as u64 * PER_TASK as u64);
    assert!(entries < commands, "batching happened: {entries} entries for {commands} commands");
    assert!(after.largest_batch > 1);
    assert!(after.largest_batch <= 512);

    // Every counter ended at PER_TASK.
    let counters = node
        .read(|s| {
            (0..TASKS).map(|t| s.query(0, Query::Get { key: format!("counter-{t}") })).collect::<Vec<_>>()
        })
        .await
        .unwrap();
    for c in counters {
        assert_eq!(c, Reply::Bytes(PER_TASK.to_string().into()));
    }
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_sees_completed_writes() {
    let node = start().await;
    // Background load keeps entries in flight while the reads run.
    let load = {
        let node = node.clone();
        tokio::spawn(async move {
            for i in 0..2_000 {
                let _ = node.propose(Command::IncrBy { key: "noise".into(), delta: i }).await;
            }
        })
    };
    for i in 0..100u32 {
        let value = i.to_string();
        let reply = node.propose(Command::Set(SetKey::new("k", value.clone()))).await.unwrap();
        assert_eq!(reply, Reply::Ok);
        let seen = node.read(|s| s.query(0, Query::Get { key: "k".into() })).await.unwrap();
        assert_eq!(seen, Reply::Bytes(value.into()), "read {i} after its write");
    }
    load.await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_another_task_sees_every_write_acknowledged_before_it_began() {
    let node = start().await;
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (node, acked) = (node.clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            for i in 1..=500u64 {
                let reply = node.propose(Command::IncrBy { key: "n".into(), delta: 1 }).await.unwrap();
                assert_eq!(reply, Reply::Int(i as i64));
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let before = acked.load(Ordering::SeqCst);
        let seen = match node.read(|s| s.query(0, Query::Get { key: "n".into() })).await.unwrap() {
            Reply::Bytes(b) => std::str::from_utf8(&b).unwrap().parse::<u64>().unwrap(),
            Reply::Nil => 0,
            other => panic!("unexpected {other:?}"),
        };
        assert!(seen >= before, "read {seen} after write {before} was acknowledged");
        reads += 1;
    }
    writer.await.unwrap();
    assert!(reads > 0);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_stamped_with_the_nodes_clock() {
    let (node, hand) = start_on_manual_clock().await;
    assert_eq!(node.clock().now(), T0);
    // Entries so far (RefreshLeases at start) were stamped T0.
    assert_eq!(node.read(State::clock).await.unwrap(), T0);
    hand.advance(250);
    node.propose(Command::IncrBy { key: "n".into(), delta: 1 }).await.unwrap();
    assert_eq!(node.read(State::clock).await.unwrap(), T0 + 250);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_deadline_follows_a_lease() {
    let (node, hand) = start_on_manual_clock().await;
    let mut deadline = node.next_deadline();
    assert_eq!(*deadline.borrow_and_update(), None, "nothing has a deadline yet");

    let s = open_session(&node).await;
    hand.advance(5);
    let Reply::Granted { token, .. } = node.propose(acquire("D", s, 60_000, 0)).await.unwrap() else {
        panic!("granted");
    };
    // Published before the reply was sent.
    assert!(deadline.has_changed().unwrap());
    assert_eq!(*deadline.borrow_and_update(), Some(T0 + 5 + 60_000), "the grant's stamp plus the TTL");

    node.propose(Command::Release { name: "D".into(), token }).await.unwrap();
    assert_eq!(*deadline.borrow(), Some(HOST_EXPIRY), "releasing the only hold leaves the host's");
    node.shutdown().await.unwrap();
}

/// The lease runs out on the first tick stamped at its end, not a millisecond before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_runs_out_when_the_clock_reaches_its_end() {
    let (node, hand) = start_on_manual_clock().await;
    let mut effects = node.take_effects().unwrap();
    let s = open_session(&node).await;
    let Reply::Granted { token, .. } = node.propose(acquire("T", s, 50, 0)).await.unwrap() else {
        panic!("granted");
    };
    let due = node.next_deadline().borrow().expect("lease deadline");
    assert_eq!(due, T0 + 50);
    assert_no_effects(&mut effects);

    // A tick a millisecond before the deadline expires nothing.
    hand.set(due - 1);
    assert_eq!(node.propose(Command::Tick).await.unwrap(), Reply::Ok);
    assert_no_effects(&mut effects);
    assert_eq!(*node.next_deadline().borrow(), Some(due));
    let check = node.read(move |st| st.query(due - 1, Query::FenceCheck { lock: "T".into(), token }));
    assert_eq!(check.await.unwrap(), Reply::Int(1), "still held");

    hand.advance(1);
    assert_eq!(node.propose(Command::Tick).await.unwrap(), Reply::Ok);
    let (_, expired) = wait_for_effect(&mut effects, |e| matches!(e, Effect::HoldExpired { .. })).await;
    assert_eq!(
        expired,
        Effect::HoldExpired { name: "T".into(), token, owner: turnstile_core::default_owner(s) }
    );
    assert_eq!(*node.next_deadline().borrow(), Some(HOST_EXPIRY), "only the session's host's is left");
    let check =
        node.read(move |st| st.query(0, Query::FenceCheck { lock: "T".into(), token })).await.unwrap();
    assert_eq!(check, Reply::Int(0));
    node.shutdown().await.unwrap();
}

/// A lock waiter gives up on the first tick stamped at its wait's end; the holder keeps the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_times_out_when_the_clock_reaches_its_end() {
    let (node, hand) = start_on_manual_clock().await;
    let mut effects = node.take_effects().unwrap();
    let (a, b) = (open_session(&node).await, open_session(&node).await);
    let Reply::Granted { token, .. } = node.propose(acquire("W", a, 60_000, 0)).await.unwrap() else {
        panic!("granted");
    };
    let Reply::Waiting { wait_id } = node.propose(acquire("W", b, 60_000, 5_000)).await.unwrap() else {
        panic!("waits");
    };
    assert_eq!(*node.next_deadline().borrow(), Some(T0 + 5_000), "the wait ends before the lease");

    hand.advance(4_999);
    node.propose(Command::Tick).await.unwrap();
    assert_no_effects(&mut effects);

    hand.advance(1);
    node.propose(Command::Tick).await.unwrap();
    let (_, timed_out) = wait_for_effect(&mut effects, |e| matches!(e, Effect::WaitTimedOut { .. })).await;
    assert_eq!(timed_out, Effect::WaitTimedOut { session: b, wait_id, name: "W".into() });
    assert_eq!(*node.next_deadline().borrow(), Some(T0 + 60_000), "the lease is what is left");
    let check =
        node.read(move |st| st.query(0, Query::FenceCheck { lock: "W".into(), token })).await.unwrap();
    assert_eq!(check, Reply::Int(1), "the holder keeps the lock");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggered_snapshot_restores_to_the_same_state() {
    let node = start().await;
    let s = open_session(&node).await;
    node.propose(acquire("S", s, 30_000, 0)).await.unwrap();
    for i in 0..20 {
        node.propose(Command::IncrBy { key: format!("k{i}"), delta: i }).await.unwrap();
    }
    let applied = node.status().applied_index.unwrap();
    assert_eq!(node.read(State::applied_index).await.unwrap(), applied);

    node.raft().trigger().snapshot().await.unwrap();
    node.raft()
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some_and(|id| id.index() >= applied), "snapshot built")
        .await
        .unwrap();
    let snap = node.raft().get_snapshot().await.unwrap().expect("a snapshot");
    assert_eq!(snap.meta.last_log_id.map(|id| id.index()), Some(applied));

    let restored = State::restore(snap.snapshot.clone()).unwrap();
    let live = node.read(State::clone).await.unwrap();
    assert_eq!(restored, live);
    assert_eq!(restored.applied_index(), applied);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_requests() {
    let node = start().await;
    node.shutdown().await.unwrap();
    assert!(matches!(node.propose(Command::Tick).await, Err(NodeError::ShuttingDown)));
    assert!(matches!(node.read(|_| ()).await, Err(NodeError::ShuttingDown)));
    node.shutdown().await.unwrap();
}
