//! What the journal counts from its opening ([`JournalStats`]), fsync latencies included.

use std::time::Duration;

/// Number of buckets in [`JournalStats::fsync_micros_log2`].
pub const FSYNC_HISTOGRAM_BUCKETS: usize = 24;

/// Counters since the journal was opened (fsyncs made while opening are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// fdatasync calls on segment files (group commits, background syncs, rolls, `sync`, close).
    pub fsyncs: u64,
    /// fdatasync calls a fault or test hook slowed down ([`Journal::set_sync_delay`](super::Journal::set_sync_delay)).
    pub delayed_fsyncs: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written to segment files (frames and checkpoints).
    pub bytes: u64,
    /// `append` calls processed.
    pub appends: u64,
    /// Groups a writer took from the queue (each group is written together and shares one fsync).
    pub batches: u64,
    /// Appends in the most recent group.
    pub last_batch_appends: u64,
    /// Appends in the largest group so far.
    pub max_batch_appends: u64,
    pub fsync_nanos_total: u64,
    pub fsync_nanos_max: u64,
    /// fsync latency histogram: bucket `i` counts fsyncs that took less than 2^i µs and at least 2^(i-1) µs
    /// (bucket 0: under 1 µs); the last bucket also counts everything slower.
    pub fsync_micros_log2: [u64; FSYNC_HISTOGRAM_BUCKETS],
    /// Segment files currently on disk.
    pub segments: u64,
    /// Bytes of the entries after the purge point, which a restart replays
    /// ([`Journal::log_bytes`](super::Journal::log_bytes)).
    pub log_bytes: u64,
}

impl JournalStats {
    /// The exclusive upper bound of histogram bucket `bucket`, in microseconds (for Prometheus' `le`).
    pub fn fsync_bucket_upper_micros(bucket: usize) -> u64 {
        1u64 << bucket.min(63)
    }

    pub(super) fn record_fsync(&mut self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsyncs += 1;
        self.fsync_nanos_total = self.fsync_nanos_total.saturating_add(nanos);
        self.fsync_nanos_max = self.fsync_nanos_max.max(nanos);
        let micros = nanos / 1_000;
        let bucket = if micros == 0 { 0 } else { (u64::BITS - micros.leading_zeros()) as usize };
        self.fsync_micros_log2[bucket.min(FSYNC_HISTOGRAM_BUCKETS - 1)] += 1;
    }
}
