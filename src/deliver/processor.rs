//! The processor: a consumer-group member on `herald.events`.
//!
//! Guarantee: at-least-once. An event's offset is stored (and later committed) only after every
//! outcome of the event — history records, dead letters — was acknowledged by Kafka, and only
//! once every earlier event of its partition is finished too ([`offsets`](super::offsets)).
//! Events run concurrently up to `processor.max_in_flight_events`; events with the same key
//! (workspace) run one after another ([`order`](super::order)). On revocation, stored offsets
//! are committed and unfinished events of the revoked partitions store nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::dedupe::Dedupe;
use super::health::Health;
use super::offsets::{Claim, OffsetTracker};
use super::order::{KeyOrder, Turn};
use super::route::{RouteOptions, Router};
use crate::history::writer::DeadLetter;
use crate::ingest::{RawRecord, decode};
use crate::kafka;
use crate::settings::Settings;

/// Keeps an offset tracker in step with the group's assignment (used by the event consumer and
/// the retry-tier consumer alike), and turns librdkafka's statistics into lag gauges.
pub struct ProcessorContext {
    pub tracker: Arc<OffsetTracker>,
    pub lag: Option<LagGauges>,
    /// Told about the events partitions this member gains and loses.
    pub dedupe: Option<Arc<Dedupe>>,
}

/// Where a consumer reports its lag.
pub struct LagGauges {
    /// `herald_consumer_lag{topic, partition}`.
    pub lag: prometheus::IntGaugeVec,
    /// For the retry consumer: tier topic → tier name, and `herald_retry_waiting_records{tier}`.
    pub tiers: HashMap<String, String>,
    pub waiting: prometheus::IntGaugeVec,
}

impl ClientContext for ProcessorContext {
    fn stats(&self, statistics: Statistics) {
        let Some(gauges) = &self.lag else { return };
        let mut waiting: HashMap<&str, i64> = HashMap::new();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let partition = partition.to_string();
                let labels = [topic.as_str(), partition.as_str()];
                if p.consumer_lag >= 0 && p.fetch_state == "active" {
                    gauges.lag.with_label_values(&labels).set(p.consumer_lag);
                    if let Some(tier) = gauges.tiers.get(topic) {
                        *waiting.entry(tier.as_str()).or_default() += p.consumer_lag;
                    }
                } else {
                    // Not owned (any more) by this replica: no stale value.
                    let _ = gauges.lag.remove_label_values(&labels);
                }
            }
        }
        for tier in gauges.tiers.values() {
            let n = waiting.get(tier.as_str()).copied().unwrap_or(0);
            gauges.waiting.with_label_values(&[tier]).set(n);
        }
    }
}

impl ConsumerContext for ProcessorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Commit what finished before the partitions move; after an involuntary loss the
            // group has moved on and a commit would be refused anyway.
            if !consumer.assignment_lost() {
                commit_stored(consumer, "commit on revocation failed");
            }
            for e in tpl.elements() {
                self.tracker.revoke(e.topic(), e.partition());
            }
            if let Some(dedupe) = &self.dedupe {
                dedupe.revoke(&partitions(tpl));
            }
            tracing::info!(partitions = tpl.count(), "partitions revoked");
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            for e in tpl.elements() {
                self.tracker.assign(e.topic(), e.partition());
            }
            if let Some(dedupe) = &self.dedupe {
                dedupe.assign(&partitions(tpl));
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

type EventConsumer = StreamConsumer<ProcessorContext>;

/// Errors that stop the processor.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] crate::history::WriteFailure),
}

struct Shared {
    consumer: Arc<EventConsumer>,
    tracker: Arc<OffsetTracker>,
    order: KeyOrder,
    router: Arc<Router>,
    max_event_bytes: usize,
}

/// Runs the processor until `shutdown` turns true (or its sender is dropped), then drains
/// in-flight events for up to `processor.shutdown_timeout_ms` and commits what finished.
pub async fn run(
    settings: &Settings,
    router: Arc<Router>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProcessorError> {
    let tracker = Arc::new(OffsetTracker::default());
    let consumer: Arc<EventConsumer> = Arc::new(
        kafka::consumer_config(settings).create_with_context(ProcessorContext {
            tracker: tracker.clone(),
            lag: Some(LagGauges {
                lag: router.metrics.consumer_lag.clone(),
                tiers: HashMap::new(),
                waiting: router.metrics.retry_waiting.clone(),
            }),
            dedupe: router.dedupe.clone(),
        })?,
    );
    tokio::select! {
        _ = router.table.wait_ready() => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    consumer.subscribe(&[&settings.topics.events])?;
    health.consuming.store(true, Ordering::Relaxed);
    tracing::info!(topic = %settings.topics.events, group = %settings.kafka.group_id, "consuming");

    let shared = Arc::new(Shared {
        consumer: consumer.clone(),
        tracker,
        order: KeyOrder::default(),
        router: router.clone(),
        max_event_bytes: settings.processor.max_event_bytes,
    });
    let permits = Arc::new(Semaphore::new(settings.processor.max_in_flight_events));
    let mut tasks = JoinSet::new();
    let flusher = tokio::spawn({
        let router = router.clone();
        let every = Duration::from_millis(settings.processor.skip_summary_interval_ms);
        async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                router.flush_skips().await;
            }
        }
    });

    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stopped(&mut shutdown) => break,
        };
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = stopped(&mut shutdown) => break,
        };
        let m = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                continue;
            }
        };
        let claim = shared.tracker.begin(m.topic(), m.partition(), m.offset());
        let raw = RawRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        };
        // Joined here, in offset order, so a key's events start in that order.
        let turn = raw.key.as_deref().map(|k| shared.order.join(k));
        tasks.spawn(process(shared.clone(), raw, claim, turn, permit));
    }

    health.consuming.store(false, Ordering::Relaxed);
    flusher.abort();
    tracing::info!(
        in_flight = shared.tracker.in_flight(),
        "shutting down: waiting for in-flight events"
    );
    let timeout = Duration::from_millis(settings.processor.shutdown_timeout_ms);
    drain_and_commit(&mut tasks, &*consumer, timeout).await;
    tracing::info!("processor stopped");
    Ok(())
}

async fn process(
    shared: Arc<Shared>,
    raw: RawRecord,
    claim: Claim,
    mut turn: Option<Turn>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let router = &shared.router;
    router.metrics.in_flight.inc();
    // Every record of a key waits for its turn, undecodable ones too: if one left the line
    // early, the next event of the key could overtake the one still in flight before it.
    if let Some(turn) = turn.as_mut() {
        turn.wait().await;
    }
    match decode(&raw, shared.max_event_bytes, Utc::now()) {
        Err(e) => {
            router
                .metrics
                .events
                .with_label_values(&["dead_lettered"])
                .inc();
            let reason = e.to_string();
            tracing::warn!(partition = raw.partition, offset = raw.offset, %reason,
                "undecodable input sent to the dead-letter topic");
            let letter = DeadLetter {
                kind: "undecodable_input",
                reason: &reason,
                source_topic: &raw.topic,
                source_partition: raw.partition,
                source_offset: raw.offset,
            };
            let original = raw.payload.as_deref().unwrap_or_default();
            router
                .writer
                .dead_letter(raw.key.as_deref(), original, letter)
                .await;
        }
        Ok(envelope) => {
            let span = tracing::info_span!("event", event_id = %envelope.event_id,
                event = %envelope.event, partition = raw.partition, offset = raw.offset);
            let options = RouteOptions {
                partition: Some(raw.partition),
                ..RouteOptions::default()
            };
            router.route(&envelope, options).instrument(span).await;
        }
    }
    if let Some(turn) = turn {
        shared.order.leave(turn);
    }
    store_finished(&shared.tracker, &claim, &*shared.consumer);
    router.metrics.in_flight.dec();
}

/// Commits the stored offsets now; having none stored is not an error.
fn commit_stored<C: ConsumerContext, K: Consumer<C>>(consumer: &K, failure: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "{failure}"),
    }
}

/// The end of a consumer loop: stop fetching, let in-flight work finish for up to `timeout`,
/// abandon the rest (its offsets stay uncommitted and it is read again by the next owner), and
/// commit what finished.
pub async fn drain_and_commit<C: Consumer<ProcessorContext>>(
    tasks: &mut JoinSet<()>,
    consumer: &C,
    timeout: Duration,
) {
    if let Ok(assigned) = consumer.assignment() {
        let _ = consumer.pause(&assigned);
    }
    let drained = tokio::time::timeout(timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            unfinished = tasks.len(),
            "shutdown timeout reached; unfinished work stays uncommitted and will be read again"
        );
        tasks.shutdown().await;
    }
    commit_stored(consumer, "final commit failed");
}

/// Marks `claim` finished and stores the partition's new position when it moved.
pub fn store_finished<C: Consumer<ProcessorContext>>(
    tracker: &OffsetTracker,
    claim: &Claim,
    consumer: &C,
) {
    tracker.finish(claim, |position| {
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(&claim.topic, claim.partition, Offset::Offset(position))
            .and_then(|()| consumer.store_offsets(&tpl));
        if let Err(e) = stored {
            // The partition was revoked meanwhile; its new owner re-reads from the last commit.
            tracing::debug!(topic = %claim.topic, partition = claim.partition, position,
                error = %e, "offset not stored");
        }
    });
}

/// Resolves when `shutdown` is true or its sender is gone.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
