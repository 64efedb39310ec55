//! `slack`: `post_message` through an incoming webhook or `chat.postMessage` with a bot token.
//! Slack has no idempotency key, so a retried post after a timeout may show twice; the
//! classification in `response.rs` retries only what Slack says is transient.

pub mod config;
pub mod request;
pub mod response;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;

use self::config::{Credentials, Settings, SlackAuth, SlackConfig};
use crate::destinations::connector::{Connector, actions};
use crate::destinations::http::{self, HttpConnection, Pace, Received};
use crate::destinations::limit::{Limiter, RateSpec};
use crate::destinations::preview::{self, Preview, Probe, RequestPreview};
use crate::destinations::{Attempted, Call, DestinationContext, Outcome};
use crate::model::FieldError;

actions! {
    /// What a Slack rule can do.
    pub enum Action {
        /// Post a message (`text`, `blocks` or `fields`).
        PostMessage = "post_message",
    }
}

/// A configured Slack connection.
#[derive(Debug)]
pub struct Slack {
    auth: SlackAuth,
    /// Its limiter paces an incoming webhook, which posts to one channel.
    http: HttpConnection,
    /// The rate allowed per channel, and how long a call may wait for it.
    rate: RateSpec,
    max_rate_wait: Duration,
    /// A bot token's limiters, one per channel.
    channels: Mutex<HashMap<String, Arc<Limiter>>>,
}

/// Channel limiters kept per bot token.
const MAX_CHANNELS: usize = 1_000;

impl Slack {
    /// The request of one attempt and, for a bot token, the channel it posts to (paced per
    /// channel); `send` and `preview` both build it here.
    fn request(&self, call: Call<'_>) -> Result<(reqwest::RequestBuilder, Option<String>), String> {
        match &self.auth {
            SlackAuth::IncomingWebhook(url) => {
                request::message_body(call.request, None, call.envelope).map(|mut body| {
                    // The channel of an incoming webhook is fixed when it is created.
                    if let Some(obj) = body.as_object_mut() {
                        obj.remove("channel");
                    }
                    let request = self
                        .http
                        .request(reqwest::Method::POST, url.expose_secret())
                        .json(&body);
                    (request, None)
                })
            }
            SlackAuth::BotToken {
                token,
                api_base,
                channel,
            } => {
                request::message_body(call.request, channel.as_deref(), call.envelope).map(|body| {
                    let target = body["channel"].as_str().unwrap_or_default().to_owned();
                    // `chat.postMessage` is a fixed relative path; joining it cannot fail.
                    let url = api_base.join("chat.postMessage").expect("valid path");
                    let request = self
                        .http
                        .request(reqwest::Method::POST, url)
                        .bearer_auth(token.expose_secret())
                        .header("content-type", "application/json; charset=utf-8")
                        .body(body.to_string());
                    (request, Some(target))
                })
            }
        }
    }

    /// The values to keep out of previews and probe errors.
    fn secrets(&self) -> Vec<&str> {
        match &self.auth {
            SlackAuth::IncomingWebhook(url) => vec![url.expose_secret()],
            SlackAuth::BotToken { token, .. } => vec![token.expose_secret()],
        }
    }

    fn channel_limiter(&self, channel: &str) -> Arc<Limiter> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels.len() >= MAX_CHANNELS && !channels.contains_key(channel) {
            // Channels come from rendered templates; past the bound one limiter makes room.
            // Its channel gets a fresh limiter when it posts again; Slack's own 429 still
            // slows that one down.
            if let Some(evicted) = channels.keys().next().cloned() {
                channels.remove(&evicted);
            }
        }
        channels
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Limiter::new(self.rate, self.max_rate_wait)))
            .clone()
    }
}

impl Connector for Slack {
    const KIND: &'static str = "slack";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let SlackConfig {
            auth,
            timeout,
            rate,
        } = SlackConfig::new(settings, credentials, ctx)?;
        Ok(Self {
            auth,
            http: HttpConnection::new(ctx, timeout, rate),
            rate,
            max_rate_wait: ctx.max_rate_wait,
            channels: Mutex::default(),
        })
    }

    fn check(&self, Action::PostMessage: Action, with: &Value) -> Result<(), FieldError> {
        let with = with
            .as_object()
            .ok_or_else(|| FieldError::new("with", "must be an object with `text`"))?;
        if !with.contains_key("text") && !with.contains_key("blocks") {
            return Err(FieldError::new(
                "with.text",
                "is required (or give `blocks`)",
            ));
        }
        if let SlackAuth::BotToken { channel: None, .. } = self.auth
            && !with.contains_key("channel")
        {
            return Err(FieldError::new(
                "with.channel",
                "is required: the connection has no default `channel`",
            ));
        }
        Ok(())
    }

    fn preview(&self, Action::PostMessage: Action, call: Call<'_>) -> Preview {
        Preview::one(
            self.request(call)
                .and_then(|(request, _)| RequestPreview::of(request, &self.secrets())),
        )
    }

    /// `auth.test` with a bot token. An incoming webhook has no harmless call: anything
    /// posted to it is a message in its channel.
    async fn probe(&self) -> Probe {
        let SlackAuth::BotToken {
            token, api_base, ..
        } = &self.auth
        else {
            return Probe::Unsupported(
                "an incoming-webhook Slack connection has no harmless call: anything posted to \
                 it is a message in its channel"
                    .into(),
            );
        };
        // `auth.test` is a fixed relative path; joining it cannot fail.
        let url = api_base.join("auth.test").expect("valid path");
        let request = self
            .http
            .request(reqwest::Method::POST, url)
            .bearer_auth(token.expose_secret());
        let secrets = self.secrets();
        Probe::call(&self.http, request, &secrets, |r| {
            // The Web API answers errors with HTTP 200 and `{"ok": false, "error": …}`.
            let ok = serde_json::from_str::<Value>(&r.body)
                .ok()
                .and_then(|v| v.get("ok").and_then(Value::as_bool));
            match ok {
                Some(true) if r.status == 200 => Probe::Ok,
                _ if r.status == 200 => Probe::Failed(preview::redact(
                    &format!("HTTP 200: {}", http::excerpt(&r.body)),
                    &secrets,
                )),
                _ => Probe::by_status(r, &secrets),
            }
        })
        .await
    }

    fn rate_factor(&self) -> Option<f64> {
        Some(self.http.limiter().factor())
    }

    /// A message is added to the channel; nothing is overwritten.
    fn subject(&self, Action::PostMessage: Action, _request: &Value) -> Option<String> {
        None
    }

    async fn send(&self, Action::PostMessage: Action, call: Call<'_>) -> Attempted {
        let (request, channel) = match self.request(call) {
            Ok(post) => post,
            Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
        };
        let channel = channel.map(|c| self.channel_limiter(&c));
        let web_api = matches!(self.auth, SlackAuth::BotToken { .. });
        let classify = |r: &Received| {
            let after = http::retry_after(&r.headers);
            if web_api {
                response::classify_web_api(r.status, after, &r.body)
            } else {
                response::classify_webhook(r.status, after, &r.body)
            }
        };
        // A bot token is paced per channel; an incoming webhook posts to one.
        let limiter = channel.as_deref().unwrap_or(self.http.limiter());
        match http::send_limited(limiter, request, |r| Pace::of(&classify(r))).await {
            Ok(received) => Attempted {
                outcome: classify(&received),
                status_code: Some(received.status),
            },
            Err(outcome) => Attempted::without_response(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_limiters_are_bounded_and_kept_per_channel() {
        let settings: Settings = serde_json::from_value(serde_json::json!({})).expect("settings");
        let credentials: Credentials =
            serde_json::from_value(serde_json::json!({"token": "xoxb-1"})).expect("credentials");
        let slack = Slack::connect(settings, credentials, &DestinationContext::for_tests())
            .expect("connects");
        let same = slack.channel_limiter("C-same");
        assert!(Arc::ptr_eq(&same, &slack.channel_limiter("C-same")));
        for i in 0..MAX_CHANNELS + 50 {
            slack.channel_limiter(&format!("C{i}"));
        }
        let kept = slack.channels.lock().map(|c| c.len()).unwrap_or_default();
        assert_eq!(kept, MAX_CHANNELS);
    }
}
