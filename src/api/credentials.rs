//! `PUT` and `DELETE /v1/workspaces/{id}/connections/{connection}/credentials` (write scope):
//! the credential store through the API, as `herald credentials set|delete`. Write-only: the
//! body is the credential object (`{"token": "…"}`), checked against the connection type's
//! credential fields and encrypted under this processor's write key; nothing answers with it,
//! and errors name fields, never values. Every processor following `herald.credentials` then
//! compiles the workspace again with them.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::credentials::write::{self, WriteError};
use crate::credentials::{Fields, RecordKey};
use crate::destinations;
use crate::model::{ConnectionSpec, FieldError, Secret, WorkspaceConfig};
use crate::workspace::table::WorkspaceEntry;

pub async fn put(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path((id, connection)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let kind = connection_kind(&api, &id, &connection)?;
    let fields = parse_fields(&body.map_err(ApiError::from_body)?)?;
    check(&api, &id, &connection, &kind, &fields)?;
    if api.processor.keys.write_key().is_none() {
        return Err(no_write_key());
    }
    let record = record_key(&id, &connection)?;
    write::put(
        &api.settings,
        &api.producer,
        &api.processor.keys,
        &record,
        &fields,
    )
    .await
    .map_err(|e| not_stored(&e))?;
    tracing::info!(workspace = %id, connection = %connection, token = %admin.name,
        "credentials stored through the API");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path((id, connection)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    connection_kind(&api, &id, &connection)?;
    let record = record_key(&id, &connection)?;
    write::delete(&api.settings, &api.producer, &record)
        .await
        .map_err(|e| not_stored(&e))?;
    tracing::info!(workspace = %id, connection = %connection, token = %admin.name,
        "credentials deleted through the API");
    Ok(StatusCode::NO_CONTENT)
}

/// The type of `connection` in workspace `id` as this replica's table has it; 404 when either
/// is unknown.
pub(super) fn connection_kind(
    api: &ApiState,
    id: &str,
    connection: &str,
) -> Result<String, ApiError> {
    let entry = api.table.get(id).ok_or_else(super::workspaces::unknown)?;
    let WorkspaceEntry::Ready(ws) = entry else {
        return Err(ApiError::not_found(
            "the workspace's config does not compile on this replica; its connections are unknown",
        ));
    };
    ws.connections
        .iter()
        .find(|(c, _)| c == connection)
        .map(|(_, kind)| kind.clone())
        .ok_or_else(unknown_connection)
}

pub(super) fn unknown_connection() -> ApiError {
    ApiError::not_found("the workspace has no connection with that id")
}

/// A JSON object of strings; errors name the field, never quote a value.
fn parse_fields(body: &[u8]) -> Result<Fields, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| {
        invalid(
            "credentials",
            "the body is not JSON; send an object of fields, like {\"token\": \"…\"}",
        )
    })?;
    let Value::Object(map) = value else {
        return Err(invalid(
            "credentials",
            "must be an object of fields, like {\"token\": \"…\"}",
        ));
    };
    let mut fields = Fields::new();
    let mut problems = Vec::new();
    for (name, value) in map {
        match value {
            Value::String(s) => {
                fields.insert(name, Secret::new(s));
            }
            _ => problems.push(FieldError::new(
                format!("credentials.{name}"),
                "must be a string",
            )),
        }
    }
    if problems.is_empty() {
        Ok(fields)
    } else {
        Err(ApiError::invalid(problems))
    }
}

/// Checks `fields` against the credential fields of `kind`, then, when this replica holds the
/// workspace's published config, builds the connection with them (which checks values the
/// way the processor will, e.g. a webhook secret's `whsec_` form). Only errors about the
/// credentials are reported.
fn check(
    api: &ApiState,
    id: &str,
    connection: &str,
    kind: &str,
    fields: &Fields,
) -> Result<(), ApiError> {
    let destination = destinations::lookup(kind).ok_or_else(|| {
        // The table compiled this connection, so its type is known.
        invalid("credentials", format!("`{kind}` is not a destination type"))
    })?;
    destination
        .check_credentials(fields)
        .map_err(|e| ApiError::invalid(vec![e]))?;
    let settings = api
        .table
        .newest_record(id)
        .and_then(|record| WorkspaceConfig::from_json(&record).ok())
        .and_then(|config| {
            config
                .connections
                .into_iter()
                .find(|c| c.id == connection)
                .map(|c| c.settings)
        });
    let Some(settings) = settings else {
        return Ok(());
    };
    let spec = ConnectionSpec {
        id: connection.to_owned(),
        kind: kind.to_owned(),
        credentials: fields.clone(),
        settings,
    };
    match destination.connect(&spec, &api.processor.ctx) {
        Err(e) if e.path.starts_with("credentials") => Err(ApiError::invalid(vec![e])),
        _ => Ok(()),
    }
}

fn record_key(id: &str, connection: &str) -> Result<RecordKey, ApiError> {
    RecordKey::new(id, connection).ok_or_else(|| {
        invalid(
            "connection",
            "workspace and connection ids must be non-empty and contain no `/`",
        )
    })
}

/// 503: this processor cannot encrypt.
pub(super) fn no_write_key() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_write_key",
        "this processor has no credential store key to encrypt with; set HERALD_SECRETS_KEYS, \
         HERALD_SECRETS_KEY or credentials.keys_dir",
    )
}

/// The answer when the store could not be written.
pub(super) fn not_stored(error: &WriteError) -> ApiError {
    match error {
        WriteError::NoKey => no_write_key(),
        WriteError::Kafka { .. } => {
            tracing::warn!(error = %crate::model::error_chain(error),
                "credentials not acknowledged by Kafka");
            ApiError::unavailable(
                "Kafka did not acknowledge the credentials; send them again",
                Duration::from_secs(5),
            )
        }
    }
}

fn invalid(path: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(vec![FieldError::new(path, message)])
}
