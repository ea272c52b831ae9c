//! Crash and recovery with the real binary: SIGKILL under load, torn and corrupt log records,
//! snapshots and purges, the data-dir lock, leases across a restart, and the memory limit.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{TestServer, info_u64, run_to_exit};
use redis::{RedisError, RedisResult, Value};

/// `[id, receipt, payload, deliveries]`, as `Q.POP` returns each delivery.
type Delivery = (u64, u64, String, u64);

/// How long a refused start may take before the test calls it hung.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Commands

fn push(con: &mut redis::Connection, queue: &str, payload: &str) -> RedisResult<u64> {
    redis::cmd("Q.PUSH").arg(queue).arg(payload).query(con)
}

fn pop(con: &mut redis::Connection, queue: &str, opts: &[&str]) -> RedisResult<Vec<Delivery>> {
    let got: Option<Vec<Delivery>> = redis::cmd("Q.POP").arg(queue).arg(opts).query(con)?;
    Ok(got.unwrap_or_default())
}

fn ack(con: &mut redis::Connection, queue: &str, receipts: &[u64]) -> RedisResult<i64> {
    redis::cmd("Q.ACK").arg(queue).arg(receipts).query(con)
}

fn stats(con: &mut redis::Connection, queue: &str) -> HashMap<String, i64> {
    redis::cmd("Q.STATS").arg(queue).query(con).expect("Q.STATS")
}

fn acquire(con: &mut redis::Connection, lock: &str, ttl_ms: u64, opts: &[&str]) -> RedisResult<Option<u64>> {
    let got: Option<(u64, u64)> = redis::cmd("LOCK.ACQUIRE").arg(lock).arg(ttl_ms).arg(opts).query(con)?;
    Ok(got.map(|(token, _lease)| token))
}

fn release(con: &mut redis::Connection, lock: &str, token: u64) -> RedisResult<i64> {
    redis::cmd("LOCK.RELEASE").arg(lock).arg(token).query(con)
}

fn fence_check(con: &mut redis::Connection, lock: &str, token: u64) -> i64 {
    redis::cmd("FENCE.CHECK").arg(lock).arg(token).query(con).expect("FENCE.CHECK")
}

fn is_named(v: &Value, name: &str) -> bool {
    match v {
        Value::BulkString(b) => b == name.as_bytes(),
        Value::SimpleString(s) => s == name,
        _ => false,
    }
}

/// One field of a map reply (a RESP3 map or a RESP2 flat array of pairs).
fn field(v: &Value, name: &str) -> Option<Value> {
    match v {
        Value::Map(kv) => kv.iter().find(|(k, _)| is_named(k, name)).map(|(_, v)| v.clone()),
        Value::Array(items) => items.chunks(2).find(|kv| is_named(&kv[0], name)).map(|kv| kv[1].clone()),
        _ => None,
    }
}

/// `LOCK.INFO` holders as `(token, expires-in ms)`.
fn holders(con: &mut redis::Connection, lock: &str) -> Vec<(u64, i64)> {
    let reply: Value = redis::cmd("LOCK.INFO").arg(lock).query(con).expect("LOCK.INFO");
    let list = match field(&reply, "holders") {
        Some(Value::Array(list)) => list,
        Some(Value::Nil) | None => Vec::new(),
        other => panic!("LOCK.INFO {lock}: unexpected holders {other:?} in {reply:?}"),
    };
    list.into_iter()
        .map(|h| {
            // [owner, token, expires-in, ...]
            let parts: Vec<Value> = redis::from_redis_value(h.clone())
                .unwrap_or_else(|e| panic!("LOCK.INFO {lock}: holder {h:?}: {e}"));
            let int = |i: usize| match parts.get(i) {
                Some(Value::Int(n)) => *n,
                _ => panic!("LOCK.INFO {lock}: holder {h:?} has no integer at {i}"),
            };
            (u64::try_from(int(1)).expect("token"), int(2))
        })
        .collect()
}

/// Pops (with a long lease) and acks until the queue has nothing ready, delayed or in flight.
fn drain(con: &mut redis::Connection, queue: &str, within: Duration) -> Vec<(u64, String)> {
    let deadline = Instant::now() + within;
    let mut drained = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "{queue} not drained within {within:?}: {:?}", stats(con, queue));
        let got = pop(con, queue, &["COUNT", "100", "WAIT", "200", "LEASE", "60000"]).expect("Q.POP");
        if got.is_empty() {
            let s = stats(con, queue);
            if s["ready"] == 0 && s["delayed"] == 0 && s["in-flight"] == 0 {
                return drained;
            }
            continue;
        }
        let receipts: Vec<u64> = got.iter().map(|d| d.1).collect();
        let acked = ack(con, queue, &receipts).expect("Q.ACK");
        assert_eq!(acked, i64::try_from(receipts.len()).unwrap(), "every fresh delivery acks: {got:?}");
        drained.extend(got.into_iter().map(|(id, _, payload, _)| (id, payload)));
    }
}

/// Whether an error is the server's own reply (as opposed to the connection dying).
fn server_error(e: &RedisError) -> bool {
    e.code().is_some()
}

// ---------------------------------------------------------------------------------------------
// The data dir

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&data_dir.join("log"), "seg")
}

fn snapshot_files(data_dir: &Path) -> Vec<PathBuf> {
    files_with_ext(&data_dir.join("snapshots"), "snap")
}

fn newest_segment(data_dir: &Path) -> PathBuf {
    segments(data_dir).pop().expect("the log has a segment")
}

/// The frames of a segment as `(payload offset, payload length)`, stopping at the first one that
/// runs past the end.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        out.push((at + 8, len));
        at += 8 + len;
    }
    out
}

/// Entry records (tag 1) in all segments.
fn entry_records(data_dir: &Path) -> usize {
    segments(data_dir)
        .iter()
        .map(|seg| {
            let bytes = fs::read(seg).expect("read segment");
            frames(&bytes).into_iter().filter(|&(at, _)| bytes[at] == 1).count()
        })
        .sum()
}

/// The highest entry index in a segment.
fn max_entry_index(seg: &Path) -> u64 {
    let bytes = fs::read(seg).expect("read segment");
    frames(&bytes)
        .into_iter()
        .filter(|&(at, _)| bytes[at] == 1)
        .map(|(at, _)| u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap()))
        .max()
        .unwrap_or(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Names and content lengths of the files in `log/` and `snapshots/`, except leftover `.tmp` files (an
/// unfinished snapshot write, which any start deletes).
fn dir_listing(data_dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    for sub in ["log", "snapshots"] {
        if let Ok(entries) = fs::read_dir(data_dir.join(sub)) {
            for e in entries {
                let e = e.expect("dir entry");
                if e.path().extension().is_some_and(|ext| ext == "tmp") {
                    continue;
                }
                // Up to the last non-zero byte: the zero-filled space a segment keeps ahead of its
                // records (cut on the next start) is not content.
                let bytes = fs::read(e.path()).expect("read a data file");
                let content = bytes.iter().rposition(|b| *b != 0).map_or(0, |last| last + 1);
                out.insert(e.path(), content as u64);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 1. Repeated kill -9 under load

const CYCLES: u64 = 22;
const PUSHERS: usize = 2;
const CONSUMERS: usize = 2;
const LOCKERS: usize = 2;
const LOCK_TTL_MS: u64 = 600_000;

/// 50..=300 ms, varied by cycle.
fn load_ms(cycle: u64) -> u64 {
    50 + (cycle * 97 + 31) % 251
}

/// What a pusher saw in one cycle.
#[derive(Debug, Default)]
struct PusherLog {
    /// Acknowledged pushes: id and payload.
    pushed: Vec<(u64, String)>,
    /// The push that got no reply (cut by the kill): it may or may not have been stored.
    unanswered: Option<String>,
    unexpected: Vec<String>,
}

fn pusher(mut con: redis::Connection, thread: usize, cycle: u64) -> PusherLog {
    let mut log = PusherLog::default();
    for n in 0.. {
        let payload = format!("payload-{thread}-{cycle}-{n}");
        match push(&mut con, "q", &payload) {
            Ok(id) => log.pushed.push((id, payload)),
            Err(e) => {
                if server_error(&e) {
                    log.unexpected.push(format!("Q.PUSH {payload}: {e}"));
                }
                log.unanswered = Some(payload);
                break;
            }
        }
    }
    log
}

#[derive(Debug, Default)]
struct ConsumerLog {
    /// Deliveries whose `Q.ACK` replied 1: id and payload.
    acked: Vec<(u64, String)>,
    /// Ids whose `Q.ACK` got no reply (cut by the kill): they may or may not be acked.
    maybe_acked: Vec<u64>,
    /// Every receipt (a fencing token) this consumer got.
    receipts: Vec<u64>,
    unexpected: Vec<String>,
}

fn consumer(mut con: redis::Connection) -> ConsumerLog {
    let mut log = ConsumerLog::default();
    'run: loop {
        let got = match pop(&mut con, "q", &["WAIT", "100"]) {
            Ok(got) => got,
            Err(e) => {
                if server_error(&e) {
                    log.unexpected.push(format!("Q.POP: {e}"));
                }
                break;
            }
        };
        for (id, receipt, payload, _deliveries) in got {
            log.receipts.push(receipt);
            match ack(&mut con, "q", &[receipt]) {
                Ok(1) => log.acked.push((id, payload)),
                Ok(_) => {} // the lease ran out first: it will be delivered again
                Err(e) => {
                    if server_error(&e) {
                        log.unexpected.push(format!("Q.ACK {receipt}: {e}"));
                    }
                    log.maybe_acked.push(id);
                    break 'run;
                }
            }
        }
    }
    log
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LockOp {
    Granted(u64),
    Released(u64),
}

/// What the test knows about one lock.
#[derive(Debug, Clone, Copy, Default)]
struct LockState {
    /// The last acknowledged grant or release.
    last: Option<LockOp>,
    /// Whether a command was sent after `last` and got no reply (it may or may not have applied).
    unanswered: bool,
}

#[derive(Debug, Default)]
struct LockerLog {
    state: LockState,
    /// Every token granted, in order.
    tokens: Vec<u64>,
    unexpected: Vec<String>,
}

/// Acquires and releases `lock` (free when this starts) until the connection dies, or until it
/// sees `killing` before sending a command (so the test knows that command was never sent).
fn locker(mut con: redis::Connection, lock: &str, state: LockState, killing: &AtomicBool) -> LockerLog {
    let mut log = LockerLog { state, ..LockerLog::default() };
    loop {
        if killing.load(Ordering::SeqCst) {
            break;
        }
        log.state.unanswered = true;
        let token = match acquire(&mut con, lock, LOCK_TTL_MS, &["KEEP"]) {
            Ok(Some(token)) => token,
            Ok(None) => {
                log.unexpected.push(format!("LOCK.ACQUIRE {lock}: nil although the lock is free"));
                break;
            }
            Err(e) => {
                if server_error(&e) {
                    log.unexpected.push(format!("LOCK.ACQUIRE {lock}: {e}"));
                }
                break;
            }
        };
        log.state = LockState { last: Some(LockOp::Granted(token)), unanswered: false };
        log.tokens.push(token);
        // Hold it a moment, so that kills often land while it is held with nothing in flight.
        thread::sleep(Duration::from_millis(15));
        if killing.load(Ordering::SeqCst) {
            break;
        }
        log.state.unanswered = true;
        match release(&mut con, lock, token) {
            Ok(1) => log.state = LockState { last: Some(LockOp::Released(token)), unanswered: false },
            Ok(n) => {
                log.unexpected.push(format!("LOCK.RELEASE {lock} {token}: {n}"));
                break;
            }
            Err(e) => {
                if server_error(&e) {
                    log.unexpected.push(format!("LOCK.RELEASE {lock} {token}: {e}"));
                }
                break;
            }
        }
    }
    log
}

/// How many locks `check_locks_after_restart` found in each known state.
#[derive(Debug, Default)]
struct LockChecks {
    /// Acknowledged granted (nothing sent after): the token must be live.
    granted: usize,
    /// Acknowledged released (nothing sent after): the token must be dead.
    released: usize,
    /// A command was in flight at the kill: either outcome of it is allowed.
    in_flight: usize,
    /// Tokens found held that the test had not seen granted (unacknowledged grants that were
    /// stored).
    unseen: Vec<u64>,
}

/// After a restart: checks each lock against its last acknowledged operation, then releases
/// whatever it holds so the next cycle starts with free locks.
fn check_locks_after_restart(con: &mut redis::Connection, locks: &mut [LockState], cycle: u64) -> LockChecks {
    let mut checks = LockChecks::default();
    for (i, state) in locks.iter_mut().enumerate() {
        let lock = format!("lock-{i}");
        let held = holders(con, &lock);
        assert!(held.len() <= 1, "cycle {cycle}: {lock} is exclusive but has holders {held:?}");
        match state.last {
            None => assert!(
                state.unanswered || held.is_empty(),
                "cycle {cycle}: {lock} was never granted, yet it is held: {held:?}"
            ),
            Some(LockOp::Granted(t)) => {
                let live = fence_check(con, &lock, t);
                if state.unanswered {
                    // A release of t was sent and cut: either outcome is right, but nothing else.
                    assert!(
                        held.is_empty() || held[0].0 == t,
                        "cycle {cycle}: {lock}: only token {t} may hold it, got {held:?}"
                    );
                } else {
                    assert_eq!(
                        live, 1,
                        "cycle {cycle}: {lock} was acknowledged granted with token {t} (and not released) \
                         before the kill; FENCE.CHECK after restart says it is not live (holders {held:?})"
                    );
                    assert_eq!(
                        held.iter().map(|h| h.0).collect::<Vec<_>>(),
                        vec![t],
                        "cycle {cycle}: {lock} holders after restart"
                    );
                }
            }
            Some(LockOp::Released(t)) => {
                assert_eq!(
                    fence_check(con, &lock, t),
                    0,
                    "cycle {cycle}: {lock} token {t} was acknowledged released before the kill, but is live again"
                );
                if state.unanswered {
                    // An acquire was sent and cut: it may have been granted a token we never saw.
                    if let Some(&(u, _)) = held.first() {
                        assert!(u > t, "cycle {cycle}: {lock} held by {u}, not newer than released {t}");
                        checks.unseen.push(u);
                    }
                } else {
                    assert!(held.is_empty(), "cycle {cycle}: {lock} was released, yet held: {held:?}");
                }
            }
        }
        match (state.unanswered, state.last) {
            (true, _) => checks.in_flight += 1,
            (false, Some(LockOp::Granted(_))) => checks.granted += 1,
            (false, Some(LockOp::Released(_))) => checks.released += 1,
            (false, None) => {}
        }
        for &(token, _) in &held {
            assert_eq!(release(con, &lock, token).expect("LOCK.RELEASE"), 1, "release {lock} {token}");
            *state = LockState { last: Some(LockOp::Released(token)), unanswered: false };
        }
        if held.is_empty() && state.unanswered {
            // The cut command did not leave the lock held; what it did is moot now.
            state.unanswered = false;
            if let Some(LockOp::Granted(t)) = state.last {
                state.last = Some(LockOp::Released(t));
            }
        }
    }
    checks
}

#[test]
fn acknowledged_writes_survive_repeated_kill_9() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_in(
        dir.path(),
        &["--fsync", "always", "--snapshot-every", "20", "--snapshot-log-bytes", "4096"],
    );
    {
        let mut c = server.client();
        let _: Value = redis::cmd("Q.CREATE").arg(&["q", "LEASE", "500"]).query(&mut c).expect("Q.CREATE");
    }

    let mut pushed: BTreeMap<u64, String> = BTreeMap::new();
    let mut unanswered_pushes: BTreeSet<String> = BTreeSet::new();
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut maybe_acked: BTreeSet<u64> = BTreeSet::new();
    let mut locks = [LockState::default(); LOCKERS];
    let mut max_token_seen = 0u64;
    let mut grants = 0usize;
    let mut lock_checks = LockChecks::default();
    let mut first_segment_last_entry = 0;
    let mut unexpected: Vec<String> = Vec::new();

    for cycle in 0..CYCLES {
        if cycle > 0 {
            server.restart();
            let mut c = server.client();
            let last = info_u64(&mut c, "locks", "last_fencing_token");
            assert!(
                last >= max_token_seen,
                "cycle {cycle}: last_fencing_token {last} after restart is below token {max_token_seen} \
                 handed out before the kill"
            );
            let checks = check_locks_after_restart(&mut c, &mut locks, cycle);
            max_token_seen = max_token_seen.max(checks.unseen.iter().copied().max().unwrap_or(0));
            lock_checks.granted += checks.granted;
            lock_checks.released += checks.released;
            lock_checks.in_flight += checks.in_flight;
            lock_checks.unseen.extend(checks.unseen);
        }

        let killing = Arc::new(AtomicBool::new(false));
        let conns = |n: usize| (0..n).map(|_| server.client()).collect::<Vec<_>>();
        let (push_cons, pop_cons, lock_cons) = (conns(PUSHERS), conns(CONSUMERS), conns(LOCKERS));
        let pushers: Vec<_> = push_cons
            .into_iter()
            .enumerate()
            .map(|(t, con)| thread::spawn(move || pusher(con, t, cycle)))
            .collect();
        let consumers: Vec<_> =
            pop_cons.into_iter().map(|con| thread::spawn(move || consumer(con))).collect();
        let lockers: Vec<_> = lock_cons
            .into_iter()
            .enumerate()
            .map(|(i, con)| {
                let (state, killing) = (locks[i], killing.clone());
                thread::spawn(move || locker(con, &format!("lock-{i}"), state, &killing))
            })
            .collect();

        thread::sleep(Duration::from_millis(load_ms(cycle)));
        killing.store(true, Ordering::SeqCst);
        server.kill9();
        if cycle == 0 {
            first_segment_last_entry = max_entry_index(&segments(dir.path())[0]);
        }

        // Tokens handed out in this cycle: grants and delivery receipts.
        let mut cycle_tokens: Vec<u64> = Vec::new();
        for h in pushers {
            let log = h.join().expect("pusher thread");
            for (id, payload) in log.pushed {
                if let Some(old) = pushed.insert(id, payload.clone()) {
                    panic!("cycle {cycle}: id {id} acknowledged for two pushes: {old:?} and {payload:?}");
                }
            }
            unanswered_pushes.extend(log.unanswered);
            unexpected.extend(log.unexpected);
        }
        for h in consumers {
            let log = h.join().expect("consumer thread");
            assert!(
                log.receipts.windows(2).all(|w| w[0] < w[1]),
                "cycle {cycle}: receipts one consumer got are not increasing: {:?}",
                log.receipts
            );
            cycle_tokens.extend(&log.receipts);
            acked.extend(log.acked);
            maybe_acked.extend(log.maybe_acked);
            unexpected.extend(log.unexpected);
        }
        for (i, h) in lockers.into_iter().enumerate() {
            let log = h.join().expect("locker thread");
            assert!(
                log.tokens.windows(2).all(|w| w[0] < w[1]),
                "cycle {cycle}: tokens of lock-{i} are not increasing: {:?}",
                log.tokens
            );
            grants += log.tokens.len();
            cycle_tokens.extend(&log.tokens);
            locks[i] = log.state;
            unexpected.extend(log.unexpected);
        }
        if let Some(&min) = cycle_tokens.iter().min() {
            assert!(
                min > max_token_seen,
                "cycle {cycle}: token {min} handed out after the restart is not greater than token \
                 {max_token_seen} handed out before it"
            );
        }
        max_token_seen = max_token_seen.max(cycle_tokens.into_iter().max().unwrap_or(0));
    }
    assert!(unexpected.is_empty(), "error replies from the server during the load: {unexpected:#?}");

    // The last restart: check locks. openraft keeps the last 1000 entries a snapshot covers, so
    // the log is purged only up to about snapshot_index - 1000: if the load did not get that far
    // past the first segment, add writes until it has, and crash once more, so the final state
    // certainly comes from a snapshot plus the tail of a purged log.
    server.restart();
    let mut c = server.client();
    assert!(info_u64(&mut c, "locks", "last_fencing_token") >= max_token_seen);
    let checks = check_locks_after_restart(&mut c, &mut locks, CYCLES);
    lock_checks.granted += checks.granted;
    lock_checks.released += checks.released;
    lock_checks.in_flight += checks.in_flight;
    let mut filler = 0;
    while info_u64(&mut c, "persistence", "snapshot_index") < first_segment_last_entry + 1100 {
        assert!(
            filler < 5000,
            "5000 writes did not move the snapshot past {first_segment_last_entry} + 1100"
        );
        for _ in 0..50 {
            let _: () = redis::cmd("SET").arg("filler").arg(filler).query(&mut c).expect("SET filler");
            filler += 1;
        }
    }
    server.restart();
    let mut c = server.client();
    let fresh = acquire(&mut c, "lock-final", 10_000, &[]).expect("LOCK.ACQUIRE").expect("free lock");
    assert!(fresh > max_token_seen, "token {fresh} after the last restart is not above {max_token_seen}");
    let drained = drain(&mut c, "q", Duration::from_secs(30));

    // Exactly once: nothing acked twice, drained twice, or both acked and drained.
    let mut done: BTreeMap<u64, &str> = BTreeMap::new();
    for (id, payload) in &acked {
        assert!(done.insert(*id, "acked").is_none(), "id {id} ({payload}) acked twice with reply 1");
    }
    for (id, payload) in &drained {
        if let Some(before) = done.insert(*id, "drained") {
            panic!("id {id} ({payload}) drained after the last restart but already {before}");
        }
    }
    // Nothing appears that was never pushed, and payloads belong to their ids.
    for (id, payload) in acked.iter().chain(&drained) {
        match pushed.get(id) {
            Some(p) => assert_eq!(p, payload, "id {id} came back with another payload"),
            None => assert!(
                unanswered_pushes.contains(payload),
                "id {id} ({payload}) was delivered but never pushed (not even by a push cut by a kill)"
            ),
        }
    }
    // Every acknowledged push was acked or drained (or its ack was cut by a kill).
    let lost: Vec<(&u64, &String)> =
        pushed.iter().filter(|(id, _)| !done.contains_key(id) && !maybe_acked.contains(id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged pushes are gone (neither acked nor drained), e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );

    // The run must have exercised what it claims to.
    let acked_total = acked.len();
    assert!(pushed.len() >= 100, "only {} acknowledged pushes", pushed.len());
    assert!(acked_total >= 20, "only {acked_total} acks during the load");
    assert!(u64::try_from(grants).unwrap() >= CYCLES, "only {grants} lock grants in {CYCLES} cycles");
    assert!(
        lock_checks.granted > 0,
        "no kill landed while a lock was held with nothing in flight: {lock_checks:?}"
    );
    let snapshot_index = info_u64(&mut c, "persistence", "snapshot_index");
    assert!(snapshot_index > 0, "no snapshot was taken");
    assert!(!snapshot_files(dir.path()).is_empty(), "no snapshot file");
    assert!(
        !segments(dir.path())[0].ends_with(format!("{:020}.seg", 1)),
        "the first log segment was never purged (snapshot index {snapshot_index}, its last entry \
         {first_segment_last_entry}): {:?}",
        segments(dir.path())
    );
    eprintln!(
        "{CYCLES} kill -9 cycles in {:?}: {} pushes acknowledged, {acked_total} acked under load, {} drained, \
         {} acks cut by a kill, {} pushes cut by a kill, {grants} grants, locks after a kill: {lock_checks:?}, \
         last token {max_token_seen}, {filler} filler writes, snapshot index {snapshot_index}, segments left {}",
        started.elapsed(),
        pushed.len(),
        drained.len(),
        maybe_acked.len(),
        unanswered_pushes.len(),
        segments(dir.path()).len()
    );
}

// ---------------------------------------------------------------------------------------------
// 2-3. Torn and corrupt records

fn all_messages(con: &mut redis::Connection, queue: &str) -> Vec<(u64, String)> {
    let got = pop(con, queue, &["COUNT", "1000", "LEASE", "60000"]).expect("Q.POP");
    got.into_iter().map(|(id, _, payload, _)| (id, payload)).collect()
}

#[test]
fn a_torn_last_record_is_cut_and_the_rest_survives() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_in(dir.path(), &[]);
    let mut c = server.client();
    let pushed: Vec<(u64, String)> = (0..10)
        .map(|i| {
            let payload = format!("torn-{i}");
            (push(&mut c, "q", &payload).expect("Q.PUSH"), payload)
        })
        .collect();
    server.kill9();

    let seg = newest_segment(dir.path());
    let len = fs::metadata(&seg).expect("segment metadata").len();
    OpenOptions::new().write(true).open(&seg).expect("open segment").set_len(len - 3).expect("set_len");

    server.restart();
    let mut c = server.client();
    let got = all_messages(&mut c, "q");
    assert!(
        got.len() >= pushed.len() - 1 && got[..] == pushed[..got.len()],
        "after cutting 3 bytes off {}: expected {:?} (the last one may be cut), got {got:?}",
        seg.display(),
        pushed
    );

    // Now cut in the middle of the record of the last push itself: that push is gone (it can
    // only have been acknowledged because we wrote the cut ourselves), the others are there.
    let more: Vec<(u64, String)> = (0..5)
        .map(|i| {
            let payload = format!("after-cut-{i}");
            (push(&mut c, "q", &payload).expect("Q.PUSH after the cut"), payload)
        })
        .collect();
    server.kill9();
    let seg = newest_segment(dir.path());
    let bytes = fs::read(&seg).expect("read segment");
    let (at, len) = frames(&bytes)
        .into_iter()
        .rfind(|&(at, len)| contains(&bytes[at..at + len], b"after-cut-4"))
        .unwrap_or_else(|| panic!("no record in {} carries after-cut-4", seg.display()));
    let cut = u64::try_from(at + len / 2).unwrap();
    OpenOptions::new().write(true).open(&seg).expect("open segment").set_len(cut).expect("set_len");
    server.restart();
    let mut c = server.client();
    // The first batch is in flight (leased for a minute), so only the new ones are ready.
    let got_more = all_messages(&mut c, "q");
    assert_eq!(got_more, more[..4], "after cutting the last push's record in {}", seg.display());

    // The twice-cut log takes new writes, and they survive another crash along with the rest.
    let last = push(&mut c, "q", "final").expect("Q.PUSH after the cuts");
    server.restart();
    let mut c = server.client();
    let s = stats(&mut c, "q");
    assert_eq!(
        s["ready"] + s["in-flight"],
        i64::try_from(got.len() + got_more.len() + 1).unwrap(),
        "messages after another crash: {s:?}"
    );
    assert_eq!(all_messages(&mut c, "q"), vec![(last, "final".to_owned())]);
}

#[test]
fn a_corrupt_middle_record_stops_the_server_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_in(dir.path(), &[]);
    let mut c = server.client();
    let pushed: Vec<(u64, String)> = (0..8)
        .map(|i| {
            let payload = format!("corrupt-test-{i}");
            (push(&mut c, "q", &payload).expect("Q.PUSH"), payload)
        })
        .collect();
    server.kill9();

    // Flip a byte in the middle of the record that carries the fourth push.
    let seg = newest_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("read segment");
    let (at, len) = frames(&bytes)
        .into_iter()
        .find(|&(at, len)| contains(&bytes[at..at + len], b"corrupt-test-3"))
        .unwrap_or_else(|| panic!("no record in {} carries corrupt-test-3", seg.display()));
    bytes[at + len / 2] ^= 0x40;
    fs::write(&seg, &bytes).expect("write segment");

    let before = dir_listing(dir.path());
    let started = Instant::now();
    let (status, output) = run_to_exit(dir.path(), &[], REFUSE_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!("a server with a corrupt record did not exit within {REFUSE_TIMEOUT:?}; it printed:\n{output}")
    });
    assert!(!status.success(), "a server with a corrupt record must refuse to start; it printed:\n{output}");
    let file_name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert!(output.contains(&file_name), "the message names the segment {file_name}:\n{output}");
    assert!(output.contains("--truncate-corrupt"), "the message mentions --truncate-corrupt:\n{output}");
    assert_eq!(dir_listing(dir.path()), before, "a refused start must not touch the log");
    eprintln!("refused in {:?}", started.elapsed());

    server.restart_with(&["--truncate-corrupt"]);
    let mut c = server.client();
    let got = all_messages(&mut c, "q");
    assert_eq!(
        got,
        pushed[..3],
        "with --truncate-corrupt the records before the corrupt one are kept and the rest are cut"
    );
    // The truncated log takes writes and starts again without the flag.
    push(&mut c, "q", "after-truncation").expect("Q.PUSH after truncation");
    server.restart_with(&[]);
    let mut c = server.client();
    let s = stats(&mut c, "q");
    assert_eq!(s["ready"] + s["in-flight"], 4, "three kept and one new message: {s:?}");
}

// ---------------------------------------------------------------------------------------------
// 4-5. Snapshots

const SNAP_ARGS: [&str; 2] = ["--snapshot-every", "5"];

/// `SET k{i} v{i}` + `Q.PUSH q m{i}` pairs written in each of the two setup runs. openraft keeps
/// the last 1000 entries of the log after a snapshot (its `max_in_snapshot_log_to_keep`), so the
/// second run writes well past that for a purge to cover the whole first segment.
const SNAP_RUNS: [usize; 2] = [25, 600];
const SNAP_PAIRS: usize = SNAP_RUNS[0] + SNAP_RUNS[1];

/// Two runs with `--snapshot-every 5`, each ended by SIGKILL; returns the stopped server.
fn snapshot_setup(dir: &Path) -> TestServer {
    let mut server = TestServer::start_in(dir, &SNAP_ARGS);
    let mut i = 0;
    for (run, pairs) in SNAP_RUNS.into_iter().enumerate() {
        if run > 0 {
            server.restart();
        }
        let mut c = server.client();
        for _ in 0..pairs {
            let _: () =
                redis::cmd("SET").arg(format!("k{i}")).arg(format!("v{i}")).query(&mut c).expect("SET");
            push(&mut c, "q", &format!("m{i}")).expect("Q.PUSH");
            i += 1;
        }
        server.kill9();
    }
    server
}

fn assert_all_written(con: &mut redis::Connection) {
    for i in 0..SNAP_PAIRS {
        let v: Option<String> = redis::cmd("GET").arg(format!("k{i}")).query(con).expect("GET");
        assert_eq!(v, Some(format!("v{i}")), "key k{i} after restart");
    }
    let got: Vec<String> = all_messages(con, "q").into_iter().map(|(_, p)| p).collect();
    let expected: Vec<String> = (0..SNAP_PAIRS).map(|i| format!("m{i}")).collect();
    assert!(
        got == expected,
        "messages after restart: {} of {SNAP_PAIRS}, first {:?}",
        got.len(),
        got.first()
    );
}

#[test]
fn restart_from_snapshot_plus_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = snapshot_setup(dir.path());
    let snaps = snapshot_files(dir.path());
    assert!(!snaps.is_empty(), "no snapshot file with --snapshot-every 5");
    let segs = segments(dir.path());
    assert!(
        !segs[0].ends_with(format!("{:020}.seg", 1)),
        "the first segment is covered by a snapshot but was not deleted: {segs:?}"
    );
    let entries = entry_records(dir.path());
    assert!(
        entries < 2 * SNAP_PAIRS,
        "{entries} entry records remain in the log for {} writes: nothing was purged",
        2 * SNAP_PAIRS
    );

    server.restart();
    let mut c = server.client();
    assert_all_written(&mut c);
    let index = info_u64(&mut c, "persistence", "snapshot_index");
    assert!(index > 0, "INFO persistence snapshot_index is {index}");
    // The log a restart would replay: the entries after the snapshot, all in the segment files.
    let log_bytes = info_u64(&mut c, "persistence", "journal_log_bytes");
    let on_disk: u64 =
        segments(dir.path()).iter().map(|s| std::fs::metadata(s).expect("segment").len()).sum();
    assert!(
        log_bytes > 0 && log_bytes <= on_disk,
        "journal_log_bytes {log_bytes} with {on_disk} bytes of segments"
    );
}

#[test]
fn a_missing_snapshot_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = snapshot_setup(dir.path());
    let snaps = snapshot_files(dir.path());
    assert!(!snaps.is_empty(), "no snapshot file with --snapshot-every 5");
    assert!(
        !segments(dir.path())[0].ends_with(format!("{:020}.seg", 1)),
        "the setup did not purge the first segment, so the snapshot is not needed"
    );
    let aside = tempfile::tempdir().expect("temp dir");
    for snap in &snaps {
        fs::rename(snap, aside.path().join(snap.file_name().unwrap())).expect("move snapshot aside");
    }

    let before = dir_listing(dir.path());
    let (status, output) = run_to_exit(dir.path(), &SNAP_ARGS, REFUSE_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!("a server without its snapshot did not exit within {REFUSE_TIMEOUT:?}; it printed:\n{output}")
    });
    assert!(!status.success(), "a log whose start no snapshot covers must be refused; it printed:\n{output}");
    assert!(output.contains("snapshot"), "the message mentions the snapshot:\n{output}");
    // Nothing already there may be deleted or cut (the refused start does open a fresh, empty
    // segment before it notices; that loses nothing).
    let after = dir_listing(dir.path());
    for (file, len) in &before {
        assert_eq!(after.get(file), Some(len), "a refused start changed {}: {after:?}", file.display());
    }

    // Nothing was lost: with the snapshot back, everything is there.
    for snap in &snaps {
        fs::rename(aside.path().join(snap.file_name().unwrap()), snap).expect("restore snapshot");
    }
    server.restart();
    let mut c = server.client();
    assert_all_written(&mut c);
}

// ---------------------------------------------------------------------------------------------
// 6-8.

#[test]
fn a_second_server_on_the_same_dir_is_refused() {
    let server = TestServer::start();
    let mut c = server.client();
    let _: () = redis::cmd("SET").arg("before").arg("1").query(&mut c).expect("SET");

    let (status, output) = run_to_exit(server.data_dir(), &[], REFUSE_TIMEOUT);
    let status = status.unwrap_or_else(|| {
        panic!(
            "a second server on a locked dir did not exit within {REFUSE_TIMEOUT:?}; it printed:\n{output}"
        )
    });
    assert!(!status.success(), "a second server on the same dir must refuse to start:\n{output}");
    assert!(output.contains("locked"), "the message says the dir is locked:\n{output}");
    let dir = server.data_dir().display().to_string();
    assert!(output.contains(&dir), "the message names the dir {dir}:\n{output}");
    let lock_file = fs::read_to_string(server.data_dir().join("LOCK")).expect("LOCK file");
    assert_eq!(lock_file.trim(), server.pid().to_string(), "the LOCK file still names the first server");

    let _: () = redis::cmd("SET").arg("after").arg("2").query(&mut c).expect("SET on the first server");
    for (key, value) in [("before", "1"), ("after", "2")] {
        let got: String = redis::cmd("GET").arg(key).query(&mut c).expect("GET on the first server");
        assert_eq!(got, value);
    }
    push(&mut c, "q", "still-working").expect("Q.PUSH on the first server");
}

#[test]
fn holds_survive_a_restart_with_the_same_token_and_a_refreshed_lease() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_in(dir.path(), &[]);
    let mut c = server.client();
    let token = acquire(&mut c, "held", 3000, &["KEEP"]).expect("LOCK.ACQUIRE").expect("free lock");
    server.kill9();
    thread::sleep(Duration::from_millis(1000));
    server.restart();
    let mut c = server.client();
    assert_eq!(fence_check(&mut c, "held", token), 1, "the KEEP hold survives the restart with its token");
    let held = holders(&mut c, "held");
    assert_eq!(held.len(), 1, "one holder: {held:?}");
    let (t, expires_in) = held[0];
    assert_eq!(t, token);
    assert!(
        (2000..=3000).contains(&expires_in),
        "the lease is refreshed to a full TTL on restart: expires-in {expires_in} ms (TTL 3000, 1 s down)"
    );
    let other = acquire(&mut c, "other", 3000, &[]).expect("LOCK.ACQUIRE").expect("free lock");
    assert!(other > token, "a token after the restart ({other}) must be greater than before ({token})");
}

#[test]
fn pushes_past_max_memory_are_refused_with_oom_and_other_commands_work() {
    let server = TestServer::start_with(&["--max-memory", "2000"]);
    let mut c = server.client();
    let payload = "x".repeat(1024);
    let mut accepted = 0;
    let refused = loop {
        assert!(accepted < 50, "{accepted} KiB pushed past a 2000-byte limit");
        match push(&mut c, "q", &payload) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused.code(), Some("OOM"), "the refusal is an OOM error: {refused}");
    assert!(accepted >= 1, "the first 1 KiB push fits under 2000 bytes");

    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut c).expect("SET under OOM");
    let v: String = redis::cmd("GET").arg("k").query(&mut c).expect("GET under OOM");
    assert_eq!(v, "v");
    let token = acquire(&mut c, "l", 10_000, &[]).expect("LOCK.ACQUIRE under OOM").expect("free lock");
    assert_eq!(release(&mut c, "l", token).expect("LOCK.RELEASE"), 1);
    let again = push(&mut c, "q", &payload).expect_err("still over the limit");
    assert_eq!(again.code(), Some("OOM"));

    let got = pop(&mut c, "q", &["COUNT", "100"]).expect("Q.POP");
    assert_eq!(got.len(), accepted, "every accepted push is there, no refused one");
    let receipts: Vec<u64> = got.iter().map(|d| d.1).collect();
    assert_eq!(ack(&mut c, "q", &receipts).expect("Q.ACK"), i64::try_from(accepted).unwrap());
    push(&mut c, "q", &payload).expect("a push after the queue was emptied");
}
