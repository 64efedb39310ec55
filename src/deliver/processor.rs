//! The processor: a consumer-group member on `herald.events`.
//!
//! Guarantee: at-least-once. An event's offset is stored (and later committed) only after every
//! outcome of the event — history records, dead letters — was acknowledged by Kafka, and only
//! once every earlier event of its partition is finished too ([`offsets`](super::offsets)).
//! On revocation, stored offsets are committed and unfinished events of the revoked partitions
//! store nothing.
//!
//! Isolation: each record is decoded and planned as it arrives, and each of its deliveries
//! joins the line of its connection (a workspace's connection), so deliveries to one
//! connection run one after another in offset order while every other connection goes on
//! ([`order`](super::order)). A line holds at most `processor.max_queued_per_connection`
//! deliveries; beyond that a delivery goes to the first retry tier without a call, so a slow
//! or hanging connection holds at most that many places of the in-flight window
//! (`processor.max_in_flight_events` records). A dead connection's circuit breaker
//! ([`breaker`](super::breaker)) opens after a few failures, and its line then empties without
//! calls. When the window is full the consumer pauses fetching but keeps polling, so it is
//! never evicted from its group. A panic while processing a record or a delivery (a bug) is
//! caught: the record or delivery goes to the dead-letter topic and the partition moves on.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use futures::future::join_all;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Message, Offset, Statistics, TopicPartitionList};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::dedupe::Dedupe;
use super::health::Health;
use super::offsets::{Claim, OffsetTracker};
use super::order::Lines;
use super::route::{Lane, Plan, Planned, RouteOptions, Router};
use super::schemas;
use crate::history::skips::SkipReason;
use crate::history::writer::DeadLetter;
use crate::ingest::{Decoder, DecoderSetupError, RawRecord, headers_of};
use crate::kafka;
use crate::model::records::EventEnvelope;
use crate::settings::Settings;
use crate::workspace::compile::CompiledWorkspace;

/// Keeps an offset tracker in step with the group's assignment (used by the event consumer and
/// the retry-tier consumer alike), and turns librdkafka's statistics into lag gauges.
pub struct ProcessorContext {
    pub tracker: Arc<OffsetTracker>,
    pub lag: Option<LagGauges>,
    /// Told about the events partitions this member gains and loses.
    pub dedupe: Option<Arc<Dedupe>>,
    /// The topic whose partitions dedupe follows.
    pub events_topic: String,
    /// Told the consumer's total lag, for the liveness check (event consumer only).
    pub health: Option<Arc<Health>>,
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
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let partition = partition.to_string();
                let labels = [topic.as_str(), partition.as_str()];
                if p.consumer_lag >= 0 && p.fetch_state == "active" {
                    gauges.lag.with_label_values(&labels).set(p.consumer_lag);
                    total += p.consumer_lag;
                    if let Some(tier) = gauges.tiers.get(topic) {
                        *waiting.entry(tier.as_str()).or_default() += p.consumer_lag;
                    }
                } else {
                    // Not owned (any more) by this replica: no stale value.
                    let _ = gauges.lag.remove_label_values(&labels);
                }
            }
        }
        if let Some(health) = &self.health {
            health.lag_is(total);
        }
        for tier in gauges.tiers.values() {
            let n = waiting.get(tier.as_str()).copied().unwrap_or(0);
            gauges.waiting.with_label_values(&[tier]).set(n);
        }
    }
}

impl ConsumerContext for ProcessorContext {
    /// rdkafka's own rebalance handling, unless the consumer group has already ended: librdkafka
    /// then drops a commit or (un)assign call without ever answering it, and the call would wait
    /// for ever. That happens when a revocation is still queued as the consumer closes.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if consumer.closed() {
            tracing::debug!(
                partitions = tpl.count(),
                "rebalance after the group ended; ignored"
            );
            return;
        }
        let rebalance = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(tpl),
            other => {
                let code = RDKafkaErrorCode::from(other);
                tracing::warn!(error = %code, "rebalance failed");
                Rebalance::Error(KafkaError::Rebalance(code))
            }
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let done = match (&rebalance, cooperative) {
            (Rebalance::Assign(tpl), true) => consumer.incremental_assign(tpl),
            (Rebalance::Assign(tpl), false) => consumer.assign(tpl),
            (_, true) => consumer.incremental_unassign(tpl),
            (_, false) => consumer.unassign(),
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "applying a rebalance failed");
        }
        self.post_rebalance(consumer, &rebalance);
    }

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
                dedupe.revoke(&partitions(tpl, &self.events_topic));
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
                dedupe.assign(&partitions(tpl, &self.events_topic));
            }
            tracing::info!(partitions = tpl.count(), "partitions assigned");
        }
    }
}

/// The partitions of `topic` in `tpl` (dedupe follows `herald.events` only: other input topics
/// are not co-partitioned with the history).
fn partitions(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements()
        .iter()
        .filter(|e| e.topic() == topic)
        .map(|e| e.partition())
        .collect()
}

type EventConsumer = StreamConsumer<ProcessorContext>;

/// Errors that stop the processor.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Write(#[from] crate::history::WriteFailure),
    #[error(transparent)]
    Input(#[from] DecoderSetupError),
}

struct Shared {
    consumer: Arc<EventConsumer>,
    tracker: Arc<OffsetTracker>,
    router: Arc<Router>,
    health: Arc<Health>,
    /// One line per workspace connection.
    lines: Lines,
    decoder: Decoder,
    events_topic: String,
}

/// An input record, decoded and planned, with each delivery's place in its connection's line.
enum Work {
    /// Goes to the dead-letter topic as is.
    Dead {
        raw: RawRecord,
        kind: &'static str,
        reason: String,
    },
    Skip {
        envelope: EventEnvelope,
        reason: SkipReason,
        detail: String,
    },
    Deliver {
        envelope: EventEnvelope,
        workspace: Arc<CompiledWorkspace>,
        deliveries: Vec<(Planned, Lane)>,
    },
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
            events_topic: settings.topics.events.clone(),
            health: Some(health.clone()),
        })?,
    );
    tokio::select! {
        _ = router.table.wait_ready() => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    let decoder = Decoder::new(settings)?;
    // Topics of producers' own records (Confluent wire format, `ingest.topics`) are read too.
    let mut topics = vec![settings.topics.events.as_str()];
    topics.extend(decoder.mapped_topics());
    consumer.subscribe(&topics)?;
    health.consuming.store(true, Ordering::Relaxed);
    tracing::info!(topic = %settings.topics.events, group = %settings.kafka.group_id, "consuming");

    let shared = Arc::new(Shared {
        consumer: consumer.clone(),
        tracker,
        router: router.clone(),
        health: health.clone(),
        lines: Lines::new(
            settings.processor.max_queued_per_connection,
            settings.processor.max_queued_per_workspace,
        ),
        decoder,
        events_topic: settings.topics.events.clone(),
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

    let mut overflow = Vec::new();
    loop {
        while tasks.try_join_next().is_some() {}
        // Records that arrived while fetching was paused are taken beyond the window.
        let mut stopping = false;
        for m in std::mem::take(&mut overflow) {
            // A record that waited for its writer schema keeps its place: records that arrive
            // meanwhile join `overflow` behind it.
            if !schemas::fetch_before_begin(
                &shared.decoder,
                &consumer,
                &m,
                &mut overflow,
                &health,
                &mut shutdown,
            )
            .await
            {
                stopping = true;
                break;
            }
            let work = begin(&shared, m);
            tasks.spawn(process(shared.clone(), work.0, work.1, None));
        }
        if stopping {
            break;
        }
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                match wait_for_room(&consumer, &permits, &mut overflow, &mut shutdown).await {
                    Some(permit) => permit,
                    None => break,
                }
            }
        };
        let message = tokio::select! {
            m = consumer.recv() => m,
            _ = stopped(&mut shutdown) => break,
        };
        let m = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                continue;
            }
        };
        if !schemas::fetch_before_begin(
            &shared.decoder,
            &consumer,
            &m,
            &mut overflow,
            &health,
            &mut shutdown,
        )
        .await
        {
            break;
        }
        let (work, claim) = begin(&shared, m);
        tasks.spawn(process(shared.clone(), work, claim, Some(permit)));
    }

    health.consuming.store(false, Ordering::Relaxed);
    flusher.abort();
    tracing::info!(
        in_flight = shared.tracker.in_flight(),
        "shutting down: waiting for in-flight events"
    );
    finish(&mut tasks, &consumer, settings).await;
    tracing::info!("processor stopped");
    Ok(())
}

/// How long a full in-flight window is waited for before fetching is paused. Under load the
/// window fills and frees many times a second; pausing each time would cost more than it saves:
/// librdkafka drops what it prefetched for a paused partition, and notices a resume only when
/// its fetcher next wakes, up to a second later (measured with `herald bench`: a stall of about
/// one second after every resume). Meanwhile the consumer is not polled, which delays a
/// rebalance by at most this long, and librdkafka's prefetch stays within its own bounds
/// (`queued.min.messages`, `queued.max.messages.kbytes`).
pub(super) const PAUSE_AFTER: Duration = Duration::from_millis(200);

/// Waits for a place in the in-flight window: first for [`PAUSE_AFTER`] without polling, then
/// with fetching paused, polling all the while so the consumer stays in its group however long
/// the wait (`max.poll.interval.ms`). Records already on their way when fetching paused are
/// kept in `overflow`, not lost. `None` on shutdown.
async fn wait_for_room(
    consumer: &EventConsumer,
    permits: &Arc<Semaphore>,
    overflow: &mut Vec<OwnedMessage>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        p = tokio::time::timeout(PAUSE_AFTER, permits.clone().acquire_owned()) => {
            if let Ok(p) = p {
                return p.ok();
            }
        }
        _ = stopped(shutdown) => return None,
    }
    let pause = |consumer: &EventConsumer| {
        if let Ok(assigned) = consumer.assignment() {
            let _ = consumer.pause(&assigned);
        }
    };
    pause(consumer);
    tracing::debug!("in-flight window full: fetching paused");
    let permit = loop {
        tokio::select! {
            p = permits.clone().acquire_owned() => break p.ok(),
            m = consumer.recv() => match m {
                Ok(m) => {
                    overflow.push(m.detach());
                    pause(consumer); // a partition assigned meanwhile is paused too
                }
                Err(e) => tracing::warn!(error = %e, "consume error"),
            },
            _ = stopped(shutdown) => break None,
        }
    };
    if let Ok(assigned) = consumer.assignment() {
        let _ = consumer.resume(&assigned);
    }
    permit
}

/// Claims the record's offset and prepares its work, in arrival order: decoded, planned, and
/// each delivery given its place in its connection's line. A panic here (a bug) sends the
/// record to the dead-letter topic instead of losing it or stopping the partition.
fn begin(shared: &Shared, m: OwnedMessage) -> (Work, Claim) {
    let claim = shared.tracker.begin(m.topic(), m.partition(), m.offset());
    let raw = RawRecord {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        headers: headers_of(m.headers()),
    };
    let work = match std::panic::catch_unwind(AssertUnwindSafe(|| prepare(shared, &raw))) {
        Ok(work) => work,
        Err(panic) => {
            shared.router.metrics.panics.inc();
            let reason = format!(
                "internal error while processing: {}",
                panic_message(&*panic)
            );
            tracing::error!(partition = raw.partition, offset = raw.offset, %reason, "panic");
            Work::Dead {
                raw,
                kind: "processing_panic",
                reason,
            }
        }
    };
    (work, claim)
}

fn prepare(shared: &Shared, raw: &RawRecord) -> Work {
    let envelope = match shared.decoder.decode(raw, Utc::now()) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Work::Dead {
                raw: raw.clone(),
                kind: "undecodable_input",
                reason: e.to_string(),
            };
        }
    };
    match shared.router.plan(&envelope, None) {
        Plan::Skip { reason, detail } => Work::Skip {
            envelope,
            reason,
            detail,
        },
        Plan::Deliver {
            workspace,
            deliveries,
        } => {
            let deliveries = deliveries
                .into_iter()
                .map(|planned| {
                    let joined = shared
                        .lines
                        .join(&envelope.workspace_id, &planned.connection_id);
                    let lane = match joined {
                        Ok(turn) => Lane::Turn(turn),
                        Err(full) => Lane::Full(full),
                    };
                    (planned, lane)
                })
                .collect();
            Work::Deliver {
                envelope,
                workspace,
                deliveries,
            }
        }
    }
}

async fn process(
    shared: Arc<Shared>,
    work: Work,
    claim: Claim,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let router = &shared.router;
    router.metrics.in_flight.inc();
    match work {
        Work::Dead { raw, kind, reason } => {
            router
                .metrics
                .events
                .with_label_values(&["dead_lettered"])
                .inc();
            tracing::warn!(partition = raw.partition, offset = raw.offset, %reason,
                "input record sent to the dead-letter topic");
            let letter = DeadLetter {
                kind,
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
        Work::Skip {
            envelope,
            reason,
            detail,
        } => router.skip(&envelope, reason, &detail).await,
        Work::Deliver {
            envelope,
            workspace,
            deliveries,
        } => {
            router.metrics.events.with_label_values(&["routed"]).inc();
            let span = tracing::info_span!("event", event_id = %envelope.event_id,
                event = %envelope.event, partition = claim.partition, offset = claim.offset);
            // The coordinates order a workspace's writes and place its history next to its
            // events; only `herald.events` is co-partitioned with the history topic.
            let events = *claim.topic == *shared.events_topic;
            let options = RouteOptions {
                partition: events.then_some(claim.partition),
                offset: events.then_some(claim.offset),
                ..RouteOptions::default()
            };
            let deliveries = deliveries.into_iter().map(|(planned, lane)| {
                let rule_id = planned.rule_id.clone();
                let delivery = router.deliver(&workspace, planned, &envelope, options, lane);
                let (router, workspace, envelope) = (router, &workspace, &envelope);
                async move {
                    if let Err(panic) = AssertUnwindSafe(delivery).catch_unwind().await {
                        router.metrics.panics.inc();
                        let reason = format!(
                            "internal error while delivering: {}",
                            panic_message(&*panic)
                        );
                        tracing::error!(rule = %rule_id, %reason, "panic");
                        // Boxed so that the rare panic path reserves no room in every delivery.
                        Box::pin(router.fail(
                            workspace,
                            &rule_id,
                            envelope,
                            options.partition,
                            reason,
                        ))
                        .await;
                    }
                }
            });
            join_all(deliveries).instrument(span).await;
        }
    }
    store_finished(&shared.tracker, &claim, &*shared.consumer);
    shared.health.progressed();
    router.metrics.in_flight.dec();
}

/// The text of a panic's payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}

/// Commits the stored offsets now; having none stored is not an error.
fn commit_stored<C: ConsumerContext, K: Consumer<C>>(consumer: &K, failure: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "{failure}"),
    }
}

/// The end of a consumer loop: stop fetching, let in-flight work finish for up to
/// `processor.shutdown_timeout_ms`, abandon the rest (its offsets stay uncommitted and it is
/// read again by the next owner), commit what finished, and leave the group.
pub async fn finish(
    tasks: &mut JoinSet<()>,
    consumer: &StreamConsumer<ProcessorContext>,
    settings: &Settings,
) {
    let timeout = Duration::from_millis(settings.processor.shutdown_timeout_ms);
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
    leave_group(
        consumer,
        Duration::from_millis(settings.kafka.session_timeout_ms),
    )
    .await;
}

/// Leaves the consumer group before the consumer is dropped: unsubscribes, then polls until the
/// revocation has gone through this replica's callbacks while the group still answers, for at
/// most `timeout`. Records read meanwhile are neither processed nor committed; the partitions'
/// next owners read them. Closing with the assignment still held (as dropping does) can leave a
/// revocation queued after the group has ended, and librdkafka never answers the unassign
/// call it needs.
async fn leave_group(consumer: &StreamConsumer<ProcessorContext>, timeout: Duration) {
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match consumer.assignment() {
            Ok(assigned) if assigned.count() > 0 => {}
            _ => return,
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("left the consumer group with partitions still assigned");
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), consumer.recv()).await;
    }
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
