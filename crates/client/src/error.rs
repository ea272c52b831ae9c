//! What can go wrong talking to Turnstile.

/// An error from the client. Server errors keep the server's code (its RESP error prefix), so
/// callers can tell backpressure (`Full`, `Oom`) from a bug in their request (`Server` with
/// code `ERR`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No address in the list accepted a connection.
    #[error("cannot connect to {addrs}: {source} — is `turnstile server` running?")]
    Connect { addrs: String, source: std::io::Error },
    /// The connection broke or timed out mid-request. A write may or may not have been applied.
    #[error("connection to {addr} failed: {source}")]
    Io { addr: String, source: std::io::Error },
    /// The server sent something that is not RESP, or not the reply this command has.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The address list could not be read.
    #[error("invalid server address {0:?}: expected HOST:PORT or turnstile://HOST:PORT[,HOST:PORT...]")]
    InvalidAddress(String),
    /// Waiting for the lock would close a cycle in the wait-for graph; the text names it.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// The wait ran out before the lock, semaphore or message came.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The hold or delivery is gone (lease ran out, released, acked, or its session closed).
    #[error("lost: {0}")]
    Lost(String),
    /// A `FENCE` did not match a live hold: the write was refused and nothing changed.
    #[error("fenced: {0}")]
    Fenced(String),
    /// The server is past its memory limit and refuses pushes.
    #[error("out of memory: {0}")]
    Oom(String),
    /// The queue is at its `MAXLEN` with `OVERFLOW reject`.
    #[error("queue full: {0}")]
    Full(String),
    /// Any other error reply, with its code (`ERR`, `WRONGTYPE`, ...) and text.
    #[error("{code} {message}")]
    Server { code: String, message: String },
}

impl Error {
    /// Reads an error reply (`-CODE message`) into the matching variant.
    pub(crate) fn from_reply(text: &str) -> Error {
        let (code, message) = text.split_once(' ').unwrap_or((text, ""));
        let message = message.to_owned();
        match code {
            "DEADLOCK" => Error::Deadlock(message),
            "LOST" => Error::Lost(message),
            "FENCED" => Error::Fenced(message),
            "OOM" => Error::Oom(message),
            "FULL" => Error::Full(message),
            _ => Error::Server { code: code.to_owned(), message },
        }
    }

    /// The server's error code for errors the server sent (`DEADLOCK`, `LOST`, `ERR`, ...).
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            Error::Deadlock(_) => "DEADLOCK",
            Error::Lost(_) => "LOST",
            Error::Fenced(_) => "FENCED",
            Error::Oom(_) => "OOM",
            Error::Full(_) => "FULL",
            Error::Server { code, .. } => code,
            _ => return None,
        })
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
