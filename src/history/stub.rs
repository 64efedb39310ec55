//! Truncated stubs: what Herald writes in place of a record too large for Kafka, so the outcome
//! is still recorded and the event's partition moves on. A stub keeps every id and the status,
//! replaces the large fields (reasons, payload, rendered request, original bytes) by a marker
//! that says how large the record was, and carries the header `herald.truncated: true`.

use crate::model::error::excerpt;
use crate::model::records::{DeadDelivery, DeliveryRecord, Truncated};

/// Why a record could not be written as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{bytes} bytes, {why}")]
pub struct TooLarge {
    /// The record's size: key, value and headers.
    pub bytes: usize,
    /// Over which limit, or how Kafka refused it.
    pub why: String,
}

impl TooLarge {
    /// Over Herald's own limit, checked before producing.
    pub fn over_limit(bytes: usize, limit: usize) -> Self {
        Self {
            bytes,
            why: format!("over kafka.max_record_bytes = {limit}"),
        }
    }

    /// Refused by the producer or the broker.
    pub fn refused(bytes: usize, error: &rdkafka::error::KafkaError) -> Self {
        Self {
            bytes,
            why: format!("refused by Kafka as too large ({error})"),
        }
    }
}

/// The history record written instead of `record`: the reason becomes a marker followed by its
/// beginning, and each attempt keeps its error's beginning only.
pub fn history(record: &DeliveryRecord, too_large: &TooLarge) -> DeliveryRecord {
    let mut stub = record.clone();
    let was = record.reason.as_deref().map(excerpt).unwrap_or_default();
    stub.reason = Some(format!(
        "truncated: the history record was {too_large}; its reason began: {was}"
    ));
    for attempt in &mut stub.attempts {
        attempt.error = attempt.error.as_deref().map(excerpt);
    }
    stub
}

/// The marker that replaces what did not fit.
pub fn marker(what: &str, too_large: &TooLarge) -> serde_json::Value {
    // A marker is plain data: it always serialises.
    serde_json::to_value(truncated(what, too_large)).expect("markers serialise")
}

fn truncated(what: &str, too_large: &TooLarge) -> Truncated {
    Truncated {
        truncated: true,
        original_bytes: too_large.bytes as u64,
        reason: format!("{what} was {too_large}; its large fields were left out"),
    }
}

/// The dead letter of a delivery written instead of record + task: the record (itself a stub
/// when it is large) and the marker. Without its task, `herald redrive` cannot re-enqueue it.
pub fn dead_delivery(record: &DeliveryRecord, too_large: &TooLarge) -> DeadDelivery {
    let record = if record_is_small(record) {
        record.clone()
    } else {
        history(record, too_large)
    };
    DeadDelivery {
        record,
        task: None,
        truncated: Some(truncated("the dead letter", too_large)),
    }
}

/// The value written instead of an input record's original bytes: the marker and the bytes'
/// beginning as text.
pub fn input(original: &[u8], too_large: &TooLarge) -> Vec<u8> {
    let value = serde_json::json!({
        "truncated": marker("the input record", too_large),
        "excerpt": excerpt(&String::from_utf8_lossy(&original[..original.len().min(1024)])),
    });
    value.to_string().into_bytes()
}

/// A history record well below any sensible limit keeps its reason whole.
fn record_is_small(record: &DeliveryRecord) -> bool {
    serde_json::to_vec(record).is_ok_and(|v| v.len() <= 16 * 1024)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::model::records::{Attempt, DeliveryStatus};

    fn record(reason_bytes: usize) -> DeliveryRecord {
        let now = Utc::now();
        DeliveryRecord {
            delivery_id: "dl_1".into(),
            workspace_id: "ws".into(),
            event_id: "evt".into(),
            event: "e".into(),
            rule_id: Some("r".into()),
            connection_id: None,
            destination: None,
            action: None,
            status: DeliveryStatus::Dead,
            reason: Some("x".repeat(reason_bytes)),
            attempts: vec![
                Attempt {
                    at: now,
                    outcome: "retry".into(),
                    status_code: Some(503),
                    error: Some("y".repeat(reason_bytes)),
                    latency_ms: 1,
                };
                20
            ],
            skipped_count: None,
            next_attempt_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn stubs_keep_ids_and_status_and_stay_small() {
        let big = record(1_000_000);
        let too_large = TooLarge::over_limit(21_000_000, 2_097_152);
        let stub = history(&big, &too_large);
        assert_eq!(
            (&stub.delivery_id, stub.status),
            (&big.delivery_id, big.status)
        );
        let reason = stub.reason.as_deref().unwrap();
        assert!(
            reason.starts_with("truncated: the history record was 21000000 bytes, over kafka.max_record_bytes = 2097152"),
            "{reason}"
        );
        assert!(serde_json::to_vec(&stub).unwrap().len() < 16 * 1024);
        let dead = serde_json::to_vec(&dead_delivery(&big, &too_large)).unwrap();
        assert!(dead.len() < 16 * 1024);
        let input = input(&vec![b'z'; 5_000_000], &too_large);
        assert!(input.len() < 2 * 1024);
    }

    #[test]
    fn a_small_record_keeps_its_reason_in_a_dead_letter_stub() {
        let small = record(10);
        let value = serde_json::to_value(dead_delivery(
            &small,
            &TooLarge::over_limit(3_000_000, 2_097_152),
        ))
        .unwrap();
        assert_eq!(value["record"]["reason"], "x".repeat(10));
        assert_eq!(value["truncated"]["truncated"], true);
        assert_eq!(value["truncated"]["original_bytes"], 3_000_000);
    }
}
