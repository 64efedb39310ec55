//! One decoded event: find its workspace, match the rules, make each delivery, and write each
//! outcome to history. Returns only when every outcome is acknowledged by Kafka.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::future::join_all;
use tracing::Instrument;

use super::breaker::{Admission, Breakers};
use super::dedupe::Dedupe;
use super::order::{Full, Turn};
use super::retry::RetryPolicy;
use super::settle::{AttemptResult, Deferral, Delivery, settle};
use super::supersede::{self, LastWrites};
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
    /// Per-connection circuit breakers, shared by first attempts and retries.
    pub breakers: Breakers,
    /// The delivered sets of the owned partitions; `None` when dedupe is off.
    pub dedupe: Option<Arc<Dedupe>>,
    /// The last successful write per contact, against which retried writes are checked.
    pub last_writes: LastWrites,
}

/// The result of a delivery put off without a call: it goes to a retry tier with `reason`.
fn not_called(reason: String, why: Deferral) -> AttemptResult {
    AttemptResult {
        deferred: Some(why),
        ..AttemptResult::not_called(Outcome::Retry {
            after: None,
            reason,
        })
    }
}

/// How one event is routed.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOptions<'a> {
    /// The `herald.events` partition the event came from.
    pub partition: Option<i32>,
    /// The event's offset in that partition; it orders the workspace's writes.
    pub offset: Option<i64>,
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

/// What an event turns into before any call: the deliveries to make, or why there are none.
pub enum Plan {
    /// No delivery: the workspace is unknown or invalid here, or no rule matched.
    Skip { reason: SkipReason, detail: String },
    /// One delivery per matched rule, in rule order.
    Deliver {
        workspace: Arc<CompiledWorkspace>,
        deliveries: Vec<Planned>,
    },
}

/// One matched rule and its rendered request.
#[derive(Debug)]
pub struct Planned {
    pub rule_id: String,
    pub connection_id: String,
    /// The rendered `with`, or why the condition or the request could not be rendered.
    rendered: Result<serde_json::Value, RenderError>,
}

impl Planned {
    /// The rendered `with`, or why the condition or the request could not be rendered.
    pub fn rendered(&self) -> Result<&serde_json::Value, &RenderError> {
        self.rendered.as_ref()
    }
}

/// The rules of one workspace an event matches, each with its rendered request.
#[derive(Debug)]
pub struct Matched<'a> {
    /// One per matched rule, in rule order.
    pub deliveries: Vec<Planned>,
    /// Rules whose event, resource and resource id match but whose `when` is false.
    pub unmet: Vec<&'a str>,
}

/// Matches `envelope` against `workspace`'s rules (only `rule` when given) and renders each
/// matched rule's request, as the processor does for every event (and the management API's
/// test events). Makes no call.
pub fn match_rules<'a>(
    workspace: &'a CompiledWorkspace,
    envelope: &'a EventEnvelope,
    rule: Option<&str>,
) -> Matched<'a> {
    let ctx = render_context(envelope);
    let mut deliveries = Vec::new();
    let mut unmet = Vec::new();
    let candidates = workspace
        .candidate_rules(envelope)
        .filter(|r| rule.is_none_or(|only| r.id == only));
    for rule in candidates {
        let rendered = match workspace.condition_holds(rule, &ctx) {
            Ok(true) => workspace.render(rule, &ctx),
            Ok(false) => {
                unmet.push(rule.id.as_str());
                continue;
            }
            // A condition that cannot be evaluated fails its delivery, visibly.
            Err(e) => Err(e),
        };
        deliveries.push(Planned {
            rule_id: rule.id.clone(),
            connection_id: rule.connection.id.clone(),
            rendered,
        });
    }
    Matched { deliveries, unmet }
}

/// Where a planned delivery stands in its connection's line (see [`super::order`]).
#[derive(Debug)]
pub enum Lane {
    /// Not ordered with other deliveries (replays, which run one event at a time anyway).
    Unordered,
    /// Its place in the line; the call waits for it.
    Turn(Turn),
    /// The line was full: the delivery goes to the first retry tier without a call.
    Full(Full),
}

impl Router {
    /// Routes `envelope` to every matching rule and records every outcome, one delivery after
    /// another's call in no particular order (the event processor plans and runs deliveries
    /// itself, to keep them in line per connection).
    pub async fn route(&self, envelope: &EventEnvelope, options: RouteOptions<'_>) -> Routed {
        let (workspace, deliveries) = match self.plan(envelope, options.rule) {
            Plan::Skip { reason, detail } => {
                self.skip(envelope, reason, &detail).await;
                return Routed::default();
            }
            Plan::Deliver {
                workspace,
                deliveries,
            } => (workspace, deliveries),
        };
        let deliveries = deliveries
            .into_iter()
            .map(|planned| self.deliver(&workspace, planned, envelope, options, Lane::Unordered));
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

    /// Finds `envelope`'s workspace, matches its rules (only `rule` when given) and renders
    /// each matched rule's request. Makes no call and writes nothing.
    pub fn plan(&self, envelope: &EventEnvelope, rule: Option<&str>) -> Plan {
        let workspace = match self.table.get(&envelope.workspace_id) {
            Some(WorkspaceEntry::Ready(ws)) => ws,
            Some(WorkspaceEntry::Invalid(reason)) => {
                return Plan::Skip {
                    reason: SkipReason::WorkspaceInvalid,
                    detail: reason,
                };
            }
            None => {
                return Plan::Skip {
                    reason: SkipReason::UnknownWorkspace,
                    detail: format!("no workspace `{}` is configured", envelope.workspace_id),
                };
            }
        };
        let Matched { deliveries, unmet } = match_rules(&workspace, envelope, rule);
        if deliveries.is_empty() {
            let mut detail = format!("no rule of this workspace matches `{}`", envelope.event);
            if !unmet.is_empty() {
                detail = format!("{detail}; `when` was false for: {}", unmet.join(", "));
            }
            return Plan::Skip {
                reason: SkipReason::NoRuleMatched,
                detail,
            };
        }
        Plan::Deliver {
            workspace,
            deliveries,
        }
    }

    /// Makes a planned delivery and records its outcome: waits for its turn on its
    /// connection, unless history says it was delivered already (then returns false) or its
    /// connection's line was full (then it goes to the first retry tier without a call).
    pub async fn deliver(
        &self,
        workspace: &CompiledWorkspace,
        planned: Planned,
        envelope: &EventEnvelope,
        options: RouteOptions<'_>,
        lane: Lane,
    ) -> bool {
        let Some(rule) = workspace.rule(&planned.rule_id) else {
            return false; // planned from this very workspace: the rule exists
        };
        let span = tracing::info_span!("delivery", rule = %rule.id,
            connection = %rule.connection.id, destination = %rule.connection.kind);
        async {
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
            let delivery = Delivery {
                delivery_id: id,
                envelope: envelope.clone(),
                rule_id: rule.id.clone(),
                connection_id: rule.connection.id.clone(),
                destination: rule.connection.kind.clone(),
                action: rule.action.name().to_owned(),
                request: planned.rendered.as_ref().cloned().unwrap_or_default(),
                attempt: 1,
                retries: 0,
                first_attempt_at: Utc::now(),
                attempts: Vec::new(),
                partition: options.partition,
                offset: options.offset,
                redriven_at: None,
            };
            let rendered = planned.rendered.map(|_| ());
            match lane {
                Lane::Full(full) => {
                    let reason = match full {
                        Full::Connection(queued) => format!(
                            "not called: {queued} deliveries already wait for this connection \
                             (processor.max_queued_per_connection); sent to a retry tier instead"
                        ),
                        Full::Workspace(queued) => format!(
                            "not called: {queued} deliveries of this workspace already wait for \
                             its connections (processor.max_queued_per_workspace); sent to a \
                             retry tier instead"
                        ),
                    };
                    Box::pin(self.defer(rule, delivery, reason)).await;
                }
                // Boxed: a delivery waits in its line with the state of the attempt (the HTTP
                // call, the history produce), kilobytes, not yet allocated. Inline, every
                // queued delivery of the in-flight window reserved it from the start.
                Lane::Turn(mut turn) => {
                    turn.wait().await;
                    Box::pin(self.attempt_and_record(workspace, rule, delivery, rendered)).await;
                }
                Lane::Unordered => {
                    Box::pin(self.attempt_and_record(workspace, rule, delivery, rendered)).await;
                }
            }
            true
        }
        .instrument(span)
        .await
    }

    /// Makes one attempt at `delivery` (unless its request failed to render, its connection
    /// is known broken, or its connection's circuit is open), then writes the history record
    /// and the retry task or dead letter, and returns once Kafka acknowledged all of them.
    pub async fn attempt_and_record(
        &self,
        workspace: &CompiledWorkspace,
        rule: &CompiledRule,
        delivery: Delivery,
        rendered: Result<(), RenderError>,
    ) {
        let destination = rule.connection.kind.as_str();
        let connection = rule.connection.id.as_str();
        let result = if let Err(e) = rendered {
            AttemptResult::not_called(Outcome::Permanent {
                reason: format!("template error in {e}"),
            })
        } else if let Some(reason) = workspace.broken_reason(connection) {
            AttemptResult::not_called(Outcome::ConnectionBroken {
                reason: format!("{reason} (connection marked broken earlier; not called)"),
            })
        } else if let Admission::Refused { retry_in, reason } =
            self.breakers
                .admit(&workspace.id, connection, Instant::now())
        {
            self.metrics
                .deferred
                .with_label_values(&["circuit_open"])
                .inc();
            not_called(reason, Deferral::CircuitOpen(retry_in))
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
            self.breakers.record(
                &workspace.id,
                connection,
                &attempted.outcome,
                Instant::now(),
            );
            if let Outcome::ConnectionBroken { reason } = &attempted.outcome {
                workspace.mark_broken(connection, reason);
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
                deferred: None,
            }
        };
        self.metrics.open_circuits.set(self.breakers.open() as i64);
        self.record(rule, delivery, result).await;
    }

    /// Records `delivery` as not called because too many deliveries already wait for its
    /// connection (`reason` names the bound): it goes back to a retry tier, using none of its tiers.
    pub async fn defer(&self, rule: &CompiledRule, delivery: Delivery, reason: String) {
        self.metrics
            .deferred
            .with_label_values(&["connection_backlog_full"])
            .inc();
        self.record(rule, delivery, not_called(reason, Deferral::Busy))
            .await;
    }

    /// Counts and logs `result`, then writes the history record and the retry task or dead
    /// letter, and returns once Kafka acknowledged all of them.
    async fn record(&self, rule: &CompiledRule, delivery: Delivery, result: AttemptResult) {
        let destination = rule.connection.kind.as_str();
        self.metrics
            .deliveries
            .with_label_values(&[destination, rule.action.name(), result.outcome.kind()])
            .inc();
        match &result.outcome {
            Outcome::Delivered => {
                supersede::note_delivered(&self.last_writes, rule, &delivery);
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

    /// Ends a delivery that an internal error (a caught panic) stopped: `failed`, with `reason`,
    /// and its task to the dead-letter topic, from where `herald redrive` can send it again.
    pub async fn fail(
        &self,
        workspace: &CompiledWorkspace,
        rule_id: &str,
        envelope: &EventEnvelope,
        partition: Option<i32>,
        reason: String,
    ) {
        let Some(rule) = workspace.rule(rule_id) else {
            return;
        };
        // Rendered again for the redrivable task; if rendering is what panicked, the task
        // carries no request and the redrive's attempt will say so.
        let request = std::panic::catch_unwind(AssertUnwindSafe(|| {
            workspace.render(rule, &render_context(envelope))
        }))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
        let delivery = Delivery {
            delivery_id: delivery_id(&envelope.workspace_id, &envelope.event_id, &rule.id),
            envelope: envelope.clone(),
            rule_id: rule.id.clone(),
            connection_id: rule.connection.id.clone(),
            destination: rule.connection.kind.clone(),
            action: rule.action.name().to_owned(),
            request,
            attempt: 1,
            retries: 0,
            first_attempt_at: Utc::now(),
            attempts: Vec::new(),
            partition,
            offset: None,
            redriven_at: None,
        };
        let result = AttemptResult::not_called(Outcome::Permanent { reason });
        self.record(rule, delivery, result).await;
    }

    /// Records an event that makes no delivery (one summary per workspace, event and reason).
    pub async fn skip(&self, envelope: &EventEnvelope, reason: SkipReason, detail: &str) {
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
