//! ActiveCampaign response → outcome.
//!
//! | answer | outcome |
//! |---|---|
//! | 2xx JSON | the step succeeded |
//! | 2xx `text/html` (the account's login page: the token was not taken) | connection broken |
//! | 2xx `{"succeeded": 0, …}` | permanent, with AC's message |
//! | 401, 403 | connection broken (AC answers 403 for a missing or invalid `Api-Token`) |
//! | 404 `{"message": "No Result found for …"}` | permanent (unknown list, contact or tag) |
//! | 422 `{"errors": [{title, code, source.pointer}]}` | permanent, naming the field (`email`) |
//! | 422 `code: duplicate` on `POST /tags` or `/contactTags` | handled by the action (already there) |
//! | 429 | rate limited, after `Retry-After` |
//! | 408, 5xx (Cloudflare 52x with `retry_after` in its body) | retry |

use std::time::Duration;

use serde_json::Value;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// What came back from one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// The `Content-Type` said HTML.
    pub html: bool,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// A 422 whose errors say the thing exists already (a tag name, a tag on a contact).
    pub fn is_duplicate(&self) -> bool {
        self.status == 422
            && self.json().is_some_and(|v| {
                errors(&v).iter().any(|e| {
                    e["code"] == "duplicate"
                        || e["title"]
                            .as_str()
                            .is_some_and(|t| t.to_lowercase().contains("already"))
                })
            })
    }
}

fn errors(v: &Value) -> Vec<Value> {
    v.get("errors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// AC's own words: the `errors[]` list (naming each field) or the `message`.
fn describe(reply: &Reply) -> String {
    let Some(v) = reply.json() else {
        return excerpt(&reply.body);
    };
    let list = errors(&v);
    if !list.is_empty() {
        return list
            .iter()
            .map(|e| {
                let text = ["title", "detail"]
                    .iter()
                    .filter_map(|k| e[*k].as_str())
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": ");
                let field = e["source"]["pointer"]
                    .as_str()
                    .and_then(|p| p.rsplit('/').next())
                    .filter(|f| !f.is_empty());
                let code = e["code"]
                    .as_str()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                match field {
                    Some(f) => format!("{f}: {text}{code}"),
                    None => format!("{text}{code}"),
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    match v.get("message").and_then(Value::as_str) {
        Some(m) => m.to_owned(),
        None => excerpt(&reply.body),
    }
}

/// Classifies one reply: the parsed body of a success, or the outcome of a failure.
pub fn classify(reply: &Reply) -> Result<Value, Outcome> {
    let status = reply.status;
    match status {
        200..=299 => {
            if reply.html || reply.body.trim_start().starts_with('<') {
                return Err(Outcome::ConnectionBroken {
                    reason: format!(
                        "ActiveCampaign answered HTTP {status} with an HTML page (its login page) \
                         instead of JSON: the Api-Token was not accepted, or base_url is not the \
                         account's API URL (Settings → Developer)"
                    ),
                });
            }
            let value = if reply.body.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&reply.body).map_err(|_| Outcome::Retry {
                    after: None,
                    reason: format!(
                        "ActiveCampaign answered HTTP {status} with a body that is not JSON: {}",
                        excerpt(&reply.body)
                    ),
                })?
            };
            if matches!(value.get("succeeded"), Some(s) if s == 0 || s == "0") {
                return Err(Outcome::Permanent {
                    reason: format!(
                        "ActiveCampaign reported a failure (succeeded: 0): {}",
                        describe(reply)
                    ),
                });
            }
            Ok(value)
        }
        401 | 403 => Err(Outcome::ConnectionBroken {
            reason: format!(
                "ActiveCampaign refused the Api-Token (HTTP {status}: {}); check credentials.api_token",
                describe(reply)
            ),
        }),
        404 => Err(Outcome::Permanent {
            reason: format!("ActiveCampaign: not found (HTTP 404): {}", describe(reply)),
        }),
        429 => Err(Outcome::RateLimited {
            after: reply.retry_after,
        }),
        408 | 500..=599 => Err(Outcome::Retry {
            after: reply.retry_after.or_else(|| body_retry_after(reply)),
            reason: format!("ActiveCampaign HTTP {status}: {}", describe(reply)),
        }),
        _ => Err(Outcome::Permanent {
            reason: format!(
                "ActiveCampaign rejected the request (HTTP {status}): {}",
                describe(reply)
            ),
        }),
    }
}

/// Cloudflare's JSON error pages carry `retry_after` (seconds) in the body.
fn body_retry_after(reply: &Reply) -> Option<Duration> {
    let v = reply.json()?;
    v.get("retry_after")?.as_u64().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            html: false,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    fn kind(r: &Reply) -> &'static str {
        match classify(r) {
            Ok(_) => "ok",
            Err(o) => o.kind(),
        }
    }

    #[test]
    fn success_bodies_are_returned() {
        let body = r#"{"fieldValues":[],"contact":{"id":"113","email":"ada@example.com"}}"#;
        assert_eq!(classify(&reply(201, body)).unwrap()["contact"]["id"], "113");
        assert_eq!(classify(&reply(200, body)).unwrap()["contact"]["id"], "113");
    }

    #[test]
    fn an_html_login_page_in_a_2xx_is_a_broken_connection() {
        let page = "<!DOCTYPE html><html><head><title>Login</title></head></html>";
        let mut r = reply(200, page);
        r.html = true;
        let Err(Outcome::ConnectionBroken { reason }) = classify(&r) else {
            panic!("{:?}", classify(&r));
        };
        assert!(
            reason.contains("HTML page") && reason.contains("Api-Token"),
            "{reason}"
        );
        // Even when the content type lies.
        assert_eq!(kind(&reply(200, page)), "connection_broken");
    }

    #[test]
    fn a_2xx_with_succeeded_0_is_a_failure() {
        let r = reply(
            200,
            r#"{"succeeded":0,"message":"Contact could not be added"}"#,
        );
        let Err(Outcome::Permanent { reason }) = classify(&r) else {
            panic!()
        };
        assert!(reason.contains("Contact could not be added"), "{reason}");
    }

    #[test]
    fn auth_failures_break_the_connection() {
        for status in [401, 403] {
            let r = reply(
                status,
                r#"{"message":"You are not authorized to access this resource"}"#,
            );
            let Err(Outcome::ConnectionBroken { reason }) = classify(&r) else {
                panic!()
            };
            assert!(reason.contains("not authorized") && reason.contains("credentials.api_token"));
        }
    }

    #[test]
    fn validation_errors_are_permanent_and_name_the_field() {
        let r = reply(
            422,
            r#"{"errors":[{"title":"Contact Email Address is not valid.","detail":"","code":"email_invalid","error":"must_be_valid_email_address","source":{"pointer":"/data/attributes/email"}}]}"#,
        );
        assert_eq!(
            classify(&r).unwrap_err(),
            Outcome::Permanent {
                reason: "ActiveCampaign rejected the request (HTTP 422): email: Contact Email \
                         Address is not valid. (email_invalid)"
                    .into()
            }
        );
        let missing = reply(
            422,
            r#"{"errors":[{"status":422,"title":"Missing attribute","source":{"pointer":"/data/attributes/contact"}}]}"#,
        );
        let Err(Outcome::Permanent { reason }) = classify(&missing) else {
            panic!()
        };
        assert!(reason.contains("contact: Missing attribute"), "{reason}");
    }

    #[test]
    fn not_found_is_permanent_with_acs_message() {
        let r = reply(404, r#"{"message":"No Result found for List with id 99"}"#);
        let Err(Outcome::Permanent { reason }) = classify(&r) else {
            panic!()
        };
        assert!(reason.contains("List with id 99"), "{reason}");
        let r = reply(
            404,
            r#"{"errors":[{"status":404,"title":"Not Found","detail":"Contact not found"}]}"#,
        );
        let Err(Outcome::Permanent { reason }) = classify(&r) else {
            panic!()
        };
        assert!(reason.contains("Not Found: Contact not found"), "{reason}");
    }

    #[test]
    fn duplicates_are_recognised() {
        let tag = reply(
            422,
            r#"{"errors":[{"title":"Tag name already exists","detail":"","code":"duplicate","source":{"pointer":"/data/attributes/tag"}}]}"#,
        );
        assert!(tag.is_duplicate());
        let contact = reply(
            422,
            r#"{"errors":[{"title":"Email address already exists in the system","detail":"","code":"duplicate","source":{"pointer":"/data/attributes/email"}}]}"#,
        );
        assert!(contact.is_duplicate());
        assert!(!reply(422, r#"{"errors":[{"title":"Missing attribute"}]}"#).is_duplicate());
        assert!(!reply(404, r#"{"message":"already"}"#).is_duplicate());
    }

    #[test]
    fn rate_limits_and_server_errors() {
        let mut r = reply(429, "");
        r.retry_after = Some(Duration::from_secs(30));
        assert_eq!(
            classify(&r).unwrap_err(),
            Outcome::RateLimited {
                after: Some(Duration::from_secs(30))
            }
        );
        assert_eq!(
            classify(&reply(429, "")).unwrap_err(),
            Outcome::RateLimited { after: None }
        );
        let cloudflare = reply(
            502,
            r#"{"title":"Bad gateway","status":502,"cloudflare_error":true,"retry_after":60}"#,
        );
        let Err(Outcome::Retry { after, .. }) = classify(&cloudflare) else {
            panic!()
        };
        assert_eq!(after, Some(Duration::from_secs(60)));
        for status in [500, 503, 504, 408] {
            assert_eq!(kind(&reply(status, "")), "retry", "{status}");
        }
        assert_eq!(kind(&reply(400, "{}")), "permanent");
    }
}
