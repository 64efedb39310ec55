//! HubSpot batch-upsert response → one outcome per input.
//!
//! | response | outcome |
//! |---|---|
//! | 200/207, input in `results` | delivered |
//! | 200/207, input in `errors[].context.objectWriteTraceId` | that input only: `VALIDATION_ERROR` (invalid email, unknown property) permanent, `RATE_LIMITS` rate limited, others permanent |
//! | 2xx with `results` and `errors` both empty | permanent (a silent failure) |
//! | 400 for a batch of one | permanent, naming the property or the email |
//! | 400 for a batch of several | each input is sent alone to find the bad one |
//! | 401, 403 (`MISSING_SCOPES`), 404 | connection broken |
//! | 409, 414, other 4xx | permanent |
//! | 423 | retry after ≥ 2 s |
//! | 429 `DAILY` | rate limited until midnight in the portal's time zone; the connection pauses |
//! | 429 `TEN_SECONDLY_ROLLING` | rate limited (`Retry-After`, else 10 s) |
//! | 477, 5xx | retry (`Retry-After` when given) |

use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// One input as sent: its trace id and email.
#[derive(Debug, Clone, Copy)]
pub struct Sent<'a> {
    pub trace_id: &'a str,
    pub email: &'a str,
}

/// What a batch response means for its inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// One outcome per input, in the order sent.
    PerInput(Vec<Outcome>),
    /// The same outcome for every input.
    All(Outcome),
    /// A whole-batch 400 for several inputs: HubSpot does not say which one is bad, so each
    /// is sent alone.
    Split,
    /// The portal's daily quota is spent: every input waits `after`, and so does the
    /// connection, without calling HubSpot.
    DailyLimit { after: Duration },
}

/// HubSpot's error envelope; every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    policy_name: String,
    #[serde(default)]
    errors: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchReply {
    #[serde(default)]
    results: Vec<Value>,
    #[serde(default)]
    errors: Vec<Value>,
}

/// Classifies the response to a batch of `sent` inputs. `now` and `utc_offset` place the
/// daily reset.
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    sent: &[Sent<'_>],
    now: DateTime<Utc>,
    utc_offset: Option<FixedOffset>,
) -> Verdict {
    if (200..300).contains(&status) {
        return classify_success(status, body, sent);
    }
    let error: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let http = format!("HTTP {status}");
    let outcome = match status {
        400 if sent.len() > 1 => return Verdict::Split,
        400 => Outcome::Permanent {
            reason: validation_reason(&error.message, body),
        },
        401 => Outcome::ConnectionBroken {
            reason: format!(
                "HubSpot rejected the token ({http} {}): {}; check credentials.token, or connect \
                 the HubSpot account again",
                or(&error.category, "INVALID_AUTHENTICATION"),
                excerpt(&error.message)
            ),
        },
        403 => Outcome::ConnectionBroken {
            reason: forbidden_reason(&error, body),
        },
        404 => Outcome::ConnectionBroken {
            reason: format!(
                "HubSpot has no batch-upsert endpoint here ({http}): check base_url; {}",
                excerpt(body)
            ),
        },
        423 => Outcome::Retry {
            after: Some(retry_after.unwrap_or_default().max(Duration::from_secs(2))),
            reason: format!("{http}: contact locked; {}", excerpt(&error.message)),
        },
        429 => match error.policy_name.as_str() {
            "DAILY" => {
                return Verdict::DailyLimit {
                    after: until_daily_reset(now, utc_offset),
                };
            }
            "SECONDLY" => Outcome::RateLimited {
                after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            },
            _ => Outcome::RateLimited {
                after: Some(retry_after.unwrap_or(Duration::from_secs(10))),
            },
        },
        477 | 500..=599 => Outcome::Retry {
            after: retry_after,
            reason: format!("{http}: {}", excerpt(body)),
        },
        _ => Outcome::Permanent {
            reason: format!(
                "{http} {}: {}",
                or(&error.category, "error"),
                excerpt(or(&error.message, body))
            ),
        },
    };
    Verdict::All(outcome)
}

fn or<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() { fallback } else { s }
}

fn classify_success(status: u16, body: &str, sent: &[Sent<'_>]) -> Verdict {
    let Ok(reply) = serde_json::from_str::<BatchReply>(body) else {
        // Upserts are idempotent, so asking again is safe.
        return Verdict::All(Outcome::Retry {
            after: None,
            reason: format!("HTTP {status} with an unreadable body: {}", excerpt(body)),
        });
    };
    if reply.results.is_empty() && reply.errors.is_empty() {
        return Verdict::All(Outcome::Permanent {
            reason: format!(
                "HubSpot answered HTTP {status} with neither results nor errors; nothing was written"
            ),
        });
    }
    let traced = |v: &Value, id: &str| {
        v.pointer("/context/objectWriteTraceId")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|x| x.as_str() == Some(id)))
    };
    let untraced_error = reply
        .errors
        .iter()
        .find(|e| e.pointer("/context/objectWriteTraceId").is_none());
    let outcomes = sent
        .iter()
        .map(|input| {
            if let Some(error) = reply.errors.iter().find(|e| traced(e, input.trace_id)) {
                return item_error(error);
            }
            let written = reply.results.iter().any(|r| {
                r.get("objectWriteTraceId").and_then(Value::as_str) == Some(input.trace_id)
                    || r.pointer("/properties/email")
                        .and_then(Value::as_str)
                        .is_some_and(|e| e.eq_ignore_ascii_case(input.email))
            });
            match (written, untraced_error) {
                (true, _) => Outcome::Delivered,
                (false, Some(error)) => item_error(error),
                (false, None) => Outcome::Retry {
                    after: None,
                    reason: format!(
                        "HubSpot's HTTP {status} reply mentions neither a result nor an error \
                         for this contact"
                    ),
                },
            }
        })
        .collect();
    Verdict::PerInput(outcomes)
}

/// One entry of a 207's `errors`.
fn item_error(error: &Value) -> Outcome {
    let text = |key: &str| error.get(key).and_then(Value::as_str).unwrap_or_default();
    match text("category") {
        "RATE_LIMITS" => Outcome::RateLimited {
            after: Some(Duration::from_secs(10)),
        },
        "VALIDATION_ERROR" => Outcome::Permanent {
            reason: validation_reason(text("message"), &error.to_string()),
        },
        category => Outcome::Permanent {
            reason: format!(
                "HubSpot {}: {}",
                or(category, "error"),
                excerpt(or(text("message"), &error.to_string()))
            ),
        },
    }
}

/// Names the property or email a validation message is about. HubSpot nests a JSON list in
/// the message: `Property values were not valid: [{"error":"PROPERTY_DOESNT_EXIST","name":…}]`.
fn validation_reason(message: &str, body: &str) -> String {
    #[derive(Deserialize)]
    struct Invalid {
        #[serde(default)]
        error: String,
        #[serde(default)]
        name: String,
        #[serde(default)]
        message: String,
    }
    let nested = message
        .find('[')
        .and_then(|i| serde_json::from_str::<Vec<Invalid>>(&message[i..]).ok())
        .unwrap_or_default();
    let parts: Vec<String> = nested
        .iter()
        .map(|p| match p.error.as_str() {
            "PROPERTY_DOESNT_EXIST" => format!(
                "property `{}` does not exist in this HubSpot portal (create it, or drop it \
                 from with.properties)",
                p.name
            ),
            "INVALID_EMAIL" => format!("HubSpot rejects the email: {}", p.message),
            _ => format!(
                "property `{}` is invalid ({}): {}",
                p.name, p.error, p.message
            ),
        })
        .collect();
    if !parts.is_empty() {
        return parts.join("; ");
    }
    if message.is_empty() {
        format!("HubSpot validation error: {}", excerpt(body))
    } else {
        format!("HubSpot validation error: {}", excerpt(message))
    }
}

fn forbidden_reason(error: &ErrorBody, body: &str) -> String {
    if error.category == "MISSING_SCOPES" {
        let scopes: Vec<&str> = error
            .errors
            .iter()
            .filter_map(|e| e.pointer("/context/requiredGranularScopes"))
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let scopes = if scopes.is_empty() {
            "crm.objects.contacts.write".to_owned()
        } else {
            scopes.join(", ")
        };
        return format!(
            "the HubSpot private app lacks scopes (403 MISSING_SCOPES): grant {scopes} to the \
             app behind credentials.token"
        );
    }
    format!(
        "HubSpot refused the token (HTTP 403 {}): {}",
        or(&error.category, "FORBIDDEN"),
        excerpt(or(&error.message, body))
    )
}

/// How long until the portal's daily quota resets: midnight at `utc_offset`. Without a known
/// offset, an hour, so a paused connection probes HubSpot once an hour at most.
pub fn until_daily_reset(now: DateTime<Utc>, utc_offset: Option<FixedOffset>) -> Duration {
    let Some(offset) = utc_offset else {
        return Duration::from_secs(3600);
    };
    let local = now.with_timezone(&offset);
    let next_midnight = (local.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .and_then(|m| m.and_local_timezone(offset).single());
    match next_midnight {
        Some(m) => (m.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::from_secs(3600)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent() -> Vec<Sent<'static>> {
        vec![
            Sent {
                trace_id: "d1",
                email: "ada@example.com",
            },
            Sent {
                trace_id: "d2",
                email: "invalid-email",
            },
        ]
    }

    fn now() -> DateTime<Utc> {
        "2026-03-21T14:18:00Z".parse().unwrap()
    }

    fn run(status: u16, body: &str, sent: &[Sent<'_>]) -> Verdict {
        classify(status, None, body, sent, now(), None)
    }

    fn all(status: u16, body: &str) -> Outcome {
        match run(status, body, &sent()[..1]) {
            Verdict::All(o) => o,
            other => panic!("{status}: {other:?}"),
        }
    }

    #[test]
    fn a_200_delivers_every_input_it_lists() {
        let body = r#"{"status":"COMPLETE","results":[
            {"id":"512","properties":{"email":"ada@example.com"},"new":true,"objectWriteTraceId":"d1"},
            {"id":"513","properties":{"email":"invalid-email"},"new":false,"objectWriteTraceId":"d2"}],
            "startedAt":"2026-03-21T14:18:00Z","completedAt":"2026-03-21T14:18:01Z"}"#;
        assert_eq!(
            run(200, body, &sent()),
            Verdict::PerInput(vec![Outcome::Delivered, Outcome::Delivered])
        );
    }

    #[test]
    fn a_207_fails_only_the_input_its_error_names() {
        let body = r#"{"status":"COMPLETE","results":[{"id":"12345","properties":{"email":"ada@example.com"},"objectWriteTraceId":"d1"}],
            "numErrors":1,
            "errors":[{"status":"error","category":"VALIDATION_ERROR",
              "message":"Property value \"invalid-email\" is not a valid email",
              "context":{"objectWriteTraceId":["d2"]}}]}"#;
        let Verdict::PerInput(outcomes) = run(207, body, &sent()) else {
            panic!()
        };
        assert_eq!(outcomes[0], Outcome::Delivered);
        assert_eq!(outcomes[1].kind(), "permanent");
        assert!(
            outcomes[1]
                .reason()
                .unwrap()
                .contains("\"invalid-email\" is not a valid email")
        );
    }

    #[test]
    fn an_unknown_property_is_permanent_and_named() {
        let body = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Property \\\"favourite_colour\\\" does not exist\",\"error\":\"PROPERTY_DOESNT_EXIST\",\"name\":\"favourite_colour\"}]","correlationId":"aeb5","category":"VALIDATION_ERROR"}"#;
        let o = all(400, body);
        assert_eq!(o.kind(), "permanent");
        assert!(
            o.reason()
                .unwrap()
                .contains("property `favourite_colour` does not exist"),
            "{o:?}"
        );
        // The same error inside a 207.
        let item = format!(
            r#"{{"results":[],"errors":[{{"status":"error","category":"VALIDATION_ERROR","message":{},"context":{{"objectWriteTraceId":["d1"]}}}}]}}"#,
            serde_json::to_string(&serde_json::from_str::<Value>(body).unwrap()["message"])
                .unwrap()
        );
        let Verdict::PerInput(o) = run(207, &item, &sent()[..1]) else {
            panic!()
        };
        assert!(o[0].reason().unwrap().contains("`favourite_colour`"));
    }

    #[test]
    fn an_invalid_email_is_permanent() {
        let body = r#"{"status":"error","message":"Property values were not valid: [{\"isValid\":false,\"message\":\"Email address bcooper@example.con is invalid\",\"error\":\"INVALID_EMAIL\",\"name\":\"email\"}]","correlationId":"aeb5","category":"VALIDATION_ERROR"}"#;
        let o = all(400, body);
        assert_eq!(
            o.reason().unwrap(),
            "HubSpot rejects the email: Email address bcooper@example.con is invalid"
        );
    }

    #[test]
    fn a_whole_batch_400_for_several_inputs_splits_the_batch() {
        let body = r#"{"status":"error","message":"Duplicate IDs found in batch input: [12877907025]. IDs must be unique","correlationId":"x","context":{"ids":["12877907025"]},"category":"VALIDATION_ERROR"}"#;
        assert_eq!(run(400, body, &sent()), Verdict::Split);
    }

    #[test]
    fn a_2xx_without_results_or_errors_is_a_silent_failure() {
        let o = match run(
            200,
            r#"{"status":"COMPLETE","results":[],"errors":[]}"#,
            &sent(),
        ) {
            Verdict::All(o) => o,
            v => panic!("{v:?}"),
        };
        assert_eq!(o.kind(), "permanent");
        let Verdict::PerInput(o) = run(
            200,
            r#"{"results":[{"id":"1","properties":{"email":"ada@example.com"}}]}"#,
            &sent(),
        ) else {
            panic!()
        };
        assert_eq!(
            o[0],
            Outcome::Delivered,
            "matched by email without a trace id"
        );
        assert_eq!(
            o[1].kind(),
            "retry",
            "not mentioned: ask again (idempotent)"
        );
        assert_eq!(all(200, "<html>").kind(), "retry");
    }

    #[test]
    fn auth_and_scope_errors_break_the_connection() {
        let o = all(
            401,
            r#"{"status":"error","message":"Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview","correlationId":"c","category":"INVALID_AUTHENTICATION"}"#,
        );
        assert_eq!(o.kind(), "connection_broken");
        assert!(o.reason().unwrap().contains("credentials.token"));
        let o = all(
            403,
            r#"{"status":"error","message":"This app hasn't been granted all required scopes to make this call.","correlationId":"c","errors":[{"message":"One or more of the following scopes are required.","context":{"requiredGranularScopes":["crm.objects.contacts.write"]}}],"category":"MISSING_SCOPES"}"#,
        );
        assert_eq!(o.kind(), "connection_broken");
        assert!(
            o.reason()
                .unwrap()
                .contains("grant crm.objects.contacts.write"),
            "{o:?}"
        );
        assert_eq!(all(404, "").kind(), "connection_broken");
    }

    #[test]
    fn conflicts_and_long_uris_are_permanent() {
        let o = all(
            409,
            r#"{"status":"error","message":"Contact already exists. Existing ID: 123","correlationId":"c","category":"CONFLICT"}"#,
        );
        assert_eq!(
            o,
            Outcome::Permanent {
                reason: "HTTP 409 CONFLICT: Contact already exists. Existing ID: 123".into()
            }
        );
        assert_eq!(all(414, "").kind(), "permanent");
    }

    #[test]
    fn rate_limits_follow_the_policy() {
        let burst = r#"{"status":"error","message":"You have reached your ten_secondly_rolling limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"TEN_SECONDLY_ROLLING","requestId":"r"}"#;
        assert_eq!(
            all(429, burst),
            Outcome::RateLimited {
                after: Some(Duration::from_secs(10))
            }
        );
        assert_eq!(
            classify(
                429,
                Some(Duration::from_secs(3)),
                burst,
                &sent(),
                now(),
                None
            ),
            Verdict::All(Outcome::RateLimited {
                after: Some(Duration::from_secs(3))
            })
        );
        let daily = r#"{"status":"error","message":"You have reached your daily limit.","errorType":"RATE_LIMIT","correlationId":"c","policyName":"DAILY","requestId":"r"}"#;
        // 14:18 UTC is 09:18 at -05:00: the reset is 14 h 42 min away.
        assert_eq!(
            classify(
                429,
                None,
                daily,
                &sent(),
                now(),
                FixedOffset::west_opt(5 * 3600)
            ),
            Verdict::DailyLimit {
                after: Duration::from_secs(14 * 3600 + 42 * 60)
            }
        );
        assert_eq!(
            run(429, daily, &sent()),
            Verdict::DailyLimit {
                after: Duration::from_secs(3600)
            }
        );
    }

    #[test]
    fn server_errors_retry() {
        assert_eq!(all(502, "<html>bad gateway</html>").kind(), "retry");
        assert_eq!(all(500, "").kind(), "retry");
        assert_eq!(
            classify(
                477,
                Some(Duration::from_secs(30)),
                "",
                &sent()[..1],
                now(),
                None
            ),
            Verdict::All(Outcome::Retry {
                after: Some(Duration::from_secs(30)),
                reason: "HTTP 477: ".into()
            })
        );
        let Outcome::Retry { after, .. } = all(423, "") else {
            panic!()
        };
        assert_eq!(after, Some(Duration::from_secs(2)));
    }

    #[test]
    fn daily_reset_is_the_next_local_midnight() {
        let t: DateTime<Utc> = "2026-03-21T23:30:00Z".parse().unwrap();
        assert_eq!(
            until_daily_reset(t, FixedOffset::east_opt(0)),
            Duration::from_secs(1800)
        );
        assert_eq!(
            until_daily_reset(t, FixedOffset::east_opt(3600)),
            Duration::from_secs(23 * 3600 + 1800)
        );
    }
}
