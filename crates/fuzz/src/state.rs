//! The state machine itself: command sequences drawn from the input, applied step by step.
//!
//! The generator is structure-aware: names, owners, hosts and group keys come from alphabets of
//! two or three, so commands collide on the same locks and queues; tokens, receipts, sessions and
//! consumer ids are picked from those the state has handed out (with a stale or made-up one now
//! and then); durations include 0 and past the longest the core takes, so refusals are reached.

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use turnstile_core::{
    Acquire, Binding, Caller, Command, Consume, CreditPool, DeadLetterExchange, Effect, ExchangeDecl,
    ExchangeKind, ExpireCondition, Fence, HostId, MAX_DURATION, Mode, Overflow, Pop, Publish, Push, Query,
    QueueConfig, Reply, SessionId, SetCondition, SetExpiry, SetKey, State, Step, User,
};

const LOCKS: &[&str] = &["a", "b", "c"];
const QUEUES: &[&str] = &["q", "r", "dead"];
const KEYS: &[&str] = &["k", "l"];
const OWNERS: &[&str] = &["o1", "o2", "o3"];
const EXCHANGES: &[&str] = &["x", "y", "amq.direct", "amq.topic", ""];
const ROUTING_KEYS: &[&str] = &["q", "r", "a.b", "#", "*.b"];
const GROUPS: &[&str] = &["g1", "g2"];
const DEDUP: &[&str] = &["d1", "d2"];
/// The most steps one input drives: enough for leases to run out and queues to fill.
const MAX_STEPS: usize = 256;

/// A command sequence from the input's bytes, applied to a `State`.
///
/// Asserts: `check_invariants()` after every step; the last token issued never goes down and
/// no grant or delivery carries one above it; now and then (and at the end) the state is
/// snapshotted and restored: the copy equals it, and both apply the next command with the same
/// reply and effects. Every query answers without panicking.
pub fn state_apply(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut run = Run::default();
    let _ = run.drive(&mut u);
    // The end: a copy restored from a snapshot goes on exactly as the original.
    let restored = restore(&run.state);
    let next = run.command(&mut u).unwrap_or(Command::Tick);
    let now = run.state.clock() + 1;
    let index = run.state.applied_index() + 1;
    let mut copy = restored;
    assert_eq!(
        run.state.apply(index, now, next.clone()),
        copy.apply(index, now, next),
        "a restored state applies the next command differently"
    );
}

#[derive(Default)]
struct Run {
    state: State,
    /// What the state handed out, to be used again.
    sessions: Vec<SessionId>,
    /// (lock, token) of every grant.
    tokens: Vec<(String, u64)>,
    /// (queue, receipt) of every delivery.
    receipts: Vec<(String, u64)>,
    /// (queue, consumer id) of every consumer.
    consumers: Vec<(String, u64)>,
    /// Bindings returned by opens and resumes.
    bindings: Vec<u64>,
}

impl Run {
    fn drive(&mut self, u: &mut Unstructured<'_>) -> Result<()> {
        for _ in 0..MAX_STEPS {
            if u.is_empty() {
                break;
            }
            if u.ratio(1, 32)? {
                self.state = restore(&self.state);
                continue;
            }
            let advance = *u.choose(&[0, 0, 1, 10, 100, 1_000, 10_000, 60_000, 1 << 20])?;
            let now = self.state.clock() + advance;
            let cmd = self.command(u)?;
            self.step(now, cmd);
            for _ in 0..u.int_in_range(0..=1)? {
                let query = self.query(u)?;
                let now = self.state.clock() + *u.choose(&[0, 1, 1_000])?;
                let _ = self.state.query(now, query);
            }
        }
        Ok(())
    }

    /// Applies `cmd`, checks the state, and learns what the reply and effects handed out.
    fn step(&mut self, now: u64, cmd: Command) {
        let last_token = self.state.last_token();
        let target = match &cmd {
            Command::Acquire(a) => a.name.clone(),
            Command::Pop(p) => p.queue.clone(),
            Command::Consume(c) => c.queue.clone(),
            Command::InSession { command, .. } => match &**command {
                Command::Pop(p) => p.queue.clone(),
                Command::Acquire(a) => a.name.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let shown = format!("{cmd:?}");
        let index = self.state.applied_index() + 1;
        let (reply, effects) = self.state.apply(index, now, cmd);
        if let Err(e) = self.state.check_invariants() {
            panic!("invariant broken after {shown} at {now}: {e}");
        }
        let issued = self.state.last_token();
        assert!(issued >= last_token, "the last token went from {last_token} down to {issued}");
        let check =
            |token: u64| assert!(token <= issued, "token {token} handed out above the last, {issued}");
        match reply {
            Reply::Session(session) => {
                self.sessions.push(session);
                self.bindings.push(session.0);
            }
            Reply::Granted { token, .. } => {
                check(token);
                self.tokens.push((target, token));
            }
            Reply::Deliveries(deliveries) => {
                for d in deliveries {
                    check(d.receipt);
                    self.receipts.push((target.clone(), d.receipt));
                }
            }
            Reply::Consumer { consumer_id } => self.consumers.push((target, consumer_id)),
            Reply::Int(n) if shown.starts_with("ResumeSession") => self.bindings.push(n.unsigned_abs()),
            _ => {}
        }
        for effect in effects {
            match effect {
                Effect::Granted { name, token, .. } => {
                    check(token);
                    self.tokens.push((name, token));
                }
                Effect::Delivered { queue, deliveries, .. } => {
                    for d in deliveries {
                        check(d.receipt);
                        self.receipts.push((queue.clone(), d.receipt));
                    }
                }
                _ => {}
            }
        }
        for list in [&mut self.tokens, &mut self.receipts, &mut self.consumers] {
            if list.len() > 64 {
                list.drain(..32);
            }
        }
    }

    /// A command, run as no user, one of two users, or an admin (who may act on the others'
    /// holds and deliveries); now and then a change of the user table.
    fn command(&self, u: &mut Unstructured<'_>) -> Result<Command> {
        let user = |name: &str, rules: &[&str]| {
            let mut user = User::new(name);
            user.apply_rules(rules.iter().copied(), &|_| true).expect("valid rules");
            user
        };
        Ok(match u.int_in_range(0..=9u8)? {
            0..=3 => self.plain_command(u)?,
            4..=8 => {
                let caller = match u.int_in_range(0..=2u8)? {
                    0 => user("u1", &["on", "+@all", "-@admin"]),
                    1 => user("u2", &["on", "+@all", "-@admin"]),
                    _ => user("root", &["on", "+@all"]),
                };
                let caller = Caller { user: caller.name, perms: caller.perms };
                Command::AsUser { caller, command: Box::new(self.plain_command(u)?) }
            }
            _ if u.arbitrary()? => {
                Command::AclSetUser { user: user(name(u, &["u1", "u2"])?.as_str(), &["on", ">pw"]) }
            }
            _ => Command::AclDelUser { names: vec![name(u, &["u1", "u2"])?] },
        })
    }

    fn plain_command(&self, u: &mut Unstructured<'_>) -> Result<Command> {
        Ok(match u.int_in_range(0..=34u8)? {
            0 => Command::Tick,
            1 => Command::LegacyOpenSession,
            2 => Command::LegacyCloseSession { session: self.session(u)? },
            3 => Command::DetachSessions,
            4 => Command::RefreshLeases,
            5..=7 => Command::Acquire(self.acquire(u)?),
            8 => {
                let (name, token) = self.token(u)?;
                Command::Release { name, token }
            }
            9 => {
                let (name, token) = self.token(u)?;
                Command::Renew { name, token, ttl: duration(u)? }
            }
            10 => Command::CreateQueue { name: name(u, QUEUES)?, config: self.config(u)? },
            11 => Command::DeleteQueue {
                name: name(u, QUEUES)?,
                if_unused: u.arbitrary()?,
                if_empty: u.arbitrary()?,
            },
            12 => Command::PurgeQueue { name: name(u, QUEUES)? },
            13..=15 => Command::Push(self.push(u)?),
            16..=17 => Command::Pop(self.pop(u)?),
            18 => {
                let (queue, first) = self.receipt(u)?;
                let mut receipts = vec![first];
                if u.ratio(1, 4)? {
                    receipts.push(self.receipt(u)?.1);
                }
                Command::Ack { queue, receipts, fence: self.fence(u)? }
            }
            19 => {
                let (queue, receipt) = self.receipt(u)?;
                Command::Nack { queue, receipt, delay: maybe_duration(u)?, dead_letter: u.arbitrary()? }
            }
            20 => {
                let (queue, receipt) = self.receipt(u)?;
                Command::Extend { queue, receipt, lease: duration(u)? }
            }
            21 => Command::Consume(self.consume(u)?),
            22 => {
                let (queue, consumer_id) = match u.choose(&self.consumers) {
                    Ok((queue, id)) if !u.ratio(1, 8)? => (queue.clone(), *id),
                    _ => (name(u, QUEUES)?, u.int_in_range(0..=40)?),
                };
                Command::Cancel { queue, consumer_id }
            }
            23 => Command::Redrive {
                from: name(u, QUEUES)?,
                to: name(u, QUEUES)?,
                count: u.int_in_range(0..=3)?,
            },
            24 => Command::Set(self.set(u)?),
            25 => {
                let mut keys = vec![name(u, KEYS)?];
                if u.arbitrary()? {
                    keys.push(name(u, KEYS)?);
                }
                Command::Del { keys, fence: self.fence(u)? }
            }
            26 => Command::Expire {
                key: name(u, KEYS)?,
                ttl: *u.choose(&[-1, 0, 1, 100, 10_000, i64::MAX])?,
                condition: *u.choose(&[
                    ExpireCondition::Always,
                    ExpireCondition::Nx,
                    ExpireCondition::Xx,
                    ExpireCondition::Gt,
                    ExpireCondition::Lt,
                ])?,
            },
            27 => Command::IncrBy { key: name(u, KEYS)?, delta: *u.choose(&[1, -1, 5, i64::MAX, i64::MIN])? },
            28 => Command::DeclareExchange(ExchangeDecl {
                name: name(u, EXCHANGES)?,
                kind: *u.choose(&[ExchangeKind::Direct, ExchangeKind::Fanout, ExchangeKind::Topic])?,
                durable: u.arbitrary()?,
                auto_delete: u.arbitrary()?,
                internal: u.ratio(1, 4)?,
            }),
            29 => Command::DeleteExchange { name: name(u, EXCHANGES)?, if_unused: u.arbitrary()? },
            30 => {
                let binding = Binding {
                    exchange: name(u, EXCHANGES)?,
                    queue: name(u, QUEUES)?,
                    routing_key: name(u, ROUTING_KEYS)?,
                };
                if u.ratio(1, 3)? { Command::Unbind(binding) } else { Command::Bind(binding) }
            }
            31 => Command::Publish(Publish {
                exchange: name(u, EXCHANGES)?,
                routing_key: name(u, ROUTING_KEYS)?,
                push: self.push(u)?,
            }),
            32 => {
                let command = if u.ratio(1, 16)? {
                    Command::InSession { session: self.session(u)?, command: Box::new(Command::Tick) }
                } else {
                    self.plain_command(u)?
                };
                Command::InSession { session: self.session(u)?, command: Box::new(command) }
            }
            33 => self.exec(u)?,
            _ => self.session_command(u)?,
        })
    }

    /// A transaction of a few writes and reads (a nested one now and then), watching a key at
    /// its version now, or at one it does not have.
    fn exec(&self, u: &mut Unstructured<'_>) -> Result<Command> {
        let mut steps = Vec::new();
        for _ in 0..u.int_in_range(0..=3u8)? {
            steps.push(if u.ratio(1, 3)? {
                Step::Read(self.query(u)?)
            } else {
                Step::Write(self.plain_command(u)?)
            });
        }
        let mut watches = Vec::new();
        if u.arbitrary()? {
            let key = name(u, KEYS)?;
            let now =
                match self.state.query(self.state.clock(), Query::KeyVersions { keys: vec![key.clone()] }) {
                    Reply::Array(versions) => match versions.as_slice() {
                        [Reply::Int(v)] => u64::try_from(*v).unwrap_or(0),
                        _ => 0,
                    },
                    _ => 0,
                };
            watches.push((key, if u.ratio(1, 4)? { now + 1 } else { now }));
        }
        Ok(Command::Exec { session: self.maybe_session(u)?, watches, steps })
    }

    fn session_command(&self, u: &mut Unstructured<'_>) -> Result<Command> {
        let host = HostId(u.int_in_range(0..=2)?);
        Ok(match u.int_in_range(0..=4u8)? {
            0 => Command::KeepAlive { host, timeout: duration(u)? },
            1 => Command::ResumeSession {
                session: self.session(u)?,
                secret: u.int_in_range(0..=1)?,
                host,
                timeout: duration(u)?,
            },
            2 => Command::OpenSession { host, secret: u.int_in_range(0..=1)?, timeout: duration(u)? },
            3 => Command::CloseSession {
                session: self.session(u)?,
                binding: if u.arbitrary()? { Some(self.pick(u, &self.bindings, 8)?) } else { None },
            },
            _ => Command::RetireNode { node: u.int_in_range(1..=3)? },
        })
    }

    fn query(&self, u: &mut Unstructured<'_>) -> Result<Query> {
        Ok(match u.int_in_range(0..=11u8)? {
            0 => Query::LockInfo { name: name(u, LOCKS)? },
            1 => {
                let (lock, token) = self.token(u)?;
                Query::FenceCheck { lock, token }
            }
            2 => Query::QueueStats { name: name(u, QUEUES)? },
            3 => Query::Peek { queue: name(u, QUEUES)?, count: u.int_in_range(0..=3)? },
            4 => Query::ListQueues,
            5 => Query::ListLocks,
            6 => Query::Get { key: name(u, KEYS)? },
            7 => Query::Exists { keys: vec![name(u, KEYS)?, name(u, KEYS)?] },
            8 => Query::Pttl { key: name(u, KEYS)? },
            9 => Query::Exchange { name: name(u, EXCHANGES)? },
            10 => Query::KeyVersions { keys: vec![name(u, KEYS)?, name(u, KEYS)?] },
            _ => Query::QueueConfig { name: name(u, QUEUES)? },
        })
    }

    fn acquire(&self, u: &mut Unstructured<'_>) -> Result<Acquire> {
        let mode = match u.int_in_range(0..=3u8)? {
            0 | 1 => Mode::Exclusive,
            2 => Mode::Shared,
            _ => Mode::Permits { limit: u.int_in_range(0..=3)?, count: u.int_in_range(0..=3)? },
        };
        Ok(Acquire {
            name: name(u, LOCKS)?,
            mode,
            ttl: duration(u)?,
            wait: maybe_duration(u)?,
            owner: if u.ratio(3, 4)? { Some(name(u, OWNERS)?) } else { None },
            session: self.maybe_session(u)?,
            keep: u.ratio(1, 4)?,
        })
    }

    fn config(&self, u: &mut Unstructured<'_>) -> Result<QueueConfig> {
        let dead_letter_exchange = if u.ratio(1, 4)? {
            Some(DeadLetterExchange {
                exchange: name(u, EXCHANGES)?,
                routing_key: if u.arbitrary()? { Some(name(u, ROUTING_KEYS)?) } else { None },
            })
        } else {
            None
        };
        Ok(QueueConfig {
            max_len: u.int_in_range(0..=3)?,
            overflow: *u.choose(&[Overflow::Reject, Overflow::DropHead])?,
            max_deliveries: u.int_in_range(0..=3)?,
            dead_letter: if u.ratio(1, 3)? { Some(name(u, QUEUES)?) } else { None },
            lease: duration(u)?,
            ttl: if u.ratio(1, 3)? { Some(duration(u)?) } else { None },
            dedup_window: duration(u)?,
            max_priority: u.int_in_range(0..=10)?,
            dead_letter_exchange,
            exclusive_owner: if u.ratio(1, 6)? { Some(self.session(u)?) } else { None },
            auto_delete: u.ratio(1, 6)?,
            single_active_consumer: u.ratio(1, 4)?,
        })
    }

    fn push(&self, u: &mut Unstructured<'_>) -> Result<Push> {
        let payload: Vec<u8> = (0..u.int_in_range(0..=4)?).map(|i| b'a' + i).collect();
        Ok(Push {
            queue: name(u, QUEUES)?,
            payload: Bytes::from(payload),
            properties: if u.ratio(1, 4)? { Bytes::from_static(b"\x01\x00\x01q") } else { Bytes::new() },
            delay: if u.ratio(1, 3)? { maybe_duration(u)? } else { 0 },
            priority: u.int_in_range(0..=10)?,
            dedup: if u.ratio(1, 4)? { Some(name(u, DEDUP)?) } else { None },
            ttl: if u.ratio(1, 4)? { Some(duration(u)?) } else { None },
            group: if u.ratio(1, 3)? { Some(name(u, GROUPS)?) } else { None },
            fence: self.fence(u)?,
        })
    }

    fn pop(&self, u: &mut Unstructured<'_>) -> Result<Pop> {
        Ok(Pop {
            queue: name(u, QUEUES)?,
            session: self.maybe_session(u)?,
            count: u.int_in_range(0..=3)?,
            wait: maybe_duration(u)?,
            lease: if u.arbitrary()? { Some(duration(u)?) } else { None },
            auto_ack: u.ratio(1, 6)?,
            keep: u.ratio(1, 4)?,
        })
    }

    fn consume(&self, u: &mut Unstructured<'_>) -> Result<Consume> {
        Ok(Consume {
            queue: name(u, QUEUES)?,
            session: self.session(u)?,
            credit: u.int_in_range(0..=2)?,
            lease: if u.arbitrary()? { Some(duration(u)?) } else { None },
            auto_ack: u.ratio(1, 6)?,
            exclusive: u.ratio(1, 6)?,
            pool: if u.ratio(1, 3)? {
                Some(CreditPool { id: u.int_in_range(1..=2)?, limit: u.int_in_range(0..=2)? })
            } else {
                None
            },
        })
    }

    fn set(&self, u: &mut Unstructured<'_>) -> Result<SetKey> {
        Ok(SetKey {
            key: name(u, KEYS)?,
            value: Bytes::from(u.choose(&["", "1", "v", "-5", "9223372036854775807"])?.as_bytes()),
            condition: *u.choose(&[SetCondition::Always, SetCondition::Nx, SetCondition::Xx])?,
            expiry: match u.int_in_range(0..=2u8)? {
                0 => SetExpiry::None,
                1 => SetExpiry::KeepTtl,
                _ => SetExpiry::In(maybe_duration(u)?),
            },
            get: u.arbitrary()?,
            fence: self.fence(u)?,
        })
    }

    fn fence(&self, u: &mut Unstructured<'_>) -> Result<Option<Fence>> {
        if !u.ratio(1, 4)? {
            return Ok(None);
        }
        let (lock, token) = self.token(u)?;
        Ok(Some(Fence { lock, token }))
    }

    /// A token handed out before (live or not), or now and then one never issued.
    fn token(&self, u: &mut Unstructured<'_>) -> Result<(String, u64)> {
        match u.choose(&self.tokens) {
            Ok(held) if !u.ratio(1, 8)? => Ok(held.clone()),
            _ => Ok((name(u, LOCKS)?, u.int_in_range(0..=40)?)),
        }
    }

    fn receipt(&self, u: &mut Unstructured<'_>) -> Result<(String, u64)> {
        match u.choose(&self.receipts) {
            Ok(delivered) if !u.ratio(1, 8)? => Ok(delivered.clone()),
            _ => Ok((name(u, QUEUES)?, u.int_in_range(0..=40)?)),
        }
    }

    fn session(&self, u: &mut Unstructured<'_>) -> Result<SessionId> {
        Ok(SessionId(self.pick(u, &self.sessions.iter().map(|s| s.0).collect::<Vec<_>>(), 8)?))
    }

    fn maybe_session(&self, u: &mut Unstructured<'_>) -> Result<Option<SessionId>> {
        if u.ratio(1, 4)? { Ok(None) } else { self.session(u).map(Some) }
    }

    /// One of `known`, or (one time in `odds`, or when none is known) a small number.
    fn pick(&self, u: &mut Unstructured<'_>, known: &[u64], odds: u8) -> Result<u64> {
        match u.choose(known) {
            Ok(&n) if !u.ratio(1, odds)? => Ok(n),
            _ => u.int_in_range(0..=40),
        }
    }
}

fn name(u: &mut Unstructured<'_>, alphabet: &[&str]) -> Result<String> {
    Ok((*u.choose(alphabet)?).to_owned())
}

/// A lease, TTL or timeout: mostly sensible, sometimes 0 or past the longest the core takes.
fn duration(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(*u.choose(&[1, 5, 50, 1_000, 30_000, 600_000, MAX_DURATION, MAX_DURATION + 1, 0])?)
}

/// A wait or a delay, where 0 means "none".
fn maybe_duration(u: &mut Unstructured<'_>) -> Result<u64> {
    if u.arbitrary()? { Ok(0) } else { duration(u) }
}

/// The state a snapshot of `state` restores, checked to be `state` again.
fn restore(state: &State) -> State {
    let snapshot = state.snapshot();
    let restored = State::restore(Bytes::from(snapshot.clone()))
        .unwrap_or_else(|e| panic!("a snapshot the state wrote does not restore: {e}"));
    assert!(restored == *state, "a restored state differs from the one snapshotted");
    assert_eq!(restored.snapshot(), snapshot, "a restored state snapshots to other bytes");
    restored
}
