//! Model-based test: random sequences of commands and ticks from several sessions and owners on
//! a few locks, a semaphore, queues and keys. After every step the state's own invariants are
//! checked, and this test checks what a client can observe:
//! - at most one exclusive holder, or shared holders only; semaphore permits within the limit;
//! - every new fencing token (grant or delivery) is larger than every earlier one;
//! - a released or expired hold's token is never granted again;
//! - every message is in exactly one place, and pushes are all accounted for;
//! - an acked message is never delivered again;
//! - every element pushed onto a list is stored, or was popped exactly once (by a pop or a
//!   blocking pop's wait);
//! - replaying the same log gives the same state, and after every step a snapshot restores it
//!   exactly, indexes included (they are rebuilt, not stored).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use turnstile_core::{
    Acquire, BlockingPop, Command, Consume, Effect, End, ExpireCondition, Fence, HostId, KeyExpiry, Mode,
    Overflow, Pop, Push, Query, QueueConfig, Reply, SessionId, SetCondition, SetExpiry, SetKey, State,
    WAIT_FOREVER,
};

const LOCKS: [&str; 3] = ["L0", "L1", "L2"];
const QUEUES: [&str; 3] = ["Q0", "Q1", "DLQ"];
const KEYS: [&str; 2] = ["k0", "k1"];
/// Lists; blocking pops also name `k0`, a string key when set (WRONGTYPE), but nothing pushes
/// onto it, so every element stays countable (a `SET` over a list would drop its elements).
const LISTS: [&str; 2] = ["l0", "l1"];
/// Hosts whose sessions close unless a keep-alive comes within [`HOST_TIMEOUT`].
const HOSTS: [HostId; 2] = [HostId(0xa), HostId(0xb)];
const HOST_TIMEOUT: u64 = 3_000;

#[derive(Debug, Clone)]
enum Op {
    Open,
    Close {
        s: usize,
    },
    /// Opens a session on one of [`HOSTS`], which expire unless kept alive.
    OpenOn {
        host: usize,
    },
    KeepAlive {
        host: usize,
    },
    /// Resumes a session on one of [`HOSTS`], with its secret or a wrong one.
    Resume {
        s: usize,
        host: usize,
        right: bool,
    },
    Acquire {
        s: usize,
        lock: usize,
        shared: bool,
        wait: bool,
        keep: bool,
        owner: Option<u8>,
        ttl: u64,
    },
    Sem {
        s: usize,
        count: u32,
        wait: bool,
    },
    Release {
        pick: usize,
    },
    Renew {
        pick: usize,
        ttl: u64,
    },
    Push {
        q: usize,
        priority: u8,
        delay: u64,
        group: Option<u8>,
        dedup: Option<u8>,
        ttl: Option<u64>,
        fenced: Option<usize>,
    },
    Pop {
        s: usize,
        q: usize,
        count: u32,
        wait: bool,
        auto_ack: bool,
    },
    Consume {
        s: usize,
        q: usize,
        credit: u32,
    },
    Ack {
        pick: usize,
        fenced: Option<usize>,
    },
    Nack {
        pick: usize,
        delay: u64,
        dead: bool,
    },
    Extend {
        pick: usize,
    },
    Redrive {
        count: u64,
    },
    Purge {
        q: usize,
    },
    Set {
        key: usize,
        nx: bool,
        px: Option<u64>,
    },
    Incr {
        key: usize,
    },
    /// One of the other keyspace commands (hashes, renames, TTLs, flush), on the same keys.
    Keyspace {
        key: usize,
        which: u8,
    },
    ListPush {
        list: usize,
        right: bool,
        n: usize,
    },
    ListPop {
        list: usize,
        right: bool,
        count: Option<u64>,
    },
    ListMove {
        from: usize,
        to: usize,
    },
    BlockingPop {
        s: usize,
        keys: Vec<usize>,
        wait: u64,
        to: Option<usize>,
    },
    Advance {
        ms: u64,
    },
    RefreshLeases,
    DetachSessions,
}

fn op() -> impl Strategy<Value = Op> {
    let s = 0..4usize;
    prop_oneof![
        1 => Just(Op::Open),
        1 => s.clone().prop_map(|s| Op::Close { s }),
        1 => (0..HOSTS.len()).prop_map(|host| Op::OpenOn { host }),
        2 => (0..HOSTS.len()).prop_map(|host| Op::KeepAlive { host }),
        1 => (s.clone(), 0..HOSTS.len(), prop::bool::weighted(0.8)).prop_map(|(s, host, right)| Op::Resume { s, host, right }),
        6 => (s.clone(), 0..LOCKS.len(), any::<bool>(), any::<bool>(), prop::bool::weighted(0.2), prop::option::weighted(0.3, 0..3u8), 50..3_000u64)
            .prop_map(|(s, lock, shared, wait, keep, owner, ttl)| Op::Acquire { s, lock, shared, wait, keep, owner, ttl }),
        2 => (s.clone(), 1..4u32, any::<bool>()).prop_map(|(s, count, wait)| Op::Sem { s, count, wait }),
        4 => any::<usize>().prop_map(|pick| Op::Release { pick }),
        1 => (any::<usize>(), 50..3_000u64).prop_map(|(pick, ttl)| Op::Renew { pick, ttl }),
        6 => (0..2usize, 0..3u8, prop::option::weighted(0.2, 1..2_000u64), prop::option::weighted(0.3, 0..2u8),
              prop::option::weighted(0.2, 0..3u8), prop::option::weighted(0.2, 100..3_000u64), prop::option::weighted(0.1, any::<usize>()))
            .prop_map(|(q, priority, delay, group, dedup, ttl, fenced)| Op::Push { q, priority, delay: delay.unwrap_or(0), group, dedup, ttl, fenced }),
        5 => (s.clone(), 0..QUEUES.len(), 1..3u32, any::<bool>(), prop::bool::weighted(0.1))
            .prop_map(|(s, q, count, wait, auto_ack)| Op::Pop { s, q, count, wait, auto_ack }),
        1 => (s.clone(), 0..2usize, 0..3u32).prop_map(|(s, q, credit)| Op::Consume { s, q, credit }),
        5 => (any::<usize>(), prop::option::weighted(0.1, any::<usize>())).prop_map(|(pick, fenced)| Op::Ack { pick, fenced }),
        2 => (any::<usize>(), prop_oneof![Just(0u64), 1..1_000u64], prop::bool::weighted(0.2))
            .prop_map(|(pick, delay, dead)| Op::Nack { pick, delay, dead }),
        1 => any::<usize>().prop_map(|pick| Op::Extend { pick }),
        1 => (1..4u64).prop_map(|count| Op::Redrive { count }),
        1 => (0..QUEUES.len()).prop_map(|q| Op::Purge { q }),
        1 => (0..KEYS.len(), any::<bool>(), prop::option::of(10..2_000u64)).prop_map(|(key, nx, px)| Op::Set { key, nx, px }),
        1 => (0..KEYS.len()).prop_map(|key| Op::Incr { key }),
        2 => (0..KEYS.len(), 0..10u8).prop_map(|(key, which)| Op::Keyspace { key, which }),
        3 => (0..LISTS.len(), any::<bool>(), 1..4usize).prop_map(|(list, right, n)| Op::ListPush { list, right, n }),
        2 => (0..LISTS.len(), any::<bool>(), prop::option::of(0..3u64))
            .prop_map(|(list, right, count)| Op::ListPop { list, right, count }),
        1 => (0..LISTS.len(), 0..LISTS.len()).prop_map(|(from, to)| Op::ListMove { from, to }),
        3 => (s.clone(), prop::collection::vec(0..LISTS.len() + 1, 1..3),
              prop_oneof![Just(0u64), 1..2_000u64, Just(WAIT_FOREVER)], prop::option::weighted(0.3, 0..LISTS.len()))
            .prop_map(|(s, keys, wait, to)| Op::BlockingPop { s, keys, wait, to }),
        5 => prop_oneof![Just(0u64), 1..500u64, 500..4_000u64].prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::RefreshLeases),
        1 => Just(Op::DetachSessions),
    ]
}

/// What the test has observed, to check against what it observes next.
#[derive(Default)]
struct Observer {
    sessions: Vec<SessionId>,
    /// Every hold token ever granted: (lock name).
    granted: BTreeMap<u64, String>,
    /// Tokens that were live holds and are no longer.
    ended: BTreeSet<u64>,
    /// The largest token seen so far (grants and receipts).
    max_token: u64,
    /// Every receipt ever delivered: (queue, message id).
    receipts: BTreeMap<u64, (String, u64)>,
    acked_messages: BTreeSet<u64>,
    stored_pushes: u64,
    /// Elements pushed onto lists, and popped from them (not moved: a move keeps it stored).
    list_pushed: u64,
    list_popped: u64,
}

impl Observer {
    fn new_token(&mut self, token: u64, what: &str) {
        assert!(token > self.max_token, "{what} token {token} not above {}", self.max_token);
        self.max_token = token;
    }

    fn grant(&mut self, name: &str, token: u64) {
        assert!(!self.ended.contains(&token), "ended hold {token} granted again");
        match self.granted.get(&token) {
            // A re-acquire by the owner confirms its live hold.
            Some(lock) => assert_eq!(lock, name, "token {token} granted for two locks"),
            None => {
                self.new_token(token, "grant");
                self.granted.insert(token, name.to_owned());
            }
        }
    }

    fn deliver(&mut self, queue: &str, d: &turnstile_core::Delivery) {
        self.new_token(d.receipt, "receipt");
        assert!(!self.acked_messages.contains(&d.id), "acked message {} delivered again", d.id);
        self.receipts.insert(d.receipt, (queue.to_owned(), d.id));
    }

    fn observe(&mut self, cmd: &Command, reply: &Reply, fx: &[Effect]) {
        match (cmd, reply) {
            (Command::Acquire(a), Reply::Granted { token, .. }) => self.grant(&a.name, *token),
            (Command::Pop(p), Reply::Deliveries(ds)) => {
                for d in ds {
                    self.deliver(&p.queue, d);
                    if p.auto_ack {
                        self.acked_messages.insert(d.id);
                    }
                }
            }
            (Command::Push(_), Reply::Pushed { duplicate: false, .. }) => self.stored_pushes += 1,
            (Command::Ack { receipts, .. }, Reply::Int(n)) if *n > 0 => {
                for r in receipts {
                    self.acked_messages.insert(self.receipts[r].1);
                }
            }
            (Command::OpenSession { .. }, Reply::Session(s)) => self.sessions.push(*s),
            (Command::CloseSession { session, .. }, Reply::Int(1)) => self.sessions.retain(|s| s != session),
            (Command::DetachSessions, _) => self.sessions.clear(),
            (Command::ListPush { elements, .. }, Reply::Int(_)) => self.list_pushed += elements.len() as u64,
            (Command::ListPop { .. }, Reply::Bytes(_)) => self.list_popped += 1,
            (Command::ListPop { .. }, Reply::Array(items)) => self.list_popped += items.len() as u64,
            (Command::BlockingPop(p), Reply::Array(_)) if p.to.is_none() => self.list_popped += 1,
            _ => {}
        }
        for effect in fx {
            match effect {
                Effect::Granted { name, token, .. } => self.grant(name, *token),
                Effect::Delivered { queue, deliveries, .. } => {
                    for d in deliveries {
                        self.deliver(queue, d);
                    }
                }
                // A BLPOP served later; a BLMOVE's element stays stored (moved), a timeout is nil.
                Effect::ListWaitDone { reply: Reply::Array(_), .. } => self.list_popped += 1,
                _ => {}
            }
        }
    }

    /// Compares the live holds with the ones seen before: what disappeared has ended for good.
    fn check_holds(&mut self, state: &State, now: u64) {
        let mut live = BTreeSet::new();
        for name in LOCKS.iter().chain(["S0"].iter()) {
            let Reply::LockInfo(info) = state.query(now, Query::LockInfo { name: (*name).into() }) else {
                panic!()
            };
            let exclusive = info.holders.len() == 1 && info.mode == "exclusive";
            assert!(
                info.mode != "exclusive" || exclusive,
                "{name}: exclusive with {} holders",
                info.holders.len()
            );
            let permits: u32 = info.holders.iter().map(|h| h.permits).sum();
            if info.mode == "semaphore" {
                assert!(permits <= info.limit, "{name}: {permits} permits of {}", info.limit);
            }
            live.extend(info.holders.iter().map(|h| h.token));
        }
        for token in self.granted.keys() {
            if !live.contains(token) {
                self.ended.insert(*token);
            }
        }
    }

    fn check_queues(&self, state: &State, now: u64) {
        let mut pushed = 0;
        let (mut dead_out, mut dead_in, mut redrive_out, mut redrive_in) = (0, 0, 0, 0);
        for q in QUEUES {
            if let Reply::QueueStats(s) = state.query(now, Query::QueueStats { name: q.into() }) {
                pushed += s.totals.pushed;
                dead_out += s.totals.dead_lettered;
                dead_in += s.totals.dead_letters_in;
                redrive_out += s.totals.redriven_out;
                redrive_in += s.totals.redriven_in;
            }
        }
        assert_eq!(pushed, self.stored_pushes, "pushes stored vs counted");
        assert_eq!(dead_out, dead_in, "dead letters sent vs received");
        assert_eq!(redrive_out, redrive_in, "redriven out vs in");
    }

    fn check_lists(&self, state: &State, now: u64) {
        let stored = self.stored_list_elements(state, now);
        assert_eq!(self.list_pushed, self.list_popped + stored, "elements pushed vs popped and stored");
    }

    fn stored_list_elements(&self, state: &State, now: u64) -> u64 {
        LISTS
            .iter()
            .map(|l| match state.query(now, Query::ListLen { key: (*l).into() }) {
                Reply::Int(n) => u64::try_from(n).unwrap(),
                other => panic!("LLEN {l}: {other:?}"),
            })
            .sum()
    }
}

fn to_command(op: &Op, obs: &Observer) -> Command {
    let session =
        |s: usize| obs.sessions.get(s % obs.sessions.len().max(1)).copied().unwrap_or(SessionId(999));
    let hold = |pick: usize| {
        let tokens: Vec<(&u64, &String)> = obs.granted.iter().collect();
        tokens.get(pick % tokens.len().max(1)).map(|(t, n)| (**t, (*n).clone())).unwrap_or((0, "L0".into()))
    };
    let receipt = |pick: usize| {
        let all: Vec<(&u64, &(String, u64))> = obs.receipts.iter().collect();
        all.get(pick % all.len().max(1)).map(|(r, (q, _))| (**r, q.clone())).unwrap_or((0, "Q0".into()))
    };
    let fence = |pick: &Option<usize>| {
        pick.map(|p| {
            let (token, lock) = hold(p);
            Fence { lock, token }
        })
    };
    match op.clone() {
        Op::Open => common::open_session(),
        Op::Close { s } => Command::CloseSession { session: session(s), binding: None },
        Op::OpenOn { host } => {
            Command::OpenSession { host: HOSTS[host], secret: common::SECRET, timeout: HOST_TIMEOUT }
        }
        Op::KeepAlive { host } => Command::KeepAlive { host: HOSTS[host], timeout: HOST_TIMEOUT },
        Op::Resume { s, host, right } => Command::ResumeSession {
            session: session(s),
            secret: if right { common::SECRET } else { common::SECRET ^ 1 },
            host: HOSTS[host],
            timeout: HOST_TIMEOUT,
        },
        Op::Acquire { s, lock, shared, wait, keep, owner, ttl } => Command::Acquire(Acquire {
            name: LOCKS[lock].into(),
            mode: if shared { Mode::Shared } else { Mode::Exclusive },
            ttl,
            wait: if wait { 1_500 } else { 0 },
            owner: owner.map(|o| format!("owner{o}")),
            session: Some(session(s)),
            keep,
        }),
        Op::Sem { s, count, wait } => Command::Acquire(Acquire {
            name: "S0".into(),
            mode: Mode::Permits { limit: 3, count },
            ttl: 2_000,
            wait: if wait { 1_000 } else { 0 },
            owner: None,
            session: Some(session(s)),
            keep: false,
        }),
        Op::Release { pick } => {
            let (token, name) = hold(pick);
            Command::Release { name, token }
        }
        Op::Renew { pick, ttl } => {
            let (token, name) = hold(pick);
            Command::Renew { name, token, ttl }
        }
        Op::Push { q, priority, delay, group, dedup, ttl, fenced } => Command::Push(Push {
            priority,
            delay,
            group: group.map(|g| format!("g{g}")),
            dedup: dedup.map(|d| format!("d{d}")),
            ttl,
            fence: fence(&fenced),
            ..Push::new(QUEUES[q], format!("m{}", obs.stored_pushes))
        }),
        Op::Pop { s, q, count, wait, auto_ack } => Command::Pop(Pop {
            queue: QUEUES[q].into(),
            session: Some(session(s)),
            count,
            wait: if wait { 1_000 } else { 0 },
            lease: None,
            auto_ack,
            keep: false,
        }),
        Op::Consume { s, q, credit } => Command::Consume(Consume {
            queue: QUEUES[q].into(),
            session: session(s),
            credit,
            lease: Some(700),
            auto_ack: false,
            exclusive: false,
            pool: None,
        }),
        Op::Ack { pick, fenced } => {
            let (r, queue) = receipt(pick);
            Command::Ack { queue, receipts: vec![r], fence: fence(&fenced) }
        }
        Op::Nack { pick, delay, dead } => {
            let (receipt, queue) = receipt(pick);
            Command::Nack { queue, receipt, delay, dead_letter: dead }
        }
        Op::Extend { pick } => {
            let (receipt, queue) = receipt(pick);
            Command::Extend { queue, receipt, lease: 1_000 }
        }
        Op::Redrive { count } => Command::Redrive { from: "DLQ".into(), to: "Q1".into(), count },
        Op::Purge { q } => Command::PurgeQueue { name: QUEUES[q].into() },
        Op::Set { key, nx, px } => Command::Set(SetKey {
            condition: if nx { SetCondition::Nx } else { SetCondition::Always },
            expiry: px.map_or(SetExpiry::None, SetExpiry::In),
            ..SetKey::new(KEYS[key], "v")
        }),
        Op::Incr { key } => Command::IncrBy { key: KEYS[key].into(), delta: 1 },
        Op::Keyspace { key, which } => {
            let (key, other) = (KEYS[key].to_owned(), KEYS[1 - key].to_owned());
            let field = |f: &'static str| bytes::Bytes::from_static(f.as_bytes());
            match which {
                0 => Command::HSet {
                    key,
                    pairs: vec![(field("a"), field("1")), (field("b"), field("22"))],
                    nx: false,
                },
                1 => Command::HDel { key, fields: vec![field("a")] },
                2 => Command::HIncrBy { key, field: field("n"), delta: 3 },
                3 => Command::Rename { from: key, to: other, nx: false },
                4 => Command::ExpireAt { key, at: 3_000, condition: ExpireCondition::Always },
                5 => Command::Persist { key },
                6 => Command::GetEx { key, expiry: Some(KeyExpiry::In(700)) },
                7 => Command::Append { key, value: field("xy") },
                8 => Command::MSet { pairs: vec![(key, field("1")), (other, field("2"))], nx: true },
                _ => Command::FlushKeys,
            }
        }
        Op::ListPush { list, right, n } => Command::ListPush {
            key: LISTS[list].into(),
            end: if right { End::Right } else { End::Left },
            elements: (0..n).map(|i| bytes::Bytes::from(format!("e{i}"))).collect(),
            only_if_exists: false,
        },
        Op::ListPop { list, right, count } => Command::ListPop {
            key: LISTS[list].into(),
            end: if right { End::Right } else { End::Left },
            count,
        },
        Op::ListMove { from, to } => Command::ListMove {
            source: LISTS[from].into(),
            destination: LISTS[to].into(),
            from: End::Left,
            to: End::Right,
        },
        Op::BlockingPop { s, keys, wait, to } => Command::BlockingPop(BlockingPop {
            keys: keys.iter().map(|&k| LISTS.get(k).copied().unwrap_or("k0").to_owned()).collect(),
            from: End::Left,
            to: to.map(|t| (LISTS[t].to_owned(), End::Left)),
            wait,
            session: Some(session(s)),
        }),
        Op::Advance { .. } | Op::RefreshLeases | Op::DetachSessions => Command::Tick,
    }
}

fn as_user(cmd: Command) -> Command {
    let perms = turnstile_core::Perms::default();
    Command::AsUser { caller: turnstile_core::Caller { user: "u".into(), perms }, command: Box::new(cmd) }
}

fn run(ops: Vec<Op>) {
    let mut state = State::new();
    let mut log = Vec::new();
    let mut now = 1_000u64;
    let mut obs = Observer::default();
    let setup = [
        Command::CreateQueue {
            name: "Q0".into(),
            config: QueueConfig {
                max_len: 6,
                overflow: Overflow::DropHead,
                max_deliveries: 2,
                dead_letter: Some("DLQ".into()),
                lease: 800,
                ttl: None,
                dedup_window: 2_000,
                ..QueueConfig::default()
            },
        },
        Command::CreateQueue {
            name: "Q1".into(),
            config: QueueConfig { max_len: 4, lease: 500, max_deliveries: 3, ..QueueConfig::default() },
        },
        common::open_session(),
        common::open_session(),
        common::open_session(),
    ];
    let commands = setup.into_iter().chain(ops.iter().map(|_| Command::Tick)).collect::<Vec<_>>();
    for (i, template) in commands.into_iter().enumerate() {
        let cmd = match i.checked_sub(5).map(|k| &ops[k]) {
            None => template,
            Some(Op::Advance { ms }) => {
                now += ms;
                Command::Tick
            }
            Some(Op::RefreshLeases) => Command::RefreshLeases,
            Some(Op::DetachSessions) => Command::DetachSessions,
            Some(op) => to_command(op, &obs),
        };
        let index = i as u64 + 1;
        // Every other command runs as a user (one user: never refused), so that who owns each
        // session, hold and delivery is kept through every way they end (`check_invariants`).
        let applied = if i % 2 == 0 { as_user(cmd.clone()) } else { cmd.clone() };
        log.push((index, now, applied.clone()));
        if cmd == Command::FlushKeys {
            // FLUSHALL removes the lists too: their elements leave as if popped.
            obs.list_popped += obs.stored_list_elements(&state, now);
        }
        let (reply, fx) = common::apply_checked(&mut state, index, now, &applied);
        obs.observe(&cmd, &reply, &fx);
        obs.check_holds(&state, now);
        obs.check_queues(&state, now);
        obs.check_lists(&state, now);
    }
    assert_eq!(common::replay(&log), state, "replaying the log gave a different state");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_every_invariant(ops in prop::collection::vec(op(), 1..150)) {
        run(ops);
    }
}
