//! Settings of "Connect HubSpot" (`[oauth.hubspot]`): the operator's HubSpot public app, where
//! its authorize and token endpoints are, where HubSpot sends the account owner back, and when
//! access tokens are refreshed.

use std::time::Duration;

use serde::Deserialize;

use super::SettingsError;
use crate::model::Secret;

/// OAuth apps, one per destination that connects with OAuth.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    pub hubspot: HubSpotOAuthSettings,
}

/// The operator's HubSpot public app.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSpotOAuthSettings {
    /// The app's client id; empty turns "Connect HubSpot" off.
    pub client_id: String,
    /// The app's client secret, or a `${env:NAME}` reference resolved at start-up.
    pub client_secret: Secret,
    pub authorize_url: String,
    pub token_url: String,
    /// The public base URL of this service; HubSpot sends the account owner back to
    /// `<redirect_url>/oauth/hubspot/callback`.
    pub redirect_url: String,
    /// Separated by spaces, as the authorize URL takes them.
    pub scopes: String,
    /// How long a `state` handed out by `/oauth/hubspot/start` stays valid.
    pub state_ttl_ms: u64,
    /// How long before its expiry an access token is refreshed.
    pub refresh_margin_ms: u64,
    /// How long a token request may take.
    pub timeout_ms: u64,
}

/// The path HubSpot redirects to, under `redirect_url`.
pub const CALLBACK_PATH: &str = "/oauth/hubspot/callback";

impl HubSpotOAuthSettings {
    /// Whether "Connect HubSpot" is configured.
    pub fn enabled(&self) -> bool {
        !self.client_id.trim().is_empty()
    }

    /// The client secret, its `${env:NAME}` reference resolved (checked by `Settings::load`).
    pub fn client_secret(&self) -> Secret {
        Secret::new(super::api::resolve(&self.client_secret).unwrap_or_default())
    }

    /// The full callback URL registered with the app.
    pub fn callback_url(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.redirect_url.trim_end_matches('/'))
    }

    /// The scopes as the authorize URL takes them: separated by one space.
    pub fn scope(&self) -> String {
        self.scopes.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    pub fn state_ttl(&self) -> Duration {
        Duration::from_millis(self.state_ttl_ms)
    }

    pub fn refresh_margin(&self) -> Duration {
        Duration::from_millis(self.refresh_margin_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Checks the app when it is configured, naming the key of the first problem.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &'static str, problem: String| SettingsError::Invalid { key, problem };
        for (key, v) in [
            ("oauth.hubspot.state_ttl_ms", self.state_ttl_ms),
            ("oauth.hubspot.refresh_margin_ms", self.refresh_margin_ms),
            ("oauth.hubspot.timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than 0".into()));
            }
        }
        if !self.enabled() {
            return Ok(());
        }
        let secret = super::api::resolve(&self.client_secret)
            .map_err(|problem| invalid("oauth.hubspot.client_secret", problem))?;
        if secret.trim().is_empty() {
            return Err(invalid(
                "oauth.hubspot.client_secret",
                "must be set when oauth.hubspot.client_id is (the app's client secret, e.g. \
                 \"${env:HERALD_HUBSPOT_CLIENT_SECRET}\")"
                    .into(),
            ));
        }
        for (key, value) in [
            ("oauth.hubspot.authorize_url", &self.authorize_url),
            ("oauth.hubspot.token_url", &self.token_url),
            ("oauth.hubspot.redirect_url", &self.redirect_url),
        ] {
            match url::Url::parse(value) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    return Err(invalid(
                        key,
                        format!(
                            "`{value}` is not an http(s) URL; it must be set when oauth.hubspot.client_id is"
                        ),
                    ));
                }
            }
        }
        if self.scopes.trim().is_empty() {
            return Err(invalid(
                "oauth.hubspot.scopes",
                "needs at least one scope (e.g. crm.objects.contacts.write)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;

    fn load(env: &[(&str, &str)]) -> Result<Settings, String> {
        Settings::load_from(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn off_by_default_and_checked_once_a_client_id_is_set() {
        let s = load(&[]).unwrap();
        assert!(!s.oauth.hubspot.enabled());
        let id = ("HERALD__OAUTH__HUBSPOT__CLIENT_ID", "app-1");
        let err = load(&[id]).unwrap_err();
        assert!(err.contains("oauth.hubspot.client_secret"), "{err}");
        let secret = (
            "HERALD__OAUTH__HUBSPOT__CLIENT_SECRET",
            "canary-client-secret",
        );
        let err = load(&[id, secret]).unwrap_err();
        assert!(err.contains("oauth.hubspot.redirect_url"), "{err}");
        assert!(!err.contains("canary-client-secret"), "{err}");
        let redirect = (
            "HERALD__OAUTH__HUBSPOT__REDIRECT_URL",
            "https://herald.example.com/",
        );
        let s = load(&[id, secret, redirect]).unwrap();
        assert_eq!(
            s.oauth.hubspot.callback_url(),
            "https://herald.example.com/oauth/hubspot/callback"
        );
        assert_eq!(
            s.oauth.hubspot.client_secret().expose(),
            "canary-client-secret"
        );
        assert!(!format!("{:?}", s.oauth).contains("canary-client-secret"));
        let scopes = ("HERALD__OAUTH__HUBSPOT__SCOPES", " ");
        let err = load(&[id, secret, redirect, scopes]).unwrap_err();
        assert!(err.contains("oauth.hubspot.scopes"), "{err}");
        let margin = ("HERALD__OAUTH__HUBSPOT__REFRESH_MARGIN_MS", "0");
        let err = load(&[margin]).unwrap_err();
        assert!(err.contains("oauth.hubspot.refresh_margin_ms"), "{err}");
    }
}
