//! Where each entry of the log is in the segment files, so that an entry its user no longer keeps in
//! memory can be read back ([`crate::Journal::read_entries`]).
//!
//! The index changes in log order with the records: an entry adds (or replaces) its place, a truncation
//! drops the places above it, a purge those up to it. Replay builds it from the segments; the writer
//! keeps it up to date once a write is in the file.

use std::collections::BTreeMap;

/// Where one entry's frame is: segment, offset in it, length of the whole frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryAt {
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    pub(crate) len: usize,
}

/// Entry index → place, or (while replaying) → data.
pub(crate) type Entries<V> = BTreeMap<u64, V>;

/// Drops the entries above `after` (`None`: all of them), as a truncation record says; returns them.
pub(crate) fn drop_above<V>(entries: &mut Entries<V>, after: Option<u64>) -> Entries<V> {
    match after.map(|after| after.checked_add(1)) {
        None => std::mem::take(entries),
        Some(Some(first_dropped)) => entries.split_off(&first_dropped),
        Some(None) => BTreeMap::new(),
    }
}

/// Drops the entries up to and including `upto`, as a purge record says; returns them.
pub(crate) fn drop_upto<V>(entries: &mut Entries<V>, upto: u64) -> Entries<V> {
    let kept = match upto.checked_add(1) {
        Some(first_kept) => entries.split_off(&first_kept),
        None => BTreeMap::new(),
    };
    std::mem::replace(entries, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(indexes: &[u64]) -> Entries<()> {
        indexes.iter().map(|i| (*i, ())).collect()
    }

    #[test]
    fn truncation_and_purge_drop_the_right_side() {
        let mut e = entries(&[3, 4, 5, 6]);
        assert_eq!(drop_above(&mut e, Some(5)), entries(&[6]));
        assert_eq!(e.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(drop_upto(&mut e, 3), entries(&[3]));
        assert_eq!(e.keys().copied().collect::<Vec<_>>(), [4, 5]);
        drop_above(&mut e, Some(u64::MAX));
        assert_eq!(e.len(), 2);
        drop_above(&mut e, None);
        assert!(e.is_empty());
        let mut e = entries(&[1, u64::MAX]);
        drop_upto(&mut e, u64::MAX);
        assert!(e.is_empty());
    }
}
