//! Finding the first offset of a partition at or after a time. The broker is asked first
//! (ListOffsets by timestamp) and its answer checked against the records around it; a broker
//! that cannot answer (librdkafka's mock cluster always says "end") or answers wrongly is
//! replaced by a binary search over the record timestamps, a few fetches per partition.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
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
