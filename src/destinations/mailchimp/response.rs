//! Mailchimp response → outcome. Errors come as `application/problem+json`
//! (`{"type","title","status","detail","instance","errors"}`); the `title` decides.
//!
//! | status | title | outcome |
//! |---|---|---|
//! | 2xx (200 member, 204 tags) | | delivered |
//! | 400 | `Member In Compliance State`, `Forgotten Email Not Subscribed`, `Invalid Resource` (fake email, merge fields, signup throttle), `Member Exists`, others | permanent |
//! | 401 | `API Key Invalid`, `API Key Missing` | connection broken |
//! | 403 | `Forbidden` (wrong data centre, disabled user) | connection broken |
//! | 403 without a body | | rate limited (Mailchimp's bare throttling answer) |
//! | 404 | `Resource Not Found` | permanent, naming the audience (`add_tags` first creates the member, see `mod.rs`) |
//! | 429 | `Too Many Requests` | rate limited |
//! | 503 | `ComplianceRelated` (method disabled) | connection broken |
//! | 5xx | | retry |

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// Mailchimp's problem document; every field may be missing.
#[derive(Debug, Default, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub errors: Vec<Value>,
}

impl Problem {
    /// `title: detail (field: message, …)`.
    fn describe(&self, body: &str) -> String {
        if self.title.is_empty() && self.detail.is_empty() {
            return excerpt(body);
        }
        let mut out = format!("{}: {}", self.title, self.detail);
        let fields: Vec<String> = self
            .errors
            .iter()
            .filter_map(|e| {
                let field = e.get("field")?.as_str()?;
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                Some(format!("{field}: {message}"))
            })
            .collect();
        if !fields.is_empty() {
            out.push_str(&format!(" ({})", fields.join("; ")));
        }
        excerpt(&out)
    }
}

/// Classifies a response to a call on audience `audience_id`.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    audience_id: &str,
) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Delivered;
    }
    let problem: Problem = serde_json::from_str(body).unwrap_or_default();
    let what = problem.describe(body);
    match status {
        400 => Outcome::Permanent {
            reason: match problem.title.as_str() {
                "Member In Compliance State" => format!(
                    "the member unsubscribed, bounced or complained; Mailchimp will not \
                     subscribe them again ({what})"
                ),
                "Forgotten Email Not Subscribed" => format!(
                    "the member was permanently deleted; only they can re-subscribe ({what})"
                ),
                _ => format!("Mailchimp refused the member: {what}"),
            },
        },
        401 => Outcome::ConnectionBroken {
            reason: format!(
                "Mailchimp rejected the API key (HTTP 401 {what}); check credentials.api_key and \
                 its data-centre suffix"
            ),
        },
        403 if body.trim().is_empty() => Outcome::RateLimited { after: retry_after },
        403 => Outcome::ConnectionBroken {
            reason: format!(
                "Mailchimp forbids the call (HTTP 403 {what}); the key's user may be disabled or \
                 the key belongs to another data centre"
            ),
        },
        404 => Outcome::Permanent {
            reason: format!(
                "audience `{audience_id}` was not found in this Mailchimp account (HTTP 404 {what}); \
                 check audience_id"
            ),
        },
        429 => Outcome::RateLimited { after: retry_after },
        503 if problem.title == "ComplianceRelated" => Outcome::ConnectionBroken {
            reason: format!("Mailchimp disabled this method for the account (HTTP 503 {what})"),
        },
        500..=599 => Outcome::Retry {
            after: retry_after,
            reason: format!("HTTP {status}: {what}"),
        },
        _ => Outcome::Permanent {
            reason: format!("HTTP {status}: {what}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, title: &str, detail: &str) -> String {
        serde_json::json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title, "status": status, "detail": detail,
            "instance": "cbb66395-2b2b-4a5e-8a36-f8f2bd4bd1d4"
        })
        .to_string()
    }

    fn kind(status: u16, body: &str) -> &'static str {
        classify(status, None, body, "aud1").kind()
    }

    #[test]
    fn success_is_200_or_204() {
        assert_eq!(
            kind(200, r#"{"id":"3e34","status":"subscribed"}"#),
            "delivered"
        );
        assert_eq!(kind(204, ""), "delivered");
    }

    #[test]
    fn member_errors_are_permanent_with_mailchimps_words() {
        let cases = [
            (
                "Member In Compliance State",
                "ada@example.com is in a compliance state due to unsubscribe, bounce, or compliance review and cannot be subscribed.",
                "unsubscribed, bounced",
            ),
            (
                "Forgotten Email Not Subscribed",
                "ada@example.com was permanently deleted and cannot be re-imported. The contact must re-subscribe to get back on the list.",
                "permanently deleted",
            ),
            (
                "Invalid Resource",
                "x@example looks fake or invalid, please enter a real email address.",
                "looks fake",
            ),
            (
                "Invalid Resource",
                "ada@example.com has signed up to a lot of lists very recently; we're not allowing more signups for now",
                "signed up to a lot",
            ),
            (
                "Member Exists",
                "ada@example.com is already a list member. Use PUT to insert or update list members.",
                "Member Exists",
            ),
        ];
        for (title, detail, expect) in cases {
            let o = classify(400, None, &problem(400, title, detail), "aud1");
            assert_eq!(o.kind(), "permanent", "{title}");
            assert!(o.reason().unwrap().contains(expect), "{o:?}");
        }
        let merge = serde_json::json!({"title": "Invalid Resource", "status": 400,
            "detail": "Your merge fields were invalid.",
            "errors": [{"field": "LTV", "message": "Please enter a number"}]})
        .to_string();
        assert_eq!(
            classify(400, None, &merge, "aud1").reason().unwrap(),
            "Mailchimp refused the member: Invalid Resource: Your merge fields were invalid. \
             (LTV: Please enter a number)"
        );
    }

    #[test]
    fn key_errors_break_the_connection() {
        let o = classify(
            401,
            None,
            &problem(
                401,
                "API Key Invalid",
                "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
            ),
            "aud1",
        );
        assert_eq!(o.kind(), "connection_broken");
        assert!(o.reason().unwrap().contains("credentials.api_key"));
        assert_eq!(
            kind(
                403,
                &problem(
                    403,
                    "Forbidden",
                    "The API key provided is linked to datacenter 'us6'"
                )
            ),
            "connection_broken"
        );
        assert_eq!(
            kind(
                503,
                &problem(503, "ComplianceRelated", "This method has been disabled.")
            ),
            "connection_broken"
        );
    }

    #[test]
    fn an_unknown_list_is_permanent_and_names_the_audience() {
        let o = classify(
            404,
            None,
            &problem(
                404,
                "Resource Not Found",
                "The requested resource could not be found.",
            ),
            "missing123",
        );
        assert_eq!(o.kind(), "permanent");
        assert!(
            o.reason().unwrap().contains("audience `missing123`"),
            "{o:?}"
        );
    }

    #[test]
    fn throttling_and_server_errors() {
        let body = problem(
            429,
            "Too Many Requests",
            "You have exceeded the limit of 10 simultaneous connections.",
        );
        assert_eq!(
            classify(429, None, &body, "a"),
            Outcome::RateLimited { after: None }
        );
        let after = Some(Duration::from_secs(5));
        assert_eq!(
            classify(429, after, "", "a"),
            Outcome::RateLimited { after }
        );
        assert_eq!(kind(403, ""), "rate_limited");
        assert_eq!(
            kind(500, &problem(500, "Internal Server Error", "")),
            "retry"
        );
        assert_eq!(kind(503, "<html>Request Blocked</html>"), "retry");
        assert_eq!(kind(502, ""), "retry");
        assert_eq!(
            kind(405, &problem(405, "Method Not Allowed", "")),
            "permanent"
        );
    }
}
