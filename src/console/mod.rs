//! The web console at `/console`: one server-rendered page per question an operator asks
//! ("did Acme's HubSpot get last night's events, and if not why?") and the buttons that fix the
//! answer, served by the same binary as the API.
//!
//! - [`session`]: sign-in with an admin token into a signed, expiring cookie; the CSRF token of
//!   every form; read-only sessions, which see no write buttons and whose writes are refused;
//! - [`workspaces`]: every workspace with its last 24 hours of deliveries counted, and one
//!   workspace's connections (health), rules (as written) and recent deliveries;
//! - [`deliveries`]: the filtered, paged, live-updating delivery table;
//! - [`delivery`]: one delivery with its attempts and the request it sends; replaying it;
//! - [`actions`]: redriving a connection after a dry run, and a rule's test event;
//! - [`layout`]: the page shell, status badges, errors as HTML.
//!
//! Pages are HTML (maud); the one script is htmx, vendored under `assets/` and served from
//! here, so the console needs no network access beyond this server. Every action works as a
//! plain form post too; htmx only swaps the answer into the page and polls for changes.
//! The console calls the API's handlers as functions, so each rule of the API (scopes, limits,
//! one bulk action at a time) holds here too.

pub mod actions;
pub mod deliveries;
pub mod delivery;
pub mod layout;
pub mod session;
pub mod workspaces;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};

use crate::api::ApiState;

/// What the console's handlers share; cheap to clone.
#[derive(Clone)]
pub struct Console {
    pub api: ApiState,
    keys: Arc<session::Keys>,
    /// Whether cookies carry `Secure` (everywhere but a loopback listener, where the browser
    /// talks plain HTTP to its own machine).
    secure: bool,
}

/// Whether `listen` (an `http.listen` address) is loopback only.
pub fn is_loopback(listen: &str) -> bool {
    match listen.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => listen.starts_with("localhost:"),
    }
}

/// The console's routes, all under `/console`, to merge beside the API's.
pub fn router(api: ApiState) -> Router {
    let body_limit = api.settings.api.max_body_bytes;
    let console = Console {
        keys: Arc::new(session::Keys::new(&api.settings.api.admin_tokens)),
        secure: !is_loopback(&api.settings.http.listen),
        api,
    };
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/workspaces") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/workspaces") }),
        )
        .route(
            "/console/login",
            get(session::login_page).post(session::login),
        )
        .route("/console/logout", post(session::logout))
        .route("/console/assets/htmx.min.js", get(htmx))
        .route("/console/assets/console.css", get(css))
        .route("/console/workspaces", get(workspaces::list))
        .route("/console/workspaces/{id}", get(workspaces::one))
        .route("/console/workspaces/{id}/deliveries", get(deliveries::list))
        .route(
            "/console/workspaces/{id}/deliveries/rows",
            get(deliveries::rows),
        )
        .route(
            "/console/workspaces/{id}/deliveries/{delivery_id}",
            get(delivery::one),
        )
        .route(
            "/console/workspaces/{id}/deliveries/{delivery_id}/live",
            get(delivery::live),
        )
        .route(
            "/console/workspaces/{id}/deliveries/{delivery_id}/replay",
            post(delivery::replay),
        )
        .route(
            "/console/workspaces/{id}/deliveries/{delivery_id}/request",
            post(delivery::request),
        )
        .route("/console/workspaces/{id}/redrive", post(actions::redrive))
        .route(
            "/console/workspaces/{id}/test-event",
            get(actions::test_event_page).post(actions::test_event),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(console)
}

const HTMX: &[u8] = include_bytes!("assets/htmx.min.js");
const CSS: &[u8] = include_bytes!("assets/console.css");

async fn htmx() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        HTMX,
    )
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listeners_go_without_secure_cookies() {
        assert!(is_loopback("127.0.0.1:7780"));
        assert!(is_loopback("[::1]:7780"));
        assert!(is_loopback("localhost:7780"));
        assert!(!is_loopback("0.0.0.0:8080"));
        assert!(!is_loopback("10.0.0.5:8080"));
        assert!(!is_loopback("herald.internal:8080"));
    }
}
