//! Slack connection settings: an incoming-webhook URL, or a bot token for `chat.postMessage`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// Slack's Web API.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// Slack allows about one message per second per channel (short bursts tolerated).
pub const DEFAULT_RATE: RateSpec = RateSpec::new(1, Duration::from_secs(1));

/// Settings beside `id` and `type` in a Slack connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Channel for `chat.postMessage` when a rule's `with.channel` is absent.
    channel: Option<String>,
    /// Web API base URL; only tests and the sandbox change it.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    /// Messages per channel; default [`DEFAULT_RATE`].
    rate_limit: Option<RateSpec>,
}

/// `credentials` of a Slack connection: one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// An incoming-webhook URL; the URL itself is the secret.
    webhook_url: Option<SecretString>,
    /// A bot token (`xoxb-…`).
    token: Option<SecretString>,
}

/// How a Slack connection posts.
#[derive(Debug, Clone)]
pub enum SlackAuth {
    /// `credentials.webhook_url`: the URL (checked) is the secret, the channel is fixed by
    /// Slack.
    IncomingWebhook(SecretString),
    /// `credentials.token`: a bot token (`xoxb-…`) for `chat.postMessage`.
    BotToken {
        token: SecretString,
        api_base: url::Url,
        channel: Option<String>,
    },
}

/// A validated Slack connection.
#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub auth: SlackAuth,
    pub timeout: Duration,
    /// The rate allowed per channel.
    pub rate: RateSpec,
}

impl SlackConfig {
    /// Checks the settings and that exactly one way to post is given.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let rate = RateSpec::given_or(settings.rate_limit, DEFAULT_RATE)?;
        let allow = ctx.allow_private_networks;
        let auth = match (credentials.webhook_url, credentials.token) {
            (Some(_), Some(_)) => {
                return Err(FieldError::new(
                    "credentials",
                    "give either `webhook_url` or `token`, not both",
                ));
            }
            (None, None) => {
                return Err(FieldError::new(
                    "credentials",
                    "needs `webhook_url` (incoming webhook) or `token` (bot token)",
                ));
            }
            (Some(url), None) => {
                if settings.channel.is_some() || settings.base_url.is_some() {
                    return Err(FieldError::new(
                        "channel",
                        "`channel` and `base_url` apply to bot tokens; an incoming webhook \
                         posts to the channel it was created for",
                    ));
                }
                let url = http::check_url("credentials.webhook_url", url.expose_secret(), allow)?;
                SlackAuth::IncomingWebhook(String::from(url).into())
            }
            (None, Some(token)) => {
                if token.expose_secret().trim().is_empty() {
                    return Err(FieldError::new("credentials.token", "must not be empty"));
                }
                let base = settings.base_url.as_deref().unwrap_or(DEFAULT_API_BASE);
                let mut api_base = http::check_url("base_url", base, allow)?;
                if !api_base.path().ends_with('/') {
                    api_base.set_path(&format!("{}/", api_base.path()));
                }
                SlackAuth::BotToken {
                    token,
                    api_base,
                    channel: settings.channel,
                }
            }
        };
        Ok(Self {
            auth,
            timeout,
            rate,
        })
    }
}
