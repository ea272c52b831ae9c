//! Clients nobody here wrote: `redis-cli` and redis-py, and the `redis` crate asking `COMMAND`
//! what `docs/commands.md` documents. CI installs both tools and sets `TURNSTILE_REQUIRE_PEERS`,
//! so there a missing tool fails the test instead of skipping it.

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

/// `docs/commands.md`'s index: each command's name as typed (`CLIENT SETNAME`) and summary.
fn documented_commands() -> Vec<(String, String)> {
    include_str!("../../../docs/commands.md")
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("| [")?;
            let (name, rest) = rest.split_once("](#")?;
            let (_, summary) = rest.split_once(") | ")?;
            let summary = summary.strip_suffix(" |")?.replace("\\|", "|");
            Some((name.to_owned(), summary))
        })
        .collect()
}

fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        other => panic!("{other:?} is not text"),
    }
}

/// A RESP2 map (a flat array of keys and values) as pairs.
fn pairs(value: &redis::Value) -> Vec<(String, &redis::Value)> {
    match value {
        redis::Value::Array(items) => items.chunks(2).map(|kv| (text(&kv[0]), &kv[1])).collect(),
        redis::Value::Map(items) => items.iter().map(|(k, v)| (text(k), v)).collect(),
        other => panic!("{other:?} is not a map"),
    }
}

#[test]
fn command_answers_what_docs_commands_md_says() {
    let documented = documented_commands();
    let top_level: Vec<&String> =
        documented.iter().map(|(name, _)| name).filter(|n| !n.contains(' ')).collect();
    assert!(top_level.len() > 40, "the index of docs/commands.md was not read: {documented:?}");
    let server = TestServer::start();
    let mut con = server.client();

    let count: usize = redis::cmd("COMMAND").arg("COUNT").query(&mut con).expect("COMMAND COUNT");
    assert_eq!(count, top_level.len(), "COMMAND COUNT against the commands docs/commands.md lists");
    let mut listed: Vec<String> = redis::cmd("COMMAND").arg("LIST").query(&mut con).expect("COMMAND LIST");
    let mut expected: Vec<String> =
        documented.iter().map(|(name, _)| name.to_ascii_lowercase().replace(' ', "|")).collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "COMMAND LIST names every command and subcommand the docs list");

    let docs: redis::Value = redis::cmd("COMMAND").arg("DOCS").arg("Q.PUSH").query(&mut con).expect("DOCS");
    let entries = pairs(&docs);
    assert_eq!(entries.len(), 1, "{docs:?}");
    assert_eq!(entries[0].0, "q.push");
    let fields = pairs(entries[0].1);
    let field = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| *v).expect(key);
    let summary = &documented.iter().find(|(name, _)| name == "Q.PUSH").expect("Q.PUSH documented").1;
    assert_eq!(&text(field("summary")), summary);
    assert_eq!(text(field("group")), "queue");
    let redis::Value::Array(arguments) = field("arguments") else { panic!("no arguments: {docs:?}") };
    let names: Vec<String> =
        arguments.iter().map(|arg| text(pairs(arg).iter().find(|(k, _)| k == "name").unwrap().1)).collect();
    assert_eq!(names, ["name", "payload", "ms", "0-9", "id", "ms", "key", "fence"]);

    if available("redis-cli", &["--version"]) {
        let out = Command::new("redis-cli")
            .args(["-p", &server.port().to_string(), "COMMAND", "COUNT"])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), count.to_string());
    }
}
