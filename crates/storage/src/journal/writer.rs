//! The files, and writing a group to them: one group frame per write, the active segment zero-filled
//! ahead, a roll to a new segment (with a checkpoint) once it is full, and the group's one
//! fdatasync. A failed write or fdatasync poisons the journal.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::error::{IoContext, StorageError};
use crate::file::sync_dir;
use crate::index::EntryAt;
use crate::record::{Checkpoint, GROUP_FRAME_BYTES, encode_checkpoint, group_frame};
use crate::segment::Segment;

use super::append::IndexChange;
use super::commit::Command;
use super::deleter::Deletion;
use super::sync::fdatasync;
use super::{FsyncPolicy, Shared};

/// How far ahead of the records the active segment is zero-filled. A segment grows in these steps,
/// so most fdatasyncs find its size unchanged and write only data: on ext4 without a journal (this
/// machine) that took a group commit's fdatasync from 327–368 µs to 257–270 µs under load.
const ZERO_STEP: u64 = 1 << 20;

/// The files and what is known about them; behind `Inner::writer`.
pub(super) struct Writer {
    pub(super) log_dir: PathBuf,
    pub(super) policy: FsyncPolicy,
    pub(super) segment_bytes: u64,
    /// Every segment on disk, oldest first; the last one is being written.
    pub(super) segments: VecDeque<Segment>,
    pub(super) file: Option<Arc<File>>,
    /// Counts writes and new segments: a background fdatasync covers everything only if this did not
    /// move while it ran.
    pub(super) writes: u64,
    /// Whether the background thread is making an fdatasync (without the files) right now.
    pub(super) background_sync_running: bool,
    /// Where the active segment's records end: the next write goes here.
    pub(super) active_len: u64,
    /// The active segment's file size: zeros from `active_len` up to here (see [`ZERO_STEP`]).
    pub(super) zeroed_until: u64,
    /// Whether the active segment holds anything besides its checkpoint (a roll would be pointless otherwise).
    pub(super) active_has_records: bool,
    /// The vote, committed marker and purge point as of everything written so far.
    pub(super) checkpoint: Checkpoint,
    /// Bytes written since the last fdatasync.
    pub(super) dirty: bool,
    /// Record bytes written since the last fdatasync began: what a segment roll's fdatasync would
    /// have to write back (see [`super::sync::SYNC_EVERY_BYTES`]).
    pub(super) unsynced_bytes: u64,
    pub(super) last_sync: Instant,
    /// Frames of the current group not yet written, reused between groups.
    pub(super) pending: Vec<u8>,
    pub(super) shared: Arc<Shared>,
    /// Where obsolete segments go to be deleted; `None` while opening and after close (deleted here then).
    pub(super) deleter: Option<Sender<Deletion>>,
}

impl Writer {
    /// Writes one group, fsyncs it if the policy (or a `sync` in it) asks, then answers everyone in order.
    pub(super) fn commit_group(&mut self, group: Vec<Command>) {
        let appends = group.iter().filter(|command| matches!(command, Command::Append(_))).count() as u64;
        let must_be_durable = group.iter().any(|command| match command {
            Command::Append(append) => append.needs_sync,
            Command::Sync(_) => false,
        });
        let wants_sync = group.iter().any(|command| matches!(command, Command::Sync(_)))
            || (self.policy == FsyncPolicy::Always && must_be_durable);
        let outcome = if self.is_poisoned() {
            Err(StorageError::Poisoned)
        } else {
            let written = self.write_group(&group);
            let synced =
                written.and_then(|()| if wants_sync && self.dirty { self.sync_active() } else { Ok(()) });
            if let Err(error) = &synced {
                self.poison(error);
            }
            synced
        };
        {
            let mut stats = self.shared.stats();
            stats.appends += appends;
            stats.batches += 1;
            stats.last_batch_appends = appends;
            stats.max_batch_appends = stats.max_batch_appends.max(appends);
            stats.segments = self.segments.len() as u64;
        }
        for command in group {
            match command {
                Command::Append(append) => {
                    let result = match (&outcome, append.frames) {
                        (Err(error), _) => Err(error.clone()),
                        (Ok(()), Err(encoding)) => Err(encoding),
                        (Ok(()), Ok(_)) => Ok(()),
                    };
                    // A panicking callback must not take the journal down with it.
                    if catch_unwind(AssertUnwindSafe(|| (append.done)(result))).is_err() {
                        tracing::error!("journal: an append callback panicked");
                    }
                }
                Command::Sync(reply) => drop(reply.send(outcome.clone())),
            }
        }
    }

    /// Writes every append of the group to the active segment, rolling to a new segment between appends.
    fn write_group(&mut self, group: &[Command]) -> Result<(), StorageError> {
        let mut records = 0;
        let mut index_changes = Vec::new();
        for command in group {
            let Command::Append(append) = command else { continue };
            let Ok(frames) = &append.frames else { continue };
            if frames.is_empty() {
                continue;
            }
            let active_bytes = self.active_len + self.pending.len() as u64;
            if self.active_has_records && active_bytes >= self.segment_bytes {
                self.flush_pending()?;
                self.roll()?;
            }
            if self.pending.is_empty() {
                // Room for the group's frame, filled in when the group is written (flush_pending).
                self.pending.extend_from_slice(&[0; GROUP_FRAME_BYTES]);
            }
            let seq = self.segments.back().ok_or(StorageError::Closed)?.seq;
            let base = self.active_len + self.pending.len() as u64;
            index_changes.extend(append.index_changes.iter().map(|change| match *change {
                IndexChange::Entry { index, at } => {
                    IndexChange::Entry { index, at: EntryAt { seq, offset: base + at.offset, len: at.len } }
                }
                other => other,
            }));
            self.pending.extend_from_slice(frames);
            self.active_has_records = true;
            records += append.records;
            let changes = &append.changes;
            if let Some(vote) = &changes.vote {
                self.checkpoint.vote = Some(vote.clone());
            }
            if let Some(committed) = &changes.committed {
                self.checkpoint.committed = Some(committed.clone());
            }
            if let Some(upto) = changes.purged {
                self.checkpoint.purged = Some(self.checkpoint.purged.map_or(upto, |purged| purged.max(upto)));
            }
            if let (Some(index), Some(active)) = (changes.max_entry, self.segments.back_mut()) {
                active.max_entry = Some(active.max_entry.map_or(index, |max| max.max(index)));
            }
        }
        self.flush_pending()?;
        self.shared.stats().records += records;
        // Only now is all of it in the file, where a read would look.
        let mut places = self.shared.index();
        for change in index_changes {
            places.apply(change);
        }
        Ok(())
    }

    fn flush_pending(&mut self) -> Result<(), StorageError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = group_frame(&self.pending[GROUP_FRAME_BYTES..]).and_then(|header| {
            self.pending[..GROUP_FRAME_BYTES].copy_from_slice(&header);
            self.write_active_raw()
        });
        let len = self.pending.len() as u64;
        self.pending.clear();
        written?;
        self.active_len += len;
        self.shared.stats().bytes += len;
        Ok(())
    }

    fn write_active_raw(&mut self) -> Result<(), StorageError> {
        let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
        let file = self.file.as_ref().ok_or(StorageError::Closed)?;
        self.dirty = true;
        self.writes += 1;
        self.unsynced_bytes += self.pending.len() as u64;
        let end = self.active_len + self.pending.len() as u64;
        if end > self.zeroed_until {
            // Small segments (tests) need no more than their own size.
            let step = ZERO_STEP.min(self.segment_bytes).max(4096);
            let upto = end.div_ceil(step) * step;
            write_zeros(file, self.zeroed_until, upto)
                .ctx(|| format!("zero-filling segment {}", path.display()))?;
            self.zeroed_until = upto;
        }
        file.write_all_at(&self.pending, self.active_len)
            .ctx(|| format!("writing to segment {}", path.display()))
    }

    /// Cuts the active segment's zero-filled end and makes it all durable: before a roll (only the last
    /// segment may end in zeros) and at close.
    pub(super) fn end_active(&mut self) -> Result<(), StorageError> {
        if self.zeroed_until > self.active_len {
            let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
            let file = self.file.as_ref().ok_or(StorageError::Closed)?;
            file.set_len(self.active_len)
                .ctx(|| format!("cutting segment {} to its records", path.display()))?;
            self.zeroed_until = self.active_len;
            self.dirty = true;
            self.writes += 1;
        }
        if self.dirty {
            self.sync_active()?;
        }
        Ok(())
    }

    /// Ends the active segment (fsynced) and starts the next one with a checkpoint, then deletes what that
    /// checkpoint makes obsolete.
    fn roll(&mut self) -> Result<(), StorageError> {
        self.end_active()?;
        self.start_segment()?;
        self.delete_obsolete_segments();
        Ok(())
    }

    /// Creates the next segment, writes the checkpoint into it and makes both the file and its directory entry
    /// durable before anything else is written.
    pub(super) fn start_segment(&mut self) -> Result<(), StorageError> {
        let seq = self.segments.back().map_or(1, |segment| segment.seq + 1);
        let segment = Segment::new(&self.log_dir, seq);
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&segment.path)
            .ctx(|| format!("creating segment {}", segment.path.display()))?;
        let mut frame = Vec::new();
        encode_checkpoint(&self.checkpoint, &mut frame)?;
        file.write_all(&frame).ctx(|| format!("writing checkpoint to {}", segment.path.display()))?;
        self.segments.push_back(segment);
        self.file = Some(Arc::new(file));
        self.writes += 1;
        self.active_len = frame.len() as u64;
        self.zeroed_until = self.active_len;
        self.active_has_records = false;
        self.dirty = true;
        self.sync_active()?;
        sync_dir(&self.log_dir)
    }

    /// fdatasync of the active segment; afterwards everything written is durable, so segments made obsolete by
    /// the purge point are deleted.
    fn sync_active(&mut self) -> Result<(), StorageError> {
        let path = &self.segments.back().ok_or(StorageError::Closed)?.path;
        let file = self.file.as_ref().ok_or(StorageError::Closed)?;
        let started = Instant::now();
        self.unsynced_bytes = 0;
        let synced = fdatasync(&self.shared, file);
        let took = started.elapsed();
        synced.ctx(|| format!("fdatasync of segment {}", path.display()))?;
        self.shared.stats().record_fsync(took);
        self.dirty = false;
        self.last_sync = Instant::now();
        self.delete_obsolete_segments();
        Ok(())
    }

    pub(super) fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    pub(super) fn poison(&self, cause: &StorageError) {
        self.shared.poison(cause);
    }
}

/// Writes zeros to `file` over `[from, to)`.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    static CHUNK: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let len = usize::try_from(to - at).map_or(CHUNK.len(), |left| left.min(CHUNK.len()));
        file.write_all_at(&CHUNK[..len], at)?;
        at += len as u64;
    }
    Ok(())
}
