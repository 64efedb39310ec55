//! `intercom`: `tag_contact` and `update_attributes` through the REST API.
//!
//! Both actions first find the contact (by external_id, then by email, with
//! `POST /contacts/search`) and create it when search finds none. Search is eventually
//! consistent, so a contact created by an earlier attempt may not be found yet: the create then
//! answers 409 "… already exists with id=…" and that id is used, so a retry never makes a
//! second contact. Tags are created-or-fetched by name (`POST /tags` is an upsert) and their
//! ids cached per connection ([`TagCache`]). Every call waits for the connection's rate limiter.

mod actions;
pub mod config;
pub mod request;
pub mod response;

use secrecy::ExposeSecret;
use serde_json::Value;

use self::config::{Credentials, IntercomConfig, Settings};
use self::response::Reply;
use crate::destinations::connector::{Connector, actions};
use crate::destinations::http::{self, HttpConnection};
use crate::destinations::preview::{Preview, Probe};
use crate::destinations::steps::{self, Step};
use crate::destinations::tags::TagCache;
use crate::destinations::{Attempted, Call, DestinationContext};
use crate::model::FieldError;

actions! {
    /// What an Intercom rule can do. Each finds (or creates) the contact first.
    pub enum Action {
        /// Tag the contact, creating the tag when needed.
        TagContact = "tag_contact",
        /// Set custom attributes on the contact.
        UpdateAttributes = "update_attributes",
    }
}

/// A configured Intercom workspace.
#[derive(Debug)]
pub struct Intercom {
    config: IntercomConfig,
    http: HttpConnection,
    tags: TagCache,
}

impl Connector for Intercom {
    const KIND: &'static str = "intercom";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let config = IntercomConfig::new(settings, credentials, ctx)?;
        Ok(Self {
            http: HttpConnection::new(ctx, config.timeout, config.rate),
            config,
            tags: TagCache::default(),
        })
    }

    fn check(&self, action: Action, with: &Value) -> Result<(), FieldError> {
        request::check(action, with)
    }

    /// `update_attributes` sets the contact's attributes: its subject is the identity the
    /// contact is found by (external_id first, as the lookup does). Tags are added.
    fn subject(&self, action: Action, request: &Value) -> Option<String> {
        match action {
            Action::TagContact => None,
            Action::UpdateAttributes => {
                request::identity(request)
                    .ok()
                    .map(|who| match (who.external_id, who.email) {
                        (Some(id), _) => format!("external_id:{id}"),
                        (None, email) => {
                            format!("email:{}", email.unwrap_or_default().to_lowercase())
                        }
                    })
            }
        }
    }

    /// `GET /me`: the admin the token belongs to.
    async fn probe(&self) -> Probe {
        // A fixed relative path always joins onto the base URL.
        let url = self.config.api_base.join("me").expect("relative path");
        let token = self.config.token.expose_secret();
        let request = self
            .http
            .request(reqwest::Method::GET, url)
            .bearer_auth(token)
            .header("accept", "application/json")
            .header("intercom-version", &self.config.api_version);
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
        Preview::chained("Intercom")
    }

    async fn send(&self, action: Action, call: Call<'_>) -> Attempted {
        steps::finished(match action {
            Action::TagContact => self.tag_contact(call.request).await,
            Action::UpdateAttributes => self.update_attributes(call.request).await,
        })
    }
}

impl Intercom {
    /// Makes one request after waiting for the rate limiter. `path` is relative to the API root.
    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Step<Reply> {
        // Relative paths made of fixed words and checked ids always join onto a base URL.
        let url = self.config.api_base.join(path).expect("relative API path");
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.config.token.expose_secret())
            .header("accept", "application/json")
            .header("intercom-version", &self.config.api_version);
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
        let retry_after = http::retry_after(&headers);
        let reset_after = headers
            .get("x-ratelimit-reset")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .map(|reset| response::until_reset(reset, chrono::Utc::now().timestamp()));
        Ok(Reply {
            status,
            retry_after,
            reset_after,
            body,
        })
    }
}

/// The body of a successful reply, or the attempt's end with its status.
fn fail_on(reply: &Reply) -> Step<Value> {
    steps::answered(reply.status, response::classify(reply))
}
