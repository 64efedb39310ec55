//! A workspace's deliveries: the filtered table (newest first, cursor pages; its first page
//! polls for changes while open), one delivery with every attempt (polled too, so a replay or
//! redrive shows its outcome without a reload), and replaying it.
//!
//! Polling, not a stream: each poll is one bounded query (one page, or one delivery) answered
//! from the history store, and a closed tab stops asking; nothing is held open per viewer.

use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::Console;
use super::layout::{self, ConsoleError};
use super::session::Session;
use crate::api::deliveries::{self as api_deliveries, DeliveryList};
use crate::api::test_event::{self, TestEventQuery};
use crate::model::records::{DeliveryRecord, DeliveryStatus};
use crate::ops::replay_delivery::find_event;

/// How often an open page asks for changes, in seconds.
pub const POLL_SECONDS: u32 = 2;

/// `text` as one URL path segment (or query value): unreserved characters kept, the rest
/// percent-encoded.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The filters of the deliveries page, as the form sent them (empty fields dropped).
#[derive(Debug, Default, Clone)]
pub struct Filters {
    statuses: Vec<String>,
    event: Option<String>,
    event_id: Option<String>,
    rule: Option<String>,
    connection: Option<String>,
    /// As typed (`datetime-local`, read as UTC) or RFC 3339.
    since: Option<String>,
    until: Option<String>,
    cursor: Option<String>,
}

impl Filters {
    fn parse(raw: &str) -> Self {
        let mut filters = Self::default();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let value = value.trim().to_owned();
            if value.is_empty() {
                continue;
            }
            match &*name {
                "status" => filters.statuses.push(value),
                "event" => filters.event = Some(value),
                "event_id" => filters.event_id = Some(value),
                "rule" => filters.rule = Some(value),
                "connection" => filters.connection = Some(value),
                "since" => filters.since = Some(value),
                "until" => filters.until = Some(value),
                "cursor" => filters.cursor = Some(value),
                // Anything else is not a filter of this page; the form never sends it.
                _ => {}
            }
        }
        filters
    }

    /// The query string of these filters, for links (`with_cursor`: keep the page).
    fn query(&self, with_cursor: bool, api_times: bool) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for s in &self.statuses {
            q.append_pair("status", s);
        }
        let time = |t: &String| if api_times { rfc3339(t) } else { t.clone() };
        for (name, value) in [
            ("event", self.event.clone()),
            ("event_id", self.event_id.clone()),
            ("rule", self.rule.clone()),
            ("connection", self.connection.clone()),
            ("since", self.since.as_ref().map(time)),
            ("until", self.until.as_ref().map(time)),
        ] {
            if let Some(v) = value {
                q.append_pair(name, &v);
            }
        }
        if with_cursor && let Some(c) = &self.cursor {
            q.append_pair("cursor", c);
        }
        q.finish()
    }
}

/// A `datetime-local` value (`2026-03-21T14:00`, read as UTC) as RFC 3339; anything else as
/// it is, for the API's parser to name.
fn rfc3339(text: &str) -> String {
    if DateTime::parse_from_rfc3339(text).is_ok() {
        return text.to_owned();
    }
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map_or_else(|| text.to_owned(), |t| t.and_utc().to_rfc3339())
}

/// One page of deliveries, through the API's handler.
async fn page_of(
    console: &Console,
    session: &Session,
    workspace: &str,
    filters: &Filters,
) -> Result<DeliveryList, ConsoleError> {
    let answer = api_deliveries::list(
        session.admin(),
        State(console.api.clone()),
        Path(workspace.to_owned()),
        RawQuery(Some(filters.query(true, true))),
    )
    .await?;
    Ok(answer.0)
}

pub async fn list(
    State(console): State<Console>,
    session: Session,
    Path(workspace): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let filters = Filters::parse(raw.as_deref().unwrap_or(""));
    let page = page_of(&console, &session, &workspace, &filters).await?;
    let base = format!("/console/workspaces/{}", path_segment(&workspace));
    let (rules, connections) = match crate::api::connections::ready(&console.api, &workspace) {
        Ok(ws) => (
            ws.rules.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            ws.connections.iter().map(|(id, _)| id.clone()).collect(),
        ),
        Err(_) => (Vec::new(), Vec::new()),
    };
    // Only the newest page follows changes: older pages hold still while being read.
    let live = filters
        .cursor
        .is_none()
        .then(|| format!("{base}/deliveries/rows?{}", filters.query(false, false)));
    let body = html! {
        h1 { "Deliveries of " a href=(base) { (workspace) } }
        form.filters method="get" action={ (base) "/deliveries" } {
            fieldset {
                legend { "Filters" }
                fieldset.statuses {
                    legend { "Status" }
                    @for s in DeliveryStatus::ALL {
                        span.check {
                            input id={ "f-status-" (s.as_str()) } type="checkbox" name="status"
                                value=(s.as_str())
                                checked[filters.statuses.iter().any(|f| f == s.as_str())];
                            label for={ "f-status-" (s.as_str()) } { (s.as_str()) }
                        }
                    }
                }
                (text_field("f-event", "event", "Event name", filters.event.as_deref()))
                (choice("f-rule", "rule", "Rule", &rules, filters.rule.as_deref()))
                (choice("f-connection", "connection", "Connection", &connections,
                    filters.connection.as_deref()))
                (text_field("f-event-id", "event_id", "Event id", filters.event_id.as_deref()))
                div.field {
                    label for="f-since" { "Updated from (UTC)" }
                    input #f-since type="datetime-local" name="since" value=[&filters.since];
                }
                div.field {
                    label for="f-until" { "Updated before (UTC)" }
                    input #f-until type="datetime-local" name="until" value=[&filters.until];
                }
                div.buttons {
                    button type="submit" { "Filter" }
                    a href={ (base) "/deliveries" } { "Clear" }
                }
            }
        }
        @if live.is_some() {
            p.note { "Newest first; this page updates every " (POLL_SECONDS) " s while open." }
        }
        div.scroll { table #deliveries {
            (table_head())
            (delivery_rows(&workspace, &page.deliveries, live.as_deref()))
        } }
        nav.pages aria-label="Pages" {
            @if filters.cursor.is_some() {
                a href={ (base) "/deliveries?" (filters.query(false, false)) } { "Newest" }
            }
            @if let Some(next) = &page.next {
                @let older = Filters { cursor: Some(next.clone()), ..filters.clone() };
                a href={ (base) "/deliveries?" (older.query(true, false)) } { "Older" }
            }
        }
    };
    Ok(layout::page(&format!("Deliveries of {workspace}"), Some(&session), body).into_response())
}

/// The polled rows of the first page.
pub async fn rows(
    State(console): State<Console>,
    session: Session,
    Path(workspace): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let mut filters = Filters::parse(raw.as_deref().unwrap_or(""));
    filters.cursor = None;
    let page = page_of(&console, &session, &workspace, &filters).await?;
    let live = format!(
        "/console/workspaces/{}/deliveries/rows?{}",
        path_segment(&workspace),
        filters.query(false, false)
    );
    Ok(
        Html(delivery_rows(&workspace, &page.deliveries, Some(&live)).into_string())
            .into_response(),
    )
}

pub fn table_head() -> Markup {
    html! {
        thead { tr {
            th scope="col" { "Updated" }
            th scope="col" { "Status" }
            th scope="col" { "Event" }
            th scope="col" { "Rule" }
            th scope="col" { "Connection" }
            th scope="col" { "Attempts" }
            th scope="col" { "Delivery" }
        } }
    }
}

/// The table body; with `live`, it replaces itself with that URL's answer every few seconds.
pub fn delivery_rows(workspace: &str, deliveries: &[DeliveryRecord], live: Option<&str>) -> Markup {
    let base = format!("/console/workspaces/{}/deliveries", path_segment(workspace));
    html! {
        tbody #rows hx-get=[live] hx-trigger=[live.map(|_| format!("every {POLL_SECONDS}s"))]
            hx-swap=[live.map(|_| "outerHTML")] {
            @if deliveries.is_empty() {
                tr { td colspan="7" { "No deliveries match." } }
            }
            @for d in deliveries {
                tr {
                    td { (layout::time(d.updated_at)) }
                    td { (layout::status_badge(d.status)) }
                    td { code { (d.event) } br; small { (d.event_id) } }
                    td { (d.rule_id.as_deref().unwrap_or("–")) }
                    td { (d.connection_id.as_deref().unwrap_or("–")) }
                    td.num { (d.attempts.len()) }
                    td { a href={ (base) "/" (path_segment(&d.delivery_id)) } { (d.delivery_id) } }
                }
            }
        }
    }
}

/// One delivery, through the API's handler.
async fn record(
    console: &Console,
    session: &Session,
    workspace: &str,
    delivery_id: &str,
) -> Result<DeliveryRecord, ConsoleError> {
    let answer = api_deliveries::get(
        session.admin(),
        State(console.api.clone()),
        Path((workspace.to_owned(), delivery_id.to_owned())),
    )
    .await?;
    Ok(answer.0)
}

pub async fn one(
    State(console): State<Console>,
    session: Session,
    Path((workspace, delivery_id)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let d = record(&console, &session, &workspace, &delivery_id).await?;
    let ws = format!("/console/workspaces/{}", path_segment(&workspace));
    let url = format!("{ws}/deliveries/{}", path_segment(&delivery_id));
    let body = html! {
        p { a href={ (ws) "/deliveries" } { "← Deliveries of " (workspace) } }
        h1 { "Delivery " code { (d.delivery_id) } }
        dl.facts {
            dt { "Event" } dd { code { (d.event) } " · id " code { (d.event_id) } }
            dt { "Rule" } dd { (d.rule_id.as_deref().unwrap_or("–")) }
            dt { "Connection" } dd {
                (d.connection_id.as_deref().unwrap_or("–"))
                @if let Some(dest) = &d.destination { " (" (dest) ")" }
            }
            dt { "Action" } dd { (d.action.as_deref().unwrap_or("–")) }
            dt { "Created" } dd { (layout::time(d.created_at)) }
        }
        (live_section(&url, &d))
        @if session.can_write() {
            h2 { "Actions" }
            div.actions {
                form method="post" action={ (url) "/replay" } hx-post={ (url) "/replay" }
                    hx-target="#replay-result" {
                    (layout::csrf_field(&session))
                    button type="submit" { "Replay this delivery" }
                }
                div #replay-result aria-live="polite" {}
                @if let Some(connection) = &d.connection_id {
                    form method="post" action={ (ws) "/redrive" } hx-post={ (ws) "/redrive" }
                        hx-target="#redrive-result" {
                        (layout::csrf_field(&session))
                        input type="hidden" name="connection" value=(connection);
                        button type="submit" {
                            "Redrive " (connection) "'s failed and dead deliveries…"
                        }
                    }
                    div #redrive-result aria-live="polite" {}
                }
            }
        }
        h2 { "Request" }
        p.note { "The request this delivery sends, rendered again from its event with the \
                  rule as it is now (credentials and signatures redacted). Finding the event \
                  reads the events topic around the delivery's time; it takes a moment." }
        form method="post" action={ (url) "/request" } hx-post={ (url) "/request" }
            hx-target="#request-result" {
            (layout::csrf_field(&session))
            button type="submit" { "Show the request it sends" }
        }
        div #request-result aria-live="polite" {}
    };
    Ok(layout::page(&format!("Delivery {delivery_id}"), Some(&session), body).into_response())
}

/// The part of a delivery that changes: status, reason, attempts. Polls itself.
fn live_section(url: &str, d: &DeliveryRecord) -> Markup {
    html! {
        section #live hx-get={ (url) "/live" } hx-trigger={ "every " (POLL_SECONDS) "s" }
            hx-swap="outerHTML" aria-labelledby="live-title" {
            h2 #live-title { "Status " span #status { (layout::status_badge(d.status)) } }
            dl.facts {
                dt { "Updated" } dd { (layout::time(d.updated_at)) }
                @if let Some(reason) = &d.reason { dt { "Reason" } dd.reason { (reason) } }
                @if let Some(next) = d.next_attempt_at {
                    dt { "Next attempt" } dd { (layout::time(next)) }
                }
            }
            h3 { "Attempts" }
            div.scroll { table {
                thead { tr {
                    th scope="col" { "#" }
                    th scope="col" { "Time" }
                    th scope="col" { "Outcome" }
                    th scope="col" { "HTTP status" }
                    th scope="col" { "Latency" }
                    th scope="col" { "Error (response excerpt, credentials redacted)" }
                } }
                tbody {
                    @if d.attempts.is_empty() { tr { td colspan="6" { "No attempt yet." } } }
                    @for (i, a) in d.attempts.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td { (layout::time(a.at)) }
                            td { span class={ "outcome outcome-" (a.outcome) } { (a.outcome) } }
                            td.num { (a.status_code.map_or(String::from("–"), |c| c.to_string())) }
                            td.num { (a.latency_ms) " ms" }
                            td.reason { (a.error.as_deref().unwrap_or("–")) }
                        }
                    }
                }
            } }
        }
    }
}

pub async fn live(
    State(console): State<Console>,
    session: Session,
    Path((workspace, delivery_id)): Path<(String, String)>,
) -> Result<Response, ConsoleError> {
    let d = record(&console, &session, &workspace, &delivery_id).await?;
    let url = format!(
        "/console/workspaces/{}/deliveries/{}",
        path_segment(&workspace),
        path_segment(&delivery_id)
    );
    Ok(Html(live_section(&url, &d).into_string()).into_response())
}

/// A form whose only field is its CSRF token.
#[derive(Deserialize)]
pub struct Plain {
    csrf: Option<String>,
}

pub async fn replay(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Path((workspace, delivery_id)): Path<(String, String)>,
    Form(form): Form<Plain>,
) -> Result<Response, ConsoleError> {
    let done = async {
        session.check_post(form.csrf.as_deref(), true)?;
        let (_, answer) = api_deliveries::replay(
            session.admin(),
            State(console.api.clone()),
            Path((workspace.clone(), delivery_id.clone())),
        )
        .await?;
        Ok::<_, ConsoleError>(answer.0.enqueued)
    }
    .await
    .map_err(|e| e.within(&headers))?;
    let fragment = html! {
        p.ok role="status" {
            "Replay enqueued: attempt " (done.attempt) ", due " (layout::time(done.due_at))
            ". The status above follows it."
        }
    };
    Ok(layout::respond(&headers, "Replay", &session, fragment))
}

/// How long finding a delivery's event may take before the answer says to try again.
const FIND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn request(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Path((workspace, delivery_id)): Path<(String, String)>,
    Form(form): Form<Plain>,
) -> Result<Response, ConsoleError> {
    let shown = async {
        session.check_post(form.csrf.as_deref(), false)?;
        let d = record(&console, &session, &workspace, &delivery_id).await?;
        let api = &console.api;
        // Finding the event scans a topic: one such scan at a time, as for bulk actions.
        let _running = api.bulk.try_enter()?;
        let found = tokio::time::timeout(FIND_TIMEOUT, find_event(&api.settings, &d))
            .await
            .map_err(|_| {
                ConsoleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Finding the event took too long; try again.",
                )
            })?
            .map_err(|e| {
                tracing::warn!(error = %crate::model::error_chain(&e), "event lookup failed");
                ConsoleError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Kafka could not be read to find the event; try again.",
                )
            })?;
        let Some((_, event)) = found else {
            return Ok(html! {
                p.note role="status" {
                    "The event " code { (d.event_id) } " is no longer in the events topic \
                     (retention), so its request cannot be shown."
                }
            });
        };
        let body = json!({
            "event": event.event,
            "event_id": event.event_id,
            "resource": event.resource,
            "resource_id": event.resource_id,
            "payload": event.payload,
            "occurred_at": event.occurred_at,
            "rule": d.rule_id,
        });
        let answer = test_event::post(
            session.admin(),
            State(api.clone()),
            Path(workspace.clone()),
            Ok(Query(TestEventQuery { send: false })),
            Ok(Bytes::from(body.to_string())),
        )
        .await?;
        Ok::<_, ConsoleError>(super::actions::answer_view(&answer.0))
    }
    .await
    .map_err(|e| e.within(&headers))?;
    Ok(layout::respond(&headers, "Request", &session, shown))
}

fn text_field(id: &str, name: &str, label: &str, value: Option<&str>) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) type="text" name=(name) value=[value];
        }
    }
}

fn choice(id: &str, name: &str, label: &str, options: &[String], value: Option<&str>) -> Markup {
    html! {
        div.field {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[value == Some(o.as_str())] { (o) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_fields_are_dropped_and_local_times_read_as_utc() {
        let f = Filters::parse(
            "status=failed&status=dead&event=&rule=r+1&since=2026-03-21T14%3A00&until=&x=1",
        );
        assert_eq!(f.statuses, ["failed", "dead"]);
        assert_eq!(f.event, None);
        assert_eq!(
            f.query(false, true),
            "status=failed&status=dead&rule=r+1&since=2026-03-21T14%3A00%3A00%2B00%3A00"
        );
        let query = api_deliveries::parse_query("ws", &f.query(false, true)).unwrap();
        assert_eq!(
            query.since.unwrap().to_rfc3339(),
            "2026-03-21T14:00:00+00:00"
        );
        assert_eq!(query.rule_id.as_deref(), Some("r 1"));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("dl_ab-1.x~"), "dl_ab-1.x~");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }
}
