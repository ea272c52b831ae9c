//! The fault hooks with the real binary: `PUT /api/faults/fsync-delay` exists only with
//! `--fault-injection`, sets a delay that every journal fsync then pays (seen in the counter of
//! delayed fsyncs, not by timing anything), refuses bad bodies with a clear error, and leaves
//! writes working.

mod common;

use std::time::Duration;

use common::scrape::Scrape;
use common::{TestServer, http_request, info_u64, until};
use serde_json::{Value, json};

const FSYNC_DELAY: &str = "/api/faults/fsync-delay";

/// PUTs `body` to the fsync-delay hook; returns the status and the body as JSON.
fn put_delay(server: &TestServer, body: &str) -> (u16, Value) {
    let (status, _, text) =
        http_request(&server.http_addr, "PUT", FSYNC_DELAY, Some(body), "application/json");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn delayed_fsyncs(con: &mut redis::Connection) -> u64 {
    info_u64(con, "persistence", "fsyncs_delayed")
}

#[test]
fn without_the_flag_the_hook_is_an_unknown_path() {
    let server = TestServer::start();
    let (status, body) = put_delay(&server, r#"{"ms": 5}"#);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "ERR");
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    assert_eq!(delayed_fsyncs(&mut con), 0, "nothing slowed the disk");
    let (_, doc) = {
        let (status, _, text) =
            http_request(&server.http_addr, "GET", "/openapi.json", None, "application/json");
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    assert!(doc["paths"].get(FSYNC_DELAY).is_none(), "a test hook is not part of the documented API");
}

#[test]
fn with_the_flag_every_fsync_is_delayed_until_cleared_and_writes_still_succeed() {
    let server = TestServer::start_with(&["--fault-injection"]);
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("before").arg("1").query(&mut con).unwrap();
    assert_eq!(delayed_fsyncs(&mut con), 0);

    let (status, body) = put_delay(&server, r#"{"ms": 2}"#);
    assert_eq!((status, body), (200, json!({"ms": 2})));
    for i in 0..5 {
        let _: () = redis::cmd("SET").arg(format!("slow{i}")).arg(i).query(&mut con).unwrap();
    }
    let pushed: i64 = redis::cmd("Q.PUSH").arg("q").arg("m").query(&mut con).unwrap();
    assert!(pushed > 0);
    let delayed = delayed_fsyncs(&mut con);
    assert!(delayed >= 6, "each acknowledged write waited for a delayed fsync: {delayed}");
    let (_, scrape) = Scrape::get(&server.http_addr);
    assert!(scrape.value("turnstile_fsync_delayed_total", &[]) >= delayed as f64);

    let (status, body) = put_delay(&server, r#"{"ms": 0}"#);
    assert_eq!((status, body), (200, json!({"ms": 0})));
    // The server's own background writes (ticks, keep-alives) may still be in a delayed fsync
    // when the delay is cleared: wait until the count settles, then writes add nothing to it.
    let mut last = delayed_fsyncs(&mut con);
    until("no fsync is delayed any more", Duration::from_secs(10), || {
        let _: () = redis::cmd("SET").arg("probe").arg("x").query(&mut con).unwrap();
        let now = delayed_fsyncs(&mut con);
        std::mem::replace(&mut last, now) == now
    });
    let settled = delayed_fsyncs(&mut con);
    for i in 0..5 {
        let _: () = redis::cmd("SET").arg(format!("fast{i}")).arg(i).query(&mut con).unwrap();
    }
    assert_eq!(delayed_fsyncs(&mut con), settled, "cleared: no later fsync was delayed");
    let values: Vec<Option<String>> = ["before", "slow4", "fast4"]
        .iter()
        .map(|key| redis::cmd("GET").arg(key).query(&mut con).unwrap())
        .collect();
    assert_eq!(values, [Some("1".into()), Some("4".into()), Some("4".into())]);
}

#[test]
fn bad_bodies_are_refused_with_a_clear_error() {
    let server = TestServer::start_with(&["--fault-injection"]);
    let cases = [
        (r#"{"ms": 10001}"#, "over the limit of 10000 ms"),
        (r#"{"ms": -1}"#, "invalid JSON body"),
        (r#"{"ms": "5"}"#, "invalid JSON body"),
        (r#"{}"#, "missing field `ms`"),
        (r#"{"ms": 5, "jitter": 1}"#, "unknown field `jitter`"),
        ("not json", "invalid JSON body"),
    ];
    for (body, words) in cases {
        let (status, reply) = put_delay(&server, body);
        assert_eq!(status, 400, "{body}: {reply}");
        assert_eq!(reply["code"], "ERR", "{body}: {reply}");
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{body}: {message:?} should say {words:?}");
    }
    let (status, _, _) = http_request(&server.http_addr, "GET", FSYNC_DELAY, None, "application/json");
    assert_eq!(status, 405, "only PUT sets a delay");
    let mut con = server.client();
    assert_eq!(delayed_fsyncs(&mut con), 0, "a refused body set nothing");
    let (status, reply) = put_delay(&server, r#"{"ms": 10000}"#);
    assert_eq!((status, reply), (200, json!({"ms": 10000})), "the limit itself is allowed");
    let (status, _) = put_delay(&server, r#"{"ms": 0}"#);
    assert_eq!(status, 200);
}
