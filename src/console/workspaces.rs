//! The workspaces page (each with its last 24 hours of deliveries counted by status and its
//! broken or circuit-open connections named) and one workspace's page (connections with their
//! health, rules as written, recent deliveries).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use chrono::{Duration as Age, Utc};
use maud::{Markup, html};

use super::Console;
use super::deliveries::{delivery_rows, path_segment};
use super::layout::{self, ConsoleError};
use super::session::Session;
use crate::api::connections::{self, ConnectionHealth};
use crate::history::store::DeliveryQuery;
use crate::model::WorkspaceConfig;
use crate::model::records::DeliveryStatus;
use crate::workspace::table::WorkspaceEntry;

/// The statuses counted on the workspaces page, in the order of its columns.
const COUNTED: [DeliveryStatus; 4] = [
    DeliveryStatus::Delivered,
    DeliveryStatus::Retrying,
    DeliveryStatus::Failed,
    DeliveryStatus::Dead,
];

/// Deliveries shown on a workspace's page; the deliveries page has the rest.
const RECENT: usize = 10;

/// What needs attention on a connection: broken, or its circuit not closed.
fn trouble(c: &ConnectionHealth) -> Option<String> {
    if c.broken {
        Some(format!(
            "broken: {}",
            c.broken_reason.as_deref().unwrap_or("credentials refused")
        ))
    } else if c.circuit.state != "closed" {
        Some(format!("circuit {}", c.circuit.state.replace('_', "-")))
    } else {
        None
    }
}

pub async fn list(
    State(console): State<Console>,
    session: Session,
) -> Result<Response, ConsoleError> {
    let api = &console.api;
    let store = api.health.history.clone().filter(|s| s.is_ready());
    let since = Utc::now() - Age::hours(24);
    let mut rows = Vec::new();
    for (id, entry) in api.table.snapshot() {
        let health = match entry {
            WorkspaceEntry::Ready(_) => {
                connections::list(session.admin(), State(api.clone()), Path(id.clone()))
                    .await
                    .map(|answer| answer.0.connections)
                    .ok()
            }
            WorkspaceEntry::Invalid(_) => None,
        };
        let counts = match &store {
            Some(store) => {
                let (store, ws) = (store.clone(), id.clone());
                tokio::task::spawn_blocking(move || store.counts(&ws, since))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            None => None,
        };
        rows.push((id, health, counts));
    }
    let body = html! {
        h1 { "Workspaces" }
        @if store.is_none() {
            p.note { "The history query store is off or still catching up: no counts yet." }
        }
        div.scroll {
            table {
                caption { "Deliveries by status over the last 24 hours" }
                thead { tr {
                    th scope="col" { "Workspace" }
                    @for status in COUNTED {
                        th.num scope="col" { (layout::status_badge(status)) }
                    }
                    th scope="col" { "Connections" }
                } }
                tbody {
                    @for (id, health, counts) in &rows {
                        @let troubled: Vec<(String, String)> = health.iter().flatten()
                            .filter_map(|c| Some((c.id.clone(), trouble(c)?))).collect();
                        tr class=[(!troubled.is_empty()).then_some("attention")] {
                            th scope="row" {
                                a href={ "/console/workspaces/" (path_segment(id)) } { (id) }
                            }
                            @for status in COUNTED {
                                td.num { (counts.as_ref().map_or(String::from("–"), |c| {
                                    c.iter().find(|(s, _)| *s == status)
                                        .map_or(0, |(_, n)| *n).to_string()
                                })) }
                            }
                            td {
                                @match health {
                                    None => span.status.status-dead { "config invalid" },
                                    Some(all) if troubled.is_empty() => {
                                        (all.len()) " ok"
                                    }
                                    Some(_) => ul.plain {
                                        @for (connection, why) in &troubled {
                                            li { strong { (connection) } ": " (why) }
                                        }
                                    },
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page("Workspaces", Some(&session), body).into_response())
}

pub async fn one(
    State(console): State<Console>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let api = &console.api;
    let health = connections::list(session.admin(), State(api.clone()), Path(id.clone()))
        .await?
        .0
        .connections;
    // The config as published: the rules as their authors wrote them. Connections are shown
    // from the health view only, never their settings or credentials.
    let config: Option<WorkspaceConfig> = api
        .table
        .newest_record(&id)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let recent = match api.health.history.clone().filter(|s| s.is_ready()) {
        Some(store) => {
            let query = DeliveryQuery {
                workspace_id: id.clone(),
                limit: RECENT,
                ..Default::default()
            };
            tokio::task::spawn_blocking(move || store.query(&query))
                .await
                .ok()
                .and_then(Result::ok)
        }
        None => None,
    };
    let base = format!("/console/workspaces/{}", path_segment(&id));
    let body = html! {
        h1 { "Workspace " (id) }
        p {
            a href={ (base) "/deliveries" } { "All deliveries" } " · "
            a href={ (base) "/deliveries?status=failed&status=dead" } { "Failed and dead" } " · "
            a href={ (base) "/test-event" } { "Test event" }
        }
        h2 { "Connections" }
        (connections_table(&session, &base, &health))
        h2 { "Rules" }
        @match &config {
            Some(config) => (rules(&base, config)),
            None => p { "The published config is not available on this replica." },
        }
        h2 { "Recent deliveries" }
        @match &recent {
            Some(page) => {
                div.scroll { table {
                    (super::deliveries::table_head())
                    (delivery_rows(&id, &page.deliveries, None))
                } }
                p { a href={ (base) "/deliveries" } { "All deliveries, with filters" } }
            }
            None => p.note { "The history query store is off or still catching up." },
        }
    };
    Ok(layout::page(&format!("Workspace {id}"), Some(&session), body).into_response())
}

fn connections_table(session: &Session, base: &str, health: &[ConnectionHealth]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th scope="col" { "Connection" }
                th scope="col" { "Type" }
                th scope="col" { "Health" }
                th scope="col" { "Last error" }
                th scope="col" { "Rate limit" }
                @if session.can_write() { th scope="col" { "Actions" } }
            } }
            tbody {
                @for c in health {
                    @let trouble = trouble(c);
                    tr class=[trouble.is_some().then_some("attention")] {
                        th scope="row" { (c.id) }
                        td { (c.kind) }
                        td {
                            @match &trouble {
                                Some(why) => span.status.status-failed { (why) },
                                None => span.status.status-delivered { "ok" },
                            }
                            @if let Some(until) = c.circuit.open_until {
                                " until " (layout::time(until))
                            }
                        }
                        td {
                            @if let Some(error) = &c.circuit.last_error {
                                (error)
                                @if let Some(at) = c.circuit.last_error_at {
                                    " (" (layout::time(at)) ")"
                                }
                            } @else { "–" }
                        }
                        td {
                            @match &c.rate_limit {
                                Some(limit) if limit.throttled => {
                                    "slowed to " (format!("{:.0}", limit.factor * 100.0)) " %"
                                }
                                Some(_) => "full rate",
                                None => "–",
                            }
                        }
                        @if session.can_write() {
                            td {
                                @let target = format!("redrive-{}", c.id);
                                form method="post" action={ (base) "/redrive" }
                                    hx-post={ (base) "/redrive" }
                                    hx-target={ "#" (target) } {
                                    (layout::csrf_field(session))
                                    input type="hidden" name="connection" value=(c.id);
                                    button type="submit"
                                        aria-label={ "Redrive " (c.id) "'s failed and dead deliveries" } {
                                        "Redrive failed and dead…"
                                    }
                                }
                                div id=(target) aria-live="polite" {}
                            }
                        }
                    }
                }
            }
        } }
    }
}

fn rules(base: &str, config: &WorkspaceConfig) -> Markup {
    html! {
        @if config.rules.is_empty() { p { "No rules." } }
        @for rule in &config.rules {
            section.rule aria-labelledby={ "rule-" (rule.id) } {
                h3 id={ "rule-" (rule.id) } { (rule.id) }
                dl.facts {
                    dt { "Event" }
                    dd {
                        code { (rule.event) }
                        @if let Some(resource) = &rule.resource {
                            " on " code { (resource) }
                            @if let Some(rid) = &rule.resource_id { " " code { (rid) } }
                        }
                    }
                    dt { "Condition" }
                    dd { @match &rule.when { Some(w) => code { (w) }, None => "always" } }
                    dt { "Action" }
                    dd { code { (rule.action) } " on " strong { (rule.connection) } }
                }
                details open {
                    summary { "with (as written)" }
                    pre { (serde_yaml_ng::to_string(&rule.with).unwrap_or_default()) }
                }
                p {
                    a href={ (base) "/test-event?rule=" (path_segment(&rule.id)) } {
                        "Send a test event for " (rule.id)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::breaker::CircuitView;

    fn health(broken: Option<&str>, circuit: &'static str) -> ConnectionHealth {
        ConnectionHealth {
            id: "crm".into(),
            kind: "hubspot".into(),
            broken: broken.is_some(),
            broken_reason: broken.map(str::to_owned),
            circuit: CircuitView {
                state: circuit,
                failures: 0,
                last_error: None,
                last_error_at: None,
                open_until: None,
            },
            rate_limit: None,
        }
    }

    #[test]
    fn broken_and_open_circuits_need_attention_and_say_why() {
        assert_eq!(trouble(&health(None, "closed")), None);
        assert_eq!(
            trouble(&health(Some("HTTP 401"), "closed")).as_deref(),
            Some("broken: HTTP 401")
        );
        assert_eq!(
            trouble(&health(None, "open")).as_deref(),
            Some("circuit open")
        );
        assert_eq!(
            trouble(&health(None, "half_open")).as_deref(),
            Some("circuit half-open")
        );
    }
}
