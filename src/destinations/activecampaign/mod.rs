//! `activecampaign`: `sync_contact`, `add_tag` and `add_to_list` through API v3.
//!
//! Each action is several calls (sync the contact, then tag or subscribe it), and a retry runs
//! all of them again, so every step is safe to repeat: the sync is an upsert by email, a tag
//! is looked up by name before it is created (and a "duplicate" answer to the create is
//! resolved by looking it up again), and a contact that already has the tag counts as tagged.
//! Tag ids are cached per connection ([`TagCache`]). Every call waits for the connection's rate
//! limiter.

mod actions;
pub mod config;
pub mod request;
pub mod response;

use secrecy::ExposeSecret;
use serde_json::Value;

use self::config::{ActiveCampaignConfig, Credentials, Settings};
use self::response::Reply;
use crate::destinations::connector::{Connector, actions};
use crate::destinations::http::{self, HttpConnection};
use crate::destinations::preview::{Preview, Probe};
use crate::destinations::steps::{self, Step};
use crate::destinations::tags::TagCache;
use crate::destinations::{Attempted, Call, DestinationContext};
use crate::model::FieldError;

actions! {
    /// What an ActiveCampaign rule can do. Each syncs the contact first.
    pub enum Action {
        /// Create or update the contact by email.
        SyncContact = "sync_contact",
        /// Tag the contact, creating the tag when needed.
        AddTag = "add_tag",
        /// Subscribe the contact to a list.
        AddToList = "add_to_list",
    }
}

/// A configured ActiveCampaign account.
#[derive(Debug)]
pub struct ActiveCampaign {
    config: ActiveCampaignConfig,
    http: HttpConnection,
    tags: TagCache,
}

impl Connector for ActiveCampaign {
    const KIND: &'static str = "activecampaign";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let config = ActiveCampaignConfig::new(settings, credentials, ctx)?;
        Ok(Self {
            http: HttpConnection::new(ctx, config.timeout, config.rate),
            config,
            tags: TagCache::default(),
        })
    }

    fn check(&self, action: Action, with: &Value) -> Result<(), FieldError> {
        request::check(action, with)
    }

    /// `sync_contact` sets the contact's fields: its subject is the normalised email.
    /// `add_tag` and `add_to_list` add to the contact and are always sent, though they sync
    /// the contact's fields first as well.
    fn subject(&self, action: Action, request: &Value) -> Option<String> {
        match action {
            Action::SyncContact => request::required(request, "email")
                .ok()
                .map(|email| email.to_lowercase()),
            Action::AddTag | Action::AddToList => None,
        }
    }

    /// `GET /api/3/users/me`: the user the token belongs to.
    async fn probe(&self) -> Probe {
        // A fixed relative path always joins onto the base URL.
        let url = self
            .config
            .api_base
            .join("users/me")
            .expect("relative path");
        let token = self.config.api_token.expose_secret();
        let request = self
            .http
            .request(reqwest::Method::GET, url)
            .header("api-token", token)
            .header("accept", "application/json");
        Probe::call(&self.http, request, &[token], |r| {
            Probe::by_status(r, &[token])
        })
        .await
    }

    fn rate_factor(&self) -> Option<f64> {
        Some(self.http.limiter().factor())
    }

    /// Each call is built from the answer to the one before (ids the API hands out), so
    /// there is nothing honest to show before calling.
    fn preview(&self, _action: Action, _call: Call<'_>) -> Preview {
        Preview::chained("ActiveCampaign")
    }

    async fn send(&self, action: Action, call: Call<'_>) -> Attempted {
        steps::finished(match action {
            Action::SyncContact => self.sync_contact(call.request).await,
            Action::AddTag => self.add_tag(call.request).await,
            Action::AddToList => self.add_to_list(call.request).await,
        })
    }
}

impl ActiveCampaign {
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
            .header("api-token", self.config.api_token.expose_secret())
            .header("accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let http::Received {
            status,
            headers,
            body,
        } = self
            .http
            .send(request)
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
}

/// The body of a successful reply, or the attempt's end with its status.
fn fail_on(reply: &Reply) -> Step<Value> {
    steps::answered(reply.status, response::classify(reply))
}
