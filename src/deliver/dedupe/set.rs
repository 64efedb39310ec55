//! The delivered ids of one partition: 128-bit hashes of delivery ids, bounded by age and count.

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

/// The delivered ids of one partition, bounded by age and count.
#[derive(Debug, Default)]
pub struct DeliveredSet {
    /// id hash → time (ms) of the delivered record.
    delivered: HashMap<u128, i64>,
    /// Insertions in order, for eviction; an entry whose time no longer matches the map is
    /// stale and skipped.
    order: VecDeque<(i64, u128)>,
}

impl DeliveredSet {
    /// Notes that `id` was delivered at `at_ms`, then evicts what is older than `oldest_ms` or
    /// beyond `max_entries`.
    pub fn insert(&mut self, id: u128, at_ms: i64, oldest_ms: i64, max_entries: usize) {
        if at_ms >= oldest_ms && self.delivered.insert(id, at_ms) != Some(at_ms) {
            self.order.push_back((at_ms, id));
        }
        self.evict(oldest_ms, max_entries);
    }

    /// Notes that `id`'s latest state is not `delivered`.
    pub fn remove(&mut self, id: u128) {
        self.delivered.remove(&id);
    }

    pub fn contains(&self, id: u128) -> bool {
        self.delivered.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.delivered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.delivered.is_empty()
    }

    fn evict(&mut self, oldest_ms: i64, max_entries: usize) {
        let max = max_entries.max(1);
        while let Some(&(at, id)) = self.order.front() {
            let live = self.delivered.get(&id) == Some(&at);
            if live && at >= oldest_ms && self.delivered.len() <= max {
                break;
            }
            self.order.pop_front();
            if live {
                self.delivered.remove(&id);
            }
        }
        // Entries superseded in the middle are dropped once they are as many as the live ones.
        if self.order.len() > 2 * max {
            let delivered = &self.delivered;
            self.order.retain(|(at, id)| delivered.get(id) == Some(at));
        }
    }
}

/// The set key of a delivery id.
pub fn key(delivery_id: &str) -> u128 {
    let digest = Sha256::digest(delivery_id.as_bytes());
    u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_set_keeps_the_latest_state_within_its_bounds() {
        let mut set = DeliveredSet::default();
        set.insert(1, 1_000, 0, 10);
        assert!(set.contains(1));
        set.remove(1);
        assert!(!set.contains(1), "a later non-delivered state wins");
        set.insert(1, 2_000, 0, 10);
        assert!(set.contains(1), "delivered again (forced)");

        // Older than the window: evicted, and never admitted.
        set.insert(2, 3_000, 2_500, 10);
        assert!(!set.contains(1) && set.contains(2));
        set.insert(3, 100, 2_500, 10);
        assert!(!set.contains(3));

        // Count bound: the oldest go first.
        let mut set = DeliveredSet::default();
        for id in 0..100u128 {
            set.insert(id, id as i64, 0, 10);
        }
        assert_eq!(set.len(), 10);
        assert!(set.contains(99) && set.contains(90) && !set.contains(89));
        // Re-inserting one id many times does not grow the set past the bound.
        for _ in 0..50 {
            set.insert(95, 200, 0, 10);
        }
        assert!(set.len() <= 10 && set.contains(95));
        assert!(set.order.len() <= 20);
    }

    #[test]
    fn keys_differ_per_delivery() {
        assert_ne!(key("dl_a"), key("dl_b"));
        assert_eq!(key("dl_a"), key("dl_a"));
    }
}
