//! The data dir's meta file, `turnstile.meta`: which version of the on-disk format the dir is written in,
//! and the id of the cluster it belongs to. Read before anything else in the dir, so that a binary never
//! opens a log or a snapshot written by a newer format than it knows: a rolling upgrade can go one node at a
//! time, and a node put back on an older binary by mistake refuses to start instead of misreading its data.
//!
//! ```text
//! file:   [8 magic "TSMETA\0\0"][u32 format version][u64 cluster id][u32 crc32c of all before]   (24 bytes)
//! write:  turnstile.meta.tmp ─write─► fsync ─rename─► turnstile.meta ─► fsync dir
//! ```
//! The magic and the version keep their place in every version: a newer file is recognised (and refused) by
//! them alone, whatever it holds after them.
//!
//! Format versions: 1 is a data dir of the releases before this file existed (`log/` and `snapshots/`, no
//! meta file); 2 added the meta file, nothing else changed.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, StorageError};
use crate::file::sync_dir;

/// The data-dir format this build writes, and the newest it reads.
pub const DATA_DIR_FORMAT: u32 = 2;
/// The format of a data dir written before the meta file existed.
const FORMAT_WITHOUT_META: u32 = 1;
/// The meta file's name in the data dir.
pub const META_FILE: &str = "turnstile.meta";
const TEMP_SUFFIX: &str = ".tmp";
const MAGIC: &[u8; 8] = b"TSMETA\0\0";
/// Magic and version: what every version of the file starts with.
const STABLE_BYTES: usize = 8 + 4;
const FILE_BYTES: usize = STABLE_BYTES + 8 + 4;

/// What the meta file records about a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataDirMeta {
    /// The on-disk format the dir is written in ([`DATA_DIR_FORMAT`] once this build has opened it).
    pub format: u32,
    /// The cluster this node belongs to, named in every node-to-node handshake. Chosen when the dir is
    /// first used and kept from then on, so that editing the peers list does not change it.
    pub cluster_id: u64,
}

impl DataDirMeta {
    /// The meta of a dir this build writes, in cluster `cluster_id`.
    pub fn new(cluster_id: u64) -> DataDirMeta {
        DataDirMeta { format: DATA_DIR_FORMAT, cluster_id }
    }

    /// The file's 24 bytes (see the module docs).
    pub fn encode(&self) -> [u8; FILE_BYTES] {
        let mut out = [0u8; FILE_BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&self.format.to_le_bytes());
        out[12..20].copy_from_slice(&self.cluster_id.to_le_bytes());
        let crc = crc32c::crc32c(&out[..20]);
        out[20..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a meta file's bytes: a newer format is [`StorageError::NewerFormat`] (decided by the magic and
    /// version alone), anything else that is not a valid file of this format is [`StorageError::BadMeta`].
    pub fn decode(bytes: &[u8], file: &Path) -> Result<DataDirMeta, StorageError> {
        let bad = |reason: String| StorageError::BadMeta { file: file.to_path_buf(), reason };
        let stable = bytes
            .first_chunk::<STABLE_BYTES>()
            .ok_or_else(|| bad(format!("only {} bytes, shorter than its header", bytes.len())))?;
        if &stable[..8] != MAGIC {
            return Err(bad("bad magic".into()));
        }
        let format = u32::from_le_bytes([stable[8], stable[9], stable[10], stable[11]]);
        if format > DATA_DIR_FORMAT {
            return Err(StorageError::NewerFormat {
                file: file.to_path_buf(),
                what: "data dir",
                found: format,
                supported: DATA_DIR_FORMAT,
            });
        }
        let Ok(whole) = <&[u8; FILE_BYTES]>::try_from(bytes) else {
            return Err(bad(format!("{} bytes, not {FILE_BYTES}", bytes.len())));
        };
        let stored = u32::from_le_bytes([whole[20], whole[21], whole[22], whole[23]]);
        let computed = crc32c::crc32c(&whole[..20]);
        if stored != computed {
            return Err(bad(format!("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")));
        }
        if format <= FORMAT_WITHOUT_META {
            return Err(bad(format!("format {format} never had a meta file")));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&whole[12..20]);
        Ok(DataDirMeta { format, cluster_id: u64::from_le_bytes(id) })
    }

    /// The meta file of `dir`; `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<DataDirMeta>, StorageError> {
        let path = dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => DataDirMeta::decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io(format!("reading {}", path.display()), e)),
        }
    }

    /// Writes the meta file of `dir` atomically: a crash leaves the old file or the new one, whole.
    pub fn write(&self, dir: &Path) -> Result<(), StorageError> {
        let path = dir.join(META_FILE);
        let temp = temp_path(&path);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .ctx(|| format!("creating {}", temp.display()))?;
        file.write_all(&self.encode()).ctx(|| format!("writing {}", temp.display()))?;
        file.sync_all().ctx(|| format!("fsync of {}", temp.display()))?;
        drop(file);
        fs::rename(&temp, &path).ctx(|| format!("renaming {} to {}", temp.display(), path.display()))?;
        sync_dir(dir)
    }

    /// The meta of `dir`, written first if needed: for a new dir, and for one of format 1 (a log or
    /// snapshots, no meta file), with the cluster id `cluster_id` gives; an older format is brought up to
    /// this one, keeping its id. A newer format is refused. The caller holds the dir's lock.
    pub fn load_or_create(
        dir: &Path,
        cluster_id: impl FnOnce() -> Result<u64, StorageError>,
    ) -> Result<DataDirMeta, StorageError> {
        let found = DataDirMeta::read(dir)?;
        let meta = match found {
            Some(meta) if meta.format == DATA_DIR_FORMAT => return Ok(meta),
            Some(older) => DataDirMeta::new(older.cluster_id),
            None => DataDirMeta::new(cluster_id()?),
        };
        let from = match found {
            Some(older) => Some(older.format),
            None if ["log", "snapshots"].iter().any(|sub| dir.join(sub).exists()) => {
                Some(FORMAT_WITHOUT_META)
            }
            None => None,
        };
        meta.write(dir)?;
        match from {
            Some(from) => tracing::info!(
                dir = %dir.display(),
                from,
                to = meta.format,
                cluster_id = %format_cluster_id(meta.cluster_id),
                "data dir: recorded its format and cluster id (written by an older release)"
            ),
            None => tracing::info!(
                dir = %dir.display(),
                format = meta.format,
                cluster_id = %format_cluster_id(meta.cluster_id),
                "data dir: new, recorded its format and cluster id"
            ),
        }
        Ok(meta)
    }
}

/// A fresh cluster id from the operating system's random source: for a single node, and for a cluster
/// restored from a backup (which must never be mistaken for the one the backup came from).
pub fn random_cluster_id() -> Result<u64, StorageError> {
    getrandom::u64().map_err(|e| {
        StorageError::io("reading the system's random source", std::io::Error::other(e.to_string()))
    })
}

/// A cluster id as every message and file name shows it: 16 hex digits.
pub fn format_cluster_id(id: u64) -> String {
    format!("{id:016x}")
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(TEMP_SUFFIX);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> PathBuf {
        PathBuf::from("/d/turnstile.meta")
    }

    #[test]
    fn the_layout_byte_by_byte() {
        let bytes = DataDirMeta::new(0x0102_0304_0506_0708).encode();
        assert_eq!(&bytes[..8], b"TSMETA\0\0");
        assert_eq!(&bytes[8..12], &[2, 0, 0, 0]);
        assert_eq!(&bytes[12..20], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&bytes[20..], &crc32c::crc32c(&bytes[..20]).to_le_bytes());
        assert_eq!(DataDirMeta::decode(&bytes, &file()).unwrap(), DataDirMeta::new(0x0102_0304_0506_0708));
    }

    /// A newer version is refused by magic and version alone: its length and checksum may be anything.
    #[test]
    fn a_newer_format_is_refused_naming_both_versions_and_the_file() {
        let mut bytes = DataDirMeta { format: 3, cluster_id: 7 }.encode().to_vec();
        bytes[20] ^= 0xff;
        bytes.extend_from_slice(b"fields a later format added");
        let error = DataDirMeta::decode(&bytes, &file()).unwrap_err();
        assert!(
            matches!(&error, StorageError::NewerFormat { found: 3, supported: 2, what: "data dir", .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "/d/turnstile.meta was written by a newer format (data dir version 3 > 2, the newest this build \
             reads); run a newer turnstile on it"
        );
    }

    #[test]
    fn damage_is_refused_as_a_bad_meta_file() {
        let good = DataDirMeta::new(7).encode();
        let mut flipped = good;
        flipped[14] ^= 1;
        let mut magic = good;
        magic[0] = b'X';
        let one = DataDirMeta { format: 1, cluster_id: 7 }.encode();
        let cases: [(&str, &[u8], &str); 5] = [
            ("flipped id byte", &flipped, "checksum mismatch"),
            ("bad magic", &magic, "bad magic"),
            ("truncated", &good[..20], "20 bytes, not 24"),
            ("empty", &[], "shorter than its header"),
            ("format 1", &one, "format 1 never had a meta file"),
        ];
        for (what, bytes, reason) in cases {
            let error = DataDirMeta::decode(bytes, &file()).unwrap_err();
            assert!(matches!(&error, StorageError::BadMeta { .. }), "{what}: {error:?}");
            assert!(error.to_string().contains(reason), "{what}: {error}");
        }
    }

    #[test]
    fn a_new_dir_gets_the_id_given_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DataDirMeta::read(dir.path()).unwrap(), None);
        let meta = DataDirMeta::load_or_create(dir.path(), || Ok(41)).unwrap();
        assert_eq!(meta, DataDirMeta { format: DATA_DIR_FORMAT, cluster_id: 41 });
        let again =
            DataDirMeta::load_or_create(dir.path(), || panic!("an id is asked for only once")).unwrap();
        assert_eq!(again, meta);
        assert!(!dir.path().join("turnstile.meta.tmp").exists());
    }

    /// A dir of the releases before the meta file: a log, no meta. It is format 1, and gets the file.
    #[test]
    fn a_dir_without_a_meta_file_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("log")).unwrap();
        let meta = DataDirMeta::load_or_create(dir.path(), || Ok(9)).unwrap();
        assert_eq!(DataDirMeta::read(dir.path()).unwrap(), Some(meta));
        assert_eq!(meta.format, DATA_DIR_FORMAT);
    }

    #[test]
    fn a_dir_of_a_newer_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = DataDirMeta::new(5).encode();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        fs::write(dir.path().join(META_FILE), bytes).unwrap();
        let error = DataDirMeta::load_or_create(dir.path(), || Ok(1)).unwrap_err();
        assert!(matches!(error, StorageError::NewerFormat { found: 9, .. }), "{error:?}");
        assert_eq!(fs::read(dir.path().join(META_FILE)).unwrap(), bytes, "not rewritten");
    }

    #[test]
    fn random_ids_differ() {
        assert_ne!(random_cluster_id().unwrap(), random_cluster_id().unwrap());
    }
}
