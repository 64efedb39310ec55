//! Mailchimp connection settings: an API key whose suffix names the data centre, the default
//! audience, and what status new members get.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// Mailchimp allows 10 simultaneous connections per account, across all apps, and no more.
pub const MAX_CONCURRENT_REQUESTS: usize = 10;

/// Mailchimp has no request quota, only the concurrency limit. This ceiling (10 connections at
/// ~200 ms a call) never binds in normal use; it is there so a 429 can slow the connection down.
pub const DEFAULT_RATE: RateSpec = RateSpec {
    requests: 50,
    per_ms: 1_000,
};

/// The values Mailchimp accepts for `status_if_new`.
pub const STATUSES: &[&str] = &[
    "subscribed",
    "unsubscribed",
    "cleaned",
    "pending",
    "transactional",
];

/// Settings beside `id` and `type` in a Mailchimp connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The audience (list id) rules use unless they give `with.audience_id`.
    audience_id: Option<String>,
    /// Status of members the upsert creates; existing members keep theirs.
    status_if_new: Option<String>,
    /// API base URL (without `/3.0`); only tests and the sandbox change it.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    rate_limit: Option<RateSpec>,
}

/// `credentials` of a Mailchimp connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// An API key, `<key>-<dc>`.
    api_key: Option<SecretString>,
}

/// A validated Mailchimp connection.
#[derive(Debug, Clone)]
pub struct MailchimpConfig {
    /// `…/3.0/`, ending with `/` so relative paths join under it.
    pub api_base: url::Url,
    pub api_key: SecretString,
    pub audience_id: Option<String>,
    pub status_if_new: String,
    pub timeout: Duration,
    pub rate: RateSpec,
}

impl MailchimpConfig {
    /// Checks the settings and the API key, whose suffix names the data centre.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let rate = RateSpec::given_or(settings.rate_limit, DEFAULT_RATE)?;
        let status_if_new = settings
            .status_if_new
            .unwrap_or_else(|| "subscribed".to_owned());
        check_status("status_if_new", &status_if_new)?;
        if settings
            .audience_id
            .as_deref()
            .is_some_and(|a| !is_audience_id(a))
        {
            return Err(FieldError::new(
                "audience_id",
                "must be a Mailchimp audience (list) id: letters and digits",
            ));
        }
        let api_key: SecretString = credentials
            .api_key
            .map(|k| k.expose_secret().trim().into())
            .ok_or_else(|| {
                FieldError::new(
                    "credentials.api_key",
                    "is required: a Mailchimp API key of the form <key>-<dc>, e.g. …-us6",
                )
            })?;
        let dc = data_centre(api_key.expose_secret()).ok_or_else(|| {
            FieldError::new(
                "credentials.api_key",
                "has no data-centre suffix: a Mailchimp API key looks like <key>-<dc> (e.g. \
                 …-us6); copy the whole key from Account → Extras → API keys",
            )
        })?;
        let base = match settings.base_url {
            Some(base) => base,
            None => format!("https://{dc}.api.mailchimp.com"),
        };
        let mut api_base = http::check_url("base_url", &base, ctx.allow_private_networks)?;
        let path = api_base.path().trim_end_matches('/').to_owned();
        api_base.set_path(&format!("{path}/3.0/"));
        Ok(Self {
            api_base,
            api_key,
            audience_id: settings.audience_id,
            status_if_new,
            timeout,
            rate,
        })
    }
}

/// Checks a `status_if_new` value.
pub fn check_status(field: &str, status: &str) -> Result<(), FieldError> {
    if STATUSES.contains(&status) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{status}` is not one of {}", STATUSES.join(", ")),
        ))
    }
}

/// Whether `id` can be a list id (it goes into a URL path).
pub fn is_audience_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The data centre named by an API key's suffix: `…-us6` → `us6`.
pub fn data_centre(api_key: &str) -> Option<&str> {
    let (key, dc) = api_key.rsplit_once('-')?;
    let ok = !key.is_empty()
        && !dc.is_empty()
        && dc
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && dc.chars().any(|c| c.is_ascii_digit());
    ok.then_some(dc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::connector;
    use crate::destinations::mailchimp::Mailchimp;
    use crate::model::{ConnectionSpec, Secret};

    fn spec(settings: serde_json::Value, key: Option<&str>) -> ConnectionSpec {
        ConnectionSpec {
            id: "mc".into(),
            kind: "mailchimp".into(),
            credentials: key
                .map(|k| [("api_key".to_owned(), Secret::new(k))].into())
                .unwrap_or_default(),
            settings: settings.as_object().unwrap().clone(),
        }
    }

    fn config(
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<MailchimpConfig, FieldError> {
        let (settings, credentials) = connector::parse::<Mailchimp>(spec)?;
        MailchimpConfig::new(settings, credentials, ctx)
    }

    #[test]
    fn the_data_centre_comes_from_the_key_suffix() {
        let c = config(
            &spec(
                serde_json::json!({"audience_id": "a1b2"}),
                Some("0123abcd-us6"),
            ),
            &DestinationContext::for_tests(),
        )
        .unwrap();
        assert_eq!(c.api_base.as_str(), "https://us6.api.mailchimp.com/3.0/");
        assert_eq!(c.status_if_new, "subscribed");
        assert!(!format!("{c:?}").contains("0123abcd"));
        let allow = DestinationContext::for_local_tests();
        let c = config(
            &spec(
                serde_json::json!({"base_url": "http://127.0.0.1:9/mailchimp"}),
                Some("k-us6"),
            ),
            &allow,
        )
        .unwrap();
        assert_eq!(c.api_base.as_str(), "http://127.0.0.1:9/mailchimp/3.0/");
        assert_eq!(data_centre("abc-us21"), Some("us21"));
        assert_eq!(data_centre("abc"), None);
        assert_eq!(data_centre("abc-"), None);
        assert_eq!(data_centre("-us6"), None);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (serde_json::json!({}), None, "credentials.api_key"),
            (
                serde_json::json!({}),
                Some("0123abcd"),
                "credentials.api_key",
            ),
            (
                serde_json::json!({"status_if_new": "active"}),
                Some("k-us6"),
                "status_if_new",
            ),
            (
                serde_json::json!({"audience_id": "../x"}),
                Some("k-us6"),
                "audience_id",
            ),
            (
                serde_json::json!({"timeout_ms": 0}),
                Some("k-us6"),
                "timeout_ms",
            ),
            (
                serde_json::json!({"rate_limit": {"requests": 1, "per_ms": 0}}),
                Some("k-us6"),
                "rate_limit.per_ms",
            ),
        ];
        for (settings, key, path) in cases {
            let err = config(
                &spec(settings.clone(), key),
                &DestinationContext::for_tests(),
            )
            .unwrap_err();
            assert_eq!(err.path, path, "{settings}: {err}");
            assert!(!err.message.contains("0123abcd"), "{err}");
        }
    }
}
