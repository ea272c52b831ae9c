//! Redis client libraries nobody here wrote, unchanged, against the real binary: redis-py's
//! `Lock`, python-redis-lock, redis-py's transactions and ioredis's scripts and `multi()`. Each
//! is a script under `tests/libs/` that takes a server's port, prints `ok: FACT` for each fact it
//! saw hold and exits non-zero at the first that did not.
//!
//! Every script runs against a real `redis-server` first, then against Turnstile: passing on
//! Redis proves the script expects what Redis does (and not what someone remembered), so a
//! failure on Turnstile is Turnstile's. Both runs must pass the same number of checks.
//!
//! CI installs the libraries (`.ci/run`: pip for the Python ones, `npm ci` in `tests/libs/` for
//! ioredis) and sets `TURNSTILE_REQUIRE_PEERS`, so there a missing library fails the test instead
//! of skipping it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::redis_ref::RedisRef;
use common::{TestServer, peers_required, run_bounded};

/// How long one script may run before it is killed (it takes a few seconds against Redis; the
/// margin is for a loaded machine).
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// Where the scripts (and ioredis's `node_modules`) are.
fn libs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("libs")
}

/// Whether `program args` runs and succeeds: the probe for an installed library. A missing one
/// skips the test, or fails it under `TURNSTILE_REQUIRE_PEERS` with `install`'s advice.
fn installed(program: &str, args: &[&str], install: &str) -> bool {
    let ok = Command::new(program)
        .args(args)
        .current_dir(libs_dir())
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(ok || !peers_required(), "`{program} {}` failed: {install}", args.join(" "));
    if !ok {
        eprintln!("`{program} {}` failed: skipped ({install})", args.join(" "));
    }
    ok
}

fn python_has(modules: &str) -> bool {
    installed("python3", &["-c", &format!("import {modules}")], "run .ci/run's pip install")
}

fn node_has_ioredis() -> bool {
    installed("node", &["-e", "require.resolve('ioredis')"], "run `npm ci` in crates/cli/tests/libs")
}

/// One script's run against one server: what it printed, once it exited well.
struct Run {
    output: String,
}

impl Run {
    /// The number in the script's last line, `passed: N checks`.
    fn checks(&self) -> usize {
        self.output
            .lines()
            .find_map(|line| line.strip_prefix("passed: ")?.strip_suffix(" checks")?.parse().ok())
            .unwrap_or_else(|| panic!("no `passed: N checks` line in:\n{}", self.output))
    }

    /// Asserts that the script saw `fact` hold (`ok: FACT...`).
    fn saw(&self, fact: &str) -> &Run {
        let line = format!("ok: {fact}");
        assert!(self.output.lines().any(|l| l.starts_with(&line)), "no {line:?} in:\n{}", self.output);
        self
    }
}

/// Runs the script `program script PORT extra...` (from `tests/libs/`) against `port`, and
/// asserts that it exited well within [`SCRIPT_LIMIT`].
fn run_script(server: &str, program: &str, script: &str, port: u16, extra: &[&Path]) -> Run {
    let mut command = Command::new(program);
    command.current_dir(libs_dir()).arg(script).arg(port.to_string()).args(extra);
    // No __pycache__ left in the source tree.
    command.env("PYTHONDONTWRITEBYTECODE", "1");
    let (status, output) = run_bounded(command, SCRIPT_LIMIT);
    let status = status.unwrap_or_else(|| {
        panic!("{script} against {server} did not finish within {SCRIPT_LIMIT:?}; it printed:\n{output}")
    });
    assert!(status.success(), "{script} against {server} failed ({status}); it printed:\n{output}");
    Run { output }
}

/// Runs the script against a real `redis-server` (when there is one: required in CI), then
/// against Turnstile; both must pass, with the same number of checks. Returns Turnstile's run.
fn on_redis_then_turnstile(program: &str, script: &str, extra: &[&Path]) -> Run {
    let reference =
        RedisRef::start().map(|redis| run_script("redis-server", program, script, redis.port(), extra));
    let server = TestServer::start();
    let run = run_script("Turnstile", program, script, server.port(), extra);
    if let Some(reference) = reference {
        assert_eq!(
            run.checks(),
            reference.checks(),
            "{script}: Turnstile (left) and redis-server (right) passed different numbers of checks"
        );
    }
    run
}

#[test]
fn redis_py_lock_works_unchanged() {
    if !python_has("redis") {
        return;
    }
    let run = on_redis_then_turnstile("python3", "redis_py_lock.py", &[]);
    run.saw("a blocking acquire of a held lock gives up after its blocking_timeout")
        .saw("extend added to the TTL")
        .saw("reacquire set the TTL back to the timeout")
        .saw("the release script refuses another token")
        .saw("releasing an expired lock is refused")
        .saw("no two threads were inside the lock at once")
        .saw("threads: counter 60 = 4 x 15")
        .saw("processes: counter 60 = 4 x 15");
}

#[test]
fn python_redis_lock_works_unchanged() {
    if !python_has("redis, redis_lock") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let run = on_redis_then_turnstile("python3", "python_redis_lock.py", &[dir.path()]);
    run.saw("no process entered while the other was inside")
        .saw("counter 40 = 2 x 20")
        .saw("3 s later the renewed lock is still its owner's")
        .saw("the lock without renewal expired")
        .saw("release freed the lock")
        .saw("reset by another Lock woke the waiter, which took the lock");
}

#[test]
fn redis_py_transactions_work_unchanged() {
    if !python_has("redis") {
        return;
    }
    let run = on_redis_then_turnstile("python3", "redis_py_transactions.py", &[]);
    run.saw("a transaction returns each command's reply: [True, 1, 42, b'1']")
        .saw("both keys ended at 4 x 25")
        .saw("counter 200 = 8 x 25 after WATCH retry loops")
        .saw("EXEC after another client changed a watched key fails (WatchError")
        .saw("EXEC then fails as ExecAbortError")
        .saw("none of the aborted transaction's commands were applied")
        .saw("the command after the failing one was applied");
}

#[test]
fn ioredis_scripts_and_multi_work_unchanged() {
    if !node_has_ioredis() {
        return;
    }
    let run = on_redis_then_turnstile("node", "ioredis_scripts.js", &[]);
    run.saw("releaseLock with another token returns 0")
        .saw("extendLock with the owner's token returns 1")
        .saw("it went out as EVALSHA, was answered NOSCRIPT and was sent again as EVAL")
        .saw("multi().exec() results: [[null,\"OK\"],[null,1],[null,10],[null,\"v\"]]")
        .saw("scripts inside multi(): [[null,1],[null,1]]")
        .saw("with EXECABORT");
}
