//! The management API served over real HTTP on 127.0.0.1:0 by an app on the harness's
//! MockCluster and sandbox, with a write and a read admin token, and what its tests share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Harness, PATIENCE};
use base64::Engine;
use herald::app::App;
use herald::kafka;
use herald::model::Secret;
use herald::settings::Settings;
use herald::settings::api::{AdminScope, AdminToken};
use herald::settings::interpolate::Vars;
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::Value;

pub const ACADEMY_KEY: &str = "pk_dev_academyflow_7Qm2xR9vLk";
pub const WRITE_TOKEN: &str = "adm_write_0123456789abcdefghij";
pub const READ_TOKEN: &str = "adm_read_0123456789abcdefghijk";

/// The two admin tokens API tests sign with: `ops` ([`WRITE_TOKEN`], write scope) and
/// `dashboard` ([`READ_TOKEN`], read scope).
pub fn admin_tokens() -> Vec<AdminToken> {
    vec![
        AdminToken {
            name: "ops".into(),
            token: Secret::new(WRITE_TOKEN),
            scope: AdminScope::Write,
        },
        AdminToken {
            name: "dashboard".into(),
            token: Secret::new(READ_TOKEN),
            scope: AdminScope::Read,
        },
    ]
}

/// Values the probe workspace's references resolve to; none of them may appear in an answer.
pub const BAD_SLACK_TOKEN: &str = "xoxp-canary-slack-0001";
pub const BAD_HUBSPOT_TOKEN: &str = "bad-canary-hubspot-0002";
pub const BAD_MAILCHIMP_KEY: &str = "invalid0canary-us6";
pub const BAD_AC_TOKEN: &str = "bad-canary-activecampaign-0004";
pub const BAD_INTERCOM_TOKEN: &str = "bad-canary-intercom-0005";

pub struct Served {
    pub harness: Harness,
    pub app: Arc<App>,
    pub base: String,
    pub http: reqwest::Client,
    /// Holds the credential store's key file, when there is one.
    _keys: Option<tempfile::TempDir>,
}

/// The example workspaces applied and an app serving its routes, its table loaded; with a
/// credential store key when `with_key`.
pub async fn serve(with_key: bool, adjust: impl FnOnce(&mut Settings)) -> Served {
    let keys = with_key.then(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(dir.path().join("k1"), key).unwrap();
        dir
    });
    let harness = Harness::new_with(|s| {
        s.api.admin_tokens = admin_tokens();
        if let Some(dir) = &keys {
            s.credentials.keys_dir = dir.path().display().to_string();
        }
        adjust(s);
    })
    .await;
    harness.apply_examples().await;
    let app = Arc::new(App::start(harness.settings.clone(), vars(&harness)).expect("app"));
    let deadline = Instant::now() + PATIENCE;
    while app.health.table.get("ws_northstar").is_none() {
        assert!(Instant::now() < deadline, "workspaces never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let routes = app.http_routes();
    tokio::spawn(async move { axum::serve(listener, routes).await });
    Served {
        harness,
        app,
        base,
        http: reqwest::Client::new(),
        _keys: keys,
    }
}

/// The harness's variables and those of the probe workspace.
pub fn vars(harness: &Harness) -> Vars {
    harness
        .vars()
        .with("HERALD_CRED_PROBE_SLACK", BAD_SLACK_TOKEN)
        .with("HERALD_CRED_PROBE_HUBSPOT", BAD_HUBSPOT_TOKEN)
        .with("HERALD_CRED_PROBE_MAILCHIMP", BAD_MAILCHIMP_KEY)
        .with("HERALD_CRED_PROBE_AC", BAD_AC_TOKEN)
        .with("HERALD_CRED_PROBE_INTERCOM", BAD_INTERCOM_TOKEN)
}

impl Served {
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A workspace file with the sandbox address pointed at this harness's sandbox.
    pub fn local(&self, yaml: &str) -> String {
        herald::cli::dev::at_sandbox(yaml, &self.harness.sandbox_url)
    }

    pub async fn put_yaml(&self, path: &str, yaml: &str) -> reqwest::Response {
        self.request(reqwest::Method::PUT, path)
            .bearer_auth(WRITE_TOKEN)
            .header("content-type", "application/yaml")
            .body(self.local(yaml))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Every record of `topic`, key and value bytes together.
    pub async fn raw(&self, topic: &str) -> Vec<u8> {
        let settings = self.harness.settings.clone();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let reader: rdkafka::consumer::BaseConsumer =
                kafka::reader_config(&settings).create().unwrap();
            let mut out = Vec::new();
            kafka::read_to_end(&reader, &topic, |m| {
                out.extend_from_slice(m.key().unwrap_or_default());
                out.extend_from_slice(m.payload().unwrap_or_default());
            })
            .unwrap();
            out
        })
        .await
        .unwrap()
    }
}

/// The status and body of an error answer, checking the one error shape.
pub async fn error(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

/// The paths of an error's `fields`.
pub fn paths(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|f| f["path"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A workspace of connections whose credentials the sandbox refuses (and one webhook).
pub const PROBE_WORKSPACE: &str = r##"
workspace: ws_probe
connections:
  - id: slack
    type: slack
    channel: "#general"
    base_url: "http://127.0.0.1:7780/slack/api"
    credentials:
      token: "${env:HERALD_CRED_PROBE_SLACK}"
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
    credentials:
      token: "${env:HERALD_CRED_PROBE_HUBSPOT}"
  - id: newsletter
    type: mailchimp
    audience_id: academy-students
    base_url: "http://127.0.0.1:7780/mailchimp"
    credentials:
      api_key: "${env:HERALD_CRED_PROBE_MAILCHIMP}"
  - id: automation
    type: activecampaign
    base_url: "http://127.0.0.1:7780/activecampaign"
    credentials:
      api_token: "${env:HERALD_CRED_PROBE_AC}"
  - id: support
    type: intercom
    base_url: "http://127.0.0.1:7780/intercom"
    credentials:
      token: "${env:HERALD_CRED_PROBE_INTERCOM}"
rules:
  - id: hello
    event: user.signed_up
    connection: slack
    action: post_message
    with:
      text: "hello {{ payload.email }}"
"##;
