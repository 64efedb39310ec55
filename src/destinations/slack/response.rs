//! Slack response → outcome. Slack's Web API answers application errors with HTTP 200 and
//! `{"ok": false, "error": "<code>"}`; incoming webhooks answer with plain-text codes and real
//! HTTP statuses. Both map through [`classify_error`]:
//!
//! | error code | outcome |
//! |---|---|
//! | `invalid_auth`, `not_authed`, `account_inactive`, `token_revoked`, `token_expired`, `missing_scope`, `no_service`, `invalid_token`, `org_login_required`, `team_added_to_org` | connection broken |
//! | `ratelimited`, `rate_limited` | rate limited |
//! | `internal_error`, `fatal_error`, `service_unavailable`, `request_timeout`, `rollup_error` | retry (Slack has no idempotency: may duplicate) |
//! | anything else (`channel_not_found`, `not_in_channel`, `is_archived`, `invalid_blocks`, `msg_too_long`, `no_text`, `invalid_payload`, …) | permanent |

use std::time::Duration;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// Classifies a Slack error code.
pub fn classify_error(code: &str, retry_after: Option<Duration>) -> Outcome {
    let reason = format!("slack error: {code}");
    match code {
        "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked" | "token_expired"
        | "missing_scope" | "no_service" | "invalid_token" | "org_login_required"
        | "team_added_to_org" => Outcome::ConnectionBroken { reason },
        "ratelimited" | "rate_limited" => Outcome::RateLimited { after: retry_after },
        "internal_error"
        | "fatal_error"
        | "service_unavailable"
        | "request_timeout"
        | "rollup_error" => Outcome::Retry {
            after: retry_after,
            reason,
        },
        _ => Outcome::Permanent { reason },
    }
}

/// Classifies a `chat.postMessage` response.
pub fn classify_web_api(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    if status == 429 {
        return Outcome::RateLimited { after: retry_after };
    }
    if status >= 500 {
        return Outcome::Retry {
            after: retry_after,
            reason: format!("HTTP {status}: {}", excerpt(body)),
        };
    }
    #[derive(serde::Deserialize)]
    struct Reply {
        ok: bool,
        error: Option<String>,
    }
    match serde_json::from_str::<Reply>(body) {
        Ok(Reply { ok: true, .. }) if status == 200 => Outcome::Delivered,
        Ok(Reply {
            ok: false,
            error: Some(code),
        }) => classify_error(&code, retry_after),
        _ => Outcome::Permanent {
            reason: format!("unexpected Slack reply, HTTP {status}: {}", excerpt(body)),
        },
    }
}

/// Classifies an incoming-webhook response (`200 ok`, or a status with a plain-text code).
pub fn classify_webhook(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let code = body.trim();
    match status {
        200..=299 => Outcome::Delivered,
        429 => Outcome::RateLimited { after: retry_after },
        _ if !code.is_empty() && code.len() < 64 && !code.contains(char::is_whitespace) => {
            match classify_error(code, retry_after) {
                Outcome::Permanent { .. } if status >= 500 => Outcome::Retry {
                    after: retry_after,
                    reason: format!("HTTP {status}: slack error: {code}"),
                },
                other => other,
            }
        }
        500..=599 => Outcome::Retry {
            after: retry_after,
            reason: format!("HTTP {status}: {}", excerpt(body)),
        },
        401 | 403 | 404 | 410 => Outcome::ConnectionBroken {
            reason: format!("HTTP {status}: {}", excerpt(body)),
        },
        _ => Outcome::Permanent {
            reason: format!("HTTP {status}: {}", excerpt(body)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_api_ok_false_is_a_failure_with_slacks_error_kept() {
        let cases: &[(&str, &str)] = &[
            (r#"{"ok":true,"channel":"C1","ts":"1.2"}"#, "delivered"),
            (r#"{"ok":false,"error":"channel_not_found"}"#, "permanent"),
            (r#"{"ok":false,"error":"not_in_channel"}"#, "permanent"),
            (r#"{"ok":false,"error":"invalid_blocks"}"#, "permanent"),
            (
                r#"{"ok":false,"error":"invalid_auth"}"#,
                "connection_broken",
            ),
            (
                r#"{"ok":false,"error":"token_revoked"}"#,
                "connection_broken",
            ),
            (
                r#"{"ok":false,"error":"missing_scope","needed":"chat:write"}"#,
                "connection_broken",
            ),
            (r#"{"ok":false,"error":"ratelimited"}"#, "rate_limited"),
            (r#"{"ok":false,"error":"internal_error"}"#, "retry"),
            (r#"{"ok":false,"error":"service_unavailable"}"#, "retry"),
            ("<html>proxy error</html>", "permanent"),
        ];
        for (body, kind) in cases {
            assert_eq!(classify_web_api(200, None, body).kind(), *kind, "{body}");
        }
        assert_eq!(
            classify_web_api(200, None, r#"{"ok":false,"error":"channel_not_found"}"#).reason(),
            Some("slack error: channel_not_found".into())
        );
    }

    #[test]
    fn web_api_http_errors() {
        let after = Some(Duration::from_secs(30));
        assert_eq!(
            classify_web_api(429, after, r#"{"ok":false,"error":"ratelimited"}"#),
            Outcome::RateLimited { after }
        );
        assert_eq!(classify_web_api(503, None, "").kind(), "retry");
    }

    #[test]
    fn incoming_webhook_plain_text_codes() {
        let cases: &[(u16, &str, &str)] = &[
            (200, "ok", "delivered"),
            (400, "invalid_payload", "permanent"),
            (400, "no_text", "permanent"),
            (403, "action_prohibited", "permanent"),
            (403, "invalid_token", "connection_broken"),
            (404, "channel_not_found", "permanent"),
            (404, "no_service", "connection_broken"),
            (410, "channel_is_archived", "permanent"),
            (429, "", "rate_limited"),
            (500, "rollup_error", "retry"),
            (502, "<html>bad gateway</html>", "retry"),
        ];
        for (status, body, kind) in cases {
            assert_eq!(
                classify_webhook(*status, None, body).kind(),
                *kind,
                "{status} {body}"
            );
        }
    }
}
