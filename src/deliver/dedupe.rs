//! Dedupe: before a delivery is attempted, its latest state is looked up; one already
//! `delivered` is not sent again (unless the operator forces it). This makes replays and the
//! re-reads after a crash or rebalance safe.
//!
//! **Where the state lives.** `herald.deliveries` has as many partitions as `herald.events`,
//! and a delivery's history records go to the partition number its event came from (the task
//! carries it through the retry tiers and the dead-letter topic). So the member that owns
//! events partition `p` finds every delivery it could repeat in deliveries partition `p`. On
//! assignment it reads that partition from `now - processor.dedupe_window_ms` (offset by
//! timestamp, verified, else binary search) to its end, keeps following it, and holds the ids
//! (as 128-bit hashes) of deliveries whose latest record says `delivered`. An event of `p` waits
//! until `p` is loaded. Nothing is stored on local disk: restarts and rebalances rebuild the set
//! from Kafka, which is the source of truth.
//!
//! **Bounds.** A delivery leaves the set when its delivered record is older than the window
//! (default 7 days) or when its partition holds more than `processor.dedupe_max_entries`
//! (oldest first): about 80 bytes per entry. Past those bounds, and for deliveries whose
//! partition is not co-partitioned (topics created with different partition counts, where
//! dedupe is off and says so at start), Herald is at-least-once without dedupe. Retry-tier
//! attempts are not checked (a retry task exists only for a delivery that was not delivered).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::kafka;
use crate::kafka::by_time::offset_for_time;
use crate::model::records::{DeliveryRecord, DeliveryStatus};
use crate::settings::Settings;

/// How long an event waits for its partition's delivered set before going ahead without it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

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

#[derive(Debug)]
struct Partition {
    loaded: bool,
    set: DeliveredSet,
}

enum Command {
    Assign(Vec<i32>, i64),
    Revoke(Vec<i32>),
}

/// The delivered sets of the partitions this process owns, kept current by a follower thread.
pub struct Dedupe {
    topic: String,
    window: Duration,
    max_entries: usize,
    partitions: Mutex<HashMap<i32, Partition>>,
    loaded: watch::Sender<u64>,
    commands: Mutex<Sender<Command>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("topic", &self.topic)
            .field("window", &self.window)
            .finish()
    }
}

impl Dedupe {
    /// Starts the follower of `herald.deliveries`, or `None` (with the reason logged) when
    /// dedupe is off: `processor.dedupe_window_ms = 0`, or the two topics' partition counts
    /// differ so the co-partitioning it relies on does not hold.
    pub fn start(settings: &Settings) -> Result<Option<Arc<Self>>, KafkaError> {
        if settings.processor.dedupe_window_ms == 0 {
            tracing::info!("dedupe is off (processor.dedupe_window_ms = 0)");
            return Ok(None);
        }
        let reader: BaseConsumer = kafka::reader_config(settings).create()?;
        let events = kafka::partition_count(&reader, &settings.topics.events);
        let deliveries = kafka::partition_count(&reader, &settings.topics.deliveries);
        match (events, deliveries) {
            (Ok(e), Ok(d)) if e == d => {}
            (e, d) => {
                tracing::error!(events = ?e.ok(), deliveries = ?d.ok(),
                    events_topic = %settings.topics.events,
                    deliveries_topic = %settings.topics.deliveries,
                    "dedupe is OFF: it needs the deliveries topic to have as many partitions as \
                     the events topic; replays and re-reads after a crash may deliver twice");
                return Ok(None);
            }
        }
        let follower: BaseConsumer = kafka::reader_config(settings).create()?;
        let (tx, rx) = channel();
        let dedupe = Arc::new(Self {
            topic: settings.topics.deliveries.clone(),
            window: Duration::from_millis(settings.processor.dedupe_window_ms),
            max_entries: settings.processor.dedupe_max_entries,
            partitions: Mutex::default(),
            loaded: watch::channel(0).0,
            commands: Mutex::new(tx),
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::default(),
        });
        let handle = std::thread::Builder::new()
            .name("herald-dedupe".into())
            .spawn({
                let dedupe = dedupe.clone();
                move || dedupe.follow(follower, reader, rx)
            })
            .expect("spawning a thread");
        *dedupe.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(Some(dedupe))
    }

    /// Starts loading `partitions` (owned from now on) from the start of the window.
    pub fn assign(&self, partitions: &[i32]) {
        let from = Utc::now() - self.window;
        self.assign_from(partitions, from);
    }

    /// Starts loading `partitions` from the records written at or after `from`.
    pub fn assign_from(&self, partitions: &[i32], from: DateTime<Utc>) {
        {
            let mut owned = self.lock();
            for p in partitions {
                owned.insert(
                    *p,
                    Partition {
                        loaded: false,
                        set: DeliveredSet::default(),
                    },
                );
            }
        }
        self.send(Command::Assign(
            partitions.to_vec(),
            from.timestamp_millis(),
        ));
    }

    /// Forgets `partitions` (no longer owned).
    pub fn revoke(&self, partitions: &[i32]) {
        {
            let mut owned = self.lock();
            for p in partitions {
                owned.remove(p);
            }
        }
        self.send(Command::Revoke(partitions.to_vec()));
    }

    /// Whether the latest state of `delivery_id` (of events partition `partition`) is
    /// `delivered`. Waits until the partition is loaded (at most a minute, then answers `false`
    /// with a warning); `false` for a partition this process does not own.
    pub async fn is_delivered(&self, partition: i32, delivery_id: &str) -> bool {
        let id = key(delivery_id);
        let mut loaded = self.loaded.subscribe();
        let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
        loop {
            match self.lock().get(&partition) {
                None => return false,
                Some(p) if p.loaded => return p.set.contains(id),
                Some(_) => {}
            }
            let changed = tokio::time::timeout_at(deadline, loaded.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                tracing::warn!(
                    partition,
                    "delivery history of the partition not loaded \
                    within a minute; delivering without the dedupe check"
                );
                return false;
            }
        }
    }

    /// Notes a history record this process wrote, ahead of reading it back.
    pub fn note(&self, partition: i32, delivery_id: &str, status: DeliveryStatus, at: i64) {
        let oldest = self.oldest_ms();
        if let Some(p) = self.lock().get_mut(&partition) {
            apply(
                &mut p.set,
                key(delivery_id),
                status,
                at,
                oldest,
                self.max_entries,
            );
        }
    }

    /// Stops the follower thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = handle.join();
        }
    }

    fn oldest_ms(&self) -> i64 {
        (Utc::now() - self.window).timestamp_millis()
    }

    fn send(&self, command: Command) {
        let _ = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(command);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Partition>> {
        self.partitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mark_loaded(&self, partition: i32) {
        if let Some(p) = self.lock().get_mut(&partition) {
            p.loaded = true;
            tracing::info!(
                partition,
                delivered = p.set.len(),
                "delivery history loaded for dedupe"
            );
        }
        self.loaded.send_modify(|generation| *generation += 1);
    }

    /// Applies one history record read from partition `p`.
    fn read(&self, p: i32, payload: Option<&[u8]>) {
        if let Some(record) = payload.and_then(|v| serde_json::from_slice::<DeliveryRecord>(v).ok())
        {
            let at = record.updated_at.timestamp_millis();
            self.note(p, &record.delivery_id, record.status, at);
        }
    }

    /// The follower thread: applies assignment changes, reads the owned partitions, and marks
    /// each loaded when it reaches the end it had at assignment.
    fn follow(&self, consumer: BaseConsumer, resolver: BaseConsumer, commands: Receiver<Command>) {
        let mut follower = Follower {
            dedupe: self,
            consumer,
            resolver,
            assigned: HashSet::new(),
            loading: HashMap::new(),
        };
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(command) = commands.try_recv() {
                match command {
                    Command::Assign(partitions, from) => partitions
                        .into_iter()
                        .for_each(|p| follower.assign(p, from)),
                    Command::Revoke(partitions) => {
                        partitions.into_iter().for_each(|p| follower.revoke(p))
                    }
                }
            }
            match follower.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let (p, offset) = (m.partition(), m.offset());
                    self.read(p, m.payload());
                    // The message borrows the consumer; release it before the follower moves on.
                    drop(m);
                    follower.reached(p, offset);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "delivery history fetch failed"),
                None => follower.check_positions(),
            }
        }
    }
}

/// The follower thread's view of the history partitions it reads.
struct Follower<'a> {
    dedupe: &'a Dedupe,
    consumer: BaseConsumer,
    /// Finds start offsets by time, apart from `consumer` so its assignment stays put.
    resolver: BaseConsumer,
    assigned: HashSet<i32>,
    /// partition → high watermark at assignment, while loading.
    loading: HashMap<i32, i64>,
}

impl Follower<'_> {
    /// Starts reading partition `p` from the first record at or after `from` ms.
    fn assign(&mut self, p: i32, from: i64) {
        let topic = &self.dedupe.topic;
        if self.assigned.remove(&p) {
            unassign(&self.consumer, topic, p);
        }
        match self.start_offset(p, from) {
            Ok((start, high)) if start < high => match self.add(p, Offset::Offset(start)) {
                Ok(()) => {
                    self.loading.insert(p, high);
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e,
                        "cannot follow delivery history; dedupe off for it");
                    self.dedupe.mark_loaded(p);
                }
            },
            Ok(_) => {
                // Nothing in the window yet; follow new records from the end.
                let _ = self.add(p, Offset::End);
                self.dedupe.mark_loaded(p);
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e,
                    "cannot read delivery history; dedupe off for the partition");
                self.dedupe.mark_loaded(p);
            }
        }
    }

    fn add(&mut self, p: i32, offset: Offset) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.dedupe.topic, p, offset)?;
        self.consumer.incremental_assign(&tpl)?;
        self.assigned.insert(p);
        Ok(())
    }

    fn revoke(&mut self, p: i32) {
        self.loading.remove(&p);
        if self.assigned.remove(&p) {
            unassign(&self.consumer, &self.dedupe.topic, p);
        }
    }

    /// Marks `p` loaded once `offset` reaches the end it had at assignment.
    fn reached(&mut self, p: i32, offset: i64) {
        if self.loading.get(&p).is_some_and(|high| offset + 1 >= *high) {
            self.loading.remove(&p);
            self.dedupe.mark_loaded(p);
        }
    }

    /// With nothing to read, a loading partition may still be done: compaction may have
    /// removed its last records, and the position tells.
    fn check_positions(&mut self) {
        if self.loading.is_empty() {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let reached = match (e.offset(), self.loading.get(&e.partition())) {
                (Offset::Offset(o), Some(high)) => o >= *high,
                _ => false,
            };
            if reached {
                self.loading.remove(&e.partition());
                self.dedupe.mark_loaded(e.partition());
            }
        }
    }

    /// Where to start reading partition `p` for records at or after `from` ms, and its end.
    fn start_offset(&self, p: i32, from: i64) -> Result<(i64, i64), KafkaError> {
        let topic = &self.dedupe.topic;
        let (_, high) = self
            .resolver
            .fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let (start, _) = offset_for_time(&self.resolver, topic, p, from)?;
        Ok((start, high))
    }
}

fn apply(
    set: &mut DeliveredSet,
    id: u128,
    status: DeliveryStatus,
    at: i64,
    oldest: i64,
    max: usize,
) {
    if status == DeliveryStatus::Delivered {
        set.insert(id, at, oldest, max);
    } else {
        set.remove(id);
    }
}

fn unassign(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.incremental_unassign(&tpl) {
        tracing::debug!(partition, error = %e, "unassigning a history partition failed");
    }
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
