//! The journal through its public API: round trips, replay rules, segments, group commit, policies, poisoning.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{append_wait, data_of, entry, segment_files};
use turnstile_storage::{FsyncPolicy, Journal, Options, Record, StorageError};

fn options(fsync: FsyncPolicy) -> Options {
    Options { fsync, ..Options::default() }
}

#[test]
fn every_record_kind_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 0);
    assert_eq!(recovered.vote, None);
    append_wait(&journal, vec![entry(1), entry(2), Record::Vote(b"term 3 for node 1".to_vec())]).unwrap();
    append_wait(&journal, vec![Record::Committed(b"3-2".to_vec()), entry(3), Record::Purge(1)]).unwrap();
    append_wait(
        &journal,
        vec![Record::Entry { index: 4, data: bytes::Bytes::new() }, Record::TruncateAfter(Some(3))],
    )
    .unwrap();
    journal.close().unwrap();

    let (journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries, BTreeMap::from([(2, data_of(2)), (3, data_of(3))]));
    assert_eq!(recovered.vote.as_deref(), Some(&b"term 3 for node 1"[..]));
    assert_eq!(recovered.committed.as_deref(), Some(&b"3-2"[..]));
    assert_eq!(recovered.purged, Some(1));
    assert_eq!(recovered.torn_tail, None);
    drop(journal);

    // Dropping (instead of close) also leaves a journal that replays to the same state.
    let (_journal, again) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(again, recovered);
}

#[test]
fn truncate_after_and_purge_replay_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, (1..=10).map(entry).collect()).unwrap();
    append_wait(&journal, vec![Record::TruncateAfter(Some(5))]).unwrap();
    let rewritten = |index| Record::Entry { index, data: format!("rewritten-{index}").into() };
    append_wait(&journal, vec![rewritten(6), rewritten(7)]).unwrap();
    append_wait(&journal, vec![Record::Purge(3), Record::Purge(2)]).unwrap();
    journal.close().unwrap();

    let (journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    let expected = BTreeMap::from([
        (4, data_of(4)),
        (5, data_of(5)),
        (6, bytes::Bytes::from_static(b"rewritten-6")),
        (7, bytes::Bytes::from_static(b"rewritten-7")),
    ]);
    assert_eq!(recovered.entries, expected);
    assert_eq!(recovered.purged, Some(3), "a lower purge never moves the purge point back");

    append_wait(&journal, vec![Record::TruncateAfter(None), entry(100)]).unwrap();
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries, BTreeMap::from([(100, data_of(100))]));
    assert_eq!(recovered.purged, Some(3));
}

#[test]
fn segments_roll_and_purge_deletes_old_ones_while_vote_and_committed_survive() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options { segment_bytes: 256, ..Options::default() };
    let (journal, _) = Journal::open(dir.path(), small.clone()).unwrap();
    append_wait(&journal, vec![Record::Vote(b"vote-1".to_vec())]).unwrap();
    for index in 1..=100 {
        append_wait(&journal, vec![entry(index)]).unwrap();
    }
    append_wait(&journal, vec![Record::Committed(b"committed-90".to_vec())]).unwrap();
    let before = segment_files(dir.path());
    assert!(before.len() > 10, "256-byte segments should have rolled many times, got {}", before.len());
    assert_eq!(journal.stats().segments, before.len() as u64);

    append_wait(&journal, vec![Record::Purge(80)]).unwrap();
    // A purge alone is not fsynced (it rides along with the next entry), and segments are deleted
    // only once what makes them obsolete is durable. (Deletion happens on a thread of its own.)
    journal.wait_for_deletions();
    let now = segment_files(dir.path());
    assert!(
        before.iter().all(|file| now.contains(file)),
        "nothing deleted before the purge is durable: {now:?}"
    );
    append_wait(&journal, vec![entry(101)]).unwrap();
    let counted = journal.stats().segments;
    journal.wait_for_deletions();
    let after = segment_files(dir.path());
    assert_eq!(counted, after.len() as u64, "the segment count is the files left once deleted");
    assert!(
        after.len() < before.len(),
        "purge deleted no segment ({} before, {} after)",
        before.len(),
        after.len()
    );
    assert!(!after.contains(&before[0]), "the oldest segment (holding the vote) should be gone");
    journal.close().unwrap();

    let (_journal, recovered) = Journal::open(dir.path(), small).unwrap();
    assert_eq!(recovered.vote.as_deref(), Some(&b"vote-1"[..]), "the vote lives on in checkpoints");
    assert_eq!(recovered.committed.as_deref(), Some(&b"committed-90"[..]));
    assert_eq!(recovered.purged, Some(80));
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (81..=101).collect::<Vec<_>>());
}

/// `log_bytes` counts the frames of the entries in the files: appends add, truncations and
/// purges take away, a reopen finds the same.
#[test]
fn log_bytes_follow_appends_truncations_purges_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(journal.log_bytes(), 0);
    append_wait(&journal, vec![entry(1)]).unwrap();
    let one = journal.log_bytes();
    assert!(one > data_of(1).len() as u64, "a frame is more than its data ({one})");
    append_wait(&journal, (2..=9).map(entry).collect()).unwrap();
    assert_eq!(journal.log_bytes(), 9 * one, "entries 1..=9 have frames of one size");
    append_wait(&journal, vec![Record::TruncateAfter(Some(6))]).unwrap();
    assert_eq!(journal.log_bytes(), 6 * one);
    append_wait(&journal, vec![Record::Purge(2)]).unwrap();
    assert_eq!(journal.log_bytes(), 4 * one);
    // Rewriting an entry replaces its frame.
    append_wait(&journal, vec![entry(6)]).unwrap();
    assert_eq!(journal.log_bytes(), 4 * one);
    journal.close().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(journal.log_bytes(), 4 * one);
}

/// What `read_entries` returns, as (index, data) pairs.
fn read_back(journal: &Journal, from: u64, to: u64) -> Vec<(u64, bytes::Bytes)> {
    journal.read_entries(from, to).unwrap()
}

fn expected(indexes: impl IntoIterator<Item = u64>) -> Vec<(u64, bytes::Bytes)> {
    indexes.into_iter().map(|index| (index, data_of(index))).collect()
}

#[test]
fn entries_read_back_across_segments_truncation_purge_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let small = Options { segment_bytes: 256, ..Options::default() };
    let (journal, _) = Journal::open(dir.path(), small.clone()).unwrap();
    for index in 1..=60 {
        append_wait(&journal, vec![entry(index), Record::Committed(format!("c{index}").into_bytes())])
            .unwrap();
    }
    assert!(segment_files(dir.path()).len() > 5, "the entries should span several segments");
    assert_eq!(read_back(&journal, 1, 60), expected(1..=60));
    assert_eq!(read_back(&journal, 17, 23), expected(17..=23));
    assert_eq!(read_back(&journal, 59, 1_000), expected(59..=60), "only what is in the log");
    assert_eq!(read_back(&journal, 9, 8), expected([]));

    // A rewritten tail reads back as rewritten; a purge takes entries out of reach.
    append_wait(&journal, vec![Record::TruncateAfter(Some(50))]).unwrap();
    let rewritten = |index| Record::Entry { index, data: format!("rewritten-{index}").into() };
    append_wait(&journal, vec![rewritten(51), rewritten(52)]).unwrap();
    append_wait(&journal, vec![Record::Purge(10)]).unwrap();
    let mut now = expected(11..=50);
    now.push((51, bytes::Bytes::from_static(b"rewritten-51")));
    now.push((52, bytes::Bytes::from_static(b"rewritten-52")));
    assert_eq!(read_back(&journal, 1, 100), now);
    journal.close().unwrap();

    // After a restart the places come from the replay.
    let (journal, recovered) = Journal::open(dir.path(), small.clone()).unwrap();
    assert_eq!(read_back(&journal, 1, 100), now);
    assert_eq!(recovered.entries.into_iter().collect::<Vec<_>>(), now);
    append_wait(&journal, vec![entry(53)]).unwrap();
    assert_eq!(read_back(&journal, 52, 53), [now[now.len() - 1].clone(), (53, data_of(53))]);
    journal.close().unwrap();
}

#[test]
fn an_entry_damaged_after_it_was_written_does_not_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, (1..=3).map(entry).collect()).unwrap();
    let segment = segment_files(dir.path()).pop().unwrap();
    let contents = std::fs::read(&segment).unwrap();
    let at = contents.windows(7).position(|w| w == b"entry-2").unwrap();
    let mut damaged = contents.clone();
    damaged[at] ^= 0xff;
    std::fs::write(&segment, &damaged).unwrap();
    match journal.read_entries(1, 3) {
        Err(StorageError::Corrupt { file, offset, reason }) => {
            assert_eq!(file, segment);
            assert!(offset < at as u64, "the frame starts before its data: {offset} vs {at}");
            assert!(reason.contains("entry 2"), "{reason}");
        }
        other => panic!("expected a corrupt entry, got {other:?}"),
    }
    assert_eq!(read_back(&journal, 3, 3), expected([3]), "the entries around it still read");
    std::fs::write(&segment, &contents).unwrap();
    journal.close().unwrap();
}

#[test]
fn group_commit_shares_fsyncs_and_calls_back_in_order() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    let journal = Arc::new(journal);
    let acked: Arc<Vec<Mutex<Vec<usize>>>> = Arc::new((0..THREADS).map(|_| Mutex::new(Vec::new())).collect());
    let (all_done, done_rx) = mpsc::channel();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (journal, acked, all_done, start) =
                (Arc::clone(&journal), Arc::clone(&acked), all_done.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                for seq in 0..PER_THREAD {
                    let index = (thread * PER_THREAD + seq + 1) as u64;
                    let (acked, all_done) = (Arc::clone(&acked), all_done.clone());
                    journal.append(
                        vec![entry(index)],
                        Box::new(move |result| {
                            result.unwrap();
                            acked[thread].lock().unwrap().push(seq);
                            all_done.send(()).unwrap();
                        }),
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    for _ in 0..THREADS * PER_THREAD {
        done_rx.recv_timeout(Duration::from_secs(60)).expect("a callback never came");
    }
    for (thread, acked) in acked.iter().enumerate() {
        assert_eq!(*acked.lock().unwrap(), (0..PER_THREAD).collect::<Vec<_>>(), "thread {thread}");
    }
    let stats = journal.stats();
    println!("group commit: {stats:?}");
    assert_eq!(stats.appends, (THREADS * PER_THREAD) as u64);
    assert_eq!(stats.records, (THREADS * PER_THREAD) as u64);
    assert!(stats.fsyncs < stats.appends, "{} fsyncs for {} appends", stats.fsyncs, stats.appends);
    assert!(stats.max_batch_appends > 1);
    assert_eq!(stats.fsync_micros_log2.iter().sum::<u64>(), stats.fsyncs);
    assert!(done_rx.try_recv().is_err(), "a callback was called twice");

    Arc::into_inner(journal).unwrap().close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), THREADS * PER_THREAD);
}

/// Appends 100 entries one at a time (each waited for) and returns the fsyncs they caused.
fn fsyncs_for_100_acked_appends(journal: &Journal) -> u64 {
    let before = journal.stats().fsyncs;
    for index in 1..=100 {
        append_wait(journal, vec![entry(index)]).unwrap();
    }
    journal.stats().fsyncs - before
}

#[test]
fn always_fsyncs_before_every_ack() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(fsyncs_for_100_acked_appends(&journal), 100, "waited-for appends cannot share an fsync");
}

#[test]
fn always_lets_markers_ride_along_with_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    let before = journal.stats().fsyncs;
    // A committed marker, a truncate and a purge on their own: written, not fsynced.
    append_wait(&journal, vec![entry(1), entry(2), entry(3)]).unwrap();
    append_wait(&journal, vec![Record::Committed(b"committed-3".to_vec())]).unwrap();
    append_wait(&journal, vec![Record::TruncateAfter(Some(2))]).unwrap();
    append_wait(&journal, vec![Record::Purge(1)]).unwrap();
    assert_eq!(journal.stats().fsyncs - before, 1, "only the entries' append fsyncs");
    // The next entry's fsync makes them durable too: after a crash-free reopen all are there.
    append_wait(&journal, vec![entry(3)]).unwrap();
    assert_eq!(journal.stats().fsyncs - before, 2);
    // A vote is fsynced on its own.
    append_wait(&journal, vec![Record::Vote(b"vote".to_vec())]).unwrap();
    assert_eq!(journal.stats().fsyncs - before, 3);
    drop(journal);
    let (_, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.committed.as_deref(), Some(&b"committed-3"[..]));
    assert_eq!(recovered.vote.as_deref(), Some(&b"vote"[..]));
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), [2, 3]);
}

#[test]
fn never_acks_without_fsync_and_syncs_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), options(FsyncPolicy::Never)).unwrap();
    assert_eq!(fsyncs_for_100_acked_appends(&journal), 0);
    journal.sync().unwrap();
    assert_eq!(journal.stats().fsyncs, 1);
    journal.sync().unwrap();
    assert_eq!(journal.stats().fsyncs, 1, "nothing new to sync");
    append_wait(&journal, vec![entry(101)]).unwrap();
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 101);
}

#[test]
fn never_and_interval_sync_in_the_background_every_few_mib_written() {
    // A segment roll fsyncs the segment it ends while writes wait; these syncs keep what it has to
    // write back small. No append waits for them.
    let mib = bytes::Bytes::from(vec![7u8; 1 << 20]);
    for policy in [FsyncPolicy::Never, FsyncPolicy::Interval(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path(), options(policy)).unwrap();
        let before = journal.stats().fsyncs;
        let append_mib =
            |index| append_wait(&journal, vec![Record::Entry { index, data: mib.clone() }]).unwrap();
        for index in 1..=3 {
            append_mib(index);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(journal.stats().fsyncs, before, "{policy:?}: 3 MiB is below the step");
        for index in 4..=5 {
            append_mib(index);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while journal.stats().fsyncs == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(journal.stats().fsyncs > before, "{policy:?}: no background fsync within 10 s of 5 MiB");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(journal.stats().fsyncs, before + 1, "{policy:?}: one for the step, none while idle");
        journal.close().unwrap();
        let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(recovered.entries.len(), 5);
    }
}

#[test]
fn interval_acks_without_fsync_and_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_secs(3600)))).unwrap();
    assert_eq!(fsyncs_for_100_acked_appends(&journal), 0);
    journal.close().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_millis(50)))).unwrap();
    let fsyncs = fsyncs_for_100_acked_appends(&journal);
    assert!(fsyncs < 100, "interval should not fsync per append ({fsyncs})");
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal.stats().fsyncs == fsyncs && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(journal.stats().fsyncs > fsyncs, "no background fsync within 10 s");
    let settled = journal.stats().fsyncs;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(journal.stats().fsyncs, settled, "no fsync while nothing is unsynced");
}

#[test]
fn a_failed_fsync_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, vec![entry(1)]).unwrap();
    assert!(!journal.is_poisoned());

    journal.fail_next_sync_for_test();
    let first = append_wait(&journal, vec![entry(2)]).unwrap_err();
    assert!(
        matches!(&first, StorageError::Io { source, .. } if source.to_string().contains("injected")),
        "the first failure carries the real error, got {first:?}"
    );
    assert!(journal.is_poisoned());
    assert!(matches!(append_wait(&journal, vec![entry(3)]), Err(StorageError::Poisoned)));
    let cause = journal.poisoned_by().expect("the cause is kept");
    assert!(cause.to_string().contains("injected"), "the first failure, not a later refusal: {cause}");
    assert!(!cause.is_no_space(), "an fsync error is not a full disk");
    assert!(matches!(journal.sync(), Err(StorageError::Poisoned)));
    assert!(matches!(journal.close(), Err(StorageError::Poisoned)));

    // What was acknowledged is still there after a restart.
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.get(&1), Some(&data_of(1)));
    assert!(!recovered.entries.contains_key(&3), "a refused append must not be written");
}

#[test]
fn a_failed_fsync_fails_every_append_of_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    journal.fail_next_sync_for_test();
    let (tx, rx) = mpsc::channel();
    for index in 1..=50 {
        let tx = tx.clone();
        journal.append(vec![entry(index)], Box::new(move |result| tx.send((index, result)).unwrap()));
    }
    let results: Vec<_> = (0..50).map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap()).collect();
    assert_eq!(results.iter().map(|(index, _)| *index).collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
    assert!(results.iter().all(|(_, result)| result.is_err()), "no append may be acked after a failed fsync");
    assert!(matches!(results[0].1, Err(StorageError::Io { .. })));
    assert!(matches!(results[49].1, Err(StorageError::Io { .. }) | Err(StorageError::Poisoned)));
}

#[test]
fn a_failed_background_fsync_poisons_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_millis(20)))).unwrap();
    journal.fail_next_sync_for_test();
    append_wait(&journal, vec![entry(1)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !journal.is_poisoned() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(journal.is_poisoned());
    assert!(matches!(append_wait(&journal, vec![entry(2)]), Err(StorageError::Poisoned)));
}

#[test]
fn an_empty_append_is_acked_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, vec![]).unwrap();
    let stats = journal.stats();
    assert_eq!((stats.fsyncs, stats.bytes, stats.appends), (0, 0, 1));
}

#[test]
fn journal_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Journal>();
    assert_send_sync::<StorageError>();
}

#[test]
fn interval_syncs_even_under_a_steady_stream_of_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_millis(20)))).unwrap();
    let journal = Arc::new(journal);
    let until = Instant::now() + Duration::from_millis(400);
    let writers: Vec<_> = (0..4u64)
        .map(|thread| {
            let journal = Arc::clone(&journal);
            std::thread::spawn(move || {
                let mut index = thread << 32;
                while Instant::now() < until {
                    // Open loop: keep the queue non-empty so the writer never waits for work.
                    for _ in 0..64 {
                        index += 1;
                        journal.append(vec![entry(index)], Box::new(|result| result.unwrap()));
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let stats = journal.stats();
    assert!(stats.fsyncs >= 3, "only {} background fsyncs in 400 ms at a 20 ms interval", stats.fsyncs);
}

#[test]
fn an_uncontended_append_is_written_on_the_callers_thread_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    let called_on = Arc::new(Mutex::new(None));
    let fsyncs_before = journal.stats().fsyncs;
    journal.append(
        vec![entry(1)],
        Box::new({
            let called_on = Arc::clone(&called_on);
            move |result| {
                result.unwrap();
                *called_on.lock().unwrap() = Some(std::thread::current().id());
            }
        }),
    );
    // No hand-off: the write, the fdatasync and the callback all happened inside `append`.
    assert_eq!(*called_on.lock().unwrap(), Some(std::thread::current().id()));
    assert_eq!(journal.stats().fsyncs, fsyncs_before + 1);
}

/// A deferred append (the committed marker) waits in the queue: it is written with the next append's group,
/// before that append's records, or at close, and costs no write of its own.
#[test]
fn a_deferred_append_goes_out_with_the_next_group_or_at_close() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    append_wait(&journal, vec![entry(1)]).unwrap();
    let before = journal.stats();
    let (tx, called) = mpsc::channel();
    journal.append_deferred(
        vec![Record::Committed(b"committed-1".to_vec())],
        Box::new(move |result| tx.send(result).unwrap()),
    );
    assert!(called.try_recv().is_err(), "a deferred append is not written on its own");
    assert_eq!((journal.stats().batches, journal.stats().bytes), (before.batches, before.bytes));

    append_wait(&journal, vec![entry(2)]).unwrap();
    called.try_recv().expect("written with the next group").unwrap();
    let after = journal.stats();
    assert_eq!(
        (after.batches, after.fsyncs),
        (before.batches + 1, before.fsyncs + 1),
        "one group, one fsync"
    );
    assert_eq!(after.records, before.records + 2);

    journal.append_deferred(vec![Record::Committed(b"committed-2".to_vec())], Box::new(|r| r.unwrap()));
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.committed.as_deref(), Some(&b"committed-2"[..]), "written at close");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
}

/// Under `Interval` the periodic fdatasync does not hold the files: appends are written and acknowledged
/// while it runs, and what they wrote is synced by the next one.
#[test]
fn appends_do_not_wait_for_a_background_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_millis(20)))).unwrap();
    // The background fdatasync after this append takes 3 s longer than it would.
    journal.delay_next_sync_for_test(Duration::from_secs(3));
    append_wait(&journal, vec![entry(1)]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for index in 2..=50 {
        append_wait(&journal, vec![entry(index)]).unwrap();
    }
    assert_eq!(journal.stats().fsyncs, 0, "the appends were acknowledged before the slow fdatasync ended");
    // Then the slow one ends, and the writes made during it get an fdatasync of their own.
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal.stats().fsyncs < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(journal.stats().fsyncs, 2, "one for the first append, one for those made during it");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(journal.stats().fsyncs, 2, "nothing left unsynced");
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 50);
}

#[test]
fn an_append_made_while_the_background_sync_holds_the_files_is_still_written() {
    // One appender at a time, each waiting for its callback, against a background fdatasync every
    // millisecond: many appends arrive while that thread holds the files and must not be left queued.
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), options(FsyncPolicy::Interval(Duration::from_millis(1)))).unwrap();
    let mut index = 0;
    // Until the background thread has taken the files 100 times (~100 ms), bounded by a count.
    while journal.stats().fsyncs < 100 {
        index += 1;
        assert!(
            index <= 1_000_000,
            "only {} background fsyncs after {index} appends",
            journal.stats().fsyncs
        );
        let (tx, rx) = mpsc::channel();
        journal.append(vec![entry(index)], Box::new(move |result| tx.send(result).unwrap()));
        let result = rx.recv_timeout(Duration::from_secs(10));
        assert!(matches!(result, Ok(Ok(()))), "append {index} was never written: {result:?}");
    }
}

#[test]
fn a_segment_is_zero_filled_ahead_and_a_crash_leaves_nothing_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), Options::default()).unwrap();
    let segment = segment_files(dir.path()).pop().unwrap();
    let start = std::fs::metadata(&segment).unwrap().len();
    for index in 1..=50 {
        append_wait(&journal, vec![entry(index)]).unwrap();
    }
    let end = start + journal.stats().bytes;
    let zero_filled = std::fs::metadata(&segment).unwrap().len();
    assert!(zero_filled > end, "the file ({zero_filled} bytes) runs ahead of its records ({end})");
    let bytes = std::fs::read(&segment).unwrap();
    assert!(bytes[usize::try_from(end).unwrap()..].iter().all(|b| *b == 0));
    // A crash: no close, so the zeros stay.
    std::mem::forget(journal);

    let (journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.torn_tail, None, "zeros ahead of the records are not a torn record");
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), (1..=50).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), end, "the old segment now ends with its records");
    // A clean close cuts the active segment to its records too.
    append_wait(&journal, vec![entry(51)]).unwrap();
    let active = segment_files(dir.path()).pop().unwrap();
    let active_end = std::fs::metadata(&active).unwrap().len();
    journal.close().unwrap();
    assert!(std::fs::metadata(&active).unwrap().len() < active_end);
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 51);
}

#[test]
fn a_standing_sync_delay_slows_every_fdatasync_until_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) = Journal::open(dir.path(), options(FsyncPolicy::Always)).unwrap();
    append_wait(&journal, vec![entry(1)]).unwrap();
    assert_eq!(journal.stats().delayed_fsyncs, 0, "no delay set, none delayed");
    journal.set_sync_delay(Duration::from_millis(1));
    assert_eq!(journal.sync_delay(), Duration::from_millis(1));
    for index in 2..=4 {
        append_wait(&journal, vec![entry(index)]).unwrap();
    }
    let stats = journal.stats();
    assert_eq!(stats.delayed_fsyncs, 3, "each append's fdatasync was delayed, not only the first");
    journal.set_sync_delay(Duration::ZERO);
    append_wait(&journal, vec![entry(5)]).unwrap();
    assert_eq!(journal.stats().delayed_fsyncs, 3, "cleared: the next fdatasync is not delayed");
    assert!(journal.stats().fsyncs > stats.fsyncs);
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.len(), 5, "a slow disk loses nothing");
}

/// Write-behind (a cluster node's journal): `append` only queues and returns at once, even while the
/// writer thread is stuck in a slow fdatasync; each callback comes only after the fdatasync that covers
/// its append; records keep their order with a truncation queued among them; close writes what is left.
#[test]
fn a_write_behind_journal_returns_at_once_and_calls_back_only_once_durable() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, _) =
        Journal::open(dir.path(), Options { write_behind: true, ..Options::default() }).unwrap();
    journal.delay_next_sync_for_test(Duration::from_secs(2));
    let (done, called) = mpsc::channel();
    let append = |records: Vec<Record>, tag: u64| {
        let done = done.clone();
        journal.append(records, Box::new(move |result| done.send((tag, result.is_ok())).unwrap()));
    };
    append(vec![entry(1), entry(2)], 1);
    // The writer thread is in the slow fdatasync now (or about to be): these queue behind it.
    std::thread::sleep(Duration::from_millis(100));
    append(vec![entry(3)], 2);
    append(vec![Record::TruncateAfter(Some(2)), entry(3)], 3);
    assert!(called.try_recv().is_err(), "no append is acknowledged before its fdatasync ends");
    assert_eq!(journal.stats().fsyncs, 0);
    let order: Vec<(u64, bool)> =
        (0..3).map(|_| called.recv_timeout(Duration::from_secs(30)).expect("called back")).collect();
    assert_eq!(order, vec![(1, true), (2, true), (3, true)], "called back in order, each once");
    let stats = journal.stats();
    // The first group's fdatasync, then one for those queued meanwhile.
    assert!((1..=3).contains(&stats.fsyncs), "{stats:?}");
    // Queued last and never waited for: written at close.
    journal.append_deferred(vec![entry(4)], Box::new(|_| {}));
    journal.close().unwrap();
    let (_journal, recovered) = Journal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!(recovered.entries[&3], data_of(3));
}
