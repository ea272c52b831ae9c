//! A real `redis-server` to check Turnstile's Redis commands against: the same commands sent to
//! both must get the same replies (error texts included), so a test of Turnstile's Redis
//! compatibility proves what Redis itself answers instead of what someone remembered.
//!
//! ```ignore
//! let Some(redis) = RedisRef::start() else { return };  // skipped without redis-server,
//! let server = TestServer::start();                      // unless TURNSTILE_REQUIRE_PEERS
//! same_replies(&mut redis.client(), &mut server.client(), &[&["SETNX", "k", "v"], &["TYPE", "k"]]);
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{peers_required, until};

/// A `redis-server` on a free loopback port with persistence off, killed when dropped.
pub struct RedisRef {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisRef {
    /// `None` when `redis-server` is not installed (a failure instead under
    /// `TURNSTILE_REQUIRE_PEERS`, which CI sets).
    pub fn start() -> Option<RedisRef> {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(!peers_required(), "redis-server is required in CI: {e}");
                return None;
            }
        };
        let redis = RedisRef { child, port, _dir: dir };
        until("redis-server listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(redis)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url()).expect("url").get_connection().expect("connects to redis-server")
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for RedisRef {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reply with its error kept as text, so replies compare whole: `Err("WRONGTYPE Operation
/// against a key holding the wrong kind of value")`.
pub fn reply(con: &mut redis::Connection, args: &[&str]) -> Result<redis::Value, String> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<redis::Value>(con).map_err(|e| error_text(&e))
}

/// The error line as the server sent it (code and message), whatever the client library made of
/// it.
pub fn error_text(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => e.to_string(),
    }
}

/// Sends each command to Redis and to Turnstile, in order, and asserts the same reply from both.
pub fn same_replies(redis: &mut redis::Connection, turnstile: &mut redis::Connection, commands: &[&[&str]]) {
    for args in commands {
        let expected = reply(redis, args);
        let got = reply(turnstile, args);
        assert_eq!(got, expected, "{args:?}: Turnstile (left) and redis-server (right) differ");
    }
}
