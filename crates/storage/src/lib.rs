//! Turnstile's durable storage: the Raft log as a checksummed, segmented journal with group commit, and
//! snapshots written atomically. It stores opaque bytes; `crates/raft` gives them meaning.
//!
//! ```text
//!  crates/raft ── append(records, done) ──► Journal ── queue, writer ──► log/{seq:020}.seg  (fdatasync per group)
//!             ── save / load_latest ─────► SnapshotStore ──────────────► snapshot-{index:020}.snap
//!  process    ── lock_dir ───────────────► DirLock ────────────────────► LOCK (flock + pid)
//!             ── load_or_create ─────────► DataDirMeta ────────────────► turnstile.meta (format, cluster id)
//!  backups    ── BackupWriter / read_backup / verify_backup ─────────────► one file: header, state, checksum
//! ```
//! The on-disk format, the recovery rules and what each fsync policy promises are in the crate README.

mod backup;
mod error;
mod file;
mod index;
mod journal;
mod lock;
mod meta;
mod record;
mod recovery;
mod segment;
mod snapshot;

pub use backup::{
    BACKUP_FORMAT, BACKUP_HEADER_BYTES, BACKUP_TRAILER_BYTES, BackupError, BackupHeader, BackupWriter,
    read_backup, verify_backup,
};
pub use error::StorageError;
pub use journal::{Done, FSYNC_HISTOGRAM_BUCKETS, FsyncPolicy, Journal, JournalStats, Options};
pub use lock::{DirLock, lock_dir};
pub use meta::{DATA_DIR_FORMAT, DataDirMeta, META_FILE, format_cluster_id, random_cluster_id};
pub use record::Record;
pub use recovery::Recovered;
pub use snapshot::{HeldSaves, LoadedSnapshot, SnapshotStore};
