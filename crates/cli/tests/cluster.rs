//! Three `turnstile server` processes forming one cluster over loopback: a leader is elected,
//! followers forward writes to it and serve linearizable reads, blocking waits and consumers over
//! every protocol, and after a `kill -9` of the leader the other two elect a new one that kept every acknowledged write and
//! lock hold. A restarted node rejoins from its data dir.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use std::time::Duration;

use common::{TestServer, free_loopback_addr, info, until};
use redis::Value;

/// The bound on each wait for the cluster to get somewhere; far more than any step needs.
const WAIT: Duration = Duration::from_secs(30);

/// Starts node `id` of the cluster `peers` (in parallel with the others: each waits a while
/// for a leader before it reports ready).
fn start_nodes(dirs: &[tempfile::TempDir], peers: &str) -> Vec<TestServer> {
    let handles: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let (dir, peers) = (dir.path().to_path_buf(), peers.to_owned());
            std::thread::spawn(move || {
                let id = (i + 1).to_string();
                TestServer::start_in(&dir, &["--node-id", &id, "--peers", &peers])
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("node starts")).collect()
}

/// `INFO raft` of a node, or `None` if it does not answer.
fn raft_info(node: &TestServer) -> Option<std::collections::HashMap<String, String>> {
    let client = redis::Client::open(node.url()).ok()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(2)).ok()?;
    con.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let text: String = redis::cmd("INFO").arg("raft").query(&mut con).ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect(),
    )
}

/// Waits until one of `live` (indexes into `nodes`) reports itself leader and the others
/// follow it; returns its index.
fn leader_among(nodes: &[TestServer], live: &[usize]) -> usize {
    let mut found = None;
    until("one live node leads and the others follow it", WAIT, || {
        let infos: Vec<_> = live.iter().map(|&i| (i, raft_info(&nodes[i]))).collect();
        let leaders: Vec<usize> = infos
            .iter()
            .filter(|(_, info)| info.as_ref().is_some_and(|m| m["role"] == "leader"))
            .map(|(i, _)| *i)
            .collect();
        let [leader] = leaders[..] else { return false };
        let id = (leader + 1).to_string();
        found = Some(leader);
        infos.iter().all(|(_, info)| info.as_ref().is_some_and(|m| m["leader"] == id))
    });
    found.expect("a leader")
}

fn set(con: &mut redis::Connection, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET").arg(key).arg(value).query(con)
}

fn get(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(con)
}

/// The fencing tokens `LOCK.INFO` lists among the lock's holders.
/// One list of LOCK.INFO's reply: `holders` or `waiters`.
fn lock_info_list(con: &mut redis::Connection, lock: &str, field: &str) -> Vec<Value> {
    let reply: Value = redis::cmd("LOCK.INFO").arg(lock).query(con).expect("LOCK.INFO");
    let named = |v: &Value| {
        matches!(v, Value::BulkString(b) if b == field.as_bytes())
            || matches!(v, Value::SimpleString(s) if s == field)
    };
    let list = match &reply {
        Value::Map(kv) => kv.iter().find(|(k, _)| named(k)).map(|(_, v)| v.clone()),
        Value::Array(items) => items.chunks(2).find(|kv| named(&kv[0])).map(|kv| kv[1].clone()),
        _ => None,
    };
    match list {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    }
}

fn holder_tokens(con: &mut redis::Connection, lock: &str) -> Vec<i64> {
    let holders = lock_info_list(con, lock, "holders");
    // Each holder: [owner, token, expires-in, ...].
    holders
        .iter()
        .filter_map(|h| match h {
            Value::Array(parts) => match parts.get(1) {
                Some(Value::Int(token)) => Some(*token),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn three_nodes_elect_a_leader_serve_through_followers_and_survive_its_kill() {
    let raft: Vec<String> = (0..3).map(|_| free_loopback_addr()).collect();
    let peers = raft.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut nodes = start_nodes(&dirs, &peers);

    let leader = leader_among(&nodes, &[0, 1, 2]);
    let info_raft = raft_info(&nodes[leader]).expect("INFO raft");
    assert_eq!(info_raft["members"], "1,2,3", "{info_raft:?}");
    let mut con = nodes[leader].client();
    assert_eq!(set(&mut con, "k", "v").expect("SET on the leader"), "OK");
    let (token, _lease): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).arg("KEEP").query(&mut con).expect("LOCK.ACQUIRE");

    // A follower forwards writes to the leader and serves linearizable reads: a write made
    // through one node is seen at once through any other.
    let follower = (leader + 1) % 3;
    let mut fcon = nodes[follower].client();
    assert_eq!(set(&mut fcon, "k", "from-follower").expect("SET through a follower"), "OK");
    assert_eq!(get(&mut con, "k").expect("GET on the leader").as_deref(), Some("from-follower"));
    assert_eq!(set(&mut con, "k", "v").expect("SET on the leader"), "OK");
    assert_eq!(get(&mut fcon, "k").expect("GET on a follower").as_deref(), Some("v"));
    let written = common::info_u64(&mut con, "raft", "applied_index");
    until("the follower applies the leader's writes", WAIT, || {
        common::info_u64(&mut fcon, "raft", "applied_index") >= written
    });
    assert_eq!(info(&mut fcon, "raft")["role"], "follower");
    // The leader shows each member's replication; any node serves the cluster's status (a
    // follower asks the leader), and the leader's metrics carry the lag per member.
    let leader_info = info(&mut con, "raft");
    let follower_line = &leader_info[&format!("member_{}", follower + 1)];
    assert!(follower_line.contains("role=voter") && follower_line.contains("lag="), "{leader_info:?}");
    let (status, _, body) =
        common::http_request(&nodes[follower].http_addr, "GET", "/api/cluster", None, "text/plain");
    assert_eq!(status, 200, "{body}");
    let cluster: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(cluster["leader"], (leader + 1) as u64, "{body}");
    assert_eq!(cluster["members"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, scrape) = common::scrape::Scrape::get(&nodes[leader].http_addr);
    let member = (follower + 1).to_string();
    assert!(
        scrape.value_if_any("turnstile_raft_member_lag", &[("node", &member), ("role", "voter")]).is_some()
    );
    let (status, _, body) =
        common::http_request(&nodes[follower].http_addr, "GET", "/readyz", None, "text/plain");
    assert_eq!(status, 200, "a follower that knows the leader and has applied the log is ready: {body}");

    // kill -9 the leader: the other two elect one that kept the write and the hold.
    nodes[leader].kill9();
    let live: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let new_leader = leader_among(&nodes, &live);
    assert_ne!(new_leader, leader);
    let mut con = nodes[new_leader].client();
    assert_eq!(get(&mut con, "k").expect("GET").as_deref(), Some("v"));
    assert_eq!(holder_tokens(&mut con, "l"), vec![token], "the hold survives with its token");
    // A write may meet the new leader while its lease is not yet confirmed; retry those.
    until("a write succeeds on the new leader", WAIT, || set(&mut con, "k2", "after").is_ok());
    assert_eq!(get(&mut con, "k2").expect("GET").as_deref(), Some("after"));

    // The killed node restarts on its data dir and rejoins as a follower: it does not form a
    // cluster of its own, and it catches up with what was written while it was down.
    nodes[leader].restart();
    until("the restarted node catches up", WAIT, || {
        let Some(m) = raft_info(&nodes[leader]) else { return false };
        m["role"] == "follower" && m["leader"] == (new_leader + 1).to_string()
    });
    let written = common::info_u64(&mut con, "raft", "applied_index");
    let mut rcon = nodes[leader].client();
    until("the restarted node applies the writes made without it", WAIT, || {
        common::info_u64(&mut rcon, "raft", "applied_index") >= written
    });
    // With the new leader gone too, the restarted node and the third elect one of them, which
    // has every write: the restarted node's log counts toward a majority again.
    nodes[new_leader].kill9();
    let last: Vec<usize> = (0..3).filter(|&i| i != new_leader).collect();
    let third_leader = leader_among(&nodes, &last);
    let mut con = nodes[third_leader].client();
    until("a write succeeds on the third leader", WAIT, || set(&mut con, "k3", "last").is_ok());
    assert_eq!(get(&mut con, "k2").expect("GET").as_deref(), Some("after"));
    assert_eq!(holder_tokens(&mut con, "l"), vec![token], "the hold survives a second failover");

    // SIGTERM stops a node of a cluster gracefully, leader or not.
    drop((con, rcon, fcon));
    for &i in &last {
        nodes[i].terminate();
        assert_eq!(nodes[i].wait_exit(), Some(0), "node {} stops cleanly", i + 1);
    }
}

#[test]
fn a_node_without_a_majority_serves_refusals_until_a_second_node_forms_the_cluster() {
    let raft: Vec<String> = (0..3).map(|_| free_loopback_addr()).collect();
    let peers = raft.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("temp dir")).collect();

    // Alone, node 1 gives up waiting for a leader, serves, and refuses writes for want of one.
    let mut nodes = start_nodes(&dirs[..1], &peers);
    let mut con = nodes[0].client();
    let refused = set(&mut con, "k", "v").expect_err("no leader, no write");
    assert!(
        refused.to_string().contains("NOTLEADER") && refused.to_string().contains("no leader"),
        "{refused}"
    );
    let (status, _, body) = common::http_request(&nodes[0].http_addr, "GET", "/readyz", None, "text/plain");
    assert_eq!(status, 503, "not ready without a leader: {body}");

    // A second node makes a majority of the three: the cluster forms and takes writes.
    let dir = dirs[1].path().to_path_buf();
    nodes.push(TestServer::start_in(&dir, &["--node-id", "2", "--peers", &peers]));
    let leader = leader_among(&nodes, &[0, 1]);
    let mut con = nodes[leader].client();
    until("a write succeeds on the leader of two", WAIT, || set(&mut con, "k", "v").is_ok());
    assert_eq!(get(&mut con, "k").expect("GET").as_deref(), Some("v"));
}

/// Everything a client does works on a follower as on the leader: blocking waits and consumers
/// are woken by the follower, which applies every entry; writes are forwarded; reads are
/// linearizable there too.
#[test]
fn a_follower_serves_every_protocol_blocking_waits_and_consumers() {
    let raft: Vec<String> = (0..3).map(|_| free_loopback_addr()).collect();
    let peers = raft.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let nodes = start_nodes(&dirs, &peers);
    let leader = leader_among(&nodes, &[0, 1, 2]);
    let follower = (leader + 1) % 3;
    let mut con = nodes[leader].client();
    until("the leader takes writes", WAIT, || set(&mut con, "warm", "up").is_ok());

    // A lock held through the leader; a waiter in line on the follower is granted on release.
    let (first, _): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).query(&mut con).expect("acquire");
    let mut fcon = nodes[follower].client();
    let waiter = std::thread::spawn(move || {
        let granted: redis::RedisResult<(i64, i64)> =
            redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).arg("WAIT").arg(20_000).query(&mut fcon);
        (granted, fcon)
    });
    until("the follower's acquire waits in line", WAIT, || {
        lock_info_list(&mut con, "l", "waiters").len() == 1
    });
    let released: i64 = redis::cmd("LOCK.RELEASE").arg("l").arg(first).query(&mut con).expect("release");
    assert_eq!(released, 1);
    let (granted, mut fcon) = waiter.join().expect("waiter thread");
    let (second, _) = granted.expect("the waiter on the follower is granted");
    assert!(second > first, "tokens only go up: {first} then {second}");

    // A pop waiting on the follower gets a message pushed through the leader.
    let popper = std::thread::spawn(move || {
        let popped: redis::RedisResult<Value> =
            redis::cmd("Q.POP").arg("jobs").arg("WAIT").arg(20_000).query(&mut fcon);
        (popped, fcon)
    });
    std::thread::sleep(Duration::from_millis(200));
    let _: Value = redis::cmd("Q.PUSH").arg("jobs").arg("payload-1").query(&mut con).expect("push");
    let (popped, _fcon) = popper.join().expect("popper thread");
    let popped = format!("{:?}", popped.expect("the pop on the follower gets the message"));
    assert!(popped.contains("payload-1"), "{popped}");

    // HTTP on the follower: a push, and the queue's state read back there.
    let http = &nodes[follower].http_addr;
    let (status, _, body) = common::http_request(
        http,
        "POST",
        "/api/queues/web/messages",
        Some(r#"{"payload":"from-http"}"#),
        "application/json",
    );
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = common::http_request(http, "GET", "/api/queues/web", None, "application/json");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":1"), "{body}");

    // AMQP on the follower: publish with confirms, consume, ack.
    let amqp = format!("amqp://guest:guest@{}/%2f", nodes[follower].amqp_addr);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let got = runtime.block_on(async move {
        use futures_util::StreamExt;
        use lapin::options::{
            BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
            QueueDeclareOptions,
        };
        use lapin::types::FieldTable;
        use lapin::{BasicProperties, Connection, ConnectionProperties};
        let conn = Connection::connect(&amqp, ConnectionProperties::default()).await.expect("AMQP connect");
        let channel = conn.create_channel().await.expect("channel");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        channel
            .queue_declare("amqp-jobs".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("declare");
        let confirm = channel
            .basic_publish(
                "".into(),
                "amqp-jobs".into(),
                BasicPublishOptions::default(),
                b"from-amqp",
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack(), "{confirm:?}");
        let mut consumer = channel
            .basic_consume(
                "amqp-jobs".into(),
                "c".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let delivery = tokio::time::timeout(WAIT, consumer.next()).await.expect("a delivery in time");
        let delivery = delivery.expect("stream open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        String::from_utf8(delivery.data).expect("utf-8")
    });
    assert_eq!(got, "from-amqp");
}

/// `turnstile cluster ...` against `server` (RESP address); its exit status and stdout.
fn cluster_cli(server: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .arg("cluster")
        .args(args)
        .args(["--server", server, "--json"])
        .output()
        .expect("the turnstile binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The members `turnstile cluster status` lists, as (id, role).
fn members(server: &str) -> Vec<(u64, String)> {
    let (ok, out, err) = cluster_cli(server, &["status"]);
    assert!(ok, "cluster status: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
    status["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| (m["id"].as_u64().expect("id"), m["role"].as_str().expect("role").to_owned()))
        .collect()
}

/// Membership through the CLI, under a steady stream of writes: a fourth node joins (learner,
/// then voter) and serves; another is removed and its id can never come back; the leadership
/// moves where it is sent. Every acknowledged write is there at the end.
#[test]
fn nodes_join_leave_and_hand_over_leadership_under_load() {
    let raft: Vec<String> = (0..4).map(|_| free_loopback_addr()).collect();
    let peers =
        raft[..3].iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect::<Vec<_>>().join(",");
    let dirs: Vec<_> = (0..5).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut nodes = start_nodes(&dirs[..3], &peers);
    let leader = leader_among(&nodes, &[0, 1, 2]);
    let follower = (leader + 1) % 3;

    // Writes through a follower all along, each acknowledged one recorded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), nodes[follower].url());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(url).expect("url").get_connection().expect("connects");
            let mut acked = Vec::new();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                if set(&mut con, &format!("w{i}"), "x").is_ok() {
                    acked.push(i);
                }
                i += 1;
            }
            acked
        })
    };

    let via = nodes[follower].addr.clone();
    let listed = members(&via);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&((leader + 1) as u64, "leader".into())), "{listed:?}");

    // Node 4 joins through a follower's Raft address and serves once it is a voter.
    let join_via = raft[follower].clone();
    nodes.push(TestServer::start_in(
        dirs[3].path(),
        &["--node-id", "4", "--raft-addr", &raft[3], "--join", &join_via],
    ));
    assert!(members(&via).contains(&(4, "voter".into())), "{:?}", members(&via));
    let mut con4 = nodes[3].client();
    until("the new node takes writes", WAIT, || set(&mut con4, "from-4", "yes").is_ok());
    assert_eq!(get(&mut con4, "from-4").expect("GET").as_deref(), Some("yes"));

    // Adding a member again is refused.
    let (ok, _, err) = cluster_cli(&via, &["add", &format!("4={}", raft[3])]);
    assert!(!ok && err.contains("node id 4 is already a member"), "{err}");

    // Remove a follower other than the one the writer and the CLI use.
    let removed = (0..3).find(|&i| i != leader && i != follower).expect("a third node");
    let removed_id = (removed + 1) as u64;
    let (ok, _, err) = cluster_cli(&via, &["remove", &removed_id.to_string()]);
    assert!(ok, "remove: {err}");
    until("the removed node is gone from the membership", WAIT, || {
        members(&via).iter().all(|(id, _)| *id != removed_id)
    });
    nodes[removed].kill9();
    // Its id can never come back: a fresh node asking to join under it is refused.
    let (status, output) = common::run_to_exit(
        dirs[4].path(),
        &["--node-id", &removed_id.to_string(), "--raft-addr", &free_loopback_addr(), "--join", &join_via],
        WAIT,
    );
    assert!(status.is_some_and(|s| !s.success()), "a reused id is refused: {output}");
    assert!(output.contains("ids are never reused"), "{output}");

    // Hand the leadership to node 4.
    let (ok, _, err) = cluster_cli(&via, &["transfer-leader", "4"]);
    assert!(ok, "transfer-leader: {err}");
    assert!(members(&via).contains(&(4, "leader".into())), "{:?}", members(&via));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(!acked.is_empty(), "the writer got writes through");
    let mut con = nodes[3].client();
    for i in acked {
        assert_eq!(
            get(&mut con, &format!("w{i}")).expect("GET").as_deref(),
            Some("x"),
            "acknowledged write w{i}"
        );
    }
}
