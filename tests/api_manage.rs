//! The management API's workspace, credentials, test and health endpoints against a
//! MockCluster broker, the sandbox simulators and real HTTP on 127.0.0.1:0: a workspace PUT is
//! checked as `herald workspace apply` checks a file and round-trips through GET; literal
//! credentials never reach `herald.workspaces` or `herald.credentials` in plain text; "test
//! connection" reports the vendor's answer without the credential; a test event shows the
//! requests the sandbox then receives with `send=true`; every write checks its token.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Harness, PATIENCE};
use herald::app::App;
use herald::kafka;
use herald::model::Secret;
use herald::settings::Settings;
use herald::settings::api::{AdminScope, AdminToken};
use herald::settings::interpolate::Vars;
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACADEMY_KEY: &str = "pk_dev_academyflow_7Qm2xR9vLk";
const WRITE_TOKEN: &str = "adm_write_0123456789abcdefghij";
const READ_TOKEN: &str = "adm_read_0123456789abcdefghijk";

/// Values the probe workspace's references resolve to; none of them may appear in an answer.
const BAD_SLACK_TOKEN: &str = "xoxp-canary-slack-0001";
const BAD_HUBSPOT_TOKEN: &str = "bad-canary-hubspot-0002";
const BAD_MAILCHIMP_KEY: &str = "invalid0canary-us6";
const BAD_AC_TOKEN: &str = "bad-canary-activecampaign-0004";
const BAD_INTERCOM_TOKEN: &str = "bad-canary-intercom-0005";

struct Served {
    harness: Harness,
    app: Arc<App>,
    base: String,
    http: reqwest::Client,
    /// Holds the credential store's key file, when there is one.
    _keys: Option<tempfile::TempDir>,
}

/// The example workspaces applied and an app serving its routes, its table loaded; with a
/// credential store key when `with_key`.
async fn serve(with_key: bool, adjust: impl FnOnce(&mut Settings)) -> Served {
    let keys = with_key.then(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        std::fs::write(dir.path().join("k1"), key).unwrap();
        dir
    });
    let harness = Harness::new_with(|s| {
        s.api.admin_tokens = vec![
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
        ];
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
fn vars(harness: &Harness) -> Vars {
    harness
        .vars()
        .with("HERALD_CRED_PROBE_SLACK", BAD_SLACK_TOKEN)
        .with("HERALD_CRED_PROBE_HUBSPOT", BAD_HUBSPOT_TOKEN)
        .with("HERALD_CRED_PROBE_MAILCHIMP", BAD_MAILCHIMP_KEY)
        .with("HERALD_CRED_PROBE_AC", BAD_AC_TOKEN)
        .with("HERALD_CRED_PROBE_INTERCOM", BAD_INTERCOM_TOKEN)
}

impl Served {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A workspace file with the sandbox address pointed at this harness's sandbox.
    fn local(&self, yaml: &str) -> String {
        herald::cli::dev::at_sandbox(yaml, &self.harness.sandbox_url)
    }

    async fn put_yaml(&self, path: &str, yaml: &str) -> reqwest::Response {
        self.request(reqwest::Method::PUT, path)
            .bearer_auth(WRITE_TOKEN)
            .header("content-type", "application/yaml")
            .body(self.local(yaml))
            .send()
            .await
            .unwrap()
    }

    async fn post_json(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Every record of `topic`, key and value bytes together.
    async fn raw(&self, topic: &str) -> Vec<u8> {
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
async fn error(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

/// The paths of an error's `fields`.
fn paths(body: &Value) -> Vec<String> {
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
const PROBE_WORKSPACE: &str = r##"
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_new_route_checks_its_token() {
    let s = serve(false, |_| {}).await;
    use reqwest::Method;
    let routes: [(Method, &str, bool); 7] = [
        (Method::PUT, "/v1/workspaces/ws_academyflow", true),
        (
            Method::PUT,
            "/v1/workspaces/ws_academyflow/connections/crm/credentials",
            true,
        ),
        (
            Method::DELETE,
            "/v1/workspaces/ws_academyflow/connections/crm/credentials",
            true,
        ),
        (
            Method::POST,
            "/v1/workspaces/ws_academyflow/connections/crm/test",
            true,
        ),
        (
            Method::POST,
            "/v1/workspaces/ws_academyflow/test-event?send=true",
            true,
        ),
        (
            Method::POST,
            "/v1/workspaces/ws_academyflow/test-event",
            false,
        ),
        (
            Method::GET,
            "/v1/workspaces/ws_academyflow/connections",
            false,
        ),
    ];
    for (method, path, needs_write) in routes {
        let call = |token: Option<&str>| {
            let mut request = s
                .request(method.clone(), path)
                .header("content-type", "application/json")
                .body(r#"{"rule": "lesson-alert-to-slack"}"#);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        for token in [None, Some("adm_wrong_0123456789"), Some(ACADEMY_KEY)] {
            let (status, body) = error(call(token).await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
        let read = call(Some(READ_TOKEN)).await.unwrap();
        if needs_write {
            let (status, body) = error(read).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        } else {
            assert_eq!(read.status(), StatusCode::OK, "{method} {path}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_workspace_is_checked_as_apply_checks_it_and_round_trips() {
    let s = serve(false, |_| {}).await;
    let path = "/v1/workspaces/ws_probe";

    // The same problems, at the same paths, as `herald workspace apply` lists.
    let broken = PROBE_WORKSPACE
        .replace("type: hubspot", "type: hubspt")
        .replace("action: post_message", "action: post_mesage");
    let (status, body) = error(s.put_yaml(path, &broken).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");
    let cli = herald::cli::workspace::validate_files(
        &s.harness.settings,
        &[("f".into(), s.local(&broken))],
        &vars(&s.harness),
    )
    .unwrap_err()
    .to_string();
    let found = paths(&body);
    assert!(found.contains(&"connections[1].type".to_owned()), "{body}");
    assert!(found.contains(&"rules[0].action".to_owned()), "{body}");
    for p in &found {
        assert!(cli.contains(&format!("f: {p}: ")), "{p} not in {cli}");
    }
    let (status, body) = error(s.put_yaml(path, "workspace: [").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // The path names the workspace.
    let (status, body) = error(s.put_yaml("/v1/workspaces/ws_other", PROBE_WORKSPACE).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["workspace"]);

    // Literal credentials are refused, named by their field, never quoted.
    let literal = PROBE_WORKSPACE.replace("${env:HERALD_CRED_PROBE_SLACK}", "xoxb-literal-canary");
    let (status, body) = error(s.put_yaml(path, &literal).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["connections[0].credentials.token"]);
    assert!(!body.to_string().contains("literal-canary"), "{body}");

    // Neither YAML nor JSON.
    let response = s
        .request(reqwest::Method::PUT, path)
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "text/plain")
        .body(s.local(PROBE_WORKSPACE))
        .send()
        .await
        .unwrap();
    let (status, _) = error(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Created, then visible to GET as it was sent.
    let response = s.put_yaml(path, PROBE_WORKSPACE).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let put: Value = response.json().await.unwrap();
    assert_eq!(put["created"], true, "{put}");
    assert_eq!(put["loaded"], true, "{put}");
    let got: Value = s
        .request(reqwest::Method::GET, path)
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["status"], "ready", "{got}");
    assert_eq!(got["rules"], 1);
    assert_eq!(got["connections"], put["connections"]);
    assert_eq!(
        got["connections"][1],
        json!({"id": "crm", "type": "hubspot"})
    );

    // Replaced from JSON: 200, and the new rule count shows.
    let mut config: Value = serde_yaml_ng::from_str(&s.local(PROBE_WORKSPACE)).unwrap();
    let rules = config["rules"].as_array_mut().unwrap();
    rules.push(
        json!({"id": "bye", "event": "user.left", "connection": "slack",
                      "action": "post_message", "with": {"text": "bye"}}),
    );
    let response = s
        .request(reqwest::Method::PUT, path)
        .bearer_auth(WRITE_TOKEN)
        .json(&config)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let got: Value = s
        .request(reqwest::Method::GET, path)
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["rules"], 2, "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_credentials_stay_out_of_both_topics_in_plain_text() {
    let s = serve(true, |_| {}).await;
    let secret = "xoxb-plaintext-canary-7731";
    let literal = PROBE_WORKSPACE.replace("${env:HERALD_CRED_PROBE_SLACK}", secret);
    let response = s
        .request(
            reqwest::Method::PUT,
            "/v1/workspaces/ws_probe?store_credentials=true",
        )
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "application/yaml")
        .body(s.local(&literal))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let put = response.text().await.unwrap();
    assert!(put.contains("ws_probe/slack (token)"), "{put}");
    assert!(!put.contains(secret), "{put}");

    // A connection half literal, half referenced cannot be moved.
    let mixed = s.local(&PROBE_WORKSPACE.replace(
        "      token: \"${env:HERALD_CRED_PROBE_SLACK}\"",
        "      token: \"xoxb-mixed-canary\"\n      webhook_url: \"${env:HERALD_CRED_X}\"",
    ));
    let response = s
        .request(
            reqwest::Method::PUT,
            "/v1/workspaces/ws_probe?store_credentials=true",
        )
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "application/yaml")
        .body(mixed)
        .send()
        .await
        .unwrap();
    let (status, body) = error(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Credentials set through their own endpoint are not in plain text either.
    let other = "pat-canary-hubspot-set-9917";
    let response = s
        .request(
            reqwest::Method::PUT,
            "/v1/workspaces/ws_academyflow/connections/crm/credentials",
        )
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"token": other}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let workspaces = s.raw(&s.harness.settings.topics.workspaces).await;
    let credentials = s.raw(&s.harness.settings.topics.credentials).await;
    assert!(!credentials.is_empty(), "two records were stored");
    for (topic, bytes) in [("workspaces", &workspaces), ("credentials", &credentials)] {
        for canary in [secret, other] {
            let found = bytes.windows(canary.len()).any(|w| w == canary.as_bytes());
            assert!(!found, "{canary} in plain text in herald.{topic}");
        }
    }
    let published = String::from_utf8_lossy(&workspaces);
    assert!(
        published.contains("ws_probe"),
        "the workspace was published"
    );

    // The stored token is used: the connection answers once the table has it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer: Value = s
            .post_json(
                "/v1/workspaces/ws_probe/connections/slack/test",
                WRITE_TOKEN,
                &json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        if answer == json!({"ok": true}) {
            break;
        }
        assert!(Instant::now() < deadline, "never usable: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_checked_against_the_connection_type() {
    let s = serve(true, |_| {}).await;
    let put = |path: &'static str, body: Value| {
        s.request(reqwest::Method::PUT, path)
            .bearer_auth(WRITE_TOKEN)
            .json(&body)
            .send()
    };
    let crm = "/v1/workspaces/ws_academyflow/connections/crm/credentials";
    let (status, body) = error(put(crm, json!({"tokn": "pat-canary-1"})).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["credentials.tokn"]);
    assert!(!body.to_string().contains("canary"), "{body}");
    let (status, body) = error(put(crm, json!({"token": 42})).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["credentials.token"]);
    let (status, _) = error(put(crm, json!(["pat"])).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Values are checked as the connection checks them: a webhook secret is `whsec_…`.
    let hook = "/v1/workspaces/ws_academyflow/connections/academy-backend/credentials";
    let (status, body) = error(
        put(hook, json!({"secret": "canary-not-whsec"}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["credentials.secret"]);
    assert!(!body.to_string().contains("canary"), "{body}");

    for missing in [
        "/v1/workspaces/ws_nowhere/connections/crm/credentials",
        "/v1/workspaces/ws_academyflow/connections/nowhere/credentials",
    ] {
        let (status, body) = error(put(missing, json!({"token": "pat-x"})).await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{missing}: {body}");
        let response = s
            .request(reqwest::Method::DELETE, missing)
            .bearer_auth(WRITE_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(error(response).await.0, StatusCode::NOT_FOUND);
    }

    let response = put(crm, json!({"token": "pat-sandbox-academyflow"}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(response.bytes().await.unwrap().is_empty(), "write-only");
    let response = s
        .request(reqwest::Method::DELETE, crm)
        .bearer_auth(WRITE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_write_key_credentials_are_refused_with_503() {
    let s = serve(false, |_| {}).await;
    let response = s
        .request(
            reqwest::Method::PUT,
            "/v1/workspaces/ws_academyflow/connections/crm/credentials",
        )
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"token": "pat-sandbox-academyflow"}))
        .send()
        .await
        .unwrap();
    let (status, body) = error(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "no_write_key");
    let literal = PROBE_WORKSPACE.replace("${env:HERALD_CRED_PROBE_SLACK}", "xoxb-literal");
    let response = s
        .request(
            reqwest::Method::PUT,
            "/v1/workspaces/ws_probe?store_credentials=true",
        )
        .bearer_auth(WRITE_TOKEN)
        .header("content-type", "application/yaml")
        .body(s.local(&literal))
        .send()
        .await
        .unwrap();
    assert_eq!(error(response).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_reports_ok_or_the_vendors_error_without_the_credential() {
    let s = serve(false, |_| {}).await;
    assert_eq!(
        s.put_yaml("/v1/workspaces/ws_probe", PROBE_WORKSPACE)
            .await
            .status(),
        StatusCode::CREATED
    );
    let test = |workspace: &str, connection: &str| {
        let path = format!("/v1/workspaces/{workspace}/connections/{connection}/test");
        let s = &s;
        async move {
            let response = s.post_json(&path, WRITE_TOKEN, &json!({})).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    for (workspace, connection) in [
        ("ws_academyflow", "crm"),
        ("ws_academyflow", "newsletter"),
        ("ws_academyflow", "instructor-slack"),
        ("ws_academyflow", "automation"),
        ("ws_northstar", "in-app"),
    ] {
        let answer = test(workspace, connection).await;
        assert_eq!(answer, json!({"ok": true}), "{workspace}/{connection}");
    }
    // (connection, a word of the vendor's error, the credential that must not show)
    let failing = [
        ("slack", "invalid_auth", BAD_SLACK_TOKEN),
        ("crm", "INVALID_AUTHENTICATION", BAD_HUBSPOT_TOKEN),
        ("newsletter", "API Key Invalid", BAD_MAILCHIMP_KEY),
        ("automation", "not authorized", BAD_AC_TOKEN),
        ("support", "Access Token Invalid", BAD_INTERCOM_TOKEN),
    ];
    for (connection, vendor, credential) in failing {
        let answer = test("ws_probe", connection).await;
        assert_eq!(answer["ok"], false, "{connection}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(vendor), "{connection}: {answer}");
        assert!(!error.contains(credential), "{connection}: {answer}");
    }
    // No harmless call: said so, not guessed.
    for (workspace, connection) in [
        ("ws_academyflow", "academy-backend"),
        ("ws_northstar", "cs-slack"),
    ] {
        let answer = test(workspace, connection).await;
        assert_eq!(answer["ok"], false, "{answer}");
        assert_eq!(answer["supported"], false, "{answer}");
    }
    let (status, _) = error(
        s.post_json(
            "/v1/workspaces/ws_probe/connections/nowhere/test",
            WRITE_TOKEN,
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = error(
        s.post_json(
            "/v1/workspaces/ws_nowhere/connections/slack/test",
            WRITE_TOKEN,
            &json!({}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn lesson_payload() -> Value {
    json!({"email": "nina@academyflow.io", "lesson_title": "Customer Research Fundamentals",
           "lesson_id": "l-7", "module_title": "Growth Foundations",
           "course_id": "creator-accelerator", "completion_percentage": 62,
           "completed_at": "2026-03-21T14:18:00Z"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_shows_the_requests_the_sandbox_then_receives() {
    let s = serve(false, |_| {}).await;
    let path = "/v1/workspaces/ws_academyflow/test-event";
    let event = json!({"event": "lesson.completed", "resource": "course",
                       "resource_id": "creator-accelerator", "payload": lesson_payload()});
    let preview: Value = s
        .post_json(path, READ_TOKEN, &event)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(preview["sent"], false, "{preview}");
    let deliveries = preview["deliveries"].as_array().unwrap();
    let slack = deliveries
        .iter()
        .find(|d| d["rule"] == "lesson-alert-to-slack")
        .unwrap_or_else(|| panic!("{preview:#}"));
    let request = &slack["requests"][0];
    assert_eq!(request["method"], "POST");
    assert!(
        request["url"]
            .as_str()
            .unwrap()
            .ends_with("/slack/api/chat.postMessage")
    );
    assert_eq!(request["headers"]["authorization"], "[redacted]");
    assert_eq!(request["body"]["channel"], "#instructors");
    assert!(
        !preview.to_string().contains("xoxb-sandbox-token"),
        "{preview}"
    );
    assert!(
        s.harness.requests("slack").is_empty(),
        "a preview sends nothing"
    );
    let hubspot = deliveries
        .iter()
        .find(|d| d["rule"] == "progress-to-hubspot")
        .unwrap();
    assert!(hubspot["requests"].as_array().unwrap().is_empty());
    assert!(
        hubspot["preview_note"]
            .as_str()
            .unwrap()
            .contains("batched"),
        "{hubspot}"
    );
    let mailchimp = deliveries
        .iter()
        .find(|d| d["rule"] == "next-lesson-audience")
        .unwrap();
    assert_eq!(
        mailchimp["requests"].as_array().unwrap().len(),
        3,
        "{mailchimp}"
    );
    assert_eq!(
        mailchimp["requests"][0]["headers"]["authorization"],
        "[redacted]"
    );
    assert!(
        !mailchimp.to_string().contains("sandbox0academyflow"),
        "{mailchimp}"
    );

    // Sent: the outcomes, and the sandbox received exactly what was shown.
    let sent: Value = s
        .post_json(&format!("{path}?send=true"), WRITE_TOKEN, &event)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sent["sent"], true);
    for delivery in sent["deliveries"].as_array().unwrap() {
        assert_eq!(delivery["result"]["outcome"], "delivered", "{delivery:#}");
    }
    let by_rule = |rule: &str| {
        sent["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["rule"] == rule)
            .unwrap_or_else(|| panic!("{rule} in {sent:#}"))
            .clone()
    };
    let shown = by_rule("lesson-alert-to-slack");
    let received = s.harness.requests("slack");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, shown["requests"][0]["body"]);
    assert_eq!(received[0].method, shown["requests"][0]["method"]);
    assert!(
        shown["requests"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with(&received[0].path)
    );
    let hook = by_rule("halfway-to-backend");
    let received = s.harness.requests("webhook");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body, hook["requests"][0]["body"]);
    assert_eq!(received[0].headers["webhook-id"], hook["delivery_id"]);
    assert_eq!(
        hook["requests"][0]["headers"]["webhook-id"],
        hook["delivery_id"]
    );
    assert_eq!(
        hook["requests"][0]["headers"]["webhook-signature"],
        "[redacted]"
    );
    assert_eq!(received[0].signature_valid, Some(true));

    // Only one rule, with the rule's own event when the body names none; the others say why.
    let one: Value = s
        .post_json(
            path,
            READ_TOKEN,
            &json!({"rule": "lesson-alert-to-slack", "payload": lesson_payload()}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 1, "{one}");
    let low = json!({"event": "lesson.completed", "resource": "course",
                     "payload": {"completion_percentage": 10, "email": "a@b.io"}});
    let low: Value = s
        .post_json(path, READ_TOKEN, &low)
        .await
        .json()
        .await
        .unwrap();
    let unmatched = low["unmatched"].to_string();
    assert!(unmatched.contains("`when` is false"), "{low:#}");
    let other: Value = s
        .post_json(path, READ_TOKEN, &json!({"event": "payment.failed"}))
        .await
        .json()
        .await
        .unwrap();
    assert!(other["deliveries"].as_array().unwrap().is_empty());
    assert!(
        other["unmatched"]
            .to_string()
            .contains("it is for `lesson.completed` events"),
        "{other:#}"
    );

    // Bad input names its field; an unknown workspace is 404.
    for (body, field) in [
        (json!({"rule": "nowhere"}), "rule"),
        (json!({"payload": {}}), "event"),
        (json!({"event": "x", "surprise": 1}), "surprise"),
    ] {
        let (status, answer) = error(s.post_json(path, READ_TOKEN, &body).await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(
            paths(&answer).iter().any(|p| p == field),
            "{field}: {answer}"
        );
    }
    let (status, _) = error(
        s.post_json(
            "/v1/workspaces/ws_nowhere/test-event",
            READ_TOKEN,
            &json!({"event": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_event_tries_a_config_before_it_is_applied() {
    let s = serve(false, |_| {}).await;
    let mut config: Value =
        serde_yaml_ng::from_str(&s.local(include_str!("fixtures/academy.yaml"))).unwrap();
    config["rules"][0]["with"] = json!({"text": "tried: {{ payload.email }}"});
    let answer: Value = s
        .post_json(
            "/v1/workspaces/ws_academyflow/test-event",
            READ_TOKEN,
            &json!({"event": "lesson.completed", "payload": {"email": "t@x.io"},
                    "workspace": config}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["deliveries"][0]["requests"][0]["body"]["text"], "tried: t@x.io",
        "{answer:#}"
    );
    config["rules"][0]["action"] = json!("post_mesage");
    let (status, body) = error(
        s.post_json(
            "/v1/workspaces/ws_academyflow/test-event",
            READ_TOKEN,
            &json!({"event": "lesson.completed", "workspace": config}),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(paths(&body), ["workspace.rules[0].action"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_destination_ends_at_the_connections_timeout() {
    let s = serve(false, |_| {}).await;
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let yaml = format!(
        r#"
workspace: ws_hang
connections:
  - id: stuck
    type: webhook
    url: "http://{hang}/hook"
    timeout_ms: 300
    credentials:
      secret: "${{env:HERALD_CRED_WEBHOOK_SECRET}}"
rules:
  - id: post
    event: ping
    connection: stuck
    action: post
"#
    );
    assert_eq!(
        s.put_yaml("/v1/workspaces/ws_hang", &yaml).await.status(),
        StatusCode::CREATED
    );
    let answer: Value = s
        .post_json(
            "/v1/workspaces/ws_hang/test-event?send=true",
            WRITE_TOKEN,
            &json!({"event": "ping"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let result = &answer["deliveries"][0]["result"];
    assert_eq!(result["outcome"], "retry", "{answer:#}");
    assert_eq!(result["reason"], "request timed out", "{answer:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_health_shows_broken_circuit_and_rate_state() {
    let s = serve(false, |_| {}).await;
    let stored_only = r##"
workspace: ws_health
connections:
  - id: chat
    type: slack
    channel: "#c"
    base_url: "http://127.0.0.1:7780/slack/api"
    credentials:
      token: "${env:HERALD_CRED_ACADEMYFLOW_SLACK_TOKEN}"
  - id: crm
    type: hubspot
    base_url: "http://127.0.0.1:7780/hubspot"
rules: []
"##;
    assert_eq!(
        s.put_yaml("/v1/workspaces/ws_health", stored_only)
            .await
            .status(),
        StatusCode::CREATED
    );
    // Three transient failures in a row open the chat connection's breaker.
    let timeout = herald::destinations::Outcome::Retry {
        after: None,
        reason: "request timed out".into(),
    };
    for _ in 0..s.harness.settings.destinations.breaker_failures {
        s.app
            .router
            .breakers
            .record("ws_health", "chat", &timeout, Instant::now());
    }
    let health: Value = s
        .request(reqwest::Method::GET, "/v1/workspaces/ws_health/connections")
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["view"], "replica");
    let chat = &health["connections"][0];
    assert_eq!(chat["id"], "chat");
    assert_eq!(chat["type"], "slack");
    assert_eq!(chat["broken"], false);
    assert_eq!(chat["circuit"]["state"], "open", "{health:#}");
    assert_eq!(chat["circuit"]["last_error"], "request timed out");
    assert!(chat["circuit"]["open_until"].is_string(), "{health:#}");
    assert!(chat["circuit"]["last_error_at"].is_string(), "{health:#}");
    assert_eq!(chat["rate_limit"]["factor"], 1.0);
    let crm = &health["connections"][1];
    assert_eq!(crm["broken"], true, "{health:#}");
    assert!(
        crm["broken_reason"]
            .as_str()
            .unwrap()
            .contains("herald credentials set"),
        "{health:#}"
    );
    assert_eq!(crm["circuit"]["state"], "closed");

    let (status, _) = error(
        s.request(
            reqwest::Method::GET,
            "/v1/workspaces/ws_nowhere/connections",
        )
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
