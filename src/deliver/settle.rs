//! Turning one attempt's outcome into what must be written: the history record, and the retry
//! task or the dead letter. Pure, so every branch is a table test.
//!
//! | outcome | history status | also written |
//! |---|---|---|
//! | delivered | `delivered` | — |
//! | retry, rate limited (tier left, not too old) | `retrying`, with `next_attempt_at` | the task, to its tier |
//! | retry (tiers exhausted or too old) | `dead` | dead letter |
//! | permanent (incl. template errors) | `failed` | dead letter |
//! | connection broken | `dead`, reason `connection_broken: …` | dead letter |
//! | retry whose task is too large to store ([`Settled::unretryable`]) | `dead`, reason `retry_task_too_large: …` | dead letter (a truncated stub) |

use chrono::{DateTime, Utc};

use super::retry::{Next, RetryPolicy};
use crate::destinations::Outcome;
use crate::model::records::{
    Attempt, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope, push_attempt,
};

/// Everything known about a delivery before its current attempt.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub delivery_id: String,
    pub envelope: EventEnvelope,
    pub rule_id: String,
    pub connection_id: String,
    pub destination: String,
    pub action: String,
    /// The rendered `with` (null when rendering failed).
    pub request: serde_json::Value,
    /// Number of the attempt being made, starting at 1.
    pub attempt: u32,
    pub retries: u32,
    pub first_attempt_at: DateTime<Utc>,
    pub attempts: Vec<Attempt>,
    /// The `herald.events` partition of the event (see [`DeliveryTask::partition`]).
    pub partition: Option<i32>,
    /// See [`DeliveryTask::redriven_at`].
    pub redriven_at: Option<DateTime<Utc>>,
    /// The event's offset in that partition (see [`DeliveryTask::offset`]).
    pub offset: Option<i64>,
}

impl Delivery {
    /// The state of a delivery waiting in a retry tier.
    pub fn from_task(task: DeliveryTask, destination: String, action: String) -> Self {
        Self {
            first_attempt_at: task.first_attempt_at.unwrap_or(task.due_at),
            delivery_id: task.delivery_id,
            envelope: task.envelope,
            rule_id: task.rule_id,
            connection_id: task.connection_id,
            destination,
            action,
            request: task.request,
            attempt: task.attempt,
            retries: task.retries,
            attempts: task.attempts,
            partition: task.partition,
            redriven_at: task.redriven_at,
            offset: task.offset,
        }
    }
}

/// What one attempt made, if a call was made at all.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub outcome: Outcome,
    /// `None` when no call was made (template error, connection known broken).
    pub call: Option<Attempt>,
    /// Why a retryable delivery was put off without a call, when it was.
    pub deferred: Option<Deferral>,
}

/// Why a delivery was sent to a retry tier without a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deferral {
    /// Its connection's circuit is open for this long yet. It uses a tier as a failed call
    /// would, and is due no earlier (see [`RetryPolicy::at_least`]).
    CircuitOpen(std::time::Duration),
    /// Too many deliveries already wait for its connection, which is busy, not failing: like a
    /// rate limit without a time, it uses no tier and backs off by the attempts made so far
    /// (see [`RetryPolicy::next_busy`]).
    Busy,
}

impl AttemptResult {
    /// The result of `outcome` when no call was made.
    pub fn not_called(outcome: Outcome) -> Self {
        Self {
            outcome,
            call: None,
            deferred: None,
        }
    }
}

/// What to write for a settled attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub record: DeliveryRecord,
    /// The task and the topic of its tier.
    pub retry: Option<(String, DeliveryTask)>,
    /// For a delivery that failed for good: the task that would attempt it again, written to
    /// the dead-letter topic with the record so `herald redrive` can re-enqueue it.
    pub dead_letter: Option<DeliveryTask>,
}

impl Settled {
    /// A retrying delivery whose task cannot be stored (`why`: too large to write) ends dead:
    /// without its task it would never be attempted again. The dead letter keeps the task.
    pub fn unretryable(mut self, why: &str, now: DateTime<Utc>) -> Self {
        let Some((_, mut task)) = self.retry.take() else {
            return self;
        };
        let was = self.record.reason.take().unwrap_or_default();
        let reason = format!(
            "retry_task_too_large: the retry task is too large to store ({why}), so the \
             delivery cannot be retried; last error: {was}"
        );
        task.tier = 0;
        task.retries = 0;
        task.due_at = now;
        task.last_error = Some(reason.clone());
        self.record.status = DeliveryStatus::Dead;
        self.record.reason = Some(reason);
        self.record.next_attempt_at = None;
        self.record.updated_at = now;
        self.dead_letter = Some(task);
        self
    }
}

/// Settles `delivery` after `result`. `draw` is a uniform number in [0, 1) for the jitter.
pub fn settle(
    mut delivery: Delivery,
    result: AttemptResult,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    draw: f64,
) -> Settled {
    if let Some(call) = result.call {
        push_attempt(&mut delivery.attempts, call);
    }
    let reason = result.outcome.reason();
    let task = |retries: u32, tier: usize, due_at: DateTime<Utc>, last_error: Option<String>| {
        DeliveryTask {
            delivery_id: delivery.delivery_id.clone(),
            envelope: delivery.envelope.clone(),
            rule_id: delivery.rule_id.clone(),
            connection_id: delivery.connection_id.clone(),
            request: delivery.request.clone(),
            attempt: delivery.attempt + 1,
            retries,
            tier: tier as u32,
            due_at,
            first_attempt_at: Some(delivery.first_attempt_at),
            last_error,
            partition: delivery.partition,
            offset: delivery.offset,
            attempts: delivery.attempts.clone(),
            redriven_at: delivery.redriven_at,
        }
    };
    let (status, retry, dead, reason) = match &result.outcome {
        Outcome::Delivered => (DeliveryStatus::Delivered, None, false, None),
        Outcome::Permanent { .. } => (DeliveryStatus::Failed, None, true, reason),
        Outcome::ConnectionBroken { reason } => (
            DeliveryStatus::Dead,
            None,
            true,
            Some(format!("connection_broken: {reason}")),
        ),
        Outcome::Retry { .. } | Outcome::RateLimited { .. } => {
            // A redriven delivery's age counts from the redrive.
            let since = delivery.redriven_at.unwrap_or(delivery.first_attempt_at);
            let attempt = delivery.attempt;
            let retries = delivery.retries;
            let last_error = reason.as_deref().unwrap_or_default();
            let next = match result.deferred {
                None => policy.next(&result.outcome, retries, attempt, since, now, draw),
                Some(Deferral::CircuitOpen(least)) => {
                    let next = policy.next(&result.outcome, retries, attempt, since, now, draw);
                    policy.at_least(next, least, last_error, since, now, draw)
                }
                Some(Deferral::Busy) => {
                    policy.next_busy(last_error, retries, attempt, since, now, draw)
                }
            };
            match next {
                Next::Wait {
                    tier,
                    due_at,
                    retries,
                } => {
                    let task = task(retries, tier, due_at, reason.clone());
                    let topic = policy.tiers[tier].topic.clone();
                    (DeliveryStatus::Retrying, Some((topic, task)), false, reason)
                }
                Next::Dead { reason } => (DeliveryStatus::Dead, None, true, Some(reason)),
            }
        }
    };
    // A redriven delivery starts the tiers afresh, due at once.
    let dead_letter = dead.then(|| task(0, 0, now, reason.clone()));
    let next_attempt_at = retry.as_ref().map(|(_, t)| t.due_at);
    let record = DeliveryRecord {
        delivery_id: delivery.delivery_id,
        workspace_id: delivery.envelope.workspace_id,
        event_id: delivery.envelope.event_id,
        event: delivery.envelope.event,
        rule_id: Some(delivery.rule_id),
        connection_id: Some(delivery.connection_id),
        destination: Some(delivery.destination),
        action: Some(delivery.action),
        status,
        reason,
        attempts: delivery.attempts,
        skipped_count: None,
        next_attempt_at,
        created_at: delivery.first_attempt_at,
        updated_at: now,
    };
    Settled {
        record,
        retry,
        dead_letter,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::settings::Settings;

    fn delivery(retries: u32) -> Delivery {
        Delivery {
            delivery_id: "dl_1".into(),
            envelope: EventEnvelope {
                event_id: "evt".into(),
                workspace_id: "ws".into(),
                event: "e".into(),
                resource: None,
                resource_id: None,
                payload: Default::default(),
                occurred_at: None,
                received_at: None,
            },
            rule_id: "r".into(),
            connection_id: "c".into(),
            destination: "webhook".into(),
            action: "post".into(),
            request: serde_json::json!({"a": 1}),
            attempt: retries + 1,
            retries,
            first_attempt_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            attempts: Vec::new(),
            partition: Some(2),
            redriven_at: None,
            offset: Some(5),
        }
    }

    fn call(outcome: &Outcome) -> AttemptResult {
        AttemptResult {
            outcome: outcome.clone(),
            call: Some(Attempt {
                at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                outcome: outcome.kind().into(),
                status_code: Some(500),
                error: outcome.reason(),
                latency_ms: 3,
            }),
            deferred: None,
        }
    }

    #[test]
    fn a_redriven_delivery_ages_from_its_redrive_not_its_first_attempt() {
        let policy = RetryPolicy::from_settings(&Settings::defaults());
        let transient = Outcome::Retry {
            after: None,
            reason: "HTTP 503".into(),
        };
        // Four days after the first attempt: past the default maximum age of three days.
        let first = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let now = first + chrono::Duration::days(4);
        let old = settle(delivery(0), call(&transient), &policy, now, 0.5);
        assert_eq!(old.record.status, DeliveryStatus::Dead);
        let mut redriven = delivery(0);
        redriven.redriven_at = Some(now - chrono::Duration::minutes(1));
        let settled = settle(redriven, call(&transient), &policy, now, 0.5);
        assert_eq!(settled.record.status, DeliveryStatus::Retrying);
        let (_, task) = settled.retry.expect("a retry task");
        assert_eq!(task.redriven_at, Some(now - chrono::Duration::minutes(1)));
        assert_eq!(
            task.first_attempt_at,
            Some(first),
            "history keeps its creation time"
        );
    }

    #[test]
    fn each_outcome_settles_to_its_status_and_writes() {
        let policy = RetryPolicy::from_settings(&Settings::defaults());
        let now = DateTime::from_timestamp(1_800_000_001, 0).unwrap();
        let transient = Outcome::Retry {
            after: None,
            reason: "HTTP 503".into(),
        };
        let cases: Vec<(Outcome, u32, DeliveryStatus, bool, bool)> = vec![
            (
                Outcome::Delivered,
                0,
                DeliveryStatus::Delivered,
                false,
                false,
            ),
            (transient.clone(), 0, DeliveryStatus::Retrying, true, false),
            (
                Outcome::RateLimited {
                    after: Some(Duration::from_secs(1)),
                },
                0,
                DeliveryStatus::Retrying,
                true,
                false,
            ),
            (transient, 5, DeliveryStatus::Dead, false, true),
            (
                Outcome::Permanent {
                    reason: "HTTP 400".into(),
                },
                0,
                DeliveryStatus::Failed,
                false,
                true,
            ),
            (
                Outcome::ConnectionBroken {
                    reason: "HTTP 401".into(),
                },
                0,
                DeliveryStatus::Dead,
                false,
                true,
            ),
        ];
        for (outcome, retries, status, retried, dead_letter) in cases {
            let s = settle(delivery(retries), call(&outcome), &policy, now, 0.5);
            assert_eq!(s.record.status, status, "{outcome:?}");
            assert_eq!(s.retry.is_some(), retried, "{outcome:?}");
            assert_eq!(s.dead_letter.is_some(), dead_letter, "{outcome:?}");
            assert_eq!(s.record.attempts.len(), 1);
            assert_eq!(s.record.next_attempt_at.is_some(), retried);
        }
    }

    #[test]
    fn a_retry_task_carries_the_next_attempt_and_the_history_so_far() {
        let policy = RetryPolicy::from_settings(&Settings::defaults());
        let now = DateTime::from_timestamp(1_800_000_001, 0).unwrap();
        let outcome = Outcome::Retry {
            after: Some(Duration::from_secs(30)),
            reason: "HTTP 503".into(),
        };
        let s = settle(delivery(0), call(&outcome), &policy, now, 0.5);
        let (topic, task) = s.retry.unwrap();
        assert_eq!(
            topic, "herald.retry.1m",
            "smallest tier not earlier than Retry-After"
        );
        assert_eq!(task.attempt, 2);
        assert_eq!(task.retries, 1);
        assert_eq!(task.due_at, now + chrono::Duration::seconds(30));
        assert_eq!(task.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(task.attempts.len(), 1);
        assert_eq!(s.record.reason.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn a_retry_that_cannot_be_stored_ends_dead_with_its_task_dead_lettered() {
        let policy = RetryPolicy::from_settings(&Settings::defaults());
        let now = DateTime::from_timestamp(1_800_000_001, 0).unwrap();
        let outcome = Outcome::Retry {
            after: None,
            reason: "HTTP 503".into(),
        };
        let s = settle(delivery(0), call(&outcome), &policy, now, 0.5)
            .unretryable("3000000 bytes, over kafka.max_record_bytes = 2097152", now);
        assert_eq!(s.record.status, DeliveryStatus::Dead);
        assert!(s.retry.is_none() && s.record.next_attempt_at.is_none());
        let reason = s.record.reason.as_deref().unwrap();
        assert!(
            reason.starts_with("retry_task_too_large:") && reason.ends_with("HTTP 503"),
            "{reason}"
        );
        let task = s.dead_letter.unwrap();
        assert_eq!((task.tier, task.retries, task.due_at), (0, 0, now));
        assert_eq!(task.request, serde_json::json!({"a": 1}));
    }

    #[test]
    fn connection_broken_reason_is_marked() {
        let policy = RetryPolicy::from_settings(&Settings::defaults());
        let outcome = Outcome::ConnectionBroken {
            reason: "slack error: invalid_auth".into(),
        };
        let s = settle(
            delivery(0),
            AttemptResult::not_called(outcome),
            &policy,
            Utc::now(),
            0.5,
        );
        assert_eq!(
            s.record.reason.as_deref(),
            Some("connection_broken: slack error: invalid_auth")
        );
        assert!(s.record.attempts.is_empty(), "no call was made");
    }
}
