//! Turnstile's durable storage: the Raft log as a checksummed, segmented journal with group commit, and
//! snapshots written atomically. It stores opaque bytes; `crates/raft` gives them meaning.
//!
//! ```text
//!  crates/raft ── append(records, done) ──► Journal ── queue, writer ──► log/{seq:020}.seg  (fdatasync per group)
//!             ── save / load_latest ─────► SnapshotStore ──────────────► snapshot-{index:020}.snap
//!  process    ── lock_dir ───────────────► DirLock ────────────────────► LOCK (flock + pid)
//! ```
//! The on-disk format, the recovery rules and what each fsync policy promises are in the crate README.

mod error;
mod file;
mod index;
mod journal;
mod lock;
mod record;
mod recovery;
mod segment;
mod snapshot;

pub use error::StorageError;
pub use journal::{Done, FSYNC_HISTOGRAM_BUCKETS, FsyncPolicy, Journal, JournalStats, Options};
pub use lock::{DirLock, lock_dir};
pub use record::Record;
pub use recovery::Recovered;
pub use snapshot::{HeldSaves, LoadedSnapshot, SnapshotStore};
