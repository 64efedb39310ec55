//! No stale overwrite after a retry.
//!
//! A workspace's events share one `herald.events` partition and are delivered in offset order,
//! but a delivery that waits in a retry tier loses its place: if lesson 2's contact upsert gets
//! a 503 and lesson 3's succeeds, the retried lesson 2 would overwrite the newer progress.
//! Actions that set state name the record they overwrite, their subject
//! ([`BoundAction::subject`](crate::destinations::BoundAction::subject)). Every successful write
//! of such an action is remembered here as (workspace, connection, subject) → the event's
//! (partition, offset), and a retried write (attempt > 1) whose subject was since written by a
//! later event of the same partition is not sent: its history record is `skipped` with reason
//! `superseded: …` and `herald_deliveries_total{outcome="superseded"}` counts it. Additive
//! actions have no subject and are always sent.
//!
//! The memory is per process and bounded ([`LastWrites`], `retry.supersede_max_subjects`): a
//! subject forgotten, or written on another replica, is not known, and its retry is sent as
//! before. `docs/guarantees.md` states the promise per action.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::route::Router;
use super::settle::Delivery;
use crate::model::records::{DeliveryRecord, DeliveryStatus};
use crate::workspace::compile::CompiledRule;

/// Where an event sits in `herald.events`: a workspace's events share a partition, so within
/// one the offset says which event is later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    pub partition: i32,
    pub offset: i64,
}

impl Order {
    /// The order of `delivery`'s event; `None` when unknown (tasks written before Herald
    /// recorded the offset, replayed events).
    pub fn of(delivery: &Delivery) -> Option<Self> {
        Some(Self {
            partition: delivery.partition?,
            offset: delivery.offset?,
        })
    }
}

/// A digest of (workspace, connection, subject): fixed size, and no email held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectKey([u8; 16]);

impl SubjectKey {
    /// The key of `subject` on `connection_id` in `workspace_id`.
    pub fn new(workspace_id: &str, connection_id: &str, subject: &str) -> Self {
        let mut h = Sha256::new();
        for part in [workspace_id, connection_id, subject] {
            // Length-prefixed, so ("a", "bc") and ("ab", "c") differ.
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        let mut key = [0; 16];
        key.copy_from_slice(&h.finalize()[..16]);
        Self(key)
    }
}

/// The last successful write per subject, for at most `max` subjects; beyond that the subject
/// written longest ago is forgotten.
#[derive(Debug)]
pub struct LastWrites {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Subject → (the latest write's order, the stamp of its last note).
    writes: HashMap<SubjectKey, (Order, u64)>,
    /// Stamp → subject, oldest note first: what to forget first.
    by_age: BTreeMap<u64, SubjectKey>,
    next_stamp: u64,
}

impl LastWrites {
    /// An empty memory of at most `max` subjects (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            inner: Mutex::default(),
        }
    }

    /// Notes a successful write of `key` by the event at `order`; an earlier event's write
    /// noted after a later one's (two retries racing) does not move the mark back.
    pub fn note(&self, key: SubjectKey, order: Order) {
        let mut inner = self.lock();
        let stamp = inner.next_stamp;
        inner.next_stamp += 1;
        let kept = match inner.writes.get(&key) {
            Some(&(seen, old_stamp)) => {
                inner.by_age.remove(&old_stamp);
                if seen.partition == order.partition && seen.offset > order.offset {
                    seen
                } else {
                    order
                }
            }
            None => order,
        };
        inner.writes.insert(key, (kept, stamp));
        inner.by_age.insert(stamp, key);
        while inner.writes.len() > self.max {
            let Some((_, oldest)) = inner.by_age.pop_first() else {
                break;
            };
            inner.writes.remove(&oldest);
        }
    }

    /// The order of a successful write of `key` by an event later than `order`, if one is
    /// known. Writes from another partition are not comparable and never supersede.
    pub fn later_than(&self, key: SubjectKey, order: Order) -> Option<Order> {
        let inner = self.lock();
        let &(seen, _) = inner.writes.get(&key)?;
        (seen.partition == order.partition && seen.offset > order.offset).then_some(seen)
    }

    /// How many subjects are remembered.
    pub fn len(&self) -> usize {
        self.lock().writes.len()
    }

    /// Whether no subject is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent at every await-free step, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The key of `delivery`'s subject, when its action sets state.
fn key(rule: &CompiledRule, delivery: &Delivery) -> Option<SubjectKey> {
    let subject = rule.action.subject(&delivery.request)?;
    Some(SubjectKey::new(
        &delivery.envelope.workspace_id,
        &delivery.connection_id,
        &subject,
    ))
}

/// Remembers a delivered attempt of a state-setting action (first attempt or retry).
pub fn note_delivered(writes: &LastWrites, rule: &CompiledRule, delivery: &Delivery) {
    if let (Some(key), Some(order)) = (key(rule, delivery), Order::of(delivery)) {
        writes.note(key, order);
    }
}

/// For a retried attempt of a state-setting action whose subject a later event wrote already:
/// records it as `skipped` (reason `superseded: …`) instead of sending it, and returns `true`.
/// Returns `false`, having done nothing, when the attempt is to be made.
pub async fn skip_if_superseded(router: &Router, rule: &CompiledRule, delivery: &Delivery) -> bool {
    if delivery.attempt <= 1 {
        return false;
    }
    let (Some(key), Some(order)) = (key(rule, delivery), Order::of(delivery)) else {
        return false;
    };
    let Some(later) = router.last_writes.later_than(key, order) else {
        return false;
    };
    let reason = format!(
        "superseded: a later event (offset {} of events partition {}) already wrote this {} \
         record on connection `{}`; this older write was not sent",
        later.offset, later.partition, rule.connection.kind, delivery.connection_id
    );
    tracing::info!(delivery_id = %delivery.delivery_id, attempt = delivery.attempt,
        later_offset = later.offset, "retried write superseded; not sent");
    router
        .metrics
        .deliveries
        .with_label_values(&[&rule.connection.kind, rule.action.name(), "superseded"])
        .inc();
    let now = Utc::now();
    let record = DeliveryRecord {
        delivery_id: delivery.delivery_id.clone(),
        workspace_id: delivery.envelope.workspace_id.clone(),
        event_id: delivery.envelope.event_id.clone(),
        event: delivery.envelope.event.clone(),
        rule_id: Some(delivery.rule_id.clone()),
        connection_id: Some(delivery.connection_id.clone()),
        destination: Some(rule.connection.kind.clone()),
        action: Some(rule.action.name().to_owned()),
        status: DeliveryStatus::Skipped,
        reason: Some(reason),
        attempts: delivery.attempts.clone(),
        skipped_count: None,
        next_attempt_at: None,
        created_at: delivery.first_attempt_at,
        updated_at: now,
    };
    router.writer.history(&record, delivery.partition).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: i64) -> Order {
        Order {
            partition: 0,
            offset,
        }
    }

    fn subject(n: usize) -> SubjectKey {
        SubjectKey::new("ws", "hs", &format!("user{n}@example.com"))
    }

    #[test]
    fn a_write_by_a_later_event_supersedes_an_earlier_one_only() {
        let writes = LastWrites::new(10);
        let ada = subject(1);
        assert_eq!(writes.later_than(ada, at(2)), None, "nothing known");
        writes.note(ada, at(3));
        let cases = [
            (at(2), Some(at(3))),
            (at(3), None),
            (at(4), None),
            (
                Order {
                    partition: 1,
                    offset: 2,
                },
                None,
            ),
        ];
        for (retried, superseded_by) in cases {
            assert_eq!(
                writes.later_than(ada, retried),
                superseded_by,
                "{retried:?}"
            );
        }
        assert_eq!(
            writes.later_than(subject(2), at(2)),
            None,
            "another contact"
        );
    }

    #[test]
    fn an_older_write_noted_late_does_not_move_the_mark_back() {
        let writes = LastWrites::new(10);
        writes.note(subject(1), at(5));
        writes.note(subject(1), at(2));
        assert_eq!(writes.later_than(subject(1), at(4)), Some(at(5)));
        writes.note(subject(1), at(9));
        assert_eq!(writes.later_than(subject(1), at(8)), Some(at(9)));
    }

    #[test]
    fn subjects_are_told_apart_by_workspace_connection_and_subject() {
        let keys = [
            SubjectKey::new("ws", "hs", "a@b.io"),
            SubjectKey::new("ws2", "hs", "a@b.io"),
            SubjectKey::new("ws", "hs2", "a@b.io"),
            SubjectKey::new("ws", "hs", "c@b.io"),
            SubjectKey::new("w", "shs", "a@b.io"),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn filled_past_its_bound_it_forgets_the_subject_written_longest_ago() {
        let max = 100;
        let writes = LastWrites::new(max);
        for n in 0..max {
            writes.note(subject(n), at(10));
        }
        // Written again, subject 0 is now the most recent; subject 1 is the oldest.
        writes.note(subject(0), at(11));
        for n in max..max * 3 {
            writes.note(subject(n), at(10));
            assert!(writes.len() <= max, "{} subjects after {n}", writes.len());
        }
        assert_eq!(writes.len(), max);
        assert_eq!(writes.later_than(subject(1), at(1)), None, "forgotten");
        assert_eq!(writes.later_than(subject(max * 3 - 1), at(1)), Some(at(10)));

        let writes = LastWrites::new(max);
        for n in 0..max {
            writes.note(subject(n), at(10));
        }
        writes.note(subject(0), at(11));
        writes.note(subject(max), at(10));
        assert_eq!(writes.later_than(subject(0), at(1)), Some(at(11)), "kept");
        assert_eq!(writes.later_than(subject(1), at(1)), None, "evicted first");
    }
}
