//! A workspace's deliveries: the filtered table, newest first, in cursor pages; its first page
//! polls for changes while open (as does one delivery's page, [`super::delivery`]).
//!
//! Polling, not a stream: each poll is one bounded query (one page, or one delivery) answered
//! from the history store, and a closed tab stops asking; nothing is held open per viewer.

use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime};
use maud::{Markup, html};

use super::Console;
use super::layout::{self, ConsoleError};
use super::session::Session;
use crate::api::deliveries::{self as api_deliveries, DeliveryList};
use crate::model::records::{DeliveryRecord, DeliveryStatus};

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
