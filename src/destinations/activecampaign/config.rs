//! ActiveCampaign connection settings: the account's API URL and its `Api-Token`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// ActiveCampaign allows 5 requests per second per account, shared by every key on it.
pub const DEFAULT_RATE: RateSpec = RateSpec::new(5, Duration::from_secs(1));

/// Settings beside `id` and `type` in an ActiveCampaign connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The account URL, `https://<account>.api-us1.com` (Settings → Developer); required.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    /// Requests per window; default [`DEFAULT_RATE`].
    rate_limit: Option<RateSpec>,
}

/// `credentials` of an ActiveCampaign connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// The API key from Settings → Developer.
    api_token: Option<SecretString>,
}

/// A validated ActiveCampaign connection.
#[derive(Debug, Clone)]
pub struct ActiveCampaignConfig {
    /// `<base_url>/api/3/`, ready for joining relative paths.
    pub api_base: url::Url,
    /// `credentials.api_token`, sent as `Api-Token`.
    pub api_token: SecretString,
    pub timeout: Duration,
    pub rate: RateSpec,
}

impl ActiveCampaignConfig {
    /// Checks the settings and the token.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let base_url = settings.base_url.ok_or_else(|| {
            FieldError::new(
                "base_url",
                "is required: the account URL https://<account>.api-us1.com (Settings → Developer)",
            )
        })?;
        let rate = RateSpec::given_or(settings.rate_limit, DEFAULT_RATE)?;
        let api_token = credentials
            .api_token
            .filter(|t| !t.expose_secret().trim().is_empty())
            .ok_or_else(|| {
                FieldError::new(
                    "credentials.api_token",
                    "is required: the API key from Settings → Developer",
                )
            })?;
        Ok(Self {
            api_base: api_base(&base_url, ctx.allow_private_networks)?,
            api_token,
            timeout,
            rate,
        })
    }
}

/// `<base_url>/api/3/`. A `base_url` copied with its `/api/3` suffix is accepted as well.
fn api_base(raw: &str, allow_private_networks: bool) -> Result<url::Url, FieldError> {
    let mut url = http::check_url("base_url", raw, allow_private_networks)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(FieldError::new(
            "base_url",
            "must be the account URL without a query, e.g. https://<account>.api-us1.com",
        ));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/api/3").unwrap_or(path);
    url.set_path(&format!("{path}/api/3/"));
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::activecampaign::ActiveCampaign;
    use crate::destinations::connector;
    use crate::model::{ConnectionSpec, Secret};

    fn config(spec: &ConnectionSpec) -> Result<ActiveCampaignConfig, FieldError> {
        let (settings, credentials) = connector::parse::<ActiveCampaign>(spec)?;
        ActiveCampaignConfig::new(settings, credentials, &DestinationContext::for_tests())
    }

    fn spec(settings: serde_json::Value, token: Option<&str>) -> ConnectionSpec {
        ConnectionSpec {
            id: "ac".into(),
            kind: "activecampaign".into(),
            credentials: token
                .map(|t| [("api_token".to_owned(), Secret::new(t))].into())
                .unwrap_or_default(),
            settings: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn the_account_url_gets_the_api_path() {
        for base in [
            "https://acme.api-us1.com",
            "https://acme.api-us1.com/",
            "https://acme.api-us1.com/api/3",
            "https://acme.api-us1.com/api/3/",
        ] {
            let config = config(&spec(serde_json::json!({"base_url": base}), Some("k"))).unwrap();
            assert_eq!(
                config.api_base.as_str(),
                "https://acme.api-us1.com/api/3/",
                "{base}"
            );
            assert_eq!(config.rate, DEFAULT_RATE);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (serde_json::json!({}), Some("k"), "base_url"),
            (
                serde_json::json!({"base_url": "http://10.0.0.1"}),
                Some("k"),
                "base_url",
            ),
            (
                serde_json::json!({"base_url": "https://a.api-us1.com"}),
                None,
                "credentials.api_token",
            ),
            (
                serde_json::json!({"base_url": "https://a.api-us1.com"}),
                Some(" "),
                "credentials.api_token",
            ),
            (
                serde_json::json!({"base_url": "https://a.api-us1.com", "rate_limit": {"requests": 0, "per_ms": 1000}}),
                Some("k"),
                "rate_limit.requests",
            ),
            (
                serde_json::json!({"base_url": "https://a.api-us1.com", "list": 1}),
                Some("k"),
                "list",
            ),
        ];
        for (settings, token, field) in cases {
            let err = config(&spec(settings.clone(), token)).unwrap_err();
            assert_eq!(err.path, field, "{settings}: {err}");
        }
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let config = config(&spec(
            serde_json::json!({"base_url": "https://a.api-us1.com"}),
            Some("sekrit-token"),
        ))
        .unwrap();
        assert!(!format!("{config:?}").contains("sekrit"));
    }
}
