//! Mailchimp connection settings: an API key whose suffix names the data centre, the default
//! audience, and what status new members get.

use std::time::Duration;

use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::{DestinationContext, http, parse_settings};
use crate::model::{ConnectionSpec, FieldError};

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
struct Settings {
    /// The audience (list id) rules use unless they give `with.audience_id`.
    audience_id: Option<String>,
    /// Status of members the upsert creates; existing members keep theirs.
    status_if_new: Option<String>,
    /// API base URL (without `/3.0`); only tests and the sandbox change it.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    rate_limit: Option<RateSpec>,
}

/// A validated Mailchimp connection.
#[derive(Clone)]
pub struct MailchimpConfig {
    /// `…/3.0/`, ending with `/` so relative paths join under it.
    pub api_base: url::Url,
    pub api_key: String,
    pub audience_id: Option<String>,
    pub status_if_new: String,
    pub timeout: Duration,
    pub rate: RateSpec,
}

impl std::fmt::Debug for MailchimpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailchimpConfig")
            .field("api_base", &self.api_base.as_str())
            .field("api_key", &"***")
            .field("audience_id", &self.audience_id)
            .field("status_if_new", &self.status_if_new)
            .field("timeout", &self.timeout)
            .field("rate", &self.rate)
            .finish()
    }
}

impl MailchimpConfig {
    /// Reads and checks `spec`.
    pub fn from_spec(spec: &ConnectionSpec, ctx: &DestinationContext) -> Result<Self, FieldError> {
        let settings: Settings = parse_settings(spec)?;
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
        for key in spec.credentials.keys() {
            if key != "api_key" {
                return Err(FieldError::new(
                    format!("credentials.{key}"),
                    "unknown credential; Mailchimp connections take `api_key`",
                ));
            }
        }
        let api_key = spec
            .credentials
            .get("api_key")
            .map(|k| k.expose().trim().to_owned())
            .ok_or_else(|| {
                FieldError::new(
                    "credentials.api_key",
                    "is required: a Mailchimp API key of the form <key>-<dc>, e.g. …-us6",
                )
            })?;
        let dc = data_centre(&api_key).ok_or_else(|| {
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
    use crate::model::Secret;

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

    fn ctx() -> DestinationContext {
        DestinationContext {
            http: reqwest::Client::new(),
            default_timeout: Duration::from_secs(3),
            allow_private_networks: false,
            max_rate_wait: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_data_centre_comes_from_the_key_suffix() {
        let c = MailchimpConfig::from_spec(
            &spec(
                serde_json::json!({"audience_id": "a1b2"}),
                Some("0123abcd-us6"),
            ),
            &ctx(),
        )
        .unwrap();
        assert_eq!(c.api_base.as_str(), "https://us6.api.mailchimp.com/3.0/");
        assert_eq!(c.status_if_new, "subscribed");
        assert!(!format!("{c:?}").contains("0123abcd"));
        let mut allow = ctx();
        allow.allow_private_networks = true;
        let c = MailchimpConfig::from_spec(
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
            let err = MailchimpConfig::from_spec(&spec(settings.clone(), key), &ctx()).unwrap_err();
            assert_eq!(err.path, path, "{settings}: {err}");
            assert!(!err.message.contains("0123abcd"), "{err}");
        }
    }
}
