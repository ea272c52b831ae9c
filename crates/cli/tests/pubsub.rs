//! Pub/sub and client housekeeping through the real binary: subscribe and publish on raw sockets
//! (so that every confirmation and push is checked byte for byte, against a real `redis-server`
//! too where one is installed), RESP2's subscribed mode and RESP3's pushes, a publish reaching
//! the subscribers of every node of a cluster, a subscriber that does not read being disconnected,
//! and CLIENT LIST / INFO / KILL, CONFIG GET, TIME, WAIT, READONLY, RESET.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{TestCluster, WAIT};
use common::redis_ref::{RedisRef, same_replies};
use common::{TestServer, info_u64, until};
use turnstile_resp::{Frame, parse_frame};

/// A RESP connection on a raw socket: requests out, whole frames (and their bytes) in.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        Raw { stream, buf: Vec::new() }
    }

    fn send(&mut self, args: &[&str]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.stream.write_all(&out).expect("write");
    }

    /// The next frame's bytes, exactly as sent.
    fn bytes(&mut self) -> Vec<u8> {
        loop {
            if let Some((_, used)) = parse_frame(&self.buf).expect("a well-formed frame") {
                return self.buf.drain(..used).collect();
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("closed before a whole frame: {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read failed after {:?}: {e}", String::from_utf8_lossy(&self.buf)),
            }
        }
    }

    fn frame(&mut self) -> Frame {
        let bytes = self.bytes();
        parse_frame(&bytes).expect("frame").expect("whole").0
    }

    /// Sends a request and returns its reply's bytes as text.
    fn ask(&mut self, args: &[&str]) -> String {
        self.send(args);
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Whether the server closed the connection (reading whatever it still sent first).
    fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

fn bulk_text(frame: &Frame) -> String {
    match frame {
        Frame::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Verbatim { text, .. } => String::from_utf8_lossy(text).into_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn int(con: &mut redis::Connection, args: &[&str]) -> i64 {
    let mut cmd = redis::cmd(args[0]);
    args[1..].iter().for_each(|a| {
        cmd.arg(*a);
    });
    cmd.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn text(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    args[1..].iter().for_each(|a| {
        cmd.arg(*a);
    });
    cmd.query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The (un)subscribe, publish and message sequence whose every byte Redis 7 fixes; run against
/// the server at `addr`, it returns what the subscriber and the publisher were sent, in order.
fn subscribe_story(addr: &str) -> Vec<String> {
    let mut sub = Raw::connect(addr);
    let mut publisher = Raw::connect(addr);
    let mut seen = Vec::new();
    let mut note = |bytes: Vec<u8>| seen.push(String::from_utf8_lossy(&bytes).into_owned());
    sub.send(&["SUBSCRIBE", "a", "b"]);
    note(sub.bytes());
    note(sub.bytes());
    sub.send(&["PSUBSCRIBE", "n.*"]);
    note(sub.bytes());
    publisher.send(&["PUBLISH", "a", "hi"]);
    note(publisher.bytes());
    publisher.send(&["PUBLISH", "n.x", "yo"]);
    note(publisher.bytes());
    publisher.send(&["PUBLISH", "elsewhere", "q"]);
    note(publisher.bytes());
    note(sub.bytes());
    note(sub.bytes());
    sub.send(&["UNSUBSCRIBE", "b"]);
    note(sub.bytes());
    sub.send(&["UNSUBSCRIBE"]);
    note(sub.bytes());
    sub.send(&["PUNSUBSCRIBE"]);
    note(sub.bytes());
    sub.send(&["UNSUBSCRIBE"]);
    note(sub.bytes());
    sub.send(&["PUNSUBSCRIBE", "x"]);
    note(sub.bytes());
    sub.send(&["PING"]);
    note(sub.bytes());
    seen
}

#[test]
fn subscribe_publish_patterns_and_unsubscribe_answer_byte_for_byte_as_redis() {
    let server = TestServer::start();
    let expected = [
        "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n",
        "*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
        "*3\r\n$10\r\npsubscribe\r\n$3\r\nn.*\r\n:3\r\n",
        ":1\r\n",
        ":1\r\n",
        ":0\r\n",
        "*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n",
        "*4\r\n$8\r\npmessage\r\n$3\r\nn.*\r\n$3\r\nn.x\r\n$2\r\nyo\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:2\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n",
        "*3\r\n$12\r\npunsubscribe\r\n$3\r\nn.*\r\n:0\r\n",
        "*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n",
        "*3\r\n$12\r\npunsubscribe\r\n$1\r\nx\r\n:0\r\n",
        "+PONG\r\n",
    ];
    assert_eq!(subscribe_story(&server.addr), expected);
    if let Some(redis) = RedisRef::start() {
        assert_eq!(subscribe_story(&format!("127.0.0.1:{}", redis.port())), expected, "redis-server");
    }
}

/// What a RESP2 subscriber is answered for commands it may and may not send.
fn subscribed_mode_story(addr: &str) -> Vec<String> {
    let mut sub = Raw::connect(addr);
    sub.ask(&["SUBSCRIBE", "x"]);
    let commands: [&[&str]; 10] = [
        &["GET", "k"],
        &["SET", "k", "v", "BADOPTION"],
        &["PING"],
        &["PING", "hi"],
        &["PUBSUB", "NUMPAT"],
        &["CLIENT", "LIST"],
        &["NOSUCH", "a"],
        &["GET"],
        &["SUBSCRIBE", "y"],
        &["PUBLISH", "x", "m"],
    ];
    commands.iter().map(|args| sub.ask(args)).collect()
}

#[test]
fn a_resp2_subscriber_is_refused_other_commands_with_redis_7s_text() {
    let server = TestServer::start();
    let got = subscribed_mode_story(&server.addr);
    let refusal = |name: &str| {
        format!(
            "-ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context\r\n"
        )
    };
    assert_eq!(got[0], refusal("get"));
    assert_eq!(got[1], refusal("set"), "refused before its arguments are looked at");
    assert_eq!(got[2], "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    assert_eq!(got[3], "*2\r\n$4\r\npong\r\n$2\r\nhi\r\n");
    assert_eq!(got[4], refusal("pubsub|numpat"));
    assert_eq!(got[5], refusal("client|list"));
    assert!(got[6].starts_with("-ERR unknown command 'NOSUCH'"), "{}", got[6]);
    assert_eq!(got[7], "-ERR wrong number of arguments for 'get' command\r\n");
    assert_eq!(got[8], "*3\r\n$9\r\nsubscribe\r\n$1\r\ny\r\n:2\r\n");
    assert_eq!(got[9], refusal("publish"));
    if let Some(redis) = RedisRef::start() {
        assert_eq!(got, subscribed_mode_story(&format!("127.0.0.1:{}", redis.port())), "redis-server");
    }
}

/// A RESP3 subscriber's session: pushes for confirmations and messages, ordinary replies to
/// ordinary commands, on one connection. The HELLO reply (the server's own details) is left out.
fn resp3_story(addr: &str) -> Vec<String> {
    let mut sub = Raw::connect(addr);
    let mut publisher = Raw::connect(addr);
    sub.send(&["HELLO", "3"]);
    sub.bytes();
    let mut seen = vec![sub.ask(&["SUBSCRIBE", "c"])];
    seen.push(sub.ask(&["SET", "k", "v"]));
    seen.push(publisher.ask(&["PUBLISH", "c", "hello"]));
    seen.push(String::from_utf8_lossy(&sub.bytes()).into_owned());
    seen.push(sub.ask(&["GET", "k"]));
    seen.push(sub.ask(&["PING"]));
    seen.push(sub.ask(&["UNSUBSCRIBE", "c"]));
    seen
}

#[test]
fn a_resp3_subscriber_gets_pushes_and_runs_ordinary_commands_on_the_same_connection() {
    let server = TestServer::start();
    let expected = [
        ">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n",
        "+OK\r\n",
        ":1\r\n",
        ">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$5\r\nhello\r\n",
        "$1\r\nv\r\n",
        "+PONG\r\n",
        ">3\r\n$11\r\nunsubscribe\r\n$1\r\nc\r\n:0\r\n",
    ];
    assert_eq!(resp3_story(&server.addr), expected);
    if let Some(redis) = RedisRef::start() {
        assert_eq!(resp3_story(&format!("127.0.0.1:{}", redis.port())), expected, "redis-server");
    }
}

#[test]
fn publish_counts_this_nodes_receivers_and_pubsub_tells_what_this_node_has() {
    let server = TestServer::start();
    let mut con = server.client();
    let mut one = Raw::connect(&server.addr);
    let mut two = Raw::connect(&server.addr);
    let mut pattern = Raw::connect(&server.addr);
    one.ask(&["SUBSCRIBE", "c", "d"]);
    one.bytes();
    two.ask(&["SUBSCRIBE", "c"]);
    pattern.ask(&["PSUBSCRIBE", "c*"]);
    assert_eq!(int(&mut con, &["PUBLISH", "c", "m"]), 3, "two on the channel, one by pattern");
    assert_eq!(int(&mut con, &["PUBLISH", "cx", "m"]), 1);
    assert_eq!(int(&mut con, &["PUBLISH", "d", "m"]), 1);
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut con).unwrap();
    assert_eq!(channels, ["c", "d"]);
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").arg("c*").query(&mut con).unwrap();
    assert_eq!(channels, ["c"]);
    let numsub: Vec<redis::Value> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg("c").arg("nobody").query(&mut con).unwrap();
    assert_eq!(
        numsub,
        [
            redis::Value::BulkString(b"c".to_vec()),
            redis::Value::Int(2),
            redis::Value::BulkString(b"nobody".to_vec()),
            redis::Value::Int(0)
        ]
    );
    assert_eq!(int(&mut con, &["PUBSUB", "NUMPAT"]), 1);
    // Each got what it subscribed to, in order.
    assert_eq!(bulk_text(&nth(one.frame(), 2)), "m");
    assert_eq!(bulk_text(&nth(one.frame(), 1)), "d");
    assert_eq!(bulk_text(&nth(pattern.frame(), 2)), "c");
    assert_eq!(bulk_text(&nth(pattern.frame(), 2)), "cx");
    // A subscriber that goes away takes its subscriptions with it.
    drop(one);
    drop(pattern);
    until("the closed subscribers are forgotten", WAIT, || {
        int(&mut con, &["PUBSUB", "NUMPAT"]) == 0 && int(&mut con, &["PUBLISH", "c", "m"]) == 1
    });
    let channels: Vec<String> = redis::cmd("PUBSUB").arg("CHANNELS").query(&mut con).unwrap();
    assert_eq!(channels, ["c"]);
    assert_eq!(bulk_text(&nth(two.frame(), 2)), "m");
}

fn numsub(con: &mut redis::Connection, channel: &str) -> i64 {
    let (_, count): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(con).unwrap();
    count
}

fn nth(frame: Frame, i: usize) -> Frame {
    match frame {
        Frame::Array(items) | Frame::Push(items) => items.into_iter().nth(i).expect("long enough"),
        other => panic!("not an array: {other:?}"),
    }
}

#[test]
fn a_publish_on_one_node_reaches_the_subscribers_of_every_node() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.leader();
    let mut subscribers: Vec<Raw> = (0..3)
        .map(|i| {
            let mut sub = Raw::connect(&cluster.node(i).addr);
            sub.ask(&["SUBSCRIBE", "news"]);
            sub.ask(&["PSUBSCRIBE", "n*"]);
            sub
        })
        .collect();
    // Published through a follower: forwarded to the leader, applied by all three.
    let follower = (leader + 1) % 3;
    let mut con = cluster.node(follower).client();
    assert_eq!(int(&mut con, &["PUBLISH", "news", "from a follower"]), 2, "this node's two subscriptions");
    let mut con = cluster.node(leader).client();
    assert_eq!(int(&mut con, &["PUBLISH", "news", "from the leader"]), 2);
    for (i, sub) in subscribers.iter_mut().enumerate() {
        for message in ["from a follower", "from the leader"] {
            let mut got = [sub.frame(), sub.frame()].map(|f| match f {
                Frame::Array(items) => items.into_iter().map(|i| bulk_text(&i)).collect::<Vec<_>>(),
                other => panic!("node {i}: {other:?}"),
            });
            got.sort();
            assert_eq!(got[0], ["message", "news", message], "node {i}");
            assert_eq!(got[1], ["pmessage", "n*", "news", message], "node {i}");
        }
    }
    // WAIT: every acknowledged write is on a majority already: one other node of three.
    assert_eq!(int(&mut con, &["WAIT", "2", "100"]), 1);
}

#[test]
fn a_subscriber_that_does_not_read_is_disconnected_past_its_output_limit() {
    let server = TestServer::start_with(&["--pubsub-output-limit", "1048576", "--fsync", "never"]);
    let mut con = server.client();
    let mut slow = Raw::connect(&server.addr);
    slow.ask(&["SUBSCRIBE", "firehose"]);
    let slow_id = {
        let mut ask = Raw::connect(&server.addr);
        // The slow subscriber's id is the one listed as a subscriber.
        let list = bulk_text(&{
            ask.send(&["CLIENT", "LIST", "TYPE", "pubsub"]);
            ask.frame()
        });
        list.split_whitespace().next().expect("one line").trim_start_matches("id=").to_owned()
    };
    let mut fast = Raw::connect(&server.addr);
    fast.ask(&["SUBSCRIBE", "firehose"]);
    // The kernel's socket buffers take a few MiB before the outbox starts to fill; the slow
    // subscriber never reads, the fast one reads everything.
    let message = "x".repeat(128 * 1024);
    let mut published = 0;
    while info_u64(&mut con, "stats", "pubsub_clients_disconnected") == 0 {
        assert!(published < 1000, "still connected after {published} messages of 128 KiB");
        int(&mut con, &["PUBLISH", "firehose", &message]);
        published += 1;
        assert_eq!(bulk_text(&nth(fast.frame(), 2)).len(), message.len());
    }
    assert!(slow.closed_by_server(), "the slow subscriber's connection was closed");
    let list = text(&mut con, &["CLIENT", "LIST"]);
    assert!(!list.contains(&format!("id={slow_id} ")), "{list}");
    assert_eq!(numsub(&mut con, "firehose"), 1, "only the fast subscriber is left");
    // The fast subscriber is still there and still served.
    assert_eq!(int(&mut con, &["PUBLISH", "firehose", "still here"]), 1);
    assert_eq!(bulk_text(&nth(fast.frame(), 2)), "still here");
    assert_eq!(info_u64(&mut con, "stats", "pubsub_clients_disconnected"), 1);
}

#[test]
fn client_list_info_and_kill() {
    let server = TestServer::start();
    let mut me = server.client();
    let my_id = int(&mut me, &["CLIENT", "ID"]);
    assert_eq!(text(&mut me, &["CLIENT", "SETNAME", "tester"]), "OK");
    assert_eq!(text(&mut me, &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]), "OK");
    assert_eq!(text(&mut me, &["CLIENT", "SETINFO", "LIB-VER", "1.0"]), "OK");
    let line = text(&mut me, &["CLIENT", "INFO"]);
    assert!(line.starts_with(&format!("id={my_id} addr=127.0.0.1:")), "{line}");
    assert!(line.ends_with("\n"), "{line:?}");
    for field in
        [" name=tester ", " flags=N ", " db=0 ", " sub=0 ", " psub=0 ", " multi=-1 ", " cmd=client|info "]
    {
        assert!(line.contains(field), "{field:?} missing from {line}");
    }
    assert!(line.contains(" resp=2 lib-name=redis-rs lib-ver=1.0"), "{line}");

    let mut subscriber = Raw::connect(&server.addr);
    subscriber.ask(&["SUBSCRIBE", "c"]);
    let mut blocked = Raw::connect(&server.addr);
    let mut other = Raw::connect(&server.addr);
    let other_id = other.ask(&["CLIENT", "ID"]).trim_start_matches(':').trim().to_owned();
    // `blocked` waits for a lock `me` holds: killing it must end that wait too.
    let (token, _): (i64, i64) = redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).query(&mut me).unwrap();
    blocked.send(&["CLIENT", "ID"]);
    let blocked_id = bulk_or_int(blocked.frame());
    blocked.send(&["LOCK.ACQUIRE", "l", "60000", "WAIT", "60000"]);

    let list = text(&mut me, &["CLIENT", "LIST"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert!(list.lines().all(|l| l.starts_with("id=") && l.contains(" laddr=")), "{list}");
    let subscribers = text(&mut me, &["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(subscribers.lines().count(), 1, "{subscribers}");
    assert!(subscribers.contains(" flags=P ") && subscribers.contains(" sub=1 "), "{subscribers}");
    let only = text(&mut me, &["CLIENT", "LIST", "ID", &other_id, "999999"]);
    assert!(only.starts_with(&format!("id={other_id} ")) && only.lines().count() == 1, "{only}");

    // New form by id: a count; the killed connections close at once, blocked or idle.
    assert_eq!(int(&mut me, &["CLIENT", "KILL", "ID", &blocked_id.to_string()]), 1);
    assert!(blocked.closed_by_server(), "a connection blocked in a wait is closed");
    assert_eq!(int(&mut me, &["CLIENT", "KILL", "TYPE", "pubsub"]), 1);
    assert!(subscriber.closed_by_server());
    // The old form by address: OK, then `No such client` once it is gone.
    let other_addr = other.stream.local_addr().unwrap().to_string();
    assert_eq!(text(&mut me, &["CLIENT", "KILL", &other_addr]), "OK");
    assert!(other.closed_by_server());
    until("the killed connections are gone from the list", WAIT, || {
        text(&mut me, &["CLIENT", "LIST"]).lines().count() == 1
    });
    let gone = redis::cmd("CLIENT").arg("KILL").arg(&other_addr).query::<String>(&mut me).unwrap_err();
    assert_eq!(gone.detail(), Some("No such client"), "{gone:?}");
    // The caller is spared unless it says SKIPME no; then it is answered, then closed.
    assert_eq!(int(&mut me, &["CLIENT", "KILL", "ID", &my_id.to_string()]), 0);
    let mut raw = Raw::connect(&server.addr);
    assert_eq!(
        raw.ask(&["CLIENT", "KILL", "ADDR", &raw.stream.local_addr().unwrap().to_string(), "SKIPME", "no"]),
        ":1\r\n"
    );
    assert!(raw.closed_by_server());
    // The lock `blocked` waited for was never granted to it: its session closed with it.
    assert_eq!(int(&mut me, &["LOCK.RELEASE", "l", &token.to_string()]), 1);
}

fn bulk_or_int(frame: Frame) -> i64 {
    match frame {
        Frame::Integer(n) => n,
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_get_time_wait_readonly_and_reset() {
    let server = TestServer::start_with(&["--max-memory", "1000000", "--max-clients", "77"]);
    let mut con = server.client();
    let config = |con: &mut redis::Connection, pattern: &str| -> Vec<String> {
        redis::cmd("CONFIG").arg("GET").arg(pattern).query(con).unwrap()
    };
    assert_eq!(config(&mut con, "maxmemory"), ["maxmemory", "1000000"]);
    assert_eq!(config(&mut con, "MAXCLIENTS"), ["maxclients", "77"], "names are case-insensitive");
    let max = config(&mut con, "max*");
    assert!(max.chunks(2).any(|kv| kv == ["maxmemory-policy", "noeviction"]), "{max:?}");
    assert_eq!(config(&mut con, "appendonly"), ["appendonly", "yes"]);
    assert_eq!(config(&mut con, "appendfsync"), ["appendfsync", "always"]);
    assert_eq!(config(&mut con, "notify-keyspace-events"), ["notify-keyspace-events", ""]);
    assert_eq!(config(&mut con, "no-such-setting"), Vec::<String>::new());
    let both: Vec<String> =
        redis::cmd("CONFIG").arg("GET").arg("databases").arg("d*").query(&mut con).unwrap();
    assert_eq!(both, ["databases", "1"], "a setting matched twice is answered once");
    let refused =
        redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("1").query::<String>(&mut con).unwrap_err();
    assert!(refused.detail().unwrap_or("").starts_with("CONFIG SET is not supported"), "{refused:?}");

    let (seconds, micros): (String, String) = redis::cmd("TIME").query(&mut con).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let seconds: u64 = seconds.parse().unwrap();
    assert!(seconds.abs_diff(now) <= 5, "{seconds} vs {now}");
    assert!(micros.parse::<u32>().unwrap() < 1_000_000);

    assert_eq!(int(&mut con, &["WAIT", "1", "0"]), 0, "a single node has no other copy");
    assert_eq!(text(&mut con, &["READONLY"]), "OK");
    assert!(text(&mut con, &["CLIENT", "INFO"]).contains(" flags=r "));
    assert_eq!(text(&mut con, &["READWRITE"]), "OK");
    assert!(text(&mut con, &["CLIENT", "INFO"]).contains(" flags=N "));

    let mut raw = Raw::connect(&server.addr);
    raw.send(&["HELLO", "3", "SETNAME", "pooled"]);
    raw.bytes();
    raw.ask(&["SUBSCRIBE", "c"]);
    assert_eq!(raw.ask(&["RESET"]), "+RESET\r\n");
    // Back to RESP2, no name, no subscription: ordinary commands are answered again.
    assert_eq!(raw.ask(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(raw.ask(&["GET", "missing"]), "$-1\r\n");
    assert_eq!(numsub(&mut con, "c"), 0);
}

#[test]
fn housekeeping_and_pubsub_error_texts_are_redis_7s() {
    let Some(redis) = RedisRef::start() else { return };
    let server = TestServer::start();
    same_replies(
        &mut redis.client(),
        &mut server.client(),
        &[
            &["CLIENT", "KILL", "ID", "x"],
            &["CLIENT", "KILL", "ID", "0"],
            &["CLIENT", "KILL", "ID", "99999"],
            &["CLIENT", "KILL", "1.2.3.4:5"],
            &["CLIENT", "KILL", "ADDR", "1.2.3.4:5"],
            &["CLIENT", "KILL", "TYPE", "foo", "x"],
            &["CLIENT", "KILL", "TYPE", "master"],
            &["CLIENT", "KILL", "ID", "1", "SKIPME", "maybe"],
            &["CLIENT", "KILL", "ID", "1", "ID"],
            &["CLIENT", "KILL", "USER", "bob"],
            &["CLIENT", "KILL"],
            &["CLIENT", "LIST", "TYPE", "bar"],
            &["CLIENT", "LIST", "ID", "x"],
            &["CLIENT", "LIST", "ID", "999999"],
            &["CLIENT", "LIST", "foo"],
            &["CLIENT", "LIST", "TYPE"],
            &["CLIENT", "INFO", "x"],
            &["CLIENT", "NO-EVICT", "maybe"],
            &["CLIENT", "NO-EVICT", "on"],
            &["WAIT", "x", "0"],
            &["WAIT", "0", "x"],
            &["WAIT", "0", "-1"],
            &["WAIT", "0", "0"],
            &["WAIT", "0"],
            &["TIME", "x"],
            &["CONFIG"],
            &["CONFIG", "GET"],
            &["CONFIG", "GET", "no-such-setting"],
            &["CONFIG", "GET", "maxmemory-policy"],
            &["CONFIG", "FOO"],
            &["RESET", "x"],
            &["READONLY", "x"],
            &["SUBSCRIBE"],
            &["PSUBSCRIBE"],
            &["PUBLISH", "a"],
            &["PUBLISH", "nobody-listens", "m"],
            &["PUBSUB"],
            &["PUBSUB", "FOO"],
            &["PUBSUB", "NUMPAT", "x"],
            &["PUBSUB", "NUMPAT"],
            &["PUBSUB", "CHANNELS", "a", "b"],
            &["PUBSUB", "CHANNELS"],
            &["PUBSUB", "NUMSUB"],
            &["PUBSUB", "NUMSUB", "a"],
        ],
    );
}

/// `PUBLISH` sent from a Lua script and queued inside `MULTI` is a log entry like any write: the
/// subscriber gets both messages, in the order their entries applied, and the messages a
/// transaction publishes come out only once its `EXEC` applies.
#[test]
fn a_publish_from_a_script_or_inside_multi_reaches_subscribers() {
    let server = TestServer::start();
    let addr = format!("127.0.0.1:{}", server.port());
    let mut sub = Raw::connect(&addr);
    sub.send(&["SUBSCRIBE", "events"]);
    assert_eq!(nth(sub.frame(), 2), Frame::Integer(1));

    let mut con = server.client();
    let script = "return redis.call('PUBLISH', KEYS[1], ARGV[1])";
    // Inside a script the state machine answers: it counts no subscribers.
    assert_eq!(int(&mut con, &["EVAL", script, "1", "events", "from-lua"]), 0);
    let pushed = sub.frame();
    assert_eq!(bulk_text(&nth(pushed.clone(), 0)), "message");
    assert_eq!(bulk_text(&nth(pushed, 2)), "from-lua");

    let mut tx = Raw::connect(&addr);
    assert_eq!(tx.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.ask(&["PUBLISH", "events", "from-multi"]), "+QUEUED\r\n");
    assert_eq!(tx.ask(&["SET", "k", "v"]), "+QUEUED\r\n");
    assert_eq!(tx.ask(&["EXEC"]), "*2\r\n:0\r\n+OK\r\n");
    assert_eq!(bulk_text(&nth(sub.frame(), 2)), "from-multi");

    // A DISCARDed transaction publishes nothing: the next message is the next PUBLISH's.
    assert_eq!(tx.ask(&["MULTI"]), "+OK\r\n");
    assert_eq!(tx.ask(&["PUBLISH", "events", "discarded"]), "+QUEUED\r\n");
    assert_eq!(tx.ask(&["DISCARD"]), "+OK\r\n");
    assert_eq!(int(&mut con, &["PUBLISH", "events", "plain"]), 1);
    assert_eq!(bulk_text(&nth(sub.frame(), 2)), "plain");
}
