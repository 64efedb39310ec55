//! Webhook response → outcome.
//!
//! | response | outcome |
//! |---|---|
//! | 2xx | delivered |
//! | 3xx | permanent (redirects are not followed; point the connection at the final URL) |
//! | 401, 403, 410 | connection broken (the receiver rejects our signature or is gone) |
//! | 408, 425, 5xx | retry, honouring `Retry-After` |
//! | 429 | rate limited, honouring `Retry-After` |
//! | other 4xx | permanent |

use std::time::Duration;

use crate::destinations::Outcome;
use crate::destinations::http::excerpt;

/// Classifies a webhook receiver's answer.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    let detail = || {
        let body = excerpt(body);
        if body.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("HTTP {status}: {body}")
        }
    };
    match status {
        200..=299 => Outcome::Delivered,
        300..=399 => Outcome::Permanent {
            reason: format!("{}; redirects are not followed", detail()),
        },
        401 | 403 | 410 => Outcome::ConnectionBroken { reason: detail() },
        429 => Outcome::RateLimited { after: retry_after },
        408 | 425 | 500..=599 => Outcome::Retry {
            after: retry_after,
            reason: detail(),
        },
        _ => Outcome::Permanent { reason: detail() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_status_family() {
        let secs = Some(Duration::from_secs(3));
        let cases: &[(u16, &str)] = &[
            (200, "delivered"),
            (204, "delivered"),
            (301, "permanent"),
            (400, "permanent"),
            (404, "permanent"),
            (422, "permanent"),
            (401, "connection_broken"),
            (403, "connection_broken"),
            (410, "connection_broken"),
            (408, "retry"),
            (429, "rate_limited"),
            (500, "retry"),
            (503, "retry"),
        ];
        for (status, kind) in cases {
            assert_eq!(classify(*status, secs, "").kind(), *kind, "HTTP {status}");
        }
    }

    #[test]
    fn retry_after_and_body_are_kept() {
        assert_eq!(
            classify(503, Some(Duration::from_secs(9)), "down for maintenance"),
            Outcome::Retry {
                after: Some(Duration::from_secs(9)),
                reason: "HTTP 503: down for maintenance".into()
            }
        );
        assert_eq!(
            classify(429, Some(Duration::from_secs(2)), ""),
            Outcome::RateLimited {
                after: Some(Duration::from_secs(2))
            }
        );
    }
}
