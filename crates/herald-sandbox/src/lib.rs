//! Local stand-ins for Herald's destinations (`herald sandbox`, and inside `herald dev`), so
//! demos and tests run without real accounts. They are a crate of their own that does not
//! depend on Herald: what checks Herald's requests (signatures, payload shapes, limits) is
//! written apart from the code that makes them. One layer around every simulator records each
//! request with the answer's status and injects faults (see `traffic`), so the simulators only
//! simulate. `GET /_sandbox/requests[?destination=slack]` lists the requests as JSON and
//! `DELETE /_sandbox/requests` forgets them. A recorded request holds no credential, only its
//! [`fingerprint`], so that tests can tell which one was used.
//!
//! | path | simulates |
//! |---|---|
//! | `POST /webhook/{anything}[?delay_ms=N&status=N]` | a Standard Webhooks receiver (checks the signature when it knows the secret) |
//! | `POST /slack/services/{T}/{B}/{X}` | a Slack incoming webhook |
//! | `POST /slack/api/chat.postMessage` | Slack's Web API with a bot token |
//! | `POST /hubspot/crm/v3/objects/contacts/batch/upsert` | HubSpot contact batch upsert by email (private-app or OAuth token, 100 req / 10 s, 207 per-input errors) |
//! | `GET /hubspot/oauth/authorize`, `POST /hubspot/oauth/v1/token` | HubSpot's OAuth for a public app: approves at once, short-lived access tokens, refresh grants |
//! | `PUT`/`GET /mailchimp/3.0/lists/{list}/members/{hash}`, `POST …/{hash}/tags` | Mailchimp members and tags (Basic auth, 10 connections per key, problem+json errors) |
//! | `/activecampaign/api/3/{contact/sync,tags,contactTags,contactLists}` | ActiveCampaign v3 (token `bad…` → 403, `html-login` → 200 HTML login page; 5 req/s per token) |
//! | `/intercom/{contacts,contacts/search,contacts/{id},contacts/{id}/tags,tags}` | Intercom REST (search lag, 409 on duplicate create, `X-RateLimit-*` in 10 s windows) |
//! | `GET /registry/schemas/ids/{id}`, `GET /registry/subjects`, `GET`/`POST /registry/subjects/{s}/versions` | a Confluent Schema Registry for producers' Avro schemas (the registry's error codes) |
//!
//! `GET /_sandbox/state` shows what the simulators hold, one key per destination type
//! (`hubspot`: contacts by email; `mailchimp`: audiences → members by subscriber hash;
//! `activecampaign`, `intercom`: contacts, tags, lists; `slack`: messages by channel;
//! `webhook`: received events by path); `DELETE /_sandbox/state` empties them.
//! `PUT /_sandbox/intercom` with `{"search_lag_ms": N, "limit_per_minute": N}` tunes the
//! Intercom simulator; `PUT /_sandbox/hubspot/oauth` the HubSpot OAuth endpoints (token lifetime,
//! expiring access tokens, revoking refresh tokens, denying approval; see `hubspot::oauth`).
//!
//! Faults: `POST /_sandbox/faults` with `{"path": "/webhook/a", "count": 2, "status": 503,
//! "body": "down", "retry_after": "1", "delay_ms": 0}` makes the next `count` requests whose
//! path (with its query) starts with `path` answer that way (in the order faults were added);
//! with `"rate": 0.3` each matching request fails with that probability instead, up to `count`;
//! `DELETE /_sandbox/faults` clears them.

pub mod activecampaign;
pub mod hubspot;
pub mod intercom;
pub mod mailchimp;
pub mod registry;
pub mod slack;
pub mod webhook;

mod inspect;
mod traffic;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post, put};

pub use self::traffic::{Fault, RecordedRequest, fingerprint};

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
    registry: Arc<Mutex<registry::State>>,
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

    /// All simulators, behind the layer that injects faults and records requests, and the
    /// `/_sandbox/…` endpoints, which it leaves alone.
    pub fn router(&self) -> Router {
        let simulators = Router::new()
            .merge(webhook::router())
            .merge(slack::router())
            .merge(hubspot::router())
            .merge(mailchimp::router())
            .merge(activecampaign::router())
            .merge(intercom::router())
            .merge(registry::router())
            .route_layer(from_fn_with_state(
                self.clone(),
                traffic::faults_then_record,
            ));
        Router::new()
            .route(
                "/_sandbox/requests",
                get(inspect::requests).delete(inspect::forget_requests),
            )
            .route(
                "/_sandbox/faults",
                post(inspect::add_fault).delete(inspect::clear_faults),
            )
            .route(
                "/_sandbox/state",
                get(inspect::state).delete(inspect::reset_state),
            )
            .route("/_sandbox/intercom", put(intercom::tune))
            .route("/_sandbox/hubspot/oauth", put(hubspot::oauth::control))
            .merge(simulators)
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
            "registry": self.registry().snapshot(),
        })
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded().iter().cloned().collect()
    }

    /// Adds a fault (the same as `POST /_sandbox/faults`).
    pub fn inject(&self, fault: Fault) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(fault);
    }

    fn recorded(&self) -> MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn activecampaign(&self) -> MutexGuard<'_, activecampaign::State> {
        self.activecampaign
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The schema registry simulator's state (to register a schema from a test).
    pub fn registry(&self) -> MutexGuard<'_, registry::State> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn intercom(&self) -> MutexGuard<'_, intercom::State> {
        self.intercom.lock().unwrap_or_else(|p| p.into_inner())
    }
}
