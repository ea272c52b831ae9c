//! Starts the real `turnstile` binary on a free port with a temporary data dir, and stops it
//! (SIGKILL) when dropped.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestServer {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// Starts the server with extra flags and waits until it is ready.
    pub fn start_with(args: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["server", "--resp-addr", "127.0.0.1:0", "--log", "warn", "--data-dir"])
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("turnstile binary starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("read ready line");
        let addr = line
            .trim()
            .split("resp=")
            .nth(1)
            .unwrap_or_else(|| panic!("server did not become ready; it printed {line:?}"))
            .to_owned();
        TestServer { child, addr, _dir: dir }
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

    /// Waits for the process to exit by itself (after a signal) and returns its status code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        self.child.wait().expect("wait").code()
    }
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
