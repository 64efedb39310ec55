//! `activecampaign`: `sync_contact`, `add_tag` and `add_to_list` through API v3.
//!
//! Each action is several calls (sync the contact, then tag or subscribe it), and a retry runs
//! all of them again, so every step is safe to repeat: the sync is an upsert by email, a tag
//! is looked up by name before it is created (and a "duplicate" answer to the create is
//! resolved by looking it up again), and a contact that already has the tag counts as tagged.
//! Tag ids are cached per connection. Every call waits for the connection's rate limiter.

mod actions;
pub mod config;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use self::config::ActiveCampaignConfig;
use self::response::Reply;
use crate::destinations::limit::Limiter;
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, Outcome, check_action, http,
};
use crate::model::{ConnectionSpec, FieldError};

const ACTIONS: &[&str] = &["sync_contact", "add_tag", "add_to_list"];

/// Tag ids remembered per connection; past this the cache starts over.
const MAX_CACHED_TAGS: usize = 10_000;

/// The ActiveCampaign destination type.
pub struct ActiveCampaign;

impl Destination for ActiveCampaign {
    fn kind(&self) -> &'static str {
        "activecampaign"
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        let config = ActiveCampaignConfig::from_spec(spec, ctx)?;
        Ok(Arc::new(ActiveCampaignConnection {
            limiter: Limiter::new(config.rate, ctx.max_rate_wait),
            config,
            http: ctx.http.clone(),
            tags: Mutex::default(),
        }))
    }
}

/// A configured ActiveCampaign account.
#[derive(Debug)]
pub struct ActiveCampaignConnection {
    config: ActiveCampaignConfig,
    http: reqwest::Client,
    limiter: Limiter,
    /// Tag name → tag id.
    tags: Mutex<HashMap<String, String>>,
}

/// A step of an action: its result, or the attempt's end.
type Step<T> = Result<T, Attempted>;

impl Connection for ActiveCampaignConnection {
    fn check_rule(&self, action: &str, with: &Value) -> Result<(), FieldError> {
        check_action("activecampaign", ACTIONS, action)?;
        request::check(action, with)
    }

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        async move {
            let done = match call.action {
                "sync_contact" => self.sync_contact(call.request).await,
                "add_tag" => self.add_tag(call.request).await,
                "add_to_list" => self.add_to_list(call.request).await,
                other => Err(Attempted::without_response(Outcome::Permanent {
                    reason: format!("`{other}` is not an action of activecampaign connections"),
                })),
            };
            match done {
                Ok(status) => Attempted {
                    outcome: Outcome::Delivered,
                    status_code: Some(status),
                },
                Err(attempted) => attempted,
            }
        }
        .boxed()
    }
}

impl ActiveCampaignConnection {
    /// Makes one request after waiting for the rate limiter. `path` is relative to `/api/3/`.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Step<Reply> {
        // Relative paths without a scheme always join onto a base URL.
        let mut url = self.config.api_base.join(path).expect("relative API path");
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method, url)
            .timeout(self.config.timeout)
            .header("api-token", self.config.api_token.expose())
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let http::Received {
            status,
            headers,
            body,
        } = http::send_limited(&self.limiter, request)
            .await
            .map_err(Attempted::without_response)?;
        let html = headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let retry_after = http::retry_after(&headers);
        Ok(Reply {
            status,
            html,
            retry_after,
            body,
        })
    }

    /// A request whose failure ends the attempt: the parsed body of a success.
    async fn step(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Step<(u16, Value)> {
        let reply = self.request(method, path, query, body).await?;
        fail_on(&reply).map(|v| (reply.status, v))
    }

    fn cached_tag(&self, name: &str) -> Option<String> {
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    fn cache_tag(&self, name: &str, id: &str) {
        let mut tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        if tags.len() >= MAX_CACHED_TAGS {
            tags.clear();
        }
        tags.insert(name.to_owned(), id.to_owned());
    }

    fn forget_tag(&self, name: &str) {
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

/// The body of a successful reply, or the attempt's end with its status.
fn fail_on(reply: &Reply) -> Step<Value> {
    response::classify(reply).map_err(|outcome| Attempted {
        outcome,
        status_code: Some(reply.status),
    })
}
