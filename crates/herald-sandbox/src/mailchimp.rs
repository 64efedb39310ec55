//! Mailchimp Marketing API v3 under `/mailchimp/3.0`: `PUT …/lists/{list}/members/{hash}`,
//! `GET` of the same, `POST …/members/{hash}/tags` (204), and `GET /ping` (what "test
//! connection" calls; same auth).
//!
//! - Auth: HTTP Basic, any username, the password a key of the form `<key>-<dc>`; a missing
//!   key answers 401 `API Key Missing`, a key without a data-centre suffix (or whose key part
//!   starts with `invalid`) 401 `API Key Invalid`. The host is not checked against the
//!   suffix: the sandbox serves every data centre.
//! - At most 10 requests in flight per key; the 11th answers 429 `Too Many Requests`.
//! - Audiences come into being on first use, except ids starting with `missing`, which answer
//!   404 `Resource Not Found` (to test unknown lists). Ids starting with `slow` take 300 ms
//!   a request, so that concurrent requests overlap.
//! - Members: keyed by `md5(lowercase(email))`, which must match the body's `email_address`;
//!   `status_if_new` applies to new members only and `status` overwrites. Emails whose local
//!   part starts with `forgotten` answer `Forgotten Email Not Subscribed`, with `compliance`
//!   `Member In Compliance State` (as does subscribing an unsubscribed or cleaned member).
//! - Errors are `application/problem+json` with `instance` equal to `X-Request-Id`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use base64::Engine;
use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::Sandbox;

/// Mailchimp's limit of simultaneous connections per account.
const MAX_IN_FLIGHT: usize = 10;

/// Simulated accounts' audiences.
#[derive(Debug, Default)]
pub struct MailchimpState {
    /// Members by audience id, then subscriber hash.
    audiences: BTreeMap<String, BTreeMap<String, Member>>,
    /// Requests being answered, by API key.
    in_flight: HashMap<String, usize>,
}

#[derive(Debug, Clone)]
struct Member {
    email: String,
    status: String,
    merge_fields: serde_json::Map<String, Value>,
    tags: BTreeSet<String>,
}

impl Member {
    fn to_json(&self, hash: &str, list: &str) -> Value {
        json!({
            "id": hash,
            "email_address": self.email,
            "unique_email_id": &hash[..10],
            "status": self.status,
            "merge_fields": self.merge_fields,
            "tags_count": self.tags.len(),
            "tags": self.tags.iter().map(|t| json!({"name": t})).collect::<Vec<_>>(),
            "list_id": list,
        })
    }
}

impl MailchimpState {
    /// Forgets every audience.
    pub(super) fn clear(&mut self) {
        self.audiences.clear();
    }

    /// Audiences → members by hash.
    pub(super) fn snapshot(&self) -> Value {
        let audiences: serde_json::Map<String, Value> = self
            .audiences
            .iter()
            .map(|(list, members)| {
                let members: serde_json::Map<String, Value> = members
                    .iter()
                    .map(|(hash, m)| (hash.clone(), m.to_json(hash, list)))
                    .collect();
                (list.clone(), Value::Object(members))
            })
            .collect();
        json!({"audiences": audiences})
    }
}

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(
            "/mailchimp/3.0/lists/{list}/members/{hash}",
            put(upsert_member).get(get_member),
        )
        .route(
            "/mailchimp/3.0/lists/{list}/members/{hash}/tags",
            post(add_tags),
        )
        .route("/mailchimp/3.0/ping", axum::routing::get(ping))
}

/// `GET /ping`: Mailchimp's health check, which needs a valid key (what "test connection"
/// calls).
async fn ping(headers: HeaderMap) -> Response {
    match api_key(&headers) {
        Ok(_) => axum::Json(json!({"health_status": "Everything's Chimpy!"})).into_response(),
        Err((title, detail)) => problem(StatusCode::UNAUTHORIZED, title, detail, None),
    }
}

/// Counts a request in flight for its key until dropped.
struct InFlight {
    state: Arc<Mutex<MailchimpState>>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = state.in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

fn problem(status: StatusCode, title: &str, detail: &str, errors: Option<Value>) -> Response {
    let instance = uuid::Uuid::now_v7().to_string();
    let mut body = json!({
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title, "status": status.as_u16(), "detail": detail, "instance": instance,
    });
    if let Some(errors) = errors {
        body["errors"] = errors;
    }
    let mut response = (status, body.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/problem+json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&instance) {
        h.insert("x-request-id", v);
    }
    response
}

fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "Resource Not Found",
        "The requested resource could not be found.",
        None,
    )
}

fn member_response(value: Value) -> Response {
    let mut response = (StatusCode::OK, value.to_string()).into_response();
    let h = response.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(
        "x-request-id",
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string()).expect("a uuid is ASCII"),
    );
    h.insert(
        "link",
        HeaderValue::from_static(
            "<https://us6.api.mailchimp.com/schema/3.0/Lists/Members/Instance.json>; rel=\"describedBy\"",
        ),
    );
    response
}

/// The API key from Basic auth, or the title and detail of the 401 Mailchimp gives.
fn api_key(headers: &HeaderMap) -> Result<String, (&'static str, &'static str)> {
    let Some(basic) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return Err((
            "API Key Missing",
            "Your request did not include an API key.",
        ));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(basic.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let key = decoded.split_once(':').map(|(_, k)| k).unwrap_or_default();
    let valid = key.rsplit_once('-').is_some_and(|(k, dc)| {
        !k.is_empty()
            && !k.starts_with("invalid")
            && !dc.is_empty()
            && dc.chars().all(|c| c.is_ascii_alphanumeric())
    });
    if !valid {
        return Err((
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        ));
    }
    Ok(key.to_owned())
}

fn hash_of(email: &str) -> String {
    Md5::digest(email.trim().to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Resolves the `{hash}` segment, which may also be the email itself.
fn resolve_hash(segment: &str) -> String {
    if segment.contains('@') {
        hash_of(segment)
    } else {
        segment.to_lowercase()
    }
}

fn valid_email(email: &str) -> bool {
    email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && !email.chars().any(char::is_whitespace)
            && domain
                .rsplit_once('.')
                .is_some_and(|(h, tld)| !h.is_empty() && tld.len() >= 2)
    })
}

/// Auth, the in-flight limit and the audience, common to every route. Returns the guard to
/// hold while the request is answered.
async fn admit(sandbox: &Sandbox, headers: &HeaderMap, list: &str) -> Result<InFlight, Response> {
    let key = api_key(headers)
        .map_err(|(title, detail)| problem(StatusCode::UNAUTHORIZED, title, detail, None))?;
    let over = {
        let mut state = sandbox.mailchimp.lock().unwrap_or_else(|p| p.into_inner());
        let n = state.in_flight.entry(key.clone()).or_default();
        *n += 1;
        *n > MAX_IN_FLIGHT
    };
    // Releases the count however the request ends (even when the client hangs up).
    let guard = InFlight {
        state: sandbox.mailchimp.clone(),
        key,
    };
    if over {
        return Err(problem(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "You have exceeded the limit of 10 simultaneous connections.",
            None,
        ));
    }
    if list.starts_with("slow") {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if list.starts_with("missing") {
        return Err(not_found());
    }
    Ok(guard)
}

async fn upsert_member(
    State(sandbox): State<Sandbox>,
    Path((list, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&sandbox, &headers, &list).await {
        Err(response) => response,
        Ok(_guard) => put_member(&sandbox, &list, &segment, &body),
    }
}

fn put_member(sandbox: &Sandbox, list: &str, segment: &str, body: &[u8]) -> Response {
    let invalid = |detail: &str, errors: Option<Value>| {
        problem(StatusCode::BAD_REQUEST, "Invalid Resource", detail, errors)
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "JSON Parse Error",
            "We encountered an unspecified JSON parsing error.",
            None,
        );
    };
    let Some(email) = parsed.get("email_address").and_then(Value::as_str) else {
        return invalid(
            "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
            Some(json!([{"field": "email_address", "message": "This value should not be blank."}])),
        );
    };
    if !valid_email(email) {
        return invalid(
            &format!("{email} looks fake or invalid, please enter a real email address."),
            None,
        );
    }
    let hash = resolve_hash(segment);
    if hash != hash_of(email) {
        return invalid(
            "The email address in the body does not match the subscriber hash in the URL.",
            Some(
                json!([{"field": "email_address", "message": "does not match the subscriber hash"}]),
            ),
        );
    }
    let local = email.split('@').next().unwrap_or_default().to_lowercase();
    if local.starts_with("forgotten") {
        return invalid_title(
            "Forgotten Email Not Subscribed",
            &format!(
                "{email} was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list."
            ),
        );
    }
    if local.starts_with("compliance") {
        return compliance(email);
    }
    let status_if_new = parsed.get("status_if_new").and_then(Value::as_str);
    let status = parsed.get("status").and_then(Value::as_str);
    let allowed = [
        "subscribed",
        "unsubscribed",
        "cleaned",
        "pending",
        "transactional",
    ];
    for (field, value) in [("status_if_new", status_if_new), ("status", status)] {
        if value.is_some_and(|v| !allowed.contains(&v)) {
            return invalid(
                "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                Some(
                    json!([{"field": field, "message": "Data did not match any of the schemas described in anyOf."}]),
                ),
            );
        }
    }
    let merge_fields = match parsed.get("merge_fields") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return invalid("Your merge fields were invalid.", None),
    };
    if let Some((field, _)) = merge_fields.iter().find(|(_, v)| v.is_array()) {
        return invalid(
            "Your merge fields were invalid.",
            Some(json!([{"field": field, "message": "Please enter a valid value"}])),
        );
    }
    let mut state = sandbox.mailchimp.lock().unwrap_or_else(|p| p.into_inner());
    let members = state.audiences.entry(list.to_owned()).or_default();
    match members.get_mut(&hash) {
        Some(existing) => {
            if status == Some("subscribed")
                && matches!(existing.status.as_str(), "unsubscribed" | "cleaned")
            {
                return compliance(email);
            }
            if let Some(status) = status {
                existing.status = status.to_owned();
            }
            existing.email = email.to_owned();
            existing.merge_fields.extend(merge_fields);
        }
        None => {
            let Some(status) = status.or(status_if_new) else {
                return invalid(
                    "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
                    Some(
                        json!([{"field": "status_if_new", "message": "This value should not be blank."}]),
                    ),
                );
            };
            members.insert(
                hash.clone(),
                Member {
                    email: email.to_owned(),
                    status: status.to_owned(),
                    merge_fields,
                    tags: BTreeSet::new(),
                },
            );
        }
    }
    member_response(members[&hash].to_json(&hash, list))
}

fn invalid_title(title: &str, detail: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, title, detail, None)
}

fn compliance(email: &str) -> Response {
    invalid_title(
        "Member In Compliance State",
        &format!(
            "{email} is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed."
        ),
    )
}

async fn get_member(
    State(sandbox): State<Sandbox>,
    Path((list, segment)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let _guard = match admit(&sandbox, &headers, &list).await {
        Ok(g) => g,
        Err(response) => return response,
    };
    let hash = resolve_hash(&segment);
    let state = sandbox.mailchimp.lock().unwrap_or_else(|p| p.into_inner());
    match state.audiences.get(&list).and_then(|m| m.get(&hash)) {
        Some(member) => member_response(member.to_json(&hash, &list)),
        None => not_found(),
    }
}

async fn add_tags(
    State(sandbox): State<Sandbox>,
    Path((list, segment)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match admit(&sandbox, &headers, &list).await {
        Err(response) => response,
        Ok(_guard) => tag_member(&sandbox, &list, &segment, &body),
    }
}

fn tag_member(sandbox: &Sandbox, list: &str, segment: &str, body: &[u8]) -> Response {
    let tags = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("tags").and_then(Value::as_array).cloned());
    let Some(tags) = tags else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid Resource",
            "The resource submitted could not be validated. For field-specific details, see the 'errors' array.",
            Some(json!([{"field": "tags", "message": "This value should not be blank."}])),
        );
    };
    let hash = resolve_hash(segment);
    let mut state = sandbox.mailchimp.lock().unwrap_or_else(|p| p.into_inner());
    let Some(member) = state.audiences.get_mut(list).and_then(|m| m.get_mut(&hash)) else {
        return not_found();
    };
    for tag in tags {
        let name = tag.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        match tag.get("status").and_then(Value::as_str) {
            Some("inactive") => {
                member.tags.remove(name);
            }
            _ => {
                member.tags.insert(name.to_owned());
            }
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_segment_may_be_the_email() {
        assert_eq!(resolve_hash("Ada@Example.com"), hash_of("ada@example.com"));
        assert_eq!(
            hash_of("ada@example.com"),
            "3e3417d7ef77d5932a6734b916515ed5"
        );
        assert!(valid_email("ada@example.com"));
        assert!(!valid_email("ada@example"));
    }

    #[test]
    fn keys_need_a_data_centre_suffix() {
        let auth = |key: &str| {
            let mut h = HeaderMap::new();
            let v = base64::engine::general_purpose::STANDARD.encode(format!("any:{key}"));
            h.insert("authorization", format!("Basic {v}").parse().unwrap());
            api_key(&h).map_err(|(title, _)| title)
        };
        assert_eq!(auth("abc123-us6"), Ok("abc123-us6".to_owned()));
        assert_eq!(auth("abc123"), Err("API Key Invalid"));
        assert_eq!(auth("invalid-us6"), Err("API Key Invalid"));
        assert_eq!(api_key(&HeaderMap::new()).unwrap_err().0, "API Key Missing");
    }
}
