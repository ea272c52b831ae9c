//! Sessions belong to the cluster: a session whose node is killed lives on for the session
//! timeout and is resumed on another node with its id and secret, hold and delivery intact; one
//! that is not resumed is released once the timeout has passed. `turnstile lock run` and
//! `turnstile queue work` resume theirs by themselves. On one node: `SESSION INFO` and
//! `SESSION RESUME`, and what they refuse.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::TestCluster;
use common::{TestServer, until};
use redis::Value;

/// The bound on each wait for the cluster to get somewhere; far more than any step needs.
const WAIT: Duration = Duration::from_secs(60);

/// Short, so that a session nobody resumes is released within the test; long enough for a
/// client to resume its session after an election on two busy cores.
const SESSION_TIMEOUT_MS: &str = "5000";

/// A connection to `node`, or `None` if it does not answer.
fn try_client(node: &TestServer) -> Option<redis::Connection> {
    let client = redis::Client::open(node.url()).ok()?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

fn fence_check(con: &mut redis::Connection, lock: &str, token: u64) -> bool {
    redis::cmd("FENCE.CHECK").arg(lock).arg(token).query::<i64>(con).expect("FENCE.CHECK") == 1
}

fn acquire(con: &mut redis::Connection, lock: &str) -> u64 {
    let (token, _lease): (u64, u64) =
        redis::cmd("LOCK.ACQUIRE").arg(lock).arg(60_000).query(con).expect("LOCK.ACQUIRE");
    token
}

/// `Q.STATS` field `field` of `queue`.
fn queue_stat(con: &mut redis::Connection, queue: &str, field: &str) -> i64 {
    let reply: Value = redis::cmd("Q.STATS").arg(queue).query(con).expect("Q.STATS");
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Map(kv) => kv,
        Value::Array(items) => items.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())).collect(),
        other => panic!("Q.STATS replied {other:?}"),
    };
    let name = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    pairs
        .iter()
        .find(|(k, _)| name(k) == field)
        .and_then(|(_, v)| if let Value::Int(n) = v { Some(*n) } else { None })
        .unwrap_or_else(|| panic!("no {field} in Q.STATS"))
}

/// A child process killed (SIGKILL) if the test ends without waiting for it.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `turnstile ARGS` talking to every node of the cluster.
fn turnstile(cluster: &TestCluster, args: &[&str]) -> Spawned {
    let servers = (0..cluster.len()).map(|i| cluster.node(i).addr.clone()).collect::<Vec<_>>().join(",");
    Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(args)
        .env("TURNSTILE_SERVER", format!("turnstile://{servers}"))
        .env_remove("TURNSTILE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Spawned)
        .expect("turnstile runs")
}

/// A shell script that writes `$var` to `dir/name`, then waits until `dir/done` exists (or
/// `dir` is gone: a failed test leaves nothing running).
fn script(dir: &Path, var: &str, name: &str) -> String {
    let d = dir.display();
    format!("echo ${var} > {d}/{name}; while [ ! -f {d}/done ] && [ -d {d} ]; do sleep 0.05; done")
}

fn wait_exit(child: &mut Spawned) -> i32 {
    let mut status = None;
    until("the command exits", WAIT, || {
        status = child.0.try_wait().expect("try_wait");
        status.is_some()
    });
    status.and_then(|s| s.code()).expect("exited, not killed")
}

#[test]
fn sessions_of_a_killed_leader_are_resumed_elsewhere_or_released_after_the_timeout() {
    let mut cluster = TestCluster::start(3, &["--session-timeout-ms", SESSION_TIMEOUT_MS]);
    let leader = cluster.leader();
    let work = tempfile::tempdir().expect("temp dir");

    // A raw session on the leader: its id and secret, and a hold.
    let mut kept = cluster.node(leader).client();
    let (id, secret): (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut kept).expect("SESSION INFO");
    let token = acquire(&mut kept, "kept");
    // A second session on the leader, which nobody will resume.
    let mut dropped = cluster.node(leader).client();
    let dropped_token = acquire(&mut dropped, "dropped");
    // `lock run` and `queue work`, each with a session on whichever node leads.
    let mut run = turnstile(
        &cluster,
        &[
            "lock",
            "run",
            "run-lock",
            "--ttl",
            "60s",
            "--",
            "sh",
            "-c",
            &script(work.path(), "TURNSTILE_FENCING_TOKEN", "token"),
        ],
    );
    let _: i64 = redis::cmd("Q.PUSH").arg("jobs").arg("the job").query(&mut kept).expect("Q.PUSH");
    let mut worker = turnstile(
        &cluster,
        &[
            "queue",
            "work",
            "jobs",
            "--lease",
            "60s",
            "--",
            "sh",
            "-c",
            &script(work.path(), "TURNSTILE_MESSAGE_ID", "message"),
        ],
    );
    let run_token_file = work.path().join("token");
    until("lock run runs its command", WAIT, || {
        std::fs::metadata(&run_token_file).is_ok_and(|m| m.len() > 0)
    });
    until("queue work runs its command", WAIT, || work.path().join("message").exists());
    let run_token: u64 = std::fs::read_to_string(&run_token_file).unwrap().trim().parse().expect("a token");
    assert_eq!(queue_stat(&mut kept, "jobs", "in-flight"), 1);

    cluster.kill9(leader);
    drop(dropped);
    let live: Vec<usize> = (0..3).filter(|&i| i != leader).collect();

    // The client of the raw session resumes it on whichever node now takes it.
    let mut resumed = None;
    until("the session is resumed on a live node", WAIT, || {
        resumed = live.iter().find_map(|&i| {
            let mut con = try_client(cluster.node(i))?;
            let ok: redis::RedisResult<String> =
                redis::cmd("SESSION").arg("RESUME").arg(id).arg(secret).query(&mut con);
            match ok {
                Ok(_) => Some((i, con)),
                Err(e) => {
                    // The redis crate spells some codes its own way (`TryAgain`). Right after the
                    // kill, a follower may still forward to the dead leader: "outcome unknown",
                    // which a resume (idempotent) may simply be asked again after.
                    let text = e.to_string().to_uppercase();
                    let expected = ["NOTLEADER", "TRYAGAIN", "CLUSTERDOWN", "OUTCOME UNKNOWN"];
                    assert!(expected.iter().any(|c| text.contains(c)), "{e}");
                    None
                }
            }
        });
        resumed.is_some()
    });
    let (new_leader, mut resumed) = resumed.expect("resumed");

    // The session nobody resumed is released once the dead node's sessions time out...
    let mut other = cluster.node(new_leader).client();
    until("the session not resumed is released", WAIT, || !fence_check(&mut other, "dropped", dropped_token));
    // ... and by then the resumed one would have been too, had it not moved: its hold is there,
    // with the same token, it renews, and another client's acquire still has to wait.
    assert!(fence_check(&mut other, "kept", token), "the resumed session keeps its hold");
    let lease: u64 =
        redis::cmd("LOCK.RENEW").arg("kept").arg(token).arg(60_000).query(&mut resumed).expect("renew");
    assert_eq!(lease, 60_000);
    let waited: Option<(u64, u64)> = redis::cmd("LOCK.ACQUIRE")
        .arg("kept")
        .arg(60_000)
        .arg("WAIT")
        .arg(200)
        .query(&mut other)
        .expect("acquire");
    assert_eq!(waited, None, "another client waits and is not granted");
    // `lock run` resumed its session too: its hold outlived the dead node's sessions.
    assert!(fence_check(&mut other, "run-lock", run_token), "lock run keeps its lock");
    // And `queue work` its delivery: still in flight, not back in the queue.
    assert_eq!(queue_stat(&mut other, "jobs", "in-flight"), 1, "queue work keeps its delivery");
    assert_eq!(queue_stat(&mut other, "jobs", "ready"), 0);

    // The commands finish normally: the lock is released, the message acked.
    std::fs::write(work.path().join("done"), b"").unwrap();
    assert_eq!(wait_exit(&mut run), 0, "lock run exits with its command's status, not 4 (lost)");
    assert!(!fence_check(&mut other, "run-lock", run_token));
    until("the worker acks its message", WAIT, || queue_stat(&mut other, "jobs", "acked") == 1);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(worker.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(wait_exit(&mut worker), 0, "the worker stops when told to");
    // The resumed connection is the session's now: closing it releases the hold.
    drop(resumed);
    until("closing the resumed connection releases the hold", WAIT, || {
        !fence_check(&mut other, "kept", token)
    });
}

#[test]
fn session_info_and_resume_on_one_node() {
    let server = TestServer::start();
    let mut a = server.client();
    let (id, secret): (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut a).expect("SESSION INFO");
    let again: (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut a).unwrap();
    assert_eq!(again, (id, secret), "one session per connection");
    let token = acquire(&mut a, "l");

    // Another connection takes the session over while the first is still open (a client that
    // believes its connection broke): the first one's close then leaves the session alone.
    let mut b = server.client();
    let ok: String = redis::cmd("SESSION").arg("RESUME").arg(id).arg(secret).query(&mut b).expect("resume");
    assert_eq!(ok, "OK");
    let mut watcher = server.client();
    drop(a);
    let waited: Option<(u64, u64)> =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(1000).arg("WAIT").arg(300).query(&mut watcher).unwrap();
    assert_eq!(waited, None, "the old connection's close did not release the hold");
    assert!(fence_check(&mut watcher, "l", token));
    let info: (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut b).unwrap();
    assert_eq!(info, (id, secret), "b has the session");
    drop(b);
    until("closing b releases the hold", WAIT, || !fence_check(&mut watcher, "l", token));

    // Bad input: one text for a wrong secret and an unknown id; the connection goes on.
    let mut c = server.client();
    let ended = refusal(&mut c, &["RESUME", &id.to_string(), &secret.to_string()]);
    assert!(ended.contains(&format!("no session {id} with that secret")), "{ended}");
    let mut d = server.client();
    let (live, live_secret): (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut d).unwrap();
    let wrong = refusal(&mut c, &["RESUME", &live.to_string(), &(live_secret ^ 1).to_string()]);
    let unknown = refusal(&mut c, &["RESUME", "999999", "1"]);
    assert_eq!(
        wrong.replace(&live.to_string(), "N"),
        unknown.replace("999999", "N"),
        "a wrong secret and an unknown id read alike"
    );
    assert!(refusal(&mut c, &["RESUME", "1"]).contains("wrong number of arguments for 'session|resume'"));
    assert!(refusal(&mut c, &["RESUME", "1", "2", "3"]).contains("wrong number of arguments"));
    assert!(refusal(&mut c, &["RESUME", "x", "2"]).contains("not an integer"));
    assert!(refusal(&mut c, &["INFO", "extra"]).contains("wrong number of arguments for 'session|info'"));
    assert!(refusal(&mut c, &["NOPE"]).contains("unknown subcommand 'NOPE'"));
    // A connection that has a session of its own cannot resume another.
    let _: (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut c).unwrap();
    let busy = refusal(&mut c, &["RESUME", &live.to_string(), &live_secret.to_string()]);
    assert!(busy.contains("this connection already has a session"), "{busy}");
    let _: String = redis::cmd("PING").query(&mut c).expect("the connection still serves");
    let again: (u64, u64) = redis::cmd("SESSION").arg("INFO").query(&mut d).expect("d keeps its session");
    assert_eq!(again, (live, live_secret), "a refused resume took nothing from d");
}

/// The error text of `SESSION args...`, which must be refused.
fn refusal(con: &mut redis::Connection, args: &[&str]) -> String {
    let reply: redis::RedisResult<Value> = redis::cmd("SESSION").arg(args).query(con);
    reply.expect_err("refused").to_string()
}
