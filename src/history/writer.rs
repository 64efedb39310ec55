//! Producing outcomes (history records, retry tasks, dead letters) so that none is ever skipped
//! and none blocks its partition forever. A produce that fails transiently is produced again
//! until Kafka acknowledges it; a record too large to ever be written becomes a truncated stub
//! ([`stub`](super::stub)); any other permanent failure is reported through
//! [`OutcomeWriter::failed`], which stops the process. The caller stores the event's offset only
//! after every outcome of the event came back acknowledged.
//!
//! History records and dead deliveries are written in the format of `history.format`
//! ([`codec`](super::codec): JSON, or Confluent Avro once its schemas are registered); retry
//! tasks are JSON, and a dead input record keeps the input's own bytes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio::sync::watch;

use super::codec::HistoryCodec;
use super::stub::{self, TooLarge};
use crate::kafka::produce_error::{ProduceErrorKind, classify};
use crate::model::records::{self, DeliveryRecord, DeliveryTask};
use crate::settings::Settings;
use crate::telemetry::Metrics;

/// Bytes librdkafka adds to a record's key, value and headers when it checks
/// `message.max.bytes` (record framing, plus a margin), so Herald's own check fires first.
const RECORD_OVERHEAD_BYTES: usize = 512;

/// Writes history records, retry tasks and dead letters.
#[derive(Clone)]
pub struct OutcomeWriter {
    producer: FutureProducer,
    deliveries_topic: String,
    /// Partitions of `deliveries_topic`, when known: a record whose event partition is below
    /// it goes to that same partition (co-partitioning, for dedupe).
    deliveries_partitions: Option<i32>,
    dlq_topic: String,
    /// The format of history records and dead deliveries (`history.format`).
    codec: Arc<HistoryCodec>,
    /// `kafka.max_record_bytes`: larger records are written as stubs.
    max_record_bytes: usize,
    /// `herald_dlq_records_total{kind}`.
    dlq_records: prometheus::IntCounterVec,
    /// `herald_produce_failures_total{topic_kind, reason}`.
    produce_failures: prometheus::IntCounterVec,
    /// False while produces fail (until the next one is acknowledged); `/readyz` reads it.
    healthy: Arc<AtomicBool>,
    /// Set once a produce failed in a way producing again cannot fix.
    failure: Arc<watch::Sender<Option<WriteFailure>>>,
}

/// A produce that can never succeed: the process must stop and be restarted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot write to `{topic}`: {reason}")]
pub struct WriteFailure {
    pub topic: String,
    pub reason: String,
}

/// A dead-letter record for a delivery that can be tried again: what happened, and the task.
/// (A truncated dead letter has no task; see [`records::DeadDelivery`].)
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DeadDelivery {
    pub record: DeliveryRecord,
    pub task: DeliveryTask,
}

impl DeadDelivery {
    /// The delivery of a dead letter that kept its task.
    pub fn from_letter(letter: records::DeadDelivery) -> Option<Self> {
        let records::DeadDelivery { record, task, .. } = letter;
        task.map(|task| Self { record, task })
    }
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

/// The `topic_kind` label of a produce.
#[derive(Debug, Clone, Copy)]
enum TopicKind {
    History,
    Retry,
    Dlq,
}

impl TopicKind {
    fn label(self) -> &'static str {
        match self {
            Self::History => "history",
            Self::Retry => "retry",
            Self::Dlq => "dlq",
        }
    }
}

/// One record to produce.
struct Out<'a> {
    kind: TopicKind,
    topic: &'a str,
    partition: Option<i32>,
    key: Option<&'a [u8]>,
    value: &'a [u8],
    headers: Option<OwnedHeaders>,
}

impl Out<'_> {
    fn bytes(&self) -> usize {
        let headers = self.headers.as_ref().map_or(0, |hs| {
            hs.iter()
                .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
                .sum()
        });
        self.key.map_or(0, <[u8]>::len) + self.value.len() + headers + RECORD_OVERHEAD_BYTES
    }
}

fn truncated(headers: OwnedHeaders, too_large: &TooLarge) -> OwnedHeaders {
    let bytes = too_large.bytes.to_string();
    headers
        .insert(Header {
            key: "herald.truncated",
            value: Some("true"),
        })
        .insert(Header {
            key: "herald.original.bytes",
            value: Some(&bytes),
        })
}

impl OutcomeWriter {
    /// A writer producing to the topics of `settings`, within `kafka.max_record_bytes`.
    pub fn new(producer: FutureProducer, settings: &Settings, metrics: &Metrics) -> Self {
        Self {
            producer,
            deliveries_topic: settings.topics.deliveries.clone(),
            deliveries_partitions: None,
            dlq_topic: settings.topics.dlq.clone(),
            codec: Arc::new(HistoryCodec::new(settings)),
            max_record_bytes: settings.kafka.max_record_bytes,
            dlq_records: metrics.dlq_records.clone(),
            produce_failures: metrics.produce_failures.clone(),
            healthy: Arc::new(AtomicBool::new(true)),
            failure: Arc::new(watch::channel(None).0),
        }
    }

    /// Writes each delivery's history to the partition of its event (the same partition number
    /// of the deliveries topic, which has `partitions` partitions).
    pub fn co_partitioned(mut self, partitions: i32) -> Self {
        self.deliveries_partitions = Some(partitions);
        self
    }

    /// The codec of history records and dead deliveries.
    pub fn codec(&self) -> Arc<HistoryCodec> {
        self.codec.clone()
    }

    /// The flag that says whether produces are being acknowledged.
    pub fn health(&self) -> Arc<AtomicBool> {
        self.healthy.clone()
    }

    /// Resolves once a produce failed for good; the process should then stop. Until then
    /// the failed produce (and its event) waits, so nothing after it is stored as done.
    pub async fn failed(&self) -> WriteFailure {
        let mut rx = self.failure.subscribe();
        // The guard is not held across an await.
        let failure = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|f| f.clone());
        match failure {
            Some(failure) => failure,
            // The sender lives in `self`, so it outlives this wait.
            None => std::future::pending().await,
        }
    }

    /// Writes the latest state of a delivery whose event came from events partition
    /// `partition`; returns once Kafka acknowledged it, or its stub when it is too large.
    pub async fn history(&self, record: &DeliveryRecord, partition: Option<i32>) {
        let partition = partition.filter(|p| {
            self.deliveries_partitions
                .is_some_and(|n| (0..n).contains(p))
        });
        let value = self.codec.encode_record(record).await;
        let out = Out {
            kind: TopicKind::History,
            topic: &self.deliveries_topic,
            partition,
            key: Some(record.delivery_id.as_bytes()),
            value: &value,
            headers: None,
        };
        let Err(too_large) = self.produce(out).await else {
            return;
        };
        let stub = stub::history(record, &too_large);
        let value = self.codec.encode_record(&stub).await;
        let out = Out {
            kind: TopicKind::History,
            topic: &self.deliveries_topic,
            partition,
            key: Some(record.delivery_id.as_bytes()),
            value: &value,
            headers: Some(truncated(OwnedHeaders::new(), &too_large)),
        };
        self.produce_stub(out).await;
    }

    /// Writes a delivery's task to the topic of its retry tier, keyed by workspace so a
    /// workspace's retries share a partition; returns once Kafka acknowledged it. A task too
    /// large to store is not written: without its request it could never be attempted, so the
    /// caller ends the delivery instead.
    pub async fn retry_task(&self, topic: &str, task: &DeliveryTask) -> Result<(), TooLarge> {
        // A DeliveryTask always serialises.
        let value = serde_json::to_vec(task).expect("tasks serialise");
        self.produce(Out {
            kind: TopicKind::Retry,
            topic,
            partition: None,
            key: Some(task.envelope.workspace_id.as_bytes()),
            value: &value,
            headers: None,
        })
        .await
    }

    /// Writes a delivery that failed for good to the dead-letter topic: its final history record
    /// (every attempt) and the task that re-attempts it (see [`DeadDelivery`]); returns once
    /// Kafka acknowledged it. Too large, it is written as a stub without the task.
    pub async fn dead_delivery(&self, record: &DeliveryRecord, task: &DeliveryTask) {
        let letter = records::DeadDelivery {
            record: record.clone(),
            task: Some(task.clone()),
            truncated: None,
        };
        let value = self.codec.encode_dead(&letter).await;
        let kind = match record.status {
            crate::model::records::DeliveryStatus::Failed => "failed_delivery",
            _ => "dead_delivery",
        };
        let reason = crate::model::error::excerpt(record.reason.as_deref().unwrap_or_default());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "herald.dlq.kind",
                value: Some(kind),
            })
            .insert(Header {
                key: "herald.dlq.reason",
                value: Some(&reason),
            })
            .insert(Header {
                key: "herald.delivery.id",
                value: Some(record.delivery_id.as_str()),
            });
        let out = Out {
            kind: TopicKind::Dlq,
            topic: &self.dlq_topic,
            partition: None,
            key: Some(record.workspace_id.as_bytes()),
            value: &value,
            headers: Some(headers.clone()),
        };
        if let Err(too_large) = self.produce(out).await {
            let value = self
                .codec
                .encode_dead(&stub::dead_delivery(record, &too_large))
                .await;
            self.produce_stub(Out {
                kind: TopicKind::Dlq,
                topic: &self.dlq_topic,
                partition: None,
                key: Some(record.workspace_id.as_bytes()),
                value: &value,
                headers: Some(truncated(headers, &too_large)),
            })
            .await;
        }
        self.dlq_records.with_label_values(&[kind]).inc();
    }

    /// Writes an input record that cannot be processed, with its original bytes as the value
    /// and the reason in headers; returns once Kafka acknowledged it. Too large, its value is
    /// a marker with the bytes' beginning.
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
        // A key was bounded by decode only when the record decoded; keep its beginning.
        let short_key = key.map(|k| &k[..k.len().min(1024)]);
        let out = Out {
            kind: TopicKind::Dlq,
            topic: &self.dlq_topic,
            partition: None,
            key,
            value: original,
            headers: Some(headers.clone()),
        };
        if let Err(too_large) = self.produce(out).await {
            let value = stub::input(original, &too_large);
            self.produce_stub(Out {
                kind: TopicKind::Dlq,
                topic: &self.dlq_topic,
                partition: None,
                key: short_key,
                value: &value,
                headers: Some(truncated(headers, &too_large)),
            })
            .await;
        }
        self.dlq_records.with_label_values(&[letter.kind]).inc();
    }

    /// Produces a stub; a stub refused as too large is a failure Herald cannot get past.
    async fn produce_stub(&self, out: Out<'_>) {
        let topic = out.topic.to_owned();
        let kind = out.kind;
        if let Err(too_large) = self.produce(out).await {
            let reason = format!("even the truncated stub is {too_large}");
            match self.fail(kind, &topic, reason).await {}
        }
    }

    /// Produces `out` until Kafka acknowledges it, or says it is too large. Never returns after
    /// a permanent failure: the failure is reported and the process stops.
    async fn produce(&self, out: Out<'_>) -> Result<(), TooLarge> {
        let bytes = out.bytes();
        if bytes > self.max_record_bytes {
            let too_large = TooLarge::over_limit(bytes, self.max_record_bytes);
            self.count(out.kind, ProduceErrorKind::TooLarge);
            tracing::warn!(topic = out.topic, %too_large, "record too large; writing a truncated stub instead");
            return Err(too_large);
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            let mut record = FutureRecord::to(out.topic).payload(out.value);
            if let Some(p) = out.partition {
                record = record.partition(p);
            }
            if let Some(key) = out.key {
                record = record.key(key);
            }
            if let Some(h) = out.headers.clone() {
                record = record.headers(h);
            }
            let error = match self.producer.send(record, Timeout::Never).await {
                Ok(_) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err((e, _)) => e,
            };
            match classify(&error) {
                ProduceErrorKind::Transient => {
                    self.count(out.kind, ProduceErrorKind::Transient);
                    self.healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(topic = out.topic, %error, retry_in_ms = backoff.as_millis() as u64,
                        "outcome not acknowledged by Kafka; producing it again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                ProduceErrorKind::TooLarge => {
                    self.count(out.kind, ProduceErrorKind::TooLarge);
                    let too_large = TooLarge::refused(bytes, &error);
                    tracing::warn!(topic = out.topic, %too_large, "record too large; writing a truncated stub instead");
                    return Err(too_large);
                }
                ProduceErrorKind::Permanent => {
                    match self.fail(out.kind, out.topic, error.to_string()).await {}
                }
            }
        }
    }

    /// Reports a failure producing again cannot fix and never returns: the caller's event stays
    /// unfinished (its offset is not stored) while the process stops.
    async fn fail(&self, kind: TopicKind, topic: &str, reason: String) -> Infallible {
        self.healthy.store(false, Ordering::Relaxed);
        self.count(kind, ProduceErrorKind::Permanent);
        tracing::error!(topic, %reason, "cannot write to Kafka, and producing again cannot fix it; stopping");
        let failure = WriteFailure {
            topic: topic.to_owned(),
            reason,
        };
        self.failure.send_if_modified(|f| {
            let first = f.is_none();
            if first {
                *f = Some(failure);
            }
            first
        });
        loop {
            std::future::pending::<()>().await;
        }
    }

    fn count(&self, kind: TopicKind, class: ProduceErrorKind) {
        self.produce_failures
            .with_label_values(&[kind.label(), class.label()])
            .inc();
    }
}
