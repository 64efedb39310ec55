//! The consumer of the retry tiers (`herald.retry.<delay>`), running beside the event consumer
//! in `herald run`.
//!
//! Each tier topic holds deliveries with one delay, so each partition is ordered by due time.
//! When a partition's head record is not due yet, the partition is paused and the record is
//! held in memory (one per partition) until it is due; then it is attempted and the partition
//! resumed. librdkafka restarts a resumed partition after the last record it handed over, so
//! nothing is read twice and nothing polls busily; other partitions and first attempts are
//! never blocked. Offsets are stored, as for events, only after every outcome of the attempt
//! was acknowledged. A record that cannot be read goes to the dead-letter topic, never back to a
//! tier, so a poison record cannot loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::offsets::{Claim, OffsetTracker};
use super::processor::{
    LagGauges, ProcessorContext, ProcessorError, drain_and_commit, stopped, store_finished,
};
use super::route::Router;
use super::settle::{AttemptResult, Delivery, settle};
use super::supersede;
use crate::destinations::Outcome;
use crate::history::writer::DeadLetter;
use crate::kafka;
use crate::model::records::DeliveryTask;
use crate::settings::Settings;
use crate::workspace::table::WorkspaceEntry;

type RetryConsumer = StreamConsumer<ProcessorContext>;

/// A not-yet-due head record of a paused partition.
struct Held {
    seq: u64,
    message: OwnedMessage,
}

/// Runs the retry-tier consumer until `shutdown`, then drains like the event processor.
pub async fn run(
    settings: &Settings,
    router: Arc<Router>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ProcessorError> {
    let tracker = Arc::new(OffsetTracker::default());
    let consumer: Arc<RetryConsumer> = Arc::new(
        kafka::consumer_config_for(settings, &settings.retry.group_id).create_with_context(
            ProcessorContext {
                tracker: tracker.clone(),
                lag: Some(LagGauges {
                    lag: router.metrics.consumer_lag.clone(),
                    tiers: router
                        .policy
                        .tiers
                        .iter()
                        .map(|t| (t.topic.clone(), t.name.clone()))
                        .collect(),
                    waiting: router.metrics.retry_waiting.clone(),
                }),
                dedupe: None,
                health: None,
            },
        )?,
    );
    tokio::select! {
        _ = router.table.wait_ready() => {}
        _ = stopped(&mut shutdown) => return Ok(()),
    }
    let topics: Vec<&str> = router
        .policy
        .tiers
        .iter()
        .map(|t| t.topic.as_str())
        .collect();
    consumer.subscribe(&topics)?;
    tracing::info!(?topics, group = %settings.retry.group_id, "consuming retry tiers");

    let permits = Arc::new(Semaphore::new(settings.retry.max_in_flight));
    let mut tasks = JoinSet::new();
    let mut held: HashMap<(String, i32), Held> = HashMap::new();
    let seq = AtomicU64::new(0);
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(String, i32, u64)>();
    let mut gauge_tick = tokio::time::interval(std::time::Duration::from_secs(1));

    loop {
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = gauge_tick.tick() => oldest_age(&router, &held),
            Some((topic, partition, s)) = due_rx.recv() => {
                let key = (topic, partition);
                if held.get(&key).is_none_or(|h| h.seq != s) {
                    continue; // replaced or dropped by a rebalance
                }
                let Some(h) = held.remove(&key) else { continue };
                let assigned = consumer
                    .assignment()
                    .map(|a| a.find_partition(&key.0, key.1).is_some())
                    .unwrap_or(false);
                if !assigned {
                    continue; // revoked meanwhile; the new owner re-reads it
                }
                let permit = permits.clone().acquire_owned().await.expect("never closed");
                let claim = tracker.begin(&key.0, key.1, h.message.offset());
                tasks.spawn(attempt(router.clone(), consumer.clone(), tracker.clone(), h.message, claim, permit));
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&key.0, key.1);
                if let Err(e) = consumer.resume(&tpl) {
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "resume failed");
                }
            }
            message = consumer.recv() => {
                let m = match message {
                    Ok(m) => m.detach(),
                    Err(e) => {
                        tracing::warn!(error = %e, "retry consume error");
                        continue;
                    }
                };
                let due_in = due_at(&m).and_then(|due| (due - Utc::now()).to_std().ok());
                match due_in {
                    Some(wait) if !wait.is_zero() => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(m.topic(), m.partition());
                        if let Err(e) = consumer.pause(&tpl) {
                            tracing::warn!(error = %e, "pause failed");
                        }
                        let s = seq.fetch_add(1, Ordering::Relaxed);
                        let (topic, partition) = (m.topic().to_owned(), m.partition());
                        let tx = due_tx.clone();
                        let timer_topic = topic.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(wait).await;
                            let _ = tx.send((timer_topic, partition, s));
                        });
                        held.insert((topic, partition), Held { seq: s, message: m });
                    }
                    _ => {
                        let permit = permits.clone().acquire_owned().await.expect("never closed");
                        let claim = tracker.begin(m.topic(), m.partition(), m.offset());
                        tasks.spawn(attempt(router.clone(), consumer.clone(), tracker.clone(), m, claim, permit));
                    }
                }
            }
        }
    }

    let timeout = std::time::Duration::from_millis(settings.processor.shutdown_timeout_ms);
    drain_and_commit(&mut tasks, &*consumer, timeout).await;
    Ok(())
}

/// Sets `herald_retry_oldest_age_seconds{tier}` from the held head records: the time since the
/// oldest of them entered its tier (0 when nothing waits).
fn oldest_age(router: &Router, held: &HashMap<(String, i32), Held>) {
    let now = Utc::now().timestamp_millis();
    for tier in &router.policy.tiers {
        let oldest = held
            .iter()
            .filter(|((topic, _), _)| *topic == tier.topic)
            .filter_map(|(_, h)| h.message.timestamp().to_millis())
            .min();
        let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        router
            .metrics
            .retry_oldest_age
            .with_label_values(&[&tier.name])
            .set(age);
    }
}

/// The due time of a task record, read cheaply; `None` when the record is unreadable (it is
/// then handled at once, which sends it to the dead-letter topic).
fn due_at(m: &OwnedMessage) -> Option<chrono::DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Due {
        due_at: chrono::DateTime<Utc>,
    }
    serde_json::from_slice::<Due>(m.payload()?)
        .ok()
        .map(|d| d.due_at)
}

async fn attempt(
    router: Arc<Router>,
    consumer: Arc<RetryConsumer>,
    tracker: Arc<OffsetTracker>,
    m: OwnedMessage,
    claim: Claim,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let bytes = m.payload().unwrap_or_default();
    match serde_json::from_slice::<DeliveryTask>(bytes) {
        Err(e) => {
            let reason = format!("unreadable retry task: {e}");
            tracing::error!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason,
                "poison record in a retry tier sent to the dead-letter topic");
            let letter = DeadLetter {
                kind: "undecodable_retry_task",
                reason: &reason,
                source_topic: m.topic(),
                source_partition: m.partition(),
                source_offset: m.offset(),
            };
            router.writer.dead_letter(m.key(), bytes, letter).await;
        }
        Ok(task) => {
            let span = tracing::info_span!("retry", delivery_id = %task.delivery_id, attempt = task.attempt);
            retry(&router, task).instrument(span).await
        }
    }
    store_finished(&tracker, &claim, &*consumer);
}

/// Attempts a due task again with the workspace's current rule and connection.
async fn retry(router: &Router, task: DeliveryTask) {
    let workspace = match router.table.get(&task.envelope.workspace_id) {
        Some(WorkspaceEntry::Ready(ws)) => ws,
        Some(WorkspaceEntry::Invalid(reason)) => {
            return give_up(
                router,
                task,
                format!("workspace config invalid here: {reason}"),
            )
            .await;
        }
        None => {
            let reason = format!(
                "workspace `{}` no longer exists",
                task.envelope.workspace_id
            );
            return give_up(router, task, reason).await;
        }
    };
    let Some(rule) = workspace.rule(&task.rule_id) else {
        let reason = format!("rule `{}` was removed from the workspace", task.rule_id);
        return give_up(router, task, reason).await;
    };
    let delivery = Delivery::from_task(
        task,
        rule.connection.kind.clone(),
        rule.action.name().to_owned(),
    );
    if supersede::skip_if_superseded(router, rule, &delivery).await {
        return;
    }
    router
        .attempt_and_record(&workspace, rule, delivery, Ok(()))
        .await;
}

/// Ends a task whose rule or workspace is gone: `failed`, with the reason, to the DLQ.
async fn give_up(router: &Router, task: DeliveryTask, reason: String) {
    let partition = task.partition;
    let delivery = Delivery::from_task(task, String::new(), String::new());
    let result = AttemptResult {
        outcome: Outcome::Permanent { reason },
        call: None,
    };
    let settled = settle(delivery, result, &router.policy, Utc::now(), 0.5);
    let dead = async {
        if let Some(task) = &settled.dead_letter {
            router.writer.dead_delivery(&settled.record, task).await;
        }
    };
    futures::join!(router.writer.history(&settled.record, partition), dead);
}
