//! What a run knows of each message: the stamp every body starts with, and the ledger of confirms
//! and deliveries that tells afterwards which messages were lost and which came twice.

use serde::Serialize;

/// What leads every body: enough to know, on delivery, which message it is and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    /// Random per target run: a body from anything else is not counted as this run's.
    pub(super) run: u64,
    pub(super) publisher: u32,
    /// The publisher's count of messages before this one.
    pub(super) seq: u64,
    /// When the publish started, in µs since the run started.
    pub(super) sent_us: u64,
}

impl Stamp {
    /// Bytes a stamp takes at the start of a body (big-endian fields, in declaration order).
    pub(super) const LEN: usize = 8 + 4 + 8 + 8;

    /// A body of `size` bytes (at least [`Stamp::LEN`]): the stamp, then padding.
    pub(super) fn body(self, size: usize) -> Vec<u8> {
        let mut body = Vec::with_capacity(size.max(Stamp::LEN));
        body.extend_from_slice(&self.run.to_be_bytes());
        body.extend_from_slice(&self.publisher.to_be_bytes());
        body.extend_from_slice(&self.seq.to_be_bytes());
        body.extend_from_slice(&self.sent_us.to_be_bytes());
        body.resize(size.max(Stamp::LEN), b'.');
        body
    }

    /// The stamp a body starts with; `None` when it is too short to hold one.
    pub(super) fn read(body: &[u8]) -> Option<Stamp> {
        let run = body.get(0..8)?.try_into().ok()?;
        let publisher = body.get(8..12)?.try_into().ok()?;
        let seq = body.get(12..20)?.try_into().ok()?;
        let sent_us = body.get(20..28)?.try_into().ok()?;
        Some(Stamp {
            run: u64::from_be_bytes(run),
            publisher: u32::from_be_bytes(publisher),
            seq: u64::from_be_bytes(seq),
            sent_us: u64::from_be_bytes(sent_us),
        })
    }
}

/// How the server answered a publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Confirm {
    /// Sent, no answer yet.
    #[default]
    Pending,
    /// basic.ack: the server took responsibility for the message.
    Acked,
    /// basic.nack: the server refused it.
    Nacked,
    /// The publish or its confirm failed (broken connection, timeout): the fate is unknown.
    Failed,
}

/// One message of the run.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    confirm: Confirm,
    /// Times it was delivered.
    deliveries: u32,
}

/// What a delivery was, for the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Receipt {
    /// The first delivery of the message.
    First,
    /// A further delivery of a message already received.
    Again,
    /// A message this run did not send.
    Foreign,
}

/// Every message of one target run: whether the server confirmed it and how often it was
/// delivered. Publisher `p`'s message `seq` is `logs[p][seq]`.
#[derive(Debug)]
pub(super) struct Ledger {
    logs: Vec<Vec<Entry>>,
    /// Acked and not delivered (yet): what the drain waits for.
    pub(super) missing: u64,
    /// Further deliveries without the redelivered flag: a server that delivers twice.
    duplicates: u64,
    /// Deliveries flagged redelivered (first ones included): a server that took a message back.
    redelivered: u64,
    foreign: u64,
}

/// The ledger's account at the end of a run (also the counting columns of a [`Row`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(super) struct Tally {
    /// Messages published, warmup included.
    pub(super) sent: u64,
    pub(super) acked: u64,
    pub(super) nacked: u64,
    /// Published and never confirmed either way (a broken connection, a timeout).
    pub(super) unconfirmed: u64,
    /// Messages delivered at least once.
    pub(super) delivered: u64,
    /// Acked and never delivered, even after the drain.
    pub(super) lost: u64,
    /// Further deliveries of a message without the redelivered flag.
    pub(super) duplicates: u64,
    /// Deliveries with the redelivered flag.
    pub(super) redelivered: u64,
    /// Deliveries that no publisher of this run sent.
    pub(super) foreign: u64,
}

impl Ledger {
    pub(super) fn new(publishers: usize) -> Ledger {
        Ledger { logs: vec![Vec::new(); publishers], missing: 0, duplicates: 0, redelivered: 0, foreign: 0 }
    }

    /// Notes that `publisher` is about to send its next message, and gives its sequence number.
    /// Noted before the publish, so a delivery can never come before its entry.
    pub(super) fn sent(&mut self, publisher: usize) -> u64 {
        let log = &mut self.logs[publisher];
        log.push(Entry::default());
        u64::try_from(log.len() - 1).unwrap_or(u64::MAX)
    }

    /// Notes the server's answer to a publish; only the first answer counts.
    pub(super) fn confirmed(&mut self, publisher: usize, seq: u64, confirm: Confirm) {
        let Some(entry) = self.entry(publisher, seq) else { return };
        if entry.confirm != Confirm::Pending {
            return;
        }
        entry.confirm = confirm;
        let missing = confirm == Confirm::Acked && entry.deliveries == 0;
        self.missing += u64::from(missing);
    }

    /// Notes a delivery (which may come before the confirm).
    pub(super) fn delivered(&mut self, publisher: u32, seq: u64, redelivered: bool) -> Receipt {
        let Some(entry) = usize::try_from(publisher).ok().and_then(|p| self.entry(p, seq)) else {
            self.foreign += 1;
            return Receipt::Foreign;
        };
        entry.deliveries = entry.deliveries.saturating_add(1);
        let (confirm, deliveries) = (entry.confirm, entry.deliveries);
        self.redelivered += u64::from(redelivered);
        if deliveries > 1 {
            self.duplicates += u64::from(!redelivered);
            return Receipt::Again;
        }
        if confirm == Confirm::Acked {
            self.missing -= 1;
        }
        Receipt::First
    }

    /// A delivery whose body has no stamp of this run.
    pub(super) fn unknown(&mut self) {
        self.foreign += 1;
    }

    fn entry(&mut self, publisher: usize, seq: u64) -> Option<&mut Entry> {
        self.logs.get_mut(publisher)?.get_mut(usize::try_from(seq).ok()?)
    }

    pub(super) fn tally(&self) -> Tally {
        let mut tally = Tally {
            sent: 0,
            acked: 0,
            nacked: 0,
            unconfirmed: 0,
            delivered: 0,
            lost: 0,
            duplicates: self.duplicates,
            redelivered: self.redelivered,
            foreign: self.foreign,
        };
        for entry in self.logs.iter().flatten() {
            tally.sent += 1;
            let delivered = entry.deliveries > 0;
            tally.delivered += u64::from(delivered);
            match entry.confirm {
                Confirm::Acked => {
                    tally.acked += 1;
                    tally.lost += u64::from(!delivered);
                }
                Confirm::Nacked => tally.nacked += 1,
                Confirm::Pending | Confirm::Failed => tally.unconfirmed += 1,
            }
        }
        tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_body_and_a_short_body_has_none() {
        let stamp = Stamp { run: 0x0123_4567_89ab_cdef, publisher: 3, seq: 1 << 40, sent_us: 987_654 };
        let body = stamp.body(1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(Stamp::read(&body), Some(stamp));
        assert_eq!(&body[..8], &0x0123_4567_89ab_cdef_u64.to_be_bytes());
        assert!(body[Stamp::LEN..].iter().all(|&byte| byte == b'.'));
        // Asked for less than a stamp, a body still holds one.
        assert_eq!(Stamp::read(&stamp.body(0)), Some(stamp));
        assert_eq!(Stamp::read(&body[..Stamp::LEN - 1]), None);
        assert_eq!(Stamp::read(b""), None);
    }

    #[test]
    fn ledger_counts_lost_duplicated_redelivered_and_foreign_messages() {
        let mut ledger = Ledger::new(2);
        let seqs: Vec<u64> = (0..5).map(|_| ledger.sent(0)).collect();
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        assert_eq!(ledger.sent(1), 0);

        // 0: acked, then delivered. 1: delivered before its ack. 2: acked, never delivered.
        ledger.confirmed(0, 0, Confirm::Acked);
        assert_eq!(ledger.missing, 1);
        assert_eq!(ledger.delivered(0, 0, false), Receipt::First);
        assert_eq!(ledger.delivered(0, 1, false), Receipt::First);
        ledger.confirmed(0, 1, Confirm::Acked);
        ledger.confirmed(0, 2, Confirm::Acked);
        assert_eq!(ledger.missing, 1, "only message 2 is acked and not delivered");
        // 3: nacked and (a server may do that) delivered anyway: neither lost nor missing.
        ledger.confirmed(0, 3, Confirm::Nacked);
        assert_eq!(ledger.delivered(0, 3, false), Receipt::First);
        // A later answer for the same publish changes nothing.
        ledger.confirmed(0, 3, Confirm::Acked);
        // 4: its publish failed. Publisher 1's message 0 stays pending.
        ledger.confirmed(0, 4, Confirm::Failed);

        // Message 0 again: once flagged redelivered (a server taking it back), once not (a duplicate).
        assert_eq!(ledger.delivered(0, 0, true), Receipt::Again);
        assert_eq!(ledger.delivered(0, 0, false), Receipt::Again);
        // Publisher 1's message 0 first arrives flagged redelivered: first, and counted as redelivered.
        assert_eq!(ledger.delivered(1, 0, true), Receipt::First);
        // Messages nobody sent.
        assert_eq!(ledger.delivered(0, 5, false), Receipt::Foreign);
        assert_eq!(ledger.delivered(7, 0, false), Receipt::Foreign);
        ledger.unknown();

        assert_eq!(ledger.missing, 1);
        assert_eq!(
            ledger.tally(),
            Tally {
                sent: 6,
                acked: 3,
                nacked: 1,
                unconfirmed: 2,
                delivered: 4,
                lost: 1,
                duplicates: 1,
                redelivered: 2,
                foreign: 3,
            }
        );
        // The lost one turns up after all.
        assert_eq!(ledger.delivered(0, 2, false), Receipt::First);
        assert_eq!((ledger.missing, ledger.tally().lost), (0, 0));
    }
}
