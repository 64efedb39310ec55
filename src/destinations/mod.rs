//! Destinations: the tools a workspace connects. One folder per destination, split by role
//! (`config.rs` connection settings and credentials, `request.rs` event → API request,
//! `response.rs` API response → [`Outcome`]); its `mod.rs` implements the typed
//! [`connector::Connector`]. Adding one means adding its folder and one line to [`REGISTRY`].
//!
//! The rest of the crate sees destinations through the object-safe [`Destination`] (a registry
//! entry), [`Connection`] (a configured connection) and [`BoundAction`] (a rule's action on its
//! connection); [`connector`] provides all three for every connector, through the
//! [`connector::Adapter`] its registry line names.

pub mod activecampaign;
pub mod connector;
pub mod http;
pub mod hubspot;
pub mod intercom;
pub mod limit;
pub mod mailchimp;
pub mod noop;
pub mod oauth;
pub mod preview;
pub mod slack;
pub mod steps;
pub mod tags;
pub mod transcript;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use self::connector::Adapter;
pub use self::connector::BoundAction;
use crate::model::records::EventEnvelope;
use crate::model::{ConnectionSpec, FieldError, Secret};
use crate::settings::MAX_DESTINATION_TIMEOUT_MS;

/// Every destination type Herald knows, by its `type` in a connection.
pub static REGISTRY: &[&dyn Destination] = &[
    &Adapter::<webhook::Webhook>::new(),
    &Adapter::<slack::Slack>::new(),
    &Adapter::<hubspot::HubSpot>::new(),
    &Adapter::<mailchimp::Mailchimp>::new(),
    &Adapter::<activecampaign::ActiveCampaign>::new(),
    &Adapter::<intercom::Intercom>::new(),
];

/// The benchmark's destination, known only where [`noop::enabled`] says so.
static NOOP: &dyn Destination = &Adapter::<noop::Noop>::new();

/// Looks a destination type up by name.
pub fn lookup(kind: &str) -> Option<&'static dyn Destination> {
    REGISTRY
        .iter()
        .copied()
        .find(|d| d.kind() == kind)
        .or_else(|| (kind == NOOP.kind() && noop::enabled()).then_some(NOOP))
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
    /// Builds each OAuth connection's token source; `None` where tokens are not refreshed
    /// (`herald workspace apply` only checks configs).
    pub oauth: Option<Arc<dyn oauth::TokenSources>>,
    /// The token source of the connection being built, set by [`DestinationContext::for_connection`].
    pub tokens: Option<Arc<dyn oauth::TokenSource>>,
}

impl DestinationContext {
    /// The context to build `connection` (of type `kind`) of `workspace` with: the same, plus
    /// the connection's own token source.
    pub fn for_connection(&self, kind: &str, workspace: &str, connection: &str) -> Self {
        Self {
            tokens: self
                .oauth
                .as_ref()
                .and_then(|o| o.for_connection(kind, workspace, connection)),
            ..self.clone()
        }
    }

    /// A connection's request timeout: its `timeout_ms` (above 0, at most
    /// [`MAX_DESTINATION_TIMEOUT_MS`]) or the default.
    pub fn timeout(&self, timeout_ms: Option<u64>) -> Result<Duration, FieldError> {
        match timeout_ms {
            Some(0) => Err(FieldError::new("timeout_ms", "must be greater than 0")),
            Some(ms) if ms > MAX_DESTINATION_TIMEOUT_MS => Err(FieldError::new(
                "timeout_ms",
                format!("must be at most {MAX_DESTINATION_TIMEOUT_MS}"),
            )),
            Some(ms) => Ok(Duration::from_millis(ms)),
            None => Ok(self.default_timeout),
        }
    }

    /// A context for tests that reaches public addresses only, as in production: a 10 s
    /// timeout, rate-limit waits of up to 5 s.
    #[doc(hidden)]
    pub fn for_tests() -> Self {
        Self::test_context(false)
    }

    /// [`DestinationContext::for_tests`], but loopback and private addresses are allowed too
    /// (the sandbox listens on 127.0.0.1).
    #[doc(hidden)]
    pub fn for_local_tests() -> Self {
        Self::test_context(true)
    }

    fn test_context(allow_private_networks: bool) -> Self {
        Self {
            http: http::client(allow_private_networks),
            default_timeout: Duration::from_secs(10),
            allow_private_networks,
            max_rate_wait: Duration::from_secs(5),
            oauth: None,
            tokens: None,
        }
    }
}

/// One call for a connection to make.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub delivery_id: &'a str,
    /// The rule's rendered `with`.
    pub request: &'a serde_json::Value,
    pub envelope: &'a EventEnvelope,
}

/// A destination type: validates connections and makes them. [`connector::Adapter`] implements
/// it for every [`connector::Connector`].
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

    /// Checks a connection's settings alone (keys and types), for a connection whose
    /// credentials are in the store and not at hand; errors name the field.
    fn check_settings(&self, spec: &ConnectionSpec) -> Result<(), FieldError>;

    /// Checks credentials against the destination's credential fields (names and types, not
    /// whether the API accepts them); errors name `credentials.<field>` and never a value.
    fn check_credentials(&self, credentials: &BTreeMap<String, Secret>) -> Result<(), FieldError>;
}

/// A configured connection of one workspace. Every [`connector::Connector`] is one.
pub trait Connection: Send + Sync + std::fmt::Debug {
    /// Binds the action a rule names to this connection; an unknown name is an error at
    /// `action`. Check the rule's `with` with [`BoundAction::check`].
    fn bind(self: Arc<Self>, action: &str) -> Result<BoundAction, FieldError>;

    /// One harmless authenticated call to the API ("test connection"), without touching
    /// deliveries; see [`connector::Connector::probe`].
    fn probe(&self) -> futures::future::BoxFuture<'_, preview::Probe>;

    /// The share of the configured request rate its limiter now allows, when it has one.
    fn rate_factor(&self) -> Option<f64>;
}
