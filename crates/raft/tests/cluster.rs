//! Three Raft nodes in one process, talking over loopback TCP through the node-to-node transport
//! (`TcpNetwork` to send, `serve` to listen), each with an in-memory log and state machine.
//!
//! Every wait is bounded; none asserts how long anything took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::network::RPCOption;
use openraft::raft::VoteRequest;
use openraft::type_config::alias::VoteOf;
use openraft::{BasicNode, Config, RaftNetworkFactory, RaftNetworkV2, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use turnstile_core::{Command, Query, Reply, SetKey};
use turnstile_raft::{Batch, LogStore, NoNetwork, Raft, StateMachineStore, TcpNetwork, serve};

const CLUSTER: u64 = 7;
/// The bound on every wait for the cluster to get somewhere; far more than any step needs.
const WAIT: Duration = Duration::from_secs(20);

/// One node: its Raft, its state, its network and its listener.
struct TestNode {
    id: u64,
    addr: SocketAddr,
    raft: Raft,
    state: StateMachineStore,
    /// Stops `serve` (the listener and every connection it accepted); `None` while stopped.
    serving: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl TestNode {
    /// Node `id` of three, listening on `listener`; `peers` are everyone's addresses, as a
    /// `--peers` list would give them.
    async fn start(id: u64, listener: TcpListener, peers: &BTreeMap<u64, SocketAddr>) -> TestNode {
        let network = TcpNetwork::new(CLUSTER, id);
        for (&peer, addr) in peers {
            if peer != id {
                network.set_peer(peer, addr.to_string());
            }
        }
        let (state, _effects) = StateMachineStore::new();
        let raft = Raft::new(id, config(), network, LogStore::in_memory(), state.clone()).await.unwrap();
        let mut node = TestNode { id, addr: listener.local_addr().unwrap(), raft, state, serving: None };
        node.serve(listener);
        node
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, self.raft.clone(), CLUSTER, self.id, None, None, async {
            let _ = stopped.await;
        }));
        self.serving = Some((stop, served));
    }

    /// Stops listening and drops every connection peers made to this node; what this node sends
    /// still goes out.
    async fn stop_serving(&mut self) {
        let (stop, served) = self.serving.take().expect("serving");
        let _ = stop.send(());
        timeout(WAIT, served).await.expect("serve stops").unwrap();
    }

    /// Listens again on the same address.
    async fn serve_again(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// The value of key `n` in this node's applied state.
    fn n(&self) -> i64 {
        match self.state.with_state(|s| s.query(0, Query::Get { key: "n".into() })).unwrap() {
            Reply::Bytes(b) => std::str::from_utf8(&b).unwrap().parse().unwrap(),
            Reply::Nil => 0,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Waits until this node has applied up to `index`.
    async fn applied(&self, index: u64) {
        self.raft
            .wait(Some(WAIT))
            .metrics(
                |m| m.last_applied.is_some_and(|id| id.index() >= index),
                format!("node {} applies {index}", self.id),
            )
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        if self.serving.is_some() {
            self.stop_serving().await;
        }
        self.raft.shutdown().await.unwrap();
    }
}

/// Timings loose enough for a debug build on two busy cores, so elections settle.
fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "transport-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 2_000,
        enable_pre_vote: Some(true),
        // Snapshots and purges are asked for by the test, when it wants a lagging follower to
        // need one.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(config.validate().unwrap())
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Waits until every node of `nodes` sees the same leader, one of them, other than `not`.
async fn leader(nodes: &[&TestNode], not: Option<u64>) -> u64 {
    let first = nodes[0];
    let elected = first
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| Some(l) != not && nodes.iter().any(|n| n.id == l)),
            "a leader among the live nodes",
        )
        .await
        .unwrap();
    let leader = elected.current_leader.unwrap();
    for node in nodes {
        node.raft
            .wait(Some(WAIT))
            .current_leader(leader, format!("node {} follows {leader}", node.id))
            .await
            .unwrap();
    }
    // A leader refuses writes (`LeaseExpired`) until a quorum has acknowledged it.
    let leading = nodes.iter().find(|n| n.id == leader).unwrap();
    leading.raft.wait(Some(WAIT)).leader_with_quorum_acked(None, "the leader's lease").await.unwrap();
    leader
}

/// Adds 1 to `n` through `leader`, `count` times; returns the log index of the last write.
async fn write(leader: &TestNode, count: usize) -> u64 {
    let mut last = 0;
    for _ in 0..count {
        let batch = Batch { now: 1, commands: vec![Command::IncrBy { key: "n".into(), delta: 1 }] };
        let written = timeout(WAIT, leader.raft.client_write(batch)).await.expect("write in time").unwrap();
        last = written.log_id.index();
    }
    last
}

fn big_value() -> Bytes {
    (0..=250u8).cycle().take(5 << 19).collect()
}

fn node(nodes: &[TestNode], id: u64) -> &TestNode {
    nodes.iter().find(|n| n.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_catch_up_from_a_snapshot_and_fail_over() {
    let listeners = [bind().await, bind().await, bind().await];
    let peers: BTreeMap<u64, SocketAddr> =
        (1..).zip(listeners.iter().map(|l| l.local_addr().unwrap())).collect();
    let mut nodes = Vec::new();
    for (id, listener) in (1..).zip(listeners) {
        nodes.push(TestNode::start(id, listener, &peers).await);
    }
    let members: BTreeMap<u64, BasicNode> =
        peers.iter().map(|(&id, addr)| (id, BasicNode::new(addr.to_string()))).collect();
    nodes[0].raft.initialize(members).await.unwrap();

    // Replication: every write is applied on all three.
    let all: Vec<&TestNode> = nodes.iter().collect();
    let first_leader = leader(&all, None).await;
    let last = write(node(&nodes, first_leader), 20).await;
    for n in &nodes {
        n.applied(last).await;
        assert_eq!(n.n(), 20, "node {}", n.id);
    }

    // A follower that falls behind past the leader's purged log catches up from a snapshot,
    // streamed in chunks over the snapshot connection.
    let lagging = nodes.iter().map(|n| n.id).find(|&id| id != first_leader).unwrap();
    let lagging_at = nodes.iter().position(|n| n.id == lagging).unwrap();
    nodes[lagging_at].stop_serving().await;
    let leading = node(&nodes, first_leader);
    // A value of 2.5 MiB makes the snapshot several chunks long.
    let big = Batch { now: 1, commands: vec![Command::Set(SetKey::new("big", big_value()))] };
    timeout(WAIT, leading.raft.client_write(big)).await.expect("write in time").unwrap();
    let last = write(leading, 30).await;
    leading.raft.trigger().snapshot().await.unwrap();
    leading
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index() >= last), "the leader snapshots")
        .await
        .unwrap();
    leading.raft.trigger().purge_log(last).await.unwrap();
    leading
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index() >= last), "the leader purges its log")
        .await
        .unwrap();
    assert!(node(&nodes, lagging).n() < 50, "the stopped follower is behind");
    nodes[lagging_at].serve_again().await;
    let caught_up = node(&nodes, lagging);
    caught_up.applied(last).await;
    assert_eq!(caught_up.n(), 50);
    let big = caught_up.state.with_state(|s| s.query(0, Query::Get { key: "big".into() })).unwrap();
    assert!(big == Reply::Bytes(big_value()), "the large value arrived whole");
    let installed = caught_up.state.snapshot_index();
    assert!(installed.is_some_and(|i| i >= last), "installed the leader's snapshot: {installed:?}");

    // The leader dies: the other two elect a new one, and writes go on.
    let dead_at = nodes.iter().position(|n| n.id == first_leader).unwrap();
    nodes.remove(dead_at).stop().await;
    let survivors: Vec<&TestNode> = nodes.iter().collect();
    let second_leader = leader(&survivors, Some(first_leader)).await;
    let last = write(node(&nodes, second_leader), 5).await;
    for n in &nodes {
        n.applied(last).await;
        assert_eq!(n.n(), 55, "node {}", n.id);
    }
    for n in nodes {
        n.stop().await;
    }
}

/// A node given a wrong address for a peer never talks to the node it reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatched_handshake_is_refused() {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap().to_string();
    let (state, _effects) = StateMachineStore::new();
    let raft = Raft::new(2, config(), NoNetwork, LogStore::in_memory(), state).await.unwrap();
    let served = tokio::spawn(serve(listener, raft.clone(), CLUSTER, 2, None, None, std::future::pending()));

    let vote = VoteRequest::new(VoteOf::<turnstile_raft::TypeConfig>::new(1, 1), None);
    let ask = |cluster: u64, from: u64, to: u64| {
        let (addr, vote) = (addr.clone(), vote.clone());
        async move {
            let mut network = TcpNetwork::new(cluster, from);
            network.set_peer(to, addr);
            let mut client = network.new_client(to, &BasicNode::default()).await;
            client.vote(vote, RPCOption::new(WAIT)).await.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    // Node 1 believes node 3 listens where node 2 does.
    let wrong_node = ask(CLUSTER, 1, 3).await.unwrap_err();
    assert!(wrong_node.contains(&format!("peer at {addr} is node 2, not node 3")), "{wrong_node}");
    // A node of another cluster.
    let other_cluster = ask(8, 1, 2).await.unwrap_err();
    assert!(
        other_cluster.contains(&format!(
            "cluster id mismatch: peer at {addr} is in cluster {CLUSTER}, this node in cluster 8"
        )),
        "{other_cluster}"
    );
    // Node 2 given its own address for node 3: it would reach itself.
    let itself = ask(CLUSTER, 2, 3).await.unwrap_err();
    assert!(itself.contains(&format!("peer at {addr} is this node itself (node 2)")), "{itself}");
    // And the listener still serves the node it is.
    assert_eq!(ask(CLUSTER, 1, 2).await, Ok(()));

    served.abort();
    raft.shutdown().await.unwrap();
}
