//! Replay by consumer-group offset reset: move a stopped group's committed offsets on a topic
//! back to the first record at or after a time, so everything since is processed again.
//! The offsets for the time come from [`offset_for_time`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::by_time::{Resolved, offset_for_time};

const TIMEOUT: Duration = Duration::from_secs(10);

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

    let mut plans = Vec::new();
    for p in partitions {
        let (low, _) = reader.fetch_watermarks(topic, p, TIMEOUT)?;
        let (target, resolved) = offset_for_time(reader, topic, p, millis)?;
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
