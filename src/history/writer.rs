//! Producing outcomes (history records, dead letters) so that none is ever skipped: a produce
//! that fails is produced again until Kafka acknowledges it. The caller stores the event's
//! offset only after every outcome of the event came back acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::model::records::{DeliveryRecord, DeliveryTask};

/// Writes history records and dead letters.
#[derive(Clone)]
pub struct OutcomeWriter {
    producer: FutureProducer,
    deliveries_topic: String,
    /// Partitions of `deliveries_topic`, when known: a record whose event partition is below
    /// it goes to that same partition (co-partitioning, for dedupe).
    deliveries_partitions: Option<i32>,
    dlq_topic: String,
    /// `herald_dlq_records_total{kind}`.
    dlq_records: prometheus::IntCounterVec,
    /// False while produces fail (until the next one is acknowledged); `/readyz` reads it.
    healthy: Arc<AtomicBool>,
}

/// The value of a dead-letter record for a delivery: what happened, and how to try again.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DeadDelivery {
    pub record: DeliveryRecord,
    pub task: DeliveryTask,
}

#[derive(serde::Serialize)]
struct DeadDeliveryRef<'a> {
    record: &'a DeliveryRecord,
    task: &'a DeliveryTask,
}

/// Why an input record went to the dead-letter topic, and where it came from.
#[derive(Debug, Clone)]
pub struct DeadLetter<'a> {
    /// A stable kind, e.g. `undecodable_input`.
    pub kind: &'a str,
    pub reason: &'a str,
    pub source_topic: &'a str,
    pub source_partition: i32,
    pub source_offset: i64,
}

impl OutcomeWriter {
    /// A writer producing to the given topics.
    pub fn new(
        producer: FutureProducer,
        deliveries_topic: &str,
        dlq_topic: &str,
        dlq_records: prometheus::IntCounterVec,
    ) -> Self {
        Self {
            producer,
            deliveries_topic: deliveries_topic.to_owned(),
            deliveries_partitions: None,
            dlq_topic: dlq_topic.to_owned(),
            dlq_records,
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Writes each delivery's history to the partition of its event (the same partition number
    /// of the deliveries topic, which has `partitions` partitions).
    pub fn co_partitioned(mut self, partitions: i32) -> Self {
        self.deliveries_partitions = Some(partitions);
        self
    }

    /// The flag that says whether produces are being acknowledged.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Writes the latest state of a delivery whose event came from events partition
    /// `partition`; returns once Kafka acknowledged it.
    pub async fn history(&self, record: &DeliveryRecord, partition: Option<i32>) {
        // A DeliveryRecord always serialises.
        let value = serde_json::to_vec(record).expect("history records serialise");
        let partition = partition.filter(|p| {
            self.deliveries_partitions
                .is_some_and(|n| (0..n).contains(p))
        });
        self.produce_until_acked(
            &self.deliveries_topic,
            partition,
            Some(record.delivery_id.as_bytes()),
            &value,
            None,
        )
        .await;
    }

    /// Writes a delivery's task to the topic of its retry tier, keyed by workspace so a
    /// workspace's retries share a partition; returns once Kafka acknowledged it.
    pub async fn retry_task(&self, topic: &str, task: &DeliveryTask) {
        // A DeliveryTask always serialises.
        let value = serde_json::to_vec(task).expect("tasks serialise");
        self.produce_until_acked(
            topic,
            None,
            Some(task.envelope.workspace_id.as_bytes()),
            &value,
            None,
        )
        .await;
    }

    /// Writes a delivery that failed for good to the dead-letter topic: its final history record
    /// (every attempt) and the task that re-attempts it (see [`DeadDelivery`]); returns once
    /// Kafka acknowledged it.
    pub async fn dead_delivery(&self, record: &DeliveryRecord, task: &DeliveryTask) {
        let value = serde_json::to_vec(&DeadDeliveryRef { record, task })
            .expect("dead deliveries serialise");
        let kind = match record.status {
            crate::model::records::DeliveryStatus::Failed => "failed_delivery",
            _ => "dead_delivery",
        };
        let reason = record.reason.as_deref().unwrap_or_default();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "herald.dlq.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "herald.dlq.reason",
                value: Some(reason),
            })
            .insert(Header {
                key: "herald.delivery.id",
                value: Some(record.delivery_id.as_str()),
            });
        self.produce_until_acked(
            &self.dlq_topic,
            None,
            Some(record.workspace_id.as_bytes()),
            &value,
            Some(headers),
        )
        .await;
        self.dlq_records.with_label_values(&[kind]).inc();
    }

    /// Writes an input record that cannot be processed, with its original bytes as the value
    /// and the reason in headers; returns once Kafka acknowledged it.
    pub async fn dead_letter(&self, key: Option<&[u8]>, original: &[u8], letter: DeadLetter<'_>) {
        let partition = letter.source_partition.to_string();
        let offset = letter.source_offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "herald.dlq.kind",
                value: Some(letter.kind),
            })
            .insert(Header {
                key: "herald.dlq.reason",
                value: Some(letter.reason),
            })
            .insert(Header {
                key: "herald.source.topic",
                value: Some(letter.source_topic),
            })
            .insert(Header {
                key: "herald.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "herald.source.offset",
                value: Some(&offset),
            });
        self.produce_until_acked(&self.dlq_topic, None, key, original, Some(headers))
            .await;
        self.dlq_records.with_label_values(&[letter.kind]).inc();
    }

    async fn produce_until_acked(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Option<OwnedHeaders>,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut record = FutureRecord::to(topic).payload(value);
            if let Some(p) = partition {
                record = record.partition(p);
            }
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(h) = headers.clone() {
                record = record.headers(h);
            }
            match self.producer.send(record, Timeout::Never).await {
                Ok(_) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    return;
                }
                Err((e, _)) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(topic, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "outcome not acknowledged by Kafka; producing it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
