//! Journal recovery: a segment from arbitrary bytes, and a journal written by the code itself
//! then damaged the way a crash or a bad disk damages one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use turnstile_storage::{FsyncPolicy, Journal, Options, Record, Recovered, StorageError};

/// What recovery describes, without where things are on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    entries: BTreeMap<u64, Bytes>,
    vote: Option<Vec<u8>>,
    committed: Option<Vec<u8>>,
    purged: Option<u64>,
}

impl Model {
    fn of(recovered: &Recovered) -> Model {
        Model {
            entries: recovered.entries.clone(),
            vote: recovered.vote.clone(),
            committed: recovered.committed.clone(),
            purged: recovered.purged,
        }
    }

    /// Whether `recovered` is this state less entries that a later purge, up to `final_purge`,
    /// made obsolete.
    fn explains(&self, recovered: &Model, final_purge: Option<u64>) -> bool {
        let missing_were_purged = self
            .entries
            .keys()
            .filter(|index| !recovered.entries.contains_key(index))
            .all(|index| final_purge.is_some_and(|upto| *index <= upto));
        (&self.vote, &self.committed, self.purged)
            == (&recovered.vote, &recovered.committed, recovered.purged)
            && recovered.entries.iter().all(|(index, data)| self.entries.get(index) == Some(data))
            && missing_were_purged
    }

    /// The journal's documented meaning of each record (see `Record`).
    fn apply(&mut self, record: &Record) {
        match record {
            Record::Entry { index, data } => {
                self.entries.insert(*index, data.clone());
            }
            Record::Vote(vote) => self.vote = Some(vote.clone()),
            Record::Committed(committed) => self.committed = Some(committed.clone()),
            Record::TruncateAfter(after) => match after {
                Some(after) => self.entries.retain(|index, _| index <= after),
                None => self.entries.clear(),
            },
            Record::Purge(upto) => {
                self.purged = Some(self.purged.map_or(*upto, |p| p.max(*upto)));
                self.entries.retain(|index, _| index > upto);
            }
        }
    }
}

/// Two kinds of input, by the first byte:
/// - raw: the rest is the journal's only segment. Recovery (strict, then with
///   `truncate_corrupt` if the strict one refuses) errs or recovers a state with no entry at or
///   below the purge point, which opening the journal again recovers unchanged.
/// - script: the rest is a list of records (the second byte places the damage). They are
///   appended one write each, the journal is closed, and its last segment is cut short, has a
///   byte flipped or a range zeroed. Recovery must then give exactly the state after some
///   prefix of the writes (all of them when the damage hit nothing), or, for a flip or a zeroed
///   range inside the writes, a `Corrupt` error: never a state no prefix had.
pub fn journal_record(data: &[u8]) {
    let (c, input) = crate::control(data);
    let dir = scratch_dir();
    match c % 4 {
        0 => raw(dir.path(), input, c & 4 != 0),
        damage => script(dir.path(), input, damage, c & 4 != 0),
    }
}

/// A directory on a memory file system when there is one: recovery writes and fsyncs.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let made = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() };
    made.expect("a temporary directory")
}

fn options(truncate_corrupt: bool, small: bool) -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        segment_bytes: if small { 256 } else { 4096 },
        truncate_corrupt,
        write_behind: false,
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join("log").join(format!("{seq:020}.seg"))
}

fn raw(dir: &Path, segment: &[u8], small: bool) {
    std::fs::create_dir_all(dir.join("log")).expect("log directory");
    std::fs::write(segment_path(dir, 1), segment).expect("segment written");
    let recovered = match open(dir, false, small) {
        Ok(model) => model,
        Err(StorageError::Corrupt { .. }) => {
            open(dir, true, small).unwrap_or_else(|e| panic!("truncate_corrupt refused to start: {e}"))
        }
        Err(e) => panic!("recovery failed with an error that is not about the data: {e}"),
    };
    if let (Some(purged), Some((&first, _))) = (recovered.purged, recovered.entries.first_key_value()) {
        assert!(first > purged, "entry {first} recovered at or below the purge point {purged}");
    }
    let again =
        open(dir, false, small).unwrap_or_else(|e| panic!("a recovered journal does not open again: {e}"));
    assert_eq!(recovered, again, "opening the journal again recovers another state");
}

/// Opens the journal in `dir`, closes it, and returns what it recovered.
fn open(dir: &Path, truncate_corrupt: bool, small: bool) -> Result<Model, StorageError> {
    let (journal, recovered) = Journal::open(dir, options(truncate_corrupt, small))?;
    journal.close().expect("a journal just opened closes");
    Ok(Model::of(&recovered))
}

fn script(dir: &Path, input: &[u8], damage: u8, small: bool) {
    let Some((&place, script)) = input.split_first() else { return };
    let records = records(script);
    // The state after each prefix of the writes.
    let mut models = vec![Model::default()];
    let (journal, _) = Journal::open(dir, options(false, small)).expect("a new journal opens");
    for record in &records {
        let outcome = Arc::new(Mutex::new(None));
        let seen = Arc::clone(&outcome);
        journal.append(
            vec![record.clone()],
            Box::new(move |result| *seen.lock().expect("no panic") = Some(result)),
        );
        let result =
            outcome.lock().expect("no panic").take().expect("an append completes on the caller's thread");
        result.unwrap_or_else(|e| panic!("appending {record:?} failed: {e}"));
        let mut next = models.last().expect("one model at least").clone();
        next.apply(record);
        models.push(next);
    }
    journal.close().expect("the journal closes");

    let last = last_segment(dir);
    let mut bytes = std::fs::read(&last).expect("the last segment reads");
    let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1);
    let at = crate::split_point(place, written);
    match damage {
        1 => bytes.truncate(at),
        2 if at < written => bytes[at] ^= 1 << (place % 8),
        3 => bytes[at..written.min(at + usize::from(place % 64) + 1)].fill(0),
        _ => {}
    }
    std::fs::write(&last, &bytes).expect("the damaged segment is written");
    // Once the journal has rolled to a new segment, a purge in the last segment may have let it
    // delete older ones; damage that cuts that purge away (not a torn write: the purge was synced
    // before the deletion) then loses the entries it made obsolete, and only those.
    let rolled = last != segment_path(dir, 1);
    let final_purge = models.last().and_then(|m| m.purged);
    match open(dir, false, small) {
        Ok(recovered) => assert!(
            models.iter().any(|m| *m == recovered || (rolled && m.explains(&recovered, final_purge))),
            "recovered a state that no prefix of the writes had: {recovered:?}, writes {records:?}"
        ),
        Err(StorageError::Corrupt { .. }) if damage != 1 => {}
        Err(e) => panic!("a journal damaged by {damage} at {at} of {written} does not open: {e}"),
    }
}

fn last_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("the log directory lists")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("a journal has a segment")
}

/// Records from a script: a tag byte, then its fields (small indexes, so records collide). They
/// keep the log's contract with Raft: nothing is appended or truncated at or below the purge
/// point (what is purged was applied, and applied entries never change).
fn records(mut script: &[u8]) -> Vec<Record> {
    let mut take = |n: usize| {
        let n = n.min(script.len());
        let (head, rest) = script.split_at(n);
        script = rest;
        head.to_vec()
    };
    let mut records = Vec::new();
    let mut purged: Option<u64> = None;
    while let Some(&tag) = take(1).first() {
        let arg = take(1).first().copied().unwrap_or(0);
        let above = purged.map_or(0, |p| p + 1);
        let record = match tag % 5 {
            0 => {
                let data = take(usize::from(arg >> 4));
                Record::Entry { index: above + u64::from(arg % 16) + 1, data: data.into() }
            }
            1 => Record::Vote(take(usize::from(arg % 8))),
            2 => Record::Committed(take(usize::from(arg % 8))),
            3 if arg == 0 && purged.is_none() => Record::TruncateAfter(None),
            3 => Record::TruncateAfter(Some(purged.unwrap_or(0) + u64::from(arg % 16))),
            _ => {
                let upto = u64::from(arg % 16) + purged.unwrap_or(0);
                purged = Some(upto);
                Record::Purge(upto)
            }
        };
        records.push(record);
    }
    records
}
