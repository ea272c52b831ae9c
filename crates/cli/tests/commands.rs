//! The client commands (`lock`, `sem`, `queue`) as a user runs them: the real binary against a
//! real server, checked through the `redis` crate and the commands' own output.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::scrape::Scrape;
use common::{TestServer, until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `turnstile ARGS` aimed at `server` through TURNSTILE_SERVER.
fn turnstile(server: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    cmd.args(args).env("TURNSTILE_SERVER", &server.addr).env_remove("TURNSTILE_LOG");
    cmd
}

/// Runs to completion (bounded: the commands here finish in seconds).
fn output(server: &TestServer, args: &[&str]) -> Output {
    let child = turnstile(server, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_output(child, Duration::from_secs(60))
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("turnstile did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

fn stat(server: &TestServer, queue: &str, field: &str) -> i64 {
    let out = output(server, &["queue", "stats", queue, "--json"]);
    if !out.status.success() {
        return 0; // no such queue yet
    }
    json(&out)[field].as_i64().unwrap_or_else(|| panic!("no {field} in stats"))
}

/// Appends `start TOKEN` and `end TOKEN` around a short sleep, under `lock run`.
fn marking_run(server: &TestServer, file: &Path) -> Child {
    let script = format!(
        "echo \"start $TURNSTILE_FENCING_TOKEN $TURNSTILE_LOCK\" >> {f}; sleep 0.05; echo \"end $TURNSTILE_FENCING_TOKEN\" >> {f}",
        f = file.display()
    );
    turnstile(server, &["lock", "run", "shared-file", "--wait", "60s", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Checks the marks: start/end pairs never interleave, tokens strictly increase.
fn check_marks(file: &Path, runs: usize) {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), runs * 2, "{text}");
    let mut last = 0u64;
    for pair in lines.chunks(2) {
        let start: Vec<&str> = pair[0].split(' ').collect();
        let end: Vec<&str> = pair[1].split(' ').collect();
        assert_eq!((start[0], start[2], end[0]), ("start", "shared-file", "end"), "interleaved:\n{text}");
        assert_eq!(start[1], end[1], "a run ended with another's token:\n{text}");
        let token: u64 = start[1].parse().unwrap();
        assert!(token > last, "token {token} after {last}:\n{text}");
        last = token;
    }
}

#[test]
fn concurrent_lock_runs_never_overlap() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    for runs in [2, 10] {
        let file = dir.path().join(format!("marks-{runs}"));
        let children: Vec<Child> = (0..runs).map(|_| marking_run(&server, &file)).collect();
        for child in children {
            let out = wait_output(child, Duration::from_secs(60));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        check_marks(&file, runs);
    }
}

#[test]
fn lock_run_passes_the_exit_status_and_releases() {
    let server = TestServer::start();
    let out = output(&server, &["lock", "run", "job", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code(&out), 7);
    let info = json(&output(&server, &["lock", "info", "job", "--json"]));
    assert_eq!(info["holders"].as_array().unwrap().len(), 0, "released after CMD exited");

    // Held elsewhere: --wait 0 fails with status 3, never runs CMD, and never waits in line (a
    // wait that ran out would show in the metrics).
    let token = stdout(&output(&server, &["lock", "acquire", "job", "--ttl", "30s", "--owner", "cron"]));
    let out = output(&server, &["lock", "run", "job", "--wait", "0", "--", "sh", "-c", "echo ran"]);
    assert_eq!(code(&out), 3, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("turnstile: the lock job is held by cron (token {token}); not waiting (--wait 0)")
    );
    assert_eq!(Scrape::get(&server.http_addr).1.value("turnstile_lock_wait_timeouts_total", &[]), 0.0);
    assert_eq!(code(&output(&server, &["lock", "release", "job", &token])), 0);
}

/// Starts a `lock run` whose CMD records its pid and a SIGTERM in `dir`; waits until it runs.
fn watched_run(server: &TestServer, dir: &Path, ttl: &str) -> Child {
    let script = format!(
        "trap 'kill $!; echo terminated > {d}/term; exit 0' TERM; echo $TURNSTILE_FENCING_TOKEN > {d}/token; sleep 60 & wait",
        d = dir.display()
    );
    let child = turnstile(
        server,
        &["lock", "run", "watched", "--ttl", ttl, "--grace", "5s", "--", "sh", "-c", &script],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    until("CMD runs", Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("token")).is_ok_and(|t| t.ends_with('\n'))
    });
    child
}

#[test]
fn lock_run_stops_cmd_when_the_hold_is_revoked() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let child = watched_run(&server, dir.path(), "1s");
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    // An operator takes the lock away: the next renewal is refused.
    assert_eq!(code(&output(&server, &["lock", "release", "watched", token.trim()])), 0);
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost the lock watched"));
    assert_eq!(std::fs::read_to_string(dir.path().join("term")).unwrap().trim(), "terminated");
}

#[test]
fn lock_run_stops_cmd_when_the_server_dies() {
    let mut server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let child = watched_run(&server, dir.path(), "30s");
    server.kill9();
    // Long before the 30 s lease: the connection (the hold's session) is gone.
    let out = wait_output(child, Duration::from_secs(20));
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(dir.path().join("term")).unwrap().trim(), "terminated");
}

#[test]
fn lock_and_semaphore_commands() {
    let server = TestServer::start();
    let granted =
        json(&output(&server, &["lock", "acquire", "L", "--ttl", "20s", "--owner", "ops", "--json"]));
    let token = granted["token"].as_u64().unwrap();
    // The hold outlives the command that took it.
    let info = json(&output(&server, &["lock", "info", "L", "--json"]));
    assert_eq!(info["holders"][0]["token"].as_u64(), Some(token));
    assert_eq!(info["holders"][0]["owner"], "ops");
    assert!(stdout(&output(&server, &["lock", "info", "L"])).contains(&format!("held by ops token {token}")));
    assert_eq!(stdout(&output(&server, &["lock", "list"])), "L");
    assert_eq!(code(&output(&server, &["lock", "acquire", "L", "--wait", "0"])), 3);
    assert_eq!(
        json(&output(&server, &["lock", "renew", "L", &token.to_string(), "--ttl", "1m", "--json"]))["ttl_ms"],
        60_000
    );
    assert_eq!(code(&output(&server, &["lock", "release", "L", &token.to_string()])), 0);
    assert_eq!(code(&output(&server, &["lock", "release", "L", &token.to_string()])), 4);
    let out = output(&server, &["lock", "renew", "L", &token.to_string()]);
    assert_eq!(code(&out), 4, "renewing a released hold: {}", String::from_utf8_lossy(&out.stderr));

    let p1 = stdout(&output(&server, &["sem", "acquire", "pool", "--limit", "3", "--permits", "2"]));
    let _p2 = stdout(&output(&server, &["sem", "acquire", "pool", "--limit", "3"]));
    assert_eq!(code(&output(&server, &["sem", "acquire", "pool", "--limit", "3", "--wait", "0"])), 3);
    let info = json(&output(&server, &["sem", "info", "pool", "--json"]));
    assert_eq!(info["limit"], 3);
    assert_eq!(info["holders"].as_array().unwrap().len(), 2);
    assert_eq!(code(&output(&server, &["sem", "release", "pool", &p1])), 0);
    assert_eq!(
        code(&output(&server, &["sem", "acquire", "pool", "--limit", "3", "--permits", "2", "--wait", "0"])),
        0
    );
}

#[test]
fn queue_commands_round_trip() {
    let server = TestServer::start();
    assert_eq!(
        stdout(&output(&server, &["queue", "create", "q", "--max-deliveries", "2", "--dlq", "q.dead"])),
        "created"
    );
    let id: u64 =
        stdout(&output(&server, &["queue", "push", "q", "hello world", "--priority", "3"])).parse().unwrap();
    // The payload from stdin, binary-safe.
    let mut push = turnstile(&server, &["queue", "push", "q", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(push.stdin.as_mut().unwrap(), b"from\nstdin").unwrap();
    drop(push.stdin.take());
    let second = json(&wait_output(push, Duration::from_secs(30)))["id"].as_u64().unwrap();
    assert!(second > id);

    let peeked = json(&output(&server, &["queue", "peek", "q", "--json"]));
    assert_eq!(peeked[0]["payload"], "hello world");
    assert_eq!(peeked[1]["payload"], "from\nstdin");
    assert_eq!(stdout(&output(&server, &["queue", "list"])), "q");

    // Pop in one process, ack in another: the delivery outlives the popping connection.
    let popped = stdout(&output(&server, &["queue", "pop", "q", "--lease", "1m"]));
    let fields: Vec<&str> = popped.splitn(4, ' ').collect();
    assert_eq!((fields[0], fields[2], fields[3]), (id.to_string().as_str(), "1", "hello world"));
    assert_eq!(stdout(&output(&server, &["queue", "ack", "q", fields[1]])), "acked 1");
    assert_eq!(code(&output(&server, &["queue", "ack", "q", fields[1]])), 4, "acked twice");

    let popped = json(&output(&server, &["queue", "pop", "q", "--json"]));
    let receipt = popped[0]["receipt"].as_u64().unwrap().to_string();
    assert_eq!(
        json(&output(&server, &["queue", "extend", "q", &receipt, "--lease", "2m", "--json"]))["lease_ms"],
        120_000
    );
    assert_eq!(code(&output(&server, &["queue", "nack", "q", &receipt, "--dead"])), 0);
    assert_eq!(stat(&server, "q.dead", "ready"), 1);
    assert_eq!(stdout(&output(&server, &["queue", "redrive", "q.dead", "q"])), "moved 1");
    let stats = json(&output(&server, &["queue", "stats", "q", "--json"]));
    assert_eq!((stats["acked"].as_i64(), stats["ready"].as_i64()), (Some(1), Some(1)));
    assert_eq!(stdout(&output(&server, &["queue", "purge", "q"])), "purged 1");
    assert_eq!(code(&output(&server, &["queue", "pop", "q", "--wait", "100ms"])), 3, "empty");
    assert_eq!(stdout(&output(&server, &["queue", "delete", "q"])), "deleted");

    // Bad input: a clear error and status 1 (bad server reply) or 2 (bad command line).
    let out = output(&server, &["queue", "push", "q", "x", "--priority", "12"]);
    assert_eq!(code(&out), 2);
    let out = output(&server, &["queue", "stats", "nope"]);
    assert_eq!(code(&out), 1);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such queue"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_server_gets_a_helpful_error() {
    // Bound, never listening, and held for the whole test: a connect is refused, and no server
    // another test starts meanwhile can take the port (a dropped listener's port could be).
    let held = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    held.bind(&loopback.into()).unwrap();
    let addr = held.local_addr().unwrap().as_socket().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["queue", "list", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot connect to {addr}")) && err.contains("is `turnstile server` running?"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["queue", "list", "--server", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid server address"));
}

fn interrupt(child: &Child) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGINT).unwrap();
}

#[test]
fn queue_work_acks_every_message_exactly_once() {
    let server = TestServer::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("Q.PUSH").arg("jobs").arg(format!("payload-{i}"));
    }
    let ids: Vec<u64> = pipe.query(&mut con).unwrap();
    assert_eq!(ids.len(), 1000);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("done");
    // One short write per message: atomic with O_APPEND, whatever the concurrency.
    let script =
        format!("p=$(cat); echo \"$TURNSTILE_MESSAGE_ID $TURNSTILE_DELIVERIES $p\" >> {}", out.display());
    let worker =
        turnstile(&server, &["queue", "work", "jobs", "--concurrency", "8", "--", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    until("1000 acks", Duration::from_secs(120), || stat(&server, "jobs", "acked") == 1000);
    interrupt(&worker);
    let result = wait_output(worker, Duration::from_secs(30));
    assert_eq!(code(&result), 0, "{}", String::from_utf8_lossy(&result.stderr));

    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen: Vec<(u64, String)> = text
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts[1], "1", "delivered once: {line}");
            (parts[0].parse().unwrap(), parts[2].to_owned())
        })
        .collect();
    seen.sort();
    let expected: Vec<(u64, String)> =
        ids.iter().enumerate().map(|(i, id)| (*id, format!("payload-{i}"))).collect();
    assert_eq!(seen, expected, "every message ran exactly once, with its payload");
    assert_eq!(
        (
            stat(&server, "jobs", "ready"),
            stat(&server, "jobs", "in-flight"),
            stat(&server, "jobs", "returned")
        ),
        (0, 0, 0)
    );
}

#[test]
fn queue_work_dead_letters_a_failing_message_after_max_deliveries() {
    let server = TestServer::start();
    assert_eq!(
        code(&output(&server, &["queue", "create", "flaky", "--max-deliveries", "3", "--dlq", "flaky.dead"])),
        0
    );
    for payload in ["a", "b"] {
        assert_eq!(code(&output(&server, &["queue", "push", "flaky", payload])), 0);
    }
    let worker = turnstile(
        &server,
        &[
            "queue",
            "work",
            "flaky",
            "--backoff",
            "10ms",
            "--concurrency",
            "2",
            "--",
            "sh",
            "-c",
            "cat > /dev/null; exit 1",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    until("both dead-lettered", Duration::from_secs(60), || stat(&server, "flaky.dead", "ready") == 2);
    interrupt(&worker);
    let result = wait_output(worker, Duration::from_secs(30));
    assert_eq!(code(&result), 0);
    assert!(String::from_utf8_lossy(&result.stderr).contains("failed"), "failures are reported");
    assert_eq!((stat(&server, "flaky", "delivered"), stat(&server, "flaky", "dead-lettered")), (6, 2));
    assert_eq!(stat(&server, "flaky", "acked"), 0);
}

#[test]
fn queue_work_writes_each_line_of_concurrent_commands_whole() {
    let server = TestServer::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..8 {
        pipe.cmd("Q.PUSH").arg("lines").arg(format!("{i}"));
    }
    let _: Vec<u64> = pipe.query(&mut con).unwrap();
    // Each CMD writes half a line, pauses so that the others run, and ends the line: written
    // straight to the shared stdout, the halves of different CMDs would land side by side.
    let script = "p=$(cat); printf 'start-%s ' \"$p\"; sleep 0.2; printf 'end-%s\\n' \"$p\"; echo err-$p >&2";
    let worker =
        turnstile(&server, &["queue", "work", "lines", "--concurrency", "8", "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    until("8 acks", Duration::from_secs(60), || stat(&server, "lines", "acked") == 8);
    interrupt(&worker);
    let result = wait_output(worker, Duration::from_secs(30));
    assert_eq!(code(&result), 0, "{}", String::from_utf8_lossy(&result.stderr));
    let mut lines: Vec<String> = stdout(&result).lines().map(str::to_owned).collect();
    lines.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("start-{i} end-{i}")).collect();
    assert_eq!(lines, expected, "every line whole, none spliced with another's");
    let stderr = String::from_utf8_lossy(&result.stderr);
    for i in 0..8 {
        assert!(stderr.lines().any(|l| l == format!("err-{i}")), "CMD's stderr passes through:\n{stderr}");
    }
}
