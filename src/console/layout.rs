//! The page shell every console page shares (header, navigation, sign-out), status badges,
//! times, and errors as HTML pages. maud escapes every value put into a page.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::api::error::ApiError;
use crate::model::records::DeliveryStatus;

/// A whole page: `title`, the signed-in header when there is a session, and `body`.
pub fn page(title: &str, session: Option<&Session>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Errors are swapped in too, so that a refused action says why.
                meta name="htmx-config" content=r#"{"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;
                title { (title) " · Herald console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/htmx.min.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        a.brand href="/console/workspaces" { "Herald console" }
                        @if let Some(session) = session {
                            a href="/console/workspaces" { "Workspaces" }
                            span.who {
                                "Signed in as " strong { (session.name) }
                                @if !session.can_write() { " (read-only)" }
                            }
                            form.inline method="post" action="/console/logout" {
                                (csrf_field(session))
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// The hidden CSRF field every form of a session carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// Whether the request came from htmx, which wants only the fragment it swaps in.
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request")
}

/// `fragment` alone for htmx, else inside a whole page.
pub fn respond(headers: &HeaderMap, title: &str, session: &Session, fragment: Markup) -> Response {
    if is_htmx(headers) {
        Html(fragment.into_string()).into_response()
    } else {
        page(title, Some(session), fragment).into_response()
    }
}

/// A delivery status in colour and in words (the colour alone says nothing to everyone).
pub fn status_badge(status: DeliveryStatus) -> Markup {
    let s = status.as_str();
    html! { span class={ "status status-" (s) } { (s) } }
}

/// A time as people read it, in UTC, with the exact value for machines.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// An error answered as a page; the message is written for the person at the browser.
#[derive(Debug)]
pub struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
    /// Answer only the message, for htmx to swap into the page that asked.
    fragment: bool,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            fragment: false,
        }
    }

    /// The same error, as a fragment when the request came from htmx.
    pub fn within(self, headers: &HeaderMap) -> Self {
        Self {
            fragment: is_htmx(headers),
            ..self
        }
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        let mut message = e.message;
        for field in &e.fields {
            message.push_str(&format!("; {}: {}", field.path, field.message));
        }
        if let Some(after) = e.retry_after {
            message.push_str(&format!(" (try again in {} s)", after.as_secs().max(1)));
        }
        Self::new(e.status, message)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if self.fragment {
            let alert = html! { p.error role="alert" { (self.message) } };
            return (self.status, Html(alert.into_string())).into_response();
        }
        let body = html! {
            h1 { "Something went wrong" }
            p.error role="alert" { (self.message) }
            p { a href="/console/workspaces" { "Back to the workspaces" } }
        };
        (self.status, page("Error", None, body)).into_response()
    }
}
