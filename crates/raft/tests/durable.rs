//! [`Node`] on a data dir: what was acknowledged is there after a restart, snapshots and log
//! purges keep it so, and a failed fsync stops writes but not reads.

use std::path::Path;
use std::time::Duration;

use tokio::time::timeout;
use turnstile_core::{Acquire, Command, Mode, Query, Reply, SetKey, State};
use turnstile_raft::{FsyncPolicy, Node, NodeConfig, NodeError, Storage, StorageOptions};

const WAIT: Duration = Duration::from_secs(10);

async fn start_in(dir: &Path, snapshot_every: u64) -> Result<Node, NodeError> {
    let storage = Storage {
        dir: dir.to_path_buf(),
        options: StorageOptions { fsync: FsyncPolicy::Always, ..StorageOptions::default() },
    };
    let config = NodeConfig { storage: Some(storage), snapshot_every, ..NodeConfig::default() };
    timeout(WAIT, Node::start(config)).await.expect("start in time")
}

fn kept_lock(name: &str) -> Command {
    Command::Acquire(Acquire {
        name: name.into(),
        mode: Mode::Exclusive,
        ttl: 600_000,
        wait: 0,
        owner: Some("worker".into()),
        session: None,
        keep: true,
    })
}

fn token(reply: Reply) -> u64 {
    match reply {
        Reply::Granted { token, .. } => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

async fn state(node: &Node) -> State {
    node.read(|s| s.clone()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path(), 20_000).await.unwrap();
    let t = token(node.propose(kept_lock("L")).await.unwrap());
    for i in 0..10 {
        node.propose(Command::IncrBy { key: "n".into(), delta: i }).await.unwrap();
    }
    node.shutdown().await.unwrap();
    drop(node);

    let node = start_in(dir.path(), 20_000).await.unwrap();
    let read = |q| node.read(move |s| s.query(0, q));
    assert_eq!(read(Query::Get { key: "n".into() }).await.unwrap(), Reply::Bytes("45".into()));
    assert_eq!(read(Query::FenceCheck { lock: "L".into(), token: t }).await.unwrap(), Reply::Int(1));
    let t2 = token(node.propose(kept_lock("M")).await.unwrap());
    assert!(t2 > t, "token {t2} after {t} across a restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_purges_restart_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path(), 3).await.unwrap();
    for i in 0..40 {
        node.propose(Command::Set(SetKey::new(format!("k{i}"), format!("v{i}")))).await.unwrap();
    }
    // Let openraft build the snapshots its policy asks for.
    let snapshotted = timeout(WAIT, async {
        while node.status().snapshot_index.is_none_or(|i| i < 30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(snapshotted.is_ok(), "a snapshot covers most of the log: {:?}", node.status());
    let before = state(&node).await;
    node.shutdown().await.unwrap();
    drop(node);
    let snaps = std::fs::read_dir(dir.path().join("snapshots")).unwrap().count();
    assert!(snaps >= 1, "a snapshot file on disk");

    let node = start_in(dir.path(), 3).await.unwrap();
    let after = state(&node).await;
    for i in 0..40 {
        let key = format!("k{i}");
        assert_eq!(after.query(0, Query::Get { key: key.clone() }), before.query(0, Query::Get { key }));
    }
    assert_eq!(after.summary().keys, 40);
}

/// A restart whose log after the snapshot is longer than the in-memory window (1,024 entries):
/// the entries below it are decoded while the snapshot loads and applied from memory, in order;
/// the restart after that reads the same log back from the journal. (`fsync = never`, to be quick:
/// a clean shutdown syncs, and a restart replays the same way whatever the policy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_log_longer_than_the_window_applies_all_of_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let storage = Storage {
            dir: dir.path().to_path_buf(),
            options: StorageOptions { fsync: FsyncPolicy::Never, ..StorageOptions::default() },
        };
        let config = NodeConfig { storage: Some(storage), snapshot_every: 2_000, ..NodeConfig::default() };
        async { timeout(WAIT, Node::start(config)).await.expect("start in time").unwrap() }
    };
    let node = start().await;
    // One proposal at a time: one entry each. "mid" is last written by entry ~2,450: after the
    // snapshot, below the window of the newest 1,024.
    let command = |i: u64| match i % 2 {
        0 => Command::IncrBy { key: "n".into(), delta: 1 },
        _ => Command::Set(SetKey::new(if i < 2_450 { "mid" } else { "last" }, i.to_string())),
    };
    for i in 0..3_500 {
        node.propose(command(i)).await.unwrap();
    }
    let snapshotted = timeout(WAIT, async {
        while node.status().snapshot_index.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let covered = node.status().snapshot_index;
    assert!(snapshotted.is_ok() && covered < Some(2_400), "one snapshot, ~2,000: {:?}", node.status());
    node.shutdown().await.unwrap();
    drop(node);

    let read = |node: &Node, key: &str| {
        let key = key.to_string();
        let node = node.clone();
        async move { node.read(move |s| s.query(0, Query::Get { key })).await.unwrap() }
    };
    let node = start().await;
    assert_eq!(node.status().snapshot_index, covered, "the tail after it is > 1,024 entries");
    assert_eq!(read(&node, "n").await, Reply::Bytes("1750".into()));
    assert_eq!(read(&node, "mid").await, Reply::Bytes("2449".into()), "applied in order");
    assert_eq!(read(&node, "last").await, Reply::Bytes("3499".into()));
    for i in 3_500..3_510 {
        node.propose(command(i)).await.unwrap();
    }
    node.shutdown().await.unwrap();
    drop(node);

    let node = start().await;
    assert_eq!(read(&node, "n").await, Reply::Bytes("1755".into()));
    assert_eq!(read(&node, "last").await, Reply::Bytes("3509".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = start_in(dir.path(), 20_000).await.unwrap();
    let second = start_in(dir.path(), 20_000).await.unwrap_err();
    assert!(second.to_string().contains("locked"), "{second}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_refuses_writes_and_keeps_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path(), 20_000).await.unwrap();
    node.propose(Command::Set(SetKey::new("k", "before"))).await.unwrap();
    node.fail_next_sync_for_test();
    let failed = timeout(WAIT, node.propose(Command::Set(SetKey::new("k", "lost")))).await.expect("answered");
    assert!(failed.is_err(), "a write whose fsync failed is not acknowledged: {failed:?}");
    assert!(node.journal_poisoned());
    let later = timeout(WAIT, node.propose(Command::Set(SetKey::new("x", "y")))).await.expect("answered");
    assert!(later.is_err(), "the poisoned log refuses later writes: {later:?}");
    let read =
        timeout(WAIT, node.read(|s| s.query(0, Query::Get { key: "k".into() }))).await.expect("answered");
    assert_eq!(read.unwrap(), Reply::Bytes("before".into()));
}

/// openraft builds snapshots in a task on the runtime that runs the log, which the server gives one
/// thread. Serializing and writing a large state there stopped every write for as long (1.4–1.9 s with
/// 300 MB of queued messages): the builder copies the state and does the rest on a blocking thread.
/// Here the snapshot's write is held, and writes must still be acknowledged meanwhile.
#[test]
fn writes_go_on_while_a_snapshot_is_written() {
    // The server's log runtime: one worker, timers only.
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_time().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = runtime.block_on(start_in(dir.path(), 5)).unwrap();
    let held = node.hold_snapshot_saves_for_test().expect("a node on a data dir writes snapshots");
    // Waits for `propose` on the node's runtime from this thread, so that a runtime stuck in a snapshot
    // fails the test instead of hanging it.
    let propose = |cmd: Command| {
        let (tx, rx) = std::sync::mpsc::channel();
        let node = node.clone();
        runtime.spawn(async move {
            let _ = tx.send(node.propose(cmd).await);
        });
        rx.recv_timeout(WAIT).expect("the write is answered while the snapshot is held")
    };
    let set = |i: usize| Command::Set(SetKey::new(format!("k{i}"), format!("v{i}")));
    let mut polls = 0;
    let mut i = 0;
    while held.waiting() == 0 {
        propose(set(i)).unwrap();
        i += 1;
        polls += 1;
        assert!(polls < 1_000, "no snapshot started after {i} writes (policy: every 5 entries)");
        std::thread::sleep(Duration::from_millis(5));
    }
    for j in 0..50 {
        propose(set(i + j)).unwrap();
    }
    assert_eq!(node.status().snapshot_index, None, "the held snapshot is not finished");

    drop(held);
    let mut polls = 0;
    while node.status().snapshot_index.is_none() {
        polls += 1;
        assert!(polls < 1_000, "the snapshot finishes once its write is let go");
        std::thread::sleep(Duration::from_millis(10));
    }
    let got =
        runtime.block_on(node.read(|s| s.query(0, Query::Get { key: format!("k{}", i + 49) }))).unwrap();
    assert_eq!(got, Reply::Bytes(format!("v{}", i + 49).into()));
    runtime.block_on(node.shutdown()).unwrap();
}

/// Starts a node that snapshots by log size only (the entry count is out of reach).
async fn start_sized(dir: &Path, snapshot_log_bytes: u64) -> Node {
    let storage = Storage { dir: dir.to_path_buf(), options: StorageOptions::default() };
    let config = NodeConfig {
        storage: Some(storage),
        snapshot_every: 1_000_000,
        snapshot_log_bytes,
        ..NodeConfig::default()
    };
    timeout(WAIT, Node::start(config)).await.expect("start in time").unwrap()
}

/// Sets `count` keys of 4 KiB, one entry each.
async fn set_values(node: &Node, from: usize, count: usize) {
    for i in from..from + count {
        node.propose(Command::Set(SetKey::new(format!("k{i}"), vec![b'v'; 4096]))).await.unwrap();
    }
}

/// Waits (bounded) for a snapshot newer than `after`.
async fn next_snapshot(node: &Node, after: Option<u64>) -> Option<u64> {
    let waited = timeout(WAIT, async {
        loop {
            if let Some(index) = node.status().snapshot_index.filter(|i| Some(*i) > after) {
                return index;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    waited.await.ok()
}

/// A snapshot comes once the log after the last one passes the size limit and that snapshot's
/// own size, whatever the entry count; with the limit at 0 none comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_come_by_log_size_against_the_last_snapshots_size() {
    let dir = tempfile::tempdir().unwrap();
    // 256 KiB of log with snapshots by size off: none comes.
    let node = start_sized(dir.path(), 0).await;
    set_values(&node, 0, 64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.status().snapshot_index, None, "snapshots by size are off at 0");
    node.shutdown().await.unwrap();
    drop(node);

    // Restarted with a 32 KiB limit, the log it replays is past it: one snapshot covers it all.
    let node = start_sized(dir.path(), 32 * 1024).await;
    let first = next_snapshot(&node, None).await.expect("a snapshot once the log passed 32 KiB");
    assert!(first >= 64, "the snapshot covers the replayed log ({first})");
    // The snapshot holds ~256 KiB of values: 64 KiB more log is past the limit but not past it.
    set_values(&node, 64, 16).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.status().snapshot_index, Some(first), "no snapshot before the log outgrows the last one");
    // Another 256 KiB is.
    set_values(&node, 80, 64).await;
    let second =
        next_snapshot(&node, Some(first)).await.expect("a snapshot once the log outgrew the last one");
    assert!(second > first);
    node.shutdown().await.unwrap();
    drop(node);

    // The restart finds the snapshot and the short log after it.
    let node = start_sized(dir.path(), 32 * 1024).await;
    let keys = vec!["k0".into(), "k100".into(), "k143".into()];
    assert_eq!(state(&node).await.query(0, Query::Exists { keys }), Reply::Int(3));
    node.shutdown().await.unwrap();
}

/// A backup of a running node's state, installed into a new dir, starts a node that holds the
/// state (holds with their tokens, keys), takes new writes, and keeps both across restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_starts_a_node_that_goes_on_from_it() {
    use std::io::Write;
    use turnstile_raft::{Backup, BackupHeader, BackupWriter};

    let dir = tempfile::tempdir().unwrap();
    let old = start_in(&dir.path().join("old"), 20_000).await.unwrap();
    let held = token(old.propose(kept_lock("L")).await.unwrap());
    old.propose(Command::Set(SetKey::new("k", "v"))).await.unwrap();
    let (bytes, index) = old.read(|s| (s.snapshot(), s.applied_index())).await.unwrap();
    old.shutdown().await.unwrap();
    let header = BackupHeader { index, cluster_id: 5, created_at: 0 };
    let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
    writer.write_all(&bytes).unwrap();
    let file = dir.path().join("backup.snap");
    std::fs::write(&file, writer.finish().unwrap()).unwrap();

    let new = dir.path().join("new");
    Backup::read(&file).unwrap().install(&new, 1, None).unwrap();
    let node = start_in(&new, 20_000).await.unwrap();
    assert_eq!(node.status().snapshot_index, Some(index));
    let restored = state(&node).await;
    let now = restored.clock();
    assert_eq!(
        restored.query(now, Query::Get { key: "k".into() }),
        Reply::Bytes(bytes::Bytes::from_static(b"v"))
    );
    let holders = |s: &State| match s.query(now, Query::LockInfo { name: "L".into() }) {
        Reply::LockInfo(info) => info.holders.into_iter().map(|h| (h.owner, h.token)).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(holders(&restored), vec![("worker".to_owned(), held)], "the hold, its owner and token");
    let later = token(node.propose(kept_lock("M")).await.unwrap());
    assert!(later > held, "tokens go on from the backup's ({later} after {held})");
    node.propose(Command::Set(SetKey::new("k2", "after"))).await.unwrap();
    node.shutdown().await.unwrap();
    drop(node);

    for _ in 0..2 {
        let node = start_in(&new, 20_000).await.unwrap();
        let keys = vec!["k".into(), "k2".into()];
        assert_eq!(state(&node).await.query(0, Query::Exists { keys }), Reply::Int(2));
        node.propose(Command::Set(SetKey::new("k3", "again"))).await.unwrap();
        node.shutdown().await.unwrap();
    }
}
