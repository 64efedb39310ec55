//! Destinations: the tools a workspace connects. One folder per destination, split by role
//! (`config.rs` connection settings, `request.rs` event → API request, `response.rs` API
//! response → [`Outcome`]). Adding one means adding its folder and one line to [`REGISTRY`].

pub mod activecampaign;
pub mod http;
pub mod hubspot;
pub mod intercom;
pub mod limit;
pub mod mailchimp;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::model::records::EventEnvelope;
use crate::model::{ConnectionSpec, FieldError};

/// Every destination type Herald knows, by its `type` in a connection.
pub static REGISTRY: &[&dyn Destination] = &[
    &webhook::Webhook,
    &slack::Slack,
    &hubspot::HubSpot,
    &mailchimp::Mailchimp,
    &activecampaign::ActiveCampaign,
    &intercom::Intercom,
];

/// Looks a destination type up by name.
pub fn lookup(kind: &str) -> Option<&'static dyn Destination> {
    REGISTRY.iter().copied().find(|d| d.kind() == kind)
}

/// What one attempt at a delivery came to. The reason reaches history, logs and metrics as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination accepted the call.
    Delivered,
    /// A transient failure; try again later (after `after` when the API said so).
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The API asked us to slow down; this does not count as a failed attempt.
    RateLimited { after: Option<Duration> },
    /// The call can never succeed as it is (validation error, unknown channel, bad template).
    Permanent { reason: String },
    /// The connection itself is unusable (bad credentials, revoked app): stop calling it.
    ConnectionBroken { reason: String },
}

impl Outcome {
    /// The outcome's kind, as recorded in history and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry { .. } => "retry",
            Self::RateLimited { .. } => "rate_limited",
            Self::Permanent { .. } => "permanent",
            Self::ConnectionBroken { .. } => "connection_broken",
        }
    }

    /// The reason of a failure, `None` for [`Outcome::Delivered`].
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Delivered => None,
            Self::Retry { reason, .. }
            | Self::Permanent { reason }
            | Self::ConnectionBroken { reason } => Some(reason.clone()),
            Self::RateLimited { after } => Some(match after {
                Some(d) => format!("rate limited; retry after {}s", d.as_secs()),
                None => "rate limited".to_owned(),
            }),
        }
    }
}

/// An attempt's outcome and the HTTP status that produced it, if a response came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempted {
    pub outcome: Outcome,
    pub status_code: Option<u16>,
}

impl Attempted {
    /// An outcome reached without a response (timeout, refused connection, bad template).
    pub fn without_response(outcome: Outcome) -> Self {
        Self {
            outcome,
            status_code: None,
        }
    }
}

/// What a connection needs besides its own settings.
#[derive(Debug, Clone)]
pub struct DestinationContext {
    /// The shared HTTP client (connection pool, SSRF guard).
    pub http: reqwest::Client,
    /// Request timeout unless the connection sets `timeout_ms`.
    pub default_timeout: Duration,
    /// Whether URLs may point at loopback and private addresses.
    pub allow_private_networks: bool,
    /// The longest a call waits for its connection's rate limit before it is handed to a retry
    /// tier instead (see [`limit::Limiter`]).
    pub max_rate_wait: Duration,
}

impl DestinationContext {
    /// A connection's request timeout: its `timeout_ms` (above 0) or the default.
    pub fn timeout(&self, timeout_ms: Option<u64>) -> Result<Duration, FieldError> {
        match timeout_ms {
            Some(0) => Err(FieldError::new("timeout_ms", "must be greater than 0")),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(self.default_timeout),
        }
    }
}

/// One call for a connection to make.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub delivery_id: &'a str,
    pub action: &'a str,
    /// The rule's rendered `with`.
    pub request: &'a serde_json::Value,
    pub envelope: &'a EventEnvelope,
}

/// A destination type: validates connections and makes them.
pub trait Destination: Send + Sync {
    /// The `type` of connections of this destination.
    fn kind(&self) -> &'static str;

    /// The actions a rule may name.
    fn actions(&self) -> &'static [&'static str];

    /// Builds a connection from its (interpolated) spec; errors name the field relative to
    /// the connection, e.g. `credentials.token`.
    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError>;
}

/// A configured connection of one workspace.
pub trait Connection: Send + Sync + std::fmt::Debug {
    /// Checks a rule's action and the shape of its `with` before the config is accepted;
    /// errors name the field relative to the rule, e.g. `with.text`.
    fn check_rule(&self, action: &str, with: &serde_json::Value) -> Result<(), FieldError>;

    /// Makes one attempt at the call.
    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted>;
}

/// Checks that `action` is one of `actions`, naming the field `action` otherwise.
pub fn check_action(kind: &str, actions: &[&str], action: &str) -> Result<(), FieldError> {
    if actions.contains(&action) {
        Ok(())
    } else {
        Err(FieldError::new(
            "action",
            format!(
                "`{action}` is not an action of {kind} connections (known: {})",
                actions.join(", ")
            ),
        ))
    }
}

/// Deserialises a connection's type-specific settings, naming the offending field.
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    spec: &ConnectionSpec,
) -> Result<T, FieldError> {
    let value = serde_json::Value::Object(spec.settings.clone());
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        FieldError::new(path, e.into_inner().to_string())
    })
}
