//! `slack`: `post_message` through an incoming webhook or `chat.postMessage` with a bot token.
//! Slack has no idempotency key, so a retried post after a timeout may show twice; the
//! classification in `response.rs` retries only what Slack says is transient.

pub mod config;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use self::config::{SlackAuth, SlackConfig};
use crate::destinations::limit::Limiter;
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, Outcome, check_action, http,
};
use crate::model::{ConnectionSpec, FieldError};

const ACTIONS: &[&str] = &["post_message"];

/// The Slack destination type.
pub struct Slack;

impl Destination for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        Ok(Arc::new(SlackConnection {
            config: SlackConfig::from_spec(spec, ctx)?,
            http: ctx.http.clone(),
            max_rate_wait: ctx.max_rate_wait,
            limiters: Mutex::default(),
        }))
    }
}

/// A configured Slack connection.
#[derive(Debug)]
pub struct SlackConnection {
    config: SlackConfig,
    http: reqwest::Client,
    max_rate_wait: Duration,
    /// One limiter per channel (an incoming webhook is one channel).
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
}

impl SlackConnection {
    fn limiter(&self, channel: &str) -> Arc<Limiter> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|p| p.into_inner());
        limiters
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Limiter::new(self.config.rate, self.max_rate_wait)))
            .clone()
    }
}

impl Connection for SlackConnection {
    fn check_rule(&self, action: &str, with: &serde_json::Value) -> Result<(), FieldError> {
        check_action("slack", ACTIONS, action)?;
        let with = with
            .as_object()
            .ok_or_else(|| FieldError::new("with", "must be an object with `text`"))?;
        if !with.contains_key("text") && !with.contains_key("blocks") {
            return Err(FieldError::new(
                "with.text",
                "is required (or give `blocks`)",
            ));
        }
        if let SlackAuth::BotToken { channel: None, .. } = self.config.auth
            && !with.contains_key("channel")
        {
            return Err(FieldError::new(
                "with.channel",
                "is required: the connection has no default `channel`",
            ));
        }
        Ok(())
    }

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        async move {
            let built = match &self.config.auth {
                SlackAuth::IncomingWebhook(url) => {
                    request::message_body(call.request, None, call.envelope).map(|mut body| {
                        // The channel of an incoming webhook is fixed when it is created.
                        if let Some(obj) = body.as_object_mut() {
                            obj.remove("channel");
                        }
                        let req = self.http.post(url.clone()).json(&body);
                        (req, false, url.path().to_owned())
                    })
                }
                SlackAuth::BotToken {
                    token,
                    api_base,
                    channel,
                } => request::message_body(call.request, channel.as_deref(), call.envelope).map(
                    |body| {
                        let target = body["channel"].as_str().unwrap_or_default().to_owned();
                        // `chat.postMessage` is a fixed relative path; joining it cannot fail.
                        let url = api_base.join("chat.postMessage").expect("valid path");
                        let req = self
                            .http
                            .post(url)
                            .bearer_auth(token)
                            .header("content-type", "application/json; charset=utf-8")
                            .body(body.to_string());
                        (req, true, target)
                    },
                ),
            };
            let (request, web_api, channel) = match built {
                Ok(built) => built,
                Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
            };
            let limiter = self.limiter(&channel);
            if let Err(wait) = limiter.acquire().await {
                return Attempted::without_response(Outcome::RateLimited { after: Some(wait) });
            }
            let response = match request.timeout(self.config.timeout).send().await {
                Ok(r) => r,
                Err(e) => return Attempted::without_response(http::transport_failure(&e)),
            };
            let status = response.status().as_u16();
            let after = http::retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            let outcome = if web_api {
                response::classify_web_api(status, after, &body)
            } else {
                response::classify_webhook(status, after, &body)
            };
            match outcome {
                Outcome::RateLimited { .. } => limiter.throttled(),
                Outcome::Delivered => limiter.succeeded(),
                _ => {}
            }
            Attempted {
                outcome,
                status_code: Some(status),
            }
        }
        .boxed()
    }
}
