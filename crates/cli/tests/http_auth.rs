//! Users over HTTP with the real binary: Basic and Bearer credentials, 401 with a challenge, a
//! user's names and commands (403 `NOPERM`), the admin actions checked on the server, another
//! user's holds and deliveries, and users changed over HTTP. The client is a few lines of
//! HTTP/1.1 over a socket (one request per connection), so the headers checked are the bytes on
//! the wire.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TestServer, until};
use serde_json::{Value, json};

/// `default` (requirepass) is the admin; alice and bob are not, and alice may touch only `app:*`.
const USERS: &str = r#"
requirepass = "root-pw"

[users.alice]
password = "alice-pw"
tokens = ["alice-token"]
categories = ["+@all", "-@admin"]
queues = ["app:*"]
locks = ["app:*"]

[users.bob]
password = "bob-pw"
categories = ["+@all", "-@admin"]
queues = ["*"]
locks = ["*"]

[users.dave]
password = "dave-pw"
categories = ["+@all", "-@admin"]
locks = ["*"]
max-connections = 1
"#;

/// A server with [`USERS`]; the config file lives as long as the returned handle.
fn start() -> (TestServer, tempfile::NamedTempFile) {
    TestServer::start_with_config(USERS, &[])
}

/// Credentials a request carries.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    Basic(&'a str, &'a str),
    Bearer(&'a str),
    /// A header as is.
    Raw(&'a str),
}

const ROOT: Auth<'static> = Auth::Basic("", "root-pw");
const ALICE: Auth<'static> = Auth::Basic("alice", "alice-pw");
const BOB: Auth<'static> = Auth::Basic("bob", "bob-pw");

struct Response {
    status: u16,
    /// The head, lower-cased.
    head: String,
    body: Value,
}

fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    auth: Auth,
    body: Option<Value>,
    extra: &str,
) -> Response {
    let authorization = match auth {
        Auth::None => String::new(),
        Auth::Basic(user, password) => {
            format!("Authorization: Basic {}\r\n", base64(&format!("{user}:{password}")))
        }
        Auth::Bearer(token) => format!("Authorization: Bearer {token}\r\n"),
        Auth::Raw(value) => format!("Authorization: {value}\r\n"),
    };
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let addr = &server.http_addr;
    let mut stream = TcpStream::connect(addr).expect("connects");
    stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{authorization}{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn get(server: &TestServer, path: &str, auth: Auth) -> Response {
    send(server, "GET", path, auth, None, "")
}

fn post(server: &TestServer, path: &str, auth: Auth, body: Value) -> Response {
    send(server, "POST", path, auth, Some(body), "")
}

/// Standard base64 with padding, for the Basic header (the test's own few lines, so what is
/// sent does not depend on the server's decoder).
fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A header's value in a (lower-cased) head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')).map(str::trim)
}

fn assert_refused(response: &Response, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    assert_eq!(response.body["code"], code, "{}", response.body);
}

#[test]
fn without_or_with_wrong_credentials_the_api_answers_401_with_a_challenge() {
    let (server, _dir) = start();
    let challenge = Some(r#"basic realm="turnstile", bearer realm="turnstile""#);
    for path in ["/api/queues", "/api/overview", "/metrics", "/api/whoami"] {
        let refused = get(&server, path, Auth::None);
        assert_refused(&refused, 401, "NOAUTH");
        assert_eq!(refused.body["message"], "Authentication required.");
        assert_eq!(header(&refused.head, "www-authenticate"), challenge, "{path}");
    }
    for wrong in [
        Auth::Basic("alice", "nope"),
        Auth::Basic("nobody", "x"),
        Auth::Bearer("nope"),
        Auth::Raw("Digest x"),
    ] {
        let refused = get(&server, "/api/queues", wrong);
        assert_refused(&refused, 401, "WRONGPASS");
        assert_eq!(refused.body["message"], "invalid username-password pair or user is disabled.");
        assert_eq!(header(&refused.head, "www-authenticate"), challenge);
    }
    // A script (the dashboard) is not offered Basic, which a browser would answer with its own dialog.
    let scripted =
        send(&server, "GET", "/api/queues", Auth::None, None, "X-Requested-With: XMLHttpRequest\r\n");
    assert_refused(&scripted, 401, "NOAUTH");
    assert_eq!(header(&scripted.head, "www-authenticate"), Some(r#"bearer realm="turnstile""#));
    // Health checks, the page itself and the API's description stay open.
    for path in ["/healthz", "/readyz", "/", "/openapi.json"] {
        assert_eq!(get(&server, path, Auth::None).status, 200, "{path}");
    }
    // The right credentials: Basic, or a Bearer token; an empty user name is `default`.
    let alice = get(&server, "/api/whoami", ALICE);
    assert_eq!(
        (alice.status, &alice.body),
        (200, &json!({"user": "alice", "admin": false, "authentication": true}))
    );
    assert_eq!(get(&server, "/api/whoami", Auth::Bearer("alice-token")).body["user"], "alice");
    let root = get(&server, "/api/whoami", ROOT);
    assert_eq!((root.body["user"].as_str(), root.body["admin"].as_bool()), (Some("default"), Some(true)));
    assert_eq!(get(&server, "/metrics", BOB).status, 200);
}

#[test]
fn a_user_limited_to_app_names_cannot_touch_others() {
    let (server, _dir) = start();
    assert_eq!(post(&server, "/api/queues/app:jobs/messages", ALICE, json!({"payload": "x"})).status, 200);
    let refused = post(&server, "/api/queues/other/messages", ALICE, json!({"payload": "x"}));
    assert_refused(&refused, 403, "NOPERM");
    assert_eq!(refused.body["message"], "No permissions to access a queue");
    assert_refused(
        &post(&server, "/api/locks/other/acquire", ALICE, json!({"ttl_ms": 10_000})),
        403,
        "NOPERM",
    );
    assert_refused(&get(&server, "/api/queues/other", ALICE), 403, "NOPERM");
    // Listings show only the names the user may touch.
    assert_eq!(post(&server, "/api/queues/other/messages", BOB, json!({"payload": "y"})).status, 200);
    let names = |auth| -> Vec<String> {
        let listed = get(&server, "/api/queues", auth).body;
        listed.as_array().expect("a list").iter().map(|q| q["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(names(ALICE), ["app:jobs"]);
    assert_eq!(names(BOB), ["app:jobs", "other"]);
}

#[test]
fn admin_actions_are_refused_to_users_who_are_not_admins_and_work_for_an_admin() {
    let (server, _dir) = start();
    for payload in ["1", "2"] {
        post(&server, "/api/queues/app:dead/messages", ROOT, json!({"payload": payload}));
    }
    let actions: [(&str, &str, Option<Value>, &str); 7] = [
        ("POST", "/api/queues/app:dead/purge", None, "q.purge"),
        ("POST", "/api/queues/app:dead/redrive", Some(json!({"target": "app:live"})), "q.redrive"),
        ("DELETE", "/api/queues/app:dead", None, "q.del"),
        ("GET", "/api/users", None, "acl"),
        ("PUT", "/api/users/mallory", Some(json!({"rules": ["on", ">m", "+@all"]})), "acl"),
        ("DELETE", "/api/users/bob", None, "acl"),
        ("GET", "/api/cluster/snapshot", None, "backup"),
    ];
    for (method, path, body, command) in &actions {
        let refused = send(&server, method, path, ALICE, body.clone(), "");
        assert_refused(&refused, 403, "NOPERM");
        assert_eq!(
            refused.body["message"],
            format!("User alice has no permissions to run the '{command}' command"),
            "{method} {path}"
        );
    }
    assert_eq!(get(&server, "/api/queues/app:dead", ROOT).body["ready"], 2, "nothing was purged");
    assert_eq!(get(&server, "/api/whoami", BOB).status, 200, "bob was not deleted");
    // The admin: the same routes work.
    let moved =
        post(&server, "/api/queues/app:dead/redrive", ROOT, json!({"target": "app:live", "count": 1}));
    assert_eq!((moved.status, &moved.body), (200, &json!({"moved": 1})));
    let purged = post(&server, "/api/queues/app:dead/purge", ROOT, json!({}));
    assert_eq!((purged.status, &purged.body), (200, &json!({"purged": 1})));
    let deleted = send(&server, "DELETE", "/api/queues/app:dead", ROOT, None, "");
    assert_eq!((deleted.status, &deleted.body), (200, &json!({"deleted": true})));
    let users = get(&server, "/api/users", ROOT);
    assert_eq!(users.status, 200);
    let alice =
        users.body.as_array().unwrap().iter().find(|u| u["name"] == "alice").expect("alice listed").clone();
    let rules = alice["rules"].as_str().unwrap();
    assert!(rules.starts_with("user alice on #") && rules.contains("queue~app:*"), "{rules}");
    assert!(!rules.contains("alice-pw"), "a password is shown only as its hash");
    assert_eq!(get(&server, "/api/cluster/snapshot", ROOT).status, 200);
}

#[test]
fn another_users_hold_or_delivery_is_released_or_acked_only_by_an_admin() {
    let (server, _dir) = start();
    let grant = post(&server, "/api/locks/app:lock/acquire", ALICE, json!({"ttl_ms": 60_000}));
    let token = grant.body["token"].as_u64().expect("granted");
    // Tokens are fencing numbers, not secrets: bob knows it, and is refused anyway.
    let refused = post(&server, "/api/locks/app:lock/release", BOB, json!({"token": token}));
    assert_refused(&refused, 403, "NOPERM");
    assert_eq!(refused.body["message"], format!("hold {token} belongs to another user"));
    assert_refused(
        &post(&server, "/api/locks/app:lock/renew", BOB, json!({"token": token, "ttl_ms": 1000})),
        403,
        "NOPERM",
    );
    // Another user's holds are not listed to bob; alice and the admin see hers.
    let holders =
        |auth| get(&server, "/api/locks/app:lock", auth).body["holders"].as_array().expect("holders").len();
    assert_eq!((holders(BOB), holders(ALICE), holders(ROOT)), (0, 1, 1));
    let listed = get(&server, "/api/locks", BOB).body;
    assert!(listed[0]["holders"].as_array().unwrap().is_empty(), "{listed}");
    let released = post(&server, "/api/locks/app:lock/release", ROOT, json!({"token": token}));
    assert_eq!((released.status, &released.body), (200, &json!({"released": true})));

    // Deliveries by receipt, the same.
    post(&server, "/api/queues/app:q/messages", ALICE, json!({"payload": "m"}));
    let popped = post(&server, "/api/queues/app:q/pop", ALICE, json!({}));
    let receipt = popped.body["deliveries"][0]["receipt"].as_u64().expect("a delivery");
    assert_refused(
        &post(&server, "/api/queues/app:q/ack", BOB, json!({"receipts": [receipt]})),
        403,
        "NOPERM",
    );
    assert_refused(&post(&server, "/api/queues/app:q/nack", BOB, json!({"receipt": receipt})), 403, "NOPERM");
    let acked = post(&server, "/api/queues/app:q/ack", ALICE, json!({"receipts": [receipt]}));
    assert_eq!((acked.status, &acked.body), (200, &json!({"acked": 1})));
}

#[test]
fn users_changed_over_http_log_in_and_survive_a_restart() {
    let (mut server, _dir) = start();
    let rules = json!({"rules": ["on", ">carol-pw", "+@all", "-@admin", "queue~carol:*"]});
    let set = send(&server, "PUT", "/api/users/carol", ROOT, Some(rules), "");
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body["enabled"], true);
    let carol = Auth::Basic("carol", "carol-pw");
    assert_eq!(get(&server, "/api/whoami", carol).body["user"], "carol");
    assert_eq!(post(&server, "/api/queues/carol:q/messages", carol, json!({"payload": "x"})).status, 200);
    assert_refused(
        &post(&server, "/api/queues/app:q/messages", carol, json!({"payload": "x"})),
        403,
        "NOPERM",
    );
    // A bad rule is refused with Redis's words, and changes nothing.
    let bad = send(&server, "PUT", "/api/users/carol", ROOT, Some(json!({"rules": ["+@nosuch"]})), "");
    assert_refused(&bad, 400, "ERR");
    assert!(bad.body["message"].as_str().unwrap().contains("Unknown command or category"), "{}", bad.body);
    // Through the log: still there after a restart.
    server.restart();
    until("carol logs in after the restart", Duration::from_secs(10), || {
        get(&server, "/api/whoami", carol).body["user"] == "carol"
    });
    let deleted = send(&server, "DELETE", "/api/users/carol", ROOT, None, "");
    assert_eq!((deleted.status, &deleted.body), (200, &json!({"deleted": true})));
    assert_refused(&get(&server, "/api/whoami", carol), 401, "WRONGPASS");
    let default = send(&server, "DELETE", "/api/users/default", ROOT, None, "");
    assert_refused(&default, 400, "ERR");
}

#[test]
fn without_users_everything_stays_open_to_a_loopback_client() {
    let server = TestServer::start();
    let whoami = get(&server, "/api/whoami", Auth::None);
    assert_eq!(whoami.body, json!({"user": "default", "admin": true, "authentication": false}));
    // Credentials are not looked at: there is nobody to check them against.
    assert_eq!(get(&server, "/api/queues", Auth::Basic("x", "y")).status, 200);
    post(&server, "/api/queues/q/messages", Auth::None, json!({"payload": "x"}));
    assert_eq!(post(&server, "/api/queues/q/purge", Auth::None, json!({})).body, json!({"purged": 1}));
}

#[test]
fn a_request_in_progress_is_one_of_its_users_max_connections() {
    let (server, _dir) = start();
    let dave = Auth::Basic("dave", "dave-pw");
    let grant = post(&server, "/api/locks/busy/acquire", ROOT, json!({"ttl_ms": 60_000}));
    let token = grant.body["token"].as_u64().expect("granted");
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            post(&server, "/api/locks/busy/acquire", dave, json!({"ttl_ms": 60_000, "wait_ms": 30_000}))
        });
        until("dave's request waits in line", Duration::from_secs(10), || {
            get(&server, "/api/locks/busy", ROOT).body["waiters"].as_array().is_some_and(|w| w.len() == 1)
        });
        let refused = get(&server, "/api/whoami", dave);
        assert_eq!(refused.status, 429, "{}", refused.body);
        assert_eq!(refused.body["message"], "user dave has reached max-connections (1)");
        assert_eq!(get(&server, "/api/whoami", BOB).status, 200, "other users are not limited by dave's");
        post(&server, "/api/locks/busy/release", ROOT, json!({"token": token}));
        assert_eq!(waiting.join().expect("the waiting request").body["granted"], true);
    });
    assert_eq!(get(&server, "/api/whoami", dave).status, 200, "a finished request frees its place");
}
