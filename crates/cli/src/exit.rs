//! Exit statuses of the `turnstile` command (also listed in `turnstile --help`).

use std::process::ExitCode;
use std::time::Duration;

use turnstile_client::Error;

/// Success.
pub const OK: u8 = 0;
/// An error: cannot connect, refused by the server, bad input.
pub const ERROR: u8 = 1;
/// Nothing came within the wait: the lock stayed taken, the semaphore full, the queue empty.
pub const TIMEOUT: u8 = 3;
/// The hold was lost while the command ran (`lock run`), or is gone (`lock renew`).
pub const LOST: u8 = 4;
/// Waiting would have closed a cycle in the wait-for graph.
pub const DEADLOCK: u8 = 5;
/// `torture`: a checker found the history invalid.
pub const VIOLATION: u8 = 6;

/// The `--help` text listing the statuses above.
pub const HELP: &str = "\
Exit status:
  0    success (`lock run`: CMD's own status; 128+N when CMD was killed by signal N)
  1    error: cannot connect, refused by the server, bad input
  2    bad command line
  3    nothing within the wait: lock taken, semaphore full, queue empty
  4    the hold was lost (`lock run` stopped CMD; `lock renew` found it gone)
  5    refused: waiting would deadlock
  6    `torture`: a checker found a violation

The server is found through --server HOST:PORT (or turnstile://HOST:PORT[,HOST:PORT...]),
else TURNSTILE_SERVER, else 127.0.0.1:7379.";

/// A lock or semaphore that stayed taken: at once with `--wait 0`, or through the whole wait.
/// Exit status [`TIMEOUT`].
#[derive(Debug)]
pub struct Taken {
    /// `the lock NAME` or `the semaphore NAME`.
    pub what: String,
    pub wait: Duration,
    /// `owner (token N), ...`; empty when not known (it was let go of just after).
    pub holders: String,
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Taken { what, wait, holders } = self;
        let by = if holders.is_empty() { String::new() } else { format!(" by {holders}") };
        if wait.is_zero() {
            write!(f, "{what} is held{by}; not waiting (--wait 0)")
        } else {
            write!(f, "{what} was still held{by} after waiting {}", humantime::format_duration(*wait))
        }
    }
}

impl std::error::Error for Taken {}

/// Reports an error on stderr and picks its status.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("turnstile: {}", message(error));
    if error.downcast_ref::<Taken>().is_some() {
        return ExitCode::from(TIMEOUT);
    }
    ExitCode::from(match error.downcast_ref::<Error>() {
        Some(Error::Timeout(_)) => TIMEOUT,
        Some(Error::Lost(_)) => LOST,
        Some(Error::Deadlock(_)) => DEADLOCK,
        _ => ERROR,
    })
}

/// The error and each of its causes, once, joined by `: `. Many errors put their cause in their
/// own text as well as returning it as their source (`cannot read {path}: {source}`); printing
/// the whole chain would then say it twice, so a cause whose text is already there is skipped.
pub fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot create data dir /d: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("raft node")]
    struct Wraps(#[source] std::io::Error);

    fn exists() -> std::io::Error {
        std::io::Error::from(std::io::ErrorKind::AlreadyExists)
    }

    #[test]
    fn a_taken_lock_names_its_holders_and_the_wait() {
        let held = |wait, holders: &str| {
            Taken { what: "the lock report".into(), wait, holders: holders.into() }.to_string()
        };
        assert_eq!(
            held(Duration::ZERO, "cron (token 5)"),
            "the lock report is held by cron (token 5); not waiting (--wait 0)"
        );
        assert_eq!(held(Duration::ZERO, ""), "the lock report is held; not waiting (--wait 0)");
        assert_eq!(
            held(Duration::from_secs(10), "a (token 1), b (token 2)"),
            "the lock report was still held by a (token 1), b (token 2) after waiting 10s"
        );
        let status =
            report(&anyhow::Error::new(Taken { what: "x".into(), wait: Duration::ZERO, holders: "".into() }));
        assert_eq!(status, ExitCode::from(TIMEOUT));
    }

    #[test]
    fn each_cause_is_said_once() {
        let embeds = anyhow::Error::new(Embeds { source: exists() });
        assert_eq!(message(&embeds), "cannot create data dir /d: entity already exists");
        let wraps = anyhow::Error::new(Wraps(exists()));
        assert_eq!(message(&wraps), "raft node: entity already exists");
        let context = anyhow::Error::new(Wraps(exists())).context("starting");
        assert_eq!(message(&context), "starting: raft node: entity already exists");
    }
}
