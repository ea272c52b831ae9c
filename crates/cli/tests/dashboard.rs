//! The dashboard in a real browser: the `turnstile` binary, state made over RESP with the `redis`
//! crate, and Debian's headless Chromium reading `GET /` and the JSON API from the HTTP listener.
//!
//! ```text
//!  test ──RESP (redis crate)──► turnstile ◄──HTTP: GET /, GET /api/*, POST release── Chromium
//!    └──────────WebDriver (JSON over HTTP/1.1)──────────► chromedriver ──DevTools──────┘
//! ```
//!
//! Chromium is driven over WebDriver by chromedriver (Debian's `chromium-driver`), through the small
//! client at the bottom of this file: the protocol is JSON over HTTP/1.1, and the few endpoints used
//! here fit in a `TcpStream` and `serde_json` (no WebDriver crate). That was chosen over the
//! driverless `chromium --headless --dump-dom --virtual-time-budget=…` because the page polls
//! forever: a one-shot dump bets on how virtual time treats fetches in flight, cannot click or
//! answer a confirm dialog, and a failure shows only a DOM dump. With WebDriver the test waits, in
//! real time and bounded, for exactly the DOM it needs, clicks like a user (a queue row, a "force
//! release" button and its confirm dialog), and on a timeout prints what the page shows instead.
//! The screenshot is of the page the assertions read: `target/ci-artifacts/dashboard.png`, for a
//! human to look at.
//!
//! Without `chromium` and `chromedriver` the test is skipped, unless `TURNSTILE_REQUIRE_PEERS` is
//! set (CI sets it, after `.ci/run` installed them): then it fails.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::TestServer;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long the page may take to show what the test waits for (it polls every second).
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one WebDriver call may take (starting the browser is the slowest).
const WEBDRIVER_TIMEOUT: Duration = Duration::from_secs(30);
/// A PNG of the whole page is far larger than this; a blank one (6 KiB at 1400×1000) is not.
const MIN_SCREENSHOT_BYTES: usize = 20_000;

/// The state the test made over RESP, as the page shows it once it has caught up.
const WAIT_FOR_STATE: &str = r#"
    const queue = document.querySelector('tr[data-queue="dash-q"]');
    const lock = document.querySelector('tr[data-lock="dash-lock"]');
    if (!queue || !lock || !lock.querySelector('[data-field="waiters"] li[data-owner]')) return null;
    const text = (root, selector) => root.querySelector(selector).textContent.trim();
    return {
        ready: text(queue, '[data-field="ready"]'),
        in_flight: text(queue, '[data-field="in_flight"]'),
        holders: text(lock, '[data-field="holders"]'),
        tokens: Array.from(lock.querySelectorAll('[data-field="holders"] li[data-token]'), li => li.dataset.token),
        holder_owners: Array.from(lock.querySelectorAll('[data-field="holders"] li[data-owner]'), li => li.dataset.owner),
        waiters: Array.from(lock.querySelectorAll('[data-field="waiters"] li[data-owner]'), li => li.dataset.owner),
        release_buttons: lock.querySelectorAll('button[data-action="release"]').length,
        sessions: text(document, '#overview [data-field="sessions"]'),
        edges: Array.from(document.querySelectorAll('#wait-edges li[data-edge]'), li => li.textContent),
        page: document.body.dataset.state,
    };
"#;

/// The cycles of the refused deadlocks, once there is one.
const WAIT_FOR_DEADLOCK: &str = r#"
    const cycles = Array.from(document.querySelectorAll('#deadlocks li[data-deadlock] .cycle'), c => c.textContent);
    return cycles.length ? cycles : null;
"#;

/// The open queue panel, once it shows the peeked messages.
const WAIT_FOR_PEEK: &str = r#"
    const panel = document.querySelector('#queue-detail');
    const rows = panel.querySelectorAll('tr[data-message]');
    if (panel.hidden || panel.dataset.queue !== 'dash-q' || rows.length === 0) return null;
    return {
        payloads: Array.from(rows, row => row.querySelector('[data-field="payload"]').textContent),
        elements_from_payloads: panel.querySelectorAll('#queue-peek img, #queue-peek b').length,
        admin_actions_shown: !document.querySelector('#queue-actions').hidden,
    };
"#;

/// The lock after the force release: the waiter was granted it.
const WAIT_FOR_HANDOVER: &str = r#"
    const lock = document.querySelector('tr[data-lock="dash-lock"]');
    if (!lock || lock.querySelector('[data-field="waiters"] li[data-owner]')) return null;
    const holders = Array.from(lock.querySelectorAll('[data-field="holders"] li[data-token]'));
    if (holders.length !== 1) return null;
    return {
        token: holders[0].dataset.token,
        owner: holders[0].dataset.owner,
        result: document.querySelector('#lock-action-result').textContent,
    };
"#;

/// The wait-for list once it has the three edges of a lock with two waiters.
const WAIT_FOR_LINE: &str = r#"
    const edges = Array.from(document.querySelectorAll('#wait-edges li[data-edge]'), li => li.textContent);
    return edges.length === 3 ? edges : null;
"#;

#[test]
fn the_wait_for_graph_names_who_holds_the_lock_a_second_waiter_waits_for() {
    let Some((chromedriver, chromium)) = browser() else { return };
    let server = TestServer::start();
    let mut alice = server.client();
    let _: (u64, u64) =
        redis::cmd("LOCK.ACQUIRE").arg(&["line-lock", "60000", "OWNER", "alice"]).query(&mut alice).unwrap();
    let waiters = |con: &mut redis::Connection| -> usize {
        let info: redis::Value = redis::cmd("LOCK.INFO").arg("line-lock").query(con).unwrap();
        let redis::Value::Array(fields) = info else { panic!("{info:?}") };
        match fields.chunks(2).find(|kv| kv[0] == redis::Value::BulkString(b"waiters".to_vec())) {
            Some([_, redis::Value::Array(waiters)]) => waiters.len(),
            _ => panic!("no waiters in {fields:?}"),
        }
    };
    // bob waits first, carol behind him: each on a connection of its own, blocked in LOCK.ACQUIRE.
    let mut waiting = Vec::new();
    for (owner, ahead) in [("bob", 0), ("carol", 1)] {
        let mut con = server.client();
        waiting.push(thread::spawn(move || {
            redis::cmd("LOCK.ACQUIRE")
                .arg(&["line-lock", "60000", "WAIT", "30000", "OWNER", owner])
                .query::<Option<(u64, u64)>>(&mut con)
        }));
        let deadline = Instant::now() + PAGE_TIMEOUT;
        while waiters(&mut alice) == ahead {
            assert!(Instant::now() < deadline, "{owner} never got in line");
            thread::sleep(Duration::from_millis(20));
        }
    }

    let browser = WebDriver::start(&chromedriver, &chromium);
    browser.navigate(&format!("http://{}/", server.http_addr));
    let edges = browser.wait_for("the lock's three wait-for edges", WAIT_FOR_LINE);
    let mut edges: Vec<&str> = edges.as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    edges.sort_unstable();
    assert_eq!(
        edges,
        [
            "bob waits for 'line-lock' held by alice",
            "carol waits for 'line-lock' behind bob (held by alice)",
            "carol waits for 'line-lock' held by alice",
        ],
        "bob is a waiter, not a holder"
    );

    // alice's connection closes: bob gets the lock, and carol once bob's connection closes.
    drop(alice);
    for waiter in waiting {
        let granted = waiter.join().expect("waiter thread").expect("LOCK.ACQUIRE WAIT");
        assert!(granted.is_some(), "each waiter is granted the lock in turn");
    }
}

#[test]
fn the_dashboard_shows_queues_and_locks_and_releases_a_hold() {
    let Some((chromedriver, chromium)) = browser() else { return };
    let server = TestServer::start();

    // A queue with 2 ready messages and 1 in flight; the second payload is markup that the page
    // must show as text.
    let mut client = server.client();
    for payload in ["first", "<img src=x onerror=\"document.title='run'\"> & <b>bold</b>", "third"] {
        let _: u64 = redis::cmd("Q.PUSH").arg("dash-q").arg(payload).query(&mut client).unwrap();
    }
    let popped: Option<Vec<(u64, u64, String, u64)>> =
        redis::cmd("Q.POP").arg("dash-q").query(&mut client).unwrap();
    assert_eq!(popped.expect("a delivery")[0].2, "first");

    // A held lock, and a second session (holding another lock) waiting for it. The holder's
    // connection stays open until the end: closing it would release the hold.
    let mut holder = server.client();
    let (token, _lease): (u64, u64) =
        redis::cmd("LOCK.ACQUIRE").arg(&["dash-lock", "60000"]).query(&mut holder).unwrap();
    let mut waiter = server.client();
    let _: (u64, u64) = redis::cmd("LOCK.ACQUIRE").arg(&["dash-other", "60000"]).query(&mut waiter).unwrap();
    let waiting = thread::spawn(move || {
        let granted: redis::RedisResult<Option<(u64, u64)>> =
            redis::cmd("LOCK.ACQUIRE").arg(&["dash-lock", "60000", "WAIT", "30000"]).query(&mut waiter);
        (granted, waiter)
    });

    let browser = WebDriver::start(&chromedriver, &chromium);
    browser.navigate(&format!("http://{}/", server.http_addr));

    let shown = browser.wait_for("the queue and the lock with its waiter", WAIT_FOR_STATE);
    assert_eq!(shown["page"], "ok", "{shown:#}");
    assert_eq!((shown["ready"].as_str(), shown["in_flight"].as_str()), (Some("2"), Some("1")), "{shown:#}");
    assert_eq!(shown["tokens"], json!([token.to_string()]), "{shown:#}");
    assert!(shown["holders"].as_str().unwrap().contains(&token.to_string()), "{shown:#}");
    let holder_owner = shown["holder_owners"][0].as_str().unwrap().to_owned();
    let waiters = shown["waiters"].as_array().unwrap();
    assert_eq!(waiters.len(), 1, "{shown:#}");
    let waiter_owner = waiters[0].as_str().unwrap().to_owned();
    assert_ne!(waiter_owner, holder_owner, "{shown:#}");
    assert_eq!(
        shown["edges"],
        json!([format!("{waiter_owner} waits for 'dash-lock' held by {holder_owner}")]),
        "{shown:#}"
    );
    let sessions: u64 =
        shown["sessions"].as_str().unwrap().replace(',', "").parse().expect("a count of sessions");
    assert!(sessions >= 2, "the holder and the waiter each have a session: {shown:#}");
    // The test's browser is a loopback client: admin actions are offered.
    assert_eq!(shown["release_buttons"], 1, "{shown:#}");

    // The holder asking for the waiter's other lock would close a cycle: refused, and listed.
    let refused = redis::cmd("LOCK.ACQUIRE")
        .arg(&["dash-other", "60000", "WAIT", "10000"])
        .query::<Option<(u64, u64)>>(&mut holder)
        .unwrap_err();
    assert_eq!(refused.code(), Some("DEADLOCK"), "{refused}");
    let deadlocks = browser.wait_for("the refused deadlock", WAIT_FOR_DEADLOCK);
    let cycle = deadlocks[0].as_str().unwrap();
    for edge in [
        format!("{holder_owner} waits for 'dash-other' held by {waiter_owner}"),
        format!("{waiter_owner} waits for 'dash-lock' held by {holder_owner}"),
    ] {
        assert!(cycle.contains(&edge), "{edge:?} is not in {deadlocks:#}");
    }

    // A click on the queue opens its panel with the next (ready) messages, markup as text.
    browser.click(r#"tr[data-queue="dash-q"]"#);
    let peek = browser.wait_for("the queue's next messages", WAIT_FOR_PEEK);
    assert_eq!(
        peek["payloads"],
        json!(["<img src=x onerror=\"document.title='run'\"> & <b>bold</b>", "third"]),
        "{peek:#}"
    );
    assert_eq!(peek["elements_from_payloads"], 0, "a payload became markup: {peek:#}");
    assert_eq!(peek["admin_actions_shown"], true, "{peek:#}");
    assert_ne!(browser.execute("return document.title"), "run", "a payload ran as script");

    let png = browser.screenshot_whole_page();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > MIN_SCREENSHOT_BYTES, "a {} byte screenshot is blank", png.len());
    let artifacts = target_dir().join("ci-artifacts");
    std::fs::create_dir_all(&artifacts).expect("create target/ci-artifacts");
    let saved = artifacts.join("dashboard.png");
    std::fs::write(&saved, &png).expect("write the screenshot");
    assert!(std::fs::metadata(&saved).expect("screenshot saved").len() > MIN_SCREENSHOT_BYTES as u64);
    eprintln!("dashboard screenshot: {}", saved.display());

    // "Force release" asks first, then the waiter is granted the lock with a newer token.
    browser.click(r#"tr[data-lock="dash-lock"] button[data-action="release"]"#);
    let question = browser.accept_confirm();
    assert!(question.contains("dash-lock") && question.contains(&token.to_string()), "{question}");
    let after = browser.wait_for("the waiter holding the lock", WAIT_FOR_HANDOVER);
    let (granted, _waiter) = waiting.join().expect("waiter thread");
    let (new_token, _) = granted.expect("LOCK.ACQUIRE WAIT").expect("granted after the force release");
    assert!(new_token > token, "token {new_token} after {token}");
    assert_eq!(after["token"], new_token.to_string(), "{after:#}");
    assert_eq!(after["owner"], waiter_owner.as_str(), "{after:#}");
    assert!(after["result"].as_str().unwrap().contains("released"), "{after:#}");
    drop(holder);
}

/// What the page shows about logging in: its state, whether the form is up, who is logged in.
const LOGIN_STATE: &str = r#"
    return {
        page: document.body.dataset.state,
        form: !document.querySelector('#login').hidden,
        who: document.querySelector('#who').hidden ? null : document.querySelector('#who [data-field="user"]').textContent,
        admin: state.admin,
        result: document.querySelector('#login-result').textContent,
    };
"#;

#[test]
fn with_users_the_dashboard_asks_for_credentials_and_shows_who_is_logged_in() {
    let Some((chromedriver, chromium)) = browser() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("users.toml");
    std::fs::write(
        &config,
        "requirepass = \"root-pw\"\n[users.alice]\npassword = \"alice-pw\"\ncategories = [\"+@all\", \"-@admin\"]\nqueues = [\"*\"]\nlocks = [\"*\"]\n",
    )
    .expect("config written");
    let server = TestServer::start_with(&["--config", config.to_str().expect("utf-8 path")]);
    let browser = WebDriver::start(&chromedriver, &chromium);
    browser.navigate(&format!("http://{}/", server.http_addr));
    let wait_for = |what: &str, condition: &str| {
        browser.wait_for(
            what,
            &format!("const s = (() => {{ {LOGIN_STATE} }})(); return ({condition}) ? s : null;"),
        )
    };
    let log_in = |user: &str, password: &str| {
        browser.execute(&format!(
            "document.querySelector('#login-user').value = {user:?}; document.querySelector('#login-password').value = {password:?}; return null;"
        ));
        browser.click("#login button[type=submit]");
    };
    // The API answered 401: the form, no data, and no dialog of the browser's own over it.
    wait_for("the login form", "s.page === 'login' && s.form");

    log_in("alice", "wrong");
    let refused = wait_for("the refusal", "s.result !== ''");
    assert_eq!(refused["result"], "wrong user name, password or token", "{refused:#}");

    log_in("alice", "alice-pw");
    let alice = wait_for("alice logged in", "s.page === 'ok' && s.who === 'alice'");
    assert_eq!((alice["form"].as_bool(), alice["admin"].as_bool()), (Some(false), Some(false)), "{alice:#}");

    browser.click("#logout");
    wait_for("the login form again", "s.page === 'login' && s.form && s.who === null");

    // The default user (an empty name), an admin: the admin buttons are offered.
    log_in("", "root-pw");
    let root = wait_for("the admin logged in", "s.page === 'ok' && s.who === 'default'");
    assert_eq!(root["admin"], true, "{root:#}");
}

/// chromedriver and Chromium from PATH; `None` (the test is skipped) if either is missing and
/// CI did not ask for them.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromedriver = in_path("chromedriver");
    let chromium = in_path("chromium").or_else(|| in_path("chromium-browser"));
    match (chromedriver, chromium) {
        (Some(driver), Some(chromium)) => Some((driver, chromium)),
        _ if common::peers_required() => {
            panic!(
                "chromium and chromedriver are required (TURNSTILE_REQUIRE_PEERS is set): apt-get install chromium chromium-driver"
            )
        }
        _ => {
            eprintln!(
                "skipped: chromium or chromedriver is not installed (apt-get install chromium chromium-driver)"
            );
            None
        }
    }
}

fn in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|path| path.is_file())
}

/// The workspace's `target` dir (or `CARGO_TARGET_DIR`), where CI collects artifacts.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
    }
}

/// A chromedriver process with one headless Chromium session. Dropping it ends the session
/// (Chromium quits), then kills chromedriver's process group: chromedriver and the Chromium it
/// started, should the session not have ended cleanly.
struct WebDriver {
    chromedriver: Child,
    /// Where chromedriver listens (it picks a free port and says which).
    addr: String,
    /// Empty until Chromium started.
    session: String,
}

/// An error the WebDriver answered with (`error` is its code, e.g. "stale element reference").
#[derive(Debug)]
struct WebDriverError {
    error: String,
    message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// The key under which WebDriver hands out an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

impl WebDriver {
    fn start(chromedriver: &Path, chromium: &Path) -> WebDriver {
        // Its own process group, which Chromium joins: `drop` can end both, and nothing else.
        let mut child = Command::new(chromedriver)
            .arg("--port=0")
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        // "ChromeDriver was started successfully on port 39129." (after "Starting … on port 0")
        let stdout = child.stdout.take().expect("stdout piped");
        let mut driver = WebDriver { chromedriver: child, addr: String::new(), session: String::new() };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.split("started successfully on port ").nth(1) {
                    let _ = tx.send(port.trim_end_matches('.').to_owned());
                }
            }
        });
        let port = rx
            .recv_timeout(WEBDRIVER_TIMEOUT)
            .unwrap_or_else(|_| panic!("chromedriver did not say its port within {WEBDRIVER_TIMEOUT:?}"));
        driver.addr = format!("127.0.0.1:{port}");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--hide-scrollbars", "--window-size=1400,1000"],
            },
        }}});
        let session = request(&driver.addr, "POST", "/session", Some(&capabilities))
            .unwrap_or_else(|e| panic!("chromedriver could not start Chromium: {e}"));
        driver.session = session["sessionId"].as_str().expect("a session id").to_owned();
        driver
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WebDriverError> {
        request(&self.addr, method, &format!("/session/{}{path}", self.session), body)
    }

    fn navigate(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({"url": url}))).expect("navigate");
    }

    /// Runs `script` (a function body) in the page and returns what it returned.
    fn execute(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
            .expect("execute script")
    }

    /// Runs `script` until it returns something other than null, and returns that.
    fn wait_for(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let value = self.execute(script);
            if !value.is_null() {
                return value;
            }
            if Instant::now() >= deadline {
                let page = self.execute("return document.body.innerText");
                panic!(
                    "the page did not show {what} within {PAGE_TIMEOUT:?}; it shows:\n{}",
                    page.as_str().unwrap_or("")
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element `css` selects, as a user would (WebDriver scrolls it into view and
    /// clicks its centre). Retries while it is missing or was just redrawn by a poll.
    fn click(&self, css: &str) {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        loop {
            let clicked = self
                .call("POST", "/element", Some(&json!({"using": "css selector", "value": css})))
                .and_then(|element| {
                    let id = element[ELEMENT_KEY].as_str().expect("an element reference").to_owned();
                    self.call("POST", &format!("/element/{id}/click"), Some(&json!({})))
                });
            match clicked {
                Ok(_) => return,
                Err(e)
                    if Instant::now() < deadline
                        && (e.error == "stale element reference" || e.error == "no such element") =>
                {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("cannot click {css}: {e}"),
            }
        }
    }

    /// Waits for a `confirm()` dialog, accepts it and returns its question.
    fn accept_confirm(&self) -> String {
        let deadline = Instant::now() + PAGE_TIMEOUT;
        let text = loop {
            match self.call("GET", "/alert/text", None) {
                Ok(text) => break text.as_str().unwrap_or_default().to_owned(),
                Err(e) if e.error == "no such alert" && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("no confirm dialog: {e}"),
            }
        };
        self.call("POST", "/alert/accept", Some(&json!({}))).expect("accept the dialog");
        text
    }

    /// A PNG of the whole page: the window is made as tall as the page first.
    fn screenshot_whole_page(&self) -> Vec<u8> {
        let height = self.execute("return document.documentElement.scrollHeight").as_u64().unwrap_or(1000);
        let rect = json!({"width": 1400, "height": height.clamp(1000, 6000)});
        self.call("POST", "/window/rect", Some(&rect)).expect("resize the window");
        let png = self.call("GET", "/screenshot", None).expect("screenshot");
        base64_decode(png.as_str().expect("base64 PNG"))
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", "", None);
        }
        // The group's id is chromedriver's pid (`process_group(0)`).
        if let Ok(pid) = i32::try_from(self.chromedriver.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.chromedriver.wait();
    }
}

/// One WebDriver request: JSON over HTTP/1.1 on a fresh connection. Returns the reply's `value`,
/// or the WebDriver error it carries (or an "io" error: chromedriver is gone or hung).
fn request(addr: &str, method: &str, path: &str, body: Option<&Value>) -> Result<Value, WebDriverError> {
    let io = |what: &str, e: std::io::Error| WebDriverError {
        error: "io".into(),
        message: format!("{what}: {e}"),
    };
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(addr).map_err(|e| io("connect to chromedriver", e))?;
    stream.set_read_timeout(Some(WEBDRIVER_TIMEOUT)).map_err(|e| io("timeout", e))?;
    stream.set_write_timeout(Some(WEBDRIVER_TIMEOUT)).map_err(|e| io("timeout", e))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| io("send to chromedriver", e))?;

    let mut reader = BufReader::new(stream);
    let mut content_length = None;
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| io("read the reply", e))?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        match header.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("content-length") => {
                content_length = value.trim().parse::<usize>().ok();
            }
            _ => {}
        }
    }
    let mut reply = Vec::new();
    match content_length {
        Some(len) => {
            reply.resize(len, 0);
            reader.read_exact(&mut reply).map_err(|e| io("read the reply body", e))?;
        }
        None => {
            reader.read_to_end(&mut reply).map_err(|e| io("read the reply body", e))?;
        }
    }
    let reply: Value = serde_json::from_slice(&reply).map_err(|e| WebDriverError {
        error: "not JSON".into(),
        message: format!("{e}: {}", String::from_utf8_lossy(&reply)),
    })?;
    let value = reply.get("value").cloned().unwrap_or(Value::Null);
    match value.get("error").and_then(Value::as_str) {
        Some(error) => Err(WebDriverError {
            error: error.to_owned(),
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        }),
        None => Ok(value),
    }
}

/// Decodes standard base64 (WebDriver's screenshots).
fn base64_decode(text: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let digits: Vec<u8> =
        text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(digit).collect();
    let mut bytes = Vec::with_capacity(digits.len() / 4 * 3 + 2);
    for group in digits.chunks(4) {
        let bits = group.iter().enumerate().fold(0u32, |bits, (i, &d)| bits | (u32::from(d) << (18 - 6 * i)));
        // 4 digits carry 3 bytes, 3 carry 2, 2 carry 1.
        bytes.extend_from_slice(&bits.to_be_bytes()[1..group.len()]);
    }
    bytes
}

#[test]
fn base64_decodes_every_padding() {
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
    assert_eq!(base64_decode("TQ=="), b"M");
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
}
