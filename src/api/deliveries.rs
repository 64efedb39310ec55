//! `GET /v1/workspaces/{id}/deliveries` (filters, newest first, cursor pages),
//! `GET /v1/workspaces/{id}/deliveries/{delivery_id}` (one delivery with its attempts), both
//! read scope, answered from the history query store; and
//! `POST /v1/workspaces/{id}/deliveries/{delivery_id}/replay` (write scope): a new attempt now,
//! even of a delivered delivery ([`crate::ops::replay_delivery`]).
//!
//! The store is a view of `herald.deliveries` that follows it within moments: a delivery
//! recorded a moment ago may not be listed yet. Without the store (`history.store_path`
//! empty), or while it catches up at start, these routes answer 503 with `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::history::store::{DeliveryQuery, HistoryStore, MAX_LIMIT, StoreError};
use crate::model::FieldError;
use crate::model::records::{DeliveryRecord, DeliveryStatus};
use crate::ops::replay_delivery::{Enqueued, replay_delivery};

/// Deliveries per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// How long a replay may take (finding its event, writing its task) before the answer is 503.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

/// A page of deliveries, newest first (by last update).
#[derive(Debug, Serialize, Deserialize)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRecord>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next: Option<String>,
}

/// The answer to a replay: what was enqueued.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayAccepted {
    pub enqueued: Enqueued,
}

/// The store, when it is configured and caught up.
pub(super) fn store(api: &ApiState) -> Result<Arc<HistoryStore>, ApiError> {
    let Some(store) = api.health.history.clone() else {
        return Err(ApiError::unavailable(
            "the history query store is off on this server (set history.store_path)",
            Duration::from_secs(60),
        ));
    };
    if !store.is_ready() {
        return Err(ApiError::unavailable(
            "the history query store is still catching up with the deliveries topic",
            Duration::from_secs(5),
        ));
    }
    Ok(store)
}

/// 404 unless the live table holds `id`; 503 while the table is still loading at start, when
/// a workspace missing from it may only not be read yet.
pub(super) fn known_workspace(api: &ApiState, id: &str) -> Result<(), ApiError> {
    if !api.table.is_ready() {
        return Err(ApiError::unavailable(
            "the workspace table is still loading",
            Duration::from_secs(5),
        ));
    }
    match api.table.get(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("no workspace with that id")),
    }
}

pub async fn list(
    _: Admin<false>,
    State(api): State<ApiState>,
    Path(workspace): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeliveryList>, ApiError> {
    let store = store(&api)?;
    known_workspace(&api, &workspace)?;
    let query = parse_query(&workspace, raw.as_deref().unwrap_or("")).map_err(ApiError::invalid)?;
    let page = tokio::task::spawn_blocking(move || store.query(&query))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| match e {
            StoreError::Cursor(_) => ApiError::invalid(vec![FieldError::new(
                "cursor",
                "is not a cursor this API gave (take `next` of the previous page)",
            )]),
            other => ApiError::internal(&other),
        })?;
    Ok(Json(DeliveryList {
        deliveries: page.deliveries,
        next: page.next,
    }))
}

pub async fn get(
    _: Admin<false>,
    State(api): State<ApiState>,
    Path((workspace, delivery_id)): Path<(String, String)>,
) -> Result<Json<DeliveryRecord>, ApiError> {
    let store = store(&api)?;
    known_workspace(&api, &workspace)?;
    Ok(Json(one(store, workspace, delivery_id).await?))
}

pub async fn replay(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path((workspace, delivery_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<ReplayAccepted>), ApiError> {
    let store = store(&api)?;
    known_workspace(&api, &workspace)?;
    let record = one(store, workspace, delivery_id).await?;
    let replayed = tokio::time::timeout(
        REPLAY_TIMEOUT,
        replay_delivery(&api.settings, &api.router, &record),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable(
            "Kafka did not answer in time; the replay may or may not be enqueued (see the \
             delivery's status)",
            Duration::from_secs(10),
        )
    })?;
    let enqueued = replayed.map_err(|e| {
        if e.is_conflict() {
            return ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string());
        }
        tracing::warn!(error = %crate::model::error_chain(&e), "replay could not read Kafka");
        ApiError::unavailable(
            "Kafka could not be read to find the delivery's event; try again",
            Duration::from_secs(10),
        )
    })?;
    tracing::info!(delivery_id = %enqueued.delivery_id, token = %admin.name,
        "delivery replayed through the API");
    Ok((StatusCode::ACCEPTED, Json(ReplayAccepted { enqueued })))
}

/// The latest state of one delivery of `workspace`, from the store.
async fn one(
    store: Arc<HistoryStore>,
    workspace: String,
    delivery_id: String,
) -> Result<DeliveryRecord, ApiError> {
    tokio::task::spawn_blocking(move || store.get(&workspace, &delivery_id))
        .await
        .map_err(|e| ApiError::internal(&e))?
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found("no delivery with that id in this workspace"))
}

/// The store query the URL's query string asks for; every parameter at fault is named.
pub fn parse_query(workspace: &str, raw: &str) -> Result<DeliveryQuery, Vec<FieldError>> {
    let mut query = DeliveryQuery {
        workspace_id: workspace.to_owned(),
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let mut problems = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
        let value = value.into_owned();
        let text = |slot: &mut Option<String>| *slot = Some(value.clone());
        match &*name {
            "status" => {
                for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match DeliveryStatus::ALL.iter().find(|s| s.as_str() == part) {
                        Some(s) if !query.statuses.contains(s) => query.statuses.push(*s),
                        Some(_) => {}
                        None => problems.push(FieldError::new(
                            "status",
                            format!(
                                "`{}` is not a status; one of pending, delivered, retrying, \
                                 failed, dead, skipped",
                                crate::model::excerpt(part)
                            ),
                        )),
                    }
                }
            }
            "event" => text(&mut query.event),
            "event_id" => text(&mut query.event_id),
            "rule" => text(&mut query.rule_id),
            "connection" => text(&mut query.connection_id),
            "cursor" => text(&mut query.cursor),
            "since" | "until" => match time(&value) {
                Ok(t) if name == "since" => query.since = Some(t),
                Ok(t) => query.until = Some(t),
                Err(message) => problems.push(FieldError::new(name.to_string(), message)),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => query.limit = n,
                _ => problems.push(FieldError::new(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
            other => problems.push(FieldError::new(
                crate::model::excerpt(other),
                "is not a parameter of this route (status, event, event_id, rule, connection, \
                 since, until, limit, cursor)",
            )),
        }
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && until <= since
    {
        problems.push(FieldError::new("until", "must be after `since`"));
    }
    if problems.is_empty() {
        Ok(query)
    } else {
        Err(problems)
    }
}

/// An RFC 3339 time, or what is wrong with it.
pub(super) fn time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "`{}` is not an RFC 3339 time like 2026-03-21T14:00:00Z",
                crate::model::excerpt(text)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(raw: &str) -> Vec<String> {
        parse_query("ws", raw)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.path)
            .collect()
    }

    #[test]
    fn statuses_come_repeated_or_as_a_comma_list_and_filters_are_read() {
        let q = parse_query(
            "ws",
            "status=dead,failed&status=dead&status=retrying&event=lesson.completed\
             &event_id=evt_1&rule=r&connection=c&since=2026-03-21T14:00:00Z\
             &until=2026-03-21T16:00:00%2B01:00&limit=500&cursor=1_dl",
        )
        .unwrap();
        assert_eq!(
            q.statuses,
            [
                DeliveryStatus::Dead,
                DeliveryStatus::Failed,
                DeliveryStatus::Retrying
            ]
        );
        assert_eq!(q.event.as_deref(), Some("lesson.completed"));
        assert_eq!(q.event_id.as_deref(), Some("evt_1"));
        assert_eq!(
            (q.rule_id.as_deref(), q.connection_id.as_deref()),
            (Some("r"), Some("c"))
        );
        assert_eq!(q.until.unwrap().to_rfc3339(), "2026-03-21T15:00:00+00:00");
        assert_eq!((q.limit, q.cursor.as_deref()), (500, Some("1_dl")));
        assert_eq!(parse_query("ws", "").unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(paths("status=lost"), ["status"]);
        assert_eq!(paths("limit=0"), ["limit"]);
        assert_eq!(paths("limit=501"), ["limit"]);
        assert_eq!(paths("limit=ten"), ["limit"]);
        assert_eq!(
            paths("since=yesterday&until=2026-13-01"),
            ["since", "until"]
        );
        assert_eq!(
            paths("since=2026-03-21T15:00:00Z&until=2026-03-21T14:00:00Z"),
            ["until"]
        );
        assert_eq!(paths("workspace=other"), ["workspace"]);
    }
}
