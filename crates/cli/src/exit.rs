//! Exit statuses of the `turnstile` command (also listed in `turnstile --help`).

use std::process::ExitCode;

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

/// The `--help` text listing the statuses above.
pub const HELP: &str = "\
Exit status:
  0    success (`lock run`: CMD's own status; 128+N when CMD was killed by signal N)
  1    error: cannot connect, refused by the server, bad input
  2    bad command line
  3    nothing within the wait: lock taken, semaphore full, queue empty
  4    the hold was lost (`lock run` stopped CMD; `lock renew` found it gone)
  5    refused: waiting would deadlock

The server is found through --server HOST:PORT (or turnstile://HOST:PORT[,HOST:PORT...]),
else TURNSTILE_SERVER, else 127.0.0.1:7379.";

/// Reports an error on stderr and picks its status.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("turnstile: {error:#}");
    ExitCode::from(match error.downcast_ref::<Error>() {
        Some(Error::Timeout(_)) => TIMEOUT,
        Some(Error::Lost(_)) => LOST,
        Some(Error::Deadlock(_)) => DEADLOCK,
        _ => ERROR,
    })
}
