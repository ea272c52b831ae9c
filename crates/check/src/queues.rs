//! Queues, judged as a total queue: every message is accounted for by its id (unique in a run,
//! carried in its payload), across all queues and their dead letters. The run ends with a drain,
//! so "still queued" is not an excuse at the end: a message is either delivered or lost.
//!
//! Per id, from the pushes, the deliveries (in pops that completed Ok) and the acks:
//! - lost: a push was acknowledged, and the message was never delivered;
//! - unexpected: a message was delivered that was never pushed, or whose every push failed, or
//!   before its first push was even sent;
//! - redelivered after its ack: delivered by a pop sent after an ack of it completed Ok;
//! - group order: within one queue and group, if push A completed before push B was sent, B's
//!   first delivery must not complete before A's first delivery was sent.
//!
//! Deliveries of one message more than once are allowed (at least once): they are counted in
//! the verdict's notes, with the pushes of unknown outcome that were delivered anyway. Pops of
//! unknown outcome show no messages; what they took comes back when its lease runs out.

use std::collections::{BTreeMap, HashMap};

use crate::{Call, Delivery, Op, Outcome, Value, Verdict};

/// Everything that happened to one message.
#[derive(Debug, Default)]
struct Message<'c, 'a> {
    pushes: Vec<&'c Call<'a>>,
    /// The pops that handed it out, with what they handed.
    deliveries: Vec<(&'c Call<'a>, &'a Delivery)>,
    /// The ack that completed Ok first.
    acked: Option<&'c Call<'a>>,
}

impl<'c, 'a> Message<'c, 'a> {
    /// The push acknowledged first.
    fn acknowledged(&self) -> Option<&'c Call<'a>> {
        self.pushes
            .iter()
            .copied()
            .filter(|push| push.outcome == Outcome::Ok)
            .min_by_key(|push| push.completed)
    }

    /// The first push that may have happened (Ok or unknown).
    fn first_sent(&self) -> Option<&'c Call<'a>> {
        self.pushes
            .iter()
            .copied()
            .filter(|push| push.outcome != Outcome::Fail)
            .min_by_key(|push| push.invoked)
    }

    /// The delivery that completed first and the one that was sent first (often the same).
    fn first_deliveries(&self) -> Option<(&'c Call<'a>, &'c Call<'a>)> {
        let completed = self.deliveries.iter().map(|(pop, _)| *pop).min_by_key(|pop| pop.completed)?;
        let sent = self.deliveries.iter().map(|(pop, _)| *pop).min_by_key(|pop| pop.invoked)?;
        Some((completed, sent))
    }
}

pub fn check(calls: &[Call<'_>]) -> Verdict {
    let mut checked = 0;
    let mut messages: BTreeMap<&str, Message<'_, '_>> = BTreeMap::new();
    for call in calls {
        match call.op {
            Op::Push { id, .. } => messages.entry(id).or_default().pushes.push(call),
            Op::Pop { .. } => {
                if let (Outcome::Ok, Value::Delivered(deliveries)) = (call.outcome, call.value) {
                    for delivery in deliveries {
                        messages.entry(&delivery.id).or_default().deliveries.push((call, delivery));
                    }
                }
            }
            Op::Ack { id, .. } => {
                let message = messages.entry(id).or_default();
                if call.outcome == Outcome::Ok
                    && message.acked.is_none_or(|first| call.completed < first.completed)
                {
                    message.acked = Some(call);
                }
            }
            Op::Nack { .. } => {}
            _ => continue,
        }
        checked += 1;
    }

    let mut violations = Vec::new();
    let (mut duplicated, mut extra_deliveries, mut recovered, mut unknown_undelivered) = (0, 0, 0, 0);
    for (id, message) in &messages {
        let Some(&(first_pop, _)) = message.deliveries.first() else {
            match message.acknowledged() {
                Some(push) => {
                    violations.push(format!("message {id} lost: {push} was acknowledged, never delivered"))
                }
                None if message.first_sent().is_some() => unknown_undelivered += 1,
                None => {}
            }
            continue;
        };
        if message.deliveries.len() > 1 {
            duplicated += 1;
            extra_deliveries += message.deliveries.len() - 1;
        }
        let Some(first_sent) = message.first_sent() else {
            match message.pushes.first() {
                Some(push) => violations.push(format!(
                    "message {id} delivered though its push failed: {push}; delivered by {first_pop}"
                )),
                None => violations.push(format!("message {id} delivered, never pushed: {first_pop}")),
            }
            continue;
        };
        if message.acknowledged().is_none() {
            recovered += 1;
        }
        if let Some((early, _)) = message.first_deliveries() {
            if early.completed.is_some_and(|completed| completed < first_sent.invoked) {
                violations
                    .push(format!("message {id} delivered before it was pushed: {early}, then {first_sent}"));
            }
        }
        if let Some(ack) = message.acked {
            let after = message
                .deliveries
                .iter()
                .map(|(pop, _)| *pop)
                .filter(|pop| ack.completed.is_some_and(|acked| pop.invoked > acked))
                .min_by_key(|pop| pop.invoked);
            if let Some(pop) = after {
                violations.push(format!("message {id} delivered again after its ack: {ack}, then {pop}"));
            }
        }
    }
    check_groups(&messages, &mut violations);

    let mut verdict = Verdict::new("queues", checked, violations);
    verdict.notes.push(format!(
        "{} messages; {duplicated} delivered more than once ({extra_deliveries} extra deliveries); \
         {recovered} pushes of unknown outcome delivered, {unknown_undelivered} not",
        messages.len()
    ));
    verdict
}

/// Per queue and group: a push acknowledged before another was sent is delivered first.
fn check_groups(messages: &BTreeMap<&str, Message<'_, '_>>, violations: &mut Vec<String>) {
    struct Pushed<'c, 'a> {
        /// The first push that may have happened, and the first acknowledged.
        push: &'c Call<'a>,
        acked: Option<&'c Call<'a>>,
        first_completed: &'c Call<'a>,
        first_sent: &'c Call<'a>,
    }
    let mut groups: HashMap<(&str, &str), Vec<Pushed<'_, '_>>> = HashMap::new();
    for message in messages.values() {
        let (Some(push), Some((first_completed, first_sent))) =
            (message.first_sent(), message.first_deliveries())
        else {
            continue;
        };
        if let Op::Push { queue, group: Some(group), .. } = push.op {
            let acked = message.acknowledged();
            groups.entry((queue, group)).or_default().push(Pushed {
                push,
                acked,
                first_completed,
                first_sent,
            });
        }
    }
    for ((queue, group), pushed) in groups {
        // Earlier candidates: acknowledged pushes, by completion; later ones: any, by send.
        let mut earlier: Vec<(u64, &Pushed<'_, '_>)> =
            pushed.iter().filter_map(|p| Some((p.acked?.completed?, p))).collect();
        earlier.sort_by_key(|&(completed, _)| completed);
        let mut later: Vec<&Pushed<'_, '_>> = pushed.iter().collect();
        later.sort_by_key(|p| p.push.invoked);
        // Among the pushes acknowledged before this one was sent, the one delivered last.
        let mut latest: Option<&Pushed<'_, '_>> = None;
        let mut next = 0;
        for b in later {
            while next < earlier.len() && earlier[next].0 < b.push.invoked {
                let a = earlier[next].1;
                if latest.is_none_or(|latest| a.first_sent.invoked > latest.first_sent.invoked) {
                    latest = Some(a);
                }
                next += 1;
            }
            let Some(a) = latest else { continue };
            if b.first_completed.completed.is_some_and(|completed| completed < a.first_sent.invoked) {
                violations.push(format!(
                    "queue {queue} group {group}: out of order: {} completed before {} was sent, but {} \
                     was delivered by {} before {} was",
                    a.acked.unwrap_or(a.push),
                    b.push,
                    push_id(b.push),
                    b.first_completed,
                    push_id(a.push),
                ));
            }
        }
    }
}

fn push_id<'a>(push: &Call<'a>) -> &'a str {
    match push.op {
        Op::Push { id, .. } => id,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::*;

    crate::script::judged_by_check!();

    #[test]
    fn a_delivered_and_acked_message_passes() {
        let history = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .ok(2, 20, 30, pop("q"), delivered("q", &["m1"]))
            .ok(2, 31, 40, ack("q", "m1"), Value::None)
            .ok(2, 41, 50, pop("q"), delivered("q", &[]))
            .history();
        let verdict = assert_valid(&history);
        assert_eq!(verdict.checked, 4);
        assert_eq!(
            verdict.notes,
            [
                "1 messages; 0 delivered more than once (0 extra deliveries); 0 pushes of unknown outcome delivered, 0 not"
            ]
        );
    }

    #[test]
    fn a_lost_push_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .ok(1, 11, 20, push("q", "m2"), Value::None)
            .ok(2, 30, 40, pop("q"), delivered("q", &["m1"]))
            .ok(2, 41, 50, pop("q"), delivered("q", &[]))
            .history();
        assert_finds(&history, "message m2 lost: process 1 PUSH q m2");
        assert_eq!(verdict(&history).violations.len(), 1);
    }

    #[test]
    fn an_invented_delivery_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .ok(2, 20, 30, pop("q"), delivered("q", &["m1", "m9"]))
            .history();
        assert_finds(&history, "message m9 delivered, never pushed: process 2 POP q");
    }

    #[test]
    fn a_delivery_of_a_failed_push_is_found() {
        let history = Script::new()
            .fail(1, 0, 10, push("q", "m1"))
            .ok(2, 20, 30, pop("q"), delivered("q", &["m1"]))
            .history();
        assert_finds(&history, "message m1 delivered though its push failed");
    }

    #[test]
    fn a_delivery_before_the_push_is_found() {
        let history = Script::new()
            .ok(2, 0, 5, pop("q"), delivered("q", &["m1"]))
            .ok(1, 10, 20, push("q", "m1"), Value::None)
            .history();
        assert_finds(&history, "message m1 delivered before it was pushed");
    }

    #[test]
    fn a_redelivery_after_the_ack_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .ok(2, 20, 30, pop("q"), delivered("q", &["m1"]))
            .ok(2, 31, 40, ack("q", "m1"), Value::None)
            .ok(3, 41, 50, pop("q"), delivered("q", &["m1"]))
            .history();
        assert_finds(&history, "message m1 delivered again after its ack: process 2 ACK q m1");
        // Sent before the ack completed, a second delivery is only a duplicate.
        let overlapping = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .ok(2, 20, 30, pop("q"), delivered("q", &["m1"]))
            .ok(2, 31, 40, ack("q", "m1"), Value::None)
            .ok(3, 39, 50, pop("q"), delivered("q", &["m1"]))
            .fail(3, 51, 60, ack("q", "m1"))
            .history();
        assert_valid(&overlapping);
    }

    #[test]
    fn duplicates_and_unknown_pushes_pass_and_are_counted() {
        let history = Script::new()
            .ok(1, 0, 10, push("q", "m1"), Value::None)
            .info(1, 11, 20, push("q", "m2"))
            .info(1, 21, 30, push("q", "m3"))
            .ok(2, 40, 50, pop("q"), delivered("q", &["m1", "m2"]))
            // The lease ran out without an ack: m1 comes again, from the dead letters this time.
            .ok(2, 60, 70, pop("q.dead"), delivered("q.dead", &["m1"]))
            .ok(2, 71, 80, pop("q"), delivered("q", &[]))
            .history();
        let verdict = assert_valid(&history);
        assert_eq!(
            verdict.notes,
            [
                "3 messages; 1 delivered more than once (1 extra deliveries); 1 pushes of unknown outcome delivered, 1 not"
            ]
        );
    }

    #[test]
    fn group_order_broken_is_found() {
        let history = Script::new()
            .ok(1, 0, 10, push_group("q", "a", "g"), Value::None)
            .ok(1, 11, 20, push_group("q", "b", "g"), Value::None)
            .ok(2, 30, 40, pop("q"), delivered("q", &["b"]))
            .ok(2, 41, 50, pop("q"), delivered("q", &["a"]))
            .history();
        assert_finds(&history, "queue q group g: out of order: process 1 PUSH q a GROUP g");
    }

    #[test]
    fn group_order_kept_or_unordered_passes() {
        let history = Script::new()
            .ok(1, 0, 10, push_group("q", "a", "g"), Value::None)
            .ok(1, 11, 20, push_group("q", "b", "g"), Value::None)
            // Concurrent pushes of one group may go either way.
            .ok(3, 21, 30, push_group("q", "c", "g"), Value::None)
            .ok(4, 22, 31, push_group("q", "d", "g"), Value::None)
            // Another group, and no group at all, are not ordered against this one.
            .ok(1, 21, 25, push_group("q", "x", "h"), Value::None)
            .ok(1, 26, 28, push("q", "y"), Value::None)
            .ok(2, 40, 50, pop("q"), delivered("q", &["x", "y"]))
            .ok(2, 51, 60, pop("q"), delivered("q", &["a"]))
            .ok(2, 61, 70, pop("q"), delivered("q", &["b"]))
            .ok(2, 71, 80, pop("q"), delivered("q", &["d"]))
            .ok(2, 81, 90, pop("q"), delivered("q", &["c"]))
            .history();
        assert_valid(&history);
    }
}
