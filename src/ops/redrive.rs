//! Redrive: after the operator fixed a connection, re-enqueue a workspace's failed and dead
//! deliveries for an immediate attempt. The dead-letter topic holds, for each such delivery,
//! its final record and the task that re-attempts it; redrive puts that task in the first
//! retry tier, due now, with its tiers counted afresh, and then records the delivery as
//! `retrying`. The retry consumer attempts it
//! with the workspace's current configuration, and history shows the new attempts.
//!
//! Only deliveries whose latest history state is still `failed` or `dead` (and in the
//! requested statuses) are redriven, so running it twice does not send twice.

use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use crate::deliver::retry::RetryPolicy;
use crate::history::OutcomeWriter;
use crate::history::codec::{HistoryCodec, ONE_SHOT_PATIENCE, ReadError};
use crate::history::reader::{self, HistoryQuery, HistoryReadError};
use crate::history::writer::DeadDelivery;
use crate::kafka;
use crate::model::records::{DeliveryRecord, DeliveryStatus, DeliveryTask};
use crate::settings::Settings;

/// Which deliveries to redrive.
#[derive(Debug, Clone)]
pub struct RedriveFilter {
    pub workspace_id: String,
    pub connection_id: Option<String>,
    pub rule_id: Option<String>,
    /// Only deliveries that failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub statuses: Vec<DeliveryStatus>,
}

/// Finds the deliveries `filter` selects and, unless `dry_run`, re-enqueues them. Returns the
/// selected deliveries' final records.
pub async fn redrive(
    settings: &Settings,
    filter: &RedriveFilter,
    dry_run: bool,
) -> Result<Vec<DeliveryRecord>, RedriveError> {
    let (dead, current) = {
        let settings = settings.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || read_candidates(&settings, &filter)).await??
    };
    let mut selected: Vec<DeadDelivery> = dead
        .into_values()
        .filter(|d| {
            let r = &d.record;
            current
                .get(&r.delivery_id)
                .is_some_and(|s| filter.statuses.contains(s))
                && filter
                    .connection_id
                    .as_ref()
                    .is_none_or(|c| r.connection_id.as_ref() == Some(c))
                && filter
                    .rule_id
                    .as_ref()
                    .is_none_or(|id| r.rule_id.as_ref() == Some(id))
                && filter.since.is_none_or(|since| r.updated_at >= since)
        })
        .collect();
    selected.sort_by_key(|d| d.record.updated_at);
    if dry_run || selected.is_empty() {
        return Ok(selected.into_iter().map(|d| d.record).collect());
    }
    let policy = RetryPolicy::from_settings(settings);
    let first = &policy.tiers[0].topic;
    let producer: FutureProducer = kafka::producer_config(settings).create()?;
    let deliveries_partitions = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || {
            let reader: BaseConsumer = kafka::reader_config(&settings).create()?;
            kafka::partition_count(&reader, &settings.topics.deliveries)
        })
        .await??
    };
    // The CLI serves no metrics; the writer's counters go nowhere.
    let writer = OutcomeWriter::new(producer, settings, &crate::telemetry::Metrics::new())
        .co_partitioned(deliveries_partitions);
    // Avro history needs its schemas registered: a registry that is down fails the redrive
    // before anything is enqueued, rather than leave it waiting half done.
    tokio::time::timeout(ONE_SHOT_PATIENCE, writer.codec().ready())
        .await
        .map_err(|_| RedriveError::RegistryUnavailable)?;
    let now = Utc::now();
    let requeue = async {
        let mut out = Vec::new();
        for dead in selected {
            let (retrying, task) = requeued(&dead, now);
            // The task first: if the process stops between the two writes, the delivery is
            // attempted and may be redriven once more, rather than left `retrying` with no task.
            if let Err(too_large) = writer.retry_task(first, &task).await {
                tracing::warn!(delivery_id = %task.delivery_id, %too_large,
                    "task too large to re-enqueue; delivery left as it is");
                continue;
            }
            writer.history(&retrying, task.partition).await;
            out.push(dead.record);
        }
        out
    };
    tokio::select! {
        out = requeue => Ok(out),
        failure = writer.failed() => Err(failure.into()),
    }
}

/// The task of a redriven delivery, due now in the first tier with its tiers counted afresh,
/// and its history record saying so. Its age (`retry.max_age_ms`) counts afresh from now.
pub(crate) fn requeued(dead: &DeadDelivery, now: DateTime<Utc>) -> (DeliveryRecord, DeliveryTask) {
    let DeadDelivery { record, task } = dead;
    let mut task = task.clone();
    task.due_at = now;
    task.tier = 0;
    task.retries = 0;
    task.redriven_at = Some(now);
    let mut retrying = record.clone();
    retrying.status = DeliveryStatus::Retrying;
    retrying.reason = Some(format!(
        "redriven by the operator; was {}: {}",
        record.status,
        record.reason.as_deref().unwrap_or("")
    ));
    retrying.next_attempt_at = Some(now);
    retrying.updated_at = now;
    (retrying, task)
}

type Candidates = (
    HashMap<String, DeadDelivery>,
    HashMap<String, DeliveryStatus>,
);

fn read_candidates(
    settings: &Settings,
    filter: &RedriveFilter,
) -> Result<Candidates, HistoryReadError> {
    let mut dead = HashMap::new();
    read_dead(settings, &filter.workspace_id, |d| {
        dead.insert(d.record.delivery_id.clone(), d);
    })?;
    let query = HistoryQuery {
        workspace_id: filter.workspace_id.clone(),
        event_id: None,
    };
    let (records, _) = reader::read(settings, &query)?;
    let current = records
        .into_iter()
        .map(|r| (r.delivery_id, r.status))
        .collect();
    Ok((dead, current))
}

/// Hands every dead delivery of `workspace_id` in the dead-letter topic to `found`, oldest
/// first (a delivery dead twice comes twice).
pub(crate) fn read_dead(
    settings: &Settings,
    workspace_id: &str,
    mut found: impl FnMut(DeadDelivery),
) -> Result<(), HistoryReadError> {
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    let codec = HistoryCodec::new(settings);
    let mut unavailable = None;
    kafka::read_to_end(&consumer, &settings.topics.dlq, |m| {
        if m.key() != Some(workspace_id.as_bytes()) || unavailable.is_some() {
            return;
        }
        // Dead input records keep the input's bytes; only dead deliveries are redriven.
        if !is_dead_delivery(&m) {
            return;
        }
        let Some(value) = m.payload() else {
            return;
        };
        let started = Instant::now();
        match codec.decode_dead_waiting(value, || started.elapsed() > ONE_SHOT_PATIENCE) {
            Ok(letter) => {
                if let Some(d) = DeadDelivery::from_letter(letter) {
                    found(d);
                }
            }
            Err(ReadError::Unavailable(e)) => unavailable = Some(e),
            Err(ReadError::Unreadable(_)) => {}
        }
    })?;
    match unavailable {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Whether a dead-letter record holds a delivery (rather than an input record's own bytes,
/// which may be in Confluent wire format too, with the producer's schema). Records written
/// before the kind header existed count as deliveries and are told apart by decoding.
fn is_dead_delivery(m: &impl Message) -> bool {
    use rdkafka::message::Headers;
    let kind = m.headers().and_then(|hs| {
        hs.iter()
            .find(|h| h.key == "herald.dlq.kind")
            .and_then(|h| h.value)
    });
    kind.is_none_or(|k| k == b"dead_delivery" || k == b"failed_delivery")
}

/// Why a redrive could not run.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Read(#[from] HistoryReadError),
    #[error("reading the dead-letter topic failed: {0}")]
    Reader(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Write(#[from] crate::history::WriteFailure),
    #[error(
        "the schema registry did not register the history schemas (history.format = \"avro\") \
         within 30 s; nothing was redriven"
    )]
    RegistryUnavailable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::EventEnvelope;

    #[test]
    fn a_redriven_task_is_due_now_in_the_first_tier_with_its_tiers_afresh() {
        let then = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let now = then + chrono::Duration::days(1);
        let task = DeliveryTask {
            delivery_id: "dl_1".into(),
            envelope: EventEnvelope {
                event_id: "e".into(),
                workspace_id: "ws".into(),
                event: "lesson.completed".into(),
                resource: None,
                resource_id: None,
                payload: Default::default(),
                occurred_at: None,
                received_at: None,
            },
            rule_id: "r".into(),
            connection_id: "c".into(),
            request: serde_json::json!({}),
            attempt: 6,
            retries: 5,
            tier: 4,
            due_at: then,
            first_attempt_at: Some(then),
            last_error: Some("HTTP 503".into()),
            attempts: Vec::new(),
            partition: Some(1),
            redriven_at: None,
            offset: Some(7),
        };
        let record = DeliveryRecord {
            delivery_id: "dl_1".into(),
            workspace_id: "ws".into(),
            event_id: "e".into(),
            event: "lesson.completed".into(),
            rule_id: Some("r".into()),
            connection_id: Some("c".into()),
            destination: Some("webhook".into()),
            action: Some("post".into()),
            status: DeliveryStatus::Dead,
            reason: Some("retries exhausted".into()),
            attempts: Vec::new(),
            skipped_count: None,
            next_attempt_at: None,
            created_at: then,
            updated_at: then,
        };
        let (retrying, task) = requeued(&DeadDelivery { record, task }, now);
        assert_eq!((task.tier, task.retries, task.due_at), (0, 0, now));
        assert_eq!(task.attempt, 6, "the attempt count goes on");
        assert_eq!(task.first_attempt_at, Some(then));
        assert_eq!(
            task.redriven_at,
            Some(now),
            "its age counts from the redrive"
        );
        assert_eq!(retrying.status, DeliveryStatus::Retrying);
        assert_eq!(retrying.next_attempt_at, Some(now));
        assert_eq!(retrying.created_at, then);
        let reason = retrying.reason.unwrap_or_default();
        assert!(
            reason.starts_with("redriven by the operator; was dead"),
            "{reason}"
        );
    }
}
