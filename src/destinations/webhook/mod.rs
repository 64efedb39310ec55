//! `webhook`: a signed JSON POST to the workspace's own endpoint (Standard Webhooks headers
//! `webhook-id`, `webhook-timestamp`, `webhook-signature`). The id is the delivery id, the same
//! on every attempt, so receivers can drop repeats.

pub mod config;
pub mod request;
pub mod response;

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use self::config::WebhookConfig;
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, check_action, http,
};
use crate::model::{ConnectionSpec, FieldError};

const ACTIONS: &[&str] = &["post"];

/// The webhook destination type.
pub struct Webhook;

impl Destination for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        Ok(Arc::new(WebhookConnection {
            config: WebhookConfig::from_spec(spec, ctx)?,
            http: ctx.http.clone(),
        }))
    }
}

/// A configured webhook endpoint.
#[derive(Debug)]
pub struct WebhookConnection {
    config: WebhookConfig,
    http: reqwest::Client,
}

impl Connection for WebhookConnection {
    fn check_rule(&self, action: &str, with: &serde_json::Value) -> Result<(), FieldError> {
        check_action("webhook", ACTIONS, action)?;
        if !(with.is_null() || with.is_object()) {
            return Err(FieldError::new(
                "with",
                "must be an object (the body to post) or absent (post the event)",
            ));
        }
        Ok(())
    }

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        async move {
            let body = if call.request.is_null() {
                request::default_body(call.envelope)
            } else {
                call.request.clone()
            };
            // Serialising a JSON value cannot fail.
            let body = serde_json::to_vec(&body).expect("JSON values serialise");
            let timestamp = chrono::Utc::now().timestamp();
            let signature =
                request::signature(&self.config.signing_key, call.delivery_id, timestamp, &body);
            let started = Instant::now();
            let sent = self
                .http
                .post(self.config.url.clone())
                .timeout(self.config.timeout)
                .header("content-type", "application/json")
                .header("webhook-id", call.delivery_id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signature)
                .body(body)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => return Attempted::without_response(http::transport_failure(&e)),
            };
            let status = response.status().as_u16();
            let after = http::retry_after(response.headers());
            let remaining = self.config.timeout.saturating_sub(started.elapsed());
            let body = match tokio::time::timeout(remaining, response.text()).await {
                Ok(Ok(text)) => text,
                Ok(Err(_)) | Err(_) if (200..300).contains(&status) => String::new(),
                Ok(Err(e)) => format!("(body unreadable: {e})"),
                Err(_) => "(body timed out)".to_owned(),
            };
            Attempted {
                outcome: response::classify(status, after, &body),
                status_code: Some(status),
            }
        }
        .boxed()
    }
}
