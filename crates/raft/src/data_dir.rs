//! The data dir as a whole: its meta file (format version, cluster id), read before anything else in
//! it, and making a new one from a backup (`turnstile server --restore`).
//!
//! ```text
//!  open_meta(dir, first id) ─ lock ─► turnstile.meta: read (a newer format is refused), or written ─► unlock
//!
//!  Backup::read(file) ─► framing and checksum (crates/storage backup.rs) ─► the state decodes
//!  Backup::install(dir, node id, addr) ─► dir empty? ─ lock ─► log/: the backup's entry, purged
//!                                                           ─► snapshots/: the state, this node the only voter
//!                                                     ─► turnstile.meta: a fresh random cluster id ─► unlock
//! ```
//!
//! A restored dir is what a one-voter node leaves after it took a snapshot and purged its log: the
//! node opens it as it would reopen its own, and elects itself. Its cluster id is new, so no node of
//! the cluster the backup came from can ever mistake it for one of theirs. Given its Raft address,
//! the membership names it, and nodes can join it to grow a new cluster from the backup.
//!
//! The install writes the log first and the meta file last. A crash before the snapshot is on disk
//! leaves a log that starts after an entry no snapshot covers, which the node refuses to open; a
//! crash after it leaves a complete restore without a meta file, which its first start gives one.
//! Either way the dir is no longer empty, so another `--restore` into it is refused until the
//! operator clears it.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use openraft::type_config::alias::{LeaderIdOf, LogIdOf, SnapshotMetaOf, StoredMembershipOf};
use openraft::vote::RaftLeaderId;
use openraft::{BasicNode, Membership, StoredMembership};
use turnstile_core::{SnapshotError, State};
use turnstile_storage::{
    BackupError, BackupHeader, DataDirMeta, Journal, Options, SnapshotStore, StorageError, lock_dir,
    random_cluster_id, read_backup,
};

use crate::TypeConfig;
use crate::log_store::purged_through;
use crate::state_machine::save_snapshot;

type LogId = LogIdOf<TypeConfig>;

/// The meta of the data dir `dir` (created if needed), read or written under the dir's lock: a
/// newer format than this build knows is refused before anything else in the dir is read. A dir
/// without one gets one, with the cluster id `first_cluster_id` gives.
///
/// The lock is let go of before this returns: the node takes it again when it opens the dir. The
/// meta is on disk by then, so whoever wins the lock in between reads the same cluster id.
pub fn open_meta(
    dir: &Path,
    first_cluster_id: impl FnOnce() -> Result<u64, StorageError>,
) -> Result<DataDirMeta, StorageError> {
    let _lock = lock_dir(dir)?;
    DataDirMeta::load_or_create(dir, first_cluster_id)
}

/// Why a backup could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not a backup, or a damaged one, or one of a newer format.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The framing and checksum hold, but the state inside does not decode.
    #[error(transparent)]
    State(#[from] SnapshotError),
    #[error(
        "data dir {dir} already holds data ({found}); a restore makes a new node, into a new or empty dir \
         (and a restored node is restarted without --restore)"
    )]
    NotEmpty { dir: PathBuf, found: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// A backup file, read and checked, ready to be installed.
#[derive(Debug)]
pub struct Backup {
    header: BackupHeader,
    /// `State::snapshot` bytes.
    state: Bytes,
}

impl Backup {
    /// Reads a backup and checks it whole: magic, format version, checksum, and that its state
    /// decodes. Nothing is written: a file that fails here leaves no trace.
    pub fn read(path: &Path) -> Result<Backup, RestoreError> {
        let (header, state) = read_backup(path)?;
        // Decoded once here, so that a state this build cannot start from (a newer state version)
        // is refused before a data dir is made of it.
        drop(State::restore(state.clone())?);
        Ok(Backup { header, state })
    }

    /// What the backup's header says.
    pub fn header(&self) -> BackupHeader {
        self.header
    }

    /// Makes `dir` the data dir of node `node_id`, the one voter of a new cluster, whose first
    /// snapshot is this backup (see the module docs); returns its meta, with the new cluster id.
    /// `raft_addr` is where other nodes reach it, when it is to take nodes that join it (`None`:
    /// a single node). Refuses a dir that holds anything.
    pub fn install(
        &self,
        dir: &Path,
        node_id: u64,
        raft_addr: Option<&str>,
    ) -> Result<DataDirMeta, RestoreError> {
        check_empty(dir)?;
        let _lock = lock_dir(dir)?;
        let index = self.header.index;
        // Term 0: the restored node's first election is term 1, so every entry it appends has a
        // later log id than the snapshot's.
        let log_id = LogId::new(LeaderIdOf::<TypeConfig>::new(0, node_id).to_committed(), index);

        let (journal, _) = Journal::open(dir, Options::default())?;
        let records = purged_through(log_id).map_err(|source| io_error("encoding the log", source))?;
        let (done, written) = std::sync::mpsc::channel();
        journal.append(
            records,
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        written
            .recv()
            .map_err(|_| io_error("writing the log", io::Error::other("the journal stopped")))??;
        journal.close()?;

        let node = raft_addr.map(BasicNode::new).unwrap_or_default();
        let membership = Membership::new(vec![BTreeSet::from([node_id])], BTreeMap::from([(node_id, node)]))
            .map_err(|e| io_error("making the membership", io::Error::other(e.to_string())))?;
        let membership: StoredMembershipOf<TypeConfig> = StoredMembership::new(Some(log_id), membership);
        let meta = SnapshotMetaOf::<TypeConfig> { last_log_id: Some(log_id), last_membership: membership };
        let snapshots = SnapshotStore::open(&dir.join("snapshots"))?;
        save_snapshot(&snapshots, &meta, &self.state)
            .map_err(|source| io_error("writing the snapshot", source))?;

        let data_dir = DataDirMeta::new(random_cluster_id()?);
        data_dir.write(dir)?;
        Ok(data_dir)
    }
}

/// Refuses a dir that holds anything (an absent one is fine): a restore never mixes a backup with
/// what a dir already had.
pub fn check_empty(dir: &Path) -> Result<(), RestoreError> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(&format!("reading data dir {}", dir.display()), source)),
    };
    match entries.next() {
        None => Ok(()),
        Some(entry) => {
            let entry =
                entry.map_err(|source| io_error(&format!("reading data dir {}", dir.display()), source))?;
            Err(RestoreError::NotEmpty {
                dir: dir.to_path_buf(),
                found: entry.file_name().to_string_lossy().into_owned(),
            })
        }
    }
}

fn io_error(context: &str, source: io::Error) -> RestoreError {
    RestoreError::Io { context: context.to_owned(), source }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use turnstile_core::{Command, Reply};
    use turnstile_storage::BackupWriter;

    use super::*;

    /// A backup file of a state with one key, taken at `index`.
    fn backup_file(dir: &Path, index: u64) -> PathBuf {
        let mut state = State::new();
        let (reply, _) = state.apply(index, 1_000, Command::IncrBy { key: "k".into(), delta: 7 });
        assert_eq!(reply, Reply::Int(7));
        let header = BackupHeader { index, cluster_id: 99, created_at: 1_000 };
        let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
        writer.write_all(&state.snapshot()).unwrap();
        let path = dir.join("backup.snap");
        std::fs::write(&path, writer.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn an_installed_backup_opens_as_a_purged_log_and_its_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::read(&backup_file(dir.path(), 57)).unwrap();
        assert_eq!(backup.header().index, 57);
        let data = dir.path().join("new");
        let meta = backup.install(&data, 3, None).unwrap();
        assert_ne!(meta.cluster_id, 99, "a new cluster id, never the backup's");
        assert_eq!(DataDirMeta::read(&data).unwrap(), Some(meta));

        let (_, recovered) = Journal::open(&data, Options::default()).unwrap();
        assert_eq!(recovered.purged, Some(56));
        assert_eq!(recovered.entries.keys().copied().collect::<Vec<_>>(), vec![57]);
        let (index, _, state) =
            SnapshotStore::open(&data.join("snapshots")).unwrap().load_latest().unwrap().unwrap();
        assert_eq!(index, 57);
        assert_eq!(state, backup.state);
    }

    #[test]
    fn a_dir_that_holds_anything_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::read(&backup_file(dir.path(), 5)).unwrap();
        let data = dir.path().join("old");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("notes.txt"), "mine").unwrap();
        let error = backup.install(&data, 1, None).unwrap_err();
        assert!(matches!(&error, RestoreError::NotEmpty { found, .. } if found == "notes.txt"), "{error:?}");
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1, "nothing added");
    }

    /// The checksum holds but the state inside is of a newer version: refused by `read`.
    #[test]
    fn a_state_of_a_newer_version_is_refused_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let header = BackupHeader { index: 1, cluster_id: 1, created_at: 1 };
        let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
        let mut state = State::new().snapshot();
        state[0] += 1;
        writer.write_all(&state).unwrap();
        let path = dir.path().join("newer.snap");
        std::fs::write(&path, writer.finish().unwrap()).unwrap();
        let error = Backup::read(&path).unwrap_err();
        assert!(matches!(error, RestoreError::State(SnapshotError::Newer(_))), "{error:?}");
    }
}
