//! HubSpot connection settings: a private-app token or OAuth tokens, the batch window and the
//! rate limit.

use std::time::Duration;

use chrono::FixedOffset;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::limit::RateSpec;
use crate::destinations::oauth::OAuthTokens;
use crate::destinations::{DestinationContext, http};
use crate::model::FieldError;

/// HubSpot's API.
pub const DEFAULT_API_BASE: &str = "https://api.hubapi.com";

/// How long a connection collects upserts before sending them as one batch request.
pub const DEFAULT_BATCH_WINDOW_MS: u64 = 200;

/// HubSpot's batch endpoints take at most this many inputs.
pub const MAX_BATCH_INPUTS: usize = 100;

/// Free and Starter private apps: 100 requests per rolling 10 s (Professional and Enterprise
/// have 190; set `rate_limit` for those).
pub const DEFAULT_RATE: RateSpec = RateSpec {
    requests: 100,
    per_ms: 10_000,
};

/// Settings beside `id` and `type` in a HubSpot connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// API base URL; only tests and the sandbox change it.
    base_url: Option<String>,
    timeout_ms: Option<u64>,
    /// 0 sends one request per delivery.
    batch_window_ms: Option<u64>,
    rate_limit: Option<RateSpec>,
    /// The portal's offset from UTC (`-05:00`), for the daily limit's reset at local midnight.
    account_utc_offset: Option<String>,
}

/// `credentials` of a HubSpot connection: a private-app `token`, or the OAuth tokens
/// "Connect HubSpot" stores (`access_token`, `refresh_token`, `expires_at`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// A private-app access token (`pat-…`).
    token: Option<SecretString>,
    access_token: Option<SecretString>,
    refresh_token: Option<SecretString>,
    /// When `access_token` expires (RFC 3339).
    expires_at: Option<String>,
}

/// How a connection authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A private-app token, which does not expire.
    Token(SecretString),
    /// A public app's tokens, refreshed before they expire.
    OAuth(OAuthTokens),
}

/// A validated HubSpot connection.
#[derive(Debug, Clone)]
pub struct HubSpotConfig {
    /// Ends with `/`, so relative paths join under it.
    pub api_base: url::Url,
    pub auth: Auth,
    pub timeout: Duration,
    pub batch_window: Duration,
    pub rate: RateSpec,
    /// `None` when unknown: a daily-limit 429 then pauses for an hour at a time.
    pub account_utc_offset: Option<FixedOffset>,
}

impl HubSpotConfig {
    /// Checks the settings and the token.
    pub fn new(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let timeout = ctx.timeout(settings.timeout_ms)?;
        let rate = RateSpec::given_or(settings.rate_limit, DEFAULT_RATE)?;
        let auth = auth(credentials)?;
        let base = settings.base_url.as_deref().unwrap_or(DEFAULT_API_BASE);
        let mut api_base = http::check_url("base_url", base, ctx.allow_private_networks)?;
        if !api_base.path().ends_with('/') {
            api_base.set_path(&format!("{}/", api_base.path()));
        }
        let account_utc_offset = settings
            .account_utc_offset
            .as_deref()
            .map(|raw| {
                parse_utc_offset(raw).ok_or_else(|| {
                    FieldError::new(
                        "account_utc_offset",
                        format!("`{raw}` is not a UTC offset like `-05:00` or `+01:00`"),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            api_base,
            auth,
            timeout,
            batch_window: Duration::from_millis(
                settings.batch_window_ms.unwrap_or(DEFAULT_BATCH_WINDOW_MS),
            ),
            rate,
            account_utc_offset,
        })
    }
}

/// The private-app token, else the OAuth tokens; a connection has one or the other.
fn auth(credentials: Credentials) -> Result<Auth, FieldError> {
    let token = credentials
        .token
        .map(|t| t.expose_secret().trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let oauth = credentials.access_token.is_some()
        || credentials.refresh_token.is_some()
        || credentials.expires_at.is_some();
    match (token, oauth) {
        (Some(_), true) => Err(FieldError::new(
            "credentials.token",
            "is a private-app token; a connection has either it or OAuth tokens, not both",
        )),
        (Some(token), false) => Ok(Auth::Token(token)),
        (None, true) => OAuthTokens::from_fields(
            credentials.access_token,
            credentials.refresh_token,
            credentials.expires_at.as_deref(),
        )
        .map(Auth::OAuth),
        (None, false) => Err(FieldError::new(
            "credentials.token",
            "is required: a HubSpot private-app access token (pat-…), or connect the account \
             with OAuth (GET /oauth/hubspot/start)",
        )),
    }
}

/// Parses `±HH:MM` (or `Z`).
fn parse_utc_offset(raw: &str) -> Option<FixedOffset> {
    let raw = raw.trim();
    if raw == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match raw.as_bytes().first()? {
        b'+' => (1, &raw[1..]),
        b'-' => (-1, &raw[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::connector;
    use crate::destinations::hubspot::HubSpot;
    use crate::model::{ConnectionSpec, Secret};

    fn spec(settings: serde_json::Value, token: Option<&str>) -> ConnectionSpec {
        ConnectionSpec {
            id: "hs".into(),
            kind: "hubspot".into(),
            credentials: token
                .map(|t| [("token".to_owned(), Secret::new(t))].into())
                .unwrap_or_default(),
            settings: settings.as_object().unwrap().clone(),
        }
    }

    fn config(spec: &ConnectionSpec) -> Result<HubSpotConfig, FieldError> {
        let (settings, credentials) = connector::parse::<HubSpot>(spec)?;
        HubSpotConfig::new(settings, credentials, &DestinationContext::for_tests())
    }

    #[test]
    fn defaults_apply_and_the_token_stays_out_of_debug() {
        let c = config(&spec(serde_json::json!({}), Some("pat-na1-s3cret"))).unwrap();
        assert_eq!(c.api_base.as_str(), "https://api.hubapi.com/");
        assert_eq!(c.batch_window, Duration::from_millis(200));
        assert_eq!(c.rate, DEFAULT_RATE);
        assert_eq!(c.account_utc_offset, None);
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (serde_json::json!({}), None, "credentials.token"),
            (
                serde_json::json!({"batch_windw_ms": 5}),
                Some("pat"),
                "batch_windw_ms",
            ),
            (
                serde_json::json!({"timeout_ms": 0}),
                Some("pat"),
                "timeout_ms",
            ),
            (
                serde_json::json!({"timeout_ms": 60_001}),
                Some("pat"),
                "timeout_ms",
            ),
            (
                serde_json::json!({"rate_limit": {"requests": 0, "per_ms": 10}}),
                Some("pat"),
                "rate_limit.requests",
            ),
            (
                serde_json::json!({"base_url": "http://10.0.0.1/"}),
                Some("pat"),
                "base_url",
            ),
            (
                serde_json::json!({"account_utc_offset": "EST"}),
                Some("pat"),
                "account_utc_offset",
            ),
        ];
        for (settings, token, path) in cases {
            let err = config(&spec(settings.clone(), token)).unwrap_err();
            assert_eq!(err.path, path, "{settings}: {err}");
        }
    }

    #[test]
    fn oauth_tokens_are_the_other_way_to_authenticate() {
        let oauth = |fields: &[(&str, &str)]| {
            let mut spec = spec(serde_json::json!({}), None);
            spec.credentials = fields
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect();
            config(&spec)
        };
        let all = [
            ("access_token", "canary-at"),
            ("refresh_token", "canary-rt"),
            ("expires_at", "2026-11-30T02:30:00Z"),
        ];
        let c = oauth(&all).unwrap();
        assert!(
            matches!(&c.auth, Auth::OAuth(t) if t.expires_at.to_rfc3339() == "2026-11-30T02:30:00+00:00")
        );
        assert!(!format!("{c:?}").contains("canary"), "{c:?}");
        let cases: [(&[(&str, &str)], &str); 3] = [
            (&all[..2], "credentials.expires_at"),
            (&all[1..], "credentials.access_token"),
            (
                &[("token", "pat-1"), ("access_token", "a")],
                "credentials.token",
            ),
        ];
        for (fields, path) in cases {
            let err = oauth(fields).unwrap_err();
            assert_eq!(err.path, path, "{err}");
            assert!(!err.message.contains("canary"), "{err}");
        }
        let bad_time = [all[0], all[1], ("expires_at", "soon")];
        assert_eq!(oauth(&bad_time).unwrap_err().path, "credentials.expires_at");
    }

    #[test]
    fn utc_offsets_parse() {
        assert_eq!(parse_utc_offset("-05:00"), FixedOffset::west_opt(5 * 3600));
        assert_eq!(
            parse_utc_offset("+05:30"),
            FixedOffset::east_opt(5 * 3600 + 1800)
        );
        assert_eq!(parse_utc_offset("Z"), FixedOffset::east_opt(0));
        assert_eq!(parse_utc_offset("5"), None);
        assert_eq!(parse_utc_offset("+25:00"), None);
    }
}
