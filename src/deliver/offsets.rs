//! Ordered offset tracking. Events of one partition finish out of order (deliveries of
//! different workspaces run concurrently), but the committed offset may only move past an
//! event once it and every event before it are finished: the stored position is always the
//! lowest offset still in flight, or one past the last offset seen when nothing is.
//!
//! The tracker follows the group's assignment (the consumer context tells it), so it also tells
//! whether a claim still belongs to the current assignment of its partition, and wakes whoever
//! waits for the assignment to change.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// In-flight offsets of one partition.
#[derive(Debug, Default)]
struct PartitionOffsets {
    generation: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset begun.
    next: Option<i64>,
    /// The last position handed out for storing.
    stored: Option<i64>,
}

impl PartitionOffsets {
    fn position(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }
}

/// A claim on one offset, returned by [`OffsetTracker::begin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    generation: u64,
}

/// A topic and partition.
type Key = (Arc<str>, i32);

/// The in-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: Mutex<HashMap<Key, PartitionOffsets>>,
    generations: Mutex<u64>,
    changed: Notify,
}

impl OffsetTracker {
    /// Starts tracking `partition` afresh (on assignment). Claims made before are void.
    pub fn assign(&self, topic: &str, partition: i32) {
        let generation = self.next_generation();
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        parts.insert(
            (topic.into(), partition),
            PartitionOffsets {
                generation,
                ..Default::default()
            },
        );
        drop(parts);
        self.changed.notify_one();
    }

    /// Stops tracking `partition` (on revocation); its unfinished claims will store nothing.
    pub fn revoke(&self, topic: &str, partition: i32) {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        parts.remove(&(Arc::from(topic), partition));
        drop(parts);
        self.changed.notify_one();
    }

    /// Resolves once a partition was assigned or revoked since the last call returned (or since
    /// the tracker was made): the caller then compares its state with the assignment.
    pub async fn assignment_changed(&self) {
        self.changed.notified().await;
    }

    /// Whether `claim` was made in the current assignment of its partition: false once the
    /// partition was revoked, even if it was assigned again since.
    pub fn is_current(&self, claim: &Claim) -> bool {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        parts
            .get(&(claim.topic.clone(), claim.partition))
            .is_some_and(|p| p.generation == claim.generation)
    }

    /// Records that the event at `offset` is being processed.
    pub fn begin(&self, topic: &str, partition: i32, offset: i64) -> Claim {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let topic: Arc<str> = parts
            .keys()
            .find(|(t, _)| &**t == topic)
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| topic.into());
        let p = parts
            .entry((topic.clone(), partition))
            .or_insert_with(|| PartitionOffsets {
                generation: self.next_generation(),
                ..Default::default()
            });
        p.in_flight.insert(offset);
        // Until the first event finishes, the group's position is this first offset already.
        p.stored.get_or_insert(offset);
        p.next = Some(p.next.map_or(offset + 1, |n| n.max(offset + 1)));
        Claim {
            topic,
            partition,
            offset,
            generation: p.generation,
        }
    }

    /// Records that the claimed event is finished. When the partition's position moved forward,
    /// calls `store` with it (the next offset to read) while still holding the lock, so two
    /// finishing events can never store positions out of order. Returns the stored position.
    pub fn finish(&self, claim: &Claim, store: impl FnOnce(i64)) -> Option<i64> {
        let mut parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let p = parts.get_mut(&(claim.topic.clone(), claim.partition))?;
        if p.generation != claim.generation {
            return None;
        }
        p.in_flight.remove(&claim.offset);
        let position = p.position()?;
        if p.stored.is_some_and(|s| s >= position) {
            return None;
        }
        p.stored = Some(position);
        store(position);
        Some(position)
    }

    /// Number of events in flight across all partitions.
    pub fn in_flight(&self) -> usize {
        let parts = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        parts.values().map(|p| p.in_flight.len()).sum()
    }

    fn next_generation(&self) -> u64 {
        let mut g = self.generations.lock().unwrap_or_else(|p| p.into_inner());
        *g += 1;
        *g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_waits_for_the_lowest_unfinished_offset() {
        let t = OffsetTracker::default();
        t.assign("t", 0);
        let a = t.begin("t", 0, 10);
        let b = t.begin("t", 0, 11);
        let c = t.begin("t", 0, 12);
        assert_eq!(t.finish(&c, |_| ()), None, "10 and 11 still in flight");
        assert_eq!(t.finish(&b, |_| ()), None);
        assert_eq!(
            t.finish(&a, |_| ()),
            Some(13),
            "all done: next offset to read"
        );
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn position_moves_in_steps_as_the_head_finishes() {
        let t = OffsetTracker::default();
        let a = t.begin("t", 3, 0);
        let b = t.begin("t", 3, 1);
        let c = t.begin("t", 3, 2);
        assert_eq!(t.finish(&a, |_| ()), Some(1));
        assert_eq!(t.finish(&c, |_| ()), None);
        assert_eq!(t.finish(&b, |_| ()), Some(3));
    }

    #[test]
    fn claims_from_before_a_revocation_store_nothing() {
        let t = OffsetTracker::default();
        t.assign("t", 1);
        let old = t.begin("t", 1, 5);
        t.revoke("t", 1);
        t.assign("t", 1);
        let new = t.begin("t", 1, 5);
        assert!(!t.is_current(&old) && t.is_current(&new));
        assert_eq!(t.finish(&old, |_| ()), None, "stale claim");
        assert_eq!(t.finish(&new, |_| ()), Some(6));
    }

    #[test]
    fn partitions_are_independent() {
        let t = OffsetTracker::default();
        let slow = t.begin("t", 0, 0);
        let fast = t.begin("t", 1, 0);
        assert_eq!(t.finish(&fast, |_| ()), Some(1));
        assert_eq!(t.finish(&slow, |_| ()), Some(1));
    }
}
