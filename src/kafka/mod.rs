//! Kafka clients as Herald configures them, the topic plan, reading a topic to its end, and the
//! schema registry of Confluent wire-format records.

pub mod by_time;
pub mod follow;
pub mod produce_error;
pub mod registry;
pub mod topic_check;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::settings::Settings;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

fn base(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.kafka.brokers);
    extra(&mut c, settings);
    c
}

/// Applies `kafka.client`, resolving `${env:NAME}` references so that passwords can come from
/// the environment (a Kubernetes Secret) rather than the configuration file. `Settings::load`
/// already checked that every reference resolves.
fn extra(c: &mut ClientConfig, settings: &Settings) {
    let vars = crate::settings::interpolate::Vars::from_env();
    for (k, v) in &settings.kafka.client {
        c.set(k, vars.resolve(v).unwrap_or_else(|_| v.clone()));
    }
}

/// The processor's consumer: a group member that commits only offsets Herald stored, which are
/// only ever those of fully finished events.
pub fn consumer_config(settings: &Settings) -> ClientConfig {
    consumer_config_for(settings, &settings.kafka.group_id)
}

/// [`consumer_config`] with another group (the retry-tier consumer's).
pub fn consumer_config_for(settings: &Settings, group_id: &str) -> ClientConfig {
    let mut c = base(settings);
    c.set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            settings.kafka.commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            settings.kafka.session_timeout_ms.to_string(),
        )
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set(
            "fetch.wait.max.ms",
            settings.kafka.fetch_wait_max_ms.to_string(),
        )
        // librdkafka prefetches up to 100,000 records per partition and 64 MiB in all, so a
        // backlog filled memory far ahead of the in-flight window (`herald bench`: RSS grew
        // with the backlog). These keep a few seconds of records queued, 16 MiB at most.
        .set("queued.min.messages", "2000")
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES)
        // With a prefetch that small, librdkafka's default wait of one second before it looks
        // again at a full queue starved the processor: it emptied the queue in a fraction of
        // that second and then waited for the rest (`herald bench`).
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set(
            "max.poll.interval.ms",
            settings.kafka.max_poll_interval_ms.to_string(),
        )
        .set(
            "statistics.interval.ms",
            settings.kafka.statistics_interval_ms.to_string(),
        );
    extra(&mut c, settings);
    c
}

/// The producer for history, dead letters and events: idempotent (no duplicates or reordering
/// from its own retries), lz4-compressed, and partitioning keys like the Java client does so
/// that every producer of a workspace's events picks the same partition. Its record size limit
/// is `kafka.max_record_bytes` (settings reject `message.max.bytes` in `kafka.client`), the
/// same limit the outcome writer checks before producing.
pub fn producer_config(settings: &Settings) -> ClientConfig {
    let mut c = base(settings);
    c.set("enable.idempotence", "true")
        .set(
            "message.max.bytes",
            settings.kafka.max_record_bytes.to_string(),
        )
        .set("linger.ms", settings.kafka.linger_ms.to_string())
        .set(
            "message.timeout.ms",
            settings.kafka.message_timeout_ms.to_string(),
        )
        .set("compression.type", "lz4")
        .set("partitioner", "murmur2_random");
    extra(&mut c, settings);
    c
}

/// The most a consumer or reader keeps prefetched, in KiB (librdkafka's default is 64 MiB):
/// what it holds beyond that is read when it is needed, not held in memory ahead of it.
const PREFETCH_KBYTES: &str = "16384";

/// How long a consumer's fetcher waits before it looks again at a full prefetch queue.
const FETCH_QUEUE_BACKOFF_MS: &str = "20";

/// A consumer outside any group, for reading whole topics (workspaces, history).
pub fn reader_config(settings: &Settings) -> ClientConfig {
    let mut c = base(settings);
    c.set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("group.id", "herald-reader")
        // Readers apply or scan what they read before reading on; a prefetch of 16 MiB keeps
        // them fed without librdkafka's default of 64 MiB held in memory per reader.
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
    extra(&mut c, settings);
    c
}

/// The number of partitions of `topic`.
pub fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<i32, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let t = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopic))?;
    if let Some(err) = t.error() {
        return Err(KafkaError::MetadataFetch(err.into()));
    }
    match t.partitions().len() {
        0 => Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        )),
        n => Ok(n as i32),
    }
}

/// One topic Herald needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// `cleanup.policy=compact`: the topic keeps the latest value per key.
    pub compacted: bool,
    /// `retention.ms`; on a compacted topic it makes the policy `compact,delete`: the latest
    /// value per key, but nothing older than this.
    pub retention_ms: Option<u64>,
}

impl TopicSpec {
    /// The topic configs Herald sets when it creates the topic, and checks later.
    pub fn configs(&self) -> Vec<(&'static str, String)> {
        let policy = match (self.compacted, self.retention_ms) {
            (true, Some(_)) => Some("compact,delete"),
            (true, None) => Some("compact"),
            (false, _) => None,
        };
        let mut configs = Vec::new();
        if let Some(policy) = policy {
            configs.push(("cleanup.policy", policy.to_owned()));
        }
        if let Some(ms) = self.retention_ms {
            configs.push(("retention.ms", ms.to_string()));
        }
        configs
    }
}

/// Every topic Herald uses, with its settings.
pub fn topic_plan(settings: &Settings) -> Vec<TopicSpec> {
    let t = &settings.topics;
    let mut plan = vec![
        TopicSpec {
            name: t.events.clone(),
            partitions: t.partitions,
            compacted: false,
            retention_ms: None,
        },
        TopicSpec {
            name: t.workspaces.clone(),
            partitions: t.workspace_partitions,
            compacted: true,
            retention_ms: None,
        },
        TopicSpec {
            name: t.credentials.clone(),
            partitions: t.workspace_partitions,
            compacted: true,
            retention_ms: None,
        },
        // Same partition count as the events, so a workspace's history can later be read by
        // the member that owns its events.
        TopicSpec {
            name: t.deliveries.clone(),
            partitions: t.partitions,
            compacted: true,
            retention_ms: Some(t.deliveries_retention_ms),
        },
        TopicSpec {
            name: t.dlq.clone(),
            partitions: t.partitions,
            compacted: false,
            retention_ms: None,
        },
    ];
    plan.extend(settings.retry_tiers().into_iter().map(|tier| TopicSpec {
        name: tier.topic,
        partitions: t.partitions,
        compacted: false,
        retention_ms: None,
    }));
    plan
}

/// What happened to each topic of the plan.
#[derive(Debug)]
pub enum TopicCreated {
    Created,
    AlreadyExists,
}

/// Creates every topic of the plan through the admin API; existing topics are left as they are.
pub async fn create_topics(
    settings: &Settings,
) -> Result<Vec<(TopicSpec, TopicCreated)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let plan = topic_plan(settings);
    let configs: Vec<_> = plan.iter().map(TopicSpec::configs).collect();
    let new: Vec<NewTopic<'_>> = plan
        .iter()
        .zip(&configs)
        .map(|(t, configs)| {
            let topic = NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(settings.topics.replication_factor),
            );
            configs
                .iter()
                .fold(topic, |topic, (key, value)| topic.set(key, value))
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT)),
        )
        .await?;
    let mut out = Vec::new();
    for (spec, result) in plan.into_iter().zip(results) {
        match result {
            Ok(_) => out.push((spec, TopicCreated::Created)),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {
                out.push((spec, TopicCreated::AlreadyExists))
            }
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(
                    |_| tracing::error!(topic = name, error = %code, "topic creation failed"),
                );
            }
        }
    }
    Ok(out)
}

/// Assigns every partition of `topic` from the beginning and returns, for each partition that
/// holds records, its end offset at this moment.
pub fn assign_from_beginning(
    consumer: &BaseConsumer,
    topic: &str,
) -> Result<HashMap<i32, i64>, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..partition_count(consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, METADATA_TIMEOUT)?;
        if high > low {
            ends.insert(p, high);
        }
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(ends)
}

/// Reads every record of `topic` that exists now, in partition order, and hands each to `f`.
pub fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    mut f: impl FnMut(OwnedMessage),
) -> Result<(), KafkaError> {
    let mut ends = assign_from_beginning(consumer, topic)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if let Some(end) = ends.get(&m.partition())
                    && m.offset() + 1 >= *end
                {
                    ends.remove(&m.partition());
                }
                f(m.detach());
            }
            Some(Err(e)) => return Err(e),
            None => {
                let positions = consumer.position()?;
                ends.retain(|p, end| {
                    !matches!(positions.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(pos)) if pos >= *end)
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_wait_briefly_for_records_and_prefetch_little_unless_overridden() {
        let mut settings = Settings::defaults();
        let c = consumer_config(&settings);
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(c.get("queued.min.messages"), Some("2000"));
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("20"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("16384"));
        settings.kafka.fetch_wait_max_ms = 100;
        settings
            .kafka
            .client
            .insert("queued.max.messages.kbytes".into(), "65536".into());
        let c = consumer_config_for(&settings, "herald-retry");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("65536"));
    }
}
