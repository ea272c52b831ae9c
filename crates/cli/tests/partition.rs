//! Partitions and lagging followers in a three-node cluster of real binaries, through the
//! fault-injecting proxies of the cluster harness:
//!
//! - the leader cut off into a minority stops taking writes and reads (CLUSTERDOWN on RESP, HTTP
//!   and AMQP, /readyz 503) while the other two elect a leader and go on; once healed, it follows
//!   that leader and has every write made without it;
//! - a follower killed while the leader's log is purged by snapshots catches up, on restart, from
//!   a snapshot streamed to it;
//! - a connection closed on a node cut off from the leader still ends its session (and what it
//!   held) once the node reaches a leader again, though the node never died.
//!
//! A follower serves linearizable reads from its own state (once it has applied up to the
//! leader's read point), so what a node holds is read through that node.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use common::cluster::{TestCluster, WAIT};
use common::{holder_tokens, http_request, info, info_u64, until};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

fn set(con: &mut redis::Connection, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET").arg(key).arg(value).query(con)
}

fn get(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(con)
}

/// `/readyz`'s status on node `i`.
fn readyz(cluster: &TestCluster, i: usize) -> u16 {
    http_request(&cluster.node(i).http_addr, "GET", "/readyz", None, "text/plain").0
}

/// Asserts that a RESP command was refused because no leader is reachable.
fn assert_cluster_down(refused: redis::RedisError) {
    assert_eq!((refused.code(), refused.detail()), (Some("CLUSTERDOWN"), Some("no leader reachable")));
}

#[test]
fn a_leader_isolated_in_a_minority_refuses_then_rejoins_with_the_majoritys_writes() {
    let cluster = TestCluster::start(3, &[]);
    let old = cluster.leader();
    let mut con = cluster.node(old).client();
    for i in 0..5 {
        set(&mut con, &format!("before{i}"), "x").expect("SET on the leader");
    }
    // An AMQP publisher on the leader, in confirm mode, connected before the partition.
    let url = format!("amqp://guest:guest@{}/%2f", cluster.node(old).amqp_addr);
    let (amqp, channel) = cluster.block_on(async {
        let amqp = Connection::connect(&url, ConnectionProperties::default()).await.expect("AMQP connect");
        let channel = amqp.create_channel().await.expect("channel.open");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm.select");
        let declare = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare("jobs".into(), declare, FieldTable::default()).await.expect("queue.declare");
        (amqp, channel)
    });

    cluster.isolate(old);
    // A write sent at once, before the old leader knows it is cut off, is answered (with an
    // error: it cannot commit in a minority) rather than left hanging until the partition heals.
    let mut early = cluster.node(old).client();
    let refused = set(&mut early, "early", "minority").expect_err("no write commits in a minority");
    assert!(refused.code().is_some(), "an error reply, not a timed-out connection: {refused}");
    // Within a lease (about a second) of its last contact with a quorum, the old leader knows it
    // cannot serve.
    until("the isolated leader is not ready", WAIT, || readyz(&cluster, old) == 503);
    let mut con = cluster.node(old).client();
    assert_cluster_down(set(&mut con, "during", "minority").expect_err("no write in a minority"));
    assert_cluster_down(get(&mut con, "before0").expect_err("no linearizable read in a minority"));
    let push = r#"{"payload": "x"}"#;
    let (status, _, body) = http_request(
        &cluster.node(old).http_addr,
        "POST",
        "/api/queues/jobs/messages",
        Some(push),
        "application/json",
    );
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!((status, body["code"].as_str()), (503, Some("CLUSTERDOWN")), "{body}");
    // AMQP: the publish closes its channel with the reason; the connection stays.
    let refused = cluster.block_on(async {
        let publish = channel
            .basic_publish(
                "".into(),
                "jobs".into(),
                BasicPublishOptions::default(),
                b"during",
                BasicProperties::default(),
            )
            .await;
        let confirm = match publish {
            Ok(confirm) => tokio::time::timeout(WAIT, confirm).await.expect("the publish is answered"),
            Err(e) => Err(e),
        };
        confirm.expect_err("a publish the cluster cannot take is refused")
    });
    let text = format!("{refused} {refused:?}");
    assert!(text.contains("CLUSTERDOWN no leader reachable"), "{text}");
    assert!(amqp.status().connected(), "the connection survives its channel");
    let other = cluster.block_on(async { tokio::time::timeout(WAIT, amqp.create_channel()).await });
    assert!(other.expect("channel.open answered").is_ok(), "and opens another channel");

    // The other two elect a leader and take writes.
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let new = cluster.leader_among(&majority);
    let mut con = cluster.node(new).client();
    until("a write succeeds on the new leader", WAIT, || set(&mut con, "during", "majority").is_ok());
    for i in 0..20 {
        set(&mut con, &format!("after{i}"), "y").expect("SET on the new leader");
    }
    let written = info_u64(&mut con, "raft", "applied_index");

    // Healed, the old leader follows the new one and applies what was written without it.
    cluster.heal();
    let new_id = cluster.id(new).to_string();
    until("the old leader follows the new one and has its writes", WAIT, || {
        cluster.raft_info(old).is_some_and(|m| {
            m["role"] == "follower"
                && m["leader"] == new_id
                && m["applied_index"].parse::<u64>().is_ok_and(|i| i >= written)
        })
    });
    until("the old leader is ready again", WAIT, || readyz(&cluster, old) == 200);

    // Its state, read through it: every write of the majority, none of the refused ones.
    let mut con = cluster.node(old).client();
    assert_eq!(get(&mut con, "during").expect("GET").as_deref(), Some("majority"));
    assert_eq!(get(&mut con, "after19").expect("GET").as_deref(), Some("y"));
    assert_eq!(info_u64(&mut con, "queues", "keys"), 5 + 1 + 20);
    drop(amqp);
}

#[test]
fn a_follower_killed_while_the_log_is_purged_catches_up_from_a_snapshot() {
    // A snapshot every 100 entries; the leader keeps the last 1,000 entries after each.
    let mut cluster = TestCluster::start(3, &["--snapshot-every", "100", "--fsync", "never"]);
    let leader = cluster.leader();
    let lagging = (leader + 1) % 3;
    let mut con = cluster.node(leader).client();
    for i in 0..10 {
        set(&mut con, &format!("early{i}"), "x").expect("SET");
    }
    let written = info_u64(&mut con, "raft", "applied_index");
    cluster.wait_applied(lagging, written);
    let mut lcon = cluster.node(lagging).client();
    let applied_before = info_u64(&mut lcon, "raft", "applied_index");
    assert_eq!(info(&mut lcon, "persistence")["snapshot_index"], "none", "too few entries for a snapshot");

    cluster.kill9(lagging);
    // One entry per SET (one client, one at a time): past the 1,000 kept after a snapshot.
    const WRITES: usize = 1_300;
    for i in 0..WRITES {
        set(&mut con, &format!("k{i}"), &i.to_string()).expect("SET with one follower down");
    }
    let snapshot = info_u64(&mut con, "persistence", "snapshot_index");
    assert!(
        snapshot > applied_before + 1_000,
        "the leader's snapshot ({snapshot}) leaves purged what the follower lacks (after {applied_before})"
    );

    // Restarted with its own snapshots off, so a snapshot index can only come from the leader.
    cluster.restart_with(lagging, &["--snapshot-every", "1000000000", "--snapshot-log-bytes", "0"]);
    let written = info_u64(&mut con, "raft", "applied_index");
    cluster.wait_applied(lagging, written);
    let mut lcon = cluster.node(lagging).client();
    let installed = info_u64(&mut lcon, "persistence", "snapshot_index");
    assert!(
        installed > applied_before + 1_000,
        "it installed the leader's snapshot (at {installed}), not its own log (which ended at {applied_before})"
    );

    // Its state, read through it: the early writes and every one made while it was down.
    let mut lcon = cluster.node(lagging).client();
    assert_eq!(get(&mut lcon, "early0").expect("GET").as_deref(), Some("x"));
    assert_eq!(get(&mut lcon, "k0").expect("GET").as_deref(), Some("0"));
    let last = format!("k{}", WRITES - 1);
    assert_eq!(get(&mut lcon, &last).expect("GET"), Some((WRITES - 1).to_string()));
    assert_eq!(info_u64(&mut lcon, "queues", "keys"), (10 + WRITES) as u64);
    // And it takes writes (forwarded to the leader) again.
    until("the caught-up node takes a write", WAIT, || set(&mut lcon, "final", "z").is_ok());
    assert_eq!(get(&mut con, "final").expect("GET on the leader").as_deref(), Some("z"));
}

#[test]
fn a_connection_closed_while_its_node_is_cut_off_ends_its_session_once_healed() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut client = cluster.node(follower).client();
    // No KEEP: the hold is the session's, and a minute's lease outlasts the test.
    let grant: Vec<i64> =
        redis::cmd("LOCK.ACQUIRE").arg("cut-off").arg(60_000).query(&mut client).expect("acquired");
    let mut watcher = cluster.node(leader).client();
    assert_eq!(holder_tokens(&mut watcher, "cut-off"), vec![grant[0]]);

    // The follower loses the leader; its client goes away meanwhile, and the close it asks the
    // leader for cannot be applied then.
    cluster.isolate(follower);
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(holder_tokens(&mut watcher, "cut-off"), vec![grant[0]], "no close without the follower");

    // Its host keeps alive once healed, so no timeout ends that session: the close must.
    cluster.heal();
    until("the closed connection's hold is released", WAIT, || {
        holder_tokens(&mut watcher, "cut-off").is_empty()
    });
}
