//! Connections that authenticate with OAuth: their tokens, where fresh ones come from, and
//! [`Refreshing`], which hands out the current access token and refreshes it before it expires
//! (or once after a 401), one refresh at a time per connection however many deliveries wait.
//!
//! Destinations know the token endpoint's wire format; they do not know where tokens are
//! stored. A [`TokenSource`], built for each connection by the [`TokenSources`] of the
//! [`super::DestinationContext`], refreshes and writes the rotated tokens back (the processor's
//! is the credential store).

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};

use super::Outcome;
use crate::model::FieldError;

/// A connection's tokens. Never shown in `Debug`.
#[derive(Clone)]
pub struct OAuthTokens {
    pub access_token: SecretString,
    pub refresh_token: SecretString,
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "OAuthTokens(expires_at: {})",
            self.expires_at.to_rfc3339()
        )
    }
}

/// The credential field names tokens are stored under.
pub mod fields {
    pub const ACCESS_TOKEN: &str = "access_token";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const EXPIRES_AT: &str = "expires_at";
}

impl OAuthTokens {
    /// Tokens from the credential fields `access_token`, `refresh_token`, `expires_at`
    /// (RFC 3339); errors name the field, never a value.
    pub fn from_fields(
        access_token: Option<SecretString>,
        refresh_token: Option<SecretString>,
        expires_at: Option<&str>,
    ) -> Result<Self, FieldError> {
        let present = |s: Option<SecretString>, name: &str| {
            s.filter(|s| !s.expose_secret().trim().is_empty())
                .ok_or_else(|| {
                    FieldError::new(
                        format!("credentials.{name}"),
                        "is required with OAuth tokens (connect the account again)",
                    )
                })
        };
        let access_token = present(access_token, fields::ACCESS_TOKEN)?;
        let refresh_token = present(refresh_token, fields::REFRESH_TOKEN)?;
        let expires_at = expires_at
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .ok_or_else(|| {
                FieldError::new(
                    format!("credentials.{}", fields::EXPIRES_AT),
                    "is required with OAuth tokens: an RFC 3339 time",
                )
            })?
            .with_timezone(&Utc);
        Ok(Self {
            access_token,
            refresh_token,
            expires_at,
        })
    }

    /// The credential fields these tokens are stored as.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                fields::ACCESS_TOKEN,
                self.access_token.expose_secret().to_owned(),
            ),
            (
                fields::REFRESH_TOKEN,
                self.refresh_token.expose_secret().to_owned(),
            ),
            (fields::EXPIRES_AT, self.expires_at.to_rfc3339()),
        ]
    }
}

/// Why no fresh tokens came back. Reasons name the endpoint's error code, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    /// The token endpoint refused the refresh token (revoked, app uninstalled): the account
    /// must be connected again.
    #[error("{0}")]
    Refused(String),
    /// No answer, or a transient one; try again later.
    #[error("{0}")]
    Unavailable(String),
}

/// Where one connection's fresh tokens come from.
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// Exchanges `refresh_token` for new tokens, and stores them for the connection.
    fn refresh<'a>(
        &'a self,
        refresh_token: &'a SecretString,
    ) -> BoxFuture<'a, Result<OAuthTokens, RefreshError>>;

    /// How long before its expiry an access token is refreshed.
    fn refresh_margin(&self) -> Duration;
}

/// Builds the token source of each connection, for the destination types that refresh.
pub trait TokenSources: Send + Sync + fmt::Debug {
    /// The token source of `connection` (of type `kind`) of `workspace`; `None` when this
    /// processor cannot refresh tokens of that type (its OAuth app is not configured).
    fn for_connection(
        &self,
        kind: &str,
        workspace: &str,
        connection: &str,
    ) -> Option<Arc<dyn TokenSource>>;
}

/// An access token handed out, and which refresh it came from.
#[derive(Clone)]
pub struct Bearer {
    pub token: SecretString,
    generation: u64,
}

#[derive(Clone)]
struct Current {
    tokens: OAuthTokens,
    /// Bumped by every refresh, so a caller that saw an old token knows one happened.
    generation: u64,
    /// Set when the refresh token was refused: every later call answers this.
    refused: Option<String>,
}

/// A connection's access token, refreshed in time and one refresh at a time.
#[derive(Debug)]
pub struct Refreshing {
    /// Names the destination in reasons (`HubSpot`).
    product: &'static str,
    source: Option<Arc<dyn TokenSource>>,
    current: RwLock<Current>,
    /// Held for the whole refresh: waiters then find the new token instead of refreshing again.
    refresh: tokio::sync::Mutex<()>,
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (generation {})", self.tokens, self.generation)
    }
}

impl Refreshing {
    /// Starts from the stored `tokens`; without a `source` they are used until they expire.
    pub fn new(
        product: &'static str,
        tokens: OAuthTokens,
        source: Option<Arc<dyn TokenSource>>,
    ) -> Self {
        Self {
            product,
            source,
            current: RwLock::new(Current {
                tokens,
                generation: 0,
                refused: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Current {
        // A poisoned lock means a panic while replacing the tokens; the value is still whole.
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The access token to send: the current one, or a fresh one when it expires within the
    /// margin. `Err` is the outcome of the call when there is none.
    pub async fn bearer(&self) -> Result<Bearer, Outcome> {
        let current = self.current();
        if let Some(reason) = current.refused {
            return Err(Outcome::ConnectionBroken { reason });
        }
        let margin = self
            .source
            .as_ref()
            .map_or(Duration::ZERO, |s| s.refresh_margin());
        let margin = chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero());
        if current.tokens.expires_at - margin > Utc::now() {
            return Ok(Bearer {
                token: current.tokens.access_token,
                generation: current.generation,
            });
        }
        self.refresh_after(current.generation).await
    }

    /// A fresh token after `used` was answered 401.
    pub async fn after_unauthorized(&self, used: &Bearer) -> Result<Bearer, Outcome> {
        self.refresh_after(used.generation).await
    }

    /// Refreshes unless a refresh newer than `seen` already happened.
    async fn refresh_after(&self, seen: u64) -> Result<Bearer, Outcome> {
        let _one_at_a_time = self.refresh.lock().await;
        let current = self.current();
        if let Some(reason) = current.refused {
            return Err(Outcome::ConnectionBroken { reason });
        }
        if current.generation != seen {
            return Ok(Bearer {
                token: current.tokens.access_token,
                generation: current.generation,
            });
        }
        let product = self.product;
        let Some(source) = &self.source else {
            return Err(Outcome::ConnectionBroken {
                reason: format!(
                    "the {product} access token expired and this processor cannot refresh it: \
                     the {product} OAuth app is not configured (oauth.{}.client_id)",
                    product.to_lowercase()
                ),
            });
        };
        match source.refresh(&current.tokens.refresh_token).await {
            Ok(tokens) => {
                let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
                slot.tokens = tokens;
                slot.generation += 1;
                tracing::info!(
                    expires_at = %slot.tokens.expires_at.to_rfc3339(),
                    "{product} access token refreshed"
                );
                Ok(Bearer {
                    token: slot.tokens.access_token.clone(),
                    generation: slot.generation,
                })
            }
            Err(RefreshError::Refused(why)) => {
                let reason = format!(
                    "{product} refused the connection's refresh token ({why}): connect the \
                     {product} account again"
                );
                self.current
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .refused = Some(reason.clone());
                Err(Outcome::ConnectionBroken { reason })
            }
            Err(RefreshError::Unavailable(why)) => Err(Outcome::Retry {
                after: None,
                reason: format!("cannot refresh the {product} access token: {why}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(expires_in_s: i64) -> OAuthTokens {
        OAuthTokens {
            access_token: SecretString::from("canary-access"),
            refresh_token: SecretString::from("canary-refresh"),
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in_s),
        }
    }

    #[test]
    fn tokens_round_trip_through_their_fields_and_never_print() {
        let t = tokens(60);
        let fields = t.to_fields();
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let back = OAuthTokens::from_fields(
            get("access_token").map(SecretString::from),
            get("refresh_token").map(SecretString::from),
            get("expires_at").as_deref(),
        )
        .unwrap();
        assert_eq!(back.access_token.expose_secret(), "canary-access");
        assert_eq!(back.expires_at.timestamp(), t.expires_at.timestamp());
        let shown = format!("{back:?}");
        assert!(!shown.contains("canary"), "{shown}");
    }

    #[tokio::test]
    async fn without_a_token_source_a_valid_token_is_used_and_an_expired_one_breaks() {
        let fresh = Refreshing::new("HubSpot", tokens(60), None);
        let bearer = fresh.bearer().await.unwrap();
        assert_eq!(bearer.token.expose_secret(), "canary-access");
        let expired = Refreshing::new("HubSpot", tokens(-1), None);
        let Err(Outcome::ConnectionBroken { reason }) = expired.bearer().await else {
            panic!("an expired token without a source breaks the connection");
        };
        assert!(reason.contains("oauth.hubspot.client_id"), "{reason}");
        assert!(!reason.contains("canary"), "{reason}");
    }
}
