//! One delivery: every attempt with time, outcome, status code, latency and error (polled, so
//! a replay or redrive shows its outcome without a reload); the request it sends, rendered
//! again from its event; replaying it.

use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::Console;
use super::deliveries::{POLL_SECONDS, path_segment};
use super::layout::{self, ConsoleError};
use super::session::Session;
use crate::api::deliveries as api_deliveries;
use crate::api::test_event::{self, TestEventQuery};
use crate::model::records::DeliveryRecord;
use crate::ops::replay_delivery::find_event;

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
