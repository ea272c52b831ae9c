//! Clients nobody here wrote: `redis-cli` and redis-py. CI installs both and sets
//! `TURNSTILE_REQUIRE_PEERS`, so there a missing tool fails the test instead of skipping it.

mod common;

use std::process::Command;

use common::{TestServer, peers_required};

fn available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program).args(args).output().is_ok_and(|o| o.status.success());
    assert!(ok || !peers_required(), "`{program} {}` is required in CI but failed", args.join(" "));
    ok
}

#[test]
fn redis_cli_takes_and_gives_back_a_lock() {
    if !available("redis-cli", &["--version"]) {
        return;
    }
    let server = TestServer::start();
    let run = |args: &[&str]| {
        let out =
            Command::new("redis-cli").args(["-p", &server.port().to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(run(&["PING"]), "PONG");
    assert_eq!(run(&["SET", "k", "v", "NX", "PX", "30000"]), "OK");
    assert_eq!(run(&["SET", "k", "v", "NX", "PX", "30000"]), "");
    assert!(run(&["Q.PUSH", "q", "hello"]).parse::<u64>().is_ok());
    // Each redis-cli run is its own connection: without KEEP the hold would end with it.
    let grant = run(&["LOCK.ACQUIRE", "L", "5000", "KEEP"]);
    let token = grant.lines().next().unwrap().to_owned();
    assert_eq!(grant.lines().nth(1), Some("5000"), "{grant}");
    assert_eq!(run(&["LOCK.RELEASE", "L", &token]), "1");
}

const REDIS_PY_LOCK: &str = r#"
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
assert r.ping()
assert r.set("lock:report", "worker-1", ex=60)
assert r.get("lock:report") == b"worker-1"
assert r.set("lock:report", "worker-2", nx=True, px=30000) is None
assert 0 < r.ttl("lock:report") <= 60
assert r.delete("lock:report") == 1
assert r.set("lock:report", "worker-2", nx=True, px=30000)
print("ok")
"#;

#[test]
fn a_redis_py_program_takes_a_lock() {
    if !available("python3", &["-c", "import redis"]) {
        return;
    }
    let server = TestServer::start();
    let out =
        Command::new("python3").args(["-c", REDIS_PY_LOCK, &server.port().to_string()]).output().unwrap();
    assert!(out.status.success(), "redis-py failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
