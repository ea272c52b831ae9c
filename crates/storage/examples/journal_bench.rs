//! Durable append throughput under `FsyncPolicy::Always`: C closed-loop appenders (each waits for its ack
//! before the next append) of 100-byte entries, ~3 s per level. Shows how group commit turns one fdatasync into
//! many acknowledged appends.
//!
//! `cargo run --release -p turnstile-storage --example journal_bench [-- DIR [SECONDS]]`
//! DIR defaults to a temp dir under `target/` (not /tmp, which may be a tmpfs where fsync is free).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use turnstile_storage::{Journal, Options, Record};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = args.next().map(std::path::PathBuf::from).unwrap_or_else(|| "target".into());
    let seconds: f64 = args.next().map(|s| s.parse().expect("SECONDS must be a number")).unwrap_or(3.0);
    std::fs::create_dir_all(&base).expect("creating the bench directory");
    println!(
        "journal_bench: FsyncPolicy::Always, 100-byte entries, {seconds} s per level, dir under {}",
        base.display()
    );
    println!(
        "{:>10} {:>12} {:>10} {:>10} {:>10} {:>12}",
        "appenders", "appends/s", "fsyncs/s", "avg batch", "max batch", "avg fsync"
    );
    for appenders in [1usize, 8, 50] {
        let dir = tempfile::tempdir_in(&base).expect("creating a temp dir");
        let (journal, _) = Journal::open(dir.path(), Options::default()).expect("opening the journal");
        let journal = Arc::new(journal);
        let stop = Arc::new(AtomicBool::new(false));
        let next_index = Arc::new(AtomicU64::new(1));
        let started = Instant::now();
        let before = journal.stats();
        let threads: Vec<_> = (0..appenders)
            .map(|_| {
                let (journal, stop, next_index) =
                    (Arc::clone(&journal), Arc::clone(&stop), Arc::clone(&next_index));
                std::thread::spawn(move || {
                    let (tx, rx) = mpsc::channel();
                    while !stop.load(Ordering::Relaxed) {
                        let index = next_index.fetch_add(1, Ordering::Relaxed);
                        let tx = tx.clone();
                        journal.append(
                            vec![Record::Entry { index, data: vec![0x5A; 100].into() }],
                            Box::new(move |result| tx.send(result).expect("bench thread gone")),
                        );
                        rx.recv().expect("journal gone").expect("append failed");
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            thread.join().expect("bench thread panicked");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let stats = journal.stats();
        let appends = stats.appends - before.appends;
        let fsyncs = stats.fsyncs - before.fsyncs;
        let batches = stats.batches - before.batches;
        println!(
            "{:>10} {:>12.0} {:>10.0} {:>10.1} {:>10} {:>9.2} ms",
            appenders,
            appends as f64 / elapsed,
            fsyncs as f64 / elapsed,
            appends as f64 / batches.max(1) as f64,
            stats.max_batch_appends,
            (stats.fsync_nanos_total - before.fsync_nanos_total) as f64 / fsyncs.max(1) as f64 / 1e6,
        );
        Arc::into_inner(journal).expect("all appenders joined").close().expect("closing the journal");
    }
}
