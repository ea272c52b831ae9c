//! Users and ACLs over RESP, against the real binary: authentication, Redis's texts (checked
//! against redis-server where Redis is the reference), a user limited to `app:*` on every path
//! (plain commands, locks, MULTI, scripts), ownership of holds, and users that go through the
//! log (restart, cluster).

mod common;

use std::time::Duration;

use common::redis_ref::{RedisRef, reply, same_replies};
use common::{TestServer, until};

/// `requirepass admin-pw`, and alice, limited to `app:*` keys and locks and the `news` channel.
const CONFIG: &str = r#"
requirepass = "admin-pw"
[users.alice]
password = "pw"
categories = ["+@all", "-@admin", "-@dangerous"]
keys = ["app:*"]
locks = ["app:*"]
channels = ["news"]
"#;

fn server() -> (TestServer, tempfile::NamedTempFile) {
    TestServer::start_with_config(CONFIG, &[])
}

fn connect(addr: &str, user: &str, pass: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{user}:{pass}@{addr}/")).expect("url");
    let con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connects");
    con.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    con
}

fn anonymous(addr: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("url");
    client.get_connection_with_timeout(Duration::from_secs(5)).expect("connects")
}

fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    reply(con, args).expect_err(&format!("{args:?} is refused"))
}

#[test]
fn authentication_texts_are_redis_s() {
    let (server, _config) = server();
    let Some(redis) = RedisRef::start() else { return };
    let mut r = redis.client();
    reply(&mut r, &["CONFIG", "SET", "requirepass", "admin-pw"]).unwrap();
    let mut r = anonymous(&format!("127.0.0.1:{}", redis.port()));
    let mut t = anonymous(&server.addr);
    same_replies(
        &mut r,
        &mut t,
        &[
            &["GET", "k"],
            &["PING"],
            &["FOO"],
            &["HELLO", "3"],
            &["HELLO", "3", "AUTH", "default", "wrong"],
            &["AUTH", "wrong"],
            &["AUTH", "nobody", "wrong"],
            &["AUTH", "a", "b", "c"],
            &["AUTH", "admin-pw"],
            &["ACL", "WHOAMI"],
            &["ACL", "WHOAMI", "x"],
            &["ACL", "FOO"],
            &["ACL", "CAT", "nosuch"],
            &["ACL", "GETUSER", "nobody"],
            &["ACL", "DELUSER", "default"],
            &["ACL", "SETUSER", "bob", "bogus"],
            &["ACL", "SETUSER", "bob", "on", ">b", "~b:*", "+get"],
            &["ACL", "LOG", "x"],
        ],
    );
    // GETUSER: Redis's fields first, then ours (locks, queues).
    let (Ok(redis::Value::Array(ours)), Ok(redis::Value::Array(theirs))) =
        (reply(&mut t, &["ACL", "GETUSER", "bob"]), reply(&mut r, &["ACL", "GETUSER", "bob"]))
    else {
        panic!("GETUSER answers a map")
    };
    assert_eq!(ours[..theirs.len()], theirs[..]);
    assert_eq!(ours[theirs.len()], redis::Value::BulkString(b"locks".to_vec()));
    // Without a password, AUTH says so.
    let open = TestServer::start();
    let mut t = open.client();
    let mut r = connect(&format!("127.0.0.1:{}", redis.port()), "default", "admin-pw");
    reply(&mut r, &["CONFIG", "SET", "requirepass", ""]).unwrap();
    same_replies(&mut r, &mut t, &[&["AUTH", "pw"], &["AUTH", "default", "x"], &["AUTH", "x", "y"]]);
}

#[test]
fn noperm_texts_for_a_command_a_key_and_a_channel_are_redis_s() {
    let (server, _config) = server();
    let Some(redis) = RedisRef::start() else { return };
    let mut admin = redis.client();
    reply(
        &mut admin,
        &["ACL", "SETUSER", "alice", "on", ">pw", "~app:*", "&news", "+@all", "-@admin", "-@dangerous"],
    )
    .unwrap();
    let mut r = connect(&format!("127.0.0.1:{}", redis.port()), "alice", "pw");
    let mut t = connect(&server.addr, "alice", "pw");
    same_replies(
        &mut r,
        &mut t,
        &[
            &["SET", "app:1", "x"],
            &["GET", "app:1"],
            &["SET", "other:1", "x"],
            &["MGET", "app:1", "other:1"],
            &["CONFIG", "GET", "maxmemory"],
            &["ACL", "USERS"],
            &["ACL", "WHOAMI"],
            &["PUBLISH", "other", "m"],
            &["PUBLISH", "news", "m"],
            &["EVAL", "return redis.call('get', KEYS[1])", "1", "other:1"],
            &["EVAL", "return redis.call('get', 'other:1')", "0"],
            &["EVAL", "return redis.call('keys', '*')", "0"],
            &["EVAL", "return redis.call('publish', 'other', 'm')", "0"],
            &["MULTI"],
            &["SET", "app:2", "x"],
            &["SET", "other:2", "x"],
            &["EXEC"],
            &["GET", "app:2"],
        ],
    );
}

#[test]
fn a_user_limited_to_app_cannot_touch_other_and_tokens_are_owned() {
    let (server, _config) = server();
    let mut alice = connect(&server.addr, "alice", "pw");
    let mut admin = connect(&server.addr, "default", "admin-pw");
    assert!(reply(&mut alice, &["LOCK.ACQUIRE", "app:l", "10000"]).is_ok());
    assert_eq!(
        err(&mut alice, &["LOCK.ACQUIRE", "other:l", "10000"]),
        "NOPERM this user has no permissions to access one of the locks used as arguments"
    );
    // Another user's hold, by its token: refused to a non-admin, allowed to an admin.
    let token: Vec<i64> = redis::cmd("LOCK.ACQUIRE").arg("app:held").arg(60_000).query(&mut admin).unwrap();
    let token = token[0].to_string();
    assert!(
        reply(&mut admin, &["ACL", "SETUSER", "carol", "on", ">c", "+@all", "-@admin", "alllocks"]).is_ok()
    );
    let mut carol = connect(&server.addr, "carol", "c");
    let refused = err(&mut carol, &["LOCK.RELEASE", "app:held", &token]);
    assert!(refused.starts_with("NOPERM"), "{refused}");
    let mut other_admin = connect(&server.addr, "default", "admin-pw");
    assert_eq!(reply(&mut other_admin, &["LOCK.RELEASE", "app:held", &token]), Ok(redis::Value::Int(1)));
    // A script's calls are checked call by call, and a MULTI with a refused command is discarded.
    assert!(
        err(&mut alice, &["EVAL", "return redis.call('set', 'other:x', 1)", "0"]).contains("can't access")
    );
    assert!(
        err(&mut alice, &["EVAL_RO", "return redis.call('get', 'other:x')", "0"]).contains("can't access")
    );
    assert_eq!(reply(&mut admin, &["EXISTS", "other:x"]), Ok(redis::Value::Int(0)));
    // ACL LOG shows the refusals and a failed AUTH.
    let mut stranger = anonymous(&server.addr);
    assert!(err(&mut stranger, &["AUTH", "alice", "wrong"]).starts_with("WRONGPASS"));
    let log: Vec<Vec<redis::Value>> = redis::cmd("ACL").arg("LOG").query(&mut admin).unwrap();
    let text = format!("{log:?}");
    assert!(text.contains("auth") && text.contains("AUTH") && text.contains("other:l"), "{text}");
}

#[test]
fn a_deleted_users_connection_is_closed_and_users_survive_a_restart() {
    let (mut server, _config) = server();
    let mut admin = connect(&server.addr, "default", "admin-pw");
    reply(&mut admin, &["ACL", "SETUSER", "dave", "on", ">d", "+@all", "~*"]).unwrap();
    let mut dave = connect(&server.addr, "dave", "d");
    assert_eq!(reply(&mut dave, &["ACL", "WHOAMI"]), Ok(redis::Value::BulkString(b"dave".to_vec())));
    reply(&mut admin, &["ACL", "DELUSER", "dave"]).unwrap();
    until("dave's connection is closed", Duration::from_secs(10), || reply(&mut dave, &["PING"]).is_err());
    reply(&mut admin, &["ACL", "SETUSER", "erin", "on", ">e", "+get", "~e:*"]).unwrap();
    server.restart();
    let mut erin = connect(&server.addr, "erin", "e");
    assert_eq!(reply(&mut erin, &["GET", "e:1"]), Ok(redis::Value::Nil));
    assert!(err(&mut erin, &["SET", "e:1", "x"]).contains("'set' command"));
    let client = redis::Client::open(format!("redis://dave:d@{}/", server.addr)).unwrap();
    assert!(client.get_connection_with_timeout(Duration::from_secs(5)).is_err(), "dave stays deleted");
}

#[test]
fn redis_cli_and_redis_py_authenticate_with_a_user() {
    let (server, _config) = server();
    let port = server.port().to_string();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port, "--user", "alice", "--pass", "pw", "--no-auth-warning", "SET", "app:cli", "1"])
        .output();
    let Ok(out) = out else { return };
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "OK");
    let py = format!(
        "import redis\nr = redis.Redis(port={port}, username='alice', password='pw')\n\
         print(r.get('app:cli').decode())\n\
         try:\n    r.get('other:1')\nexcept redis.exceptions.NoPermissionError as e:\n    print('NOPERM', e)\n"
    );
    let Ok(out) = std::process::Command::new("python3").args(["-c", &py]).output() else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("1\nNOPERM"), "{text} {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_user_set_on_one_node_authenticates_on_another() {
    let file = common::config_file("requirepass = \"admin-pw\"\n");
    let cluster =
        common::cluster::TestCluster::start(3, &["--config", file.path().to_str().expect("utf-8 path")]);
    let mut set = false;
    until("a node takes ACL SETUSER", Duration::from_secs(20), || {
        (0..3).any(|i| {
            let mut admin = connect(&cluster.node(i).addr, "default", "admin-pw");
            set = reply(&mut admin, &["ACL", "SETUSER", "frank", "on", ">f", "+@all", "~*"]).is_ok();
            set
        })
    });
    for i in 0..3 {
        until("frank authenticates on every node", Duration::from_secs(20), || {
            redis::Client::open(format!("redis://frank:f@{}/", cluster.node(i).addr))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .is_ok()
        });
    }
}

#[test]
fn max_connections_per_user_is_enforced() {
    let config = "[users.gina]\npassword = \"g\"\ncategories = [\"+@all\"]\nmax-connections = 1\n";
    let (server, _config) = TestServer::start_with_config(config, &[]);
    let first = connect(&server.addr, "gina", "g");
    let mut second = anonymous(&server.addr);
    assert_eq!(err(&mut second, &["AUTH", "gina", "g"]), "ERR user gina has reached max-connections (1)");
    drop(first);
    until("the place is free again", Duration::from_secs(10), || {
        reply(&mut second, &["AUTH", "gina", "g"]).is_ok()
    });
}

/// The CLI's client commands authenticate with `--user` / `--password` (or their variables):
/// without them a server with users refuses, with them the command runs as that user, and a hold
/// taken so is the user's own.
#[test]
fn the_cli_authenticates_with_user_and_password() {
    let (server, _config) = server();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"));
        cmd.args(args).env("TURNSTILE_SERVER", &server.addr).env_remove("TURNSTILE_LOG");
        cmd.env_remove("TURNSTILE_USER").env_remove("TURNSTILE_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (status, out) = common::run_bounded(cmd, Duration::from_secs(60));
        (status.expect("the CLI exits").success(), out)
    };
    let (ok, out) = run(&[], &["lock", "acquire", "app:cli", "--ttl", "60s"]);
    assert!(!ok && out.contains("NOAUTH"), "{out}");
    let (ok, out) = run(&[("TURNSTILE_PASSWORD", "wrong")], &["lock", "acquire", "app:cli", "--ttl", "60s"]);
    assert!(!ok && out.contains("WRONGPASS"), "{out}");
    let alice = [("TURNSTILE_USER", "alice"), ("TURNSTILE_PASSWORD", "pw")];
    let (ok, out) = run(&alice, &["lock", "acquire", "app:cli", "--ttl", "60s"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&alice, &["lock", "acquire", "other:cli", "--ttl", "60s"]);
    assert!(!ok && out.contains("NOPERM"), "alice's patterns hold on the CLI too: {out}");
    let (ok, out) = run(&[], &["lock", "info", "app:cli", "--user", "default", "--password", "admin-pw"]);
    assert!(ok && out.contains("app:cli"), "{out}");
}
