//! `turnstile torture` end to end, as CI runs it: the real binary starts clusters of itself
//! behind the fault proxy, runs the workload under every fault, and the checkers must find the
//! history valid. Short runs with fixed seeds (the long ones are in docs/verification.md); the
//! runs go one at a time, so that each has the machine's cores to itself.

use std::process::{Command, Output};
use std::sync::Mutex;

/// One torture run at a time: three clusters at once on two cores would stall the nodes for
/// longer than their election timeout.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `turnstile torture` with `args`; its exit status and stdout, stderr.
fn torture(args: &[&str]) -> (Output, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let output = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .arg("torture")
        .args(args)
        .output()
        .expect("turnstile runs");
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// The numbers of the report line starting with `prefix`, in order.
fn numbers(report: &str, prefix: &str) -> Vec<u64> {
    let line = report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {report}"));
    line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect()
}

/// The run passed, every checker found its history valid, and work and faults were counted.
fn assert_valid_run(output: &Output, text: &str) {
    assert!(output.status.success(), "the run failed: {text}");
    for checker in ["locks", "queues", "kv"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(checker))
            .unwrap_or_else(|| panic!("no {checker} verdict: {text}"));
        assert!(line.contains(" valid ("), "{checker}: {line}\n{text}");
        assert!(numbers(text, checker)[0] > 0, "{checker} checked nothing: {text}");
    }
    // operations: N (ok, fail, info)
    let ops = numbers(text, "operations:");
    assert!(ops[0] > 0 && ops[1] > 0, "no operation succeeded: {text}");
    let faults = numbers(text, "faults:");
    assert!(faults[0] > 0, "no fault was injected: {text}");
}

#[test]
fn three_nodes_every_fault_seed_7() {
    let out = tempfile::tempdir().expect("temp dir");
    let dir = out.path().to_str().expect("a UTF-8 path");
    let (output, text) = torture(&["--nodes", "3", "--duration", "45s", "--seed", "7", "--out", dir]);
    assert_valid_run(&output, &text);
    // --out keeps the history, the seed and every node's log, and the history checks again.
    assert_eq!(std::fs::read_to_string(out.path().join("seed")).expect("seed file").trim(), "7");
    assert!(out.path().join("node-1.log").exists(), "{text}");
    let history = out.path().join("history.jsonl");
    let (output, again) = torture(&["--check", history.to_str().expect("a UTF-8 path")]);
    assert!(output.status.success(), "{again}");
    assert_eq!(again.lines().filter(|l| l.contains(": valid (")).count(), 3, "{again}");
}

#[test]
fn three_nodes_every_fault_seed_1009() {
    let (output, text) = torture(&["--nodes", "3", "--duration", "45s", "--seed", "1009"]);
    assert_valid_run(&output, &text);
}

#[test]
fn one_node_twenty_crash_cycles() {
    let (output, text) = torture(&["--nodes", "1", "--cycles", "20", "--duration", "10s", "--seed", "3"]);
    assert_valid_run(&output, &text);
    // faults: N (...); kill -9: K (M mid-snapshot); failovers: F
    let faults = numbers(&text, "faults:");
    assert_eq!(faults[0], 20, "every cycle is a kill: {text}");
    assert!(text.contains("kill -9: 20 "), "{text}");
}

#[test]
fn bad_options_are_refused_clearly() {
    let (output, text) = torture(&["--nodes", "2", "--duration", "1s"]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("--nodes must be 1, 3 or 5"), "{text}");
    let (output, text) = torture(&["--nemesis", "kill,flood"]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("unknown fault \"flood\""), "{text}");
    let (output, text) = torture(&["--check", "/nonexistent/history.jsonl"]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("/nonexistent/history.jsonl"), "{text}");
}
