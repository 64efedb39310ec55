//! A webhook receiver: answers 200; with the connection's secret it verifies the Standard
//! Webhooks signature, answers 401 when it does not match, and notes the verdict for the
//! request's record.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::Sandbox;
use crate::traffic::Note;

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
    Query(behaviour): Query<Behaviour>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
    let text = if status == StatusCode::OK {
        "ok"
    } else {
        "invalid signature"
    };
    let note = Note {
        signature_valid: valid,
        ..Note::default()
    };
    note.on((status, text).into_response())
}

/// Events the receiver accepted (2xx), by path, oldest first:
/// `{"endpoints": {"/webhook/a": [{"webhook_id": …, "body": …, "signature_valid": …}]}}`.
pub(super) fn snapshot(requests: &[crate::RecordedRequest]) -> serde_json::Value {
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
