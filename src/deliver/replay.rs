//! Replay by consumer-group offset reset: move a stopped group's committed offsets on a topic
//! back to the first record at or after a time, so everything since is processed again.
//!
//! Offsets for a time are asked of the broker (ListOffsets by timestamp) and the answer is
//! checked against the records around it; a broker that cannot answer (librdkafka's mock
//! cluster always says "end") or answers wrongly is replaced by a binary search over the record
//! timestamps, a few fetches per partition.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Message, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// How a partition's target offset was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// The broker's ListOffsets answer, verified.
    Broker,
    /// A binary search over record timestamps.
    Search,
}

/// One partition of a replay plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    /// The group's committed offset, `None` when it has none.
    pub current: Option<i64>,
    pub target: i64,
    /// Records that will be read again (or skipped, when the target is ahead).
    pub reread: i64,
    pub resolved: Resolved,
}

/// Why a replay cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("group `{group}` has {members} active member(s); stop them (scale to 0) first")]
    GroupActive { group: String, members: usize },
    #[error("cannot verify that group `{group}` has no members: {source}")]
    GroupUnknown { group: String, source: KafkaError },
    #[error(
        "the broker refused the new offsets because group `{group}` is live ({code}); stop its members first"
    )]
    GroupLive {
        group: String,
        code: RDKafkaErrorCode,
    },
    #[error("topic `{0}` does not exist")]
    NoTopic(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// Refuses unless `group` has no active member.
pub fn ensure_group_empty(consumer: &BaseConsumer, group: &str) -> Result<(), ReplayError> {
    let groups = consumer
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(|source| ReplayError::GroupUnknown {
            group: group.to_owned(),
            source,
        })?;
    let members = groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum();
    if members > 0 {
        return Err(ReplayError::GroupActive {
            group: group.to_owned(),
            members,
        });
    }
    Ok(())
}

/// The plan: for every partition of `topic`, the first offset at or after `time` and the
/// group's current offset. `reader` must be a consumer outside the group; `group` one with the
/// group's id (it only reads committed offsets).
pub fn plan(
    reader: &BaseConsumer,
    group: &BaseConsumer,
    topic: &str,
    time: DateTime<Utc>,
) -> Result<Vec<PartitionPlan>, ReplayError> {
    let metadata = reader.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .filter(|p: &Vec<i32>| !p.is_empty())
        .ok_or_else(|| ReplayError::NoTopic(topic.to_owned()))?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = group.committed_offsets(tpl, TIMEOUT)?;
    let millis = time.timestamp_millis();
    let mut asked = TopicPartitionList::new();
    for p in &partitions {
        asked.add_partition_offset(topic, *p, Offset::Offset(millis))?;
    }
    // Some brokers cannot answer; the search below covers them.
    let answers = reader.offsets_for_times(asked, TIMEOUT).ok();

    let mut plans = Vec::new();
    for p in partitions {
        let (low, high) = reader.fetch_watermarks(topic, p, TIMEOUT)?;
        let broker = answers
            .as_ref()
            .and_then(|a| a.find_partition(topic, p))
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => high,
            });
        let (target, resolved) = resolve(reader, topic, p, (low, high), broker, millis)?;
        let current = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        plans.push(PartitionPlan {
            partition: p,
            current,
            target,
            reread: current.unwrap_or(low) - target,
            resolved,
        });
    }
    Ok(plans)
}

/// Commits the plan's targets for the group (which must have no members). The commit comes
/// from outside the group, so a broker refuses it while the group has members; that refusal is
/// [`ReplayError::GroupLive`].
pub fn execute(
    group: &BaseConsumer,
    group_id: &str,
    topic: &str,
    plans: &[PartitionPlan],
) -> Result<(), ReplayError> {
    let mut tpl = TopicPartitionList::new();
    for p in plans {
        tpl.add_partition_offset(topic, p.partition, Offset::Offset(p.target))?;
    }
    match group.commit(&tpl, CommitMode::Sync) {
        Ok(()) => Ok(()),
        Err(KafkaError::ConsumerCommit(
            code @ (RDKafkaErrorCode::UnknownMemberId
            | RDKafkaErrorCode::IllegalGeneration
            | RDKafkaErrorCode::RebalanceInProgress),
        )) => Err(ReplayError::GroupLive {
            group: group_id.to_owned(),
            code,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The first offset of `partition` whose record's timestamp is at or after `millis` (the high
/// watermark when there is none): the broker's ListOffsets answer when it verifies, else a
/// binary search. Leaves `reader` assigned to that partition.
pub fn offset_for_time(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    millis: i64,
) -> Result<(i64, Resolved), KafkaError> {
    let (low, high) = reader.fetch_watermarks(topic, partition, TIMEOUT)?;
    if low >= high {
        return Ok((high, Resolved::Broker));
    }
    let mut asked = TopicPartitionList::new();
    asked.add_partition_offset(topic, partition, Offset::Offset(millis))?;
    let broker = reader.offsets_for_times(asked, TIMEOUT).ok().and_then(|a| {
        a.find_partition(topic, partition)
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => high,
            })
    });
    resolve(reader, topic, partition, (low, high), broker, millis)
}

/// Verifies the broker's answer, or searches.
fn resolve(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    (low, high): (i64, i64),
    broker: Option<i64>,
    millis: i64,
) -> Result<(i64, Resolved), KafkaError> {
    Ok(match broker {
        Some(o) if verified(reader, topic, partition, o, low, high, millis)? => {
            (o, Resolved::Broker)
        }
        _ => (
            search(reader, topic, partition, low, high, millis)?,
            Resolved::Search,
        ),
    })
}

/// The first record at or after `offset`: its offset and timestamp (ms); `None` at the end.
fn record_at(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    high: i64,
) -> Result<Option<(i64, i64)>, KafkaError> {
    if offset >= high {
        return Ok(None);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    reader.assign(&tpl)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.partition() == partition && m.offset() >= offset => {
                let ts = m.timestamp().to_millis().unwrap_or(i64::MIN);
                return Ok(Some((m.offset(), ts)));
            }
            // Transport errors (a broker closing the connection) are retried until the deadline.
            Some(Err(e)) => tracing::debug!(error = %e, "fetch for the timestamp search failed"),
            _ => {}
        }
    }
    Err(KafkaError::MessageConsumption(
        RDKafkaErrorCode::OperationTimedOut,
    ))
}

/// Whether `offset` really is the first record at or after `millis`.
fn verified(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
    low: i64,
    high: i64,
    millis: i64,
) -> Result<bool, KafkaError> {
    if offset < low || offset > high {
        return Ok(false);
    }
    // Nothing at or after it may be earlier than the time…
    let at_ok = match record_at(reader, topic, partition, offset, high)? {
        Some((_, ts)) => ts >= millis,
        None => true,
    };
    // …and the record before it must be earlier.
    let before_ok = offset == low
        || match record_at(reader, topic, partition, offset - 1, high)? {
            Some((o, ts)) => o >= offset || ts < millis,
            None => true,
        };
    Ok(at_ok && before_ok)
}

/// The first offset in [low, high) whose record's timestamp is at or after `millis` (`high`
/// when there is none), by binary search. Timestamps are assumed non-decreasing within a
/// partition, as with producer-assigned times from one clock or log-append time.
fn search(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    mut low: i64,
    mut high: i64,
    millis: i64,
) -> Result<i64, KafkaError> {
    let end = high;
    while low < high {
        let mid = low + (high - low) / 2;
        match record_at(reader, topic, partition, mid, end)? {
            Some((found, ts)) if ts < millis => low = (found + 1).min(high),
            _ => high = mid,
        }
    }
    Ok(low)
}
