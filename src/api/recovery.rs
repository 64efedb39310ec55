//! `POST /v1/workspaces/{id}/redrive` and `POST /v1/workspaces/{id}/replay` (write scope): the
//! operator's bulk actions, with the semantics of `herald redrive` ([`crate::ops::redrive`]) and
//! `herald replay --workspace` ([`crate::ops::workspace_replay`]), answered with what they
//! selected and did. Both read Kafka topics from the start of their range, so they take
//! seconds, not milliseconds; the answer comes when they are done.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::ApiState;
use super::auth::Admin;
use super::deliveries::known_workspace;
use super::error::ApiError;
use crate::model::FieldError;
use crate::model::records::DeliveryStatus;
use crate::ops::redrive::{RedriveFilter, redrive};
use crate::ops::workspace_replay::{Window, replay_beside};

/// The most delivery ids a redrive answer lists; `count` says how many there were.
pub const MAX_LISTED_IDS: usize = 1_000;

/// How long a bulk action may take before the answer is 503 (it may still finish).
const BULK_TIMEOUT: Duration = Duration::from_secs(180);

/// One bulk action at a time per server: each reads whole topics, and a caller that sends them
/// in a loop must not pile scans up. Another one meanwhile is answered 429.
pub struct BulkGate(Semaphore);

impl Default for BulkGate {
    fn default() -> Self {
        Self(Semaphore::new(1))
    }
}

impl BulkGate {
    /// The right to run a bulk action until the permit drops, or 429 while one runs.
    pub fn try_enter(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.0.try_acquire().map_err(|_| ApiError {
            retry_after: Some(Duration::from_secs(10)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "busy",
                "another redrive or replay is running on this server; send this one when it ends",
            )
        })
    }
}

/// The body of `POST /v1/workspaces/{id}/redrive`; every field is optional.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Only this connection's deliveries.
    #[serde(default)]
    pub connection: Option<String>,
    /// Only this rule's deliveries.
    #[serde(default)]
    pub rule: Option<String>,
    /// Only deliveries that failed at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// Which final states to redrive: `failed`, `dead` (default both).
    #[serde(default)]
    pub statuses: Option<Vec<DeliveryStatus>>,
    /// Select, list and count, but enqueue nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a redrive selected (and, unless a dry run, enqueued).
#[derive(Debug, Deserialize, Serialize)]
pub struct RedriveAnswer {
    pub dry_run: bool,
    /// Deliveries selected (dry run) or enqueued.
    pub count: usize,
    /// Their ids, oldest failure first, at most [`MAX_LISTED_IDS`].
    pub delivery_ids: Vec<String>,
    /// Whether `delivery_ids` was cut at [`MAX_LISTED_IDS`].
    pub truncated: bool,
}

/// The body of `POST /v1/workspaces/{id}/replay`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Events from this time.
    pub since: DateTime<Utc>,
    /// Events before this time (default: up to now).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Only this rule's deliveries.
    #[serde(default)]
    pub rule: Option<String>,
    /// Deliver again what history says was delivered.
    #[serde(default)]
    pub force: bool,
}

/// The counts of a workspace replay.
#[derive(Debug, Deserialize, Serialize)]
pub struct ReplayAnswer {
    /// Records read in the window, all workspaces.
    pub scanned: usize,
    /// Events of the workspace replayed.
    pub events: usize,
    /// Records of the window that could not be decoded (they are in the DLQ).
    pub undecodable: usize,
    /// Deliveries attempted and recorded.
    pub settled: usize,
    /// Deliveries not sent because history says they were delivered (`force` sends them).
    pub already_delivered: usize,
}

pub async fn redrive_deliveries(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path(workspace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RedriveAnswer>, ApiError> {
    known_workspace(&api, &workspace)?;
    let request: RedriveRequest = parse(&body.map_err(ApiError::from_body)?)?;
    let statuses = request
        .statuses
        .unwrap_or_else(|| vec![DeliveryStatus::Failed, DeliveryStatus::Dead]);
    if statuses.is_empty()
        || statuses
            .iter()
            .any(|s| !matches!(s, DeliveryStatus::Failed | DeliveryStatus::Dead))
    {
        return Err(ApiError::invalid(vec![FieldError::new(
            "statuses",
            "lists `failed`, `dead` or both: only those are redriven",
        )]));
    }
    let _running = api.bulk.try_enter()?;
    let filter = RedriveFilter {
        workspace_id: workspace.clone(),
        connection_id: request.connection,
        rule_id: request.rule,
        since: request.since,
        statuses,
    };
    let records = tokio::time::timeout(
        BULK_TIMEOUT,
        redrive(&api.settings, &filter, request.dry_run),
    )
    .await
    .map_err(|_| too_slow())?
    .map_err(|e| {
        tracing::warn!(error = %crate::model::error_chain(&e), "redrive failed");
        ApiError::unavailable(
            "Kafka could not be read or written for the redrive; try again",
            Duration::from_secs(10),
        )
    })?;
    tracing::info!(workspace = %workspace, token = %admin.name, count = records.len(),
        dry_run = request.dry_run, "redrive through the API");
    Ok(Json(RedriveAnswer {
        dry_run: request.dry_run,
        count: records.len(),
        truncated: records.len() > MAX_LISTED_IDS,
        delivery_ids: records
            .into_iter()
            .take(MAX_LISTED_IDS)
            .map(|r| r.delivery_id)
            .collect(),
    }))
}

pub async fn replay_window(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path(workspace): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ReplayAnswer>), ApiError> {
    known_workspace(&api, &workspace)?;
    let request: ReplayRequest = parse(&body.map_err(ApiError::from_body)?)?;
    if request.until.is_some_and(|until| until <= request.since) {
        return Err(ApiError::invalid(vec![FieldError::new(
            "until",
            "must be after `since`",
        )]));
    }
    let _running = api.bulk.try_enter()?;
    let window = Window {
        workspace_id: workspace.clone(),
        since: request.since,
        until: request.until,
        rule: request.rule,
        force: request.force,
    };
    let report = tokio::time::timeout(
        BULK_TIMEOUT,
        replay_beside(&api.settings, &api.router, &window),
    )
    .await
    .map_err(|_| too_slow())?
    .map_err(|e| {
        tracing::warn!(error = %crate::model::error_chain(&e), "workspace replay failed");
        ApiError::unavailable(
            "Kafka could not be read for the replay; try again",
            Duration::from_secs(10),
        )
    })?;
    tracing::info!(workspace = %workspace, token = %admin.name, events = report.events,
        "workspace replay through the API");
    Ok((
        StatusCode::OK,
        Json(ReplayAnswer {
            scanned: report.scanned,
            events: report.events,
            undecodable: report.undecodable,
            settled: report.routed.settled,
            already_delivered: report.routed.already_delivered,
        }),
    ))
}

fn too_slow() -> ApiError {
    ApiError::unavailable(
        "the action did not finish in time; part of it may have been done (see the history)",
        Duration::from_secs(30),
    )
}

/// A JSON body (an empty one is `{}`), or 400 naming the field at fault.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    // Serde would take an array for a struct (its fields in order); only an object is a body.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(vec![FieldError::new(
            "",
            format!("the body is not JSON: {e}"),
        )])
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            // A missing or unknown field is reported at its parent; name the field itself.
            path = ["missing field `", "unknown field `"]
                .iter()
                .find_map(|p| message.strip_prefix(p)?.split('`').next())
                .unwrap_or_default()
                .to_owned();
        }
        ApiError::invalid(vec![FieldError::new(path, message)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(body: &str) -> String {
        let e = parse::<ReplayRequest>(body.as_bytes()).unwrap_err();
        e.fields[0].path.clone()
    }

    #[test]
    fn a_bad_body_names_its_field() {
        assert_eq!(field(r#"{"since": "yesterday"}"#), "since");
        assert_eq!(
            field(r#"{"since": "2026-03-21T14:00:00Z", "force": "yes"}"#),
            "force"
        );
        assert_eq!(field(""), "since", "missing");
        assert_eq!(
            field(r#"{"since": "2026-03-21T14:00:00Z", "froce": true}"#),
            "froce"
        );
        let r: RedriveRequest = parse(b"").unwrap();
        assert!(!r.dry_run && r.statuses.is_none());
        let e = parse::<RedriveRequest>(br#"{"statuses": ["lost"]}"#).unwrap_err();
        assert_eq!(e.fields[0].path, "statuses[0]");
    }
}
