//! Intercom REST API under `/intercom/…`: contacts (search, create, get, update, delete), tags
//! (create-or-update by name), tagging, and `GET /me` (what "test connection" calls). Answers like the vendor, with the `error.list`
//! envelope: `401 unauthorized` for a missing or refused token (any token starting with
//! `bad`; one starting with `revoked` gets `token_revoked`), `406` without an acceptable
//! `Accept`, `400 intercom_version_invalid` for an unknown `Intercom-Version` (absent means the
//! app's default version, as at Intercom), `409 conflict` "… already exists with id=…" when a
//! created contact's email or external_id is taken, `400 parameter_invalid` for a custom
//! attribute that is not defined (here: any name starting with `undefined_`).
//!
//! Like Intercom, search is eventually consistent: a new contact stays invisible to
//! `POST /contacts/search` for `search_lag_ms` (2 s unless set with `PUT /_sandbox/intercom`).
//! The rate limit is per token, `limit_per_minute` (10,000) spread over 10-second windows as
//! Intercom does (1,667 per window), with `X-RateLimit-Limit/Remaining/Reset` on every
//! authenticated answer and `429 rate_limit_exceeded` past it.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as Shared};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use self::workspace::{Answer, VERSIONS, error};
pub use self::workspace::{DEFAULT_LIMIT_PER_MINUTE, DEFAULT_SEARCH_LAG, State};
use crate::Sandbox;

mod workspace;

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/intercom/contacts", post(create_contact))
        .route("/intercom/contacts/search", post(search_contacts))
        .route(
            "/intercom/contacts/{id}",
            get(get_contact).put(update_contact).delete(delete_contact),
        )
        .route("/intercom/contacts/{id}/tags", post(tag_contact))
        .route("/intercom/tags", post(create_tag))
        .route("/intercom/me", get(me))
}

/// `GET /me`: the admin the token belongs to (what "test connection" calls).
async fn me(Shared(sandbox): Shared<Sandbox>, headers: HeaderMap) -> Response {
    serve(&sandbox, &headers, &[], |_, _| {
        (
            StatusCode::OK,
            serde_json::json!({"type": "admin", "id": "991267", "name": "Sandbox Admin",
                               "email": "admin@sandbox.example"}),
        )
    })
}

fn respond((status, body): Answer) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Answers a request that passes Intercom's checks (`Accept`, the token, `Intercom-Version`,
/// the rate limit, a JSON body or none) with what `handle` makes of its body (`Null` when there
/// is none). Every answer from the rate limit on carries the rate-limit headers.
fn serve(
    sandbox: &Sandbox,
    headers: &HeaderMap,
    body: &[u8],
    handle: impl FnOnce(&mut State, Value) -> Answer,
) -> Response {
    let refuse =
        |status: StatusCode, code: &str, message: &str| respond(error(status, code, message));
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let accept = header("accept").unwrap_or("");
    if !accept.contains("application/json") && !accept.contains("*/*") {
        return refuse(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "The Accept header must allow application/json",
        );
    }
    let token = header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() || token.starts_with("bad") {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Access Token Invalid",
        );
    }
    if token.starts_with("revoked") {
        return refuse(StatusCode::UNAUTHORIZED, "token_revoked", "Token revoked");
    }
    if let Some(version) = header("intercom-version")
        && !VERSIONS.contains(&version)
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "intercom_version_invalid",
            "The requested version could not be found",
        );
    }
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let admitted = sandbox.intercom().admit(token, now);
    let (mut response, rate) = match admitted {
        Err(rate) => {
            let message = format!("Exceeded rate limit of {} in 10_seconds", rate.limit);
            let response = refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                &message,
            );
            (response, rate)
        }
        Ok(rate) if body.is_empty() => {
            (respond(handle(&mut sandbox.intercom(), Value::Null)), rate)
        }
        Ok(rate) => match serde_json::from_slice(body) {
            Ok(request) => (respond(handle(&mut sandbox.intercom(), request)), rate),
            Err(_) => {
                let response = refuse(
                    StatusCode::BAD_REQUEST,
                    "parameter_invalid",
                    "The request body is not valid JSON",
                );
                (response, rate)
            }
        },
    };
    rate.apply(&mut response);
    response
}

async fn search_contacts(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, &headers, &body, |st, req| st.search(&req))
}

async fn create_contact(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, &headers, &body, |st, req| st.create(&req))
}

async fn get_contact(
    Shared(s): Shared<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&s, &headers, b"", |st, _| st.get(&id))
}

async fn update_contact(
    Shared(s): Shared<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&s, &headers, &body, |st, req| st.update(&id, &req))
}

async fn delete_contact(
    Shared(s): Shared<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    serve(&s, &headers, b"", |st, _| st.delete(&id))
}

async fn tag_contact(
    Shared(s): Shared<Sandbox>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    serve(&s, &headers, &body, |st, req| st.tag_contact(&id, &req))
}

async fn create_tag(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, &headers, &body, |st, req| st.create_tag(&req))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tuning {
    search_lag_ms: Option<u64>,
    limit_per_minute: Option<u32>,
}

/// `PUT /_sandbox/intercom`: the search lag and the rate limit.
pub(crate) async fn tune(
    Shared(sandbox): Shared<Sandbox>,
    axum::Json(t): axum::Json<Tuning>,
) -> Response {
    let lag = t.search_lag_ms.map(Duration::from_millis);
    respond(sandbox.intercom().tune(lag, t.limit_per_minute))
}
