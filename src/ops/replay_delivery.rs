//! Replaying one delivery: a new attempt now, whatever the delivery's state, even `delivered`.
//!
//! The delivery's event is found again in `herald.events` (searched by time around the
//! delivery's first attempt), its rule rendered with the workspace's current configuration, and
//! the task put in the first retry tier, due now, with its tiers counted afresh; then history
//! records the delivery `retrying`. The retry consumer attempts it as any other retry. A
//! `failed` or `dead` delivery whose event is gone from `herald.events` (retention) is sent
//! with the task the dead-letter topic keeps for it, as redrive does.
//!
//! Nothing skips the new attempt: dedupe only checks first attempts (a retry task exists only
//! for a delivery that was not delivered, except this one, which the operator asked for), and
//! the task carries no event offset, so a later event's write to the same contact does not
//! supersede it either: replaying an older write over a newer one is the operator's call.

use std::ops::ControlFlow;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::redrive;
use super::workspace_replay::{self, TargetedError, Window};
use crate::deliver::route::Router;
use crate::history::writer::DeadDelivery;
use crate::model::records::{DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope};
use crate::settings::Settings;
use crate::workspace::table::WorkspaceEntry;
use crate::workspace::templates::render_context;

/// Where the event is looked for, relative to the delivery's first attempt: first just around
/// it (most events are delivered within seconds), then a day before it (a processor that lagged
/// behind). Beyond that the scan would cost more than the replay is worth; the dead-letter
/// task, when there is one, is the fallback.
const SEARCH: [(TimeDelta, TimeDelta); 2] = [
    (TimeDelta::minutes(5), TimeDelta::minutes(-5)),
    (TimeDelta::days(1), TimeDelta::minutes(5)),
];

/// Where a replay's task came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The event, read again from `herald.events` and rendered with the current rule.
    Event,
    /// The task the dead-letter topic keeps for a failed or dead delivery.
    DeadLetter,
}

/// What a replay enqueued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    pub delivery_id: String,
    pub event_id: String,
    pub rule_id: String,
    pub connection_id: String,
    /// The number the new attempt will have.
    pub attempt: u32,
    /// The retry tier topic the task waits in.
    pub topic: String,
    pub due_at: DateTime<Utc>,
    pub source: Source,
}

/// Why a delivery cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayOneError {
    #[error("this record is a skip summary, not a delivery: it has no rule to replay")]
    NotADelivery,
    #[error("workspace `{0}` is not loaded and valid on this replica")]
    Workspace(String),
    #[error("rule `{0}` is no longer in the workspace")]
    RuleRemoved(String),
    #[error("rule `{rule}` now sends to connection `{now}`, not `{was}`; replay its event instead")]
    ConnectionChanged {
        rule: String,
        was: String,
        now: String,
    },
    #[error(
        "event `{0}` is no longer in the events topic (retention) and the dead-letter topic \
         has no task for this delivery"
    )]
    EventGone(String),
    #[error("the rule's request does not render for this event: {0}")]
    Render(String),
    #[error("the task is too large to enqueue: {0}")]
    TooLarge(String),
    #[error("reading the topics failed: {0}")]
    Read(#[from] TargetedError),
    #[error("reading the dead-letter topic failed: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading the dead-letter topic failed: {0}")]
    History(#[from] crate::history::reader::HistoryReadError),
}

impl ReplayOneError {
    /// Whether the delivery itself, not Kafka, is why: asking again will not help.
    pub fn is_conflict(&self) -> bool {
        !matches!(self, Self::Read(_) | Self::Kafka(_) | Self::History(_))
    }
}

/// Enqueues a new attempt of `record` (the delivery's latest state) through `router`'s writer
/// and workspace table.
pub async fn replay_delivery(
    settings: &Settings,
    router: &Router,
    record: &DeliveryRecord,
) -> Result<Enqueued, ReplayOneError> {
    let rule_id = record.rule_id.clone().ok_or(ReplayOneError::NotADelivery)?;
    let connection_id = record.connection_id.clone().unwrap_or_default();
    let now = Utc::now();
    let (task, source) = match find_event(settings, record).await? {
        Some((partition, envelope)) => {
            let task = rendered(router, record, &rule_id, &connection_id, envelope, now)?;
            (
                DeliveryTask {
                    partition: Some(partition),
                    ..task
                },
                Source::Event,
            )
        }
        None => match dead_task(settings, record).await? {
            Some(dead) => (redrive::requeued(&dead, now).1, Source::DeadLetter),
            None => return Err(ReplayOneError::EventGone(record.event_id.clone())),
        },
    };
    let topic = router.policy.tiers[0].topic.clone();
    // The task first: if the process stops between the two writes, the delivery is attempted
    // and history catches up, rather than saying `retrying` with no task behind it.
    router
        .writer
        .retry_task(&topic, &task)
        .await
        .map_err(|e| ReplayOneError::TooLarge(e.to_string()))?;
    let mut retrying = record.clone();
    retrying.status = DeliveryStatus::Retrying;
    retrying.reason = Some(format!(
        "replayed by the operator; was {}{}",
        record.status,
        record
            .reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    ));
    retrying.next_attempt_at = Some(now);
    retrying.updated_at = now;
    router.writer.history(&retrying, task.partition).await;
    tracing::info!(delivery_id = %task.delivery_id, attempt = task.attempt, ?source,
        "delivery replayed by the operator");
    Ok(Enqueued {
        delivery_id: task.delivery_id,
        event_id: record.event_id.clone(),
        rule_id,
        connection_id: task.connection_id,
        attempt: task.attempt,
        topic,
        due_at: task.due_at,
        source,
    })
}

/// The task of a new attempt at `record`'s delivery of `envelope`, rendered with the
/// workspace's current rule. The rule's `when` is not evaluated again: the operator asks for
/// this delivery, which was made.
fn rendered(
    router: &Router,
    record: &DeliveryRecord,
    rule_id: &str,
    connection_id: &str,
    envelope: EventEnvelope,
    now: DateTime<Utc>,
) -> Result<DeliveryTask, ReplayOneError> {
    let workspace = match router.table.get(&record.workspace_id) {
        Some(WorkspaceEntry::Ready(ws)) => ws,
        _ => return Err(ReplayOneError::Workspace(record.workspace_id.clone())),
    };
    let rule = workspace
        .rule(rule_id)
        .ok_or_else(|| ReplayOneError::RuleRemoved(rule_id.to_owned()))?;
    if rule.connection.id != connection_id {
        return Err(ReplayOneError::ConnectionChanged {
            rule: rule_id.to_owned(),
            was: connection_id.to_owned(),
            now: rule.connection.id.clone(),
        });
    }
    let request = workspace
        .render(rule, &render_context(&envelope))
        .map_err(|e| ReplayOneError::Render(e.to_string()))?;
    Ok(DeliveryTask {
        delivery_id: record.delivery_id.clone(),
        envelope,
        rule_id: rule_id.to_owned(),
        connection_id: connection_id.to_owned(),
        request,
        // The record keeps the last attempts only; its count is a floor of the attempts made.
        attempt: record.attempts.len() as u32 + 1,
        retries: 0,
        tier: 0,
        due_at: now,
        first_attempt_at: Some(record.created_at),
        last_error: record.reason.clone(),
        attempts: record.attempts.clone(),
        partition: None,
        // Its age (`retry.max_age_ms`) counts from now.
        redriven_at: Some(now),
        // Unknown on purpose: see the module's header on superseding.
        offset: None,
    })
}

/// The delivery's event and its partition, searched in `herald.events` around the delivery's
/// first attempt (`None` when retention removed it). The console shows the request a delivery
/// sends with it.
pub async fn find_event(
    settings: &Settings,
    record: &DeliveryRecord,
) -> Result<Option<(i32, EventEnvelope)>, ReplayOneError> {
    let settings = settings.clone();
    let record = record.clone();
    let found = tokio::task::spawn_blocking(move || {
        for (before, after) in SEARCH {
            let window = Window {
                workspace_id: record.workspace_id.clone(),
                since: record.created_at - before,
                until: Some(record.created_at - after),
                rule: None,
                force: false,
            };
            let mut found = None;
            workspace_replay::scan_window(&settings, &window, |p, _, e| {
                if e.event_id == record.event_id {
                    found = Some((p, e));
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok::<_, TargetedError>(None)
    })
    .await
    .map_err(TargetedError::from)??;
    Ok(found)
}

/// The dead-letter topic's task for a `failed` or `dead` delivery.
async fn dead_task(
    settings: &Settings,
    record: &DeliveryRecord,
) -> Result<Option<DeadDelivery>, ReplayOneError> {
    if !matches!(record.status, DeliveryStatus::Failed | DeliveryStatus::Dead) {
        return Ok(None);
    }
    let settings = settings.clone();
    let (workspace, id) = (record.workspace_id.clone(), record.delivery_id.clone());
    let dead = tokio::task::spawn_blocking(move || {
        let mut found = None;
        redrive::read_dead(&settings, &workspace, |d| {
            if d.record.delivery_id == id {
                found = Some(d);
            }
        })?;
        Ok::<_, crate::history::reader::HistoryReadError>(found)
    })
    .await
    .map_err(TargetedError::from)??;
    Ok(dead)
}
