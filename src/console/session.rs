//! Signing in to the console. The admin token is presented once, on the sign-in form, and
//! checked by the API's own extractor; the browser then holds a session cookie that says which
//! token signed in, with which scope, until when, signed with HMAC-SHA256. Nothing is kept on
//! the server per session, so there is no table to grow and any replica with the same admin
//! tokens accepts the cookie.
//!
//! The signing key is derived from the admin tokens themselves: changing or removing a token
//! ends every session (on every replica at once, as they restart with the new tokens). Signing
//! out clears the browser's cookie; a copied cookie stays valid until it expires
//! ([`SESSION_TTL`]), as a token does until it is removed.
//!
//! Every form carries a CSRF token, the HMAC of the session cookie under a separate key, and
//! every POST checks it; the cookie is also `SameSite=Strict`, so another site's page cannot
//! send it at all.

use std::time::Duration;

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use hmac::{Hmac, Mac};
use maud::html;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Console;
use super::layout::{self, ConsoleError};
use crate::api::auth::Admin;
use crate::settings::api::{AdminScope, AdminToken};

/// How long a session lasts after signing in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// The session cookie's name.
pub const COOKIE: &str = "herald_console";

type HmacSha256 = Hmac<Sha256>;

/// The keys that sign session cookies and derive CSRF tokens.
pub struct Keys {
    session: [u8; 32],
    csrf: [u8; 32],
}

impl Keys {
    /// Derived from every admin token (name and resolved value); with no token there is no
    /// way to sign in, and the key signs nothing.
    pub fn new(tokens: &[AdminToken]) -> Self {
        let mut seed = Sha256::new();
        seed.update(b"herald console session keys v1");
        for token in tokens {
            let value = crate::settings::api::resolve(&token.token).unwrap_or_default();
            for part in [token.name.as_bytes(), value.as_bytes()] {
                seed.update((part.len() as u64).to_be_bytes());
                seed.update(part);
            }
        }
        let seed: [u8; 32] = seed.finalize().into();
        Self {
            session: mac(&seed, b"session"),
            csrf: mac(&seed, b"csrf"),
        }
    }

    /// A cookie value for token `name` with `scope`, valid until `expires` (Unix seconds).
    fn sign(&self, name: &str, scope: AdminScope, expires: i64) -> String {
        let body = format!("{}.{expires}.{}", scope_text(scope), hex(name.as_bytes()));
        let signature = hex(&mac(&self.session, body.as_bytes()));
        format!("{body}.{signature}")
    }

    /// The session a cookie value stands for, when its signature holds and it has not expired.
    fn verify(&self, value: &str, now: i64) -> Option<Session> {
        let (body, signature) = value.rsplit_once('.')?;
        let expected = hex(&mac(&self.session, body.as_bytes()));
        if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
            return None;
        }
        let mut parts = body.split('.');
        let scope = match parts.next()? {
            "read" => AdminScope::Read,
            "write" => AdminScope::Write,
            _ => return None,
        };
        let expires: i64 = parts.next()?.parse().ok()?;
        let name = String::from_utf8(unhex(parts.next()?)?).ok()?;
        if expires <= now || parts.next().is_some() {
            return None;
        }
        Some(Session {
            name,
            scope,
            csrf: hex(&mac(&self.csrf, value.as_bytes())),
        })
    }
}

fn mac(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn scope_text(scope: AdminScope) -> &'static str {
    match scope {
        AdminScope::Read => "read",
        AdminScope::Write => "write",
    }
}

/// A signed-in browser: which admin token signed in, with which scope.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token's name (from `api.admin_tokens`), shown in the page header and in logs.
    pub name: String,
    pub scope: AdminScope,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Session {
    /// Whether this session may see and press the buttons that write.
    pub fn can_write(&self) -> bool {
        self.scope >= AdminScope::Write
    }

    /// The API's caller for this session, to call its handlers with.
    pub fn admin<const WRITE: bool>(&self) -> Admin<WRITE> {
        Admin {
            name: format!("{} (console)", self.name),
            scope: self.scope,
        }
    }

    /// Refuses a post whose form lacks this session's CSRF token, or that needs write scope
    /// (`write`) from a read-only session.
    pub fn check_post(&self, presented: Option<&str>, write: bool) -> Result<(), ConsoleError> {
        let presented = presented.unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes())) {
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "This form is missing its security token or it is out of date. Reload the page \
                 and try again.",
            ));
        }
        if write && !self.can_write() {
            return Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "You signed in with a read-only token; this action needs the write scope.",
            ));
        }
        Ok(())
    }
}

/// The session cookie's value in `headers`, if any.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

impl FromRequestParts<Console> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let session = cookie(&parts.headers)
            .and_then(|value| console.keys.verify(value, Utc::now().timestamp()));
        let Some(session) = session else {
            // A poll or an htmx form of an expired session sends the whole page to sign-in,
            // rather than swapping the sign-in page into a table.
            if parts.headers.contains_key("hx-request") {
                return Err((
                    StatusCode::UNAUTHORIZED,
                    [("hx-redirect", "/console/login")],
                )
                    .into_response());
            }
            return Err(if parts.method == axum::http::Method::GET {
                Redirect::to("/console/login").into_response()
            } else {
                ConsoleError::new(
                    StatusCode::UNAUTHORIZED,
                    "You are not signed in (or the session expired). Sign in again.",
                )
                .into_response()
            });
        };
        // A browser says where a request comes from; one from another site is refused even
        // with a valid token (the cookie's SameSite=Strict already keeps it from being sent).
        if parts.method != axum::http::Method::GET
            && parts
                .headers
                .get("sec-fetch-site")
                .is_some_and(|site| site == "cross-site")
        {
            return Err(
                ConsoleError::new(StatusCode::FORBIDDEN, "Cross-site posts are refused.")
                    .into_response(),
            );
        }
        Ok(session)
    }
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login_page() -> Response {
    login_form(None, StatusCode::OK)
}

fn login_form(problem: Option<&str>, status: StatusCode) -> Response {
    let body = html! {
        h1 { "Sign in" }
        p { "Sign in with an admin token (" code { "api.admin_tokens" } "). A read-only token \
             shows everything and changes nothing." }
        @if let Some(problem) = problem {
            p.error role="alert" { (problem) }
        }
        form method="post" action="/console/login" {
            label for="token" { "Admin token" }
            input #token type="password" name="token" autocomplete="current-password" required
                autofocus;
            button type="submit" { "Sign in" }
        }
    };
    (status, layout::page("Sign in", None, body)).into_response()
}

pub async fn login(State(console): State<Console>, Form(form): Form<LoginForm>) -> Response {
    // The API's own check: constant-time comparison, publishable keys refused.
    let request = Request::builder()
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", form.token.trim()),
        )
        .body(())
        .map(|r| r.into_parts().0);
    let admin = match request {
        Ok(mut parts) => Admin::<false>::from_request_parts(&mut parts, &console.api)
            .await
            .ok(),
        Err(_) => None,
    };
    let Some(admin) = admin else {
        return login_form(
            Some("That is not an admin token of this server."),
            StatusCode::UNAUTHORIZED,
        );
    };
    let expires = Utc::now().timestamp() + SESSION_TTL.as_secs() as i64;
    let value = console.keys.sign(&admin.name, admin.scope, expires);
    tracing::info!(token = %admin.name, "console sign-in");
    let mut response = Redirect::to("/console/workspaces").into_response();
    set_cookie(&mut response, &value, SESSION_TTL.as_secs(), console.secure);
    response
}

/// The form of the sign-out button.
#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn logout(
    State(console): State<Console>,
    session: Session,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    session.check_post(form.csrf.as_deref(), false)?;
    let mut response = Redirect::to("/console/login").into_response();
    set_cookie(&mut response, "", 0, console.secure);
    Ok(response)
}

fn set_cookie(response: &mut Response, value: &str, max_age: u64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    // Hex digits, dots and ASCII attributes only: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Secret;

    fn keys(token: &str) -> Keys {
        Keys::new(&[AdminToken {
            name: "ops".into(),
            token: Secret::new(token),
            scope: AdminScope::Write,
        }])
    }

    #[test]
    fn a_signed_cookie_is_accepted_until_it_expires() {
        let keys = keys("a-token-of-at-least-24-bytes");
        let value = keys.sign("ops.team", AdminScope::Read, 1_000);
        let session = keys.verify(&value, 999).expect("valid");
        assert_eq!(session.name, "ops.team");
        assert_eq!(session.scope, AdminScope::Read);
        assert!(!session.can_write());
        assert!(keys.verify(&value, 1_000).is_none(), "expired");
    }

    #[test]
    fn a_changed_cookie_or_another_key_is_refused() {
        let keys = keys("a-token-of-at-least-24-bytes");
        let value = keys.sign("ops", AdminScope::Read, 1_000);
        let upgraded = value.replacen("read", "write", 1);
        assert!(keys.verify(&upgraded, 0).is_none(), "scope changed");
        let later = value.replacen("1000", "9999", 1);
        assert!(keys.verify(&later, 0).is_none(), "expiry changed");
        let other = self::keys("another-token-of-24-bytes-or-more");
        assert!(other.verify(&value, 0).is_none(), "tokens changed");
        assert!(keys.verify("write.1000.6f7073", 0).is_none(), "unsigned");
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session_and_is_checked() {
        let keys = keys("a-token-of-at-least-24-bytes");
        let one = keys
            .verify(&keys.sign("ops", AdminScope::Write, 10), 0)
            .unwrap();
        let two = keys
            .verify(&keys.sign("ops", AdminScope::Write, 11), 0)
            .unwrap();
        assert_ne!(one.csrf, two.csrf);
        assert!(one.check_post(Some(&one.csrf), true).is_ok());
        assert!(one.check_post(Some(&two.csrf), false).is_err());
        assert!(one.check_post(None, false).is_err());
        let read = keys
            .verify(&keys.sign("ro", AdminScope::Read, 10), 0)
            .unwrap();
        assert!(read.check_post(Some(&read.csrf), false).is_ok());
        assert_eq!(
            read.check_post(Some(&read.csrf), true).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_off_loopback_only() {
        for (secure, expected) in [(true, "; Secure"), (false, "")] {
            let mut response = Response::new(axum::body::Body::empty());
            set_cookie(&mut response, "write.1.00.ff", 60, secure);
            let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
            assert_eq!(
                cookie,
                format!(
                    "herald_console=write.1.00.ff; Path=/console; HttpOnly; SameSite=Strict; \
                     Max-Age=60{expected}"
                )
            );
        }
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_console=read.1.00.ff; b=2"),
        );
        assert_eq!(cookie(&headers), Some("read.1.00.ff"));
    }
}
