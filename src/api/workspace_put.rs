//! `PUT /v1/workspaces/{id}` (write scope): create or replace a workspace from a YAML or JSON
//! body, checked exactly as `herald workspace apply` checks a file ([`crate::workspace::apply`]),
//! then published to `herald.workspaces`. A literal credential in the body is refused, or with
//! `?store_credentials=true` moved into the encrypted credential store first and left out of
//! the published config, so `herald.workspaces` never holds one in plain text.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use super::workspaces::{ConnectionView, WorkspaceView, view};
use crate::model::{FieldError, WorkspaceConfig};
use crate::workspace::apply::{self, StoreError};

/// How long the answer waits for this replica's workspace table to apply the new version, so
/// that a `GET` right after it sees it. Past this the answer says `loaded: false`.
pub(super) const LOAD_WAIT: Duration = Duration::from_secs(10);

/// The query of `PUT /v1/workspaces/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Move literal credentials into the credential store (as `--store-credentials`).
    #[serde(default)]
    pub store_credentials: bool,
}

/// The answer to `PUT /v1/workspaces/{id}`.
#[derive(Debug, Serialize)]
pub struct PutAnswer {
    #[serde(flatten)]
    pub workspace: WorkspaceView,
    /// Whether the id was new to this replica.
    pub created: bool,
    /// Whether this replica's workspace table applied the new version before the answer.
    pub loaded: bool,
    /// The credential records written, `workspace/connection (field, …)`: names, never values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stored_credentials: Vec<String>,
}

pub async fn put(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path(id): Path<String>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PutAnswer>), ApiError> {
    let Query(query) = query.map_err(|e| super::error::bad_query(&e))?;
    check_media_type(&headers)?;
    let body = body.map_err(ApiError::from_body)?;
    let text = std::str::from_utf8(&body).map_err(|_| invalid("", "the body is not UTF-8 text"))?;
    let processor = &api.processor;
    let mut config =
        apply::check(text, &processor.ctx, &processor.vars).map_err(ApiError::invalid)?;
    if config.workspace != id {
        return Err(invalid(
            "workspace",
            format!("is `{}`; the path names `{id}`", config.workspace),
        ));
    }
    let stored_credentials = if query.store_credentials {
        store_credentials(&api, &mut config).await?
    } else {
        let refused = apply::refuse_literal_credentials(
            &config,
            &api.settings.credentials.env_prefix,
            "add `?store_credentials=true` to move it into the store",
        );
        if !refused.is_empty() {
            return Err(ApiError::invalid(refused));
        }
        Vec::new()
    };
    let created = api.table.get(&id).is_none();
    let published = apply::publish(&api.settings, &api.producer, &config)
        .await
        .map_err(|error| {
            tracing::warn!(workspace = %id, %error, "workspace not acknowledged by Kafka");
            ApiError::unavailable(
                "Kafka did not acknowledge the workspace; send it again",
                Duration::from_secs(5),
            )
        })?;
    tracing::info!(workspace = %id, token = %admin.name, "workspace applied through the API");
    let loaded = wait_until_loaded(&api, &id, &published).await;
    let workspace = match api.table.get(&id).filter(|_| loaded) {
        Some(entry) => view(id, &entry),
        None => published_view(&config),
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PutAnswer {
            workspace,
            created,
            loaded,
            stored_credentials,
        }),
    ))
}

/// YAML or JSON, as the `Content-Type` says; anything else is 415.
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        "application/json" | "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the workspace as `Content-Type: application/yaml` or `application/json`",
        )),
    }
}

async fn store_credentials(
    api: &ApiState,
    config: &mut WorkspaceConfig,
) -> Result<Vec<String>, ApiError> {
    if apply::literal_credentials(config).is_empty() {
        return Ok(Vec::new());
    }
    let keys = &api.processor.keys;
    if keys.write_key().is_none() {
        return Err(super::credentials::no_write_key());
    }
    apply::store_literal_credentials(&api.settings, &api.producer, keys, config)
        .await
        .map_err(|e| match e {
            StoreError::Mixed(fields) => ApiError::invalid(fields),
            StoreError::Write(error) => super::credentials::not_stored(&error),
        })
}

/// Waits (up to [`LOAD_WAIT`]) until this replica's table holds `published` for `id`.
async fn wait_until_loaded(api: &ApiState, id: &str, published: &[u8]) -> bool {
    let deadline = Instant::now() + LOAD_WAIT;
    loop {
        if api.table.newest_record(id).as_deref() == Some(published) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The view of a published config this replica has not applied yet.
fn published_view(config: &WorkspaceConfig) -> WorkspaceView {
    WorkspaceView {
        id: config.workspace.clone(),
        status: "published",
        rules: Some(config.rules.len()),
        connections: config
            .connections
            .iter()
            .map(|c| ConnectionView {
                id: c.id.clone(),
                kind: c.kind.clone(),
            })
            .collect(),
    }
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(vec![FieldError::new(path, message)])
}
