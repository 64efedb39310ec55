//! Shared pieces of the destination tests (`tests/dest_*.rs`): the sandbox served on
//! 127.0.0.1, connections built through the registry, and calls made the way the router makes
//! them (the rule's action bound to its connection, then sent).

use std::sync::Arc;

use herald::destinations::{Attempted, Call, Connection, DestinationContext, lookup};
use herald::model::records::EventEnvelope;
use herald::model::{ConnectionSpec, Secret};
use herald_sandbox::{Fault, RecordedRequest, Sandbox};
use serde_json::{Value, json};

/// A sandbox served on an ephemeral port; its base URL.
pub async fn serve_sandbox() -> (Sandbox, String) {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (sandbox, url)
}

/// A connection built from `spec` through the registry, allowed to reach the sandbox.
pub fn connect_spec(spec: &ConnectionSpec) -> Arc<dyn Connection> {
    lookup(&spec.kind)
        .expect("registered")
        .connect(spec, &DestinationContext::for_local_tests())
        .expect("valid connection")
}

/// A connection of `kind` with these settings and one credential.
pub fn connect(kind: &str, settings: Value, credential: (&str, &str)) -> Arc<dyn Connection> {
    connect_spec(&ConnectionSpec {
        id: format!("{kind}-test"),
        kind: kind.to_owned(),
        credentials: [(credential.0.to_owned(), Secret::new(credential.1))].into(),
        settings: settings.as_object().cloned().unwrap(),
    })
}

/// One attempt at `action` with an already rendered `with`.
pub async fn attempt(
    connection: &Arc<dyn Connection>,
    delivery_id: &str,
    action: &str,
    with: &Value,
    envelope: &EventEnvelope,
) -> Attempted {
    let action = connection.clone().bind(action).expect("an action");
    action
        .send(Call {
            delivery_id,
            request: with,
            envelope,
        })
        .await
}

/// The event the ActiveCampaign and Intercom tests send.
pub fn envelope() -> EventEnvelope {
    EventEnvelope {
        event_id: "evt_1".into(),
        workspace_id: "ws_academyflow".into(),
        event: "page.completed".into(),
        resource: None,
        resource_id: None,
        payload: serde_json::Map::new(),
        occurred_at: None,
        received_at: None,
    }
}

/// One attempt of delivery `dlv_1` of [`envelope`].
pub async fn send(conn: &Arc<dyn Connection>, action: &str, with: Value) -> Attempted {
    attempt(conn, "dlv_1", action, &with, &envelope()).await
}

/// What the simulated accounts hold.
pub async fn state(url: &str) -> Value {
    reqwest::get(format!("{url}/_sandbox/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A failure injected for the next `count` requests under `path`.
pub fn fault(path: &str, count: u32, status: u16, body: &str) -> Fault {
    serde_json::from_value(json!({"path": path, "count": count, "status": status, "body": body}))
        .unwrap()
}

pub fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// How many recorded requests had this method and path.
pub fn count(sandbox: &Sandbox, method: &str, path: &str) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

pub fn reason(a: &Attempted) -> String {
    a.outcome.reason().unwrap_or_default()
}

/// A sandbox, a plain HTTP client for looking at it, and the event the HubSpot and Mailchimp
/// tests send.
pub struct Env {
    pub url: String,
    pub sandbox: Sandbox,
    pub web: reqwest::Client,
    pub envelope: EventEnvelope,
}

impl Env {
    pub async fn start() -> Self {
        let (sandbox, url) = serve_sandbox().await;
        let envelope = serde_json::from_value(json!({
            "event_id": "evt_1", "workspace_id": "ws_academyflow", "event": "lesson.completed",
            "payload": {"email": "ada@example.com"}
        }))
        .unwrap();
        Self {
            url,
            sandbox,
            web: reqwest::Client::new(),
            envelope,
        }
    }

    /// A connection from a whole spec, `extra` settings added.
    pub fn connect(&self, mut spec: Value, extra: Value) -> Arc<dyn Connection> {
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        connect_spec(&serde_json::from_value(spec).expect("spec"))
    }

    pub async fn send(
        &self,
        c: &Arc<dyn Connection>,
        id: &str,
        action: &str,
        with: Value,
    ) -> Attempted {
        attempt(c, id, action, &with, &self.envelope).await
    }

    pub async fn state(&self) -> Value {
        self.web
            .get(format!("{}/_sandbox/state", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn requests(&self, destination: &str) -> Vec<RecordedRequest> {
        let mut r = self.sandbox.requests();
        r.retain(|r| r.destination == destination);
        r
    }
}
