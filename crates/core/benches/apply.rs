//! Throughput of `State::apply` on one core, for the hot paths of locks, queues and timers.
//!
//! Run with `cargo bench -p turnstile-core --bench apply`. Every group reports applies per second
//! (`Throughput::Elements` = applies per iteration). Each iteration builds its `Command` values
//! (a short `String` name; queue payloads are refcounted clones of one `Bytes`), as a server
//! decoding a log entry would; the state itself is built once per group, outside the timing.
//!
//! The clock moves forward 1 ms every 1000 applies (never backwards), and every lease, wait and
//! delivery lease is far longer than the clock can move during a run, so nothing expires unless
//! the group is about expiry (`tick_100k_timers/fires_one_lease`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use turnstile_core::{
    Acquire, Command, Effect, Millis, Mode, Pop, Push, Query, Reply, SessionId, State, Timestamp,
};

/// Some realistic epoch-ms start.
const START: Timestamp = 1_700_000_000_000;
/// The clock advances 1 ms per this many applies.
const APPLIES_PER_MS: u64 = 1000;
/// A lease or wait that outlives any run (the clock moves < 1 ms per 1000 applies).
const LONG: Millis = 24 * 3600 * 1000;

/// A state plus its log index and a slowly advancing clock.
struct Driver {
    state: State,
    index: u64,
    now: Timestamp,
}

impl Driver {
    fn new() -> Driver {
        Driver { state: State::new(), index: 0, now: START }
    }

    /// Applies at the driver's clock, which moves 1 ms every `APPLIES_PER_MS` applies.
    fn apply(&mut self, cmd: Command) -> (Reply, Vec<Effect>) {
        self.index += 1;
        if self.index % APPLIES_PER_MS == 0 {
            self.now += 1;
        }
        self.state.apply(self.index, self.now, cmd)
    }

    /// Applies at an explicit time (which must not go backwards).
    fn apply_at(&mut self, now: Timestamp, cmd: Command) -> (Reply, Vec<Effect>) {
        assert!(now >= self.now, "clock went backwards");
        self.now = now;
        self.index += 1;
        self.state.apply(self.index, now, cmd)
    }

    fn session(&mut self) -> SessionId {
        match self.apply(Command::OpenSession {
            host: turnstile_core::HostId(1),
            secret: 1,
            timeout: turnstile_core::MAX_DURATION,
        }) {
            (Reply::Session(s), _) => s,
            other => panic!("open session replied {other:?}"),
        }
    }

    /// Checks the state's invariants after a group (not timed).
    fn check(&self, group: &str) {
        if let Err(e) = self.state.check_invariants() {
            panic!("{group}: invariant broken: {e}");
        }
    }
}

fn lock_cmd(session: SessionId, name: &str, ttl: Millis, wait: Millis) -> Command {
    Command::Acquire(Acquire {
        name: name.to_owned(),
        mode: Mode::Exclusive,
        ttl,
        wait,
        owner: None,
        session: Some(session),
        keep: false,
    })
}

fn pop_cmd(session: SessionId, queue: &str) -> Command {
    Command::Pop(Pop {
        queue: queue.to_owned(),
        session: Some(session),
        count: 1,
        wait: 0,
        lease: None,
        auto_ack: false,
        keep: false,
    })
}

fn ack_cmd(queue: &str, receipt: u64) -> Command {
    Command::Ack { queue: queue.to_owned(), receipts: vec![receipt], fence: None }
}

fn granted(reply: &Reply) -> u64 {
    match reply {
        Reply::Granted { token, .. } => *token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn receipt(reply: &Reply) -> u64 {
    match reply {
        Reply::Deliveries(ds) if ds.len() == 1 => ds[0].receipt,
        other => panic!("expected one delivery, got {other:?}"),
    }
}

/// Group 1: acquire (no wait) + release of one lock by one session: 2 applies.
fn lock_cycle_uncontended(c: &mut Criterion) {
    let mut d = Driver::new();
    let s = d.session();
    let mut group = c.benchmark_group("lock_cycle_uncontended");
    group.throughput(Throughput::Elements(2));
    group.bench_function("acquire_release", |b| {
        b.iter(|| {
            let (reply, fx) = d.apply(lock_cmd(s, "lock", 30_000, 0));
            let token = granted(&reply);
            black_box(fx);
            let (reply, fx) = d.apply(Command::Release { name: "lock".to_owned(), token });
            debug_assert_eq!(reply, Reply::Int(1));
            black_box((reply, fx));
        });
    });
    group.finish();
    d.check("lock_cycle_uncontended");
}

/// Group 2: two sessions take turns. The holder releases (granting the waiter, a `Granted`
/// effect), then re-enqueues itself as a waiter: 2 applies.
fn lock_handoff_contended(c: &mut Criterion) {
    let mut d = Driver::new();
    let a = d.session();
    let b_session = d.session();
    let mut holder = (a, granted(&d.apply(lock_cmd(a, "lock", LONG, 0)).0));
    let mut waiter = b_session;
    match d.apply(lock_cmd(waiter, "lock", LONG, LONG)).0 {
        Reply::Waiting { .. } => {}
        other => panic!("expected to wait, got {other:?}"),
    }
    let mut group = c.benchmark_group("lock_handoff_contended");
    group.throughput(Throughput::Elements(2));
    group.bench_function("release_and_requeue", |b| {
        b.iter(|| {
            let (reply, mut fx) = d.apply(Command::Release { name: "lock".to_owned(), token: holder.1 });
            debug_assert_eq!(reply, Reply::Int(1));
            let token = match fx.pop() {
                Some(Effect::Granted { session, token, .. }) if session == waiter && fx.is_empty() => token,
                other => panic!("expected a Granted effect for the waiter, got {other:?}"),
            };
            black_box(reply);
            let former = holder.0;
            holder = (waiter, token);
            waiter = former;
            let (reply, fx) = d.apply(lock_cmd(waiter, "lock", LONG, LONG));
            debug_assert!(matches!(reply, Reply::Waiting { .. }), "{reply:?}");
            black_box((reply, fx));
        });
    });
    group.finish();
    d.check("lock_handoff_contended");
}

/// Group 3: push a 100-byte payload, pop it, ack it: 3 applies.
fn queue_push_pop_ack(c: &mut Criterion) {
    let mut d = Driver::new();
    let s = d.session();
    let payload = Bytes::from(vec![b'p'; 100]);
    let mut group = c.benchmark_group("queue_push_pop_ack");
    group.throughput(Throughput::Elements(3));
    group.bench_function("push_pop_ack", |b| {
        b.iter(|| {
            let (reply, fx) = d.apply(Command::Push(Push::new("q", payload.clone())));
            debug_assert!(matches!(reply, Reply::Pushed { duplicate: false, .. }), "{reply:?}");
            black_box((reply, fx));
            let (reply, fx) = d.apply(pop_cmd(s, "q"));
            let receipt = receipt(&reply);
            black_box((reply, fx));
            let (reply, fx) = d.apply(ack_cmd("q", receipt));
            debug_assert_eq!(reply, Reply::Int(1));
            black_box((reply, fx));
        });
    });
    group.finish();
    d.check("queue_push_pop_ack");
}

/// Group 4: a queue holding 1,000,000 small messages: pop 1 + ack it + push 1 (depth stays 1M): 3 applies.
fn pop_from_1m(c: &mut Criterion) {
    const DEPTH: usize = 1_000_000;
    let mut d = Driver::new();
    let s = d.session();
    let payload = Bytes::from_static(b"small message 16");
    for _ in 0..DEPTH {
        let (reply, _) = d.apply(Command::Push(Push::new("q", payload.clone())));
        assert!(matches!(reply, Reply::Pushed { duplicate: false, .. }), "{reply:?}");
    }
    let mut group = c.benchmark_group("pop_from_1m");
    group.throughput(Throughput::Elements(3));
    group.bench_function("pop_ack_push", |b| {
        b.iter(|| {
            let (reply, fx) = d.apply(pop_cmd(s, "q"));
            let receipt = receipt(&reply);
            black_box((reply, fx));
            let (reply, fx) = d.apply(ack_cmd("q", receipt));
            debug_assert_eq!(reply, Reply::Int(1));
            black_box((reply, fx));
            let (reply, fx) = d.apply(Command::Push(Push::new("q", payload.clone())));
            debug_assert!(matches!(reply, Reply::Pushed { duplicate: false, .. }), "{reply:?}");
            black_box((reply, fx));
        });
    });
    group.finish();
    match d.state.query(d.now, Query::QueueStats { name: "q".into() }) {
        Reply::QueueStats(st) => assert_eq!((st.ready, st.in_flight), (DEPTH as u64, 0)),
        other => panic!("queue stats replied {other:?}"),
    }
    d.check("pop_from_1m");
}

/// Group 5: a state with 100,000 held locks (one lease timer each), then one `Tick` at a time.
fn tick_100k_timers(c: &mut Criterion) {
    const HOLDS: u64 = 100_000;
    let mut group = c.benchmark_group("tick_100k_timers");
    group.throughput(Throughput::Elements(1));

    // a) Leases spread 1 s apart from 1 day to ~2.2 days ahead: no tick fires anything.
    let mut d = Driver::new();
    let s = d.session();
    for i in 0..HOLDS {
        granted(&d.apply(lock_cmd(s, &format!("lock:{i}"), LONG + i * 1000, 0)).0);
    }
    group.bench_function("fires_nothing", |b| {
        b.iter(|| {
            let (reply, fx) = d.apply(Command::Tick);
            assert!(fx.is_empty(), "a tick fired {fx:?}");
            black_box((reply, fx));
        });
    });
    match d.state.query(d.now, Query::ListLocks) {
        Reply::Names(names) => assert_eq!(names.len() as u64, HOLDS),
        other => panic!("list locks replied {other:?}"),
    }
    d.check("tick_100k_timers/fires_nothing");

    // b) One lease expiring per ms: each tick moves the clock 1 ms and fires exactly one. Ticks run
    // in timed batches of `BATCH`; between batches (not timed) as many locks are taken again at
    // the far end of the range, so 99,000..=100,000 timers are pending at every tick.
    const BATCH: u64 = 1000;
    let mut d = Driver::new();
    let s = d.session();
    let mut named = 0u64;
    // Leases expire at START+1 ..= START+HOLDS; `next_expiry` is the next free ms after them.
    let mut next_expiry = d.now + 1;
    let mut refill = |d: &mut Driver, n: u64, next_expiry: &mut Timestamp| {
        for _ in 0..n {
            let name = format!("lock:{named}");
            named += 1;
            let ttl = *next_expiry - d.now;
            let (reply, fx) = d.apply_at(d.now, lock_cmd(s, &name, ttl, 0));
            granted(&reply);
            assert!(fx.is_empty());
            *next_expiry += 1;
        }
    };
    refill(&mut d, HOLDS, &mut next_expiry);
    group.bench_function("fires_one_lease", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let started = Instant::now();
                for _ in 0..n {
                    let (reply, fx) = d.apply_at(d.now + 1, Command::Tick);
                    assert!(
                        matches!(fx.as_slice(), [Effect::HoldExpired { .. }]),
                        "expected one expiry, got {fx:?}"
                    );
                    black_box((reply, fx));
                }
                elapsed += started.elapsed();
                refill(&mut d, n, &mut next_expiry);
                left -= n;
            }
            elapsed
        });
    });
    group.finish();
    assert_eq!(d.state.next_deadline(), Some(d.now + 1));
    d.check("tick_100k_timers/fires_one_lease");
}

criterion_group! {
    name = benches;
    // Six benchmarks in well under 3 minutes on a shared 2-core machine, builds included.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .sample_size(50);
    targets = lock_cycle_uncontended, lock_handoff_contended, queue_push_pop_ack, pop_from_1m, tick_100k_timers
}
criterion_main!(benches);
