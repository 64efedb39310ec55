//! `webhook`: a signed JSON POST to the workspace's own endpoint (Standard Webhooks headers
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`). The id is the delivery id, the same
//! on every attempt, so receivers can drop repeats.

pub mod config;
pub mod request;
pub mod response;

use std::time::Instant;

use secrecy::ExposeSecret;

use self::config::{Credentials, Settings, WebhookConfig};
use crate::destinations::connector::{Connector, actions};
use crate::destinations::preview::{Preview, Probe, RequestPreview};
use crate::destinations::{Attempted, Call, DestinationContext, http, transcript};
use crate::model::FieldError;

actions! {
    /// What a webhook rule can do.
    pub enum Action {
        /// POST the rendered `with` (or the event) to the endpoint.
        Post = "post",
    }
}

/// A configured webhook endpoint. It sets no rate limit of its own, and it reads answers its
/// own way (a 2xx whose body cannot be read is still delivered: posting again would repeat
/// it), so it holds the client itself rather than an [`http::HttpConnection`].
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl Connector for Webhook {
    const KIND: &'static str = "webhook";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        Ok(Self {
            config: WebhookConfig::new(settings, credentials, ctx)?,
            http: ctx.http.clone(),
        })
    }

    fn check(&self, Action::Post: Action, with: &serde_json::Value) -> Result<(), FieldError> {
        if !(with.is_null() || with.is_object()) {
            return Err(FieldError::new(
                "with",
                "must be an object (the body to post) or absent (post the event)",
            ));
        }
        Ok(())
    }

    /// The signature (over a timestamp taken now) is redacted; the rest is the request as sent.
    fn preview(&self, Action::Post: Action, call: Call<'_>) -> Preview {
        Preview::one(RequestPreview::of(self.request(call), &[]))
    }

    /// Any request to a receiver is a delivery to it, so there is no harmless one: a signed
    /// test POST is what a test event with `send=true` makes.
    async fn probe(&self) -> Probe {
        Probe::Unsupported(
            "a webhook has no harmless call: every POST is a delivery to the receiver; send a \
             test event (`POST /v1/workspaces/{id}/test-event?send=true`) to try it"
                .into(),
        )
    }

    /// A post is an event the receiver appends; nothing is overwritten.
    fn subject(&self, Action::Post: Action, _request: &serde_json::Value) -> Option<String> {
        None
    }

    async fn send(&self, Action::Post: Action, call: Call<'_>) -> Attempted {
        let started = Instant::now();
        let sent = self.request(call).send().await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => return Attempted::without_response(http::transport_failure(&e)),
        };
        let status = response.status().as_u16();
        let after = http::retry_after(response.headers());
        let remaining = self.config.timeout.saturating_sub(started.elapsed());
        let body = match tokio::time::timeout(remaining, http::read_body(response)).await {
            Ok(Ok(text)) => text,
            Ok(Err(_)) | Err(_) if (200..300).contains(&status) => String::new(),
            Ok(Err(e)) => format!("(body unreadable: {e})"),
            Err(_) => "(body timed out)".to_owned(),
        };
        transcript::record(status, &body);
        Attempted {
            outcome: response::classify(status, after, &body),
            status_code: Some(status),
        }
    }
}

impl Webhook {
    /// The signed POST of one attempt; `send` and `preview` both build it here.
    fn request(&self, call: Call<'_>) -> reqwest::RequestBuilder {
        let body = if call.request.is_null() {
            request::default_body(call.envelope)
        } else {
            call.request.clone()
        };
        // Serialising a JSON value cannot fail.
        let body = serde_json::to_vec(&body).expect("JSON values serialise");
        let timestamp = chrono::Utc::now().timestamp();
        let signature = request::signature(
            self.config.signing_key.expose_secret(),
            call.delivery_id,
            timestamp,
            &body,
        );
        self.http
            .post(self.config.url.clone())
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", call.delivery_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
    }
}
