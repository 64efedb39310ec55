//! `GET /v1/workspaces/{id}/connections` (read scope): each connection's health as the
//! processor in this process sees it, and `POST …/connections/{connection}/test` (write
//! scope): one harmless authenticated call to the destination ("test connection").
//!
//! Health is this replica's view: breakers and rate limiters are kept per replica, and a
//! connection is marked broken by the replica whose call was refused. Other replicas may see
//! it otherwise; ask each one (or read `herald_open_circuits` and `herald_broken_connections`,
//! which every replica exports) for the fleet.

use std::time::Instant;

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::deliver::breaker::CircuitView;
use crate::destinations::preview::Probe;
use crate::workspace::compile::CompiledWorkspace;
use crate::workspace::table::WorkspaceEntry;

/// The answer to `GET /v1/workspaces/{id}/connections`.
#[derive(Debug, Serialize)]
pub struct ConnectionsAnswer {
    pub workspace: String,
    /// Always `replica`: the state below is this process's.
    pub view: &'static str,
    pub connections: Vec<ConnectionHealth>,
}

/// One connection's health.
#[derive(Debug, Serialize)]
pub struct ConnectionHealth {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether its deliveries are parked without a call, and why (bad credentials, missing
    /// stored credentials); cleared by applying the workspace again.
    pub broken: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_reason: Option<String>,
    /// Its circuit breaker: transient failures in a row, last error, open until when.
    pub circuit: CircuitView,
    /// Its request-rate limiter, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitView>,
}

/// A connection's adaptive rate limit.
#[derive(Debug, Serialize)]
pub struct RateLimitView {
    /// The share of the configured rate now allowed: 1 normally, halved by each 429 down to
    /// 1/16, recovering with successes.
    pub factor: f64,
    /// Whether a 429 slowed it down and it has not recovered yet.
    pub throttled: bool,
}

/// The answer to `POST …/connections/{connection}/test`.
#[derive(Debug, Serialize)]
pub struct TestAnswer {
    /// Whether the destination accepted the connection's credentials.
    pub ok: bool,
    /// `false` when the destination has no harmless call to test with (then `error` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supported: Option<bool>,
    /// The vendor's (or the network's) error, credentials redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub async fn list(
    _: Admin<false>,
    State(api): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<ConnectionsAnswer>, ApiError> {
    let ws = ready(&api, &id)?;
    let breakers = &api.processor.router.breakers;
    let now = Instant::now();
    let connections = ws
        .connections
        .iter()
        .map(|(connection, kind)| {
            let broken_reason = ws.broken_reason(connection);
            let rate_limit =
                ws.connection(connection)
                    .and_then(|c| c.rate_factor())
                    .map(|factor| RateLimitView {
                        factor,
                        throttled: factor < 1.0,
                    });
            ConnectionHealth {
                id: connection.clone(),
                kind: kind.clone(),
                broken: broken_reason.is_some(),
                broken_reason,
                circuit: breakers.view(&id, connection, now),
                rate_limit,
            }
        })
        .collect();
    Ok(Json(ConnectionsAnswer {
        workspace: id,
        view: "replica",
        connections,
    }))
}

pub async fn test(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Path((id, connection)): Path<(String, String)>,
) -> Result<Json<TestAnswer>, ApiError> {
    let ws = ready(&api, &id)?;
    let handle = ws
        .connection(&connection)
        .ok_or_else(super::credentials::unknown_connection)?
        .clone();
    tracing::info!(workspace = %id, connection = %connection, token = %admin.name,
        "testing a connection");
    let bound = api.processor.call_bound();
    let probe = tokio::time::timeout(bound, handle.probe())
        .await
        .unwrap_or_else(|_| Probe::Failed(format!("no answer within {} s", bound.as_secs())));
    Ok(Json(match probe {
        Probe::Ok => TestAnswer {
            ok: true,
            supported: None,
            error: None,
        },
        Probe::Failed(error) => TestAnswer {
            ok: false,
            supported: None,
            error: Some(error),
        },
        Probe::Unsupported(why) => TestAnswer {
            ok: false,
            supported: Some(false),
            error: Some(why),
        },
    }))
}

/// The compiled workspace `id`; 404 when this replica has none that compiles.
pub fn ready(api: &ApiState, id: &str) -> Result<std::sync::Arc<CompiledWorkspace>, ApiError> {
    match api.table.get(id) {
        Some(WorkspaceEntry::Ready(ws)) => Ok(ws),
        Some(WorkspaceEntry::Invalid(_)) => Err(ApiError::not_found(
            "the workspace's config does not compile on this replica; its connections are unknown",
        )),
        None => Err(super::workspaces::unknown()),
    }
}
