//! Three `turnstile server` processes forming one cluster over loopback, each behind the
//! fault-injecting proxy of the cluster harness: a leader is elected, followers forward writes to it
//! and serve linearizable reads, blocking waits and consumers over every protocol, and after a
//! `kill -9` of the leader the other two elect a new one that kept every acknowledged write and
//! lock hold. A restarted node rejoins from its data dir. A node that can reach no leader refuses on
//! every protocol with CLUSTERDOWN. A paused leader is replaced and follows once resumed. Nodes join
//! and leave through `turnstile cluster`, and a removed node's id never comes back.
//!
//! Every wait is bounded; none asserts how long anything took.

mod common;

use common::cluster::{TestCluster, WAIT};
use common::{TestServer, free_loopback_addr, holder_tokens, info, info_u64, lock_info_list, until};
use redis::Value;

fn set(con: &mut redis::Connection, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET").arg(key).arg(value).query(con)
}

fn get(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(key).query(con)
}

#[test]
fn three_nodes_elect_a_leader_serve_through_followers_and_survive_its_kill() {
    let mut cluster = TestCluster::start(3, &[]);

    let leader = cluster.leader();
    let info_raft = cluster.raft_info(leader).expect("INFO raft");
    assert_eq!(info_raft["members"], "1,2,3", "{info_raft:?}");
    let mut con = cluster.node(leader).client();
    assert_eq!(set(&mut con, "k", "v").expect("SET on the leader"), "OK");
    let (token, _lease): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).arg("KEEP").query(&mut con).expect("LOCK.ACQUIRE");

    // A follower forwards writes to the leader and serves linearizable reads: a write made
    // through one node is seen at once through any other.
    let follower = (leader + 1) % 3;
    let mut fcon = cluster.node(follower).client();
    assert_eq!(set(&mut fcon, "k", "from-follower").expect("SET through a follower"), "OK");
    assert_eq!(get(&mut con, "k").expect("GET on the leader").as_deref(), Some("from-follower"));
    assert_eq!(set(&mut con, "k", "v").expect("SET on the leader"), "OK");
    assert_eq!(get(&mut fcon, "k").expect("GET on a follower").as_deref(), Some("v"));
    let written = info_u64(&mut con, "raft", "applied_index");
    cluster.wait_applied(follower, written);
    assert_eq!(info(&mut fcon, "raft")["role"], "follower");
    let (status, _, body) =
        common::http_request(&cluster.node(follower).http_addr, "GET", "/readyz", None, "text/plain");
    assert_eq!(status, 200, "a follower that knows the leader and has applied the log is ready: {body}");
    // The leader shows each member's replication; any node serves the cluster's status (a
    // follower asks the leader), and the leader's metrics carry the lag per member.
    let leader_info = info(&mut con, "raft");
    let follower_line = &leader_info[&format!("member_{}", cluster.id(follower))];
    assert!(follower_line.contains("role=voter") && follower_line.contains("lag="), "{leader_info:?}");
    let (status, _, body) =
        common::http_request(&cluster.node(follower).http_addr, "GET", "/api/cluster", None, "text/plain");
    assert_eq!(status, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["leader"], cluster.id(leader), "{body}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "{body}");
    let (_, scrape) = common::scrape::Scrape::get(&cluster.node(leader).http_addr);
    let member = cluster.id(follower).to_string();
    assert!(
        scrape.value_if_any("turnstile_raft_member_lag", &[("node", &member), ("role", "voter")]).is_some()
    );

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

/// Everything a client does works on a follower as on the leader: blocking waits and consumers
/// are woken by the follower, which applies every entry; writes are forwarded; reads are
/// linearizable there too.
#[test]
fn a_follower_serves_every_protocol_blocking_waits_and_consumers() {
    let cluster = TestCluster::start(3, &[]);
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;
    let mut con = cluster.node(leader).client();
    until("the leader takes writes", WAIT, || set(&mut con, "warm", "up").is_ok());

    // A lock held through the leader; a waiter in line on the follower is granted on release.
    let (first, _): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("l").arg(60_000).query(&mut con).expect("acquire");
    let mut fcon = cluster.node(follower).client();
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
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _: Value = redis::cmd("Q.PUSH").arg("jobs").arg("payload-1").query(&mut con).expect("push");
    let (popped, _fcon) = popper.join().expect("popper thread");
    let popped = format!("{:?}", popped.expect("the pop on the follower gets the message"));
    assert!(popped.contains("payload-1"), "{popped}");

    // HTTP on the follower: a push, and the queue's state read back there.
    let http = &cluster.node(follower).http_addr;
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
    let amqp = format!("amqp://guest:guest@{}/%2f", cluster.node(follower).amqp_addr);
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
    let mut cluster = TestCluster::start(3, &[]);
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let leader = cluster.leader();
    let follower = (leader + 1) % 3;

    // Writes through a follower all along, each acknowledged one recorded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), cluster.node(follower).url());
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

    let via = cluster.node(follower).addr.clone();
    let listed = members(&via);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.contains(&(cluster.id(leader), "leader".into())), "{listed:?}");

    // Node 4 joins through a follower's Raft address and serves once it is a voter.
    let join_via = cluster.raft_addr(follower).to_owned();
    let raft_4 = free_loopback_addr();
    let node_4 = TestServer::start_in(
        dirs[0].path(),
        &["--node-id", "4", "--raft-addr", &raft_4, "--join", &join_via, "--election-timeout-ms", "500"],
    );
    assert!(members(&via).contains(&(4, "voter".into())), "{:?}", members(&via));
    let mut con4 = node_4.client();
    until("the new node takes writes", WAIT, || set(&mut con4, "from-4", "yes").is_ok());
    assert_eq!(get(&mut con4, "from-4").expect("GET").as_deref(), Some("yes"));

    // Adding a member again is refused.
    let (ok, _, err) = cluster_cli(&via, &["add", &format!("4={raft_4}")]);
    assert!(!ok && err.contains("node id 4 is already a member"), "{err}");
    // But node 4 asking again to join, as it does when it restarts before it has learned that
    // it is a member, is answered: it is one, at that address.
    let deadline = || turnstile_raft::Deadline::after(WAIT);
    let joining =
        cluster.block_on(turnstile_raft::Joining::connect(&join_via, 4, None, deadline())).expect("connects");
    let again = cluster.block_on(joining.add(4, raft_4.clone(), deadline())).expect("an answer");
    assert!(again.as_ref().is_ok_and(|s| s.members.iter().any(|m| m.id == 4)), "{again:?}");
    let elsewhere = cluster.block_on(joining.add(4, free_loopback_addr(), deadline())).expect("an answer");
    assert!(elsewhere.is_err_and(|e| e.to_string().contains("already a member of the cluster, at")));

    // Remove a follower other than the one the writer and the CLI use.
    let removed = (0..3).find(|&i| i != leader && i != follower).expect("a third node");
    let removed_id = cluster.id(removed);
    let (ok, _, err) = cluster_cli(&via, &["remove", &removed_id.to_string()]);
    assert!(ok, "remove: {err}");
    until("the removed node is gone from the membership", WAIT, || {
        members(&via).iter().all(|(id, _)| *id != removed_id)
    });
    cluster.kill9(removed);
    // Its id can never come back: a fresh node asking to join under it is refused.
    let (status, output) = common::run_to_exit(
        dirs[1].path(),
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

    // Node 4 restarts with the same flags after the node it joined through is gone: its data dir
    // knows the cluster, so `--join` is not needed again (two of the three voters are up after).
    let mut node_4 = node_4;
    cluster.kill9(follower);
    node_4.kill9();
    node_4.restart();
    let mut con = node_4.client();
    until("the restarted node serves reads", WAIT, || get(&mut con, "from-4").is_ok_and(|v| v.is_some()));
    for i in acked {
        assert_eq!(
            get(&mut con, &format!("w{i}")).expect("GET").as_deref(),
            Some("x"),
            "acknowledged write w{i}"
        );
    }
}
