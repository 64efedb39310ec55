//! `intercom`: `tag_contact` and `update_attributes` through the REST API.
//!
//! Both actions first find the contact (by external_id, then by email, with
//! `POST /contacts/search`) and create it when search finds none. Search is eventually
//! consistent, so a contact created by an earlier attempt may not be found yet: the create then
//! answers 409 "… already exists with id=…" and that id is used, so a retry never makes a
//! second contact. Tags are created-or-fetched by name (`POST /tags` is an upsert) and their
//! ids cached per connection. Every call waits for the connection's rate limiter.

mod actions;
pub mod config;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use self::config::IntercomConfig;
use self::response::Reply;
use crate::destinations::limit::Limiter;
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, Outcome, check_action, http,
};
use crate::model::{ConnectionSpec, FieldError};

const ACTIONS: &[&str] = &["tag_contact", "update_attributes"];

/// Tag ids remembered per connection; past this the cache starts over.
const MAX_CACHED_TAGS: usize = 10_000;

/// The Intercom destination type.
pub struct Intercom;

impl Destination for Intercom {
    fn kind(&self) -> &'static str {
        "intercom"
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        let config = IntercomConfig::from_spec(spec, ctx)?;
        Ok(Arc::new(IntercomConnection {
            limiter: Limiter::new(config.rate, ctx.max_rate_wait),
            config,
            http: ctx.http.clone(),
            tags: Mutex::default(),
        }))
    }
}

/// A configured Intercom workspace.
#[derive(Debug)]
pub struct IntercomConnection {
    config: IntercomConfig,
    http: reqwest::Client,
    limiter: Limiter,
    /// Tag name → tag id.
    tags: Mutex<HashMap<String, String>>,
}

/// A step of an action: its result, or the attempt's end.
type Step<T> = Result<T, Attempted>;

impl Connection for IntercomConnection {
    fn check_rule(&self, action: &str, with: &Value) -> Result<(), FieldError> {
        check_action("intercom", ACTIONS, action)?;
        request::check(action, with)
    }

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        async move {
            let done = match call.action {
                "tag_contact" => self.tag_contact(call.request).await,
                "update_attributes" => self.update_attributes(call.request).await,
                other => Err(Attempted::without_response(Outcome::Permanent {
                    reason: format!("`{other}` is not an action of intercom connections"),
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

impl IntercomConnection {
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
            .timeout(self.config.timeout)
            .bearer_auth(self.config.token.expose())
            .header("accept", "application/json")
            .header("intercom-version", &self.config.api_version);
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
