//! ActiveCampaign API v3 under `/activecampaign/api/3/…`: contacts (upsert by email), tags,
//! contact tags, lists 1 and 2, list subscriptions, and `GET /users/me` (what "test
//! connection" calls). It answers like the vendor: `403
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
use crate::Sandbox;
use crate::traffic::Note;

mod account;

const PREFIX: &str = "/activecampaign/api/3";

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(&format!("{PREFIX}/contact/sync"), post(contact_sync))
        .route(&format!("{PREFIX}/tags"), post(create_tag).get(find_tags))
        .route(&format!("{PREFIX}/contactTags"), post(contact_tag))
        .route(&format!("{PREFIX}/contactLists"), post(contact_list))
        .route(&format!("{PREFIX}/users/me"), axum::routing::get(users_me))
}

/// `GET /api/3/users/me`: the user the token belongs to (what "test connection" calls).
async fn users_me(Shared(sandbox): Shared<Sandbox>, headers: HeaderMap) -> Response {
    serve(&sandbox, Method::GET, &headers, &[], |_, _| {
        reply(
            StatusCode::OK,
            json!({"user": {"id": "1", "username": "admin", "email": "admin@sandbox.example"}}),
        )
    })
}

fn respond((status, body): Answer) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Answers a request that passes the checks every request passes first (`Api-Token`, the rate
/// limit, a JSON body unless it is a GET) with `handle` run on the account.
fn serve(
    sandbox: &Sandbox,
    method: Method,
    headers: &HeaderMap,
    body: &[u8],
    handle: impl FnOnce(&mut State, &Value) -> Answer,
) -> Response {
    let token = headers.get("api-token").and_then(|v| v.to_str().ok());
    let token = match token {
        None | Some("") => {
            return respond(reply(
                StatusCode::FORBIDDEN,
                json!({"message": "No Api-Token header was sent"}),
            ));
        }
        Some(t) if t.starts_with("bad") => {
            return respond(reply(
                StatusCode::FORBIDDEN,
                json!({"message": "You are not authorized to access this resource"}),
            ));
        }
        Some(HTML_LOGIN_TOKEN) => {
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
                "<!DOCTYPE html><html><head><title>Login | ActiveCampaign</title></head>\
                 <body><form action=\"/admin/index.php\" method=\"post\">\
                 <input name=\"user\"><input name=\"pass\" type=\"password\"></form></body></html>",
            )
                .into_response();
        }
        Some(t) => t.to_owned(),
    };
    let admitted = sandbox.activecampaign().admit(&token, Instant::now());
    if let Err(wait) = admitted {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", secs.to_string()),
                ("ratelimit-limit", REQUESTS_PER_SECOND.to_string()),
                ("ratelimit-remaining", "0".to_owned()),
            ],
            axum::Json(json!({"message": "Too Many Requests"})),
        )
            .into_response();
    }
    let request = if method == Method::GET {
        Value::Null
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(_) => {
                return respond(reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "The request body is not valid JSON"}),
                ));
            }
        }
    };
    respond(handle(&mut sandbox.activecampaign(), &request))
}

async fn contact_sync(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, Method::POST, &headers, &body, |st, req| st.sync(req))
}

/// Recorded with its search term, the part of the query that says what was asked.
async fn find_tags(
    Shared(s): Shared<Sandbox>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let response = serve(&s, Method::GET, &headers, b"", |st, _| st.find_tags(&query));
    let note = Note {
        path: query
            .get("search")
            .map(|q| format!("{PREFIX}/tags?search={q}")),
        ..Note::default()
    };
    note.on(response)
}

async fn create_tag(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, Method::POST, &headers, &body, |st, req| {
        st.create_tag(req)
    })
}

async fn contact_tag(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, Method::POST, &headers, &body, |st, req| {
        st.contact_tag(req)
    })
}

async fn contact_list(Shared(s): Shared<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    serve(&s, Method::POST, &headers, &body, |st, req| {
        st.contact_list(req)
    })
}
