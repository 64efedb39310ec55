//! `slack`: `post_message` through an incoming webhook or `chat.postMessage` with a bot token.
//! Slack has no idempotency key, so a retried post after a timeout may show twice; the
//! classification in `response.rs` retries only what Slack says is transient.

pub mod config;
pub mod request;
pub mod response;

use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use self::config::{SlackAuth, SlackConfig};
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, Outcome, check_action, http,
};
use crate::workspace::spec::{ConnectionSpec, FieldError};

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
        }))
    }
}

/// A configured Slack connection.
#[derive(Debug)]
pub struct SlackConnection {
    config: SlackConfig,
    http: reqwest::Client,
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
            let (request, web_api) = match &self.config.auth {
                SlackAuth::IncomingWebhook(url) => {
                    match request::message_body(call.request, None) {
                        Ok(mut body) => {
                            // The channel of an incoming webhook is fixed when it is created.
                            if let Some(obj) = body.as_object_mut() {
                                obj.remove("channel");
                            }
                            (self.http.post(url.clone()).json(&body), false)
                        }
                        Err(reason) => {
                            return Attempted::without_response(Outcome::Permanent { reason });
                        }
                    }
                }
                SlackAuth::BotToken {
                    token,
                    api_base,
                    channel,
                } => match request::message_body(call.request, channel.as_deref()) {
                    Ok(body) => {
                        // `chat.postMessage` is a fixed relative path; joining it cannot fail.
                        let url = api_base.join("chat.postMessage").expect("valid path");
                        let req = self
                            .http
                            .post(url)
                            .bearer_auth(token)
                            .header("content-type", "application/json; charset=utf-8")
                            .body(body.to_string());
                        (req, true)
                    }
                    Err(reason) => {
                        return Attempted::without_response(Outcome::Permanent { reason });
                    }
                },
            };
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
            Attempted {
                outcome,
                status_code: Some(status),
            }
        }
        .boxed()
    }
}
