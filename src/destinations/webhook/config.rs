//! Webhook connection settings.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::destinations::{DestinationContext, http, parse_settings};
use crate::model::{ConnectionSpec, FieldError};

/// Settings beside `id` and `type` in a webhook connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Where to POST.
    url: String,
    /// Per-request timeout; the global `destinations.timeout_ms` when absent.
    timeout_ms: Option<u64>,
}

/// A validated webhook connection.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub timeout: Duration,
    /// The HMAC key: the base64 part of a `whsec_…` secret, decoded.
    pub signing_key: Vec<u8>,
}

impl WebhookConfig {
    /// Reads and checks `spec`. The secret is `credentials.secret`, in the Standard Webhooks
    /// form `whsec_<base64 key>`.
    pub fn from_spec(spec: &ConnectionSpec, ctx: &DestinationContext) -> Result<Self, FieldError> {
        let settings: Settings = parse_settings(spec)?;
        let url = http::check_url("url", &settings.url, ctx.allow_private_networks)?;
        let timeout = ctx.timeout(settings.timeout_ms)?;
        for key in spec.credentials.keys() {
            if key != "secret" {
                return Err(FieldError::new(
                    format!("credentials.{key}"),
                    "unknown credential; webhook connections take `secret`",
                ));
            }
        }
        let secret = spec.credentials.get("secret").ok_or_else(|| {
            FieldError::new(
                "credentials.secret",
                "is required: a signing secret of the form whsec_<base64>",
            )
        })?;
        let signing_key = decode_secret(secret.expose())
            .map_err(|problem| FieldError::new("credentials.secret", problem))?;
        Ok(Self {
            url,
            timeout,
            signing_key,
        })
    }
}

/// Decodes a `whsec_<base64>` secret into its key bytes.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or("must start with `whsec_` followed by a base64 key")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the part after `whsec_` is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!("the key is {} bytes; use at least 16", key.len()));
    }
    Ok(key)
}
