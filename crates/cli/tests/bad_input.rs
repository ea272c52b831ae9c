//! Bad input never disturbs other clients or stored data.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{TestServer, exchange, read_to_close};
use redis::{Commands, Value};

/// A client with stored data, to check that it survives whatever another client sends.
fn bystander(server: &TestServer) -> redis::Connection {
    let mut c = server.client();
    let _: () = c.set("keep", "safe").unwrap();
    c
}

fn still_fine(c: &mut redis::Connection) {
    let v: String = c.get("keep").unwrap();
    assert_eq!(v, "safe");
}

#[test]
fn garbage_bytes_get_a_protocol_error_and_a_close() {
    let server = TestServer::start();
    let mut b = bystander(&server);
    let mut raw = server.raw();
    raw.write_all(b"*2\r\n$3\r\nGET\r\n!!garbage\r\n").unwrap();
    let reply = read_to_close(&mut raw);
    assert_eq!(String::from_utf8_lossy(&reply), "-ERR Protocol error: expected '$', got '!'\r\n");
    still_fine(&mut b);
}

#[test]
fn a_bulk_over_the_payload_limit_is_refused() {
    let server = TestServer::start_with(&["--max-payload", "1024"]);
    let mut b = bystander(&server);
    let mut raw = server.raw();
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n").unwrap();
    let reply = read_to_close(&mut raw);
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "-ERR Protocol error: invalid bulk length: value is larger than max-payload (1024 bytes)\r\n"
    );
    still_fine(&mut b);
}

#[test]
fn arity_types_and_unknown_commands_get_errors_and_the_connection_stays() {
    let server = TestServer::start();
    let mut c = bystander(&server);
    let arity = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(arity.to_string().contains("wrong number of arguments for 'get' command"), "{arity}");
    let unknown = redis::cmd("NOSUCH").arg("x").query::<Value>(&mut c).unwrap_err();
    assert!(unknown.to_string().contains("unknown command 'NOSUCH'"), "{unknown}");
    let not_int = redis::cmd("LOCK.ACQUIRE").arg(&["L", "soon"]).query::<Value>(&mut c).unwrap_err();
    assert!(not_int.to_string().contains("not an integer"), "{not_int}");
    let extra = redis::cmd("LOCK.RELEASE").arg(&["L", "1", "extra"]).query::<Value>(&mut c).unwrap_err();
    assert!(
        extra.to_string().contains("syntax error") || extra.to_string().contains("wrong number"),
        "{extra}"
    );
    let _: () = c.set("n", "abc").unwrap();
    let wrong = c.incr::<_, _, i64>("n", 1).unwrap_err();
    assert!(wrong.to_string().contains("not an integer"), "{wrong}");
    still_fine(&mut c);
}

#[test]
fn too_many_arguments_are_refused() {
    let server = TestServer::start();
    let mut b = bystander(&server);
    let mut raw = server.raw();
    // The argument count itself is checked against the limit before anything is read.
    raw.write_all(b"*99999999999\r\n").unwrap();
    let reply = read_to_close(&mut raw);
    assert!(String::from_utf8_lossy(&reply).starts_with("-ERR Protocol error"), "{reply:?}");
    still_fine(&mut b);
}

#[test]
fn a_client_that_disconnects_mid_command_changes_nothing() {
    let server = TestServer::start();
    let mut b = bystander(&server);
    {
        let mut raw = server.raw();
        raw.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nkeep\r\n$9\r\nhalf").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    still_fine(&mut b);
    let pong: String = redis::cmd("PING").query(&mut b).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let mut raw = server.raw();
    let reply = exchange(&mut raw, b"SET a 1\r\nINCR a\r\nGET a\r\nPING\r\n", 23);
    assert_eq!(String::from_utf8_lossy(&reply), "+OK\r\n:2\r\n$1\r\n2\r\n+PONG\r\n");
}

#[test]
fn the_client_limit_refuses_new_connections_with_an_error() {
    let server = TestServer::start_with(&["--max-clients", "2"]);
    let mut a = server.client();
    let _b = server.client();
    let mut third = server.raw();
    let reply = read_to_close(&mut third);
    assert_eq!(String::from_utf8_lossy(&reply), "-ERR max number of clients reached\r\n");
    let pong: String = redis::cmd("PING").query(&mut a).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn ten_thousand_idle_connections_do_not_disturb_a_working_client() {
    let server = TestServer::start_with(&["--max-clients", "10100"]);
    let mut b = bystander(&server);
    let idle: Vec<TcpStream> =
        (0..10_000).map(|_| TcpStream::connect(&server.addr).expect("connect")).collect();
    // Every idle connection is accepted: the last one answers a ping.
    let mut last = idle.last().unwrap().try_clone().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert_eq!(exchange(&mut last, b"PING\r\n", 7), b"+PONG\r\n");
    still_fine(&mut b);
    // Each connection's task counts itself as it starts; give the last few a moment.
    let mut clients = String::new();
    for _ in 0..100 {
        clients = redis::cmd("INFO").arg("clients").query(&mut b).unwrap();
        if clients.contains("connected_clients:10001") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(clients.contains("connected_clients:10001"), "{clients}");
    drop(idle);
}

/// A start that fails on a port already taken says so once and leaves nothing on disk: every
/// listener is bound before the data dir is created.
#[test]
fn a_start_on_a_taken_port_creates_no_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let taken = taken.local_addr().unwrap().to_string();
    let parent = tempfile::tempdir().unwrap();
    let data_dir = parent.path().join("never-made");
    for (flag, others) in
        [("--resp-addr", ["--http-addr", "--amqp-addr"]), ("--amqp-addr", ["--resp-addr", "--http-addr"])]
    {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
            .args(["server", flag, &taken, others[0], "127.0.0.1:0", others[1], "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("the binary runs");
        assert!(!output.status.success(), "{flag}: the start must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("cannot listen on {taken}")), "{flag}: {stderr}");
        assert!(!data_dir.exists(), "{flag}: the data dir was created before the listeners were bound");
    }
}
