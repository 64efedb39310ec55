//! "No rule matched" and "unknown workspace" are outcomes too, but writing one history record
//! per skipped event would flood the topic at high volume. Instead each (workspace, event name,
//! reason) has one summary record, keyed by a hash of the three, carrying a running count and
//! the last event id. The first skip writes it at once; later ones only count, and the count is
//! written at most once per `skip_summary_interval_ms` (by the next skip or by [`SkipSummaries::due`]).
//! Counts are best-effort: a crash loses at most one interval's increments, never a delivery.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::model::records::{DeliveryRecord, DeliveryStatus, EventEnvelope, stable_id};

/// Why an event produced no delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    UnknownWorkspace,
    WorkspaceInvalid,
    NoRuleMatched,
}

impl SkipReason {
    /// The stable code, first in the record's reason.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownWorkspace => "unknown_workspace",
            Self::WorkspaceInvalid => "workspace_invalid",
            Self::NoRuleMatched => "no_rule_matched",
        }
    }
}

/// Most summaries kept in memory; beyond it the least recently written are forgotten (their
/// record stays in the topic, the count restarts).
const MAX_SUMMARIES: usize = 10_000;

struct Summary {
    record: DeliveryRecord,
    written_at: Instant,
    dirty: bool,
}

/// The skip summaries of one processor.
pub struct SkipSummaries {
    interval: Duration,
    summaries: Mutex<HashMap<String, Summary>>,
}

impl SkipSummaries {
    /// Summaries refreshed at most once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            summaries: Mutex::default(),
        }
    }

    /// Counts a skipped event; returns the record to write now, if one is due.
    pub fn note(
        &self,
        envelope: &EventEnvelope,
        reason: SkipReason,
        detail: &str,
    ) -> Option<DeliveryRecord> {
        let id = summary_id(&envelope.workspace_id, &envelope.event, reason);
        let now = Instant::now();
        let mut summaries = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        if !summaries.contains_key(&id) && summaries.len() >= MAX_SUMMARIES {
            let oldest = summaries
                .iter()
                .min_by_key(|(_, s)| s.written_at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                summaries.remove(&k);
            }
        }
        let at = Utc::now();
        let summary = summaries.entry(id.clone()).or_insert_with(|| Summary {
            record: DeliveryRecord {
                delivery_id: id,
                workspace_id: envelope.workspace_id.clone(),
                event_id: envelope.event_id.clone(),
                event: envelope.event.clone(),
                rule_id: None,
                connection_id: None,
                destination: None,
                action: None,
                status: DeliveryStatus::Skipped,
                reason: None,
                attempts: Vec::new(),
                skipped_count: Some(0),
                next_attempt_at: None,
                created_at: at,
                updated_at: at,
            },
            written_at: now,
            dirty: true,
        });
        let r = &mut summary.record;
        r.event_id = envelope.event_id.clone();
        r.reason = Some(format!("{}: {detail}", reason.code()));
        r.skipped_count = Some(r.skipped_count.unwrap_or(0) + 1);
        r.updated_at = at;
        let first = r.skipped_count == Some(1);
        if first || now.duration_since(summary.written_at) >= self.interval {
            summary.written_at = now;
            summary.dirty = false;
            Some(summary.record.clone())
        } else {
            summary.dirty = true;
            None
        }
    }

    /// Summaries with counts not yet written whose interval has passed.
    pub fn due(&self) -> Vec<DeliveryRecord> {
        let now = Instant::now();
        let mut summaries = self.summaries.lock().unwrap_or_else(|p| p.into_inner());
        summaries
            .values_mut()
            .filter(|s| s.dirty && now.duration_since(s.written_at) >= self.interval)
            .map(|s| {
                s.dirty = false;
                s.written_at = now;
                s.record.clone()
            })
            .collect()
    }
}

fn summary_id(workspace: &str, event: &str, reason: SkipReason) -> String {
    stable_id("sk_", &[workspace, event, reason.code()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> EventEnvelope {
        EventEnvelope {
            event_id: id.into(),
            workspace_id: "ws".into(),
            event: "lesson.completed".into(),
            resource: None,
            resource_id: None,
            payload: Default::default(),
            occurred_at: None,
            received_at: None,
        }
    }

    #[test]
    fn first_skip_is_written_then_counted_until_the_interval_passes() {
        let skips = SkipSummaries::new(Duration::from_secs(3600));
        let first = skips
            .note(&envelope("e1"), SkipReason::NoRuleMatched, "none")
            .unwrap();
        assert_eq!(first.status, DeliveryStatus::Skipped);
        assert_eq!(first.skipped_count, Some(1));
        assert!(first.reason.unwrap().starts_with("no_rule_matched"));
        for i in 2..=100 {
            assert!(
                skips
                    .note(
                        &envelope(&format!("e{i}")),
                        SkipReason::NoRuleMatched,
                        "none"
                    )
                    .is_none()
            );
        }
        assert!(skips.due().is_empty(), "interval has not passed");
        // Another reason is another summary, written at once.
        let other = skips
            .note(&envelope("e101"), SkipReason::UnknownWorkspace, "x")
            .unwrap();
        assert_ne!(other.delivery_id, first.delivery_id);
    }

    #[test]
    fn pending_counts_are_flushed_when_due() {
        let skips = SkipSummaries::new(Duration::ZERO);
        skips.note(&envelope("e1"), SkipReason::NoRuleMatched, "none");
        let again = skips
            .note(&envelope("e2"), SkipReason::NoRuleMatched, "none")
            .unwrap();
        assert_eq!(again.skipped_count, Some(2));
        assert_eq!(again.event_id, "e2");
    }
}
