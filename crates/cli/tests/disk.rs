//! A full disk, for real: the server's data dir on a small tmpfs, filled by a file beside it
//! until the journal cannot write. Then writes are refused with an error naming the cause, reads
//! keep working, the process lives on, and nothing acknowledged is lost — across the refusal, a
//! `kill -9`, a restart refused while the disk is still full, and the restart once space is
//! freed. Recovery takes that restart: the journal stops at its first failed write (see
//! `crates/storage/README.md`, "Disk full").
//!
//! Mounting needs root. Without it the test says why and passes, unless
//! `TURNSTILE_REQUIRE_PEERS` is set (CI), where it fails.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TestServer, http_request, info_u64, peers_required, run_to_exit};

/// The tmpfs's size: room for the journal's first segments, small enough to fill at once.
const TMPFS_SIZE: &str = "8m";
/// A value big enough that a few dozen writes outgrow what the journal zero-filled ahead.
const VALUE_BYTES: usize = 16 * 1024;
/// Most writes tried before the disk must have refused one.
const MAX_WRITES: usize = 400;

/// A tmpfs mounted on a temporary dir, unmounted (lazily, should something still hold it) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot.
    fn mount() -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_SIZE}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !output.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Fills the file system of `path` with a file there, until a write fails for want of space.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("filler file");
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // What fit in part of the last chunk: a few bytes a write could still use.
    let _ = file.flush();
}

fn value(i: usize) -> String {
    format!("{i:06}-{}", "v".repeat(VALUE_BYTES))
}

/// Every acknowledged write is there: each key with its value, each pushed message in the queue.
fn assert_all_present(server: &TestServer, keys: &[usize], pushes: &[String]) {
    let mut con = server.client();
    for &i in keys {
        let got: Option<String> = redis::cmd("GET").arg(format!("key{i}")).query(&mut con).expect("GET");
        assert_eq!(got.as_deref(), Some(value(i).as_str()), "acknowledged key{i} is lost");
    }
    // Peeked, not popped: the messages stay ready for the next look.
    let messages: Vec<redis::Value> =
        redis::cmd("Q.PEEK").arg("q").arg("COUNT").arg(1_000_000).query(&mut con).expect("Q.PEEK");
    let queued: Vec<String> = messages
        .into_iter()
        .map(|m| match m {
            // [id, payload, deliveries, priority, age-ms]
            redis::Value::Array(parts) => redis::from_redis_value(parts[1].clone()).expect("a payload"),
            other => panic!("Q.PEEK: unexpected {other:?}"),
        })
        .collect();
    assert_eq!(&queued, pushes, "every acknowledged push, in order, and nothing else");
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing_acknowledged() {
    let tmpfs = match Tmpfs::mount() {
        Ok(tmpfs) => tmpfs,
        Err(why) if peers_required() => panic!("TURNSTILE_REQUIRE_PEERS is set but {why}"),
        Err(why) => {
            eprintln!("skipping the disk-full test: {why} (it needs root to mount a tmpfs)");
            return;
        }
    };
    let data_dir: PathBuf = tmpfs.path().join("data");
    let filler = tmpfs.path().join("filler");
    // Snapshots often, so that some are due while the disk is full.
    let args = ["--snapshot-every", "20"];
    let mut server = TestServer::start_in(&data_dir, &args);
    let mut con = server.client();

    let mut keys = Vec::new();
    let mut pushes = Vec::new();
    for i in 0..10 {
        let _: () = redis::cmd("SET").arg(format!("key{i}")).arg(value(i)).query(&mut con).expect("SET");
        keys.push(i);
        let payload = format!("m{i}");
        let _: i64 = redis::cmd("Q.PUSH").arg("q").arg(&payload).query(&mut con).expect("Q.PUSH");
        pushes.push(payload);
    }

    fill(&filler);
    // The journal zero-fills ahead of its records, so the first writes may still fit.
    let mut refusal = None;
    for i in 10..10 + MAX_WRITES {
        match redis::cmd("SET").arg(format!("key{i}")).arg(value(i)).query::<()>(&mut con) {
            Ok(()) => keys.push(i),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("a write is refused once the disk is full");
    assert!(refusal.contains("no space left on device"), "the error names the cause: {refusal}");

    // From now on every write is refused up front, on every protocol, with the cause.
    let refused = redis::cmd("Q.PUSH").arg("q").arg("late").query::<i64>(&mut con).unwrap_err();
    assert_eq!(refused.code(), Some("ERR"), "{refused}");
    let text = refused.to_string();
    assert!(text.contains("writes refused: no space left on device"), "{text}");
    assert!(text.contains("restart"), "the error says how to recover: {text}");
    let (status, _, body) = http_request(
        &server.http_addr,
        "POST",
        "/api/queues/q/messages",
        Some(r#"{"payload":"late"}"#),
        "application/json",
    );
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("no space left on device"), "{body}");

    // Reads still work, the process lives, and says why it writes nothing.
    assert_eq!(info_u64(&mut con, "persistence", "journal_poisoned"), 1);
    assert_all_present(&server, &keys, &pushes);

    // Space freed: this node still refuses writes (its journal stopped at the failure) ...
    std::fs::remove_file(&filler).expect("remove the filler");
    let still = redis::cmd("SET").arg("after").arg("1").query::<()>(&mut con).unwrap_err();
    assert!(still.to_string().contains("no space left on device"), "{still}");

    // ... until it restarts: a crash first, then a start on a disk filled again is refused
    // with the cause, and a start with room recovers everything acknowledged.
    server.kill9();
    fill(&filler);
    let (status, output) = run_to_exit(&data_dir, &args, Duration::from_secs(60));
    assert!(status.is_some_and(|s| !s.success()), "a start on a full disk fails: {output}");
    assert!(output.to_lowercase().contains("no space left on device"), "it says why: {output}");
    std::fs::remove_file(&filler).expect("remove the filler");

    server.restart();
    assert_all_present(&server, &keys, &pushes);
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("after").arg("1").query(&mut con).expect("writes work again");
    server.kill9();
    server.restart();
    let mut con = server.client();
    let after: Option<String> = redis::cmd("GET").arg("after").query(&mut con).expect("GET");
    assert_eq!(after.as_deref(), Some("1"));
    assert_all_present(&server, &keys, &pushes);
    assert_eq!(info_u64(&mut con, "persistence", "journal_poisoned"), 0);
    drop(con);
    drop(server);
}
