//! The consumer of the retry tiers (`herald.retry.<delay>`), running beside the event consumer
//! in `herald run`.
//!
//! Each tier topic holds deliveries with about one delay, so a partition is roughly ordered by
//! due time. When a partition's head record is not due yet, the partition is paused and the
//! record is held in memory (one per partition) until it is due; then it is attempted and the
//! partition resumed. librdkafka restarts a resumed partition after the last record it handed
//! over, so nothing is read twice and nothing polls busily; other partitions and first attempts
//! are never blocked.
//!
//! A head never holds its partition for longer than its tier allows
//! ([`RetryPolicy::head`](super::retry::RetryPolicy::head)): one due later than the tier's delay
//! × (1 + `retry.jitter`) from now (a long `Retry-After`) is forwarded instead — written, due
//! time unchanged, to the tail of the first tier that fits its wait, and its offset stored only
//! once Kafka acknowledged the copy. In the last tier such a record is held for that tier's
//! delay since it was written, then forwarded to the tail of the last tier again: re-written
//! at most once per delay. So a head is held at most its tier's delay × (1 + jitter) after it
//! is read; as records enter a tier in time order and each is due within ±jitter of the delay,
//! a record behind a held head waits at most about 2 × jitter × delay past its due time (one
//! with a `Retry-After` shorter than the tier's delay can wait up to that delay).
//!
//! Offsets are stored, as for events, only after every outcome of the attempt was acknowledged.
//! A record that cannot be read goes to the dead-letter topic, never back to a tier, so a
//! poison record cannot loop.
//!
//! Rebalances: a held head belongs to the assignment it was read in. When its partition is
//! revoked it is dropped (the partition's next owner, maybe this replica again, re-reads it from
//! the committed offset), and a partition newly assigned is resumed, as librdkafka keeps a
//! partition paused across revoke and re-assignment.
//!
//! Retries of one connection call it at most `retry.max_in_flight_per_connection` at a time;
//! further due ones wait their turn, at most `processor.max_queued_per_connection` of them, and
//! at most `processor.max_queued_per_workspace` of one workspace's retries are in the consumer
//! at all; beyond that they go back to a retry tier without a call, using none of their tiers.
//! So when a hanging connection's backlog comes due it holds a few of the consumer's places, a
//! workspace with many such connections at most a bounded share, and every other workspace's
//! retries keep moving. A retry whose connection's circuit is open does not wait its turn: it is turned
//! away at once.
//!
//! Retries sent back without a call (their connection's lane is full or its circuit open) are
//! paced to `retry.max_deferrals_per_second`: each costs two acknowledged writes, and a broken
//! connection's backlog of thousands coming due at once would otherwise take the replica's
//! Kafka writes from every other tenant's deliveries for a moment. While they wait for their
//! turn they hold places, so other retries may wait behind such a backlog.
//!
//! The consumer is polled all the time: with `retry.max_in_flight` attempts and forwards under
//! way, the loop waits up to [`PAUSE_AFTER`] for one to finish, then pauses the assigned
//! partitions until one does and polls meanwhile, so a destination that hangs never keeps the
//! consumer from polling past `max.poll.interval.ms`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, TopicPartitionList};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::offsets::{Claim, OffsetTracker};
use super::order::{Full, Shares};
use super::processor::{
    LagGauges, PAUSE_AFTER, ProcessorContext, ProcessorError, finish, stopped, store_finished,
};
use super::retry::Head;
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

/// A topic and partition.
type Key = (String, i32);

/// A not-yet-due head record of a paused partition, claimed in the assignment it was read in.
struct Held {
    seq: u64,
    claim: Claim,
    message: OwnedMessage,
}

/// What every attempt and forward of the retry consumer shares.
struct Shared {
    router: Arc<Router>,
    consumer: Arc<RetryConsumer>,
    tracker: Arc<OffsetTracker>,
    /// `retry.max_in_flight`: attempts and forwards under way at once.
    permits: Semaphore,
    lanes: Lanes,
    deferrals: Pace,
}

/// The running state of the retry consumer.
struct Worker {
    shared: Arc<Shared>,
    max_in_flight: usize,
    tasks: JoinSet<()>,
    held: HashMap<Key, Held>,
    seq: u64,
    due_tx: mpsc::UnboundedSender<(Key, u64)>,
    /// Every assigned partition is paused because `max_in_flight` tasks are under way.
    saturated: bool,
    /// The partitions this replica paused and did not resume since, assigned or not:
    /// librdkafka keeps the pause when a partition is revoked and assigned again.
    paused: HashSet<Key>,
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
                events_topic: String::new(),
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

    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<(Key, u64)>();
    let shared = Arc::new(Shared {
        router: router.clone(),
        consumer: consumer.clone(),
        tracker: tracker.clone(),
        permits: Semaphore::new(settings.retry.max_in_flight),
        lanes: Lanes::new(
            settings.retry.max_in_flight_per_connection,
            settings.processor.max_queued_per_connection,
            settings.processor.max_queued_per_workspace,
        ),
        deferrals: Pace::new(settings.retry.max_deferrals_per_second),
    });
    let mut w = Worker {
        shared,
        max_in_flight: settings.retry.max_in_flight,
        tasks: JoinSet::new(),
        held: HashMap::new(),
        seq: 0,
        due_tx,
        saturated: false,
        paused: HashSet::new(),
    };
    let mut gauge_tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        while w.tasks.try_join_next().is_some() {}
        if !w.saturated && w.tasks.len() >= w.max_in_flight {
            // Under load places free many times a second: wait a moment for one before pausing,
            // as the event processor does, since a resumed partition may restart a second late.
            tokio::select! {
                _ = tokio::time::timeout(PAUSE_AFTER, w.tasks.join_next()) => {}
                _ = stopped(&mut shutdown) => break,
            }
            while w.tasks.try_join_next().is_some() {}
        }
        w.pace();
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = gauge_tick.tick() => oldest_age(&router, &w.held),
            _ = tracker.assignment_changed() => w.rebalanced(),
            Some(_) = w.tasks.join_next(), if w.saturated => {}
            Some((key, s)) = due_rx.recv() => w.due(key, s),
            message = consumer.recv() => match message {
                Ok(m) => {
                    let m = m.detach();
                    let claim = tracker.begin(m.topic(), m.partition(), m.offset());
                    w.dispatch(claim, m);
                }
                Err(e) => tracing::warn!(error = %e, "retry consume error"),
            },
        }
    }

    finish(&mut w.tasks, &consumer, settings).await;
    Ok(())
}

impl Worker {
    /// Attempts, holds or forwards a claimed record, as its due time and tier say.
    fn dispatch(&mut self, claim: Claim, m: OwnedMessage) {
        let policy = &self.shared.router.policy;
        let now = Utc::now();
        // An unreadable record is "due": its attempt sends it to the dead-letter topic.
        let wait = due_at(&m).map_or(Duration::ZERO, |due| {
            (due - now).to_std().unwrap_or_default()
        });
        let in_tier = m
            .timestamp()
            .to_millis()
            .and_then(|t| u64::try_from(now.timestamp_millis() - t).ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let tier = policy
            .tiers
            .iter()
            .position(|t| t.topic == m.topic())
            .unwrap_or(policy.tiers.len() - 1);
        match policy.head(tier, wait, in_tier) {
            Head::Attempt => {
                self.tasks.spawn(attempt(self.shared.clone(), m, claim));
            }
            Head::Forward(to) => {
                let topic = policy.tiers[to].topic.clone();
                let job = forward(self.shared.clone(), m, claim, (to, topic));
                self.tasks.spawn(job);
            }
            Head::Hold(wait) => {
                let key = (m.topic().to_owned(), m.partition());
                if !self.paused.contains(&key) {
                    self.pause(vec![key.clone()]);
                }
                self.seq += 1;
                let (tx, timer_key, s) = (self.due_tx.clone(), key.clone(), self.seq);
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send((timer_key, s));
                });
                let held = Held {
                    seq: s,
                    claim,
                    message: m,
                };
                self.held.insert(key, held);
            }
        }
    }

    /// A hold ended: decide again for the held record, and let its partition move on.
    fn due(&mut self, key: Key, seq: u64) {
        if self.held.get(&key).is_none_or(|h| h.seq != seq) {
            return; // dropped by a rebalance, or replaced
        }
        let Some(h) = self.held.remove(&key) else {
            return;
        };
        if !self.shared.tracker.is_current(&h.claim) {
            return; // revoked meanwhile; whoever owns it now re-reads it
        }
        self.dispatch(h.claim, h.message);
        if !self.held.contains_key(&key) && !self.saturated {
            self.resume(vec![key]);
        }
    }

    /// Pauses every assigned partition while `max_in_flight` tasks are under way, and resumes
    /// those not holding a head once fewer are: reading stops, polling never does.
    fn pace(&mut self) {
        let saturated = self.tasks.len() >= self.max_in_flight;
        if saturated != self.saturated {
            self.saturated = saturated;
            self.apply_pauses();
        }
    }

    /// After a rebalance: drops the heads of partitions revoked since they were read, and makes
    /// the assigned partitions consume again — librdkafka keeps a partition this replica paused
    /// paused across revoke and re-assignment, with nothing held here any more to resume it.
    fn rebalanced(&mut self) {
        let tracker = &self.shared.tracker;
        self.held.retain(|_, h| tracker.is_current(&h.claim));
        self.apply_pauses();
    }

    /// While saturated, pauses every assigned partition; otherwise resumes every assigned
    /// partition this replica paused that holds no head. Only partitions paused here are
    /// resumed: librdkafka restarts a resumed partition from its last pause or assignment
    /// position, which for a partition that was never paused would read records again.
    fn apply_pauses(&mut self) {
        let Ok(assigned) = self.shared.consumer.assignment() else {
            return;
        };
        let assigned: Vec<Key> = assigned
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let assigned = assigned.into_iter();
        if self.saturated {
            let unpaused: Vec<Key> = assigned.filter(|k| !self.paused.contains(k)).collect();
            self.pause(unpaused);
        } else {
            let free: Vec<Key> = assigned
                .filter(|k| self.paused.contains(k) && !self.held.contains_key(k))
                .collect();
            self.resume(free);
        }
    }

    fn pause(&mut self, keys: Vec<Key>) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.shared.consumer.pause(&partition_list(&keys)) {
            tracing::warn!(error = %e, partitions = ?keys, "pausing retry partitions failed");
        }
        self.paused.extend(keys);
    }

    /// Resumes those of `keys` this replica paused.
    fn resume(&mut self, keys: Vec<Key>) {
        let keys: Vec<Key> = keys
            .into_iter()
            .filter(|k| self.paused.contains(k))
            .collect();
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.shared.consumer.resume(&partition_list(&keys)) {
            tracing::warn!(error = %e, partitions = ?keys, "resuming retry partitions failed");
            return;
        }
        for k in &keys {
            self.paused.remove(k);
        }
    }
}

fn partition_list<'a>(keys: impl IntoIterator<Item = &'a Key>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in keys {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

/// Sets `herald_retry_oldest_age_seconds{tier}` from the held head records: the time since the
/// oldest of them entered its tier (0 when nothing waits).
fn oldest_age(router: &Router, held: &HashMap<Key, Held>) {
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

/// Attempts a due record (or dead-letters an unreadable one), then stores its offset.
async fn attempt(shared: Arc<Shared>, m: OwnedMessage, claim: Claim) {
    // The loop bounds the tasks it starts; this bounds the calls even across a rebalance.
    let _permit = shared.permits.acquire().await;
    let router = &shared.router;
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
            retry(&shared, task).instrument(span).await
        }
    }
    store_finished(&shared.tracker, &claim, &*shared.consumer);
}

/// Writes a record due later than its tier allows to the tail of tier `to`, due time unchanged,
/// then stores its offset: until Kafka acknowledged the copy, the original stays uncommitted.
async fn forward(shared: Arc<Shared>, m: OwnedMessage, claim: Claim, (to, topic): (usize, String)) {
    let Ok(mut task) = serde_json::from_slice::<DeliveryTask>(m.payload().unwrap_or_default())
    else {
        // Only its due time could be read: the attempt path dead-letters it.
        return attempt(shared, m, claim).await;
    };
    let router = &shared.router;
    tracing::debug!(delivery_id = %task.delivery_id, from = m.topic(), to = %topic,
        due_at = %task.due_at, "retry task due later than its tier allows; forwarded");
    task.tier = to as u32;
    if let Err(too_large) = router.writer.retry_task(&topic, &task).await {
        // It fitted when it was written; only a lowered `kafka.max_record_bytes` gets here.
        // Attempting it early beats losing it or holding the partition.
        tracing::warn!(delivery_id = %task.delivery_id, %too_large,
            "retry task no longer fits to be forwarded; attempted now instead");
        return attempt(shared, m, claim).await;
    }
    store_finished(&shared.tracker, &claim, &*shared.consumer);
}

/// Attempts a due task again with the workspace's current rule and connection, when its turn
/// on the connection comes.
async fn retry(shared: &Shared, task: DeliveryTask) {
    let router = &shared.router;
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
    let connection = rule.connection.id.as_str();
    let lane = match shared.lanes.enter(&workspace.id, connection) {
        Ok(lane) => lane,
        Err(full) => {
            shared.deferrals.turn().await;
            let reason = match full {
                Full::Connection(held) => format!(
                    "not called: {held} retries of this connection are already under way or \
                     waiting (retry.max_in_flight_per_connection, \
                     processor.max_queued_per_connection); sent back to a retry tier instead"
                ),
                Full::Workspace(held) => format!(
                    "not called: {held} retries of this workspace are already under way or \
                     waiting (processor.max_queued_per_workspace); sent back to a retry tier \
                     instead"
                ),
            };
            return router.defer(rule, delivery, reason).await;
        }
    };
    // Turned away by an open circuit: no need to wait for a turn in the lane to be told so.
    let turns_away = || {
        router
            .breakers
            .turns_away(&workspace.id, connection, Instant::now())
    };
    if turns_away() {
        shared.deferrals.turn().await;
    }
    // Asked again after the pace: the circuit may have let a probe through meanwhile, and a
    // call takes a turn in the lane.
    let _turn = if turns_away() {
        None
    } else {
        Some(lane.turn().await)
    };
    router
        .attempt_and_record(&workspace, rule, delivery, Ok(()))
        .await;
}

/// The retries of each connection in the consumer: at most `calls` of them call it at once,
/// at most `calls + queued` are in the consumer at all, and at most `per_workspace` of one
/// workspace's. A connection or workspace has an entry only while it has retries in the
/// consumer, so the maps are no larger than `retry.max_in_flight`.
struct Lanes {
    calls: usize,
    queued: usize,
    per_workspace: usize,
    state: Mutex<LaneState>,
}

#[derive(Default)]
struct LaneState {
    lanes: HashMap<(String, String), Lane>,
    /// Retries of each workspace in the consumer.
    workspaces: Shares,
}

struct Lane {
    turns: Arc<Semaphore>,
    /// Retries of the connection in the consumer, calling or waiting.
    retries: usize,
}

/// A retry's place in its connection's lane, given up when dropped.
struct InLane<'a> {
    lanes: &'a Lanes,
    key: (String, String),
    turns: Arc<Semaphore>,
}

impl Lanes {
    fn new(calls: usize, queued: usize, per_workspace: usize) -> Self {
        Self {
            calls,
            queued,
            per_workspace: per_workspace.max(1),
            state: Mutex::default(),
        }
    }

    /// A place in the lane of `workspace`'s `connection`, or, when the lane or the workspace's
    /// share is full, which and how many retries it holds.
    fn enter(&self, workspace: &str, connection: &str) -> Result<InLane<'_>, Full> {
        let key = (workspace.to_owned(), connection.to_owned());
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let LaneState { lanes, workspaces } = &mut *state;
        let held = workspaces.held(workspace);
        let in_lane = lanes.get(&key).map_or(0, |l| l.retries);
        if in_lane >= self.calls + self.queued {
            return Err(Full::Connection(in_lane));
        }
        if held >= self.per_workspace {
            return Err(Full::Workspace(held));
        }
        let lane = lanes.entry(key.clone()).or_insert_with(|| Lane {
            turns: Arc::new(Semaphore::new(self.calls)),
            retries: 0,
        });
        lane.retries += 1;
        workspaces.take(workspace);
        Ok(InLane {
            lanes: self,
            key,
            turns: lane.turns.clone(),
        })
    }

    /// Connections and workspaces with retries in the consumer.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (state.lanes.len(), state.workspaces.len())
    }
}

impl InLane<'_> {
    /// Waits until fewer than `calls` retries of the connection are calling it; the turn lasts
    /// as long as the permit.
    async fn turn(&self) -> SemaphorePermit<'_> {
        self.turns
            .acquire()
            .await
            .expect("a lane's semaphore is never closed")
    }
}

impl Drop for InLane<'_> {
    fn drop(&mut self) {
        let mut state = self.lanes.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lane) = state.lanes.get_mut(&self.key) {
            lane.retries -= 1;
            if lane.retries == 0 {
                state.lanes.remove(&self.key);
            }
        }
        state.workspaces.give_back(&self.key.0);
    }
}

/// The pace of retries sent back without a call (`retry.max_deferrals_per_second`): a burst of
/// a tenth of a second's worth, then one every `1 / per_second`, in the order they asked.
struct Pace {
    limiter: DefaultDirectRateLimiter,
    /// Only the first in line watches the limiter, so hundreds waiting do not all wake for
    /// every turn; tokio's mutex is fair, so turns go in order.
    line: tokio::sync::Mutex<()>,
}

impl Pace {
    fn new(per_second: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(per_second.get() / 10).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
            line: tokio::sync::Mutex::new(()),
        }
    }

    async fn turn(&self) {
        let _first = self.line.lock().await;
        self.limiter.until_ready().await;
    }
}

/// Ends a task whose rule or workspace is gone: `failed`, with the reason, to the DLQ.
async fn give_up(router: &Router, task: DeliveryTask, reason: String) {
    let partition = task.partition;
    let delivery = Delivery::from_task(task, String::new(), String::new());
    let result = AttemptResult::not_called(Outcome::Permanent { reason });
    let settled = settle(delivery, result, &router.policy, Utc::now(), 0.5);
    let dead = async {
        if let Some(task) = &settled.dead_letter {
            router.writer.dead_delivery(&settled.record, task).await;
        }
    };
    futures::join!(router.writer.history(&settled.record, partition), dead);
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_connection_holds_at_most_its_calls_and_queue_and_leaves_no_entry_behind() {
        let lanes = Lanes::new(2, 3, 100);
        let full: Vec<InLane> = (0..5).map(|_| lanes.enter("ws", "c").unwrap()).collect();
        assert_eq!(
            lanes.enter("ws", "c").err(),
            Some(Full::Connection(5)),
            "the lane is full"
        );
        let other = lanes
            .enter("ws", "d")
            .expect("another connection has a lane of its own");
        let first = full[0].turn().await;
        let second = full[1].turn().await;
        assert!(
            full[2].turn().now_or_never().is_none(),
            "a third call waits for a turn"
        );
        assert!(other.turn().now_or_never().is_some());
        drop(first);
        assert!(full[2].turn().now_or_never().is_some(), "a turn freed");
        drop(second);
        drop(full);
        assert_eq!(lanes.len(), (1, 1));
        drop(other);
        assert_eq!(
            lanes.len(),
            (0, 0),
            "no connection or workspace is remembered once its retries left"
        );
    }

    #[test]
    fn a_workspace_holds_at_most_its_share_across_its_connections() {
        let lanes = Lanes::new(2, 3, 7);
        let held: Vec<InLane> = ["a", "b"]
            .iter()
            .flat_map(|c| (0..5).filter_map(|_| lanes.enter("ws", c).ok()))
            .collect();
        assert_eq!(held.len(), 7, "five in one lane, two in the other");
        assert_eq!(lanes.enter("ws", "c").err(), Some(Full::Workspace(7)));
        let other = lanes.enter("other", "a");
        assert!(other.is_ok(), "another workspace has a share of its own");
        drop(held);
        assert!(lanes.enter("ws", "c").is_ok(), "places free again");
    }

    #[tokio::test]
    async fn turns_of_the_pace_come_no_faster_than_its_rate_after_a_tenth_of_a_second_burst() {
        let pace = Pace::new(50); // a burst of 5, then one every 20 ms
        let started = Instant::now();
        for _ in 0..15 {
            pace.turn().await;
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(190), "15 turns in {took:?}");
    }
}
