//! HubSpot: `POST /hubspot/crm/v3/objects/contacts/batch/upsert` (also under
//! `/hubspot/crm/objects/2026-03/…`) with `idProperty: "email"`, and
//! `GET /hubspot/account-info/v3/details` (what "test connection" calls; same auth).
//!
//! - Auth: `Authorization: Bearer pat-…`, or an access token of the OAuth endpoints ([`oauth`];
//!   an expired one answers 401 `EXPIRED_AUTHENTICATION`); anything else answers 401
//!   `INVALID_AUTHENTICATION`.
//!   Tokens starting `pat-noscopes` answer 403 `MISSING_SCOPES`, `pat-daily-limit` 429 with
//!   `policyName: DAILY`, and `pat-unlimited` skip the burst limit (for load measurements).
//! - Limits: 100 requests per rolling 10 s per token (429 `TEN_SECONDLY_ROLLING`) and 250,000
//!   a day, with the `X-HubSpot-RateLimit-*` headers on every authenticated answer.
//! - Inputs: at most 100, ids unique (else 400 "Duplicate IDs"), emails valid, properties
//!   among [`KNOWN_PROPERTIES`] (else `PROPERTY_DOESNT_EXIST`). When every input carries an
//!   `objectWriteTraceId`, bad inputs fail alone (207 with the trace ids echoed); otherwise
//!   one bad input fails the batch with 400, as HubSpot does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::Sandbox;

pub mod oauth;

/// Properties the simulated portal has: HubSpot's common defaults plus the ones the example
/// workspaces use.
pub const KNOWN_PROPERTIES: &[&str] = &[
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "website",
    "jobtitle",
    "city",
    "country",
    "lifecyclestage",
    "hs_language",
    "last_lesson_completed",
    "course_completion_pct",
    "course_progress",
    "current_module",
    "last_course",
    "onboarding_step",
    "onboarding_progress",
    "last_page_completed",
    "last_activity_at",
];

const BURST: usize = 100;
const WINDOW: Duration = Duration::from_secs(10);
const DAILY: u64 = 250_000;

/// The simulated portal.
#[derive(Debug, Default)]
pub struct HubSpotState {
    contacts: BTreeMap<String, Contact>,
    next_id: u64,
    /// Request times in the last 10 s, by token.
    recent: HashMap<String, VecDeque<Instant>>,
    /// Requests today, by token.
    daily: HashMap<String, u64>,
    /// Authenticated requests answered.
    requests: u64,
    oauth: oauth::OAuthState,
}

#[derive(Debug, Clone)]
struct Contact {
    id: String,
    properties: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Contact {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "properties": self.properties,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": false,
        })
    }
}

impl HubSpotState {
    /// Contacts by email, and the number of authenticated requests.
    pub(super) fn snapshot(&self) -> Value {
        let contacts: serde_json::Map<String, Value> = self
            .contacts
            .iter()
            .map(|(email, c)| (email.clone(), c.to_json()))
            .collect();
        json!({"contacts": contacts, "requests": self.requests, "oauth": self.oauth.snapshot()})
    }
}

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route(
            "/hubspot/crm/v3/objects/contacts/batch/upsert",
            post(batch_upsert),
        )
        .route(
            "/hubspot/crm/objects/2026-03/contacts/batch/upsert",
            post(batch_upsert),
        )
        .route("/hubspot/oauth/authorize", get(oauth::authorize))
        .route("/hubspot/oauth/v1/token", post(oauth::token))
        .route(
            "/hubspot/account-info/v3/details",
            axum::routing::get(account_details),
        )
}

/// `GET /account-info/v3/details`: the account the token belongs to (what "test connection"
/// calls).
async fn account_details(headers: HeaderMap) -> Response {
    if bearer(&headers).is_none() {
        return unauthenticated();
    }
    Json(json!({"portalId": 62515, "accountType": "DEVELOPER_TEST", "timeZone": "UTC",
                "companyCurrency": "USD", "uiDomain": "app.hubspot.com", "dataHostingLocation": "na1"}))
    .into_response()
}

/// A private-app token (`pat-…`) or an OAuth access token from `Authorization: Bearer`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.starts_with("pat-") || t.starts_with(oauth::ACCESS_PREFIX))
}

fn unauthenticated() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        json!({"status": "error",
            "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "correlationId": correlation_id(), "category": "INVALID_AUTHENTICATION"}),
    )
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn batch_upsert(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    answer(&sandbox, &headers, &body)
}

fn answer(sandbox: &Sandbox, headers: &HeaderMap, body: &[u8]) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let mut token = bearer.filter(|t| t.starts_with("pat-"));
    if let Some(access) = bearer.filter(|t| t.starts_with(oauth::ACCESS_PREFIX)) {
        let state = sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner());
        match state.oauth.check(access) {
            oauth::Access::Valid => token = Some(access),
            oauth::Access::Expired { ago } => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    json!({"status": "error",
                        "message": format!("The OAuth token used to make this call expired {} second(s) ago.", ago.as_secs()),
                        "correlationId": correlation_id(), "category": "EXPIRED_AUTHENTICATION",
                        "context": {"expired at": [Utc::now().to_rfc3339()]}}),
                );
            }
            oauth::Access::Unknown => {}
        }
    }
    let Some(token) = token else {
        return unauthenticated();
    };
    if token.starts_with("pat-noscopes") {
        return error(
            StatusCode::FORBIDDEN,
            json!({"status": "error",
                "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
                "correlationId": correlation_id(),
                "errors": [{"message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]}}],
                "category": "MISSING_SCOPES"}),
        );
    }
    let mut state = sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner());
    state.requests += 1;
    let now = Instant::now();
    let recent = state.recent.entry(token.to_owned()).or_default();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        recent.pop_front();
    }
    let unlimited = token.starts_with("pat-unlimited");
    let burst_exceeded = !unlimited && recent.len() >= BURST;
    if !burst_exceeded {
        recent.push_back(now);
    }
    let used_burst = recent.len();
    let daily = state.daily.entry(token.to_owned()).or_default();
    let daily_exceeded = token.starts_with("pat-daily-limit") || *daily >= DAILY;
    if !daily_exceeded && !burst_exceeded {
        *daily += 1;
    }
    let used_daily = *daily;
    let mut response = if daily_exceeded {
        rate_limited("DAILY", "You have reached your daily limit.")
    } else if burst_exceeded {
        rate_limited(
            "TEN_SECONDLY_ROLLING",
            "You have reached your ten_secondly_rolling limit.",
        )
    } else {
        upsert(&mut state, body)
    };
    let h = response.headers_mut();
    let mut put = |name: &'static str, value: u64| {
        h.insert(name, HeaderValue::from(value));
    };
    put("x-hubspot-ratelimit-max", BURST as u64);
    put(
        "x-hubspot-ratelimit-remaining",
        if unlimited {
            BURST as u64
        } else {
            BURST.saturating_sub(used_burst) as u64
        },
    );
    put("x-hubspot-ratelimit-interval-milliseconds", 10_000);
    put("x-hubspot-ratelimit-daily", DAILY);
    put(
        "x-hubspot-ratelimit-daily-remaining",
        if daily_exceeded {
            0
        } else {
            DAILY - used_daily
        },
    );
    response
}

fn rate_limited(policy: &str, message: &str) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
               "correlationId": correlation_id(), "policyName": policy,
               "requestId": uuid::Uuid::now_v7().to_string()}),
    )
}

fn validation(message: String, context: Option<Value>) -> Value {
    let mut v = json!({"status": "error", "message": message, "correlationId": correlation_id(),
                       "category": "VALIDATION_ERROR"});
    if let Some(context) = context {
        v["context"] = context;
    }
    v
}

/// Whether HubSpot would take `email` (a plain shape check).
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !email.chars().any(char::is_whitespace)
        && !domain.contains('@')
        && domain
            .rsplit_once('.')
            .is_some_and(|(host, tld)| !host.is_empty() && tld.len() >= 2)
}

/// Why one input is refused, in HubSpot's per-input and whole-batch wordings.
fn check_input(
    email: &str,
    properties: &serde_json::Map<String, Value>,
) -> Option<(String, String)> {
    if !valid_email(email) {
        let nested = json!([{"isValid": false, "message": format!("Email address {email} is invalid"),
                              "error": "INVALID_EMAIL", "name": "email"}]);
        return Some((
            format!("Property value \"{email}\" is not a valid email"),
            format!("Property values were not valid: {nested}"),
        ));
    }
    let unknown: Vec<Value> = properties
        .keys()
        .filter(|k| !KNOWN_PROPERTIES.contains(&k.as_str()))
        .map(|k| {
            json!({"isValid": false, "message": format!("Property \"{k}\" does not exist"),
                   "error": "PROPERTY_DOESNT_EXIST", "name": k})
        })
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let message = format!("Property values were not valid: {}", Value::Array(unknown));
    Some((message.clone(), message))
}

fn upsert(state: &mut HubSpotState, body: &[u8]) -> Response {
    let started = Utc::now();
    let bad = |message: &str| {
        error(
            StatusCode::BAD_REQUEST,
            validation(message.to_owned(), None),
        )
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return bad("Invalid input JSON on line 1: could not parse the request body");
    };
    let Some(inputs) = parsed.get("inputs").and_then(Value::as_array) else {
        return bad("Invalid input JSON: `inputs` is required");
    };
    if inputs.len() > 100 {
        return bad(&format!(
            "Batch input size {} exceeds the limit of 100",
            inputs.len()
        ));
    }
    let mut ids = Vec::new();
    for input in inputs {
        if input.get("idProperty").and_then(Value::as_str) != Some("email") {
            return bad("This simulator upserts by idProperty \"email\" only");
        }
        let Some(id) = input.get("id").and_then(Value::as_str) else {
            return bad("Each input needs an `id`");
        };
        ids.push(id.to_lowercase());
    }
    let mut seen = std::collections::HashSet::new();
    let duplicates: Vec<&String> = ids.iter().filter(|id| !seen.insert(*id)).collect();
    if !duplicates.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            validation(
                format!("Duplicate IDs found in batch input: {duplicates:?}. IDs must be unique"),
                Some(json!({"ids": duplicates})),
            ),
        );
    }
    let traced = inputs.iter().all(|i| {
        i.get("objectWriteTraceId")
            .and_then(Value::as_str)
            .is_some()
    });
    let empty = serde_json::Map::new();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    let mut writes = Vec::new();
    for (input, email) in inputs.iter().zip(&ids) {
        let properties = input
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let trace = input.get("objectWriteTraceId").and_then(Value::as_str);
        match check_input(email, properties) {
            Some((item_message, batch_message)) => {
                if !traced {
                    return bad(&batch_message);
                }
                errors.push(json!({"status": "error", "category": "VALIDATION_ERROR",
                    "message": item_message, "context": {"objectWriteTraceId": [trace]}}));
            }
            None => writes.push((email, properties, trace)),
        }
    }
    for (email, properties, trace) in writes {
        let now = Utc::now();
        let is_new = !state.contacts.contains_key(email);
        if is_new {
            state.next_id += 1;
        }
        let id = state.next_id;
        let contact = state
            .contacts
            .entry(email.clone())
            .or_insert_with(|| Contact {
                id: (1000 + id).to_string(),
                properties: BTreeMap::new(),
                created_at: now,
                updated_at: now,
            });
        for (k, v) in properties {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            contact.properties.insert(k.clone(), v);
        }
        contact.properties.insert("email".into(), email.clone());
        contact.updated_at = now;
        let mut result = contact.to_json();
        result["new"] = Value::Bool(is_new);
        if let Some(trace) = trace {
            result["objectWriteTraceId"] = Value::String(trace.to_owned());
        }
        results.push(result);
    }
    let mut reply = json!({"status": "COMPLETE", "results": results,
                           "startedAt": started, "completedAt": Utc::now()});
    if errors.is_empty() {
        return (StatusCode::OK, Json(reply)).into_response();
    }
    reply["numErrors"] = json!(errors.len());
    reply["errors"] = Value::Array(errors);
    (StatusCode::MULTI_STATUS, Json(reply)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_shape_checked() {
        assert!(valid_email("ada@example.com"));
        for bad in [
            "invalid-email",
            "@x.io",
            "a@b",
            "a b@x.io",
            "a@@x.io",
            "a@x.c",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_properties_are_named_like_hubspot_does() {
        let props = json!({"firstname": "Ada", "favourite_colour": "red"});
        let (item, batch) = check_input("ada@example.com", props.as_object().unwrap()).unwrap();
        assert_eq!(item, batch);
        assert!(
            item.contains(r#""error":"PROPERTY_DOESNT_EXIST""#),
            "{item}"
        );
        assert!(item.contains(r#""name":"favourite_colour""#));
        assert!(
            check_input(
                "ada@example.com",
                json!({"firstname": "A"}).as_object().unwrap()
            )
            .is_none()
        );
    }
}
