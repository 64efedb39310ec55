//! Webhook connection settings.

use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Deserialize;

use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// Settings beside `id` and `type` in a webhook connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where to POST.
    url: String,
    /// Per-request timeout; the global `destinations.timeout_ms` when absent.
    timeout_ms: Option<u64>,
}

/// `credentials` of a webhook connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The signing secret, in the Standard Webhooks form `whsec_<base64 key>`.
    secret: Option<SecretString>,
}

/// A validated webhook connection.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub timeout: Duration,
    /// The HMAC key: the base64 part of a `whsec_…` secret, decoded.
    pub signing_key: SecretSlice<u8>,
}

impl WebhookConfig {
    /// Checks the settings and the signing secret.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let url = http::check_url("url", &settings.url, ctx.allow_private_networks)?;
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let secret = credentials.secret.ok_or_else(|| {
            FieldError::new(
                "credentials.secret",
                "is required: a signing secret of the form whsec_<base64>",
            )
        })?;
        let signing_key = decode_secret(secret.expose_secret())
            .map_err(|problem| FieldError::new("credentials.secret", problem))?;
        Ok(Self {
            url,
            timeout,
            signing_key: signing_key.into(),
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
        // The decoder's message quotes the offending character of the secret.
        .map_err(|_| "the part after `whsec_` is not base64".to_owned())?;
    if key.len() < 16 {
        return Err(format!("the key is {} bytes; use at least 16", key.len()));
    }
    Ok(key)
}
