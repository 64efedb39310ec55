//! Slack: an incoming webhook (`200 ok`, or plain-text error codes with real statuses) and
//! `chat.postMessage` (HTTP 200 with `{"ok": false, "error": …}` for application errors), and
//! `auth.test` (what "test connection" calls: `not_authed`, `invalid_auth` for a token that is
//! not `xoxb-…`, as `chat.postMessage` checks it).
//! Slack allows about one message per second per channel with short bursts: more than
//! [`BURST`] messages to one channel (or one incoming webhook) within a second are answered
//! 429 with `Retry-After: 1` (`{"ok": false, "error": "ratelimited"}` from the Web API,
//! `rate_limited` from a webhook).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::Sandbox;

/// Messages one channel takes within a second before Slack answers 429.
pub const BURST: usize = 2;

/// Recent message times per channel.
pub type Posts = std::collections::HashMap<String, std::collections::VecDeque<std::time::Instant>>;

/// Notes a message to `channel`; `false` when it exceeds the channel's rate.
fn admit(sandbox: &Sandbox, channel: &str) -> bool {
    let now = std::time::Instant::now();
    let mut posts = sandbox
        .slack_posts
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let recent = posts.entry(channel.to_owned()).or_default();
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
    {
        recent.pop_front();
    }
    if recent.len() >= BURST {
        return false;
    }
    recent.push_back(now);
    true
}

fn too_many(body: Response) -> Response {
    let mut response = body;
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("1"));
    response
}

pub(super) fn router() -> Router<Sandbox> {
    Router::new()
        .route("/slack/services/{*path}", post(incoming_webhook))
        .route("/slack/api/chat.postMessage", post(post_message))
        .route("/slack/api/auth.test", post(auth_test).get(auth_test))
}

/// `auth.test`: who the token is (what "test connection" calls); errors in a 200, as Slack.
async fn auth_test(headers: HeaderMap) -> Response {
    let reply = match bot_token(&headers) {
        Err(error) => json!({"ok": false, "error": error}),
        Ok(_) => json!({"ok": true, "url": "https://sandbox.slack.com/", "team": "Sandbox",
                        "user": "herald", "team_id": "T0SANDBOX", "user_id": "U0HERALD",
                        "bot_id": "B0HERALD"}),
    };
    Json(reply).into_response()
}

/// The bot token of `Authorization: Bearer`, or Slack's error code.
fn bot_token(headers: &HeaderMap) -> Result<&str, &'static str> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or("not_authed")?;
    if token.starts_with("xoxb-") {
        Ok(token)
    } else {
        Err("invalid_auth")
    }
}

fn has_text_or_blocks(body: &Value) -> bool {
    let text = body
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    text || body.get("blocks").is_some_and(Value::is_array)
}

async fn incoming_webhook(
    State(sandbox): State<Sandbox>,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let full_path = format!("/slack/services/{path}");
    let (status, text) = match serde_json::from_slice::<Value>(&body) {
        Err(_) => (StatusCode::BAD_REQUEST, "invalid_payload"),
        Ok(v) if !has_text_or_blocks(&v) => (StatusCode::BAD_REQUEST, "no_text"),
        Ok(_) if !admit(&sandbox, &full_path) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        Ok(_) => (StatusCode::OK, "ok"),
    };
    let response = (status, text).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        too_many(response)
    } else {
        response
    }
}

async fn post_message(State(sandbox): State<Sandbox>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let reply = match (bot_token(&headers), &parsed) {
        (Err(error), _) => json!({"ok": false, "error": error}),
        (_, Err(_)) => json!({"ok": false, "error": "invalid_json"}),
        (_, Ok(v)) => match v.get("channel").and_then(Value::as_str) {
            None | Some("") => json!({"ok": false, "error": "channel_not_found"}),
            Some(_) if !has_text_or_blocks(v) => json!({"ok": false, "error": "no_text"}),
            Some(channel) if !admit(&sandbox, channel) => {
                let reply = json!({"ok": false, "error": "ratelimited"});
                return too_many(Json(reply).into_response());
            }
            Some(channel) => {
                let ts = format!("{:.6}", chrono::Utc::now().timestamp_micros() as f64 / 1e6);
                json!({"ok": true, "channel": channel, "ts": ts, "message": {"text": v.get("text")}})
            }
        },
    };
    Json(reply).into_response()
}

/// Messages Slack accepted, by channel (the `channel` of `chat.postMessage`, or the path of
/// an incoming webhook), oldest first: `{"channels": {"C1": [{"text": …, "blocks": […]}]}}`.
pub(super) fn snapshot(requests: &[crate::RecordedRequest]) -> Value {
    let mut channels = serde_json::Map::new();
    for r in requests
        .iter()
        .filter(|r| r.destination == "slack" && r.status == 200)
    {
        let accepted = r.path.starts_with("/slack/services/")
            || r.body.get("channel").and_then(Value::as_str).is_some()
                && has_text_or_blocks(&r.body);
        if !accepted {
            continue;
        }
        let channel = r
            .body
            .get("channel")
            .and_then(Value::as_str)
            .unwrap_or(&r.path)
            .to_owned();
        let message = json!({"text": r.body.get("text"), "blocks": r.body.get("blocks")});
        channels
            .entry(channel)
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
            .expect("an array")
            .push(message);
    }
    json!({ "channels": channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_takes_a_short_burst_then_is_rate_limited() {
        let sandbox = Sandbox::default();
        assert!(admit(&sandbox, "#a") && admit(&sandbox, "#a"));
        assert!(!admit(&sandbox, "#a"), "a third message within the second");
        assert!(admit(&sandbox, "#b"), "channels are limited separately");
    }
}
