//! Turnstile's fuzz targets, one function per target, each taking the fuzzer's bytes.
//!
//! ```text
//!  fuzz/fuzz_targets/X.rs (cargo fuzz, nightly) ──┐
//!                                                 ├─► turnstile_fuzz::X(&[u8]) ─► the crate's own decoder
//!  tests/corpus.rs (stable, CI): every seed and  ─┘      and the properties it must keep
//!  regression file, then a seeded random smoke
//! ```
//!
//! A target panics only on a real bug: a decoder that panics, two ways of reading the same bytes
//! that disagree, a round trip that changes what it carries, or a state whose invariants break.
//! Bad input is expected and must come back as an error.
//!
//! | target | what it reads | what it asserts |
//! |---|---|---|
//! | [`resp_request`] | RESP requests, split at a point | same requests however split; re-encoded requests parse back; the command table and the core take them |
//! | [`amqp_frame`] | AMQP frames | same frames however split; decode → encode → decode is stable; content assembly, queue arguments |
//! | [`http_json`] | HTTP API bodies | the handlers' decoding errs or gives a command the core applies |
//! | [`journal_record`] | a journal segment | recovery errs or recovers a state that reopening recovers again |
//! | [`snapshot_restore`] | a snapshot, a backup file | restore errs or gives a consistent state that snapshots to the same bytes |
//! | [`state_apply`] | a generated command sequence | invariants after every step; restore continues identically |

mod amqp;
mod http;
mod journal;
mod resp;
mod snapshot;
mod state;

pub use amqp::amqp_frame;
pub use http::http_json;
pub use journal::journal_record;
pub use resp::resp_request;
pub use snapshot::snapshot_restore;
pub use state::state_apply;

/// A target: the fuzzer's bytes in, a panic out only on a bug.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus replay and for tools that pick one.
pub const TARGETS: &[(&str, Target)] = &[
    ("resp_request", resp_request),
    ("amqp_frame", amqp_frame),
    ("http_json", http_json),
    ("journal_record", journal_record),
    ("snapshot_restore", snapshot_restore),
    ("state_apply", state_apply),
];

/// The first byte as a control byte (split points, options) and the rest as the input.
fn control(data: &[u8]) -> (u8, &[u8]) {
    data.split_first().map_or((0, data), |(&c, rest)| (c, rest))
}

/// A point in `0..=len` chosen by `c`, spread over the whole range.
fn split_point(c: u8, len: usize) -> usize {
    len * usize::from(c) / usize::from(u8::MAX)
}

/// Applies `cmd` to `state` as the next log entry, and checks the state's invariants after it.
fn apply_checked(
    state: &mut turnstile_core::State,
    now: u64,
    cmd: turnstile_core::Command,
) -> turnstile_core::Reply {
    let index = state.applied_index() + 1;
    let shown = format!("{cmd:?}");
    let (reply, _) = state.apply(index, now, cmd);
    if let Err(e) = state.check_invariants() {
        panic!("invariant broken after {shown}: {e}");
    }
    reply
}
