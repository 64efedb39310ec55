//! "Connect HubSpot" end to end: a processor on MockCluster serving its HTTP API, the sandbox's
//! HubSpot (authorize page, token endpoint, contacts) over real HTTP. Connecting stores the
//! tokens encrypted in `herald.credentials`; deliveries use them, refresh them once when they
//! are about to expire or answered 401 (however many deliveries wait), and a refused refresh
//! token breaks the connection with a reason that holds no token.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::{Harness, PATIENCE, Running};
use herald::credentials::Stored;
use herald::destinations::{Call, Outcome};
use herald::model::Secret;
use herald::model::records::{DeliveryRecord, DeliveryStatus, EventEnvelope};
use herald::settings::api::{AdminScope, AdminToken};
use herald::workspace::compile::CompiledWorkspace;
use herald::workspace::table::WorkspaceEntry;
use serde_json::{Value, json};

const ADMIN: &str = "oauth-test-admin-token-0123456789";
const CLIENT_SECRET: &str = "canary-client-secret-5e1";

const WORKSPACE: &str = r#"
workspace: ws_oauth
connections:
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
    batch_window_ms: 0
  - id: backend
    type: webhook
    url: "http://127.0.0.1:7780/webhook/oauth"
    credentials:
      secret: "${env:HERALD_CRED_WEBHOOK_SECRET}"
rules:
  - id: to-hubspot
    event: lesson.completed
    connection: crm
    action: upsert_contact
    with:
      email: "{{ payload.email }}"
      properties:
        firstname: "{{ payload.name }}"
"#;

/// A processor with "Connect HubSpot" pointed at the sandbox, its API served on 127.0.0.1.
struct Env {
    h: Harness,
    running: Running,
    herald: String,
    web: reqwest::Client,
    _keys: tempfile::TempDir,
}

impl Env {
    /// Starts with the sandbox issuing access tokens that live `ttl_s`.
    async fn start(ttl_s: u64) -> Self {
        let keys = tempfile::tempdir().unwrap();
        std::fs::write(
            keys.path().join("k1"),
            base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
        )
        .unwrap();
        let mut h = Harness::new().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let herald = format!("http://{}", listener.local_addr().unwrap());
        let s = &mut h.settings;
        s.credentials.keys_dir = keys.path().display().to_string();
        s.api.admin_tokens.push(AdminToken {
            name: "test".into(),
            token: Secret::new(ADMIN),
            scope: AdminScope::Write,
        });
        let app = &mut s.oauth.hubspot;
        app.client_id = "test-app".into();
        app.client_secret = Secret::new(CLIENT_SECRET);
        app.authorize_url = format!("{}/hubspot/oauth/authorize", h.sandbox_url);
        app.token_url = format!("{}/hubspot/oauth/v1/token", h.sandbox_url);
        app.redirect_url = herald.clone();
        let web = reqwest::Client::new();
        tune(&web, &h.sandbox_url, json!({"access_token_ttl_s": ttl_s})).await;
        h.apply(&[("oauth.yaml", WORKSPACE)]).await;
        let running = h.start();
        let routes = running.app.http_routes();
        tokio::spawn(async move { axum::serve(listener, routes).await });
        let env = Self {
            h,
            running,
            herald,
            web,
            _keys: keys,
        };
        env.wait_for("the workspace", |ws| ws.is_some()).await;
        env
    }

    fn workspace(&self) -> Option<std::sync::Arc<CompiledWorkspace>> {
        match self.running.app.health.table.get("ws_oauth") {
            Some(WorkspaceEntry::Ready(ws)) => Some(ws),
            _ => None,
        }
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(Option<std::sync::Arc<CompiledWorkspace>>) -> bool,
    ) {
        let deadline = Instant::now() + PATIENCE;
        while !done(self.workspace()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The stored credentials of `crm`, decrypted.
    fn stored(&self) -> Option<std::collections::BTreeMap<String, String>> {
        match self
            .running
            .app
            .health
            .table
            .credentials()
            .get("ws_oauth", "crm")
        {
            Some(Stored::Ready(fields)) => Some(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .collect(),
            ),
            _ => None,
        }
    }

    fn start_url(&self, connection: &str) -> String {
        format!(
            "{}/oauth/hubspot/start?workspace=ws_oauth&connection={connection}",
            self.herald
        )
    }

    /// Start → the sandbox's authorize page → the callback, following the redirects; then
    /// waits until the workspace runs with the stored tokens.
    async fn connect(&self) -> Value {
        let answer = self
            .web
            .get(self.start_url("crm"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.unwrap();
        self.wait_for("the connection to use its tokens", |ws| {
            ws.is_some_and(|ws| ws.broken_reason("crm").is_none())
        })
        .await;
        body
    }

    async fn sandbox(&self) -> Value {
        self.web
            .get(format!("{}/_sandbox/state", self.h.sandbox_url))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["hubspot"]
            .clone()
    }

    /// Token requests the sandbox answered with `grant`.
    async fn token_requests(&self, grant: &str) -> u64 {
        self.sandbox().await["oauth"]["token_requests"][grant]
            .as_u64()
            .unwrap_or(0)
    }

    async fn tune(&self, control: Value) {
        tune(&self.web, &self.h.sandbox_url, control).await;
    }

    async fn emit(&self, id: &str, email: &str) {
        self.h
            .emit(
                "ws_oauth",
                "lesson.completed",
                id,
                None,
                json!({"email": email, "name": id}),
            )
            .await;
    }

    /// Waits until the delivery of event `id` is settled (delivered, failed or dead).
    async fn settled(&self, id: &str) -> DeliveryRecord {
        let history = self
            .h
            .wait_for_history("ws_oauth", id, |records| {
                records.iter().any(|r| {
                    r.event_id == id
                        && matches!(
                            r.status,
                            DeliveryStatus::Delivered
                                | DeliveryStatus::Failed
                                | DeliveryStatus::Dead
                        )
                })
            })
            .await;
        history.into_iter().rfind(|r| r.event_id == id).unwrap()
    }
}

async fn tune(web: &reqwest::Client, sandbox: &str, control: Value) {
    let answer = web
        .put(format!("{sandbox}/_sandbox/hubspot/oauth"))
        .json(&control)
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{control}");
}

fn envelope(email: &str) -> EventEnvelope {
    serde_json::from_value(json!({
        "event_id": format!("evt_{email}"), "workspace_id": "ws_oauth",
        "event": "lesson.completed", "payload": {"email": email}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connecting_stores_encrypted_tokens_that_deliver() {
    let env = Env::start(1800).await;
    assert_eq!(
        env.workspace().unwrap().broken_reason("crm").as_deref(),
        Some(
            "no credentials in the workspace or the credential store; set them with \
             `herald credentials set --workspace ws_oauth --connection crm`"
        ),
        "unusable until connected"
    );
    let answer = env.connect().await;
    assert_eq!(answer["connected"], true, "{answer}");
    assert_eq!(answer["workspace"], "ws_oauth");
    assert_eq!(answer["connection"], "crm");

    let stored = env.stored().expect("tokens stored");
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["access_token", "expires_at", "refresh_token"]
    );
    let raw = raw_credentials(&env.h).await;
    for value in stored.values().filter(|v| v.len() > 20) {
        assert!(
            !raw.contains(value.as_str()),
            "plaintext token in herald.credentials"
        );
    }
    assert!(!raw.contains(CLIENT_SECRET));

    env.emit("evt_1", "ada@example.com").await;
    let record = env.settled("evt_1").await;
    assert_eq!(record.status, DeliveryStatus::Delivered, "{record:?}");
    let contacts = env.sandbox().await["contacts"].clone();
    assert_eq!(
        contacts["ada@example.com"]["properties"]["firstname"],
        "evt_1"
    );
    assert_eq!(env.token_requests("authorization_code").await, 1);
    assert_eq!(env.token_requests("refresh_token").await, 0, "still fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_about_to_expire_is_refreshed_once_for_50_concurrent_deliveries() {
    // Tokens that live 60 s are inside the 5-minute refresh margin from the start.
    let env = Env::start(60).await;
    env.connect().await;
    let first = env.stored().unwrap();
    env.tune(json!({"access_token_ttl_s": 3600})).await;

    let ws = env.workspace().unwrap();
    let rule = ws.rule("to-hubspot").unwrap();
    let calls: Vec<(String, Value, EventEnvelope)> = (0..50)
        .map(|i| {
            let email = format!("student{i}@example.com");
            (
                format!("dlv_{i}"),
                json!({"email": email, "properties": {}}),
                envelope(&email),
            )
        })
        .collect();
    let attempts = futures::future::join_all(calls.iter().map(|(id, with, envelope)| {
        rule.action.send(Call {
            delivery_id: id,
            request: with,
            envelope,
        })
    }))
    .await;
    for attempt in &attempts {
        assert_eq!(attempt.outcome, Outcome::Delivered, "{attempt:?}");
    }
    assert_eq!(
        env.token_requests("refresh_token").await,
        1,
        "one refresh for all 50"
    );
    let contacts = env.sandbox().await["contacts"].clone();
    assert_eq!(contacts.as_object().unwrap().len(), 50);

    // The rotated tokens are written back, and the workspace runs with them.
    let deadline = Instant::now() + PATIENCE;
    while env.stored().unwrap()["access_token"] == first["access_token"] {
        assert!(Instant::now() < deadline, "refreshed tokens not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        env.stored().unwrap()["refresh_token"],
        first["refresh_token"],
        "not rotated"
    );
    env.emit("evt_after", "after@example.com").await;
    assert_eq!(
        env.settled("evt_after").await.status,
        DeliveryStatus::Delivered
    );
    assert_eq!(
        env.token_requests("refresh_token").await,
        1,
        "the new token is fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_401_refreshes_once_and_the_call_is_made_again() {
    let env = Env::start(3600).await;
    env.connect().await;
    env.emit("evt_1", "ada@example.com").await;
    assert_eq!(env.settled("evt_1").await.status, DeliveryStatus::Delivered);

    env.tune(json!({"expire_access_tokens": true})).await;
    env.emit("evt_2", "bob@example.com").await;
    let record = env.settled("evt_2").await;
    assert_eq!(record.status, DeliveryStatus::Delivered, "{record:?}");
    assert_eq!(
        record.attempts.len(),
        1,
        "refreshed within the attempt: {record:?}"
    );
    assert_eq!(env.token_requests("refresh_token").await, 1);
    let unauthorized: Vec<_> = env
        .h
        .requests("hubspot")
        .into_iter()
        .filter(|r| r.path.ends_with("/batch/upsert") && r.status == 401)
        .collect();
    assert_eq!(
        unauthorized.len(),
        1,
        "the expired token was sent once: {unauthorized:?}"
    );

    // A 401 that outlives the refresh breaks the connection: one refresh, one more try, no loop.
    let expired = r#"{"status":"error","message":"The OAuth token used to make this call expired 1 second(s) ago.","category":"EXPIRED_AUTHENTICATION"}"#;
    env.h
        .sandbox
        .inject(common::destinations::fault("/hubspot/crm", 2, 401, expired));
    env.emit("evt_3", "cy@example.com").await;
    let record = env.settled("evt_3").await;
    assert_eq!(record.status, DeliveryStatus::Dead, "{record:?}");
    assert!(
        record.reason.as_deref().is_some_and(
            |r| r.contains("HubSpot rejected the token (HTTP 401 EXPIRED_AUTHENTICATION)")
        ),
        "{record:?}"
    );
    assert_eq!(
        env.token_requests("refresh_token").await,
        2,
        "one more refresh, not a loop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_refresh_token_breaks_the_connection_and_no_token_leaks() {
    let env = Env::start(3600).await;
    env.connect().await;
    let tokens = env.stored().unwrap();
    env.emit("evt_1", "ada@example.com").await;
    assert_eq!(env.settled("evt_1").await.status, DeliveryStatus::Delivered);

    env.tune(json!({"expire_access_tokens": true, "revoke_refresh_tokens": true}))
        .await;
    env.emit("evt_2", "bob@example.com").await;
    let record = env.settled("evt_2").await;
    assert_eq!(record.status, DeliveryStatus::Dead, "{record:?}");
    let reason = record.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(
            "HubSpot refused the connection's refresh token (HTTP 400 BAD_REFRESH_TOKEN)"
        ) && reason.contains("connect the HubSpot account again"),
        "{reason}"
    );
    assert_eq!(env.running.app.health.table.broken_connections(), 1);
    let metrics = env
        .web
        .get(format!("{}/metrics", env.herald))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("herald_broken_connections 1"), "{metrics}");

    env.emit("evt_3", "cy@example.com").await;
    let record = env.settled("evt_3").await;
    assert_eq!(record.status, DeliveryStatus::Dead);
    assert!(
        record
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("marked broken earlier; not called")),
        "{record:?}"
    );
    assert_eq!(
        env.token_requests("refresh_token").await,
        1,
        "refused once, not retried"
    );

    let mut secrets: Vec<&str> = tokens.values().map(String::as_str).collect();
    secrets.retain(|s| s.len() > 20);
    secrets.push(CLIENT_SECRET);
    let history = format!("{:?}", env.h.history("ws_oauth").await);
    let letters = env.h.wait_for_dead_letters(2).await;
    for secret in secrets {
        assert!(!history.contains(secret), "a token in history");
        for letter in &letters {
            assert!(!String::from_utf8_lossy(&letter.value).contains(secret));
            assert!(letter.headers.values().all(|v| !v.contains(secret)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_starts_and_callbacks_are_refused_and_change_nothing() {
    let env = Env::start(3600).await;
    let get = |url: String, admin: bool| {
        let mut request = env.web.get(url);
        if admin {
            request = request.bearer_auth(ADMIN);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(get(env.start_url("crm"), false).await.0, 401);
    let (status, body) = get(env.start_url("nope"), true).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(env.start_url("backend"), true).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["fields"][0]["path"], "connection");

    // A state that was never signed here.
    let forged = format!(
        "{}/oauth/hubspot/callback?code=abc&state=eyJ3Ijoid3Nfb2F1dGgiLCJjIjoiY3JtIiwiZXhwIjo5OTk5OTk5OTk5OTk5LCJuIjoieCJ9.c2lnbmF0dXJl",
        env.herald
    );
    let (status, body) = get(forged, false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("invalid_state"))
    );

    // The account owner says no.
    env.tune(json!({"deny": true})).await;
    let (status, body) = get(env.start_url("crm"), true).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("not_approved")),
        "{body}"
    );
    env.tune(json!({"deny": false})).await;

    // A state is spent by its first callback.
    let manual = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |answer: reqwest::Response| {
        assert_eq!(answer.status(), 302);
        answer.headers()["location"].to_str().unwrap().to_owned()
    };
    let authorize = location(
        manual
            .get(env.start_url("crm"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    );
    assert!(authorize.contains("client_id=test-app"), "{authorize}");
    assert!(
        authorize.contains("scope=oauth+crm.objects.contacts.read+crm.objects.contacts.write"),
        "{authorize}"
    );
    assert!(!authorize.contains(CLIENT_SECRET));
    let callback = location(manual.get(&authorize).send().await.unwrap());
    let mut bad_code = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = bad_code.query_pairs().into_owned().collect();
    bad_code.query_pairs_mut().clear().extend_pairs(
        pairs
            .iter()
            .map(|(k, v)| (k.as_str(), if k == "code" { "wrong" } else { v.as_str() })),
    );
    let (status, body) = get(bad_code.to_string(), false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("code_refused")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("BAD_AUTH_CODE")
    );
    let (status, body) = get(callback.clone(), false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("used_state")),
        "{body}"
    );

    assert!(env.stored().is_none(), "nothing stored");
    assert!(raw_credentials(&env.h).await.is_empty());
}

/// Every byte of `herald.credentials`, keys and values, as text.
async fn raw_credentials(h: &Harness) -> String {
    let settings = h.settings.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::Message;
        let c: rdkafka::consumer::BaseConsumer =
            herald::kafka::reader_config(&settings).create().unwrap();
        let mut out = String::new();
        herald::kafka::read_to_end(&c, &settings.topics.credentials, |m| {
            out.push_str(&String::from_utf8_lossy(m.key().unwrap_or_default()));
            out.push_str(&String::from_utf8_lossy(m.payload().unwrap_or_default()));
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}
