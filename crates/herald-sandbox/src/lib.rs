//! Local stand-ins for Herald's destinations (`herald sandbox`, and inside `herald dev`), so
//! demos and tests run without real accounts. They are a crate of their own that does not
//! depend on Herald: what checks Herald's requests (signatures, payload shapes, limits) is
//! written apart from the code that makes them. Each simulator records what it receives;
//! `GET /_sandbox/requests[?destination=slack]` lists the requests as JSON and
//! `DELETE /_sandbox/requests` forgets them.
//!
//! | path | simulates |
//! |---|---|
//! | `POST /webhook/{anything}[?delay_ms=N&status=N]` | a Standard Webhooks receiver (checks the signature when it knows the secret) |
//! | `POST /slack/services/{T}/{B}/{X}` | a Slack incoming webhook |
//! | `POST /slack/api/chat.postMessage` | Slack's Web API with a bot token |
//! | `POST /hubspot/crm/v3/objects/contacts/batch/upsert` | HubSpot contact batch upsert by email (private-app token, 100 req / 10 s, 207 per-input errors) |
//! | `PUT`/`GET /mailchimp/3.0/lists/{list}/members/{hash}`, `POST …/{hash}/tags` | Mailchimp members and tags (Basic auth, 10 connections per key, problem+json errors) |
//! | `/activecampaign/api/3/{contact/sync,tags,contactTags,contactLists}` | ActiveCampaign v3 (token `bad…` → 403, `html-login` → 200 HTML login page; 5 req/s per token) |
//! | `/intercom/{contacts,contacts/search,contacts/{id},contacts/{id}/tags,tags}` | Intercom REST (search lag, 409 on duplicate create, `X-RateLimit-*` in 10 s windows) |
//!
//! `GET /_sandbox/state` shows what the simulators hold, one key per destination type
//! (`hubspot`: contacts by email; `mailchimp`: audiences → members by subscriber hash;
//! `activecampaign`, `intercom`: contacts, tags, lists; `slack`: messages by channel;
//! `webhook`: received events by path); `DELETE /_sandbox/state` empties them.
//! `PUT /_sandbox/intercom` with `{"search_lag_ms": N, "limit_per_minute": N}` tunes the
//! Intercom simulator.
//!
//! Faults: `POST /_sandbox/faults` with `{"path": "/webhook/a", "count": 2, "status": 503,
//! "body": "down", "retry_after": "1", "delay_ms": 0}` makes the next `count` requests whose
//! path starts with `path` answer that way (in the order faults were added); with
//! `"rate": 0.3` each matching request fails with that probability instead, up to `count`;
//! `DELETE /_sandbox/faults` clears them.

pub mod activecampaign;
pub mod hubspot;
pub mod intercom;
pub mod mailchimp;
pub mod slack;
pub mod webhook;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Requests kept; older ones are dropped.
const MAX_RECORDED: usize = 10_000;

/// One request a simulator received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub destination: String,
    pub method: String,
    pub path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The body as JSON when it parses, else as text.
    pub body: serde_json::Value,
    pub received_at: DateTime<Utc>,
    /// The status the simulator answered with.
    pub status: u16,
    /// For webhooks: whether the Standard Webhooks signature verified (absent when the sandbox
    /// was not given the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_valid: Option<bool>,
}

/// An injected failure for the next `count` matching requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Requests whose path starts with this (default: all).
    #[serde(default)]
    pub path: String,
    pub count: u32,
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// Value of a `Retry-After` header to send.
    #[serde(default)]
    pub retry_after: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    /// When set, each matching request fails with this probability (and `count` bounds how
    /// many may fail); otherwise the next `count` matching requests all fail.
    #[serde(default)]
    pub rate: Option<f64>,
}

/// The simulators' shared state.
#[derive(Clone, Default)]
pub struct Sandbox {
    requests: Arc<Mutex<VecDeque<RecordedRequest>>>,
    faults: Arc<Mutex<VecDeque<Fault>>>,
    /// The key of the `whsec_…` secret webhook requests are checked against.
    webhook_key: Option<Arc<Vec<u8>>>,
    hubspot: Arc<Mutex<hubspot::HubSpotState>>,
    mailchimp: Arc<Mutex<mailchimp::MailchimpState>>,
    activecampaign: Arc<Mutex<activecampaign::State>>,
    intercom: Arc<Mutex<intercom::State>>,
    /// Recent Slack messages per channel, for its rate limit.
    slack_posts: Arc<Mutex<slack::Posts>>,
}

impl Sandbox {
    /// A sandbox; with `webhook_secret` it verifies webhook signatures.
    pub fn new(webhook_secret: Option<&str>) -> Result<Self, webhook::signature::BadSecret> {
        let webhook_key = webhook_secret
            .map(webhook::signature::decode_secret)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            webhook_key,
            ..Self::default()
        })
    }

    /// All simulators and the inspection endpoint.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_sandbox/requests", get(list).delete(clear))
            .route(
                "/_sandbox/faults",
                axum::routing::post(add_fault).delete(clear_faults),
            )
            .route("/_sandbox/state", get(state).delete(reset_state))
            .merge(webhook::router())
            .merge(slack::router())
            .merge(hubspot::router())
            .merge(mailchimp::router())
            .merge(activecampaign::router())
            .merge(intercom::router())
            .with_state(self.clone())
    }

    /// What the stateful simulators hold, one key per destination type.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "hubspot": self.hubspot.lock().unwrap_or_else(|p| p.into_inner()).snapshot(),
            "mailchimp": self.mailchimp.lock().unwrap_or_else(|p| p.into_inner()).snapshot(),
            "activecampaign": self.activecampaign().snapshot(),
            "intercom": self.intercom().snapshot(),
            "slack": slack::snapshot(&self.requests()),
            "webhook": webhook::snapshot(&self.requests()),
        })
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().iter().cloned().collect()
    }

    /// Adds a fault (the same as `POST /_sandbox/faults`).
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(fault);
    }

    /// Takes one use of a fault matching `path`: the first counted fault, else one of the
    /// probabilistic ones, chosen by a single draw so their rates add up.
    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let matching = |f: &Fault| path.starts_with(&f.path);
        let i = match faults.iter().position(|f| matching(f) && f.rate.is_none()) {
            Some(i) => i,
            None => {
                let draw = fastrand::f64();
                let mut cumulative = 0.0;
                faults.iter().position(|f| {
                    cumulative += f.rate.filter(|_| matching(f)).unwrap_or(0.0);
                    matching(f) && draw < cumulative
                })?
            }
        };
        let fault = faults[i].clone();
        if faults[i].count <= 1 {
            faults.remove(i);
        } else {
            faults[i].count -= 1;
        }
        Some(fault)
    }

    /// Answers with an injected fault for `path`, if one is pending, recording the request.
    async fn faulted(
        &self,
        destination: &str,
        path: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Response> {
        let fault = self.take_fault(path)?;
        if fault.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(fault.delay_ms.min(60_000))).await;
        }
        self.record(recorded(destination, path, headers, body, fault.status));
        let status =
            StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, fault.body).into_response();
        if let Some(after) = fault.retry_after.and_then(|a| a.parse().ok()) {
            response.headers_mut().insert("retry-after", after);
        }
        Some(response)
    }

    fn record(&self, request: RecordedRequest) {
        let mut requests = self.lock();
        if requests.len() >= MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    fn activecampaign(&self) -> std::sync::MutexGuard<'_, activecampaign::State> {
        self.activecampaign
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn intercom(&self) -> std::sync::MutexGuard<'_, intercom::State> {
        self.intercom.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The simulators' stored state, one key per destination type.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Builds a record of a request.
fn recorded(
    destination: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
    status: u16,
) -> RecordedRequest {
    let headers = headers
        .iter()
        // Credentials never reach the record.
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "api-token"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                serde_json::Value::String(value.to_str().unwrap_or("(binary)").to_owned()),
            )
        })
        .collect();
    let body = serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
    RecordedRequest {
        destination: destination.to_owned(),
        method: "POST".to_owned(),
        path: path.to_owned(),
        headers,
        body,
        received_at: Utc::now(),
        status,
        signature_valid: None,
    }
}

#[derive(Deserialize)]
struct Filter {
    destination: Option<String>,
}

async fn list(
    State(sandbox): State<Sandbox>,
    Query(filter): Query<Filter>,
) -> Json<Vec<RecordedRequest>> {
    let mut requests = sandbox.requests();
    if let Some(d) = filter.destination {
        requests.retain(|r| r.destination == d);
    }
    Json(requests)
}

async fn add_fault(State(sandbox): State<Sandbox>, Json(fault): Json<Fault>) -> &'static str {
    sandbox.inject(fault);
    "fault added\n"
}

async fn clear_faults(State(sandbox): State<Sandbox>) -> &'static str {
    sandbox
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    "faults cleared\n"
}

async fn state(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    Json(sandbox.state())
}

async fn reset_state(State(sandbox): State<Sandbox>) -> &'static str {
    *sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    // In-flight counts belong to requests still running; only the stored members go.
    sandbox
        .mailchimp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    *sandbox.activecampaign() = activecampaign::State::default();
    sandbox.intercom().reset();
    "state cleared\n"
}

async fn clear(State(sandbox): State<Sandbox>) -> &'static str {
    sandbox.lock().clear();
    "cleared\n"
}
