//! Intercom connection settings: the access token, the region (or a base URL) and the API
//! version.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// The `Intercom-Version` sent unless `api_version` says otherwise.
pub const DEFAULT_API_VERSION: &str = "2.14";

/// Intercom allows 10,000 requests per minute per app, but enforces it in 10-second windows
/// (about 1,666 each): a limiter allowing 10,000 in any minute could still send 2,000 in ten
/// seconds and be refused. So the default is stated per 10 seconds.
pub const DEFAULT_RATE: RateSpec = RateSpec::new(1_666, Duration::from_secs(10));

/// Settings beside `id` and `type` in an Intercom connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `us` (default), `eu` or `au`: where the workspace's data is hosted.
    region: Option<String>,
    /// `Intercom-Version`; default [`DEFAULT_API_VERSION`].
    api_version: Option<String>,
    /// Overrides the regional host; tests and the sandbox set it.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    /// Requests per window; default [`DEFAULT_RATE`].
    rate_limit: Option<RateSpec>,
}

/// `credentials` of an Intercom connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// An access token of the Intercom app.
    token: Option<SecretString>,
}

/// A validated Intercom connection.
#[derive(Debug, Clone)]
pub struct IntercomConfig {
    /// The API root with a trailing `/`, ready for joining relative paths.
    pub api_base: url::Url,
    /// `credentials.token`, sent as a Bearer token.
    pub token: SecretString,
    pub api_version: String,
    pub timeout: Duration,
    pub rate: RateSpec,
}

/// The API host of a region.
fn region_host(region: &str) -> Option<&'static str> {
    match region {
        "us" => Some("https://api.intercom.io/"),
        "eu" => Some("https://api.eu.intercom.io/"),
        "au" => Some("https://api.au.intercom.io/"),
        _ => None,
    }
}

impl IntercomConfig {
    /// Checks the settings and the token.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let rate = RateSpec::given_or(settings.rate_limit, DEFAULT_RATE)?;
        let token = credentials
            .token
            .filter(|t| !t.expose_secret().trim().is_empty())
            .ok_or_else(|| {
                FieldError::new(
                    "credentials.token",
                    "is required: an access token of the Intercom app",
                )
            })?;
        let region = settings.region.as_deref().unwrap_or("us");
        let host = region_host(region).ok_or_else(|| {
            FieldError::new(
                "region",
                format!("`{region}` is not an Intercom region; use us, eu or au"),
            )
        })?;
        let mut api_base = match &settings.base_url {
            Some(base) => http::check_url("base_url", base, ctx.allow_private_networks)?,
            // The regional hosts are constants and parse.
            None => url::Url::parse(host).expect("regional host"),
        };
        if !api_base.path().ends_with('/') {
            api_base.set_path(&format!("{}/", api_base.path()));
        }
        let api_version = settings
            .api_version
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        let well_formed = api_version == "Unstable"
            || api_version.split_once('.').is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()))
            });
        if !well_formed {
            return Err(FieldError::new(
                "api_version",
                format!(
                    "`{api_version}` is not an Intercom API version such as {DEFAULT_API_VERSION}"
                ),
            ));
        }
        Ok(Self {
            api_base,
            token,
            api_version,
            timeout,
            rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::connector;
    use crate::destinations::intercom::Intercom;
    use crate::model::{ConnectionSpec, Secret};
    use serde_json::json;

    fn config(spec: &ConnectionSpec) -> Result<IntercomConfig, FieldError> {
        let (settings, credentials) = connector::parse::<Intercom>(spec)?;
        IntercomConfig::new(settings, credentials, &DestinationContext::for_tests())
    }

    fn spec(settings: serde_json::Value, token: Option<&str>) -> ConnectionSpec {
        ConnectionSpec {
            id: "ic".into(),
            kind: "intercom".into(),
            credentials: token
                .map(|t| [("token".to_owned(), Secret::new(t))].into())
                .unwrap_or_default(),
            settings: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn the_region_picks_the_host_and_base_url_overrides_it() {
        let cases = [
            (json!({}), "https://api.intercom.io/"),
            (json!({"region": "eu"}), "https://api.eu.intercom.io/"),
            (json!({"region": "au"}), "https://api.au.intercom.io/"),
            (
                json!({"region": "eu", "base_url": "https://proxy.example.com/intercom"}),
                "https://proxy.example.com/intercom/",
            ),
        ];
        for (settings, base) in cases {
            let config = config(&spec(settings, Some("tok"))).unwrap();
            assert_eq!(config.api_base.as_str(), base);
            assert_eq!(config.api_version, DEFAULT_API_VERSION);
            assert_eq!(config.rate, DEFAULT_RATE);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"region": "mars"}), Some("t"), "region"),
            (json!({"api_version": "latest"}), Some("t"), "api_version"),
            (
                json!({"base_url": "http://127.0.0.1:9"}),
                Some("t"),
                "base_url",
            ),
            (json!({}), None, "credentials.token"),
            (json!({}), Some(""), "credentials.token"),
            (
                json!({"rate_limit": {"requests": 1, "per_ms": 0}}),
                Some("t"),
                "rate_limit.per_ms",
            ),
            (json!({"tag": "x"}), Some("t"), "tag"),
        ];
        for (settings, token, field) in cases {
            let err = config(&spec(settings.clone(), token)).unwrap_err();
            assert_eq!(err.path, field, "{settings}: {err}");
        }
        let ok = config(&spec(json!({"api_version": "2.11"}), Some("t")));
        assert_eq!(ok.unwrap().api_version, "2.11");
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let config = config(&spec(json!({}), Some("sekrit-token"))).unwrap();
        assert!(!format!("{config:?}").contains("sekrit"));
    }
}
