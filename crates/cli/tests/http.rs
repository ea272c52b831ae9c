//! The HTTP API with the real binary: every route, its errors and their codes, and the OpenAPI
//! document listing exactly the routes served. The HTTP client is a few lines of HTTP/1.1 over a
//! socket (one request per connection), so what is checked is the bytes on the wire.

mod common;

use std::time::Duration;

use common::{TestServer, http_request, until};
use serde_json::{Value, json};

/// How long a test waits for a request it sent to show as waiting: well within the waits the
/// requests ask for, so a request is seen waiting long before it could have given up.
const WAIT: Duration = Duration::from_secs(5);

/// Sends one request; returns the status and the body as JSON (`Value::Null` when not JSON).
fn request(server: &TestServer, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, _, text) = raw(server, method, path, body, "application/json");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn raw(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<&str>,
    content_type: &str,
) -> (u16, String, String) {
    http_request(&server.http_addr, method, path, body, content_type)
}

fn get(server: &TestServer, path: &str) -> (u16, Value) {
    request(server, "GET", path, None)
}

fn post(server: &TestServer, path: &str, body: Value) -> (u16, Value) {
    request(server, "POST", path, Some(&body.to_string()))
}

/// Asserts an error response: its status and stable code.
fn assert_error(response: (u16, Value), status: u16, code: &str) {
    assert_eq!(response.0, status, "{}", response.1);
    assert_eq!(response.1["code"], code, "{}", response.1);
    assert!(response.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[test]
fn health_readiness_and_overview() {
    let server = TestServer::start();
    assert_eq!(get(&server, "/healthz"), (200, json!({"status": "ok"})));
    let (status, ready) = get(&server, "/readyz");
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    assert_eq!(ready["leader"], 1);
    let (status, overview) = get(&server, "/api/overview");
    assert_eq!(status, 200);
    assert_eq!(overview["resp_addr"], server.addr.as_str());
    assert_eq!(overview["admin"], true, "loopback clients get the admin actions");
    assert_eq!(overview["version"], env!("CARGO_PKG_VERSION"));
    let (status, head, body) = raw(&server, "GET", "/", None, "text/plain");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"));
    assert!(body.contains("<html") || body.contains("<!doctype html"), "the dashboard");
    assert_error(get(&server, "/no/such/route"), 404, "ERR");
}

#[test]
fn locks_and_semaphores_over_http() {
    let server = TestServer::start();
    let (status, grant) = post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 30_000, "owner": "app-1"}));
    assert_eq!(status, 200, "{grant}");
    assert_eq!((grant["granted"].as_bool(), grant["ttl_ms"].as_u64()), (Some(true), Some(30_000)));
    let token = grant["token"].as_u64().unwrap();
    // The same owner again: the same hold (idempotent); another owner: not granted.
    assert_eq!(
        post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 30_000, "owner": "app-1"})).1["token"],
        token
    );
    assert_eq!(
        post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 1000, "owner": "app-2"})).1,
        json!({"granted": false})
    );
    let waited =
        post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 1000, "owner": "app-2", "wait_ms": 200}));
    assert_eq!(waited.1, json!({"granted": false}), "a wait that runs out");

    // The hold outlives the request that took it (KEEP), visible over RESP too.
    let mut con = server.client();
    let live: i64 = redis::cmd("FENCE.CHECK").arg("L").arg(token).query(&mut con).unwrap();
    assert_eq!(live, 1);
    let (status, info) = get(&server, "/api/locks/L");
    assert_eq!(status, 200);
    assert_eq!(
        (info["mode"].as_str(), info["holders"][0]["token"].as_u64()),
        (Some("exclusive"), Some(token))
    );
    assert_eq!(info["holders"][0]["owner"], "app-1");
    let (_, list) = get(&server, "/api/locks?prefix=L");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(get(&server, "/api/locks?prefix=zzz").1, json!([]));

    assert_eq!(
        post(&server, "/api/locks/L/renew", json!({"token": token, "ttl_ms": 60_000})),
        (200, json!({"ttl_ms": 60_000}))
    );
    assert_eq!(
        post(&server, "/api/locks/L/release", json!({"token": token})),
        (200, json!({"released": true}))
    );
    assert_eq!(
        post(&server, "/api/locks/L/release", json!({"token": token})),
        (200, json!({"released": false}))
    );
    assert_error(post(&server, "/api/locks/L/renew", json!({"token": token, "ttl_ms": 1000})), 423, "LOST");

    // Semaphores.
    let sem = |count: u32| {
        post(&server, "/api/semaphores/S/acquire", json!({"limit": 3, "count": count, "ttl_ms": 30_000}))
    };
    let first = sem(2).1;
    assert_eq!(first["granted"], true);
    assert_eq!(sem(2).1, json!({"granted": false}), "only 1 of 3 left");
    assert_eq!(get(&server, "/api/semaphores/S").1["limit"], 3);
    assert_error(post(&server, "/api/semaphores/S/acquire", json!({"limit": 5, "ttl_ms": 1000})), 409, "ERR");
    let token = first["token"].as_u64().unwrap();
    assert_eq!(
        post(&server, "/api/semaphores/S/renew", json!({"token": token, "ttl_ms": 5000})).1,
        json!({"ttl_ms": 5000})
    );
    assert_eq!(
        post(&server, "/api/semaphores/S/release", json!({"token": token})).1,
        json!({"released": true})
    );

    // Bad input: clear errors, nothing changes.
    assert_error(post(&server, "/api/locks/L/acquire", json!({"wait_ms": 10})), 400, "ERR");
    assert_error(post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 0})), 400, "ERR");
    assert_error(post(&server, "/api/locks/L/acquire", json!({"ttl_ms": 10, "limit": 2})), 400, "ERR");
    assert_error(post(&server, "/api/semaphores/S/acquire", json!({"ttl_ms": 10})), 400, "ERR");
    assert_error(request(&server, "POST", "/api/locks/L/release", Some("{not json")), 400, "ERR");
    assert_error(request(&server, "GET", "/api/locks/L/release", None), 405, "ERR");
}

#[test]
fn a_deadlock_is_refused_with_409_and_shown_in_the_wait_for_graph() {
    let server = TestServer::start();
    let acquire = |lock: &str, owner: &str, wait: u64| {
        post(
            &server,
            &format!("/api/locks/{lock}/acquire"),
            json!({"ttl_ms": 30_000, "owner": owner, "wait_ms": wait}),
        )
    };
    assert_eq!(acquire("L1", "a", 0).1["granted"], true);
    assert_eq!(acquire("L2", "b", 0).1["granted"], true);
    // b waits for L1 in the background (its request stays open while it waits).
    let waiting = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| acquire("L1", "b", 20_000));
        until("b waits for L1", WAIT, || {
            get(&server, "/api/wait-for").1["edges"].as_array().is_some_and(|e| !e.is_empty())
        });
        let (_, graph) = get(&server, "/api/wait-for");
        assert_eq!(graph["edges"], json!([{"owner": "b", "lock": "L1", "blocked_by": "a"}]));
        let (_, sessions) = get(&server, "/api/sessions");
        assert!(
            sessions.as_array().unwrap().iter().any(|s| s["waits"] == 1),
            "the waiting request's session: {sessions}"
        );
        // a asking for L2 would close the cycle.
        assert_error(acquire("L2", "a", 5_000), 409, "DEADLOCK");
        let (_, graph) = get(&server, "/api/wait-for");
        let cycle = &graph["deadlocks"][0]["cycle"];
        assert_eq!(cycle.as_array().unwrap().len(), 2, "{graph}");
        assert!(graph["deadlocks"][0]["at_ms"].as_u64().unwrap() > 0);
        // a lets go of L1: b gets it.
        let token = get(&server, "/api/locks/L1").1["holders"][0]["token"].as_u64().unwrap();
        post(&server, "/api/locks/L1/release", json!({"token": token}));
        waiter.join().unwrap()
    });
    assert_eq!(waiting.1["granted"], true);
}

#[test]
fn queues_over_http() {
    let server = TestServer::start();
    let put = |path: &str, body: Value| request(&server, "PUT", path, Some(&body.to_string()));
    assert_eq!(
        put("/api/queues/jobs", json!({"max_deliveries": 2, "dead_letter": "jobs.dead", "max_len": 3})).1,
        json!({"created": true})
    );
    assert_eq!(
        put("/api/queues/jobs", json!({"max_deliveries": 2, "dead_letter": "jobs.dead", "max_len": 3})).1,
        json!({"created": false})
    );
    assert_error(put("/api/queues/jobs", json!({"max_len": 5})), 409, "ERR");
    assert_error(put("/api/queues/jobs", json!({"overflow": "sometimes"})), 400, "ERR");
    assert_eq!(
        request(&server, "PUT", "/api/queues/defaults", None).1,
        json!({"created": true}),
        "no body: defaults"
    );

    let push = |body: Value| post(&server, "/api/queues/jobs/messages", body);
    let first = push(json!({"payload": "one", "priority": 1})).1["id"].as_u64().unwrap();
    let urgent = push(json!({"payload": "two ✓", "priority": 9, "dedup": "d2"})).1;
    assert_eq!(
        push(json!({"payload": "again", "dedup": "d2"})).1,
        json!({"id": urgent["id"], "duplicate": true})
    );
    push(json!({"payload": "later", "delay_ms": 60_000}));
    assert_error(push(json!({"payload": "x"})), 429, "FULL");
    assert_error(push(json!({"payload": "x", "priority": 10})), 400, "ERR");
    assert_error(push(json!({"payload": "x", "fence": {"lock": "nope", "token": 1}})), 409, "FENCED");
    assert_error(push(json!({"payload": "x", "extra": 1})), 400, "ERR");
    // `curl -d` sends a form content type: the body is read as JSON all the same.
    let (status, _, body) = raw(
        &server,
        "POST",
        "/api/queues/form/messages",
        Some(r#"{"payload":"p"}"#),
        "application/x-www-form-urlencoded",
    );
    assert_eq!(status, 200, "{body}");

    let (_, peeked) = get(&server, "/api/queues/jobs/messages?count=5");
    assert_eq!(
        peeked.as_array().unwrap().iter().map(|m| m["payload"].clone()).collect::<Vec<_>>(),
        [json!("two ✓"), json!("one")]
    );
    let (status, stats) = get(&server, "/api/queues/jobs");
    assert_eq!(status, 200);
    assert_eq!(
        (stats["ready"].as_u64(), stats["delayed"].as_u64(), stats["deduplicated"].as_u64()),
        (Some(2), Some(1), Some(1))
    );

    let (_, popped) = post(&server, "/api/queues/jobs/pop", json!({"count": 2, "lease_ms": 60_000}));
    let deliveries = popped["deliveries"].as_array().unwrap().clone();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[1]["id"], first);
    let receipt = |i: usize| deliveries[i]["receipt"].as_u64().unwrap();
    assert_eq!(
        post(&server, "/api/queues/jobs/extend", json!({"receipt": receipt(0), "lease_ms": 90_000})).1,
        json!({"lease_ms": 90_000})
    );
    assert_eq!(
        post(&server, "/api/queues/jobs/ack", json!({"receipts": [receipt(0)]})).1,
        json!({"acked": 1})
    );
    assert_error(
        post(&server, "/api/queues/jobs/extend", json!({"receipt": receipt(0), "lease_ms": 1000})),
        423,
        "LOST",
    );
    assert_eq!(
        post(&server, "/api/queues/jobs/nack", json!({"receipt": receipt(1), "dead": true})).1,
        json!({"nacked": true})
    );
    assert_eq!(get(&server, "/api/queues/jobs.dead").1["ready"], 1);
    assert_eq!(
        post(&server, "/api/queues/jobs.dead/redrive", json!({"target": "jobs"})).1,
        json!({"moved": 1})
    );
    assert_error(post(&server, "/api/queues/jobs/ack", json!({"receipts": []})), 400, "ERR");

    // A waiting pop is answered when a push arrives (over RESP here).
    let popped = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| post(&server, "/api/queues/empty/pop", json!({"wait_ms": 10_000})));
        until("the pop waits", WAIT, || get(&server, "/api/queues/empty").1["waiting_pops"] == 1);
        let mut con = server.client();
        let _: u64 = redis::cmd("Q.PUSH").arg("empty").arg("woke").query(&mut con).unwrap();
        waiter.join().unwrap()
    });
    assert_eq!(popped.1["deliveries"][0]["payload"], "woke");
    assert_eq!(post(&server, "/api/queues/empty/pop", json!({"wait_ms": 100})).1, json!({"deliveries": []}));

    let (_, list) = get(&server, "/api/queues?prefix=jobs");
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|q| q["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["jobs", "jobs.dead"]);
    assert_eq!(post(&server, "/api/queues/jobs/purge", json!({})).1, json!({"purged": 2}));
    assert_eq!(request(&server, "DELETE", "/api/queues/jobs", None).1, json!({"deleted": true}));
    assert_error(get(&server, "/api/queues/jobs"), 404, "ERR");
    assert_eq!(request(&server, "DELETE", "/api/queues/jobs", None).1, json!({"deleted": false}));
}

#[test]
fn pushes_past_max_memory_are_refused_with_507() {
    let server = TestServer::start_with(&["--max-memory", "10"]);
    let push = |payload: &str| post(&server, "/api/queues/q/messages", json!({"payload": payload}));
    assert_eq!(push("12345").0, 200);
    assert_error(push("123456"), 507, "OOM");
    assert_eq!(get(&server, "/api/queues/q").1["ready"], 1, "what was stored stays");
}

#[test]
fn a_body_past_the_limit_is_refused_with_413() {
    let server = TestServer::start_with(&["--max-payload", "1024"]);
    let big = "x".repeat(200_000);
    let (status, body) =
        request(&server, "POST", "/api/queues/q/messages", Some(&json!({"payload": big}).to_string()));
    assert_eq!((status, body["code"].as_str()), (413, Some("ERR")), "{body}");
    assert_eq!(get(&server, "/healthz").0, 200, "the server carries on");
}

#[test]
fn the_openapi_document_lists_every_route_served() {
    let server = TestServer::start();
    let (status, doc) = get(&server, "/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, methods) in paths {
        for (method, operation) in methods.as_object().unwrap() {
            operations += 1;
            assert!(operation["summary"].as_str().is_some_and(|s| !s.is_empty()), "{method} {path}");
            // Every documented route is served: fill in path parameters; the answer is never
            // the router's 404 or 405 (a 404 for a missing queue says so in its message).
            let concrete = path.replace("{name}", "openapi-probe");
            let body = operation.get("requestBody").map(|_| "{}");
            let (status, reply) = request(&server, &method.to_ascii_uppercase(), &concrete, body);
            assert_ne!(status, 405, "{method} {path}");
            if status == 404 {
                assert!(
                    !reply["message"].as_str().unwrap_or("").starts_with("no route"),
                    "{method} {path}: {reply}"
                );
            }
        }
    }
    assert!(operations >= 25, "{operations} operations documented");
    // And a route that is not documented is not served.
    assert_error(get(&server, "/api/undocumented"), 404, "ERR");
}

#[test]
fn a_request_waiting_for_a_lock_ends_when_the_server_stops() {
    let mut server = TestServer::start();
    let server_ref = &server;
    let acquire = move |owner: &str, wait: u64| {
        post(server_ref, "/api/locks/L/acquire", json!({"ttl_ms": 60_000, "owner": owner, "wait_ms": wait}))
    };
    assert_eq!(acquire("a", 0).1["granted"], true);
    let waited = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| acquire("b", 60_000));
        until("b waits for L", WAIT, || {
            get(server_ref, "/api/locks/L").1["waiters"].as_array().is_some_and(|w| !w.is_empty())
        });
        let pid = nix::unistd::Pid::from_raw(i32::try_from(server_ref.pid()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        waiter.join().unwrap()
    });
    let code = server.wait_exit();
    // Well before the 60 s wait: the request is answered and the server stops cleanly.
    assert_error(waited, 503, "TRYAGAIN");
    assert_eq!(code, Some(0));
}
