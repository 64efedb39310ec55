//! What a connection can show without delivering: the requests one attempt would send (a
//! [`Preview`], built by the same code that sends them, then redacted), and the result of one
//! harmless authenticated call (a [`Probe`], "test connection"). Both are for people looking
//! at a connection through the management API; neither touches history, breakers or retries.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::http::{HttpConnection, Received, excerpt};

/// What stands in for a credential, a signature or a URL that is itself the secret.
pub const REDACTED: &str = "[redacted]";

/// Headers whose values are credentials or signatures whatever they hold.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "api-token",
    "webhook-signature",
    "x-api-key",
    "cookie",
];

/// One HTTP request as a connection would send it, credentials and signatures redacted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestPreview {
    pub method: String,
    pub url: String,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when it parses as JSON, else text; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl RequestPreview {
    /// Builds `request` (as `send` would) and shows it with `secrets` and the secret headers
    /// redacted. A URL that contains a secret (a Slack incoming webhook) is shown as its scheme
    /// and host only.
    pub fn of(request: reqwest::RequestBuilder, secrets: &[&str]) -> Result<Self, String> {
        let request = request.build().map_err(|e| {
            format!(
                "the request cannot be built: {}",
                super::http::redacted_chain(&e)
            )
        })?;
        let url = request.url();
        let shown_url = if contains_secret(url.as_str(), secrets) {
            format!(
                "{}://{}/{REDACTED}",
                url.scheme(),
                url.host_str().unwrap_or("?")
            )
        } else {
            url.to_string()
        };
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| {
                let text = value.to_str().unwrap_or("(not text)");
                let shown = if SECRET_HEADERS.contains(&name.as_str()) {
                    REDACTED.to_owned()
                } else {
                    redact(text, secrets)
                };
                (name.as_str().to_owned(), shown)
            })
            .collect();
        let body = request.body().and_then(|b| b.as_bytes()).map(|bytes| {
            let text = redact(&String::from_utf8_lossy(bytes), secrets);
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        });
        Ok(Self {
            method: request.method().to_string(),
            url: shown_url,
            headers,
            body,
        })
    }
}

/// The requests one attempt at an action would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preview {
    /// In order; a later one may depend on the answer to an earlier one (see `note`).
    Requests {
        requests: Vec<RequestPreview>,
        note: Option<String>,
    },
    /// The rendered `with` does not make a request; an attempt would fail with this reason.
    NotBuilt { reason: String },
    /// This destination cannot show its request without calling the API; why.
    Unavailable { reason: String },
}

impl Preview {
    /// For a destination whose action is several calls, each built from the answer to the one
    /// before (ids the API hands out): nothing honest can be shown before calling.
    pub fn chained(vendor: &str) -> Self {
        Self::Unavailable {
            reason: format!(
                "{vendor} actions are several calls, each built from the answer to the one \
                 before; send the test event to see the outcome"
            ),
        }
    }

    /// One request, or the reason it could not be built.
    pub fn one(request: Result<RequestPreview, String>) -> Self {
        match request {
            Ok(r) => Self::Requests {
                requests: vec![r],
                note: None,
            },
            Err(reason) => Self::NotBuilt { reason },
        }
    }
}

/// What a harmless authenticated call to a connection's API came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The API accepted the credentials.
    Ok,
    /// The vendor's error (or the transport's), credentials redacted.
    Failed(String),
    /// The destination has no call that is harmless; why.
    Unsupported(String),
}

impl Probe {
    /// Reads a plain REST answer: 2xx is ok; anything else fails with the status and an
    /// excerpt of the body.
    pub fn by_status(received: &Received, secrets: &[&str]) -> Self {
        if (200..300).contains(&received.status) {
            return Self::Ok;
        }
        let body = excerpt(&received.body);
        let text = if body.is_empty() {
            format!("HTTP {}", received.status)
        } else {
            format!("HTTP {}: {body}", received.status)
        };
        Self::Failed(redact(&text, secrets))
    }

    /// Sends `request` through the connection's limiter and reads the answer with `read`.
    pub async fn call(
        http: &HttpConnection,
        request: reqwest::RequestBuilder,
        secrets: &[&str],
        read: impl FnOnce(&Received) -> Self,
    ) -> Self {
        match http.send(request).await {
            Ok(received) => read(&received),
            Err(outcome) => Self::Failed(redact(
                &outcome
                    .reason()
                    .unwrap_or_else(|| outcome.kind().to_owned()),
                secrets,
            )),
        }
    }
}

fn contains_secret(text: &str, secrets: &[&str]) -> bool {
    secrets.iter().any(|s| !s.is_empty() && text.contains(s))
}

/// `text` with every one of `secrets` replaced by [`REDACTED`].
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, REDACTED);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_url_headers_and_body() {
        let client = reqwest::Client::new();
        let request = client
            .post("https://hooks.example.com/services/T0/B0/canary-url")
            .bearer_auth("canary-token")
            .header("x-note", "has canary-token inside")
            .body(r#"{"echo":"canary-token","n":1}"#);
        let shown = RequestPreview::of(request, &["canary-token", "canary-url"]).unwrap();
        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("canary"), "{text}");
        assert_eq!(shown.url, "https://hooks.example.com/[redacted]");
        assert_eq!(shown.headers["authorization"], REDACTED);
        assert_eq!(shown.headers["x-note"], "has [redacted] inside");
        assert_eq!(shown.body.unwrap()["n"], 1);
    }

    #[test]
    fn a_non_2xx_answer_fails_with_the_vendors_words() {
        let received = Received {
            status: 401,
            headers: Default::default(),
            body: r#"{"message":"bad token tok-123456"}"#.into(),
        };
        assert_eq!(
            Probe::by_status(&received, &["tok-123456"]),
            Probe::Failed(r#"HTTP 401: {"message":"bad token [redacted]"}"#.into())
        );
    }
}
