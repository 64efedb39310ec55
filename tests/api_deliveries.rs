//! The deliveries part of the management API, against a MockCluster broker, a running processor
//! with its history query store and the sandbox, over real HTTP on 127.0.0.1:0: a workspace's
//! deliveries are listed with filters and cursor pages, one is shown with its attempts, one is
//! replayed (a second call to the destination, a second attempt in history; from its dead
//! letter when its event is out of reach; 409 when it cannot be), a workspace's
//! failed deliveries are redriven (a dry run enqueues nothing) and its window replayed; bad
//! parameters name themselves, tokens are checked, and without a ready store the answer is 503.

mod common;

use common::admin::{READ_TOKEN, WRITE_TOKEN, admin_tokens};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Harness, PATIENCE, Running};
use herald::api::ApiState;
use herald::api::processor::Processor;
use herald::credentials::{CredentialTable, Keyring};
use herald::deliver::breaker::{BreakerSettings, Breakers};
use herald::deliver::health::Health;
use herald::deliver::retry::RetryPolicy;
use herald::deliver::route::Router;
use herald::deliver::supersede::LastWrites;
use herald::history::OutcomeWriter;
use herald::history::skips::SkipSummaries;
use herald::history::store::HistoryStore;
use herald::kafka;
use herald::settings::Settings;
use herald::settings::interpolate::Vars;
use herald::telemetry::Metrics;
use herald::workspace::table::{WorkspaceEntry, WorkspaceTable};
use rdkafka::Message;
use reqwest::StatusCode;
use serde_json::{Value, json};

const ACADEMY_KEY: &str = "pk_dev_academyflow_7Qm2xR9vLk";
const ACADEMY: &str = "/v1/workspaces/ws_academyflow";
/// Rules of examples/academy.yaml a `lesson.completed` at 62% matches.
const RULES_PER_LESSON: usize = 5;

fn tokens(s: &mut Settings) {
    s.api.admin_tokens = admin_tokens();
}

struct Served {
    harness: Harness,
    running: Running,
    base: String,
    http: reqwest::Client,
    _store_dir: tempfile::TempDir,
}

/// The example workspaces applied, a processor running with a history store (unless
/// `with_store` is false), its routes served, its table loaded and its store caught up.
async fn serve(with_store: bool) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db").display().to_string();
    let harness = Harness::new_with(|s| {
        tokens(s);
        if with_store {
            s.history.store_path = path;
        }
    })
    .await;
    harness.apply_examples().await;
    let running = harness.start();
    let app = running.app.clone();
    let deadline = Instant::now() + PATIENCE;
    while !app.health.table.is_ready()
        || app.health.table.get("ws_academyflow").is_none()
        || app.history.as_ref().is_some_and(|h| !h.is_ready())
    {
        assert!(Instant::now() < deadline, "never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let base = listen(app.http_routes()).await;
    Served {
        harness,
        running,
        base,
        http: reqwest::Client::new(),
        _store_dir: dir,
    }
}

async fn listen(routes: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, routes).await });
    base
}

/// An answer's status and JSON body, checking that it carries a request id.
async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert!(response.headers().contains_key("x-request-id"));
    (status, response.json().await.unwrap_or(Value::Null))
}

impl Served {
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.unwrap()).await
    }

    /// GETs `path` with the read token until its answer satisfies `done`.
    async fn wait_for(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get(path, Some(READ_TOKEN)).await;
            if status == StatusCode::OK && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {path} answers {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn emit_lesson(&self, event_id: &str) {
        self.harness
            .emit(
                "ws_academyflow",
                "lesson.completed",
                event_id,
                Some("course"),
                json!({"student_id": "stu_1", "email": "nina@academyflow.io",
                    "lesson_id": "lesson_research", "lesson_title": "Customer Research",
                    "module_title": "Growth", "course_id": "course_creator",
                    "completion_percentage": 62, "completed_at": "2026-03-21T14:18:00Z"}),
            )
            .await;
    }

    /// Requests the sandbox received at paths starting with `path`.
    fn calls(&self, destination: &str, path: &str) -> usize {
        self.harness
            .requests(destination)
            .iter()
            .filter(|r| r.path.starts_with(path))
            .count()
    }

    /// Tasks for `delivery_id` in the first retry tier's topic.
    async fn first_tier_tasks(&self, delivery_id: &str) -> usize {
        let settings = self.harness.settings.clone();
        let id = delivery_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let reader: rdkafka::consumer::BaseConsumer =
                kafka::reader_config(&settings).create().unwrap();
            let mut n = 0;
            kafka::read_to_end(&reader, &settings.retry_tiers()[0].topic, |m| {
                let task: Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
                if task["delivery_id"] == id.as_str() {
                    n += 1;
                }
            })
            .unwrap();
            n
        })
        .await
        .unwrap()
    }
}

fn deliveries(page: &Value) -> &Vec<Value> {
    page["deliveries"].as_array().expect("a list of deliveries")
}

/// The error's code and the paths of its fields, checking the one error shape.
fn error(body: &Value) -> (&str, Vec<&str>) {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(body["error"]["message"].is_string(), "{body}");
    let fields = body["error"]["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["path"].as_str()).collect())
        .unwrap_or_default();
    (code, fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_listed_newest_first_filtered_and_paged() {
    const EVENTS: usize = 4;
    let s = serve(true).await;
    for i in 0..EVENTS {
        s.emit_lesson(&format!("evt_{i}")).await;
    }
    s.harness
        .emit(
            "ws_northstar",
            "page.completed",
            "evt_page",
            Some("onboarding_sequence"),
            json!({"user_id": "usr_1", "email": "alex@northstar.io", "page_id": "p",
                "page_title": "Connect your CRM", "sequence_step": 3,
                "completed_at": "2026-03-21T15:06:00Z", "time_on_page_seconds": 5}),
        )
        .await;
    let all = s
        .wait_for(
            &format!("{ACADEMY}/deliveries?limit=500"),
            "all delivered",
            |p| {
                let d = deliveries(p);
                d.len() == EVENTS * RULES_PER_LESSON && d.iter().all(|d| d["status"] == "delivered")
            },
        )
        .await;
    assert!(all["next"].is_null(), "one page holds them: {all}");

    // Pages of 6: every delivery once, newest first across pages.
    let mut seen: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("{ACADEMY}/deliveries?limit=6&cursor={c}"),
            None => format!("{ACADEMY}/deliveries?limit=6"),
        };
        let (status, page) = s.get(&path, Some(READ_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(deliveries(&page).iter().cloned());
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 4, "6 + 6 + 6 + 2");
    let ids: Vec<&str> = seen
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = deliveries(&all)
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected, "the pages, in order, are the whole list");
    // The store keeps update times to the millisecond; ties go by delivery id.
    let order: Vec<(i64, &str)> = seen
        .iter()
        .map(|d| {
            let at: chrono::DateTime<chrono::Utc> =
                d["updated_at"].as_str().unwrap().parse().unwrap();
            (at.timestamp_millis(), d["delivery_id"].as_str().unwrap())
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] > w[1]),
        "newest first: {order:?}"
    );

    // Filters.
    let count = |query: &'static str| {
        let s = &s;
        async move {
            let (status, page) = s
                .get(&format!("{ACADEMY}/deliveries?{query}"), Some(READ_TOKEN))
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {page}");
            deliveries(&page).len()
        }
    };
    assert_eq!(count("event_id=evt_2").await, RULES_PER_LESSON);
    assert_eq!(count("rule=lesson-alert-to-slack").await, EVENTS);
    assert_eq!(count("connection=instructor-slack").await, EVENTS);
    assert_eq!(
        count("event=lesson.completed&status=delivered,dead").await,
        EVENTS * RULES_PER_LESSON
    );
    assert_eq!(count("status=dead&status=failed").await, 0);
    assert_eq!(
        count("event=page.completed").await,
        0,
        "another workspace's event"
    );
    assert_eq!(count("since=2999-01-01T00:00:00Z").await, 0);
    assert_eq!(count("until=2000-01-01T00:00:00Z").await, 0);
    assert_eq!(
        count("since=2000-01-01T00:00:00Z&event_id=evt_0&rule=progress-to-hubspot").await,
        1
    );

    // Bad parameters are named.
    for (query, field) in [
        ("status=lost", "status"),
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-40", "until"),
        ("cursor=garbage", "cursor"),
        ("workspace=ws_northstar", "workspace"),
    ] {
        let (status, body) = s
            .get(&format!("{ACADEMY}/deliveries?{query}"), Some(READ_TOKEN))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error(&body), ("invalid_request", vec![field]), "{query}");
    }

    // One delivery, with its attempt.
    let first = &deliveries(&all)[0];
    let id = first["delivery_id"].as_str().unwrap();
    let (status, one) = s
        .get(&format!("{ACADEMY}/deliveries/{id}"), Some(READ_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(&one, first);
    assert_eq!(one["attempts"].as_array().map(Vec::len), Some(1), "{one}");
    assert_eq!(one["attempts"][0]["outcome"], "delivered");

    // 404s: an unknown workspace, an unknown delivery, another workspace's delivery.
    let northstar = s
        .wait_for(
            "/v1/workspaces/ws_northstar/deliveries",
            "northstar delivered",
            |p| !deliveries(p).is_empty(),
        )
        .await;
    let theirs = deliveries(&northstar)[0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/v1/workspaces/ws_nobody/deliveries".to_owned(),
        "/v1/workspaces/ws_nobody/deliveries/dl_0".to_owned(),
        format!("{ACADEMY}/deliveries/dl_00000000000000000000000000000000"),
        format!("{ACADEMY}/deliveries/{theirs}"),
    ] {
        let (status, body) = s.get(&path, Some(READ_TOKEN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(error(&body).0, "not_found");
    }
    let (status, _) = s
        .post(
            &format!("{ACADEMY}/deliveries/dl_0/replay"),
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (path, body) in [
        ("/v1/workspaces/ws_nobody/redrive", json!({"dry_run": true})),
        (
            "/v1/workspaces/ws_nobody/replay",
            json!({"since": "2026-03-21T14:00:00Z"}),
        ),
    ] {
        let (status, answer) = s.post(path, Some(WRITE_TOKEN), Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {answer}");
    }

    // Auth: reads need a token, writes need the write scope, publishable keys never do.
    let list = format!("{ACADEMY}/deliveries");
    let get = format!("{ACADEMY}/deliveries/{id}");
    for path in [&list, &get] {
        for token in [
            None,
            Some("adm_not_a_token_of_this_server"),
            Some(ACADEMY_KEY),
        ] {
            let (status, body) = s.get(path, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with {token:?}: {body}"
            );
            assert_eq!(error(&body).0, "unauthorized");
        }
    }
    let writes = [
        (format!("{ACADEMY}/deliveries/{id}/replay"), None),
        (format!("{ACADEMY}/redrive"), Some(json!({"dry_run": true}))),
        (
            format!("{ACADEMY}/replay"),
            Some(json!({"since": "2026-03-21T14:00:00Z"})),
        ),
    ];
    for (path, body) in &writes {
        for token in [
            None,
            Some("adm_not_a_token_of_this_server"),
            Some(ACADEMY_KEY),
        ] {
            let (status, answer) = s.post(path, token, body.clone()).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{path} with {token:?}: {answer}"
            );
        }
        let (status, answer) = s.post(path, Some(READ_TOKEN), body.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {answer}");
        assert_eq!(error(&answer).0, "forbidden");
    }
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_delivery_is_sent_again_and_history_shows_the_new_attempt() {
    let s = serve(true).await;
    s.emit_lesson("evt_replay").await;
    let slack = "/slack/api/chat.postMessage";
    let page = s
        .wait_for(
            &format!("{ACADEMY}/deliveries?event_id=evt_replay&rule=lesson-alert-to-slack"),
            "the alert delivered",
            |p| {
                deliveries(p)
                    .first()
                    .is_some_and(|d| d["status"] == "delivered")
            },
        )
        .await;
    let id = deliveries(&page)[0]["delivery_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.calls("slack", slack), 1);

    let (status, replayed) = s
        .post(
            &format!("{ACADEMY}/deliveries/{id}/replay"),
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    let enqueued = &replayed["enqueued"];
    assert_eq!(enqueued["delivery_id"], id.as_str());
    assert_eq!(enqueued["event_id"], "evt_replay");
    assert_eq!(enqueued["rule_id"], "lesson-alert-to-slack");
    assert_eq!(enqueued["connection_id"], "instructor-slack");
    assert_eq!(enqueued["attempt"], 2);
    assert_eq!(enqueued["source"], "event");
    assert_eq!(
        enqueued["topic"],
        s.harness.settings.retry_tiers()[0].topic.as_str()
    );

    let again = s
        .wait_for(
            &format!("{ACADEMY}/deliveries/{id}"),
            "the second attempt",
            |d| {
                d["status"] == "delivered" && d["attempts"].as_array().is_some_and(|a| a.len() == 2)
            },
        )
        .await;
    assert_eq!(again["attempts"][1]["outcome"], "delivered", "{again}");
    assert_eq!(
        s.calls("slack", slack),
        2,
        "the destination was called again"
    );

    // The window: what was delivered is not sent again, unless forced.
    let since = (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339();
    let (status, report) = s
        .post(
            &format!("{ACADEMY}/replay"),
            Some(WRITE_TOKEN),
            Some(json!({"since": since})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["events"], 1, "{report}");
    assert_eq!(report["already_delivered"], RULES_PER_LESSON, "{report}");
    assert_eq!(report["settled"], 0, "{report}");
    assert!(report["scanned"].as_u64() >= Some(1), "{report}");
    let (status, report) = s
        .post(
            &format!("{ACADEMY}/replay"),
            Some(WRITE_TOKEN),
            Some(json!({"since": since, "rule": "lesson-alert-to-slack", "force": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["events"].as_u64(), report["settled"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(
        s.calls("slack", slack),
        3,
        "forced: sent once more, before the answer"
    );

    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (
            json!({"since": since, "until": "2000-01-01T00:00:00Z"}),
            "until",
        ),
        (json!({"since": since, "forse": true}), "forse"),
    ] {
        let (status, answer) = s
            .post(&format!("{ACADEMY}/replay"), Some(WRITE_TOKEN), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(error(&answer), ("invalid_request", vec![field]));
    }

    // With its rule gone from the workspace, the delivery cannot be replayed, and says why.
    let renamed = include_str!("../examples/academy.yaml")
        .replace("id: lesson-alert-to-slack", "id: lesson-alert-renamed");
    s.harness.apply(&[("academy.yaml", &renamed)]).await;
    let deadline = Instant::now() + PATIENCE;
    while matches!(
        s.running.app.router.table.get("ws_academyflow"),
        Some(WorkspaceEntry::Ready(ws)) if ws.rule("lesson-alert-to-slack").is_some()
    ) {
        assert!(Instant::now() < deadline, "the new config never loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, refused) = s
        .post(
            &format!("{ACADEMY}/deliveries/{id}/replay"),
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(error(&refused).0, "conflict");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("lesson-alert-to-slack"), "{message}");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_dry_run_counts_failed_deliveries_and_enqueues_nothing() {
    let s = serve(true).await;
    let webhook = "/webhook/academyflow";
    // The backend refuses the first post for good: that delivery fails.
    let fault = json!({"path": webhook, "count": 1, "status": 400, "body": "bad"});
    let injected = s
        .http
        .post(format!("{}/_sandbox/faults", s.harness.sandbox_url))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(injected.status().is_success());
    s.emit_lesson("evt_fail").await;
    let failed = s
        .wait_for(
            &format!("{ACADEMY}/deliveries?status=failed"),
            "the post failed",
            |p| deliveries(p).len() == 1,
        )
        .await;
    let failed = &deliveries(&failed)[0];
    assert_eq!(failed["rule_id"], "halfway-to-backend", "{failed}");
    let id = failed["delivery_id"].as_str().unwrap().to_owned();

    let (status, dry) = s
        .post(
            &format!("{ACADEMY}/redrive"),
            Some(WRITE_TOKEN),
            Some(json!({"dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["count"], 1, "{dry}");
    assert_eq!(dry["delivery_ids"], json!([id]));
    assert_eq!(dry["truncated"], false);
    assert_eq!(
        s.first_tier_tasks(&id).await,
        0,
        "a dry run enqueues nothing"
    );
    let (_, still) = s
        .get(&format!("{ACADEMY}/deliveries/{id}"), Some(READ_TOKEN))
        .await;
    assert_eq!(still["status"], "failed");

    // One bulk action at a time: another meanwhile is told to come back.
    let running = s.running.app.api.bulk.try_enter().unwrap();
    let response = s
        .http
        .post(format!("{}{ACADEMY}/redrive", s.base))
        .bearer_auth(WRITE_TOKEN)
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, busy) = answer(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{busy}");
    assert_eq!(error(&busy).0, "busy");
    drop(running);

    // Filters that select nothing, then the real thing.
    let (_, none) = s
        .post(
            &format!("{ACADEMY}/redrive"),
            Some(WRITE_TOKEN),
            Some(json!({"connection": "crm", "statuses": ["failed", "dead"]})),
        )
        .await;
    assert_eq!(
        (none["count"].as_u64(), none["dry_run"].as_bool()),
        (Some(0), Some(false)),
        "{none}"
    );
    let (status, done) = s
        .post(
            &format!("{ACADEMY}/redrive"),
            Some(WRITE_TOKEN),
            Some(json!({"rule": "halfway-to-backend", "since": "2000-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["delivery_ids"], json!([id]), "{done}");
    assert_eq!(s.first_tier_tasks(&id).await, 1);
    s.wait_for(
        &format!("{ACADEMY}/deliveries/{id}"),
        "redriven and delivered",
        |d| d["status"] == "delivered",
    )
    .await;
    assert_eq!(
        s.calls("webhook", webhook),
        2,
        "the refused post and the redriven one"
    );

    for (body, field) in [
        (json!({"statuses": ["delivered"]}), "statuses"),
        (json!({"statuses": ["lost"]}), "statuses[0]"),
        (json!({"since": "last week"}), "since"),
        (json!({"connnection": "crm"}), "connnection"),
    ] {
        let (status, answer) = s
            .post(&format!("{ACADEMY}/redrive"), Some(WRITE_TOKEN), Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(error(&answer), ("invalid_request", vec![field]));
    }
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_whose_event_is_out_of_reach_is_replayed_from_its_dead_letter() {
    let s = serve(true).await;
    let webhook = "/webhook/academyflow";
    let fault = json!({"path": webhook, "count": 1, "status": 400, "body": "bad"});
    let injected = s
        .http
        .post(format!("{}/_sandbox/faults", s.harness.sandbox_url))
        .json(&fault)
        .send()
        .await
        .unwrap();
    assert!(injected.status().is_success());
    // Written two days before it is delivered: past the window a replay searches for it.
    let two_days_ago = (chrono::Utc::now() - chrono::Duration::days(2)).timestamp_millis();
    let event = json!({"event_id": "evt_old", "event": "lesson.completed", "resource": "course",
        "payload": {"student_id": "stu_1", "email": "nina@academyflow.io",
            "lesson_id": "lesson_research", "lesson_title": "Customer Research",
            "module_title": "Growth", "course_id": "course_creator",
            "completion_percentage": 62, "completed_at": "2026-03-21T14:18:00Z"}})
    .to_string();
    s.harness
        .producer
        .send(
            rdkafka::producer::FutureRecord::to(&s.harness.settings.topics.events)
                .key("ws_academyflow")
                .payload(&event)
                .timestamp(two_days_ago),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    let page = s
        .wait_for(
            &format!("{ACADEMY}/deliveries?event_id=evt_old"),
            "all settled",
            |p| {
                let d = deliveries(p);
                d.len() == RULES_PER_LESSON && d.iter().any(|d| d["status"] == "failed")
            },
        )
        .await;
    let failed = deliveries(&page)
        .iter()
        .find(|d| d["status"] == "failed")
        .unwrap();
    let failed_id = failed["delivery_id"].as_str().unwrap().to_owned();

    let (status, replayed) = s
        .post(
            &format!("{ACADEMY}/deliveries/{failed_id}/replay"),
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{replayed}");
    assert_eq!(replayed["enqueued"]["source"], "dead_letter", "{replayed}");
    s.wait_for(
        &format!("{ACADEMY}/deliveries/{failed_id}"),
        "delivered",
        |d| d["status"] == "delivered",
    )
    .await;
    assert_eq!(
        s.calls("webhook", webhook),
        2,
        "the refused post and the replayed one"
    );

    // A delivered one has no dead letter to fall back on.
    let delivered = deliveries(&page)
        .iter()
        .find(|d| d["status"] == "delivered")
        .unwrap();
    let (status, refused) = s
        .post(
            &format!(
                "{ACADEMY}/deliveries/{}/replay",
                delivered["delivery_id"].as_str().unwrap()
            ),
            Some(WRITE_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(message.contains("evt_old"), "{message}");
    s.running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ready_history_store_the_deliveries_routes_answer_503() {
    // No store configured.
    let s = serve(false).await;
    for (post, path) in [
        (false, format!("{ACADEMY}/deliveries")),
        (false, format!("{ACADEMY}/deliveries/dl_0")),
        (true, format!("{ACADEMY}/deliveries/dl_0/replay")),
    ] {
        let request = if post {
            s.http.post(format!("{}{path}", s.base))
        } else {
            s.http.get(format!("{}{path}", s.base))
        };
        let response = request.bearer_auth(WRITE_TOKEN).send().await.unwrap();
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let (status, body) = answer(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
        assert_eq!(error(&body).0, "unavailable");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("history.store_path"), "{message}");
    }
    s.running.stop().await;

    // A store that has not caught up with the topic yet (no follower feeds this one).
    let harness = Harness::new_with(tokens).await;
    let settings = harness.settings.clone();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HistoryStore::open(&dir.path().join("history.db")).unwrap());
    let table = Arc::new(WorkspaceTable::new(Arc::new(CredentialTable::new(
        Keyring::default(),
    ))));
    table.mark_ready();
    let metrics = Metrics::new();
    let producer = kafka::producer_config(&settings).create().unwrap();
    let writer = OutcomeWriter::new(producer, &settings, &metrics);
    let health = Arc::new(
        Health::new(table.clone(), writer.health(), Duration::from_secs(60))
            .with_history(Some(store)),
    );
    let router = Arc::new(Router {
        table,
        writer,
        skips: SkipSummaries::new(Duration::from_secs(1)),
        metrics: metrics.clone(),
        policy: RetryPolicy::from_settings(&settings),
        breakers: Breakers::new(BreakerSettings::from_settings(&settings)),
        dedupe: None,
        last_writes: LastWrites::new(16),
    });
    let processor = Processor {
        router,
        ctx: herald::app::destination_context(&settings),
        vars: Vars::default(),
        keys: Keyring::default(),
    };
    let api = ApiState::start(&settings, health, metrics, processor).unwrap();
    let base = listen(herald::api::router(api)).await;
    let response = reqwest::Client::new()
        .get(format!("{base}{ACADEMY}/deliveries"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    let after = response.headers().get("retry-after").cloned();
    let (status, body) = answer(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(after.is_some(), "a Retry-After");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("catching up"), "{message}");
}
