//! Backups: one self-describing file holding a consistent copy of the whole state, taken from a running node
//! (`GET /api/cluster/snapshot`, `turnstile cluster snapshot save`) and installed into a new data dir
//! (`turnstile server --restore`).
//!
//! ```text
//! header   [8 magic "TSBACKUP"][u32 format version][u64 log index][u64 cluster id][u64 created at, ms]  36 bytes
//! state    the state machine's snapshot bytes, as snapshot files hold them (their own version byte first)
//! trailer  [u64 state length][u32 crc32c of everything before it]                                       12 bytes
//! ```
//! The length and the checksum come last so that a node can write the file while it serializes the state, in
//! one pass, neither holding the serialized state whole nor knowing its size first. The magic and the
//! version keep their place in every version, so a file of a newer format is refused as such.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;

/// The backup format this build writes, and the newest it reads.
pub const BACKUP_FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"TSBACKUP";
/// Magic and version: what every version of the file starts with.
const STABLE_BYTES: usize = 8 + 4;
/// The header's size.
pub const BACKUP_HEADER_BYTES: usize = STABLE_BYTES + 8 + 8 + 8;
/// The trailer's size.
pub const BACKUP_TRAILER_BYTES: usize = 8 + 4;
/// A file is checked this much at a time by [`verify_backup`].
const READ_STEP: usize = 1 << 20;

/// What a backup's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupHeader {
    /// The log index the state covers: every entry up to it is in, none after it.
    pub index: u64,
    /// The cluster the backup was taken from (a restore makes a new one).
    pub cluster_id: u64,
    /// When it was taken, in ms since the Unix epoch (the node's clock).
    pub created_at: u64,
}

impl BackupHeader {
    /// The header's bytes (see the module docs).
    pub fn encode(&self) -> [u8; BACKUP_HEADER_BYTES] {
        let mut out = [0u8; BACKUP_HEADER_BYTES];
        out[..8].copy_from_slice(MAGIC);
        out[8..12].copy_from_slice(&BACKUP_FORMAT.to_le_bytes());
        out[12..20].copy_from_slice(&self.index.to_le_bytes());
        out[20..28].copy_from_slice(&self.cluster_id.to_le_bytes());
        out[28..36].copy_from_slice(&self.created_at.to_le_bytes());
        out
    }
}

/// Why a file is not a backup this build can restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a Turnstile snapshot: {0}")]
    NotABackup(String),
    #[error(
        "written by a newer format ({found} > {supported}, the newest this build reads); use a newer turnstile"
    )]
    Newer { found: u32, supported: u32 },
    #[error(
        "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged or incomplete"
    )]
    Checksum { stored: u32, computed: u32 },
    /// The checksum holds but the length does not: not something a writer of this format makes.
    #[error("the trailer says {said} state bytes, but the file holds {held}")]
    Length { said: u64, held: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// Writes a backup: the header when made, then whatever is written through it (the state), then the trailer
/// on [`BackupWriter::finish`]. The checksum is computed on the way.
#[derive(Debug)]
pub struct BackupWriter<W: Write> {
    out: W,
    crc: u32,
    state_bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W, header: &BackupHeader) -> io::Result<BackupWriter<W>> {
        let header = header.encode();
        out.write_all(&header)?;
        Ok(BackupWriter { out, crc: crc32c::crc32c(&header), state_bytes: 0 })
    }

    /// Writes the trailer and hands back the writer (not flushed).
    pub fn finish(mut self) -> io::Result<W> {
        let length = self.state_bytes.to_le_bytes();
        let crc = crc32c::crc32c_append(self.crc, &length);
        self.out.write_all(&length)?;
        self.out.write_all(&crc.to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for BackupWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.out.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..written]);
        self.state_bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a backup whole and checks it; returns its header and its state bytes (a slice of the buffer the
/// file was read into).
pub fn read_backup(path: &Path) -> Result<(BackupHeader, Bytes), BackupError> {
    let bytes = Bytes::from(std::fs::read(path).map_err(|e| io_error(path, "reading", e))?);
    let header = decode_header(&bytes, bytes.len() as u64)?;
    let (before, trailer) = bytes.split_at(bytes.len() - BACKUP_TRAILER_BYTES);
    check_trailer(crc32c::crc32c(before), trailer, bytes.len() as u64)?;
    Ok((header, bytes.slice(BACKUP_HEADER_BYTES..before.len())))
}

/// Checks a backup file without holding it in memory (read in 1 MiB steps); returns its header and the
/// file's size.
pub fn verify_backup(path: &Path) -> Result<(BackupHeader, u64), BackupError> {
    let mut file = File::open(path).map_err(|e| io_error(path, "opening", e))?;
    let size = file.metadata().map_err(|e| io_error(path, "reading the size of", e))?.len();
    let mut start =
        vec![0u8; usize::try_from(size).map_or(BACKUP_HEADER_BYTES, |s| s.min(BACKUP_HEADER_BYTES))];
    file.read_exact(&mut start).map_err(|e| io_error(path, "reading", e))?;
    let header = decode_header(&start, size)?;
    let mut crc = crc32c::crc32c(&start);
    let mut left = size - (BACKUP_HEADER_BYTES + BACKUP_TRAILER_BYTES) as u64;
    let mut buffer = vec![0u8; READ_STEP];
    while left > 0 {
        let step = usize::try_from(left).map_or(READ_STEP, |left| left.min(READ_STEP));
        file.read_exact(&mut buffer[..step]).map_err(|e| io_error(path, "reading", e))?;
        crc = crc32c::crc32c_append(crc, &buffer[..step]);
        left -= step as u64;
    }
    let mut trailer = [0u8; BACKUP_TRAILER_BYTES];
    file.read_exact(&mut trailer).map_err(|e| io_error(path, "reading", e))?;
    check_trailer(crc, &trailer, size)?;
    Ok((header, size))
}

/// Checks magic, version and that there is room for a header and a trailer (`start`: the file's first bytes,
/// up to a header's worth; `size`: the whole file's).
fn decode_header(start: &[u8], size: u64) -> Result<BackupHeader, BackupError> {
    let too_short =
        || BackupError::NotABackup(format!("only {size} bytes, shorter than a snapshot's header"));
    let stable = start.first_chunk::<STABLE_BYTES>().ok_or_else(too_short)?;
    if &stable[..8] != MAGIC {
        return Err(BackupError::NotABackup("it does not start with the magic bytes TSBACKUP".into()));
    }
    let format = u32::from_le_bytes([stable[8], stable[9], stable[10], stable[11]]);
    if format > BACKUP_FORMAT {
        return Err(BackupError::Newer { found: format, supported: BACKUP_FORMAT });
    }
    if format != BACKUP_FORMAT {
        return Err(BackupError::NotABackup(format!("format version {format} never existed")));
    }
    if size < (BACKUP_HEADER_BYTES + BACKUP_TRAILER_BYTES) as u64 {
        return Err(too_short());
    }
    let header = start.first_chunk::<BACKUP_HEADER_BYTES>().ok_or_else(too_short)?;
    let field = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    Ok(BackupHeader { index: field(12), cluster_id: field(20), created_at: field(28) })
}

/// Checks the trailer against `crc` (of everything before it) and the file's `size`.
fn check_trailer(crc: u32, trailer: &[u8], size: u64) -> Result<(), BackupError> {
    let (length, stored) = trailer.split_at(8);
    let computed = crc32c::crc32c_append(crc, length);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    if stored != computed {
        return Err(BackupError::Checksum { stored, computed });
    }
    let mut said = [0u8; 8];
    said.copy_from_slice(length);
    let said = u64::from_le_bytes(said);
    let held = size - (BACKUP_HEADER_BYTES + BACKUP_TRAILER_BYTES) as u64;
    if said != held {
        return Err(BackupError::Length { said, held });
    }
    Ok(())
}

fn io_error(path: &Path, doing: &str, source: io::Error) -> BackupError {
    BackupError::Io { context: format!("{doing} {}", path.display()), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: BackupHeader = BackupHeader { index: 0x0102, cluster_id: 0xaabb, created_at: 7 };

    fn backup(state: &[u8]) -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new(), &HEADER).unwrap();
        // In two writes, as a serializer makes them.
        let (a, b) = state.split_at(state.len() / 2);
        writer.write_all(a).unwrap();
        writer.write_all(b).unwrap();
        writer.finish().unwrap()
    }

    /// Both ways of reading: whole, and in steps.
    fn read_both(bytes: &[u8]) -> Result<(BackupHeader, Bytes), BackupError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.snap");
        std::fs::write(&path, bytes).unwrap();
        let whole = read_backup(&path);
        let verified = verify_backup(&path);
        match (&whole, &verified) {
            (Ok((header, _)), Ok((checked, size))) => {
                assert_eq!((header, *size), (checked, bytes.len() as u64));
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            _ => panic!("read_backup and verify_backup disagree: {whole:?} / {verified:?}"),
        }
        whole
    }

    #[test]
    fn the_layout_byte_by_byte() {
        let bytes = backup(b"xyz");
        let mut expected = b"TSBACKUP".to_vec();
        expected.extend_from_slice(&[1, 0, 0, 0]);
        expected.extend_from_slice(&[2, 1, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0xbb, 0xaa, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(b"xyz");
        expected.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
        let crc = crc32c::crc32c(&expected);
        expected.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip() {
        for state in [&b""[..], b"s", &[9u8; 3 << 19]] {
            let (header, read) = read_both(&backup(state)).unwrap();
            assert_eq!((header, &read[..]), (HEADER, state));
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = backup(b"the state");
        for cut in 0..bytes.len() {
            let error = read_both(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(error, BackupError::NotABackup(_) | BackupError::Checksum { .. }),
                "cut at {cut}: {error:?}"
            );
        }
    }

    /// A flipped byte anywhere is refused: in the magic as not a snapshot, in the version as newer or
    /// unknown, anywhere else by the checksum.
    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = backup(b"the state");
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let error = read_both(&bad).unwrap_err();
            let expected = match at {
                0..8 => matches!(error, BackupError::NotABackup(_)),
                8..12 => matches!(error, BackupError::Newer { .. }),
                _ => matches!(error, BackupError::Checksum { .. }),
            };
            assert!(expected, "byte {at}: {error:?}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_naming_both_versions() {
        let mut bytes = backup(b"s");
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let error = read_both(&bytes).unwrap_err();
        assert_eq!(
            error.to_string(),
            "written by a newer format (2 > 1, the newest this build reads); use a newer turnstile"
        );
    }

    #[test]
    fn another_file_is_not_a_snapshot() {
        let error =
            read_both(b"PK\x03\x04 some zip file with enough bytes in it to have a header").unwrap_err();
        assert_eq!(
            error.to_string(),
            "not a Turnstile snapshot: it does not start with the magic bytes TSBACKUP"
        );
    }

    /// A length that disagrees with the file, under a checksum that holds (no writer makes one).
    #[test]
    fn a_length_that_disagrees_is_refused() {
        let mut bytes = backup(b"abc");
        let at = bytes.len() - BACKUP_TRAILER_BYTES;
        bytes[at] = 4;
        let crc = crc32c::crc32c(&bytes[..bytes.len() - 4]);
        let end = bytes.len();
        bytes[end - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(read_both(&bytes).unwrap_err(), BackupError::Length { said: 4, held: 3 }));
    }
}
