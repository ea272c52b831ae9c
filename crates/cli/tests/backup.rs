//! Backups with the real binary: `turnstile cluster snapshot save` under load, `turnstile server
//! --restore` into a new data dir, and what is refused (a damaged or newer backup, a dir that holds
//! data, a data dir of a newer format). Also that the cluster id is kept in the data dir.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{TestServer, free_loopback_addr, holder_tokens, info, run_to_exit, until};
use redis::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `turnstile cluster snapshot save FILE --http ADDR --json`: its JSON line, or what it printed
/// on stderr when it failed.
fn save(http: &str, file: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .args(["cluster", "snapshot", "save"])
        .arg(file)
        .args(["--http", http, "--json"])
        .output()
        .expect("turnstile runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8(out.stdout).expect("UTF-8");
    Ok(serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout:?}")))
}

fn cluster_id(server: &TestServer) -> String {
    info(&mut server.client(), "raft")["cluster_id"].clone()
}

/// The payloads of a queue's ready messages, in delivery order.
fn queued(con: &mut redis::Connection, queue: &str) -> Vec<String> {
    let messages: Vec<Value> =
        redis::cmd("Q.PEEK").arg(queue).arg("COUNT").arg(1_000_000).query(con).expect("Q.PEEK");
    messages
        .into_iter()
        .map(|m| match m {
            // [id, payload, deliveries, priority, age-ms]
            Value::Array(parts) => redis::from_redis_value(parts[1].clone()).expect("a payload"),
            other => panic!("Q.PEEK: unexpected {other:?}"),
        })
        .collect()
}

/// How many of `k0, k1, ...` (up to `most`) are set, each to its `v{i}`; they must be a prefix.
fn keys_set(con: &mut redis::Connection, most: u64) -> u64 {
    let mut gets = redis::pipe();
    for i in 0..most {
        gets.cmd("GET").arg(format!("k{i}"));
    }
    let values: Vec<Option<String>> = gets.query(con).expect("GETs");
    let set = values.iter().take_while(|v| v.is_some()).count();
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(value) => assert!(i < set && *value == format!("v{i}"), "k{i} = {value:?} (set: {set})"),
            None => assert!(i >= set, "k{i} missing below k{set}"),
        }
    }
    u64::try_from(set).expect("count")
}

/// A writer pushes `m{i}` and sets `k{i}` = `v{i}`, one after the other, while a backup is saved;
/// `acked` counts the pairs whose replies came back. Every pair acknowledged before the save began
/// is in the restored node, with the lock held before it (same token), and what else is there is
/// one consistent point of the writer's sequence.
#[test]
fn a_snapshot_saved_under_load_holds_every_write_acknowledged_before_the_save_began() {
    let server = TestServer::start();
    let mut con = server.client();
    let (token, _lease): (i64, i64) = redis::cmd("LOCK.ACQUIRE")
        .arg("held")
        .arg(600_000)
        .arg("KEEP")
        .query(&mut con)
        .expect("LOCK.ACQUIRE");

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, mut con) = (acked.clone(), stop.clone(), server.client());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let _: u64 =
                    redis::cmd("Q.PUSH").arg("jobs").arg(format!("m{i}")).query(&mut con).expect("Q.PUSH");
                let _: () =
                    redis::cmd("SET").arg(format!("k{i}")).arg(format!("v{i}")).query(&mut con).expect("SET");
                i += 1;
                acked.store(i, Ordering::SeqCst);
            }
        })
    };
    until("the writer has had 100 pairs acknowledged", WAIT, || acked.load(Ordering::SeqCst) >= 100);

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.snap");
    let before = acked.load(Ordering::SeqCst);
    let saved = save(&server.http_addr, &file).expect("snapshot save");
    stop.store(true, Ordering::SeqCst);
    writer.join().expect("writer");
    let written = acked.load(Ordering::SeqCst);
    assert!(!dir.path().join("backup.snap.tmp").exists(), "the temp file is renamed");
    assert_eq!(saved["cluster_id"], cluster_id(&server).as_str(), "{saved}");
    assert_eq!(saved["bytes"], std::fs::metadata(&file).expect("saved file").len(), "{saved}");
    assert!(saved["index"].as_u64().is_some_and(|i| i > 0), "{saved}");

    let restored_dir = dir.path().join("restored");
    let mut restored =
        TestServer::start_in(&restored_dir, &["--restore", file.to_str().expect("UTF-8 path")]);
    assert_ne!(cluster_id(&restored), cluster_id(&server), "a restore makes a new cluster");
    for run in ["restored", "restarted without --restore"] {
        let mut con = restored.client();
        let messages = queued(&mut con, "jobs");
        let pushed = u64::try_from(messages.len()).expect("count");
        let expected: Vec<String> = (0..pushed).map(|i| format!("m{i}")).collect();
        assert_eq!(messages, expected, "{run}: the messages, in order");
        let set = keys_set(&mut con, written);
        assert!(
            pushed >= before && set >= before,
            "{run}: {pushed} pushes, {set} keys, {before} acknowledged before"
        );
        assert!(pushed <= written, "{run}: {pushed} pushes of {written} made");
        assert!(
            set == pushed || set + 1 == pushed,
            "{run}: one point of the writer's sequence ({pushed}, {set})"
        );
        assert_eq!(holder_tokens(&mut con, "held"), vec![token], "{run}: the hold and its token");
        drop(con);
        restored.restart_with(&[]);
    }
    let mut con = restored.client();
    let (later, _lease): (i64, i64) =
        redis::cmd("LOCK.ACQUIRE").arg("other").arg(60_000).query(&mut con).expect("LOCK.ACQUIRE");
    assert!(later > token, "tokens go on from the backup's: {later} after {token}");
}

/// Restores that must not happen leave nothing behind: a damaged backup (checksum), one of a
/// newer format, a file that is no backup, a data dir that holds data, a restore with peers.
#[test]
fn a_bad_restore_is_refused_and_creates_nothing() {
    let server = TestServer::start();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut server.client()).expect("SET");
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.snap");
    save(&server.http_addr, &good).expect("snapshot save");
    let bytes = std::fs::read(&good).expect("read");

    let variant = |name: &str, change: &dyn Fn(&mut Vec<u8>)| {
        let mut changed = bytes.clone();
        change(&mut changed);
        let path = dir.path().join(name);
        std::fs::write(&path, changed).expect("write");
        path
    };
    let damaged = variant("damaged.snap", &|b| {
        let middle = b.len() / 2;
        b[middle] ^= 0x01;
    });
    let newer = variant("newer.snap", &|b| b[8..12].copy_from_slice(&2u32.to_le_bytes()));
    let cut = variant("cut.snap", &|b| b.truncate(b.len() - 5));
    let other =
        variant("other.snap", &|b| *b = b"hello, this is not a backup at all, just some text".to_vec());
    let refused = |file: &Path, data: &Path, extra: &[&str], says: &str| {
        let mut args = vec!["--restore", file.to_str().expect("UTF-8 path")];
        args.extend_from_slice(extra);
        let (status, output) = run_to_exit(data, &args, WAIT);
        assert!(!status.expect("a refused start exits by itself").success(), "{output}");
        assert!(output.contains(says), "expected {says:?} in:\n{output}");
    };
    let new = dir.path().join("new");
    refused(&damaged, &new, &[], "checksum mismatch");
    refused(&cut, &new, &[], "checksum mismatch");
    refused(&newer, &new, &[], "written by a newer format (2 > 1");
    refused(&other, &new, &[], "not a Turnstile snapshot");
    let two = format!("1={},2={}", free_loopback_addr(), free_loopback_addr());
    refused(&good, &new, &["--peers", &two], "restore starts a new cluster of one voter");
    let (raft, member) = (free_loopback_addr(), free_loopback_addr());
    refused(
        &good,
        &new,
        &["--raft-addr", &raft, "--join", &member, "--election-timeout-ms", "500"],
        "restore starts a new cluster, it cannot join one",
    );
    assert!(!new.exists(), "nothing is created for a refused restore");

    let used = tempfile::tempdir().expect("temp dir");
    std::fs::write(used.path().join("notes"), "mine").expect("write");
    refused(&good, used.path(), &[], "already holds data");
    let left: Vec<_> =
        std::fs::read_dir(used.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("notes")], "a dir that holds data is left as it was");

    // The one good file does restore.
    let restored = TestServer::start_in(&new, &["--restore", good.to_str().expect("UTF-8 path")]);
    let value: String = redis::cmd("GET").arg("k").query(&mut restored.client()).expect("GET");
    assert_eq!(value, "v");
}

/// A cluster restored from a backup: the restored node, given its Raft address (`--peers` naming
/// only itself), takes a node that joins it; that node learns the new cluster id and the backup's
/// state. A node whose data dir belongs to the old cluster cannot join it.
#[test]
fn a_restored_node_takes_nodes_that_join_it() {
    let mut source = TestServer::start();
    let mut con = source.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).expect("SET");
    let (token, _lease): (i64, i64) = redis::cmd("LOCK.ACQUIRE")
        .arg("held")
        .arg(600_000)
        .arg("KEEP")
        .query(&mut con)
        .expect("LOCK.ACQUIRE");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.snap");
    save(&source.http_addr, &file).expect("snapshot save");
    let old_cluster = cluster_id(&source);
    source.kill9();

    let raft_1 = free_loopback_addr();
    let first = TestServer::start_in(
        &dir.path().join("1"),
        &[
            "--node-id",
            "1",
            "--peers",
            &format!("1={raft_1}"),
            "--restore",
            file.to_str().expect("UTF-8 path"),
        ],
    );
    let new_cluster = cluster_id(&first);
    assert_ne!(new_cluster, old_cluster);
    let join = [
        "--node-id",
        "2",
        "--raft-addr",
        &free_loopback_addr(),
        "--join",
        &raft_1,
        "--election-timeout-ms",
        "500",
    ];
    let second = TestServer::start_in(&dir.path().join("2"), &join);
    assert_eq!(cluster_id(&second), new_cluster, "the joining node takes the restored cluster's id");
    let mut con = second.client();
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut con).expect("GET through the new node");
    assert_eq!(value.as_deref(), Some("v"));
    assert_eq!(holder_tokens(&mut con, "held"), vec![token], "the hold and its token, through the new node");

    // The old node's data dir belongs to the old cluster: told to join the new one, it refuses.
    let (status, output) = run_to_exit(
        source.data_dir(),
        &[
            "--node-id",
            "3",
            "--raft-addr",
            &free_loopback_addr(),
            "--join",
            &raft_1,
            "--election-timeout-ms",
            "500",
        ],
        WAIT,
    );
    assert!(!status.expect("a refused start exits by itself").success(), "{output}");
    let says = format!("belongs to cluster {old_cluster}, but {raft_1} (join) is in cluster {new_cluster}");
    assert!(output.contains(&says), "expected {says:?} in:\n{output}");
}

/// A data dir whose meta file names a newer format is refused, with both versions and the file,
/// and left as it was.
#[test]
fn a_data_dir_of_a_newer_format_is_refused() {
    let mut server = TestServer::start();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut server.client()).expect("SET");
    server.kill9();
    let meta = server.data_dir().join("turnstile.meta");
    let mut bytes = std::fs::read(&meta).expect("a meta file in the data dir");
    assert_eq!(&bytes[..12], b"TSMETA\0\0\x02\0\0\0", "format 2");
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&meta, &bytes).expect("write");

    let (status, output) = run_to_exit(server.data_dir(), &[], WAIT);
    assert!(!status.expect("a refused start exits by itself").success(), "{output}");
    let says = format!("{} was written by a newer format (data dir version 3 > 2", meta.display());
    assert!(output.contains(&says), "expected {says:?} in:\n{output}");
    assert_eq!(std::fs::read(&meta).expect("read"), bytes, "not rewritten");
}

/// The cluster id is chosen at the first start and kept: a single node's is random; a node of a
/// cluster takes the one every node computes alike from the peers list, and keeps it when the list
/// changes later.
#[test]
fn the_cluster_id_is_kept_in_the_data_dir() {
    let mut single = TestServer::start();
    let id = cluster_id(&single);
    assert_eq!(id.len(), 16, "{id}");
    assert_ne!(cluster_id(&TestServer::start()), id, "another single node, another id");
    single.restart();
    assert_eq!(cluster_id(&single), id, "kept across a restart");

    let peers = format!("1={}", free_loopback_addr());
    let start = |dir: &Path, peers: &str| TestServer::start_in(dir, &["--node-id", "1", "--peers", peers]);
    let (first, second) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let mut node = start(first.path(), &peers);
    let formed = cluster_id(&node);
    node.kill9();
    let other = start(second.path(), &peers);
    assert_eq!(cluster_id(&other), formed, "the same peers list, the same id, without talking");
    drop(other);

    let moved = format!("1={}", free_loopback_addr());
    node.restart_with(&["--node-id", "1", "--peers", &moved]);
    assert_eq!(cluster_id(&node), formed, "an edited peers list does not change a formed cluster's id");
    node.kill9();
    let third = tempfile::tempdir().expect("temp dir");
    assert_ne!(cluster_id(&start(third.path(), &moved)), formed, "a new cluster of that list gets another");
}
