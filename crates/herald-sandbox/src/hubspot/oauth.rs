//! HubSpot's OAuth endpoints for a public app, so "Connect HubSpot" runs without a browser
//! login:
//!
//! - `GET /hubspot/oauth/authorize?client_id&redirect_uri&scope&state` approves at once: it
//!   redirects (302) to `redirect_uri?code=…&state=…` (or `?error=access_denied&state=…` once
//!   told to deny).
//! - `POST /hubspot/oauth/v1/token` (form-encoded, `client_id` and `client_secret` required)
//!   takes `grant_type=authorization_code` (`code`, `redirect_uri` as authorized; a code works
//!   once) and `grant_type=refresh_token`. It answers `{"token_type": "bearer",
//!   "access_token", "refresh_token", "expires_in"}`; access tokens (`oauth-na1-…`) live
//!   `access_token_ttl_s` (300 s unless tuned). As at HubSpot, a refresh keeps the refresh token:
//!   it does not rotate. Refusals are 400 `BAD_AUTH_CODE`, `BAD_REFRESH_TOKEN`,
//!   `BAD_GRANT_TYPE`, `BAD_CLIENT_ID` or `BAD_REDIRECT_URI`.
//! - The contact endpoints take these access tokens; an expired one answers 401
//!   `EXPIRED_AUTHENTICATION`.
//!
//! `PUT /_sandbox/hubspot/oauth` with `{"access_token_ttl_s": N, "expire_access_tokens": true,
//! "revoke_refresh_tokens": true, "deny": true}` (any subset) tunes it; `/_sandbox/state` shows
//! `hubspot.oauth.token_requests` by grant type.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Sandbox;

/// Access tokens the sandbox issues start with this.
pub const ACCESS_PREFIX: &str = "oauth-na1-";
const REFRESH_PREFIX: &str = "oauth-refresh-na1-";
const DEFAULT_TTL: Duration = Duration::from_secs(300);
/// Codes, access and refresh tokens held at once; beyond it the oldest kind is refused or
/// dropped (a simulator must not grow without end either).
const MAX_HELD: usize = 10_000;

/// The simulated app's grants.
#[derive(Debug)]
pub struct OAuthState {
    /// Code → (client id, redirect URI) it was issued for.
    codes: HashMap<String, (String, String)>,
    /// Access token → when it expires.
    access: HashMap<String, Instant>,
    /// Refresh token → client id.
    refresh: HashMap<String, String>,
    ttl: Duration,
    deny: bool,
    /// Token requests answered, by grant type (refused ones included).
    requests: BTreeMap<String, u64>,
}

impl Default for OAuthState {
    fn default() -> Self {
        Self {
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            ttl: DEFAULT_TTL,
            deny: false,
            requests: BTreeMap::new(),
        }
    }
}

/// What an access token is worth to the contact endpoints.
pub(super) enum Access {
    Valid,
    Expired { ago: Duration },
    Unknown,
}

impl OAuthState {
    pub(super) fn check(&self, token: &str) -> Access {
        match self.access.get(token) {
            None => Access::Unknown,
            Some(until) => match Instant::now().checked_duration_since(*until) {
                None => Access::Valid,
                Some(ago) => Access::Expired { ago },
            },
        }
    }

    pub(super) fn snapshot(&self) -> Value {
        json!({"token_requests": self.requests, "access_token_ttl_s": self.ttl.as_secs(),
               "access_tokens": self.access.len(), "refresh_tokens": self.refresh.len()})
    }

    fn issue(&mut self, refresh_token: String) -> Value {
        let now = Instant::now();
        if self.access.len() >= MAX_HELD {
            self.access.retain(|_, until| *until > now);
        }
        let access_token = format!("{ACCESS_PREFIX}{}", uuid::Uuid::now_v7().simple());
        self.access.insert(access_token.clone(), now + self.ttl);
        json!({"token_type": "bearer", "access_token": access_token,
               "refresh_token": refresh_token, "expires_in": self.ttl.as_secs()})
    }
}

fn refused(status: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": status, "message": message,
                    "correlationId": uuid::Uuid::now_v7().to_string()})),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct Authorize {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

/// `GET /hubspot/oauth/authorize`: approves (or denies) at once.
pub(super) async fn authorize(
    State(sandbox): State<Sandbox>,
    Query(q): Query<Authorize>,
) -> Response {
    let (Some(client_id), Some(redirect)) = (q.client_id, q.redirect_uri) else {
        return (
            StatusCode::BAD_REQUEST,
            "client_id and redirect_uri are required\n",
        )
            .into_response();
    };
    let Ok(mut back) = absolute_url(&redirect) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri is not a URL\n").into_response();
    };
    let mut hubspot = sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner());
    let oauth = &mut hubspot.oauth;
    let mut query = vec![];
    if oauth.deny {
        query.push(("error", "access_denied".to_owned()));
    } else {
        if oauth.codes.len() >= MAX_HELD {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many pending codes\n").into_response();
        }
        let code = uuid::Uuid::now_v7().simple().to_string();
        oauth.codes.insert(code.clone(), (client_id, redirect));
        query.push(("code", code));
    }
    if let Some(state) = q.state {
        query.push(("state", state));
    }
    for (name, value) in query {
        back.push(if back.contains('?') { '&' } else { '?' });
        back.push_str(name);
        back.push('=');
        back.push_str(
            &percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        );
    }
    (StatusCode::FOUND, [(header::LOCATION, back)]).into_response()
}

/// `redirect_uri` if it is an absolute http(s) URL.
fn absolute_url(text: &str) -> Result<String, ()> {
    let ok = (text.starts_with("http://") || text.starts_with("https://"))
        && !text.contains(char::is_whitespace)
        && !text.contains('#');
    if ok { Ok(text.to_owned()) } else { Err(()) }
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    redirect_uri: Option<String>,
    code: Option<String>,
    refresh_token: Option<String>,
}

/// `POST /hubspot/oauth/v1/token`.
pub(super) async fn token(State(sandbox): State<Sandbox>, Form(f): Form<TokenForm>) -> Response {
    let mut hubspot = sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner());
    let oauth = &mut hubspot.oauth;
    let grant = f.grant_type.unwrap_or_default();
    *oauth.requests.entry(grant.clone()).or_default() += 1;
    let client_id = f.client_id.unwrap_or_default();
    if client_id.is_empty() || f.client_secret.unwrap_or_default().is_empty() {
        return refused("BAD_CLIENT_ID", "missing or unknown client id or secret");
    }
    match grant.as_str() {
        "authorization_code" => {
            let code = f.code.unwrap_or_default();
            let Some((issued_to, redirect)) = oauth.codes.remove(&code) else {
                return refused("BAD_AUTH_CODE", "missing or unknown auth code");
            };
            if issued_to != client_id {
                return refused("BAD_CLIENT_ID", "the code was issued to another app");
            }
            if f.redirect_uri.as_deref() != Some(redirect.as_str()) {
                return refused(
                    "BAD_REDIRECT_URI",
                    "redirect_uri does not match the authorization",
                );
            }
            if oauth.refresh.len() >= MAX_HELD {
                return refused("BAD_AUTH_CODE", "too many installs in the sandbox");
            }
            let refresh = format!("{REFRESH_PREFIX}{}", uuid::Uuid::now_v7().simple());
            oauth.refresh.insert(refresh.clone(), client_id);
            (StatusCode::OK, Json(oauth.issue(refresh))).into_response()
        }
        "refresh_token" => {
            let refresh = f.refresh_token.unwrap_or_default();
            match oauth.refresh.get(&refresh) {
                Some(owner) if *owner == client_id => {
                    (StatusCode::OK, Json(oauth.issue(refresh))).into_response()
                }
                _ => refused("BAD_REFRESH_TOKEN", "missing or unknown refresh token"),
            }
        }
        _ => refused(
            "BAD_GRANT_TYPE",
            "grant_type must be authorization_code or refresh_token",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    access_token_ttl_s: Option<u64>,
    #[serde(default)]
    expire_access_tokens: bool,
    #[serde(default)]
    revoke_refresh_tokens: bool,
    deny: Option<bool>,
}

/// `PUT /_sandbox/hubspot/oauth`.
pub(crate) async fn control(State(sandbox): State<Sandbox>, Json(c): Json<Control>) -> Json<Value> {
    let mut hubspot = sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner());
    let oauth = &mut hubspot.oauth;
    if let Some(ttl) = c.access_token_ttl_s {
        oauth.ttl = Duration::from_secs(ttl);
    }
    if c.expire_access_tokens {
        let now = Instant::now();
        for until in oauth.access.values_mut() {
            *until = (*until).min(now);
        }
    }
    if c.revoke_refresh_tokens {
        oauth.refresh.clear();
    }
    if let Some(deny) = c.deny {
        oauth.deny = deny;
    }
    Json(oauth.snapshot())
}
