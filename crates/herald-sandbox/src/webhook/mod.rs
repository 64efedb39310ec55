//! A webhook receiver: answers 200 and records each request; with the connection's secret it
//! verifies the Standard Webhooks signature and answers 401 when it does not match.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::{Sandbox, recorded};

pub mod signature;

pub(super) fn router() -> Router<Sandbox> {
    Router::new().route("/webhook/{*path}", post(receive))
}

/// `?delay_ms=N` makes the receiver answer after N ms (capped at 60 s), to simulate a slow
/// endpoint; `?status=N` makes it answer with that status.
#[derive(serde::Deserialize)]
struct Behaviour {
    delay_ms: Option<u64>,
    status: Option<u16>,
}

async fn receive(
    State(sandbox): State<Sandbox>,
    Path(path): Path<String>,
    Query(behaviour): Query<Behaviour>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full_path = format!("/webhook/{path}");
    if let Some(response) = sandbox
        .faulted("webhook", &full_path, &headers, &body)
        .await
    {
        return response;
    }
    if let Some(ms) = behaviour.delay_ms {
        tokio::time::sleep(std::time::Duration::from_millis(ms.min(60_000))).await;
    }
    let valid = sandbox.webhook_key.as_ref().map(|key| {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match (
            header("webhook-id"),
            header("webhook-timestamp"),
            header("webhook-signature"),
        ) {
            (Some(id), Some(ts), Some(sig)) => signature::verify(key, id, ts, &body, sig),
            _ => false,
        }
    });
    let status = if valid == Some(false) {
        StatusCode::UNAUTHORIZED
    } else {
        behaviour
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK)
    };
    let mut request = recorded(
        "webhook",
        &format!("/webhook/{path}"),
        &headers,
        &body,
        status.as_u16(),
    );
    request.signature_valid = valid;
    sandbox.record(request);
    let text = if status == StatusCode::OK {
        "ok"
    } else {
        "invalid signature"
    };
    (status, text).into_response()
}

/// Events the receiver accepted (2xx), by path, oldest first:
/// `{"endpoints": {"/webhook/a": [{"webhook_id": …, "body": …, "signature_valid": …}]}}`.
pub(super) fn snapshot(requests: &[super::RecordedRequest]) -> serde_json::Value {
    let mut endpoints = serde_json::Map::new();
    for r in requests
        .iter()
        .filter(|r| r.destination == "webhook" && (200..300).contains(&r.status))
    {
        let event = serde_json::json!({
            "webhook_id": r.headers.get("webhook-id"),
            "body": r.body,
            "signature_valid": r.signature_valid,
        });
        endpoints
            .entry(r.path.clone())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()))
            .as_array_mut()
            .expect("an array")
            .push(event);
    }
    serde_json::json!({ "endpoints": endpoints })
}
