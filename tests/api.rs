//! The HTTP API against a MockCluster broker and real HTTP on 127.0.0.1:0: ingest with a
//! workspace's publishable key lands in `herald.events` keyed by that workspace, once per
//! `event_id` or `Idempotency-Key`; bad input, a missing broker and a busy key get the one
//! error shape with the status a client acts on; the management API checks its tokens.

mod common;

use common::admin::{READ_TOKEN, WRITE_TOKEN, admin_tokens};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, PATIENCE};
use herald::app::App;
use herald::kafka;
use herald::settings::Settings;
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACADEMY_KEY: &str = "pk_dev_academyflow_7Qm2xR9vLk";

struct Served {
    harness: Harness,
    app: Arc<App>,
    base: String,
    http: reqwest::Client,
}

/// The example workspaces applied, an app serving its routes, its table loaded.
async fn serve(adjust: impl FnOnce(&mut Settings)) -> Served {
    let harness = Harness::new_with(|s| {
        s.api.admin_tokens = admin_tokens();
        adjust(s);
    })
    .await;
    harness.apply_examples().await;
    let app = Arc::new(App::start(harness.settings.clone(), harness.vars()).expect("app"));
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
    }
}

impl Served {
    fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
    }

    /// Every record of `herald.events` as (key, value).
    async fn events(&self) -> Vec<(String, Value)> {
        let settings = self.harness.settings.clone();
        tokio::task::spawn_blocking(move || {
            let reader: rdkafka::consumer::BaseConsumer =
                kafka::reader_config(&settings).create().unwrap();
            let mut out = Vec::new();
            kafka::read_to_end(&reader, &settings.topics.events, |m| {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((key, serde_json::from_slice(m.payload().unwrap()).unwrap()));
            })
            .unwrap();
            out
        })
        .await
        .unwrap()
    }
}

fn seed() -> Value {
    json!({
        "event": "lesson.completed",
        "resource": "course",
        "resource_id": "creator-accelerator",
        "payload": {"email": "nina@academyflow.io", "completion_percentage": 62},
    })
}

/// The error body's code, checking the one shape on the way.
async fn error_code(response: reqwest::Response) -> (StatusCode, String, Value) {
    let status = response.status();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every answer has a request id"
    );
    let body: Value = response.json().await.expect("a JSON error body");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not the error shape: {body}"))
        .to_owned();
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_event_is_produced_keyed_by_the_keys_workspace_after_the_ack() {
    let s = serve(|_| {}).await;
    let response = s
        .post("/v1/events", ACADEMY_KEY, &seed())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let id = response.json::<Value>().await.unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(id.starts_with("evt_"), "{id}");
    // Answered after the ack: the record is already there.
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    let (key, value) = &events[0];
    assert_eq!(key, "ws_academyflow");
    assert_eq!(value["event_id"], id.as_str());
    assert_eq!(value["workspace_id"], "ws_academyflow");
    assert_eq!(value["payload"]["completion_percentage"], 62);

    // A body naming another workspace does not move the event there.
    let mut other = seed();
    other["workspace_id"] = json!("ws_northstar");
    let (status, code, body) = error_code(
        s.post("/v1/events", ACADEMY_KEY, &other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert_eq!(body["error"]["fields"][0]["path"], "workspace_id");
    assert_eq!(s.events().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_or_idempotency_key_makes_no_second_event() {
    let s = serve(|_| {}).await;
    let mut with_id = seed();
    with_id["event_id"] = json!("evt_product_42");
    for _ in 0..2 {
        let r = s
            .post("/v1/events", ACADEMY_KEY, &with_id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(
            r.json::<Value>().await.unwrap()["event_id"],
            "evt_product_42"
        );
    }
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = s
            .post(
                "/v1/events/batch",
                ACADEMY_KEY,
                &json!({"events": [seed(), seed()]}),
            )
            .header("Idempotency-Key", "order-7-batch")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        answers.push(r.json::<Value>().await.unwrap()["event_ids"].clone());
    }
    assert_eq!(
        answers[0], answers[1],
        "the second post got the first answer"
    );
    assert_eq!(answers[0].as_array().unwrap().len(), 2);
    assert_eq!(s.events().await.len(), 3, "one event, then a batch of two");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_in_the_error_shape_with_field_paths() {
    let s = serve(|settings| settings.api.max_body_bytes = 4096).await;
    let mut long = seed();
    long["event"] = json!("e".repeat(257));
    let batch = json!({"events": [seed(), long, {"resource": "course"}]});
    let (status, code, body) = error_code(
        s.post("/v1/events/batch", ACADEMY_KEY, &batch)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::BAD_REQUEST, "invalid_request")
    );
    let paths: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["events[1].event", "events[2]"], "{body}");

    let mut big = seed();
    big["payload"]["notes"] = json!("x".repeat(5000));
    let (status, code, _) = error_code(
        s.post("/v1/events", ACADEMY_KEY, &big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );

    for key in ["order 7", "order\t7", &"k".repeat(257)] {
        let (status, _, body) = error_code(
            s.post("/v1/events", ACADEMY_KEY, &seed())
                .header("Idempotency-Key", key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(
            body["error"]["fields"][0]["path"], "headers.Idempotency-Key",
            "{body}"
        );
    }

    let r = s
        .http
        .get(format!("{}/v1/nothing-here", s.base))
        .header("x-request-id", "req-from-the-caller")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-from-the-caller");
    let (status, code, _) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    assert!(s.events().await.is_empty(), "nothing was produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_checked_and_kept_apart() {
    let s = serve(|_| {}).await;
    let cases = [
        ("pk_dev_academyflow_wrongwrong", "/v1/events"),
        (WRITE_TOKEN, "/v1/events"),
    ];
    for (key, path) in cases {
        let (status, code, _) = error_code(s.post(path, key, &seed()).send().await.unwrap()).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{key}"
        );
    }
    let r = s
        .http
        .post(format!("{}/v1/events", s.base))
        .json(&seed())
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await.0, StatusCode::UNAUTHORIZED);
    assert!(s.events().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_is_503_with_retry_after() {
    let s = serve(|settings| settings.api.produce_timeout_ms = 1000).await;
    s.harness.mock.broker_down(1).unwrap();
    let r = s
        .post("/v1/events", ACADEMY_KEY, &seed())
        .send()
        .await
        .unwrap();
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let (status, code, body) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(
        !body.to_string().contains("Local:"),
        "no internal error text: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let s = serve(|settings| {
        settings.api.rate_limit_per_second = 1;
        settings.api.rate_limit_burst = 1;
    })
    .await;
    let first = s
        .post("/v1/events", ACADEMY_KEY, &seed())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let second = s
        .post("/v1/events", ACADEMY_KEY, &seed())
        .send()
        .await
        .unwrap();
    assert!(second.headers().contains_key("retry-after"));
    let (status, code, _) = error_code(second).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(s.events().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_check_token_and_scope_and_never_show_credentials() {
    let s = serve(|_| {}).await;
    let url = |path: &str| format!("{}{path}", s.base);
    let no_token = s.http.get(url("/v1/workspaces")).send().await.unwrap();
    assert_eq!(error_code(no_token).await.0, StatusCode::UNAUTHORIZED);
    for wrong in ["adm_write_0123456789abcdefghiX", ACADEMY_KEY] {
        let r = s
            .http
            .get(url("/v1/workspaces"))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r).await.0, StatusCode::UNAUTHORIZED, "{wrong}");
    }

    let r = s
        .http
        .get(url("/v1/workspaces"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    for (_, secret) in herald::cli::dev::sandbox_env() {
        assert!(!text.contains(secret), "a credential is shown: {text}");
    }
    assert!(
        !text.contains(ACADEMY_KEY),
        "a publishable key is shown: {text}"
    );
    let list: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ws_academyflow", "ws_northstar"]);

    let one: Value = s
        .http
        .get(url("/v1/workspaces/ws_academyflow"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["status"], "ready");
    assert!(one["rules"].as_u64().unwrap() > 0, "{one}");
    assert!(
        one["connections"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": "crm", "type": "hubspot"})),
        "{one}"
    );
    let missing = s
        .http
        .get(url("/v1/workspaces/ws_nobody"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(missing).await.0, StatusCode::NOT_FOUND);

    let delete = |token: &'static str| {
        s.http
            .delete(url("/v1/workspaces/ws_northstar"))
            .bearer_auth(token)
            .send()
    };
    let (status, code, _) = error_code(delete(READ_TOKEN).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    assert!(s.app.health.table.get("ws_northstar").is_some());
    assert_eq!(
        delete(WRITE_TOKEN).await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    let deadline = Instant::now() + PATIENCE;
    while s.app.health.table.get("ws_northstar").is_some() {
        assert!(
            Instant::now() < deadline,
            "the tombstone never reached the table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
