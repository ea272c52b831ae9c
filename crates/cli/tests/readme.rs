//! The README's examples, run as a new user runs them: every `$ ` line of its ```console blocks in
//! a shell of its own (so each `redis-cli` line is its own connection), in the order the README
//! gives them, against one real server; its output must be the README's. The ```python block
//! (pika over AMQP) runs where it stands too.
//!
//! The documented ports (RESP 7379, HTTP 7380, AMQP 6672) are rewritten to the test server's,
//! `turnstile` is this build's binary, and `redis-cli` is told `--no-raw` so that it prints what
//! it prints on a terminal. In the expected output, `  # ...` at the end of a line is a comment.
//! A tool this needs (`redis-cli`, `curl`, python3 with pika) that is missing ends the run there
//! (everything after it depends on what it would have done), unless CI requires the peers.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, peers_required};

const README: &str = include_str!("../../../README.md");

/// One thing to run, and what it must print.
#[derive(Debug)]
enum Step {
    /// A `$ ` line of a console block and the lines after it.
    Shell { line: String, expected: Vec<String> },
    /// A python block, and what its `print(...)  # X` comments say it prints.
    Python { code: String, expected: Vec<String> },
}

/// The console and python blocks' steps, in README order.
fn steps(readme: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let fence = line.trim_end();
        if fence != "```console" && fence != "```python" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim_end() != "```").collect();
        if fence == "```python" {
            let expected =
                block.iter().filter(|l| l.starts_with("print(")).filter_map(|l| comment(l)).collect();
            steps.push(Step::Python { code: block.join("\n"), expected });
            continue;
        }
        for line in block {
            match (line.strip_prefix("$ "), steps.last_mut()) {
                (Some(command), _) => steps.push(Step::Shell { line: command.to_owned(), expected: vec![] }),
                (None, Some(Step::Shell { expected, .. })) => expected.push(without_comment(line)),
                (None, _) => panic!("README: output before any `$ ` line: {line:?}"),
            }
        }
    }
    steps
}

/// `1) (integer) 1          # fencing token` → `1) (integer) 1`.
fn without_comment(line: &str) -> String {
    match line.find("  # ") {
        Some(at) => line[..at].trim_end().to_owned(),
        None => line.trim_end().to_owned(),
    }
}

/// The text of a `  # ...` comment at the end of a line.
fn comment(line: &str) -> Option<String> {
    line.find("  # ").map(|at| line[at + 4..].trim().to_owned())
}

/// Whether `program args` runs; a missing tool is a failure where CI requires it.
fn available(program: &str, args: &[&str]) -> bool {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || !peers_required(), "`{program} {}` is required in CI but failed", args.join(" "));
    ok
}

/// Runs `command` to its end (bounded), returning its stdout, and stderr for messages.
fn run(mut command: Command) -> (String, String) {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim_end().to_owned()).collect()
}

#[test]
fn the_readme_examples_work_as_written() {
    let steps = steps(README);
    assert!(steps.len() >= 8, "the README's examples were not found: {steps:?}");
    let server = TestServer::start();
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_owned();
    let (resp, http, amqp) = (port(&server.addr), port(&server.http_addr), port(&server.amqp_addr));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_turnstile")).parent().unwrap().display().to_string();
    let path = format!("{bin_dir}:{}", std::env::var("PATH").unwrap_or_default());
    for step in steps {
        let (shown, expected, (stdout, stderr)) = match step {
            Step::Shell { line, expected } => {
                let tool = line.split_whitespace().next().unwrap_or_default().to_owned();
                let ready = match tool.as_str() {
                    "redis-cli" => available("redis-cli", &["--version"]),
                    "curl" => available("curl", &["--version"]),
                    "turnstile" => true,
                    other => panic!("the README runs {other}, which this test does not know how to run"),
                };
                if !ready {
                    eprintln!("{tool} is not installed: the README's examples from `{line}` on are not run");
                    return;
                }
                let command_line = line
                    .replace("redis-cli -p 7379", &format!("redis-cli --no-raw -p {resp}"))
                    .replace("localhost:7380", &format!("127.0.0.1:{http}"));
                let mut command = Command::new("sh");
                command
                    .args(["-c", &command_line])
                    .env("PATH", &path)
                    .env("TURNSTILE_SERVER", &server.addr)
                    .env_remove("TURNSTILE_LOG");
                (line, expected, run(command))
            }
            Step::Python { code, expected } => {
                if !available("python3", &["-c", "import pika"]) {
                    eprintln!(
                        "python3 with pika is not installed: the README's examples from its python on are not run"
                    );
                    return;
                }
                let code = code.replace("6672", &amqp);
                let mut command = Command::new("python3");
                command.args(["-c", &code]);
                ("the python block".to_owned(), expected, run(command))
            }
        };
        assert_eq!(lines(&stdout), expected, "README: `{shown}` printed otherwise (stderr: {stderr})");
    }
}

#[test]
fn steps_are_read_with_their_output_and_without_comments() {
    let readme = "text\n```console\n$ a 1\n1) x   # note\nOK\n$ b\n```\n```sh\n$ not run\n```\n\
                  ```python\nx = 1\nprint(x)  # 1\n```\n";
    let steps = steps(readme);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(
        matches!(&steps[0], Step::Shell { line, expected } if line == "a 1" && expected == &["1) x", "OK"]),
        "{steps:?}"
    );
    assert!(matches!(&steps[1], Step::Shell { line, expected } if line == "b" && expected.is_empty()));
    assert!(
        matches!(&steps[2], Step::Python { code, expected } if code.contains("x = 1") && expected == &["1"])
    );
}
