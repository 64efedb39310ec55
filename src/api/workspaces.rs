//! `GET /v1/workspaces`, `GET /v1/workspaces/{id}` (read scope) and
//! `DELETE /v1/workspaces/{id}` (write scope): what the live table holds. A workspace is shown
//! by its id, its rules count and its connections' ids and types, never their credentials or
//! settings. Deleting publishes a tombstone to `herald.workspaces`, as `herald workspace` does;
//! every processor then drops the workspace.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde::Serialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::workspace::table::WorkspaceEntry;

/// One workspace as the API shows it.
#[derive(Debug, Serialize)]
pub struct WorkspaceView {
    pub id: String,
    /// `ready`, or `invalid` when its config does not compile on this replica (its events are
    /// skipped; the processor's log says why).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules: Option<usize>,
    pub connections: Vec<ConnectionView>,
}

/// A connection's id and type.
#[derive(Debug, Serialize)]
pub struct ConnectionView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

pub(super) fn view(id: String, entry: &WorkspaceEntry) -> WorkspaceView {
    match entry {
        WorkspaceEntry::Ready(ws) => WorkspaceView {
            id,
            status: "ready",
            rules: Some(ws.rules.len()),
            connections: ws
                .connections
                .iter()
                .map(|(id, kind)| ConnectionView {
                    id: id.clone(),
                    kind: kind.clone(),
                })
                .collect(),
        },
        // The reason may quote settings; it stays in the log.
        WorkspaceEntry::Invalid(_) => WorkspaceView {
            id,
            status: "invalid",
            rules: None,
            connections: Vec::new(),
        },
    }
}

pub async fn list(_: Admin<false>, State(api): State<ApiState>) -> Json<Value> {
    let all: Vec<WorkspaceView> = api
        .table
        .snapshot()
        .into_iter()
        .map(|(id, entry)| view(id, &entry))
        .collect();
    Json(json!({ "workspaces": all }))
}

pub async fn get(
    _: Admin<false>,
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let entry = api.table.get(&id).ok_or_else(unknown)?;
    Ok(Json(view(id, &entry)))
}

pub async fn delete(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if api.table.get(&id).is_none() {
        return Err(unknown());
    }
    let tombstone = FutureRecord::<str, [u8]>::to(&api.settings.topics.workspaces).key(&id);
    if let Err((error, _)) = api
        .producer
        .send(tombstone, Timeout::After(Duration::ZERO))
        .await
    {
        tracing::warn!(workspace = %id, %error, "workspace tombstone not acknowledged by Kafka");
        return Err(ApiError::unavailable(
            "Kafka did not acknowledge the deletion; send it again",
            Duration::from_secs(5),
        ));
    }
    tracing::info!(workspace = %id, token = %admin.name, "workspace deleted through the API");
    // As for a PUT: wait until this replica's table dropped it, so that a GET right after
    // answers 404; past the wait, `loaded: false` says it has not yet.
    let deadline = tokio::time::Instant::now() + super::workspace_put::LOAD_WAIT;
    let loaded = loop {
        if api.table.get(&id).is_none() {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "workspace": id, "deleted": true, "loaded": loaded })),
    ))
}

pub(super) fn unknown() -> ApiError {
    ApiError::not_found("no workspace with that id")
}
