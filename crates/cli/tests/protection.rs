//! Protected mode and per-client limits with the real binary.
//!
//! Protected mode is about where a client connects from, so these tests make a real other host:
//! a network namespace joined to the host's by a veth pair with addresses of their own (root is
//! needed, as in CI). The server listens on every address; a client thread that has entered the
//! namespace connects to the host's end of the pair, which the server sees as a non-loopback
//! peer, while the test's own clients keep connecting over loopback.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::scrape::Scrape;
use common::{http_request, until};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ErrorKind};

/// Bound on any single wait.
const WAIT: Duration = Duration::from_secs(10);

const DENIED_START: &str = "-DENIED Turnstile is running in protected mode because protected mode is enabled and \
                            no password is set for the default user.";

// ---------------------------------------------------------------------------------------------
// Another host: a network namespace
// ---------------------------------------------------------------------------------------------

/// A network namespace and the veth pair that joins it to the host's; both go on drop.
struct OtherHost {
    name: String,
    host_if: String,
    /// The host's end of the pair: what the other host connects to.
    host_ip: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("protected-mode tests need the `ip` command (iproute2) and root, as CI has: {e}")
    });
    assert!(
        out.status.success(),
        "`ip {}` failed (these tests need root and network namespaces, as CI has): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OtherHost {
    fn create() -> OtherHost {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("ts-prot-{pid}-{n}");
        let host_if = format!("tsh{}x{n}", pid % 100_000);
        let peer_if = format!("tsp{}x{n}", pid % 100_000);
        // A /30 of its own per process and namespace.
        let net = format!("10.{}.{}.{}", 100 + n % 100, (pid >> 6) % 256, (pid % 64) * 4);
        let base: Vec<u8> = net.split('.').map(|p| p.parse().unwrap()).collect();
        let host_ip = format!("{}.{}.{}.{}", base[0], base[1], base[2], base[3] + 1);
        let peer_ip = format!("{}.{}.{}.{}", base[0], base[1], base[2], base[3] + 2);
        ip(&["netns", "add", &name]);
        let host = OtherHost { name, host_if, host_ip };
        ip(&["link", "add", &host.host_if, "type", "veth", "peer", "name", &peer_if]);
        ip(&["link", "set", &peer_if, "netns", &host.name]);
        ip(&["addr", "add", &format!("{}/30", host.host_ip), "dev", &host.host_if]);
        ip(&["link", "set", &host.host_if, "up"]);
        ip(&["-n", &host.name, "addr", "add", &format!("{peer_ip}/30"), "dev", &peer_if]);
        ip(&["-n", &host.name, "link", "set", &peer_if, "up"]);
        ip(&["-n", &host.name, "link", "set", "lo", "up"]);
        host
    }

    /// Runs `f` on a thread that has entered the namespace: every socket it opens is the other
    /// host's.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let ns = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
                    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                    f()
                })
                .join()
                .expect("client thread")
        })
    }

    /// `host:port` of the server as the other host reaches it.
    fn addr(&self, port: u16) -> String {
        format!("{}:{port}", self.host_ip)
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it the host's end.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).output();
    }
}

// ---------------------------------------------------------------------------------------------
// A server on every address
// ---------------------------------------------------------------------------------------------

/// `turnstile server` listening on 0.0.0.0, its log lines (stderr) on a channel.
struct Exposed {
    child: Child,
    resp: u16,
    http: u16,
    amqp: u16,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Exposed {
    /// Starts with `config` as its config file (may be empty) and extra flags.
    fn start(config: &str, args: &[&str]) -> Exposed {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("turnstile.toml");
        std::fs::write(&path, config).expect("config written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args([
                "server",
                "--resp-addr",
                "0.0.0.0:0",
                "--http-addr",
                "0.0.0.0:0",
                "--amqp-addr",
                "0.0.0.0:0",
            ])
            .args(["--log", "info", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("turnstile starts");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let _ = tx.send(line);
            }
        });
        let (ready_tx, ready) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = ready_tx.send(line);
        });
        let line = ready.recv_timeout(Duration::from_secs(30)).expect("ready line");
        let port = |name: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in the ready line {line:?}"))
        };
        let (resp, http, amqp) = (port("resp="), port("http="), port("amqp="));
        Exposed { child, resp, http, amqp, log, _dir: dir }
    }

    fn loopback(&self, port: u16) -> String {
        format!("127.0.0.1:{port}")
    }

    /// Waits for a log line containing `text`.
    fn logged(&self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(WAIT) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line with {text:?}"),
            }
        }
    }

    fn counter(&self, name: &str) -> f64 {
        let (_, scrape) = Scrape::get(&self.loopback(self.http));
        scrape.value(name, &[])
    }
}

impl Drop for Exposed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` and reads what comes until the server closes the connection.
fn send_and_read_to_close(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    stream.write_all(request).expect("write");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `request` and reads one line of answer (the connection stays open).
fn send_and_read_line(addr: &str, request: &[u8]) -> String {
    send_and_read_lines(addr, request, 1).remove(0)
}

/// Sends `request` and reads `n` lines of answer.
fn send_and_read_lines(addr: &str, request: &[u8], n: usize) -> Vec<String> {
    let stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    (&stream).write_all(request).expect("write");
    let mut reader = BufReader::new(&stream);
    (0..n)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a reply line");
            line
        })
        .collect()
}

/// Logs in over AMQP and declares a queue; the refusal's code and text if any.
fn amqp_declare(url: &str, queue: &str) -> Result<(), (u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let connect = Connection::connect(url, ConnectionProperties::default());
        let conn = match tokio::time::timeout(WAIT, connect).await.expect("AMQP connect timed out") {
            Ok(conn) => conn,
            Err(e) => match e.kind() {
                ErrorKind::ProtocolError(e) => return Err((e.get_id(), e.get_message().to_string())),
                other => panic!("AMQP connect failed without a close: {other:?}"),
            },
        };
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(queue.into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("declare");
        let _ = conn.close(200, "bye".into()).await;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Protected mode
// ---------------------------------------------------------------------------------------------

#[test]
fn protected_mode_refuses_other_hosts_on_every_protocol_and_serves_loopback() {
    let other = OtherHost::create();
    let server = Exposed::start("", &[]);
    let warning = server.logged("listening beyond loopback without authentication");
    assert!(warning.contains("protected mode refuses connections from other hosts"), "{warning}");

    let (resp, http, amqp) = (other.addr(server.resp), other.addr(server.http), other.addr(server.amqp));
    let (resp_answer, (status, body), amqp_answer) = other.run(|| {
        let resp_answer = send_and_read_to_close(&resp, b"PING\r\n");
        let (status, _, body) = http_request(&http, "GET", "/api/locks", None, "application/json");
        let amqp_answer = amqp_declare(&format!("amqp://guest:guest@{amqp}/%2f"), "q");
        (resp_answer, (status, body), amqp_answer)
    });
    assert!(resp_answer.starts_with(DENIED_START), "{resp_answer:?}");
    assert!(resp_answer.contains("'--protected-mode no'") && resp_answer.ends_with("outside.\r\n"));
    assert_eq!(status, 403, "{body}");
    assert!(
        body.starts_with(r#"{"code":"DENIED","message":"Turnstile is running in protected mode"#),
        "{body}"
    );
    let (code, text) = amqp_answer.expect_err("AMQP refused");
    assert_eq!(code, 403);
    assert!(text.starts_with("ACCESS_REFUSED - Turnstile is running in protected mode"), "{text}");

    // This host is served as ever.
    assert_eq!(send_and_read_line(&server.loopback(server.resp), b"PING\r\n"), "+PONG\r\n");
    assert_eq!(
        amqp_declare(&format!("amqp://guest:guest@{}/%2f", server.loopback(server.amqp)), "q"),
        Ok(())
    );
    assert_eq!(server.counter("turnstile_protected_mode_refused_total"), 3.0);
}

#[test]
fn with_a_password_other_hosts_must_authenticate_instead() {
    let other = OtherHost::create();
    let server = Exposed::start("requirepass = \"s3cret\"\n", &[]);
    let (resp, amqp) = (other.addr(server.resp), other.addr(server.amqp));
    let (get, authed, login, bad_login) = other.run(|| {
        let get = send_and_read_line(&resp, b"GET k\r\n");
        let authed = send_and_read_lines(&resp, b"AUTH s3cret\r\nPING\r\n", 2);
        let login = amqp_declare(&format!("amqp://default:s3cret@{amqp}/%2f"), "q");
        let bad_login = amqp_declare(&format!("amqp://default:wrong@{amqp}/%2f"), "q");
        (get, authed, login, bad_login)
    });
    assert_eq!(get, "-NOAUTH Authentication required.\r\n");
    assert_eq!(authed, ["+OK\r\n", "+PONG\r\n"], "the other host authenticates and is served");
    assert_eq!(login, Ok(()), "the default user logs in with its password from another host");
    assert_eq!(bad_login.expect_err("a wrong password is refused").0, 403);
    let mut con = redis::Client::open(format!("redis://:s3cret@{}/", server.loopback(server.resp)))
        .expect("url")
        .get_connection_with_timeout(WAIT)
        .expect("connects with the password");
    assert_eq!(common::info_u64(&mut con, "stats", "protected_mode_refused"), 0);
}

#[test]
fn protected_mode_off_serves_every_host_and_says_so_at_start() {
    let other = OtherHost::create();
    let server = Exposed::start("", &["--protected-mode", "no"]);
    let warning = server.logged("listening beyond loopback without authentication");
    assert!(warning.contains("every host that can reach this address has full access"), "{warning}");
    let resp = other.addr(server.resp);
    let pong = other.run(|| send_and_read_line(&resp, b"PING\r\n"));
    assert_eq!(pong, "+PONG\r\n");
}

#[test]
fn amqp_users_of_the_operators_own_let_other_hosts_log_in_over_amqp_only() {
    let other = OtherHost::create();
    let server = Exposed::start("[amqp-users]\nalice = \"alicepw\"\n", &[]);
    let (resp, amqp) = (other.addr(server.resp), other.addr(server.amqp));
    let (login, resp_answer) = other.run(|| {
        (
            amqp_declare(&format!("amqp://alice:alicepw@{amqp}/%2f"), "q"),
            send_and_read_to_close(&resp, b"PING\r\n"),
        )
    });
    assert_eq!(login, Ok(()), "an AMQP login with the operator's password");
    assert!(resp_answer.starts_with(DENIED_START), "RESP is still protected: {resp_answer:?}");
}

// ---------------------------------------------------------------------------------------------
// Per-client limits
// ---------------------------------------------------------------------------------------------

#[test]
fn a_client_past_the_query_buffer_limit_is_closed_and_others_keep_working() {
    let server = common::TestServer::start_with(&["--client-query-buffer-limit", "1048576"]);
    let mut other = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut other).expect("SET");

    // A 10 MB value (within max-payload) sent slowly past the 1 MiB limit: closed before it ends.
    let mut flooder = server.raw();
    flooder.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$10000000\r\n").expect("write");
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..(2 * 1024 * 1024 / chunk.len()) {
        if flooder.write_all(&chunk).is_err() {
            break; // closed already
        }
    }
    let mut rest = Vec::new();
    match flooder.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "closed without a reply: {:?}", String::from_utf8_lossy(&rest)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the flooding client was not closed: {e}"),
    }

    let v: String = redis::cmd("GET").arg("k").query(&mut other).expect("GET");
    assert_eq!(v, "v", "the other client is served");
    until("the closing is counted", WAIT, || {
        let (_, scrape) = Scrape::get(&server.http_addr);
        scrape.value("turnstile_query_buffer_closed_total", &[]) == 1.0
    });
    let exists: bool = redis::cmd("EXISTS").arg("x").query(&mut other).expect("EXISTS");
    assert!(!exists, "nothing of the cut request was applied");
}

#[test]
fn a_client_that_does_not_read_its_replies_blocks_only_itself() {
    let server = common::TestServer::start();
    let mut other = server.client();
    let big = "v".repeat(1024 * 1024);
    let _: () = redis::cmd("SET").arg("big").arg(&big).query(&mut other).expect("SET");

    // 200 MiB of replies asked for and never read: the server's writes to it block, in its own
    // connection's task.
    let mut slow = server.raw();
    let request = b"GET big\r\n".repeat(200);
    slow.write_all(&request).expect("pipeline sent");
    until("the slow client's replies have stopped being taken", WAIT, || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut other).expect("CLIENT LIST");
        list.lines().any(|l| l.contains("cmd=get"))
    });
    for i in 0..100 {
        let _: () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut other).expect("SET");
        let pong: String = redis::cmd("PING").query(&mut other).expect("PING");
        assert_eq!(pong, "PONG");
    }
    let mut third = server.client();
    let v: i64 = redis::cmd("GET").arg("k99").query(&mut third).expect("GET");
    assert_eq!(v, 99, "a new client is served too");
    // The slow client gets its replies, in order, once it reads.
    let mut first = vec![0u8; 16];
    slow.read_exact(&mut first).expect("reply");
    assert!(first.starts_with(b"$1048576\r\nvvvvvv"), "{:?}", String::from_utf8_lossy(&first));
}

#[test]
fn a_session_past_max_holds_is_refused_another_until_it_releases_one() {
    let server = common::TestServer::start_with(&["--max-holds-per-session", "2"]);
    let mut a = server.client();
    let acquire = |con: &mut redis::Connection, name: &str| -> redis::RedisResult<Option<(u64, u64)>> {
        redis::cmd("LOCK.ACQUIRE").arg(name).arg(60_000).query(con)
    };
    let (first, _) = acquire(&mut a, "a").expect("a").expect("granted");
    acquire(&mut a, "b").expect("b").expect("granted");
    let err = acquire(&mut a, "c").expect_err("a third hold is refused");
    assert_eq!(err.code(), Some("ERR"));
    assert_eq!(
        err.detail(),
        Some("max-holds-per-session reached (2): end one of this session's before starting another")
    );
    // Another session is not limited by this one's holds.
    let mut b = server.client();
    let (c_token, _) = acquire(&mut b, "c").expect("c").expect("granted to another session");
    let _: i64 = redis::cmd("LOCK.RELEASE").arg("c").arg(c_token).query(&mut b).expect("release c");
    // Releasing one makes room.
    let _: i64 = redis::cmd("LOCK.RELEASE").arg("a").arg(first).query(&mut a).expect("release a");
    acquire(&mut a, "c").expect("c").expect("granted once a hold ended");
    let (_, scrape) = Scrape::get(&server.http_addr);
    assert_eq!(scrape.value("turnstile_session_limits_refused_total", &[]), 1.0);
}
