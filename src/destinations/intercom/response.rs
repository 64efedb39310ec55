//! Intercom response → outcome. Errors come in one envelope,
//! `{"type": "error.list", "request_id": …, "errors": [{"code", "message", "field"?}]}`.
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx JSON | the step succeeded |
//! | 401 `unauthorized`, `token_revoked` | connection broken (Intercom tokens do not refresh) |
//! | 403 `api_plan_restricted` and other 403s | connection broken (the workspace's plan or the app's access: every call would fail) |
//! | 400 `intercom_version_invalid` | connection broken (the `api_version` setting) |
//! | 400 `parameter_invalid`, 422 `data_invalid`, other 4xx | permanent, naming the parameter |
//! | 404 `not_found` | permanent (after the action looked the contact up afresh) |
//! | 409 `conflict` "… already exists with id=…" | the action uses that id; otherwise retry in 60 s |
//! | 429 `rate_limit_exceeded` | rate limited until `X-RateLimit-Reset` (or `Retry-After`) |
//! | 408, 5xx | retry |

use std::time::Duration;

use serde_json::Value;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// How long to wait before retrying a 409 whose contact id could not be read.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);

/// What came back from one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `Retry-After`, if sent.
    pub retry_after: Option<Duration>,
    /// Time until `X-RateLimit-Reset`, if sent.
    pub reset_after: Option<Duration>,
    pub body: String,
}

/// One entry of the error envelope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

impl Reply {
    /// The errors of the envelope (none when the body is not one).
    pub fn errors(&self) -> Vec<ApiError> {
        let Ok(v) = serde_json::from_str::<Value>(&self.body) else {
            return Vec::new();
        };
        v["errors"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| ApiError {
                        code: e["code"].as_str().unwrap_or_default().to_owned(),
                        message: e["message"].as_str().unwrap_or_default().to_owned(),
                        field: e["field"].as_str().map(str::to_owned),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The contact id in a 409 "A contact matching those details already exists with id=…".
    pub fn conflict_id(&self) -> Option<String> {
        if self.status != 409 {
            return None;
        }
        self.errors().iter().find_map(|e| {
            let (_, rest) = e.message.split_once("id=")?;
            let id: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            (!id.is_empty()).then_some(id)
        })
    }

    /// A 404 saying the contact (`User Not Found`) is gone, rather than the tag.
    pub fn is_user_not_found(&self) -> bool {
        self.status == 404
            && self
                .errors()
                .iter()
                .any(|e| e.message.to_lowercase().contains("user not found"))
    }

    /// A 404 for something other than the contact (the tag: `Resource Not Found`).
    pub fn is_resource_not_found(&self) -> bool {
        self.status == 404 && !self.is_user_not_found()
    }

    /// Intercom's own words: `code: message` per error, with the parameter when named.
    fn describe(&self) -> String {
        let errors = self.errors();
        if errors.is_empty() {
            return excerpt(&self.body);
        }
        errors
            .iter()
            .map(|e| match &e.field {
                Some(f) => format!("{} (parameter `{f}`): {}", e.code, e.message),
                None => format!("{}: {}", e.code, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn has_code(&self, codes: &[&str]) -> bool {
        self.errors()
            .iter()
            .any(|e| codes.contains(&e.code.as_str()))
    }
}

/// Classifies one reply: the parsed body of a success, or the outcome of a failure.
pub fn classify(reply: &Reply) -> Result<Value, Outcome> {
    let status = reply.status;
    let describe = || reply.describe();
    match status {
        200..=299 => {
            if reply.body.trim().is_empty() {
                return Ok(Value::Null);
            }
            serde_json::from_str(&reply.body).map_err(|_| Outcome::Retry {
                after: None,
                reason: format!(
                    "Intercom answered HTTP {status} with a body that is not JSON: {}",
                    excerpt(&reply.body)
                ),
            })
        }
        401 => Err(Outcome::ConnectionBroken {
            reason: format!(
                "Intercom refused the access token (HTTP 401 {}); check credentials.token",
                describe()
            ),
        }),
        403 => Err(Outcome::ConnectionBroken {
            reason: format!(
                "Intercom refused access (HTTP 403 {}); the workspace's plan or the app's \
                 permissions do not allow this",
                describe()
            ),
        }),
        400 if reply.has_code(&["intercom_version_invalid"]) => Err(Outcome::ConnectionBroken {
            reason: format!(
                "Intercom does not know the API version (HTTP 400 {}); check api_version",
                describe()
            ),
        }),
        404 => Err(Outcome::Permanent {
            reason: format!("Intercom: not found (HTTP 404 {})", describe()),
        }),
        409 => Err(Outcome::Retry {
            after: Some(CONFLICT_RETRY),
            reason: format!("Intercom: conflict (HTTP 409 {})", describe()),
        }),
        429 => Err(Outcome::RateLimited {
            after: reply.reset_after.or(reply.retry_after),
        }),
        408 | 500..=599 => Err(Outcome::Retry {
            after: reply.retry_after,
            reason: format!("Intercom HTTP {status}: {}", describe()),
        }),
        _ => Err(Outcome::Permanent {
            reason: format!(
                "Intercom rejected the request (HTTP {status} {})",
                describe()
            ),
        }),
    }
}

/// The wait until an `X-RateLimit-Reset` Unix timestamp (at least a second).
pub fn until_reset(reset_unix: i64, now_unix: i64) -> Duration {
    Duration::from_secs(reset_unix.saturating_sub(now_unix).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            retry_after: None,
            reset_after: None,
            body: body.to_owned(),
        }
    }

    fn envelope(code: &str, message: &str) -> String {
        serde_json::json!({"type": "error.list", "request_id": "b3c5", "errors": [{"code": code, "message": message}]})
            .to_string()
    }

    fn outcome(r: &Reply) -> Outcome {
        classify(r).expect_err("a failure")
    }

    #[test]
    fn success_bodies_are_returned() {
        let r = reply(
            200,
            r#"{"type":"contact","id":"6657a1b2","external_id":"u_123"}"#,
        );
        assert_eq!(classify(&r).unwrap()["id"], "6657a1b2");
        assert_eq!(classify(&reply(202, "")).unwrap(), Value::Null);
        assert_eq!(outcome(&reply(200, "<html>")).kind(), "retry");
    }

    #[test]
    fn auth_failures_break_the_connection() {
        let cases = [
            (
                401,
                envelope("unauthorized", "Access Token Invalid"),
                "Access Token Invalid",
            ),
            (
                401,
                envelope("token_revoked", "Token revoked"),
                "token_revoked",
            ),
            (
                403,
                envelope("api_plan_restricted", "Active subscription needed."),
                "Active subscription",
            ),
            (
                400,
                envelope(
                    "intercom_version_invalid",
                    "The requested version could not be found",
                ),
                "api_version",
            ),
        ];
        for (status, body, needle) in cases {
            let Outcome::ConnectionBroken { reason } = outcome(&reply(status, &body)) else {
                panic!("{status} {body}");
            };
            assert!(reason.contains(needle), "{reason}");
        }
    }

    #[test]
    fn invalid_parameters_are_permanent_and_named() {
        let r = reply(
            400,
            &envelope("parameter_invalid", "Custom attribute 'x' does not exist"),
        );
        assert_eq!(
            outcome(&r),
            Outcome::Permanent {
                reason: "Intercom rejected the request (HTTP 400 parameter_invalid: Custom \
                         attribute 'x' does not exist)"
                    .into()
            }
        );
        let with_field = reply(
            422,
            r#"{"type":"error.list","errors":[{"code":"data_invalid","message":"is invalid","field":"email"}]}"#,
        );
        let Outcome::Permanent { reason } = outcome(&with_field) else {
            panic!()
        };
        assert!(reason.contains("parameter `email`"), "{reason}");
        assert_eq!(outcome(&reply(406, "")).kind(), "permanent");
        assert_eq!(
            outcome(&reply(
                400,
                &envelope("parameter_invalid", "invalid tag parameters")
            ))
            .kind(),
            "permanent"
        );
    }

    #[test]
    fn a_conflict_names_the_existing_contact() {
        let r = reply(
            409,
            &envelope(
                "conflict",
                "A contact matching those details already exists with id=5f0c3d7e1a2b",
            ),
        );
        assert_eq!(r.conflict_id().as_deref(), Some("5f0c3d7e1a2b"));
        // Without an id it is retried later, as both peer projects do.
        let bare = reply(
            409,
            &envelope(
                "conflict",
                "A contact matching those details already exists",
            ),
        );
        assert_eq!(bare.conflict_id(), None);
        let Outcome::Retry { after, .. } = outcome(&bare) else {
            panic!()
        };
        assert_eq!(after, Some(CONFLICT_RETRY));
    }

    #[test]
    fn not_found_tells_the_contact_from_the_tag() {
        let user = reply(404, &envelope("not_found", "User Not Found"));
        assert!(user.is_user_not_found() && !user.is_resource_not_found());
        let tag = reply(404, &envelope("not_found", "Resource Not Found"));
        assert!(tag.is_resource_not_found());
        let Outcome::Permanent { reason } = outcome(&user) else {
            panic!()
        };
        assert!(reason.contains("User Not Found"), "{reason}");
    }

    #[test]
    fn rate_limits_wait_for_the_reset_and_server_errors_retry() {
        let mut r = reply(
            429,
            &envelope(
                "rate_limit_exceeded",
                "Exceeded rate limit of 1667 in 10_seconds",
            ),
        );
        assert_eq!(outcome(&r), Outcome::RateLimited { after: None });
        r.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            outcome(&r),
            Outcome::RateLimited {
                after: Some(Duration::from_secs(3))
            }
        );
        r.reset_after = Some(until_reset(1_487_332_520, 1_487_332_513));
        assert_eq!(
            outcome(&r),
            Outcome::RateLimited {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(until_reset(100, 200), Duration::from_secs(1));
        for status in [408, 500, 502, 503] {
            let r = reply(
                status,
                &envelope(
                    "service_unavailable",
                    "Sorry, the API service is temporarily unavailable",
                ),
            );
            assert_eq!(outcome(&r).kind(), "retry", "{status}");
        }
    }
}
