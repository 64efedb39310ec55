//! ActiveCampaign API v3 under `/activecampaign/api/3/…`: contacts (upsert by email), tags,
//! contact tags, lists 1 and 2, list subscriptions. It answers like the vendor: `403
//! {"message"}` for a missing or refused `Api-Token` (any token starting with `bad`), `422
//! {"errors":[…]}` for validation, `404 {"message": "No Result found for …"}` for unknown ids,
//! and `429` with `Retry-After` past 5 requests per second per token.
//!
//! Some accounts answer an unauthenticated request with `200` and the HTML login page; the
//! token `html-login` makes the simulator do that. Two answers are not documented by the
//! vendor and are this simulator's assumption: a tag name that exists already gets `422`
//! `code: "duplicate"`, and tagging a contact twice gets `422` "already has this tag".

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State as Shared};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use self::account::{Answer, reply};
pub use self::account::{HTML_LOGIN_TOKEN, REQUESTS_PER_SECOND, State};
use super::{Sandbox, recorded};

mod account;

const PREFIX: &str = "/activecampaign/api/3";

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(&format!("{PREFIX}/contact/sync"), post(contact_sync))
        .route(&format!("{PREFIX}/tags"), post(create_tag).get(find_tags))
        .route(&format!("{PREFIX}/contactTags"), post(contact_tag))
        .route(&format!("{PREFIX}/contactLists"), post(contact_list))
}

fn respond((status, body): Answer) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The checks every request passes first: faults, `Api-Token`, the rate limit. On success the
/// parsed JSON body (or `Null` for a GET).
async fn guard(
    sandbox: &Sandbox,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, Response> {
    let record = |status: u16| {
        let mut r = recorded("activecampaign", path, headers, body, status);
        r.method = method.to_string();
        sandbox.record(r);
    };
    if let Some(response) = sandbox.faulted("activecampaign", path, headers, body).await {
        return Err(response);
    }
    let token = headers.get("api-token").and_then(|v| v.to_str().ok());
    let token = match token {
        None | Some("") => {
            record(403);
            return Err(respond(reply(
                StatusCode::FORBIDDEN,
                json!({"message": "No Api-Token header was sent"}),
            )));
        }
        Some(t) if t.starts_with("bad") => {
            record(403);
            return Err(respond(reply(
                StatusCode::FORBIDDEN,
                json!({"message": "You are not authorized to access this resource"}),
            )));
        }
        Some(HTML_LOGIN_TOKEN) => {
            record(200);
            return Err((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                "<!DOCTYPE html><html><head><title>Login | ActiveCampaign</title></head>\
                 <body><form action=\"/admin/index.php\" method=\"post\">\
                 <input name=\"user\"><input name=\"pass\" type=\"password\"></form></body></html>",
            )
                .into_response());
        }
        Some(t) => t.to_owned(),
    };
    let admitted = sandbox.activecampaign().admit(&token, Instant::now());
    match admitted {
        Err(wait) => {
            record(429);
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            Err((
                StatusCode::TOO_MANY_REQUESTS,
                [
                    ("retry-after", secs.to_string()),
                    ("ratelimit-limit", REQUESTS_PER_SECOND.to_string()),
                    ("ratelimit-remaining", "0".to_owned()),
                ],
                axum::Json(json!({"message": "Too Many Requests"})),
            )
                .into_response())
        }
        Ok(_) if method == Method::GET => Ok(Value::Null),
        Ok(_) => match serde_json::from_slice::<Value>(body) {
            Ok(v) => Ok(v),
            Err(_) => {
                record(400);
                Err(respond(reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "The request body is not valid JSON"}),
                )))
            }
        },
    }
}

/// Records the request with the status of `response` and hands the response back.
fn answered(
    sandbox: &Sandbox,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    answer: Answer,
) -> Response {
    let response = respond(answer);
    let mut r = recorded(
        "activecampaign",
        path,
        headers,
        body,
        response.status().as_u16(),
    );
    r.method = method.to_string();
    sandbox.record(r);
    response
}

async fn contact_sync(
    Shared(sandbox): Shared<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{PREFIX}/contact/sync");
    let request = match guard(&sandbox, Method::POST, &path, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let response = sandbox.activecampaign().sync(&request);
    answered(&sandbox, Method::POST, &path, &headers, &body, response)
}

async fn find_tags(
    Shared(sandbox): Shared<Sandbox>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut path = format!("{PREFIX}/tags");
    if let Some(q) = query.get("search") {
        path.push_str(&format!("?search={q}"));
    }
    if let Err(r) = guard(&sandbox, Method::GET, &path, &headers, b"").await {
        return r;
    }
    let response = sandbox.activecampaign().find_tags(&query);
    answered(&sandbox, Method::GET, &path, &headers, b"", response)
}

async fn create_tag(Shared(sandbox): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let path = format!("{PREFIX}/tags");
    let request = match guard(&sandbox, Method::POST, &path, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let response = sandbox.activecampaign().create_tag(&request);
    answered(&sandbox, Method::POST, &path, &headers, &body, response)
}

async fn contact_tag(
    Shared(sandbox): Shared<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{PREFIX}/contactTags");
    let request = match guard(&sandbox, Method::POST, &path, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let response = sandbox.activecampaign().contact_tag(&request);
    answered(&sandbox, Method::POST, &path, &headers, &body, response)
}

async fn contact_list(
    Shared(sandbox): Shared<Sandbox>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("{PREFIX}/contactLists");
    let request = match guard(&sandbox, Method::POST, &path, &headers, &body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let response = sandbox.activecampaign().contact_list(&request);
    answered(&sandbox, Method::POST, &path, &headers, &body, response)
}
