//! `POST /v1/events` and `POST /v1/events/batch`: a product posts events in the emit shape
//! with a workspace's publishable key. Each event is produced to `herald.events` keyed by the
//! key's workspace, and the answer (202 with the event ids) comes only after Kafka
//! acknowledged every event; when it did not, the answer is 503 with `Retry-After`, never a
//! silent drop.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use governor::clock::{Clock, DefaultClock};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiState;
use super::auth::Publisher;
use super::error::ApiError;
use crate::ingest::decode::MAX_NAME_BYTES;
use crate::model::FieldError;

/// The most events one `POST /v1/events/batch` may carry.
pub const MAX_BATCH_EVENTS: usize = 500;

/// Room in an event record for what the server adds (ids, workspace, `received_at`).
const ADDED_BYTES: usize = 1024;

/// One posted event: the emit shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Posted {
    event: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    /// Accepted only when it names the key's workspace.
    #[serde(default)]
    workspace_id: Option<String>,
}

pub async fn post_one(
    State(api): State<ApiState>,
    publisher: Publisher,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.admit(&publisher)?;
    let value = parse_body(&body.map_err(ApiError::from_body)?)?;
    let event = check(value, "", &publisher.workspace, api.max_event_bytes()).map_err(reject)?;
    let ids = ingest(
        &api,
        &publisher.workspace,
        idempotency_key(&headers)?,
        vec![event],
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": ids[0] }))))
}

pub async fn post_batch(
    State(api): State<ApiState>,
    publisher: Publisher,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    api.admit(&publisher)?;
    let value = parse_body(&body.map_err(ApiError::from_body)?)?;
    let Some(Value::Array(items)) = value.get("events").cloned() else {
        let problem = "must be an array of events: {\"events\": [...]}";
        return Err(ApiError::invalid(vec![FieldError::new("events", problem)]));
    };
    if items.is_empty() || items.len() > MAX_BATCH_EVENTS {
        let problem = format!(
            "holds {} events; a batch holds 1 to {MAX_BATCH_EVENTS}",
            items.len()
        );
        return Err(ApiError::invalid(vec![FieldError::new("events", problem)]));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("events[{i}]");
        match check(item, &at, &publisher.workspace, api.max_event_bytes()) {
            Ok(event) => events.push(event),
            Err(errors) => problems.extend(errors),
        }
    }
    if !problems.is_empty() {
        return Err(reject(problems));
    }
    let ids = ingest(
        &api,
        &publisher.workspace,
        idempotency_key(&headers)?,
        events,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_ids": ids }))))
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            "",
            format!("the body is not JSON: {e}"),
        )])
    })
}

/// Why an event naming another workspace than the key's is refused.
const OTHER_WORKSPACE: &str = "names another workspace than the publishable key's; leave it out";

/// 413 when an event is too large; 403 when it names a workspace the key may not post for
/// (well-formed, but not this caller's to send); else 400.
fn reject(problems: Vec<FieldError>) -> ApiError {
    if problems.iter().any(|p| p.message == OTHER_WORKSPACE) {
        ApiError {
            fields: problems,
            ..ApiError::forbidden("a publishable key posts only for its own workspace")
        }
    } else if problems
        .iter()
        .any(|p| p.message.contains("max_event_bytes"))
    {
        ApiError {
            fields: problems,
            ..ApiError::too_large("an event is over processor.max_event_bytes")
        }
    } else {
        ApiError::invalid(problems)
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // Visible ASCII only: a header value may also carry spaces and tabs, which a key may not.
    let visible = |key: &str| key.bytes().all(|b| b.is_ascii_graphic());
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_NAME_BYTES && visible(key) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::invalid(vec![FieldError::new(
            "headers.Idempotency-Key",
            format!("must be 1 to {MAX_NAME_BYTES} visible ASCII characters"),
        )])),
    }
}

/// Parses and checks one event with the bounds the processor's decoder applies, so that an
/// accepted event is never a dead letter for its shape. Every problem is named by its path.
fn check(
    value: Value,
    at: &str,
    workspace: &str,
    max_bytes: usize,
) -> Result<Posted, Vec<FieldError>> {
    let path = |field: &str| match (at, field) {
        ("", f) => f.to_owned(),
        (a, "") => a.to_owned(),
        (a, f) => format!("{a}.{f}"),
    };
    let size = value.to_string().len() + ADDED_BYTES;
    let event: Posted = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        vec![FieldError::new(path(&field), e.into_inner().to_string())]
    })?;
    let mut problems = Vec::new();
    if size > max_bytes {
        let problem =
            format!("is about {size} bytes, over processor.max_event_bytes ({max_bytes})");
        problems.push(FieldError::new(path(""), problem));
    }
    if event.event.trim().is_empty() {
        problems.push(FieldError::new(path("event"), "must not be empty"));
    }
    for (field, value) in [
        ("event", Some(&event.event)),
        ("event_id", event.event_id.as_ref()),
        ("resource", event.resource.as_ref()),
        ("resource_id", event.resource_id.as_ref()),
    ] {
        if let Some(len) = value.map(String::len).filter(|len| *len > MAX_NAME_BYTES) {
            let problem = format!("is {len} bytes, over the limit of {MAX_NAME_BYTES}");
            problems.push(FieldError::new(path(field), problem));
        }
    }
    if event.event_id.as_deref() == Some("") {
        problems.push(FieldError::new(
            path("event_id"),
            "must not be empty; leave it out to get one",
        ));
    }
    if event
        .workspace_id
        .as_deref()
        .is_some_and(|w| w != workspace)
    {
        problems.push(FieldError::new(path("workspace_id"), OTHER_WORKSPACE));
    }
    if problems.is_empty() {
        Ok(event)
    } else {
        Err(problems)
    }
}

/// Produces `events` once per `Idempotency-Key` (and each event once per `event_id`) within
/// the window, returning their ids in order.
async fn ingest(
    api: &ApiState,
    workspace: &str,
    idempotency_key: Option<String>,
    events: Vec<Posted>,
) -> Result<Vec<String>, ApiError> {
    let produce_all = || async {
        let writes = events.into_iter().map(|event| async move {
            let Some(id) = event.event_id.clone() else {
                let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
                return produce(api, workspace, &id, event).await.map(|()| id);
            };
            let slot = api.recent.slot(format!("{workspace}\0event\0{id}"));
            slot.get_or_try_init(|| async {
                produce(api, workspace, &id, event)
                    .await
                    .map(|()| vec![id.clone()])
            })
            .await
            .map(|_| id.clone())
        });
        futures::future::try_join_all(writes).await
    };
    match idempotency_key {
        None => produce_all().await,
        Some(key) => {
            let slot = api.recent.slot(format!("{workspace}\0request\0{key}"));
            slot.get_or_try_init(produce_all).await.cloned()
        }
    }
}

/// Writes one event and waits for Kafka's acknowledgement.
async fn produce(api: &ApiState, workspace: &str, id: &str, event: Posted) -> Result<(), ApiError> {
    let record = json!({
        "event_id": id,
        "workspace_id": workspace,
        "event": event.event,
        "resource": event.resource,
        "resource_id": event.resource_id,
        "payload": event.payload.unwrap_or_default(),
        "occurred_at": event.occurred_at,
        "received_at": Utc::now(),
    });
    let value = record.to_string();
    let sent = api
        .producer
        .send(
            FutureRecord::to(&api.settings.topics.events)
                .key(workspace)
                .payload(&value),
            // A full producer queue is answered at once rather than waited on.
            Timeout::After(Duration::ZERO),
        )
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err((error, _)) => {
            tracing::warn!(workspace, event_id = id, %error, "event not acknowledged by Kafka");
            Err(not_written(&error))
        }
    }
}

fn not_written(error: &KafkaError) -> ApiError {
    let after = match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
            return ApiError::too_large("the event is larger than Kafka accepts");
        }
        Some(RDKafkaErrorCode::QueueFull) => Duration::from_secs(1),
        _ => Duration::from_secs(5),
    };
    ApiError::unavailable(
        "Kafka did not acknowledge the event; post it again with the same event_id or \
         Idempotency-Key",
        after,
    )
}

impl ApiState {
    fn max_event_bytes(&self) -> usize {
        self.settings.processor.max_event_bytes
    }

    /// The publishable key's rate limit: 429 with `Retry-After` beyond it.
    fn admit(&self, publisher: &Publisher) -> Result<(), ApiError> {
        self.limiter
            .check_key(&publisher.key_digest)
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError {
                    retry_after: Some(wait),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "this publishable key is over api.rate_limit_per_second",
                    )
                }
            })
    }
}
