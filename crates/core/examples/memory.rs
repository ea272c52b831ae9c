//! Memory per stored item: 100,000 queued 1 KiB messages, 100,000 held locks, 100,000 KV keys.
//!
//! Run with `cargo run --release -p turnstile-core --example memory`.
//!
//! How it measures: each scenario runs in a fresh child process (this same binary, given the
//! scenario's name), which reads its anonymous resident memory (`RssAnon` in `/proc/self/status`,
//! i.e. heap and stacks, not the mapped binary) before and after inserting the items. A fresh
//! process per scenario means no scenario reuses memory another one freed. The figures are what
//! the items really cost the process: payloads, the state's indexes, and the allocator's own
//! per-chunk overhead and rounding (glibc: 8 bytes of header per chunk, 16-byte granularity).
//!
//! Why not a counting `#[global_allocator]`: implementing `GlobalAlloc` needs `unsafe impl`, and
//! the workspace sets `unsafe_code = "forbid"` (`[workspace.lints.rust]`). A forbid cannot be
//! lifted by `#![allow(unsafe_code)]` in the file (rustc error E0453, "allow(unsafe_code)
//! incompatible with previous forbid"), so an exact live-byte count would need the workspace lint
//! relaxed to `deny`. The RSS delta over 100,000 items is accurate to well under 1 byte per item
//! (RSS is read with 1 KiB granularity).

use std::process::ExitCode;

use bytes::Bytes;
use turnstile_core::{Acquire, Command, Mode, Push, Reply, SessionId, SetKey, State, Timestamp};

const N: u64 = 100_000;
const START: Timestamp = 1_700_000_000_000;
const PAYLOAD: usize = 1024;
const VALUE: usize = 16;

/// Anonymous resident memory of this process, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable");
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/self/status");
    let kib: u64 =
        line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("RssAnon is a number of kB");
    kib * 1024
}

/// A state, its log index and clock (1 ms per apply, never backwards).
struct Driver {
    state: State,
    index: u64,
}

impl Driver {
    fn new() -> Driver {
        Driver { state: State::new(), index: 0 }
    }

    fn apply(&mut self, cmd: Command) -> Reply {
        self.index += 1;
        self.state.apply(self.index, START + self.index, cmd).0
    }

    fn session(&mut self) -> SessionId {
        match self.apply(Command::OpenSession {
            host: turnstile_core::HostId(1),
            secret: 1,
            timeout: turnstile_core::MAX_DURATION,
        }) {
            Reply::Session(s) => s,
            other => panic!("open session replied {other:?}"),
        }
    }
}

/// What one scenario measured.
struct Measured {
    what: &'static str,
    before: u64,
    after: u64,
    /// Bytes of data the items carry (payloads, names, keys and values).
    data: u64,
    /// What `data` is.
    data_note: &'static str,
}

fn queue() -> Measured {
    let mut d = Driver::new();
    // The queue exists (created by a first push) before measuring.
    d.apply(Command::Push(Push::new("q", Bytes::from(vec![1u8; PAYLOAD]))));
    let before = rss_anon();
    for i in 0..N {
        // A fresh allocation per message, as decoding each log entry would make.
        let payload = Bytes::from(vec![(i % 251) as u8 + 1; PAYLOAD]);
        match d.apply(Command::Push(Push::new("q", payload))) {
            Reply::Pushed { duplicate: false, .. } => {}
            other => panic!("push replied {other:?}"),
        }
    }
    let after = rss_anon();
    assert_eq!(d.state.payload_bytes(), (N + 1) * PAYLOAD as u64);
    check(&d.state);
    Measured {
        what: "queued 1 KiB message",
        before,
        after,
        data: N * PAYLOAD as u64,
        data_note: "1024-byte payload",
    }
}

fn locks() -> Measured {
    let mut d = Driver::new();
    let s = d.session();
    let before = rss_anon();
    let mut names = 0;
    for i in 0..N {
        let name = format!("lock:{i:06}");
        names += name.len() as u64;
        let cmd = Command::Acquire(Acquire {
            name,
            mode: Mode::Exclusive,
            ttl: 3_600_000,
            wait: 0,
            owner: None,
            session: Some(s),
            keep: false,
        });
        match d.apply(cmd) {
            Reply::Granted { .. } => {}
            other => panic!("acquire replied {other:?}"),
        }
    }
    let after = rss_anon();
    check(&d.state);
    Measured { what: "held lock (1 session)", before, after, data: names, data_note: "11-byte name" }
}

fn keys() -> Measured {
    let mut d = Driver::new();
    let before = rss_anon();
    let mut data = 0;
    for i in 0..N {
        let key = format!("key:{i:06}");
        let value = Bytes::from(vec![(i % 251) as u8 + 1; VALUE]);
        data += (key.len() + value.len()) as u64;
        match d.apply(Command::Set(SetKey::new(key, value))) {
            Reply::Ok => {}
            other => panic!("set replied {other:?}"),
        }
    }
    let after = rss_anon();
    assert_eq!(d.state.payload_bytes(), data);
    check(&d.state);
    Measured { what: "KV key, 16-byte value", before, after, data, data_note: "10-byte key + 16-byte value" }
}

fn check(state: &State) {
    if let Err(e) = state.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// A scenario: its name on the command line, and the function that runs it.
type Scenario = (&'static str, fn() -> Measured);

const SCENARIOS: [Scenario; 3] = [("queue", queue), ("locks", locks), ("keys", keys)];

fn main() -> ExitCode {
    if let Some(name) = std::env::args().nth(1) {
        // A child: run one scenario and print its row.
        let Some((_, run)) = SCENARIOS.iter().find(|(n, _)| *n == name) else {
            eprintln!("unknown scenario {name}; expected one of queue, locks, keys");
            return ExitCode::FAILURE;
        };
        let m = run();
        let delta = m.after.saturating_sub(m.before);
        let per_item = delta as f64 / N as f64;
        let data_per_item = m.data as f64 / N as f64;
        println!(
            "{:<24} {:>7} {:>12} {:>12} {:>12} {:>10.1} {:>8.1} {:>10.1}   ({})",
            m.what,
            N,
            m.before,
            m.after,
            delta,
            per_item,
            data_per_item,
            per_item - data_per_item,
            m.data_note,
        );
        return ExitCode::SUCCESS;
    }
    let exe = std::env::current_exe().expect("own path");
    println!("Anonymous RSS (heap) before/after inserting {N} items, each scenario in a fresh process.");
    println!(
        "{:<24} {:>7} {:>12} {:>12} {:>12} {:>10} {:>8} {:>10}",
        "item", "count", "before B", "after B", "delta B", "B/item", "data/it", "overhead"
    );
    for (name, _) in SCENARIOS {
        let status = std::process::Command::new(&exe).arg(name).status().expect("run a scenario");
        if !status.success() {
            eprintln!("scenario {name} failed: {status}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
