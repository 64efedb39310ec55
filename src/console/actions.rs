//! The console's bulk and trial actions, each through the API's handler: redriving a
//! connection's failed and dead deliveries (first a dry run that counts them, then a confirmed
//! run), and a rule's test event (the rendered request, and with the write scope the outcome
//! of sending it once).

use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Console;
use super::deliveries::path_segment;
use super::layout::{self, ConsoleError};
use super::session::Session;
use crate::api::recovery::{self, RedriveRequest};
use crate::api::test_event::{self, TestEventAnswer, TestEventQuery};

/// Delivery ids a dry run lists before asking to confirm.
const LISTED: usize = 10;

/// The redrive form: the connection, and `confirm` on the second step.
#[derive(Deserialize)]
pub struct RedriveForm {
    csrf: Option<String>,
    connection: String,
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn redrive(
    State(console): State<Console>,
    session: Session,
    headers: HeaderMap,
    Path(workspace): Path<String>,
    Form(form): Form<RedriveForm>,
) -> Result<Response, ConsoleError> {
    let dry_run = form.confirm.is_none();
    let answer = async {
        session.check_post(form.csrf.as_deref(), true)?;
        let request = RedriveRequest {
            connection: Some(form.connection.clone()),
            dry_run,
            ..Default::default()
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let answer = recovery::redrive_deliveries(
            session.admin(),
            State(console.api.clone()),
            Path(workspace.clone()),
            Ok(Bytes::from(body)),
        )
        .await?;
        Ok::<_, ConsoleError>(answer.0)
    }
    .await
    .map_err(|e| e.within(&headers))?;
    let action = format!("/console/workspaces/{}/redrive", path_segment(&workspace));
    let connection = &form.connection;
    let fragment = html! {
        div.redrive {
            @if !dry_run {
                p.ok role="status" {
                    "Redrive enqueued " strong #redriven { (answer.count) } " of "
                    (connection) "'s deliveries. Each one's status follows on its page and in \
                    the deliveries table."
                }
            } @else if answer.count == 0 {
                p role="status" { "No failed or dead delivery of " (connection) " to redrive." }
            } @else {
                p role="status" {
                    strong #redrive-count { (answer.count) }
                    " failed or dead deliveries of " (connection) " would be sent again"
                    @if answer.count > LISTED { " (the oldest " (LISTED) " below)" } ":"
                }
                ul { @for id in answer.delivery_ids.iter().take(LISTED) { li { code { (id) } } } }
                form method="post" action=(action) hx-post=(action)
                    hx-target="closest .redrive" hx-swap="outerHTML" {
                    (layout::csrf_field(&session))
                    input type="hidden" name="connection" value=(connection);
                    input type="hidden" name="confirm" value="yes";
                    button.danger type="submit" { "Confirm: redrive " (answer.count) }
                }
            }
        }
    };
    Ok(layout::respond(&headers, "Redrive", &session, fragment))
}

/// The test-event page's query: the rule to preselect.
#[derive(Deserialize, Default)]
pub struct RuleQuery {
    #[serde(default)]
    rule: Option<String>,
}

pub async fn test_event_page(
    State(console): State<Console>,
    session: Session,
    Path(workspace): Path<String>,
    Query(query): Query<RuleQuery>,
) -> Result<Response, ConsoleError> {
    let ws = crate::api::connections::ready(&console.api, &workspace)?;
    let rules: Vec<String> = ws.rules.iter().map(|r| r.id.clone()).collect();
    let form = TestEventForm {
        rule: query.rule,
        payload: "{}".into(),
        ..Default::default()
    };
    let body = test_event_form(&session, &workspace, &rules, &form, None);
    Ok(layout::page("Test event", Some(&session), body).into_response())
}

/// The test-event form.
#[derive(Deserialize, Default)]
pub struct TestEventForm {
    csrf: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    send: Option<String>,
}

pub async fn test_event(
    State(console): State<Console>,
    session: Session,
    Path(workspace): Path<String>,
    Form(form): Form<TestEventForm>,
) -> Result<Response, ConsoleError> {
    let send = form.send.is_some();
    session.check_post(form.csrf.as_deref(), send)?;
    let ws = crate::api::connections::ready(&console.api, &workspace)?;
    let rules: Vec<String> = ws.rules.iter().map(|r| r.id.clone()).collect();
    let result = async {
        let text = form.payload.trim();
        let payload: Map<String, Value> = if text.is_empty() {
            Map::new()
        } else {
            serde_json::from_str(text).map_err(|e| {
                ConsoleError::new(
                    StatusCode::BAD_REQUEST,
                    format!("The payload is not a JSON object: {e}"),
                )
            })?
        };
        let mut body = json!({ "payload": payload });
        for (name, value) in [("rule", &form.rule), ("event", &form.event)] {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                body[name] = json!(value);
            }
        }
        let answer = test_event::post(
            session.admin(),
            State(console.api.clone()),
            Path(workspace.clone()),
            Ok(Query(TestEventQuery { send })),
            Ok(Bytes::from(body.to_string())),
        )
        .await?;
        Ok::<_, ConsoleError>(answer.0)
    }
    .await;
    let shown = match &result {
        Ok(answer) => answer_view(answer),
        Err(e) => html! { p.error role="alert" { (e.message) } },
    };
    let body = test_event_form(&session, &workspace, &rules, &form, Some(shown));
    let status = result
        .as_ref()
        .map_or_else(|e| e.status, |_| StatusCode::OK);
    Ok((status, layout::page("Test event", Some(&session), body)).into_response())
}

fn test_event_form(
    session: &Session,
    workspace: &str,
    rules: &[String],
    form: &TestEventForm,
    answer: Option<Markup>,
) -> Markup {
    let base = format!("/console/workspaces/{}", path_segment(workspace));
    html! {
        p { a href=(base) { "← Workspace " (workspace) } }
        h1 { "Test event" }
        p { "Renders the rule as the processor would, and shows the requests its connection \
             would send (credentials and signatures redacted). Nothing goes to Kafka or the \
             history." }
        form method="post" action={ (base) "/test-event" } {
            (layout::csrf_field(session))
            div.field {
                label for="t-rule" { "Rule" }
                select #t-rule name="rule" {
                    option value="" { "every rule the event matches" }
                    @for r in rules {
                        option value=(r) selected[form.rule.as_deref() == Some(r.as_str())] { (r) }
                    }
                }
            }
            div.field {
                label for="t-event" { "Event name (default: the rule's)" }
                input #t-event type="text" name="event" value=[form.event.as_deref()];
            }
            div.field {
                label for="t-payload" { "Payload (JSON object)" }
                textarea #t-payload name="payload" rows="8" spellcheck="false" { (form.payload) }
            }
            @if session.can_write() {
                div.field.check {
                    input #t-send type="checkbox" name="send" value="yes" checked[form.send.is_some()];
                    label for="t-send" { "Also send it once and show the outcome" }
                }
            }
            button type="submit" { "Try it" }
        }
        @if let Some(answer) = answer {
            section #answer aria-live="polite" { h2 { "Result" } (answer) }
        }
    }
}

/// What a test event rendered (and, when sent, came to).
pub fn answer_view(answer: &TestEventAnswer) -> Markup {
    html! {
        @if answer.deliveries.is_empty() { p { "No rule matched this event." } }
        @for d in &answer.deliveries {
            article.test-delivery {
                h3 { (d.rule) " → " (d.connection) " (" (d.kind) ", " code { (d.action) } ")" }
                @if let Some(result) = &d.result {
                    p role="status" {
                        "Sent: " span class={ "outcome outcome-" (result.outcome) } { (result.outcome) }
                        @if let Some(status) = result.status { " (HTTP " (status) ")" }
                        @if let Some(reason) = &result.reason { " — " (reason) }
                    }
                }
                @if let Some(error) = &d.error { p.error { (error) } }
                @if let Some(with) = &d.with {
                    details { summary { "Rendered with" } pre { (pretty(with)) } }
                }
                @for r in &d.requests {
                    h4 { code { (r.method) " " (r.url) } }
                    pre {
                        @for (name, value) in &r.headers { (name) ": " (value) "\n" }
                        @if let Some(body) = &r.body { "\n" (pretty(body)) }
                    }
                }
                @if let Some(note) = &d.preview_note { p.note { (note) } }
            }
        }
        @if !answer.unmatched.is_empty() {
            h3 { "Rules that did not match" }
            ul { @for u in &answer.unmatched { li { strong { (u.rule) } ": " (u.why) } } }
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
