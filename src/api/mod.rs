//! The HTTP surface of `herald run`: `/healthz` (alive: 503 when the processor is wedged),
//! `/readyz` (workspace table loaded and consumer subscribed) and `/metrics` (Prometheus).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::deliver::health::Health;
use crate::telemetry::Metrics;

#[derive(Clone)]
struct Api {
    health: Arc<Health>,
    metrics: Metrics,
}

/// The routes, to serve alone or merged with the sandbox's.
pub fn router(health: Arc<Health>, metrics: Metrics) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Api { health, metrics })
}

async fn healthz(State(api): State<Api>) -> impl IntoResponse {
    match api.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn readyz(State(api): State<Api>) -> impl IntoResponse {
    match api.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(api): State<Api>) -> impl IntoResponse {
    api.metrics.workspaces.set(api.health.table.len() as i64);
    api.metrics
        .broken_connections
        .set(api.health.table.broken_connections() as i64);
    api.metrics
        .rejected_configs
        .set(api.health.table.rejected_configs() as i64);
    let degraded = api.health.dedupe.as_ref().map_or(0, |d| d.degraded());
    api.metrics.dedupe_degraded.set(degraded as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(),
    )
}
