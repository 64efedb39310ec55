//! The HTTP surface of `herald run` and `herald dev`:
//!
//! - `/healthz` (alive: 503 when the processor is wedged), `/readyz` (workspace table loaded
//!   and consumer subscribed), `/metrics` (Prometheus), `/openapi.json` (the API's description,
//!   [`openapi`]);
//! - `/v1/events`, `/v1/events/batch`: ingest with a workspace's publishable key
//!   ([`events`], [`auth`]);
//! - `/v1/workspaces`: the management API, with admin tokens ([`workspaces`], [`auth`]):
//!   create or replace a workspace ([`workspace_put`]), set its connections' credentials
//!   ([`credentials`]), test them and see their health ([`connections`]), try an event
//!   against its rules ([`test_event`]); a workspace's deliveries ([`deliveries`]) and its bulk
//!   redrive and replay ([`recovery`]);
//! - `/oauth/hubspot/start`, `/oauth/hubspot/callback`: "Connect HubSpot" ([`oauth`]).
//!
//! Every answer carries an `x-request-id` (the caller's, or a new one), which is also a field
//! of the request's tracing span; every error has the one shape of [`error`].

pub mod auth;
pub mod connections;
pub mod credentials;
pub mod deliveries;
pub mod error;
pub mod events;
pub mod idempotency;
pub mod oauth;
pub mod openapi;
pub mod processor;
pub mod recovery;
pub mod test_event;
pub mod workspace_put;
pub mod workspaces;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::deliver::health::Health;
use crate::deliver::route::Router as DeliveryRouter;
use crate::kafka;
use crate::settings::Settings;
use crate::telemetry::Metrics;
use crate::workspace::table::WorkspaceTable;

/// What the handlers share; cheap to clone.
#[derive(Clone)]
pub struct ApiState(Arc<Shared>);

/// The parts behind [`ApiState`].
pub struct Shared {
    pub settings: Settings,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub table: Arc<WorkspaceTable>,
    /// Ingest's own producer, whose `message.timeout.ms` is `api.produce_timeout_ms`, so that a
    /// caller hears within that time whether Kafka took its event.
    pub producer: FutureProducer,
    /// The processor's router: its workspace table, outcome writer and retry policy, with
    /// which replays enqueue their tasks and record their history.
    pub router: Arc<DeliveryRouter>,
    /// Admits one redrive or window replay at a time.
    pub bulk: recovery::BulkGate,
    /// The processor in this process, for the management API.
    pub processor: processor::Processor,
    keys: auth::KeyIndex,
    admin: auth::AdminTokens,
    recent: idempotency::Recent,
    limiter: DefaultKeyedRateLimiter<[u8; 32]>,
}

impl Deref for ApiState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl ApiState {
    /// Creates the ingest producer and resolves the admin tokens.
    pub fn start(
        settings: &Settings,
        health: Arc<Health>,
        metrics: Metrics,
        processor: processor::Processor,
    ) -> Result<Self, KafkaError> {
        let api = &settings.api;
        let producer = kafka::producer_config(settings)
            .set("message.timeout.ms", api.produce_timeout_ms.to_string())
            .create()?;
        // Both are validated greater than 0 by `Settings::load`.
        let rate = std::num::NonZeroU32::new(api.rate_limit_per_second)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(api.rate_limit_burst).unwrap_or(rate);
        Ok(Self(Arc::new(Shared {
            table: health.table.clone(),
            keys: auth::KeyIndex::new(health.table.clone()),
            admin: auth::AdminTokens::new(&api.admin_tokens),
            recent: idempotency::Recent::new(
                Duration::from_millis(api.idempotency_window_ms),
                api.idempotency_max_entries,
            ),
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            producer,
            router: processor.router.clone(),
            bulk: recovery::BulkGate::default(),
            processor,
            health,
            metrics,
            settings: settings.clone(),
        })))
    }
}

/// Every route, to serve alone or merged with the sandbox's.
pub fn router(state: ApiState) -> Router {
    layered(routes(state))
}

/// The API's routes without the request-id and tracing layers, to merge others (the web
/// console's) under the same layers with [`layered`].
pub fn routes(state: ApiState) -> Router {
    let body_limit = state.settings.api.max_body_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/events", post(events::post_one))
        .route("/v1/events/batch", post(events::post_batch))
        .route("/v1/workspaces", get(workspaces::list))
        .route(
            "/v1/workspaces/{id}",
            get(workspaces::get)
                .delete(workspaces::delete)
                .put(workspace_put::put),
        )
        .merge(oauth::routes(&state))
        .route("/v1/workspaces/{id}/deliveries", get(deliveries::list))
        .route(
            "/v1/workspaces/{id}/deliveries/{delivery_id}",
            get(deliveries::get),
        )
        .route(
            "/v1/workspaces/{id}/deliveries/{delivery_id}/replay",
            post(deliveries::replay),
        )
        .route(
            "/v1/workspaces/{id}/redrive",
            post(recovery::redrive_deliveries),
        )
        .route("/v1/workspaces/{id}/replay", post(recovery::replay_window))
        .route("/v1/workspaces/{id}/connections", get(connections::list))
        .route(
            "/v1/workspaces/{id}/connections/{connection}/credentials",
            put(credentials::put).delete(credentials::delete),
        )
        .route(
            "/v1/workspaces/{id}/connections/{connection}/test",
            post(connections::test),
        )
        .route("/v1/workspaces/{id}/test-event", post(test_event::post))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// `routes` with a request id on every request and answer, and a tracing span carrying it.
pub fn layered(routes: Router) -> Router {
    routes
        // The last layer runs first: set the id, open the span with it, copy it to the answer.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!("request", request_id = %id, method = %request.method(),
                path = %request.uri().path())
            }),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn healthz(State(api): State<ApiState>) -> impl IntoResponse {
    match api.health.live() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        ),
    }
}

async fn readyz(State(api): State<ApiState>) -> impl IntoResponse {
    match api.health.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(api): State<ApiState>) -> impl IntoResponse {
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
