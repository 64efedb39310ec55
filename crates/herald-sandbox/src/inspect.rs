//! The `/_sandbox/…` endpoints: what the simulators received and hold, and the faults to come.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;

use crate::{Fault, RecordedRequest, Sandbox, activecampaign};

#[derive(Deserialize)]
pub(crate) struct Filter {
    destination: Option<String>,
}

pub(crate) async fn requests(
    State(sandbox): State<Sandbox>,
    Query(filter): Query<Filter>,
) -> Json<Vec<RecordedRequest>> {
    let mut requests = sandbox.requests();
    if let Some(d) = filter.destination {
        requests.retain(|r| r.destination == d);
    }
    Json(requests)
}

pub(crate) async fn forget_requests(State(sandbox): State<Sandbox>) -> &'static str {
    sandbox.recorded().clear();
    "cleared\n"
}

pub(crate) async fn add_fault(
    State(sandbox): State<Sandbox>,
    Json(fault): Json<Fault>,
) -> &'static str {
    sandbox.inject(fault);
    "fault added\n"
}

pub(crate) async fn clear_faults(State(sandbox): State<Sandbox>) -> &'static str {
    sandbox
        .faults
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    "faults cleared\n"
}

pub(crate) async fn state(State(sandbox): State<Sandbox>) -> Json<serde_json::Value> {
    Json(sandbox.state())
}

pub(crate) async fn reset_state(State(sandbox): State<Sandbox>) -> &'static str {
    *sandbox.hubspot.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    // In-flight counts belong to requests still running; only the stored members go.
    sandbox
        .mailchimp
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    *sandbox.activecampaign() = activecampaign::State::default();
    sandbox.intercom().reset();
    "state cleared\n"
}
