//! Each limit and each refusal tried on all three protocols against the real binary, one table:
//! the same input over RESP (`redis` crate), HTTP (HTTP/1.1 on a socket) and AMQP (`lapin`), each
//! protocol's own form of the same error with the same words, then the server still serving and
//! nothing stored.

mod common;

use std::time::Duration;

use common::{TestServer, http_request};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// What one protocol answered.
#[derive(Debug)]
enum Answer {
    /// RESP: the error reply's code and text.
    Resp(String),
    /// HTTP: status and the JSON error body.
    Http(u16, Value),
    /// AMQP: the reply code and text that closed the channel or connection, or `nack`.
    Amqp(Option<u16>, String),
}

/// One row: a limit, the flags that set it, what each protocol sends, what must come back.
struct Row {
    limit: &'static str,
    args: &'static [&'static str],
    /// Run before the attempts (e.g. fill memory), over RESP.
    setup: fn(&mut redis::Connection),
    resp: fn(&mut redis::Connection) -> redis::RedisResult<redis::Value>,
    /// HTTP: the path and the body of a POST.
    http_path: fn() -> String,
    http_body: fn() -> Value,
    /// `None` where AMQP has no such thing (locks).
    amqp: Option<Amqp>,
    /// Every answer's text contains this.
    words: &'static str,
    resp_code: &'static str,
    http_status: u16,
    http_code: &'static str,
    /// AMQP reply code (`None`: a publisher-confirm nack).
    amqp_code: Option<u16>,
    /// After the attempts: what must (still) be stored.
    stored: fn(&mut redis::Connection),
}

#[derive(Clone, Copy)]
enum Amqp {
    Publish { queue: &'static str, size: usize },
    Declare { queue: fn() -> String },
}

fn long_name() -> String {
    "n".repeat(100)
}

fn no_queues(resp: &mut redis::Connection) {
    let queues: Vec<String> = redis::cmd("Q.LIST").query(resp).expect("Q.LIST");
    assert!(queues.iter().all(|q| q.len() <= 64), "a refused name was stored: {queues:?}");
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            limit: "max-payload",
            args: &["--max-payload", "1024"],
            setup: |_| {},
            resp: |c| redis::cmd("Q.PUSH").arg("big").arg(vec![b'x'; 2000]).query(c),
            http_path: || "/api/queues/big/messages".into(),
            http_body: || json!({"payload": "x".repeat(2000)}),
            amqp: Some(Amqp::Publish { queue: "big", size: 2000 }),
            words: "value is larger than max-payload (1024 bytes)",
            resp_code: "ERR",
            http_status: 413,
            http_code: "ERR",
            amqp_code: Some(406),
            stored: |c| {
                let depth: i64 = redis::cmd("Q.PUSH").arg("big").arg("small").query(c).expect("a small push");
                assert!(depth > 0);
                let stats: redis::Value = redis::cmd("Q.STATS").arg("big").query(c).expect("Q.STATS");
                assert!(format!("{stats:?}").contains("ready"), "{stats:?}");
                let peek: Vec<Vec<redis::Value>> =
                    redis::cmd("Q.PEEK").arg("big").arg("COUNT").arg(10).query(c).expect("Q.PEEK");
                assert_eq!(peek.len(), 1, "only the small push is stored: {peek:?}");
            },
        },
        Row {
            limit: "max-name-len (queues)",
            args: &["--max-name-len", "64"],
            setup: |_| {},
            resp: |c| redis::cmd("Q.PUSH").arg(long_name()).arg("x").query(c),
            http_path: || format!("/api/queues/{}/messages", long_name()),
            http_body: || json!({"payload": "x"}),
            amqp: Some(Amqp::Declare { queue: long_name }),
            words: "queue name is longer than max-name-len (64 bytes)",
            resp_code: "ERR",
            http_status: 400,
            http_code: "ERR",
            amqp_code: Some(406),
            stored: no_queues,
        },
        Row {
            limit: "max-name-len (locks)",
            args: &["--max-name-len", "64"],
            setup: |_| {},
            resp: |c| redis::cmd("LOCK.ACQUIRE").arg(long_name()).arg(1000).query(c),
            http_path: || format!("/api/locks/{}/acquire", long_name()),
            http_body: || json!({"ttl_ms": 1000}),
            amqp: None,
            words: "lock name is longer than max-name-len (64 bytes)",
            resp_code: "ERR",
            http_status: 400,
            http_code: "ERR",
            amqp_code: None,
            stored: |c| {
                let info: redis::Value =
                    redis::cmd("LOCK.INFO").arg(long_name()).query(c).expect("LOCK.INFO");
                assert!(!format!("{info:?}").contains("token"), "no hold was stored: {info:?}");
            },
        },
        Row {
            limit: "max-memory",
            args: &["--max-memory", "1500"],
            setup: |c| {
                let _: i64 =
                    redis::cmd("Q.PUSH").arg("mem").arg(vec![b'x'; 1000]).query(c).expect("first push");
            },
            resp: |c| redis::cmd("Q.PUSH").arg("mem").arg(vec![b'x'; 1000]).query(c),
            http_path: || "/api/queues/mem/messages".into(),
            http_body: || json!({"payload": "x".repeat(1000)}),
            amqp: Some(Amqp::Publish { queue: "mem", size: 1000 }),
            words: "command not allowed when used memory > 'max-memory'",
            resp_code: "OOM",
            http_status: 507,
            http_code: "OOM",
            amqp_code: None,
            stored: |c| {
                let peek: Vec<Vec<redis::Value>> =
                    redis::cmd("Q.PEEK").arg("mem").arg("COUNT").arg(10).query(c).expect("Q.PEEK");
                assert_eq!(peek.len(), 1, "only the first push is stored");
            },
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_limit_is_refused_alike_on_every_protocol() {
    for row in rows() {
        let server = TestServer::start_with(row.args);
        let mut resp = server.client();
        (row.setup)(&mut resp);

        let mut answers = Vec::new();
        // RESP: a bulk string over max-payload is a protocol error, after which Redis (and
        // Turnstile) close the connection; other refusals leave it open.
        let mut attempt = server.client();
        match (row.resp)(&mut attempt) {
            Err(e) => answers.push(Answer::Resp(format!(
                "{} {}",
                e.code().unwrap_or("?"),
                e.detail().unwrap_or("")
            ))),
            Ok(v) => panic!("{}: RESP stored it: {v:?}", row.limit),
        }

        let (path, body) = ((row.http_path)(), (row.http_body)().to_string());
        let (status, _, text) =
            http_request(&server.http_addr, "POST", &path, Some(&body), "application/json");
        answers.push(Answer::Http(status, serde_json::from_str(&text).unwrap_or(Value::Null)));

        if let Some(amqp) = row.amqp {
            answers.push(amqp_attempt(&server, amqp).await);
        }

        for answer in &answers {
            match answer {
                Answer::Resp(text) => {
                    assert!(text.starts_with(row.resp_code), "{}: RESP {text}", row.limit);
                    assert!(text.contains(row.words), "{}: RESP {text}", row.limit);
                }
                Answer::Http(status, body) => {
                    assert_eq!(
                        (*status, body["code"].as_str()),
                        (row.http_status, Some(row.http_code)),
                        "{}: HTTP {body}",
                        row.limit
                    );
                    let message = body["message"].as_str().unwrap_or("");
                    assert!(message.contains(row.words), "{}: HTTP {body}", row.limit);
                }
                Answer::Amqp(code, text) => {
                    assert_eq!(*code, row.amqp_code, "{}: AMQP {text}", row.limit);
                    if code.is_some() {
                        assert!(text.contains(row.words), "{}: AMQP {text}", row.limit);
                    }
                }
            }
        }
        // The server serves on, and only what was allowed is stored.
        let mut after = server.client();
        let pong: String = redis::cmd("PING").query(&mut after).expect("the server answers");
        assert_eq!(pong, "PONG");
        (row.stored)(&mut after);
        let (status, _, _) = http_request(&server.http_addr, "GET", "/healthz", None, "application/json");
        assert_eq!(status, 200);
    }
}

/// Publishes (with confirms) or declares over AMQP; the answer is the code and text that closed
/// the channel, or `nack`.
async fn amqp_attempt(server: &TestServer, attempt: Amqp) -> Answer {
    let url = format!("amqp://guest:guest@{}/%2f", server.amqp_addr);
    let conn = timeout(WAIT, Connection::connect(&url, ConnectionProperties::default()))
        .await
        .expect("AMQP connect in time")
        .expect("AMQP connect");
    let ch = conn.create_channel().await.expect("channel");
    let error = match attempt {
        Amqp::Declare { queue } => {
            match ch
                .queue_declare(queue().as_str().into(), QueueDeclareOptions::default(), FieldTable::default())
                .await
            {
                Ok(_) => panic!("a queue with a long name was declared"),
                Err(e) => e,
            }
        }
        Amqp::Publish { queue, size } => {
            ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
            let body = vec![b'x'; size];
            let publish = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await;
            let confirm = match publish {
                Ok(confirm) => timeout(WAIT, confirm).await.expect("a confirm in time"),
                Err(e) => Err(e),
            };
            match confirm {
                Ok(confirmation) if confirmation.is_nack() => return Answer::Amqp(None, "nack".into()),
                Ok(confirmation) => panic!("the publish was confirmed: {confirmation:?}"),
                Err(e) => e,
            }
        }
    };
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Answer::Amqp(Some(e.get_id()), e.get_message().to_string()),
        other => panic!("not a protocol error: {other:?}"),
    }
}

/// Over `max-clients`, each protocol is refused in its own way, counted under its own label, and
/// the server serves again once a connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_clients_are_refused_on_every_protocol() {
    let server = TestServer::start_with(&["--max-clients", "2"]);
    let held: Vec<redis::Connection> = (0..2).map(|_| server.client()).collect();

    let mut raw = server.raw();
    let refusal = common::read_to_close(&mut raw);
    assert_eq!(String::from_utf8_lossy(&refusal), "-ERR max number of clients reached\r\n");

    let (status, _, text) = http_request(&server.http_addr, "GET", "/healthz", None, "application/json");
    let body: Value = serde_json::from_str(&text).expect("a JSON error");
    assert_eq!((status, body["code"].as_str()), (503, Some("ERR")), "{text}");
    assert_eq!(body["message"], "max number of clients reached");

    let url = format!("amqp://guest:guest@{}/%2f", server.amqp_addr);
    let refused = timeout(WAIT, Connection::connect(&url, ConnectionProperties::default()))
        .await
        .expect("an answer in time");
    let error = refused.expect_err("the AMQP connection is refused");
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => {
            assert_eq!(e.get_id(), 530, "{e:?}");
            assert!(e.get_message().as_str().contains("max number of clients reached"), "{e:?}");
        }
        other => panic!("not a protocol error: {other:?}"),
    }

    drop(held);
    // The slots come back as the server notices the closes: retry for a bounded while. A retry
    // that comes too early is refused (and counted) too, so the refusals are counted here.
    let (mut info, mut early) = (String::new(), 0);
    for _ in 0..200 {
        match redis::Client::open(server.url()).and_then(|c| c.get_connection()) {
            Ok(mut c) => {
                info = redis::cmd("INFO").arg("stats").query::<String>(&mut c).expect("INFO");
                break;
            }
            Err(_) => early += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(info.contains(&format!("rejected_connections:{}\r\n", 3 + early)), "{info}");
    // The same for the scrape: a slot may still be on its way back.
    let (mut metrics, mut early_http) = (String::new(), 0);
    for _ in 0..200 {
        match http_request(&server.http_addr, "GET", "/metrics", None, "text/plain") {
            (200, _, text) => {
                metrics = text;
                break;
            }
            _ => early_http += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (protocol, refused) in [("resp", 1 + early), ("http", 1 + early_http), ("amqp", 1)] {
        let series = format!("turnstile_connections_rejected_total{{protocol=\"{protocol}\"}} {refused}\n");
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
}
