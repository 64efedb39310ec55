//! Following a compacted topic as a table: read it to its end once (then report ready), then keep
//! applying records as they come, until told to stop. The workspace table and the credential
//! store are both read this way, on a thread of their own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// Reads `topic` with `consumer` from the beginning, calling `apply` for every record and
/// `loaded` once the records that were there at the start have all been applied.
pub fn follow_compacted(
    consumer: &BaseConsumer,
    topic: &str,
    stop: &AtomicBool,
    mut apply: impl FnMut(&BorrowedMessage<'_>),
    mut loaded: impl FnMut(),
) {
    let poll = Duration::from_millis(100);
    // Until the topic exists and its end offsets are known, keep trying: a processor started
    // before `herald topics create` becomes ready once the topic appears.
    let mut ends: HashMap<i32, i64> = loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match super::assign_from_beginning(consumer, topic) {
            Ok(ends) => break ends,
            Err(e) => {
                tracing::warn!(topic, error = %e, "cannot read the topic yet; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let mut ready = false;
    let mut finish = |ready: &mut bool| {
        if !*ready {
            *ready = true;
            loaded();
        }
    };
    if ends.is_empty() {
        finish(&mut ready);
    }
    let started = Instant::now();
    let mut reported = started;
    while !stop.load(Ordering::Relaxed) {
        // Say what the start-up is waiting for, so a processor that stays unready is explainable.
        if !ready && reported.elapsed() >= Duration::from_secs(10) {
            reported = Instant::now();
            tracing::warn!(topic, waiting_secs = started.elapsed().as_secs(), remaining = ?ends,
                "still reading the topic to its end (partition: end offset)");
        }
        match consumer.poll(poll) {
            None => {}
            Some(Err(e)) => tracing::warn!(topic, error = %e, "topic read failed"),
            Some(Ok(m)) => {
                apply(&m);
                if !ready {
                    if let Some(end) = ends.get(&rdkafka::Message::partition(&m))
                        && rdkafka::Message::offset(&m) + 1 >= *end
                    {
                        ends.remove(&rdkafka::Message::partition(&m));
                    }
                    if ends.is_empty() {
                        finish(&mut ready);
                    }
                }
            }
        }
        // Partitions whose remaining records were all compacted away have nothing more to
        // deliver; their position tells us they are done.
        if !ready && let Ok(positions) = consumer.position() {
            ends.retain(|p, end| {
                !matches!(positions.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(pos)) if pos >= *end)
            });
            if ends.is_empty() {
                finish(&mut ready);
            }
        }
    }
    let _ = consumer.assign(&TopicPartitionList::new());
}
