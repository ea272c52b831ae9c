//! Starts the real `turnstile` binary on a free port with a temporary data dir, and stops it
//! (SIGKILL) when dropped.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod redis_ref;
pub mod scrape;

pub struct TestServer {
    child: Child,
    pub addr: String,
    /// The HTTP listener (API, metrics, dashboard).
    pub http_addr: String,
    /// The AMQP 0-9-1 listener.
    pub amqp_addr: String,
    /// The data dir and the extra flags it was started with, for `restart`.
    data_dir: PathBuf,
    args: Vec<String>,
    /// The temporary data dir (deleted on drop), or `None` for a dir the caller owns (`start_in`).
    _dir: Option<tempfile::TempDir>,
}

/// How long a server may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the server with extra flags and waits until it is ready.
    pub fn start_with(args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = TestServer::start_in(dir.path(), args);
        server._dir = Some(dir);
        server
    }

    /// Starts the server with `config` as its config file, plus extra flags. The file lives as
    /// long as the handle returned with the server.
    pub fn start_with_config(config: &str, args: &[&str]) -> (TestServer, tempfile::NamedTempFile) {
        let file = config_file(config);
        let mut all = vec!["--config", file.path().to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        (TestServer::start_with(&all), file)
    }

    /// Starts the server on `dir` (created if needed) with extra flags and waits until it is
    /// ready. The dir is the caller's: it is not deleted when the server is dropped.
    pub fn start_in(dir: &Path, args: &[&str]) -> TestServer {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let Ready { child, addr, http_addr, amqp_addr } = spawn_ready(dir, &args, Stdio::inherit());
        TestServer { child, addr, http_addr, amqp_addr, data_dir: dir.to_path_buf(), args, _dir: None }
    }

    /// Starts the server with extra flags on a temporary dir, its stderr (its logs) piped to the
    /// caller instead of the test's own. Reading it to the end waits for the server to exit.
    pub fn start_with_stderr(args: &[&str]) -> (TestServer, ChildStderr) {
        let dir = tempfile::tempdir().expect("temp dir");
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let Ready { mut child, addr, http_addr, amqp_addr } = spawn_ready(dir.path(), &args, Stdio::piped());
        let stderr = child.stderr.take().expect("stderr piped");
        let data_dir = dir.path().to_path_buf();
        (TestServer { child, addr, http_addr, amqp_addr, data_dir, args, _dir: Some(dir) }, stderr)
    }

    /// The data dir this server runs on.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Crashes the server: SIGKILL, then reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills the server (SIGKILL) if it still runs and starts it again on the same data dir
    /// with the same flags; `addr` changes (a new free port).
    pub fn restart(&mut self) {
        self.kill9();
        let ready = spawn_ready(&self.data_dir, &self.args, Stdio::inherit());
        self.child = ready.child;
        self.addr = ready.addr;
        self.http_addr = ready.http_addr;
        self.amqp_addr = ready.amqp_addr;
    }

    /// Like `restart`, with other extra flags (kept for later restarts).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| (*a).to_owned()).collect();
        self.restart();
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("valid url");
        let con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connects");
        con.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        con
    }

    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A raw socket, for bytes no client library would send.
    pub fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connects");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s
    }

    /// Asks the server to stop, as an operator would (SIGTERM).
    pub fn terminate(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM)
            .expect("SIGTERM");
    }

    /// Waits for the process to exit by itself (after a signal) and returns its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.child.wait().expect("wait").code()
    }
}

/// `turnstile server` on `dir` with free loopback ports for every listener, plus `args`; logging
/// warnings only unless `args` name a `--log` level.
fn server_command(dir: &Path, args: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnstile"));
    command.args([
        "server",
        "--resp-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--amqp-addr",
        "127.0.0.1:0",
    ]);
    if !args.iter().any(|a| a.as_ref() == "--log") {
        command.args(["--log", "warn"]);
    }
    command.arg("--data-dir").arg(dir).args(args);
    command
}

/// A started server and the addresses its ready line gave.
struct Ready {
    child: Child,
    addr: String,
    http_addr: String,
    amqp_addr: String,
}

/// Spawns `turnstile server` on `dir` and waits (bounded) for its ready line.
fn spawn_ready(dir: &Path, args: &[String], stderr: Stdio) -> Ready {
    let mut child = server_command(dir, args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("turnstile binary starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server on {} did not print its ready line within {READY_TIMEOUT:?}", dir.display());
        }
    };
    // `turnstile VERSION ready: resp=ADDR http=ADDR amqp=ADDR`
    let field =
        |name: &str| line.split_whitespace().find_map(|word| word.strip_prefix(name)).map(str::to_owned);
    let (Some(addr), Some(http_addr), Some(amqp_addr)) = (field("resp="), field("http="), field("amqp="))
    else {
        let _ = child.kill();
        let status = child.wait();
        panic!("server did not become ready; it printed {line:?} and exited with {status:?}");
    };
    Ready { child, addr, http_addr, amqp_addr }
}

/// Runs `turnstile server` on `dir` with extra flags, expecting it to stop by itself (a refused
/// start). Returns its exit status and everything it wrote to stdout and stderr; `None` as the
/// status if it was still running after `timeout` (it is killed then).
pub fn run_to_exit(dir: &Path, args: &[&str], timeout: Duration) -> (Option<ExitStatus>, String) {
    let mut command = server_command(dir, args);
    command.env_remove("RUST_BACKTRACE");
    run_bounded(command, timeout)
}

/// Runs `command` to its end, for at most `timeout`: its exit status and everything it wrote to
/// stdout, then to stderr; `None` as the status if it was still running after `timeout`. It runs
/// in a process group of its own, killed whole then: the processes it started would otherwise
/// keep its pipes open, and this function waiting for them.
pub fn run_bounded(mut command: Command, timeout: Duration) -> (Option<ExitStatus>, String) {
    use std::os::unix::process::CommandExt;
    let mut child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("stdout piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr piped")),
    ]
    .into_iter()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        })
    })
    .collect();
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let kill_group = || nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("try_wait") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = kill_group();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    // What it started and left running goes too (none left: the group is gone, and that is fine).
    let _ = kill_group();
    let mut output = String::new();
    for reader in readers {
        output.push_str(&String::from_utf8_lossy(&reader.join().unwrap_or_default()));
    }
    (status, output)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and reads until `expected_len` bytes arrived or the peer closed.
pub fn exchange(stream: &mut TcpStream, send: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(send).expect("write");
    let mut got = vec![0u8; 0];
    let mut chunk = [0u8; 4096];
    while got.len() < expected_len {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&got)),
        }
    }
    got
}

/// Reads until the peer closes the connection, returning everything it sent.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// Whether tools that CI installs must be present (CI sets this), rather than skipped.
pub fn peers_required() -> bool {
    std::env::var_os("TURNSTILE_REQUIRE_PEERS").is_some()
}

/// One HTTP/1.1 request on a connection of its own (`Connection: close`), as bytes on the wire:
/// returns the status, the head and the body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write");
    stream.write_all(body.as_bytes()).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    (status, head.to_owned(), body.to_owned())
}

/// Polls `check` until it holds, for at most `limit`: a test waits for a fact the server shows
/// (a waiter in line, a counter reached), never for a length of time it hopes is enough.
pub fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `INFO section` as a map of its `key:value` lines.
pub fn info(con: &mut redis::Connection, section: &str) -> HashMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// One number of `INFO section`.
pub fn info_u64(con: &mut redis::Connection, section: &str, key: &str) -> u64 {
    let all = info(con, section);
    let value = all.get(key).unwrap_or_else(|| panic!("INFO {section} has no {key}: {all:?}"));
    value.parse().unwrap_or_else(|_| panic!("INFO {section} {key} is not a number: {value:?}"))
}

/// A loopback address with a port that was free a moment ago (bound to port 0, then closed),
/// for a listener the server must be told in advance, such as a cluster's Raft address.
pub fn free_loopback_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").to_string()
}

/// One list of LOCK.INFO's reply: `holders` or `waiters`.
pub fn lock_info_list(con: &mut redis::Connection, lock: &str, field: &str) -> Vec<redis::Value> {
    let reply: redis::Value = redis::cmd("LOCK.INFO").arg(lock).query(con).expect("LOCK.INFO");
    let named = |v: &redis::Value| {
        matches!(v, redis::Value::BulkString(b) if b == field.as_bytes())
            || matches!(v, redis::Value::SimpleString(s) if s == field)
    };
    let list = match &reply {
        redis::Value::Map(kv) => kv.iter().find(|(k, _)| named(k)).map(|(_, v)| v.clone()),
        redis::Value::Array(items) => items.chunks(2).find(|kv| named(&kv[0])).map(|kv| kv[1].clone()),
        _ => None,
    };
    match list {
        Some(redis::Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

/// The fencing tokens `LOCK.INFO` lists among the lock's holders.
pub fn holder_tokens(con: &mut redis::Connection, lock: &str) -> Vec<i64> {
    let holders = lock_info_list(con, lock, "holders");
    // Each holder: [owner, token, expires-in, ...].
    holders
        .iter()
        .filter_map(|h| match h {
            redis::Value::Array(parts) => match parts.get(1) {
                Some(redis::Value::Int(token)) => Some(*token),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// A config file holding `text`, deleted when dropped: keep it as long as the servers that read it.
pub fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("config written");
    file
}
