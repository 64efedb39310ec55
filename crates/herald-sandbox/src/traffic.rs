//! What happens around every simulator route, in one layer: a pending fault answers instead of
//! the simulator, and every request is recorded with the status it got. The simulators only
//! simulate; the destination of a request is the first segment of its path.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Sandbox;

/// Requests kept; older ones are dropped.
const MAX_RECORDED: usize = 10_000;

/// The largest body read, the limit axum's body extractors apply, so the simulators behind the
/// layer see the bodies they would see without it.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The longest a fault (or a simulated slow answer) holds a request.
const MAX_DELAY_MS: u64 = 60_000;

/// One request a simulator received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub destination: String,
    pub method: String,
    pub path: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// The body as JSON when it parses, else as text.
    pub body: serde_json::Value,
    pub received_at: DateTime<Utc>,
    /// The status the simulator answered with.
    pub status: u16,
    /// For webhooks: whether the Standard Webhooks signature verified (absent when the sandbox
    /// was not given the secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_valid: Option<bool>,
    /// Which credential authenticated the request, as [`fingerprint`] shows it (the bearer
    /// token, the password of Basic auth or the `Api-Token`), so a test can tell which one
    /// was used without the record holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// A short, one-way mark of a credential: `sha256:` and the first 8 bytes of its hash in hex.
pub fn fingerprint(credential: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(credential.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The credential a request carries, fingerprinted.
fn credential(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let value = match header("authorization") {
        Some(auth) => match auth.split_once(' ') {
            Some(("Bearer", token)) => token.trim().to_owned(),
            Some(("Basic", encoded)) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()?;
                let text = String::from_utf8(decoded).ok()?;
                text.split_once(':')
                    .map(|(_, password)| password.to_owned())?
            }
            _ => auth.to_owned(),
        },
        None => header("api-token")?.to_owned(),
    };
    Some(fingerprint(&value))
}

/// An injected failure for the next `count` matching requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    /// Requests whose path (with its query) starts with this (default: all).
    #[serde(default)]
    pub path: String,
    pub count: u32,
    pub status: u16,
    #[serde(default)]
    pub body: String,
    /// Value of a `Retry-After` header to send.
    #[serde(default)]
    pub retry_after: Option<String>,
    #[serde(default)]
    pub delay_ms: u64,
    /// When set, each matching request fails with this probability (and `count` bounds how
    /// many may fail); otherwise the next `count` matching requests all fail.
    #[serde(default)]
    pub rate: Option<f64>,
}

impl Fault {
    async fn answer(self) -> Response {
        if self.delay_ms > 0 {
            let delay = self.delay_ms.min(MAX_DELAY_MS);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body).into_response();
        if let Some(after) = self.retry_after.and_then(|a| a.parse::<HeaderValue>().ok()) {
            response.headers_mut().insert("retry-after", after);
        }
        response
    }
}

/// What only the simulator knows about a request, handed to the layer in the extensions of
/// its response.
#[derive(Debug, Clone, Default)]
pub(crate) struct Note {
    /// The path to record instead of the request's own.
    pub path: Option<String>,
    /// Whether the webhook's signature verified.
    pub signature_valid: Option<bool>,
}

impl Note {
    /// `response` carrying this note.
    pub fn on(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The layer: a pending fault for the path answers first; otherwise the simulator does. Either
/// way the request is recorded with the status it got.
pub(crate) async fn faults_then_record(
    State(sandbox): State<Sandbox>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    // Past the limit, as axum's extractors do; any other read error means the client went away
    // and will not see the answer.
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    // Recorded as the simulators' path parameters read it, percent-decoded.
    let path = percent_encoding::percent_decode_str(parts.uri.path())
        .decode_utf8_lossy()
        .into_owned();
    let with_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.clone(),
    };
    let (method, headers) = (parts.method.to_string(), parts.headers.clone());
    let mut response = match sandbox.take_fault(&with_query) {
        Some(fault) => fault.answer().await,
        None => {
            next.run(Request::from_parts(parts, Body::from(body.clone())))
                .await
        }
    };
    let note = response
        .extensions_mut()
        .remove::<Note>()
        .unwrap_or_default();
    let destination = path.split('/').nth(1).unwrap_or_default().to_owned();
    sandbox.record(RecordedRequest {
        destination,
        method,
        path: note.path.unwrap_or(path),
        headers: recorded_headers(&headers),
        credential: credential(&headers),
        body: recorded_body(&body),
        received_at: Utc::now(),
        status: response.status().as_u16(),
        signature_valid: note.signature_valid,
    });
    response
}

fn recorded_headers(headers: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    headers
        .iter()
        // Credentials never reach the record.
        .filter(|(name, _)| !matches!(name.as_str(), "authorization" | "api-token"))
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                serde_json::Value::String(value.to_str().unwrap_or("(binary)").to_owned()),
            )
        })
        .collect()
}

fn recorded_body(body: &Bytes) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

impl Sandbox {
    /// Takes one use of a fault matching `path`: the first counted fault, else one of the
    /// probabilistic ones, chosen by a single draw so their rates add up.
    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let matching = |f: &Fault| path.starts_with(&f.path);
        let i = match faults.iter().position(|f| matching(f) && f.rate.is_none()) {
            Some(i) => i,
            None => {
                let draw = fastrand::f64();
                let mut cumulative = 0.0;
                faults.iter().position(|f| {
                    cumulative += f.rate.filter(|_| matching(f)).unwrap_or(0.0);
                    matching(f) && draw < cumulative
                })?
            }
        };
        let fault = faults[i].clone();
        if faults[i].count <= 1 {
            faults.remove(i);
        } else {
            faults[i].count -= 1;
        }
        Some(fault)
    }

    fn record(&self, request: RecordedRequest) {
        let mut requests = self.recorded();
        if requests.len() >= MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(request);
    }
}
