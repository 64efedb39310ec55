//! The records Herald reads and writes. JSON is the default wire format of the internal topics;
//! the Avro schemas in `schemas/` describe the same records (see [`avro`]): Avro single-object
//! encoding is accepted on input, and history and dead deliveries can be written in Confluent
//! wire format instead (`history.format`).

pub mod avro;
pub mod fingerprint;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One business event for one workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub event_id: String,
    pub workspace_id: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    pub payload: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
}

/// One delivery (event × matched rule) waiting for an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: String,
    pub envelope: EventEnvelope,
    pub rule_id: String,
    pub connection_id: String,
    /// The rule's rendered `with`.
    pub request: serde_json::Value,
    /// Number of the next attempt, starting at 1.
    pub attempt: u32,
    /// Retry tiers used so far; rate-limited waits do not use one.
    #[serde(default)]
    pub retries: u32,
    /// Index of the retry tier the task waits in.
    #[serde(default)]
    pub tier: u32,
    pub due_at: DateTime<Utc>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// The attempts so far, newest last (at most [`MAX_ATTEMPTS_KEPT`]).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// The `herald.events` partition the event came from: the delivery's history records go
    /// to the same partition of `herald.deliveries`, where that partition's owner reads them
    /// for dedupe. `None` for tasks written before Herald recorded it.
    #[serde(default)]
    pub partition: Option<i32>,
    /// When an operator last redrove the delivery: its age for `retry.max_age_ms` counts from
    /// then rather than from its first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redriven_at: Option<DateTime<Utc>>,
    /// The event's offset in that partition: a workspace's events share one partition, so the
    /// offset orders its deliveries (a retried write is skipped when a later event's write to
    /// the same contact succeeded already). `None` for tasks written before Herald recorded it.
    #[serde(default)]
    pub offset: Option<i64>,
}

/// Attempts kept in a task and a history record; older ones are dropped, the count of attempts
/// (`DeliveryTask::attempt`) still says how many there were.
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// Appends `attempt`, dropping the oldest beyond [`MAX_ATTEMPTS_KEPT`].
pub fn push_attempt(attempts: &mut Vec<Attempt>, attempt: Attempt) {
    attempts.push(attempt);
    if attempts.len() > MAX_ATTEMPTS_KEPT {
        let excess = attempts.len() - MAX_ATTEMPTS_KEPT;
        attempts.drain(..excess);
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Retrying,
    Failed,
    Dead,
    Skipped,
}

impl DeliveryStatus {
    /// All statuses, in schema order.
    pub const ALL: [DeliveryStatus; 6] = [
        Self::Pending,
        Self::Delivered,
        Self::Retrying,
        Self::Failed,
        Self::Dead,
        Self::Skipped,
    ];

    /// The lowercase name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Dead => "dead",
            Self::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt at calling a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    /// The outcome's kind: `delivered`, `retry`, `rate_limited`, `permanent`, `connection_broken`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// The latest state of one delivery: the value of `herald.deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub delivery_id: String,
    pub workspace_id: String,
    pub event_id: String,
    pub event: String,
    #[serde(default)]
    pub rule_id: Option<String>,
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub destination: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    pub status: DeliveryStatus,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// For skip summaries: events skipped for this reason since the record was first written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The value of a `herald.dlq` record for a delivery that failed for good: its final history
/// record and the task that attempts it again, or, for a record too large for Kafka, the marker
/// that says what was left out instead of the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadDelivery {
    pub record: DeliveryRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<DeliveryTask>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncated: Option<Truncated>,
}

/// What a record too large for Kafka was, in place of its large fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Truncated {
    /// Always true: the field's presence is the marker.
    pub truncated: bool,
    pub original_bytes: u64,
    pub reason: String,
}

/// The deterministic id of the delivery of `event_id` by `rule_id` in `workspace_id`: a replay of
/// the same event maps to the same id. The workspace is part of the hash because event ids are
/// chosen by producers and rule ids by workspace owners; neither is unique across workspaces.
pub fn delivery_id(workspace_id: &str, event_id: &str, rule_id: &str) -> String {
    stable_id("dl_", &[workspace_id, event_id, rule_id])
}

/// `prefix` followed by the first 16 bytes, in hex, of a SHA-256 over `parts`. Each part is
/// length-prefixed, so ("a", "bc") and ("ab", "c") give different ids.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = h.finalize();
    let mut id = String::with_capacity(prefix.len() + 32);
    id.push_str(prefix);
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_id_is_deterministic_and_distinguishes_its_parts() {
        let a = delivery_id("ws", "evt_1", "rule");
        assert_eq!(a, delivery_id("ws", "evt_1", "rule"));
        assert_eq!(a.len(), 35);
        assert_ne!(a, delivery_id("ws2", "evt_1", "rule"));
        assert_ne!(a, delivery_id("ws", "evt_2", "rule"));
        // Length prefixes keep ("a", "bc") and ("ab", "c") apart.
        assert_ne!(delivery_id("w", "a", "bc"), delivery_id("w", "ab", "c"));
    }
}
