//! `POST /v1/workspaces/{id}/test-event` (read scope; write scope with `?send=true`): tries an
//! event against a workspace's rules. Every matching rule is rendered as the processor renders
//! it ([`crate::deliver::route::match_rules`]) and its connection shows the requests one
//! attempt would send ([`crate::destinations::BoundAction::preview`], built by the code that
//! sends, credentials and signatures redacted); rules that did not match say why. With
//! `send=true` each delivery is also attempted once, through the connection's own send path,
//! and its outcome returned.
//!
//! A test event is not an event: nothing goes to `herald.events` or history, and its calls
//! neither count for circuit breakers nor mark a connection broken (they are made even while
//! a breaker is open or the connection is marked broken, to see whether it works again).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::deliver::route::{Matched, Planned, match_rules};
use crate::destinations::preview::{Preview, RequestPreview};
use crate::destinations::transcript::{self, Answer};
use crate::destinations::{Call, Outcome};
use crate::ingest::decode::MAX_NAME_BYTES;
use crate::model::records::EventEnvelope;
use crate::model::{FieldError, WorkspaceConfig};
use crate::settings::api::AdminScope;
use crate::workspace::compile::{CompiledRule, CompiledWorkspace};

/// The query of a test event.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestEventQuery {
    /// Also send each request once and return the outcomes (write scope).
    #[serde(default)]
    pub send: bool,
}

/// The body of a test event: an event in the emit shape, all optional when `rule` is given
/// (the event is then the rule's own, with an empty payload unless one is given).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestEventBody {
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub payload: Map<String, Value>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Only this rule of the workspace.
    #[serde(default)]
    pub rule: Option<String>,
    /// A whole workspace config (JSON) to try instead of the one in force; it is compiled
    /// here, with the stored credentials of the workspace, and never published.
    #[serde(default)]
    pub workspace: Option<Value>,
}

/// The answer to a test event.
#[derive(Debug, Serialize)]
pub struct TestEventAnswer {
    pub workspace: String,
    pub event_id: String,
    /// Whether the requests were sent (`?send=true`).
    pub sent: bool,
    /// One per matched rule, in rule order.
    pub deliveries: Vec<TestDelivery>,
    /// The workspace's other rules, with why they did not match.
    pub unmatched: Vec<Unmatched>,
}

/// One matched rule: its rendered `with`, the requests its connection would send, and with
/// `send=true` what sending them came to.
#[derive(Debug, Serialize)]
pub struct TestDelivery {
    pub rule: String,
    pub connection: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub action: String,
    /// The delivery id the requests carry (e.g. a webhook's `webhook-id`).
    pub delivery_id: String,
    /// The rule's rendered `with`; absent when it could not be rendered (see `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub with: Option<Value>,
    /// The requests, in order, credentials and signatures redacted.
    pub requests: Vec<RequestPreview>,
    /// Why `requests` is empty although the rule rendered (a destination that cannot show
    /// its requests without calling), or what to know about them (later ones depend on
    /// earlier answers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_note: Option<String>,
    /// Why no request would be sent: the template or the rendered `with` is wrong. An attempt
    /// would fail permanently with this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `send=true`: the outcome of one attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SendResult>,
}

/// What one attempt came to.
#[derive(Debug, Serialize)]
pub struct SendResult {
    /// `delivered`, `retry`, `rate_limited`, `permanent` or `connection_broken`.
    pub outcome: &'static str,
    /// The HTTP status of the (last) response, when one came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The reason of a failure, with an excerpt of the vendor's answer (bounded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The answers the connection's requests received, in order: status and body excerpt.
    /// Empty when no answer came, and for HubSpot upserts, whose batch answer covers other
    /// deliveries too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<Answer>,
}

/// A rule the event did not match.
#[derive(Debug, Serialize)]
pub struct Unmatched {
    pub rule: String,
    pub why: String,
}

pub async fn post(
    admin: Admin<false>,
    State(api): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<TestEventQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TestEventAnswer>, ApiError> {
    let Query(query) = query.map_err(|e| super::error::bad_query(&e))?;
    if query.send && admin.scope < AdminScope::Write {
        return Err(ApiError::forbidden(
            "this admin token has the read scope; sending a test event needs write",
        ));
    }
    let body = body.map_err(ApiError::from_body)?;
    let body: TestEventBody = if body.is_empty() {
        TestEventBody::default()
    } else {
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut de)
            .map_err(|e| ApiError::invalid(vec![FieldError::from(e)]))?
    };
    let workspace = match &body.workspace {
        Some(config) => try_config(&api, &id, config)?,
        None => super::connections::ready(&api, &id)?,
    };
    let envelope = envelope(&id, &body, &workspace)?;
    let Matched { deliveries, unmet } = match_rules(&workspace, &envelope, body.rule.as_deref());
    let unmatched = unmatched(&workspace, &envelope, body.rule.as_deref(), &unmet);
    // Planned from this very workspace: every rule is there.
    let matched: Vec<(&Planned, &CompiledRule)> = deliveries
        .iter()
        .filter_map(|planned| Some((planned, workspace.rule(&planned.rule_id)?)))
        .collect();
    let mut shown: Vec<TestDelivery> = matched
        .iter()
        .map(|(planned, rule)| preview(rule, planned, &envelope))
        .collect();
    if query.send {
        tracing::info!(workspace = %id, token = %admin.name, deliveries = shown.len(),
            "sending a test event");
        let bound = api.processor.call_bound();
        let sends = shown
            .iter()
            .zip(&matched)
            .map(|(delivery, (planned, rule))| {
                let envelope = &envelope;
                async move {
                    let request = match planned.rendered() {
                        Ok(request) => request,
                        Err(e) => {
                            return Some(SendResult {
                                outcome: "permanent",
                                status: None,
                                reason: Some(format!("template error in {e}")),
                                responses: Vec::new(),
                            });
                        }
                    };
                    let call = Call {
                        delivery_id: &delivery.delivery_id,
                        request,
                        envelope,
                    };
                    let sent = transcript::recorded(rule.action.send(call));
                    Some(match tokio::time::timeout(bound, sent).await {
                        Ok((attempted, responses)) => SendResult {
                            outcome: attempted.outcome.kind(),
                            status: attempted.status_code,
                            reason: attempted.outcome.reason(),
                            responses,
                        },
                        Err(_) => {
                            let outcome = Outcome::Retry {
                                after: None,
                                reason: format!("no answer within {} s", bound.as_secs()),
                            };
                            SendResult {
                                outcome: outcome.kind(),
                                status: None,
                                reason: outcome.reason(),
                                responses: Vec::new(),
                            }
                        }
                    })
                }
            });
        let results = join_all(sends).await;
        for (delivery, result) in shown.iter_mut().zip(results) {
            delivery.result = result;
        }
    }
    Ok(Json(TestEventAnswer {
        workspace: id,
        event_id: envelope.event_id,
        sent: query.send,
        deliveries: shown,
        unmatched,
    }))
}

/// Compiles a workspace config to try, with the workspace's stored credentials; 400 naming
/// the fields under `workspace`.
fn try_config(
    api: &ApiState,
    id: &str,
    config: &Value,
) -> Result<Arc<CompiledWorkspace>, ApiError> {
    let config: WorkspaceConfig = serde_path_to_error::deserialize(config)
        .map_err(|e| ApiError::invalid(vec![FieldError::from(e).under("workspace")]))?;
    if config.workspace != id {
        return Err(invalid(
            "workspace.workspace",
            format!("is `{}`; the path names `{id}`", config.workspace),
        ));
    }
    let processor = &api.processor;
    CompiledWorkspace::compile_with(
        &config,
        &processor.ctx,
        &processor.vars,
        Some(api.table.credentials()),
    )
    .map(Arc::new)
    .map_err(|errors| {
        ApiError::invalid(errors.0.into_iter().map(|e| e.under("workspace")).collect())
    })
}

/// The event to try: the body's, or the rule's own when the body names only a rule.
fn envelope(
    id: &str,
    body: &TestEventBody,
    workspace: &CompiledWorkspace,
) -> Result<EventEnvelope, ApiError> {
    let rule =
        match &body.rule {
            Some(rule_id) => Some(workspace.rule(rule_id).ok_or_else(|| {
                invalid("rule", format!("the workspace has no rule `{rule_id}`"))
            })?),
            None => None,
        };
    let event = match (&body.event, rule) {
        (Some(event), _) => event.clone(),
        (None, Some(rule)) => rule.event.clone(),
        (None, None) => {
            return Err(invalid("event", "is required unless `rule` is given"));
        }
    };
    let mut problems = Vec::new();
    if event.trim().is_empty() {
        problems.push(FieldError::new("event", "must not be empty"));
    }
    for (field, value) in [
        ("event", Some(&event)),
        ("event_id", body.event_id.as_ref()),
        ("resource", body.resource.as_ref()),
        ("resource_id", body.resource_id.as_ref()),
    ] {
        if let Some(len) = value.map(String::len).filter(|len| *len > MAX_NAME_BYTES) {
            problems.push(FieldError::new(
                field,
                format!("is {len} bytes, over the limit of {MAX_NAME_BYTES}"),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::invalid(problems));
    }
    let from_rule = body.event.is_none();
    Ok(EventEnvelope {
        event_id: body
            .event_id
            .clone()
            .unwrap_or_else(|| format!("evt_test_{}", uuid::Uuid::now_v7().simple())),
        workspace_id: id.to_owned(),
        event,
        resource: body
            .resource
            .clone()
            .or_else(|| rule.filter(|_| from_rule).and_then(|r| r.resource.clone())),
        resource_id: body.resource_id.clone().or_else(|| {
            rule.filter(|_| from_rule)
                .and_then(|r| r.resource_id.clone())
        }),
        payload: body.payload.clone(),
        occurred_at: body.occurred_at,
        received_at: Some(Utc::now()),
    })
}

/// A matched rule's rendered `with` and the requests its connection would send.
fn preview(rule: &CompiledRule, planned: &Planned, envelope: &EventEnvelope) -> TestDelivery {
    let delivery_id = format!("test_{}", uuid::Uuid::now_v7().simple());
    let mut delivery = TestDelivery {
        rule: rule.id.clone(),
        connection: rule.connection.id.clone(),
        kind: rule.connection.kind.clone(),
        action: rule.action.name().to_owned(),
        delivery_id,
        with: None,
        requests: Vec::new(),
        preview_note: None,
        error: None,
        result: None,
    };
    let request = match planned.rendered() {
        Ok(request) => request,
        Err(e) => {
            delivery.error = Some(format!("template error in {e}"));
            return delivery;
        }
    };
    delivery.with = Some(request.clone());
    let call = Call {
        delivery_id: &delivery.delivery_id,
        request,
        envelope,
    };
    match rule.action.preview(call) {
        Preview::Requests { requests, note } => {
            delivery.requests = requests;
            delivery.preview_note = note;
        }
        Preview::NotBuilt { reason } => delivery.error = Some(reason),
        Preview::Unavailable { reason } => delivery.preview_note = Some(reason),
    }
    delivery
}

/// Why each rule of the workspace (only `only` when given) did not match.
fn unmatched(
    workspace: &CompiledWorkspace,
    envelope: &EventEnvelope,
    only: Option<&str>,
    unmet: &[&str],
) -> Vec<Unmatched> {
    let mut out = Vec::new();
    for rule in &workspace.rules {
        if only.is_some_and(|only| only != rule.id) {
            continue;
        }
        let why = if rule.event != envelope.event {
            format!("it is for `{}` events", rule.event)
        } else if let Some(want) = rule
            .resource
            .as_ref()
            .filter(|want| envelope.resource.as_ref() != Some(*want))
        {
            format!("it is for resource `{want}`")
        } else if let Some(want) = rule
            .resource_id
            .as_ref()
            .filter(|want| envelope.resource_id.as_ref() != Some(*want))
        {
            format!("it is for resource_id `{want}`")
        } else if unmet.contains(&rule.id.as_str()) {
            "its `when` is false for this event".to_owned()
        } else {
            continue;
        };
        out.push(Unmatched {
            rule: rule.id.clone(),
            why,
        });
    }
    out
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(vec![FieldError::new(path, message)])
}
