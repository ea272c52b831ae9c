//! Three `turnstile server` processes forming one cluster over loopback, each behind the
//! fault-injecting proxy of the cluster harness: a leader is elected, followers refuse writes with
//! the leader's address, and after a `kill -9` of the leader the other two elect a new one that
//! kept every acknowledged write and lock hold. A restarted node rejoins from its data dir. A node
//! that can reach no leader refuses on every protocol with CLUSTERDOWN. A paused leader is replaced
//! and follows once resumed.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use common::cluster::{TestCluster, WAIT};
use common::{info, info_u64, until};
use redis::Value;

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
    let mut cluster = TestCluster::start(3, &[]);

    let leader = cluster.leader();
    let info_raft = cluster.raft_info(leader).expect("INFO raft");
    assert_eq!(info_raft["members"], "1,2,3", "{info_raft:?}");
    let mut con = cluster.node(leader).client();
    assert_eq!(set(&mut con, "k", "v").expect("SET on the leader"), "OK");
    let (token, _lease): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).arg("KEEP").query(&mut con).expect("LOCK.ACQUIRE");

    // A follower refuses the write, naming the leader by the address its peers dial. Reads too:
    // a linearizable read on a follower needs the leader's read index, which no node asks for
    // yet; the follower has the write applied all the same.
    let follower = (leader + 1) % 3;
    let mut fcon = cluster.node(follower).client();
    let refused = set(&mut fcon, "k", "other").expect_err("a follower refuses writes");
    let text = refused.to_string();
    assert!(text.contains("NOTLEADER") && text.contains(cluster.peer_addr(leader)), "{text}");
    let refused = get(&mut fcon, "k").expect_err("a follower refuses reads it cannot make linearizable");
    assert!(refused.to_string().contains("NOTLEADER"), "{refused}");
    let written = info_u64(&mut con, "raft", "applied_index");
    cluster.wait_applied(follower, written);
    assert_eq!(info(&mut fcon, "raft")["role"], "follower");
    let (status, _, body) =
        common::http_request(&cluster.node(follower).http_addr, "GET", "/readyz", None, "text/plain");
    assert_eq!(status, 200, "a follower that knows the leader and has applied the log is ready: {body}");

    // kill -9 the leader: the other two elect one that kept the write and the hold.
    cluster.kill9(leader);
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);
    let mut con = cluster.node(new_leader).client();
    assert_eq!(get(&mut con, "k").expect("GET").as_deref(), Some("v"));
    assert_eq!(holder_tokens(&mut con, "l"), vec![token], "the hold survives with its token");
    // A write may meet the new leader while its lease is not yet confirmed; retry those.
    until("a write succeeds on the new leader", WAIT, || set(&mut con, "k2", "after").is_ok());
    assert_eq!(get(&mut con, "k2").expect("GET").as_deref(), Some("after"));

    // The killed node restarts on its data dir and rejoins as a follower: it does not form a
    // cluster of its own, and it catches up with what was written while it was down.
    cluster.restart(leader);
    let new_id = cluster.id(new_leader).to_string();
    until("the restarted node follows the new leader", WAIT, || {
        cluster.raft_info(leader).is_some_and(|m| m["role"] == "follower" && m["leader"] == new_id)
    });
    let written = info_u64(&mut con, "raft", "applied_index");
    cluster.wait_applied(leader, written);
    // With the new leader gone too, the restarted node and the third elect one of them, which
    // has every write: the restarted node's log counts toward a majority again.
    cluster.kill9(new_leader);
    let third_leader = cluster.leader();
    let mut con = cluster.node(third_leader).client();
    until("a write succeeds on the third leader", WAIT, || set(&mut con, "k3", "last").is_ok());
    assert_eq!(get(&mut con, "k2").expect("GET").as_deref(), Some("after"));
    assert_eq!(holder_tokens(&mut con, "l"), vec![token], "the hold survives a second failover");

    // SIGTERM stops a node of a cluster gracefully, leader or not.
    drop((con, fcon));
    for i in (0..3).filter(|&i| i != new_leader) {
        cluster.terminate(i);
        assert_eq!(cluster.wait_exit(i), Some(0), "node {} stops cleanly", cluster.id(i));
    }
}

/// Alone of three, a node serves but reaches no leader: RESP, HTTP and AMQP each refuse with
/// CLUSTERDOWN and the reason, and /readyz is 503, until a second node makes a majority.
#[test]
fn a_node_without_a_majority_says_clusterdown_on_every_protocol_until_a_second_node_forms_the_cluster() {
    let mut cluster = TestCluster::start_some(3, &[0], &[]);
    let lone = cluster.node(0);

    let mut con = lone.client();
    let refused = set(&mut con, "k", "v").expect_err("no leader, no write");
    assert_eq!((refused.code(), refused.detail()), (Some("CLUSTERDOWN"), Some("no leader reachable")));
    let refused = get(&mut con, "k").expect_err("no leader, no linearizable read");
    assert_eq!(refused.code(), Some("CLUSTERDOWN"), "{refused}");

    let (status, _, body) = common::http_request(&lone.http_addr, "GET", "/readyz", None, "text/plain");
    assert_eq!(status, 503, "not ready without a leader: {body}");
    let push = r#"{"payload": "x"}"#;
    let (status, _, body) = common::http_request(
        &lone.http_addr,
        "POST",
        "/api/queues/q/messages",
        Some(push),
        "application/json",
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        (body["code"].as_str(), body["message"].as_str()),
        (Some("CLUSTERDOWN"), Some("no leader reachable"))
    );

    // AMQP: the connection cannot open its session in the log, so `Connection.Open` is answered
    // with a close carrying the reason.
    let url = format!("amqp://guest:guest@{}/%2f", lone.amqp_addr);
    let refused = cluster.block_on(async {
        let connect = lapin::Connection::connect(&url, lapin::ConnectionProperties::default());
        tokio::time::timeout(WAIT, connect).await.expect("connect answered").expect_err("connect refused")
    });
    let text = format!("{refused} {refused:?}");
    assert!(text.contains("CONNECTION_FORCED - CLUSTERDOWN no leader reachable"), "{text}");

    // A second node makes a majority of the three: the cluster forms and takes writes.
    cluster.start_node(1);
    let leader = cluster.leader();
    let mut con = cluster.node(leader).client();
    until("a write succeeds on the leader of two", WAIT, || set(&mut con, "k", "v").is_ok());
    assert_eq!(get(&mut con, "k").expect("GET").as_deref(), Some("v"));
}

/// A leader stopped by SIGSTOP (a long GC pause, a frozen VM) is replaced; resumed, it learns of
/// the new term, follows, and applies what was written while it slept.
#[test]
fn a_paused_leader_is_replaced_and_follows_when_it_resumes() {
    let mut cluster = TestCluster::start(3, &[]);
    let paused = cluster.leader();
    let mut con = cluster.node(paused).client();
    assert_eq!(set(&mut con, "k", "before").expect("SET on the leader"), "OK");

    cluster.pause(paused);
    let others: Vec<usize> = (0..3).filter(|&i| i != paused).collect();
    let leader = cluster.leader_among(&others);
    let mut con = cluster.node(leader).client();
    until("a write succeeds on the new leader", WAIT, || set(&mut con, "k", "while paused").is_ok());
    let written = info_u64(&mut con, "raft", "applied_index");

    cluster.resume(paused);
    let id = cluster.id(leader).to_string();
    until("the resumed node follows the new leader", WAIT, || {
        cluster.raft_info(paused).is_some_and(|m| m["role"] == "follower" && m["leader"] == id)
    });
    cluster.wait_applied(paused, written);
    assert_eq!(get(&mut con, "k").expect("GET").as_deref(), Some("while paused"));
}
