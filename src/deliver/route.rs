//! One decoded event: find its workspace, match the rules, make each delivery, and write each
//! outcome to history. Returns only when every outcome is acknowledged by Kafka.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use tracing::Instrument;

use crate::destinations::{Attempted, Call, Outcome};
use crate::history::OutcomeWriter;
use crate::history::skips::{SkipReason, SkipSummaries};
use crate::records::{Attempt, DeliveryRecord, DeliveryStatus, EventEnvelope, delivery_id};
use crate::telemetry::Metrics;
use crate::workspace::compile::{CompiledRule, CompiledWorkspace, RenderError, render_context};
use crate::workspace::table::{WorkspaceEntry, WorkspaceTable};

/// Everything the processing of one event needs, shared by all events.
pub struct Router {
    pub table: Arc<WorkspaceTable>,
    pub writer: OutcomeWriter,
    pub skips: SkipSummaries,
    pub metrics: Metrics,
}

impl Router {
    /// Routes `envelope` to every matching rule and records every outcome.
    pub async fn route(&self, envelope: &EventEnvelope) {
        let workspace = match self.table.get(&envelope.workspace_id) {
            Some(WorkspaceEntry::Ready(ws)) => ws,
            Some(WorkspaceEntry::Invalid(reason)) => {
                return self
                    .skip(envelope, SkipReason::WorkspaceInvalid, &reason)
                    .await;
            }
            None => {
                let detail = format!("no workspace `{}` is configured", envelope.workspace_id);
                return self
                    .skip(envelope, SkipReason::UnknownWorkspace, &detail)
                    .await;
            }
        };
        let ctx = render_context(envelope);
        let mut matched = Vec::new();
        let mut unmet = Vec::new();
        for rule in workspace.candidate_rules(envelope) {
            match workspace.condition_holds(rule, &ctx) {
                Ok(true) => matched.push((rule, Ok(()))),
                Ok(false) => unmet.push(rule.id.as_str()),
                // A condition that cannot be evaluated fails its delivery, visibly.
                Err(e) => matched.push((rule, Err(e))),
            }
        }
        if matched.is_empty() {
            let mut detail = format!("no rule of this workspace matches `{}`", envelope.event);
            if !unmet.is_empty() {
                detail = format!("{detail}; `when` was false for: {}", unmet.join(", "));
            }
            return self
                .skip(envelope, SkipReason::NoRuleMatched, &detail)
                .await;
        }
        self.metrics.events.with_label_values(&["routed"]).inc();
        let deliveries = matched.into_iter().map(|(rule, condition)| {
            let span = tracing::info_span!("delivery", rule = %rule.id,
                connection = %rule.connection.id, destination = %rule.connection.kind);
            self.deliver(&workspace, rule, condition, envelope, &ctx)
                .instrument(span)
        });
        join_all(deliveries).await;
    }

    async fn deliver(
        &self,
        workspace: &CompiledWorkspace,
        rule: &CompiledRule,
        condition: Result<(), RenderError>,
        envelope: &EventEnvelope,
        ctx: &minijinja::Value,
    ) {
        let id = delivery_id(&envelope.workspace_id, &envelope.event_id, &rule.id);
        let started_at = Utc::now();
        let request = condition.and_then(|()| workspace.render(rule, ctx));
        let (attempted, latency) = match request {
            Err(e) => (
                Attempted::without_response(Outcome::Permanent {
                    reason: format!("template error in {e}"),
                }),
                None,
            ),
            Ok(request) => {
                let started = Instant::now();
                let call = Call {
                    delivery_id: &id,
                    action: &rule.action,
                    request: &request,
                    envelope,
                };
                let attempted = rule.connection.connection.send(call).await;
                (attempted, Some(started.elapsed()))
            }
        };
        let outcome = &attempted.outcome;
        let destination = rule.connection.kind.as_str();
        self.metrics
            .deliveries
            .with_label_values(&[destination, &rule.action, outcome.kind()])
            .inc();
        if let Some(latency) = latency {
            self.metrics
                .attempt_latency
                .with_label_values(&[destination])
                .observe(latency.as_secs_f64());
        }
        let status = match outcome {
            Outcome::Delivered => DeliveryStatus::Delivered,
            // Retry tiers are not built yet: a transient failure is final for now, and says so.
            _ => DeliveryStatus::Failed,
        };
        let reason = outcome.reason();
        match &reason {
            None => tracing::info!(delivery_id = %id, "delivered"),
            Some(r) => {
                tracing::warn!(delivery_id = %id, outcome = outcome.kind(), reason = %r, "delivery failed")
            }
        }
        let attempts = latency
            .map(|latency| Attempt {
                at: started_at,
                outcome: outcome.kind().to_owned(),
                status_code: attempted.status_code,
                error: reason.clone(),
                latency_ms: latency.as_millis() as u64,
            })
            .into_iter()
            .collect();
        let now = Utc::now();
        let record = DeliveryRecord {
            delivery_id: id,
            workspace_id: envelope.workspace_id.clone(),
            event_id: envelope.event_id.clone(),
            event: envelope.event.clone(),
            rule_id: Some(rule.id.clone()),
            connection_id: Some(rule.connection.id.clone()),
            destination: Some(destination.to_owned()),
            action: Some(rule.action.clone()),
            status,
            reason,
            attempts,
            skipped_count: None,
            next_attempt_at: None,
            created_at: started_at,
            updated_at: now,
        };
        self.writer.history(&record).await;
    }

    async fn skip(&self, envelope: &EventEnvelope, reason: SkipReason, detail: &str) {
        self.metrics.events.with_label_values(&["skipped"]).inc();
        tracing::debug!(reason = reason.code(), detail, "event skipped");
        if let Some(record) = self.skips.note(envelope, reason, detail) {
            self.writer.history(&record).await;
        }
    }

    /// Writes skip summaries whose counts are due.
    pub async fn flush_skips(&self) {
        for record in self.skips.due() {
            self.writer.history(&record).await;
        }
    }
}
