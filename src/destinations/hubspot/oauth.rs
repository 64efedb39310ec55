//! HubSpot's OAuth token endpoint (`POST /oauth/v1/token`, form-encoded): exchanging the code
//! an account owner's approval sends back, and refreshing an access token. Answers are
//! `{"access_token", "refresh_token", "expires_in", "token_type"}`; a refused grant is a 400
//! with `{"status": "BAD_REFRESH_TOKEN" | "BAD_AUTH_CODE" | …, "message": …}`.
//!
//! Reasons carry HubSpot's error code and the HTTP status, never a token or the client secret
//! (the request body holds them; the answer's message is not quoted).

use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::destinations::http;
use crate::destinations::oauth::{OAuthTokens, RefreshError};

/// The operator's HubSpot public app, as the token endpoint needs it.
#[derive(Debug, Clone)]
pub struct App {
    pub token_url: url::Url,
    pub client_id: String,
    pub client_secret: SecretString,
    /// The callback URL the code was issued for; HubSpot checks it matches.
    pub redirect_url: String,
    pub timeout: Duration,
}

/// A grant the token endpoint takes.
enum Grant<'a> {
    Code(&'a str),
    Refresh(&'a SecretString),
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: String,
    refresh_token: String,
    expires_in: u64,
}

#[derive(Deserialize, Default)]
struct ErrorReply {
    #[serde(default)]
    status: String,
    #[serde(default)]
    error: String,
}

/// Exchanges the code of an approval for the connection's first tokens.
pub async fn exchange_code(
    client: &reqwest::Client,
    app: &App,
    code: &str,
) -> Result<OAuthTokens, RefreshError> {
    token_request(client, app, Grant::Code(code)).await
}

/// Exchanges `refresh_token` for fresh tokens.
pub async fn refresh(
    client: &reqwest::Client,
    app: &App,
    refresh_token: &SecretString,
) -> Result<OAuthTokens, RefreshError> {
    token_request(client, app, Grant::Refresh(refresh_token)).await
}

async fn token_request(
    client: &reqwest::Client,
    app: &App,
    grant: Grant<'_>,
) -> Result<OAuthTokens, RefreshError> {
    // Built before the request: the serializer is not `Send`.
    let body = {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("client_id", &app.client_id)
            .append_pair("client_secret", app.client_secret.expose_secret())
            .append_pair("redirect_uri", &app.redirect_url);
        match grant {
            Grant::Code(code) => form
                .append_pair("grant_type", "authorization_code")
                .append_pair("code", code),
            Grant::Refresh(token) => form
                .append_pair("grant_type", "refresh_token")
                .append_pair("refresh_token", token.expose_secret()),
        };
        form.finish()
    };
    let response = client
        .post(app.token_url.clone())
        .timeout(app.timeout)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded;charset=utf-8",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| {
            RefreshError::Unavailable(
                http::transport_failure(&e)
                    .reason()
                    .unwrap_or_else(|| "request failed".into()),
            )
        })?;
    let status = response.status().as_u16();
    let body = http::read_body(response).await.map_err(|e| {
        RefreshError::Unavailable(format!(
            "HTTP {status} with an unreadable body: {}",
            http::redacted_chain(&e)
        ))
    })?;
    classify(status, &body)
}

/// What the token endpoint's answer means.
fn classify(status: u16, body: &str) -> Result<OAuthTokens, RefreshError> {
    if (200..300).contains(&status) {
        let reply: TokenReply = serde_json::from_str(body).map_err(|_| {
            RefreshError::Unavailable(format!(
                "HubSpot's token endpoint answered HTTP {status} without tokens"
            ))
        })?;
        return Ok(OAuthTokens {
            access_token: SecretString::from(reply.access_token),
            refresh_token: SecretString::from(reply.refresh_token),
            expires_at: Utc::now()
                + chrono::Duration::seconds(reply.expires_in.min(i64::MAX as u64) as i64),
        });
    }
    let error: ErrorReply = serde_json::from_str(body).unwrap_or_default();
    let code = [error.status.as_str(), error.error.as_str()]
        .into_iter()
        .find(|c| is_code(c))
        .unwrap_or("no error code");
    let reason = format!("HTTP {status} {code}");
    match status {
        // HubSpot answers a refused grant (bad code, revoked refresh token, wrong client) with
        // 400; an unknown client id or secret with 401.
        400 | 401 | 403 => Err(RefreshError::Refused(reason)),
        _ => Err(RefreshError::Unavailable(reason)),
    }
}

/// Whether `text` looks like an error code (`BAD_REFRESH_TOKEN`, `invalid_grant`), which is
/// safe to quote; anything else might echo the request.
fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_tokens_refusals_or_transient() {
        let ok = classify(
            200,
            r#"{"token_type":"bearer","refresh_token":"r1","access_token":"a1","expires_in":1800}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose_secret(), "a1");
        let left = ok.expires_at - Utc::now();
        assert!(left > chrono::Duration::seconds(1700), "{left}");
        let cases = [
            (
                400,
                r#"{"status":"BAD_REFRESH_TOKEN","message":"missing or unknown refresh token canary-rt"}"#,
                RefreshError::Refused("HTTP 400 BAD_REFRESH_TOKEN".into()),
            ),
            (
                400,
                r#"{"error":"invalid_grant","error_description":"canary-rt"}"#,
                RefreshError::Refused("HTTP 400 invalid_grant".into()),
            ),
            (
                401,
                r#"{"status":"canary-rt is not a code"}"#,
                RefreshError::Refused("HTTP 401 no error code".into()),
            ),
            (
                502,
                "<html>bad gateway</html>",
                RefreshError::Unavailable("HTTP 502 no error code".into()),
            ),
            (
                200,
                r#"{"message":"canary-rt"}"#,
                RefreshError::Unavailable(
                    "HubSpot's token endpoint answered HTTP 200 without tokens".into(),
                ),
            ),
        ];
        for (status, body, expected) in cases {
            let got = classify(status, body).unwrap_err();
            assert_eq!(got, expected, "{status} {body}");
            assert!(!got.to_string().contains("canary"));
        }
    }
}
