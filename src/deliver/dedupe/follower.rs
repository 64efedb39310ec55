//! The follower thread's side of dedupe: it reads the owned partitions of the history topic,
//! from the window's start to their end and then live, and tells [`Dedupe`] what it read.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use super::{Command, Dedupe};
use crate::kafka::by_time::offset_for_time;

/// The follower thread: applies assignment changes, reads the owned partitions, and marks
/// each loaded when it reaches the end it had at assignment.
pub(super) fn run(
    dedupe: &Dedupe,
    consumer: BaseConsumer,
    resolver: BaseConsumer,
    commands: Receiver<Command>,
) {
    let mut follower = Follower {
        dedupe,
        consumer,
        resolver,
        assigned: HashSet::new(),
        loading: HashMap::new(),
    };
    while !dedupe.stop.load(Ordering::Relaxed) {
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Assign(partitions, from) => partitions
                    .into_iter()
                    .for_each(|p| follower.assign(p, from)),
                Command::Revoke(partitions) => {
                    partitions.into_iter().for_each(|p| follower.revoke(p))
                }
            }
        }
        match follower.consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let (p, offset) = (m.partition(), m.offset());
                dedupe.read(p, m.payload());
                // The message borrows the consumer; release it before the follower moves on.
                drop(m);
                follower.reached(p, offset);
            }
            Some(Err(e)) => tracing::debug!(error = %e, "delivery history fetch failed"),
            None => follower.check_positions(),
        }
    }
}

/// The follower thread's view of the history partitions it reads.
struct Follower<'a> {
    dedupe: &'a Dedupe,
    consumer: BaseConsumer,
    /// Finds start offsets by time, apart from `consumer` so its assignment stays put.
    resolver: BaseConsumer,
    assigned: HashSet<i32>,
    /// partition → high watermark at assignment, while loading.
    loading: HashMap<i32, i64>,
}

impl Follower<'_> {
    /// Starts reading partition `p` from the first record at or after `from` ms.
    fn assign(&mut self, p: i32, from: i64) {
        let topic = &self.dedupe.topic;
        if self.assigned.remove(&p) {
            unassign(&self.consumer, topic, p);
        }
        match self.start_offset(p, from) {
            Ok((start, high)) if start < high => match self.add(p, Offset::Offset(start)) {
                Ok(()) => {
                    self.loading.insert(p, high);
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e,
                        "cannot follow delivery history; dedupe off for it");
                    self.dedupe.mark_loaded(p);
                }
            },
            Ok(_) => {
                // Nothing in the window yet; follow new records from the end.
                let _ = self.add(p, Offset::End);
                self.dedupe.mark_loaded(p);
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e,
                    "cannot read delivery history; dedupe off for the partition");
                self.dedupe.mark_loaded(p);
            }
        }
    }

    fn add(&mut self, p: i32, offset: Offset) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.dedupe.topic, p, offset)?;
        self.consumer.incremental_assign(&tpl)?;
        self.assigned.insert(p);
        Ok(())
    }

    fn revoke(&mut self, p: i32) {
        self.loading.remove(&p);
        if self.assigned.remove(&p) {
            unassign(&self.consumer, &self.dedupe.topic, p);
        }
    }

    /// Marks `p` loaded once `offset` reaches the end it had at assignment.
    fn reached(&mut self, p: i32, offset: i64) {
        if self.loading.get(&p).is_some_and(|high| offset + 1 >= *high) {
            self.loading.remove(&p);
            self.dedupe.mark_loaded(p);
        }
    }

    /// With nothing to read, a loading partition may still be done: compaction may have
    /// removed its last records, and the position tells.
    fn check_positions(&mut self) {
        if self.loading.is_empty() {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for e in positions.elements() {
            let reached = match (e.offset(), self.loading.get(&e.partition())) {
                (Offset::Offset(o), Some(high)) => o >= *high,
                _ => false,
            };
            if reached {
                self.loading.remove(&e.partition());
                self.dedupe.mark_loaded(e.partition());
            }
        }
    }

    /// Where to start reading partition `p` for records at or after `from` ms, and its end.
    fn start_offset(&self, p: i32, from: i64) -> Result<(i64, i64), KafkaError> {
        let topic = &self.dedupe.topic;
        let (_, high) = self
            .resolver
            .fetch_watermarks(topic, p, Duration::from_secs(10))?;
        let (start, _) = offset_for_time(&self.resolver, topic, p, from)?;
        Ok((start, high))
    }
}

fn unassign(consumer: &BaseConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.incremental_unassign(&tpl) {
        tracing::debug!(partition, error = %e, "unassigning a history partition failed");
    }
}
