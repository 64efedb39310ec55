//! One decoded event: find its workspace, match the rules, make each delivery, and write each
//! outcome to history. Returns only when every outcome is acknowledged by Kafka.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use tracing::Instrument;

use super::dedupe::Dedupe;
use super::retry::RetryPolicy;
use super::settle::{AttemptResult, Delivery, settle};
use crate::destinations::{Call, Outcome};
use crate::history::OutcomeWriter;
use crate::history::skips::{SkipReason, SkipSummaries};
use crate::model::records::{Attempt, EventEnvelope, delivery_id};
use crate::telemetry::Metrics;
use crate::workspace::compile::{CompiledRule, CompiledWorkspace};
use crate::workspace::table::{WorkspaceEntry, WorkspaceTable};
use crate::workspace::templates::{RenderError, render_context};

/// Everything the processing of one event needs, shared by all events.
pub struct Router {
    pub table: Arc<WorkspaceTable>,
    pub writer: OutcomeWriter,
    pub skips: SkipSummaries,
    pub metrics: Metrics,
    pub policy: RetryPolicy,
    /// The delivered sets of the owned partitions; `None` when dedupe is off.
    pub dedupe: Option<Arc<Dedupe>>,
}

/// How one event is routed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOptions<'a> {
    /// The `herald.events` partition the event came from.
    pub partition: Option<i32>,
    /// Deliver even what history says was delivered (`herald replay --force`).
    pub force: bool,
    /// Only this rule's deliveries (`herald replay --rule`).
    pub rule: Option<&'a str>,
}

/// What routing one event did, per delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Routed {
    /// Deliveries settled (delivered, retrying, failed or dead).
    pub settled: usize,
    /// Deliveries not sent because history says they were delivered.
    pub already_delivered: usize,
}

impl Router {
    /// Routes `envelope` to every matching rule and records every outcome.
    pub async fn route(&self, envelope: &EventEnvelope, options: RouteOptions<'_>) -> Routed {
        let workspace = match self.table.get(&envelope.workspace_id) {
            Some(WorkspaceEntry::Ready(ws)) => ws,
            Some(WorkspaceEntry::Invalid(reason)) => {
                self.skip(envelope, SkipReason::WorkspaceInvalid, &reason)
                    .await;
                return Routed::default();
            }
            None => {
                let detail = format!("no workspace `{}` is configured", envelope.workspace_id);
                self.skip(envelope, SkipReason::UnknownWorkspace, &detail)
                    .await;
                return Routed::default();
            }
        };
        let ctx = render_context(envelope);
        let mut matched = Vec::new();
        let mut unmet = Vec::new();
        let candidates = workspace
            .candidate_rules(envelope)
            .filter(|r| options.rule.is_none_or(|only| r.id == only));
        for rule in candidates {
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
            self.skip(envelope, SkipReason::NoRuleMatched, &detail)
                .await;
            return Routed::default();
        }
        self.metrics.events.with_label_values(&["routed"]).inc();
        let deliveries = matched.into_iter().map(|(rule, condition)| {
            let span = tracing::info_span!("delivery", rule = %rule.id,
                connection = %rule.connection.id, destination = %rule.connection.kind);
            self.deliver(&workspace, rule, condition, envelope, &ctx, options)
                .instrument(span)
        });
        let mut routed = Routed::default();
        for sent in join_all(deliveries).await {
            if sent {
                routed.settled += 1;
            } else {
                routed.already_delivered += 1;
            }
        }
        routed
    }

    async fn deliver(
        &self,
        workspace: &CompiledWorkspace,
        rule: &CompiledRule,
        condition: Result<(), RenderError>,
        envelope: &EventEnvelope,
        ctx: &minijinja::Value,
        options: RouteOptions<'_>,
    ) -> bool {
        let id = delivery_id(&envelope.workspace_id, &envelope.event_id, &rule.id);
        if let (Some(dedupe), Some(partition), false) =
            (&self.dedupe, options.partition, options.force)
            && dedupe.is_delivered(partition, &id).await
        {
            tracing::info!(delivery_id = %id, "already delivered; not sent again");
            self.metrics
                .deliveries
                .with_label_values(&[
                    &rule.connection.kind,
                    rule.action.name(),
                    "already_delivered",
                ])
                .inc();
            return false;
        }
        let request = condition.and_then(|()| workspace.render(rule, ctx));
        let delivery = Delivery {
            delivery_id: id,
            envelope: envelope.clone(),
            rule_id: rule.id.clone(),
            connection_id: rule.connection.id.clone(),
            destination: rule.connection.kind.clone(),
            action: rule.action.name().to_owned(),
            request: request.as_ref().cloned().unwrap_or_default(),
            attempt: 1,
            retries: 0,
            first_attempt_at: Utc::now(),
            attempts: Vec::new(),
            partition: options.partition,
        };
        self.attempt_and_record(workspace, rule, delivery, request.map(|_| ()))
            .await;
        true
    }

    /// Makes one attempt at `delivery` (unless its request failed to render or its connection
    /// is known broken), then writes the history record and the retry task or dead letter, and
    /// returns once Kafka acknowledged all of them.
    pub async fn attempt_and_record(
        &self,
        workspace: &CompiledWorkspace,
        rule: &CompiledRule,
        delivery: Delivery,
        rendered: Result<(), RenderError>,
    ) {
        let destination = rule.connection.kind.as_str();
        let result = if let Err(e) = rendered {
            AttemptResult {
                outcome: Outcome::Permanent {
                    reason: format!("template error in {e}"),
                },
                call: None,
            }
        } else if let Some(reason) = workspace.broken_reason(&rule.connection.id) {
            AttemptResult {
                outcome: Outcome::ConnectionBroken {
                    reason: format!("{reason} (connection marked broken earlier; not called)"),
                },
                call: None,
            }
        } else {
            let at = Utc::now();
            let started = Instant::now();
            let call = Call {
                delivery_id: &delivery.delivery_id,
                request: &delivery.request,
                envelope: &delivery.envelope,
            };
            let attempted = rule.action.send(call).await;
            let latency = started.elapsed();
            self.metrics
                .attempt_latency
                .with_label_values(&[destination])
                .observe(latency.as_secs_f64());
            if let Outcome::ConnectionBroken { reason } = &attempted.outcome {
                workspace.mark_broken(&rule.connection.id, reason);
            }
            AttemptResult {
                call: Some(Attempt {
                    at,
                    outcome: attempted.outcome.kind().to_owned(),
                    status_code: attempted.status_code,
                    error: attempted.outcome.reason(),
                    latency_ms: latency.as_millis() as u64,
                }),
                outcome: attempted.outcome,
            }
        };
        self.metrics
            .deliveries
            .with_label_values(&[destination, rule.action.name(), result.outcome.kind()])
            .inc();
        match &result.outcome {
            Outcome::Delivered => {
                let since = delivery
                    .envelope
                    .occurred_at
                    .or(delivery.envelope.received_at);
                if let Some(since) = since {
                    let e2e = (Utc::now() - since).to_std().unwrap_or_default();
                    self.metrics
                        .end_to_end_latency
                        .with_label_values(&[destination])
                        .observe(e2e.as_secs_f64());
                }
            }
            Outcome::RateLimited { .. } => {
                self.metrics
                    .rate_limit_waits
                    .with_label_values(&[destination])
                    .inc();
            }
            _ => {}
        }
        let attempt = delivery.attempt;
        let partition = delivery.partition;
        let mut settled = settle(delivery, result, &self.policy, Utc::now(), fastrand::f64());
        let record = &settled.record;
        match &record.reason {
            None => tracing::info!(delivery_id = %record.delivery_id, attempt, "delivered"),
            Some(reason) => tracing::warn!(delivery_id = %record.delivery_id, attempt,
                status = %record.status, %reason, "delivery not completed"),
        }
        // The task first: one too large to store ends the delivery, and history must say so.
        if let Some((topic, task)) = &settled.retry
            && let Err(too_large) = self.writer.retry_task(topic, task).await
        {
            settled = settled.unretryable(&too_large.to_string(), Utc::now());
            tracing::warn!(delivery_id = %settled.record.delivery_id, %too_large,
                "retry task too large to store; the delivery ends dead");
        }
        let record = &settled.record;
        let dead = async {
            if let Some(task) = &settled.dead_letter {
                self.writer.dead_delivery(record, task).await;
            }
        };
        futures::join!(self.writer.history(record, partition), dead);
        if let (Some(dedupe), Some(p)) = (&self.dedupe, partition) {
            let at = record.updated_at.timestamp_millis();
            dedupe.note(p, &record.delivery_id, record.status, at);
        }
    }

    async fn skip(&self, envelope: &EventEnvelope, reason: SkipReason, detail: &str) {
        self.metrics.events.with_label_values(&["skipped"]).inc();
        tracing::debug!(reason = reason.code(), detail, "event skipped");
        if let Some(record) = self.skips.note(envelope, reason, detail) {
            self.writer.history(&record, None).await;
        }
    }

    /// Writes skip summaries whose counts are due.
    pub async fn flush_skips(&self) {
        for record in self.skips.due() {
            self.writer.history(&record, None).await;
        }
    }
}
