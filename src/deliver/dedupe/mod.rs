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
//! (default 7 days) or when its partition holds more than its share of
//! `processor.dedupe_max_entries` (the process's bound, split evenly by the partitions it owns;
//! oldest first): about 100 bytes per entry. Past those bounds, and for deliveries whose
//! partition is not co-partitioned (topics created with different partition counts, where
//! dedupe is off and says so at start), Herald is at-least-once without dedupe. Retry-tier
//! attempts are not checked (a retry task exists only for a delivery that was not delivered).

mod follower;
mod set;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tokio::sync::watch;

pub use self::set::{DeliveredSet, key};

use crate::history::codec::HistoryCodec;
use crate::kafka;
use crate::model::records::DeliveryStatus;
use crate::settings::Settings;

/// How long an event waits for its partition's delivered set before going ahead without it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Partition {
    loaded: bool,
    /// Its events went ahead before it loaded (the wait timed out): checked against a part.
    degraded: bool,
    /// When the partition's events stop waiting for it to load, whether it has or not.
    deadline: tokio::time::Instant,
    set: DeliveredSet,
}

enum Command {
    Assign(Vec<i32>, i64),
    Revoke(Vec<i32>),
}

/// The delivered sets of the partitions this process owns, kept current by a follower thread.
pub struct Dedupe {
    topic: String,
    /// Reads history records in either format.
    codec: HistoryCodec,
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
            codec: HistoryCodec::new(settings),
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
                move || follower::run(&dedupe, follower, reader, rx)
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
            let deadline = tokio::time::Instant::now() + LOAD_TIMEOUT;
            let mut owned = self.lock();
            for p in partitions {
                owned.insert(
                    *p,
                    Partition {
                        loaded: false,
                        degraded: false,
                        deadline,
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
    /// `delivered`. Waits until the partition is loaded, at most a minute after it was
    /// assigned; from then on, loaded or not, its events go ahead at once, checked against the
    /// part loaded so far (a warning says so, once). `false` for a partition this process
    /// does not own.
    pub async fn is_delivered(&self, partition: i32, delivery_id: &str) -> bool {
        let id = key(delivery_id);
        let mut loaded = self.loaded.subscribe();
        loop {
            let deadline = match self.lock().get_mut(&partition) {
                None => return false,
                Some(p) if p.loaded => return p.set.contains(id),
                Some(p) if tokio::time::Instant::now() >= p.deadline => {
                    // Once per partition, not per delivery: its events stop waiting from now on
                    // and are checked against what has loaded so far.
                    p.loaded = true;
                    p.degraded = true;
                    tracing::warn!(
                        partition,
                        loaded = p.set.len(),
                        "delivery history of the partition not loaded within a minute; its \
                        events go ahead, checked only against the part loaded so far"
                    );
                    return p.set.contains(id);
                }
                Some(p) => p.deadline,
            };
            // Woken by any partition's load; the deadline is re-checked above.
            let _ = tokio::time::timeout_at(deadline, loaded.changed()).await;
        }
    }

    /// Owned partitions whose events go ahead before their delivery history loaded (the wait
    /// for it timed out), checked only against the part loaded so far.
    pub fn degraded(&self) -> usize {
        self.lock().values().filter(|p| p.degraded).count()
    }

    /// Notes a history record this process wrote, ahead of reading it back.
    pub fn note(&self, partition: i32, delivery_id: &str, status: DeliveryStatus, at: i64) {
        let oldest = self.oldest_ms();
        let mut partitions = self.lock();
        // The bound is the process's, shared evenly by the partitions it owns, so memory does
        // not grow with the assignment (a replica taking over a failed one's partitions).
        let per_partition = self.max_entries / partitions.len().max(1);
        if let Some(p) = partitions.get_mut(&partition) {
            apply(
                &mut p.set,
                key(delivery_id),
                status,
                at,
                oldest,
                per_partition,
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
            p.degraded = false;
            tracing::info!(
                partition,
                delivered = p.set.len(),
                "delivery history loaded for dedupe"
            );
        }
        self.loaded.send_modify(|generation| *generation += 1);
    }

    /// Applies one history record read from partition `p`. An Avro record whose writer schema
    /// the registry cannot give now waits for it (the partition does not load past it).
    fn read(&self, p: i32, payload: Option<&[u8]>) {
        let stop = || self.stop.load(Ordering::Relaxed);
        if let Some(record) = payload.and_then(|v| self.codec.decode_record_waiting(v, stop).ok()) {
            let at = record.updated_at.timestamp_millis();
            self.note(p, &record.delivery_id, record.status, at);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dedupe() -> Dedupe {
        Dedupe {
            topic: "herald.deliveries".into(),
            codec: HistoryCodec::new(&Settings::defaults()),
            window: Duration::from_secs(3600),
            max_entries: 100,
            partitions: Mutex::default(),
            loaded: watch::channel(0).0,
            // No follower: the partition never loads.
            commands: Mutex::new(channel().0),
            stop: Arc::new(AtomicBool::new(false)),
            thread: Mutex::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_that_does_not_load_costs_one_wait_not_one_per_delivery() {
        let dedupe = dedupe();
        dedupe.assign(&[3]);
        let start = tokio::time::Instant::now();
        assert!(!dedupe.is_delivered(3, "dl_a").await);
        assert_eq!(
            start.elapsed(),
            LOAD_TIMEOUT,
            "the first delivery waits for the load"
        );

        let at = tokio::time::Instant::now();
        dedupe.note(
            3,
            "dl_b",
            DeliveryStatus::Delivered,
            Utc::now().timestamp_millis(),
        );
        assert!(!dedupe.is_delivered(3, "dl_c").await);
        assert!(
            dedupe.is_delivered(3, "dl_b").await,
            "checked against what has loaded"
        );
        assert_eq!(at.elapsed(), Duration::ZERO, "later deliveries do not wait");
        assert!(
            !dedupe.is_delivered(7, "dl_a").await,
            "a partition not owned"
        );
    }

    #[test]
    fn the_bound_is_the_process_s_shared_by_its_partitions() {
        let dedupe = dedupe(); // max_entries: 100
        dedupe.assign(&[0, 1, 2, 3]);
        let now = Utc::now().timestamp_millis();
        for p in 0..4 {
            for i in 0..1000 {
                dedupe.note(p, &format!("dl_{p}_{i}"), DeliveryStatus::Delivered, now);
            }
        }
        let sizes: Vec<usize> = (0..4).map(|p| dedupe.lock()[&p].set.len()).collect();
        assert_eq!(sizes, [25, 25, 25, 25], "each partition keeps its share");
        let set = &dedupe.lock()[&3].set;
        assert!(set.contains(key("dl_3_999")), "the newest stay");
        assert!(!set.contains(key("dl_3_0")), "the oldest go first");
    }
}
