//! `mailchimp`: `upsert_member` (`PUT /3.0/lists/{id}/members/{hash}`, never touching an
//! existing member's status) and `add_tags` (`POST …/members/{hash}/tags`). Both calls are
//! idempotent, so a retry never duplicates. Tagging someone who is not a member yet answers
//! 404: the member is upserted, then tagged again; a retry of that sequence repeats two
//! idempotent calls.
//!
//! Mailchimp refuses an account's 11th simultaneous connection, across all apps. Connections
//! with the same API key share one semaphore of [`config::MAX_CONCURRENT_REQUESTS`] permits,
//! so a workspace config reload (which builds new connections) does not double the allowance.

pub mod config;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use self::config::{Credentials, MAX_CONCURRENT_REQUESTS, MailchimpConfig, Settings};
use self::request::{Defaults, Member};
use crate::destinations::connector::{Connector, actions};
use crate::destinations::http::{self, HttpConnection};
use crate::destinations::preview::{Preview, Probe, RequestPreview};
use crate::destinations::{Attempted, Call, DestinationContext, Outcome};
use crate::model::FieldError;

actions! {
    /// What a Mailchimp rule can do.
    pub enum Action {
        /// Add or update the member, never touching an existing member's status.
        UpsertMember = "upsert_member",
        /// Tag the member, adding it first when needed.
        AddTags = "add_tags",
    }
}

/// Semaphores by account (a digest of the API key), shared while any connection holds one.
static ACCOUNTS: LazyLock<Mutex<HashMap<[u8; 32], Weak<Semaphore>>>> =
    LazyLock::new(Default::default);

fn account_semaphore(api_key: &str) -> Arc<Semaphore> {
    let account: [u8; 32] = Sha256::digest(api_key.as_bytes()).into();
    let mut accounts = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shared) = accounts.get(&account).and_then(Weak::upgrade) {
        return shared;
    }
    accounts.retain(|_, s| s.strong_count() > 0);
    let semaphore = Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS));
    accounts.insert(account, Arc::downgrade(&semaphore));
    semaphore
}

/// A configured Mailchimp connection.
#[derive(Debug)]
pub struct Mailchimp {
    config: MailchimpConfig,
    http: HttpConnection,
    /// Requests in flight for this account.
    in_flight: Arc<Semaphore>,
    /// The longest a call waits for a free connection or a rate slot.
    max_wait: Duration,
}

impl Connector for Mailchimp {
    const KIND: &'static str = "mailchimp";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let config = MailchimpConfig::new(settings, credentials, ctx)?;
        Ok(Self {
            http: HttpConnection::new(ctx, config.timeout, config.rate),
            in_flight: account_semaphore(config.api_key.expose_secret()),
            max_wait: ctx.max_rate_wait,
            config,
        })
    }

    fn check(&self, action: Action, with: &Value) -> Result<(), FieldError> {
        let with = with
            .as_object()
            .ok_or_else(|| FieldError::new("with", "must be an object with `email`"))?;
        if !with.contains_key("email") {
            return Err(FieldError::new(
                "with.email",
                "is required: the member's email (e.g. \"{{ payload.email }}\")",
            ));
        }
        if self.config.audience_id.is_none() && !with.contains_key("audience_id") {
            return Err(FieldError::new(
                "with.audience_id",
                "is required: the connection has no default `audience_id`",
            ));
        }
        if let Some(Value::String(status)) = with.get("status_if_new")
            && !status.contains("{{")
        {
            config::check_status("with.status_if_new", status)?;
        }
        if with.get("merge_fields").is_some_and(|m| !m.is_object()) {
            return Err(FieldError::new("with.merge_fields", "must be an object"));
        }
        if action == Action::AddTags {
            match with.get("tags") {
                Some(Value::Array(_) | Value::String(_)) => {}
                Some(_) => {
                    return Err(FieldError::new("with.tags", "must be a list of tag names"));
                }
                None => return Err(FieldError::new("with.tags", "is required")),
            }
        }
        Ok(())
    }

    /// `upsert_member` sets the member's merge fields: its subject is the audience and the
    /// subscriber hash. Tags are added, never overwritten.
    fn subject(&self, action: Action, request: &Value) -> Option<String> {
        if action != Action::UpsertMember {
            return None;
        }
        let defaults = Defaults {
            audience_id: self.config.audience_id.as_deref(),
            status_if_new: &self.config.status_if_new,
        };
        let member = request::member(request, defaults).ok()?;
        Some(format!("{}/{}", member.audience_id, member.hash))
    }

    /// An upsert is one `PUT`; tagging is a `POST` of the tags, and, only when Mailchimp
    /// answers 404 (not a member yet), the upsert and the same `POST` again.
    fn preview(&self, action: Action, call: Call<'_>) -> Preview {
        let defaults = Defaults {
            audience_id: self.config.audience_id.as_deref(),
            status_if_new: &self.config.status_if_new,
        };
        let member = match request::member(call.request, defaults) {
            Ok(m) => m,
            Err(reason) => return Preview::NotBuilt { reason },
        };
        let key = self.config.api_key.expose_secret();
        let show = |r| RequestPreview::of(r, &[key]);
        if action == Action::UpsertMember {
            return Preview::one(self.upsert_request(&member).and_then(show));
        }
        let built = request::tags(call.request).and_then(|tags| {
            Ok(vec![
                show(self.tag_request(&member, &tags)?)?,
                show(self.upsert_request(&member)?)?,
                show(self.tag_request(&member, &tags)?)?,
            ])
        });
        match built {
            Ok(requests) => Preview::Requests {
                requests,
                note: Some(
                    "the second and third requests are sent only when the first answers 404 \
                     (not a member yet)"
                        .into(),
                ),
            },
            Err(reason) => Preview::NotBuilt { reason },
        }
    }

    /// `GET /ping`: Mailchimp's health check, which needs a valid key.
    async fn probe(&self) -> Probe {
        // A fixed relative path always joins onto the base URL.
        let url = self.config.api_base.join("ping").expect("relative path");
        let key = self.config.api_key.expose_secret();
        let request = self
            .http
            .request(Method::GET, url)
            .basic_auth("herald", Some(key));
        Probe::call(&self.http, request, &[key], |r| Probe::by_status(r, &[key])).await
    }

    fn rate_factor(&self) -> Option<f64> {
        Some(self.http.limiter().factor())
    }

    async fn send(&self, action: Action, call: Call<'_>) -> Attempted {
        let defaults = Defaults {
            audience_id: self.config.audience_id.as_deref(),
            status_if_new: &self.config.status_if_new,
        };
        let member = match request::member(call.request, defaults) {
            Ok(m) => m,
            Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
        };
        if action == Action::UpsertMember {
            return self.upsert(&member).await;
        }
        let tags = match request::tags(call.request) {
            Ok(t) => t,
            Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
        };
        let tagged = self.tag(&member, &tags).await;
        if tagged.status_code != Some(404) {
            return tagged;
        }
        // Not a member yet (or no such audience: the upsert's 404 then says so).
        let upserted = self.upsert(&member).await;
        if upserted.outcome != Outcome::Delivered {
            return upserted;
        }
        self.tag(&member, &tags).await
    }
}

impl Mailchimp {
    async fn upsert(&self, member: &Member) -> Attempted {
        self.request(self.upsert_request(member), member).await
    }

    async fn tag(&self, member: &Member, tags: &[String]) -> Attempted {
        self.request(self.tag_request(member, tags), member).await
    }

    /// The request at `path`; `request` sends it and `preview` shows it.
    fn build(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, String> {
        // `path` is built from an audience id checked to be alphanumeric and a hex hash.
        let url = self
            .config
            .api_base
            .join(path)
            .map_err(|e| format!("cannot build the Mailchimp URL: {e}"))?;
        Ok(self
            .http
            .request(method, url)
            .basic_auth("herald", Some(self.config.api_key.expose_secret()))
            .json(body))
    }

    /// The member's upsert and tag requests, as `upsert` and `tag` build them.
    fn upsert_request(&self, member: &Member) -> Result<reqwest::RequestBuilder, String> {
        let path = format!("lists/{}/members/{}", member.audience_id, member.hash);
        self.build(Method::PUT, &path, &request::upsert_body(member))
    }

    fn tag_request(
        &self,
        member: &Member,
        tags: &[String],
    ) -> Result<reqwest::RequestBuilder, String> {
        let path = format!("lists/{}/members/{}/tags", member.audience_id, member.hash);
        self.build(Method::POST, &path, &request::tags_body(tags))
    }

    /// One request, holding one of the account's connection permits while it runs.
    async fn request(
        &self,
        request: Result<reqwest::RequestBuilder, String>,
        member: &Member,
    ) -> Attempted {
        let request = match request {
            Ok(request) => request,
            Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
        };
        let Ok(Ok(_permit)) =
            tokio::time::timeout(self.max_wait, self.in_flight.clone().acquire_owned()).await
        else {
            return Attempted::without_response(Outcome::RateLimited {
                after: Some(Duration::from_secs(1)),
            });
        };
        let http::Received {
            status,
            headers,
            body: text,
        } = match self.http.send(request).await {
            Ok(received) => received,
            Err(outcome) => return Attempted::without_response(outcome),
        };
        let after = http::retry_after(&headers);
        Attempted {
            outcome: response::classify(status, after, &text, &member.audience_id),
            status_code: Some(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::{Connection, connector};
    use crate::model::ConnectionSpec;
    use serde_json::json;

    fn connection(settings: Value, key: &str) -> Mailchimp {
        let spec = ConnectionSpec {
            id: "mc".into(),
            kind: "mailchimp".into(),
            credentials: [("api_key".to_owned(), crate::model::Secret::new(key))].into(),
            settings: settings.as_object().unwrap().clone(),
        };
        connector::connect(&spec, &DestinationContext::for_tests()).unwrap()
    }

    #[test]
    fn rules_are_checked_against_the_connection() {
        let with_audience = connection(json!({"audience_id": "aud1"}), "k-us6");
        let without = connection(json!({}), "k-us6");
        let ok = json!({"email": "{{ payload.email }}", "tags": ["module-3"]});
        assert!(with_audience.check(Action::UpsertMember, &ok).is_ok());
        assert!(with_audience.check(Action::AddTags, &ok).is_ok());
        let path =
            |c: &Mailchimp, action: Action, with: Value| c.check(action, &with).unwrap_err().path;
        assert_eq!(
            path(&without, Action::UpsertMember, ok.clone()),
            "with.audience_id"
        );
        assert_eq!(
            path(&with_audience, Action::AddTags, json!({"email": "x"})),
            "with.tags"
        );
        assert_eq!(
            path(&with_audience, Action::UpsertMember, json!({})),
            "with.email"
        );
        assert_eq!(
            path(
                &with_audience,
                Action::UpsertMember,
                json!({"email": "x", "status_if_new": "on"})
            ),
            "with.status_if_new"
        );
        let with_audience: Arc<dyn Connection> = Arc::new(with_audience);
        assert_eq!(with_audience.bind("subscribe").unwrap_err().path, "action");
    }

    #[test]
    fn connections_of_one_account_share_their_connection_permits() {
        let a = account_semaphore("k1-us6");
        let b = account_semaphore("k1-us6");
        let c = account_semaphore("k2-us6");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(a.available_permits(), MAX_CONCURRENT_REQUESTS);
    }
}
