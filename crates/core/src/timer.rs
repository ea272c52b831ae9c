//! Everything that happens at a time: one ordered set of `(due, what)`.
//!
//! Each timed item (a lease, a wait deadline, a delay, a TTL, a dedup window) has exactly one
//! entry, added when the item gets its deadline and removed when the deadline changes or the
//! item goes away. Firing pops entries in `(time, kind)` order, so a tick costs O(log n) per item
//! that is due, never a scan of everything pending.

use std::collections::BTreeSet;

use crate::{HostId, MsgId, QueueId, Timestamp};

/// What a timer entry fires. Ordered by variant, then fields: at equal times, holds expire before
/// waits time out, so a waiter due at the same instant as a lease is granted rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    HoldLease {
        token: u64,
    },
    DeliveryLease {
        queue: QueueId,
        receipt: u64,
    },
    MessageDue {
        queue: QueueId,
        id: MsgId,
    },
    MessageExpiry {
        queue: QueueId,
        id: MsgId,
    },
    WaitDeadline {
        wait_id: u64,
    },
    DedupExpiry {
        queue: QueueId,
        dedup: String,
    },
    KeyExpiry {
        key: String,
    },
    /// A host's keep-alives stopped: its sessions close. Last, so that at equal times the leases
    /// and waits of its sessions end as they would have without it.
    HostExpiry {
        host: HostId,
    },
}

/// Never stored in a snapshot: every entry is derived from an item's deadline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Timers {
    due: BTreeSet<(Timestamp, Timer)>,
}

impl Timers {
    /// Every timer at once (a state rebuilt from a snapshot): one sort and a bulk build.
    pub(crate) fn from_list(list: Vec<(Timestamp, Timer)>) -> Timers {
        Timers { due: list.into_iter().collect() }
    }

    pub(crate) fn add(&mut self, at: Timestamp, timer: Timer) {
        let fresh = self.due.insert((at, timer));
        debug_assert!(fresh, "timer added twice");
    }

    pub(crate) fn remove(&mut self, at: Timestamp, timer: Timer) {
        let found = self.due.remove(&(at, timer));
        debug_assert!(found, "removed a timer that was not set");
    }

    /// Moves a timer from `old` to `new`.
    pub(crate) fn reschedule(&mut self, old: Timestamp, new: Timestamp, timer: Timer) {
        if old != new {
            self.remove(old, timer.clone());
            self.add(new, timer);
        }
    }

    /// The earliest timer due at or before `now`; firing it must remove it.
    pub(crate) fn first_due(&self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        self.due.first().filter(|(at, _)| *at <= now).cloned()
    }

    pub(crate) fn next_due(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }

    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }

    pub(crate) fn contains(&self, at: Timestamp, timer: &Timer) -> bool {
        self.due.contains(&(at, timer.clone()))
    }
}
