//! `GET /metrics` from the real binary, read as strictly as Prometheus reads it: after RESP
//! commands a scrape shows them, and each counter says what `INFO stats` says.

mod common;

use std::time::Duration;

use common::scrape::Scrape;
use common::{TestServer, info, until};

/// The counters `INFO` (section `stats`) and the metrics both show, each under one name: INFO
/// `name` is the metric `turnstile_<name>_total`.
const COUNTERS: [&str; 10] = [
    "lock_grants",
    "lock_wait_timeouts",
    "deadlocks_refused",
    "lock_leases_expired",
    "delivery_leases_expired",
    "pushes_refused_oom",
    "limits_refused",
    "pubsub_messages",
    "pubsub_messages_late",
    "pubsub_clients_disconnected",
];

/// How long the test waits for a request it sent to show as waiting: well within the wait the
/// request asks for.
const WAIT: Duration = Duration::from_secs(5);

/// `LOCK.ACQUIRE args`: the fencing token, or `None` when not granted.
fn acquire(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Option<u64>> {
    let grant: Option<(u64, u64)> = redis::cmd("LOCK.ACQUIRE").arg(args).query(con)?;
    Ok(grant.map(|(token, _lease)| token))
}

fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    redis::cmd(args[0]).arg(&args[1..]).query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn a_scrape_after_resp_commands_shows_them() {
    let server = TestServer::start();
    let weird = "we\"ird\\q\nname";
    let mut a = server.client();
    for i in 0..5 {
        assert!(int(&mut a, &["Q.PUSH", "jobs", &format!("j{i}")]) > 0);
    }
    int(&mut a, &["q.push", weird, "x"]);
    int(&mut a, &["Q.PUSH", "gone", "x"]);
    assert_eq!(int(&mut a, &["Q.DEL", "gone"]), 1);
    let popped: Vec<(u64, u64, String, u64)> = redis::cmd("Q.POP").arg("jobs").query(&mut a).unwrap();
    assert_eq!(int(&mut a, &["Q.ACK", "jobs", &popped[0].1.to_string()]), 1);
    let unknown = redis::cmd("NO.SUCH.COMMAND").query::<()>(&mut a).unwrap_err();
    assert!(unknown.to_string().contains("unknown command"), "{unknown}");

    // Two immediate grants, a refused deadlock, a grant after a wait, a wait that times out.
    let mut b = server.client();
    let l = acquire(&mut a, &["l", "30000"]).unwrap().expect("l is free");
    let m = acquire(&mut b, &["m", "30000"]).unwrap().expect("m is free");
    std::thread::scope(|scope| {
        let a_waits = scope.spawn(|| acquire(&mut a, &["m", "30000", "WAIT", "10000"]));
        // Once a is in line for m (the lock_waiters gauge says so), close the cycle.
        until("a waits for m", WAIT, || {
            Scrape::get(&server.http_addr).1.value("turnstile_lock_waiters", &[]) == 1.0
        });
        let refused = acquire(&mut b, &["l", "30000", "WAIT", "10000"]).unwrap_err();
        assert_eq!(refused.code(), Some("DEADLOCK"), "{refused}");
        assert_eq!(int(&mut b, &["LOCK.RELEASE", "m", &m.to_string()]), 1);
        assert!(a_waits.join().unwrap().unwrap().is_some(), "granted after the wait");
    });
    // Real time passes here: the binary's clock is the system's.
    assert_eq!(acquire(&mut b, &["l", "30000", "WAIT", "100"]).unwrap(), None, "a wait that runs out");
    assert!(l > 0);

    let (text, scrape) = Scrape::get(&server.http_addr);
    assert!(text.contains(r#"queue="we\"ird\\q\nname""#), "label values escaped:\n{text}");

    // Commands, by protocol: this server's process counts only this test's commands.
    assert_eq!(scrape.kind("turnstile_commands_total"), "counter");
    assert_eq!(scrape.kind("turnstile_command_duration_seconds"), "histogram");
    let resp = [("protocol", "resp")];
    let resp_commands = scrape.label_values("turnstile_commands_total", "command", &resp);
    let command = |name: &'static str| [("command", name), resp[0]];
    // The redis crate announces itself on each of its two connections (CLIENT SETINFO with
    // its name, then its version).
    let sent = [
        ("client", 4.0),
        ("lock.acquire", 5.0),
        ("lock.release", 1.0),
        ("q.ack", 1.0),
        ("q.del", 1.0),
        ("q.pop", 1.0),
        ("q.push", 7.0),
        ("unknown", 1.0),
    ];
    assert_eq!(resp_commands, sent.map(|(name, _)| name), "the table's names, and `unknown` for the rest");
    for (name, count) in sent {
        assert_eq!(scrape.value("turnstile_commands_total", &command(name)), count, "{name}");
        assert_eq!(scrape.value("turnstile_command_duration_seconds_count", &command(name)), count, "{name}");
    }
    let push = command("q.push");
    assert_eq!(
        scrape.value("turnstile_command_duration_seconds_bucket", &[("le", "10"), push[0], push[1]]),
        7.0
    );

    // Connections, sessions, locks.
    assert_eq!(scrape.value("turnstile_connections", &resp), 2.0);
    assert_eq!(scrape.value("turnstile_connections_accepted_total", &resp), 2.0);
    for protocol in ["resp", "amqp", "http"] {
        assert_eq!(scrape.value("turnstile_connections_rejected_total", &[("protocol", protocol)]), 0.0);
    }
    assert_eq!(scrape.value("turnstile_connections", &[("protocol", "amqp")]), 0.0);
    // The scrape itself came over an HTTP connection, open while it is answered.
    let http = [("protocol", "http")];
    assert!(scrape.value("turnstile_connections_accepted_total", &http) >= 1.0);
    assert!(scrape.value("turnstile_connections", &http) >= 1.0);
    let unlabelled = [
        ("turnstile_connections_blocked", 0.0),
        ("turnstile_sessions", 2.0),
        ("turnstile_locks", 2.0),
        ("turnstile_lock_holds", 2.0),
        ("turnstile_lock_waiters", 0.0),
        ("turnstile_lock_grants_total", 3.0),
        ("turnstile_lock_wait_timeouts_total", 1.0),
        ("turnstile_deadlocks_refused_total", 1.0),
        ("turnstile_lock_leases_expired_total", 0.0),
        ("turnstile_delivery_leases_expired_total", 0.0),
        ("turnstile_limits_refused_total", 0.0),
    ];
    for (name, value) in unlabelled {
        assert_eq!(scrape.value(name, &[]), value, "{name}");
    }

    // Queues: "gone" was deleted, so it has no series.
    assert_eq!(scrape.value("turnstile_queues", &[]), 2.0);
    assert_eq!(scrape.label_values("turnstile_queue_messages", "queue", &[]), ["jobs", weird]);
    let jobs = [("queue", "jobs")];
    assert_eq!(scrape.value("turnstile_queue_messages", &[jobs[0], ("state", "ready")]), 4.0);
    assert_eq!(scrape.value("turnstile_queue_messages", &[jobs[0], ("state", "in_flight")]), 0.0);
    assert_eq!(scrape.value("turnstile_queue_messages", &[("queue", weird), ("state", "ready")]), 1.0);
    assert_eq!(scrape.value("turnstile_queue_pushed_total", &jobs), 5.0);
    assert_eq!(scrape.value("turnstile_queue_acked_total", &jobs), 1.0);
    assert_eq!(scrape.value("turnstile_queue_returned_total", &jobs), 0.0);
    assert_eq!(scrape.value("turnstile_queue_consumers", &jobs), 0.0);
    assert!(scrape.value("turnstile_queue_oldest_ready_age_seconds", &jobs) >= 0.0);
    assert_eq!(scrape.kind("turnstile_queue_dead_lettered_total"), "counter");
    assert_eq!(scrape.kind("turnstile_queue_expired_total"), "counter");

    // Raft and storage.
    assert_eq!(scrape.value("turnstile_raft_is_leader", &[]), 1.0);
    assert_eq!(scrape.value("turnstile_raft_leader", &[]), 1.0);
    assert!(scrape.value("turnstile_raft_term", &[]) >= 1.0);
    let applied = scrape.value("turnstile_raft_applied_index", &[]);
    assert!(applied >= 10.0);
    assert!(scrape.value("turnstile_raft_committed_index", &[]) >= applied);
    assert!(scrape.value("turnstile_raft_last_log_index", &[]) >= applied);
    assert!(scrape.value("turnstile_raft_commands_proposed_total", &[]) >= 15.0);
    assert!(scrape.value("turnstile_raft_entries_proposed_total", &[]) >= 1.0);
    assert_eq!(scrape.kind("turnstile_raft_snapshot_index"), "gauge");
    assert!(scrape.value("turnstile_fsync_total", &[]) >= 1.0);
    assert!(scrape.value("turnstile_fsync_duration_seconds_count", &[]) >= 1.0);
    assert!(scrape.value("turnstile_journal_bytes_written_total", &[]) > 0.0);
    assert!(scrape.value("turnstile_journal_records_total", &[]) >= 1.0);
    assert!(scrape.value("turnstile_journal_log_bytes", &[]) > 0.0, "no snapshot yet: the log is all there");
    assert!(scrape.value("turnstile_fsync_batch_size_max", &[]) >= 1.0);
    assert_eq!(scrape.value("turnstile_journal_poisoned", &[]), 0.0);

    // Memory and the process.
    assert!(scrape.value("turnstile_payload_bytes", &[]) > 0.0);
    assert_eq!(scrape.value("turnstile_max_memory_bytes", &[]), 0.0);
    assert_eq!(scrape.value("turnstile_pushes_refused_oom_total", &[]), 0.0);
    assert!(scrape.value("turnstile_process_resident_memory_bytes", &[]) > 0.0);
    assert!(scrape.value("turnstile_uptime_seconds", &[]) > 0.0);
    assert_eq!(scrape.value("turnstile_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);

    // INFO renders the same counters under the same names; nothing has counted since the scrape.
    let stats = info(&mut a, "stats");
    for name in COUNTERS {
        let metric = scrape.value(&format!("turnstile_{name}_total"), &[]);
        let field = stats.get(name).unwrap_or_else(|| panic!("INFO stats has no {name}: {stats:?}"));
        assert_eq!(field.parse::<f64>().ok(), Some(metric), "{name}");
    }
}
