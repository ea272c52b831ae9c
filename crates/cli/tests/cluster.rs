//! Three `turnstile server` processes forming one cluster over loopback: a leader is elected,
//! followers refuse writes with the leader's address and serve linearizable reads, and after a
//! `kill -9` of the leader the other two elect a new one that kept every acknowledged write and
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
fn holder_tokens(con: &mut redis::Connection, lock: &str) -> Vec<i64> {
    let reply: Value = redis::cmd("LOCK.INFO").arg(lock).query(con).expect("LOCK.INFO");
    let named = |v: &Value| {
        matches!(v, Value::BulkString(b) if b == b"holders")
            || matches!(v, Value::SimpleString(s) if s == "holders")
    };
    let holders = match &reply {
        Value::Map(kv) => kv.iter().find(|(k, _)| named(k)).map(|(_, v)| v.clone()),
        Value::Array(items) => items.chunks(2).find(|kv| named(&kv[0])).map(|kv| kv[1].clone()),
        _ => None,
    };
    let Some(Value::Array(holders)) = holders else { return Vec::new() };
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
fn three_nodes_elect_a_leader_refuse_writes_on_followers_and_survive_its_kill() {
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

    // A follower refuses the write, naming the leader. Reads too: a linearizable read on a
    // follower needs the leader's read index, which no node asks for yet; the follower has the
    // write applied all the same.
    let follower = (leader + 1) % 3;
    let mut fcon = nodes[follower].client();
    let refused = set(&mut fcon, "k", "other").expect_err("a follower refuses writes");
    let text = refused.to_string();
    assert!(text.contains("NOTLEADER") && text.contains(&raft[leader]), "{text}");
    let refused = get(&mut fcon, "k").expect_err("a follower refuses reads it cannot make linearizable");
    assert!(refused.to_string().contains("NOTLEADER"), "{refused}");
    let written = common::info_u64(&mut con, "raft", "applied_index");
    until("the follower applies the leader's writes", WAIT, || {
        common::info_u64(&mut fcon, "raft", "applied_index") >= written
    });
    assert_eq!(info(&mut fcon, "raft")["role"], "follower");
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
    assert!(refused.to_string().contains("CLUSTERDOWN: no leader reachable"), "{refused}");
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
