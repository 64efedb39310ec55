//! The management API's "try it" endpoints against a MockCluster broker, the sandbox
//! simulators and real HTTP: "test connection" reports the vendor's answer without the
//! credential; a test event shows the requests the sandbox then receives with `send=true`,
//! and ends at the connection's timeout when the destination hangs; connection health shows
//! broken marks, circuits and rate limits.

mod common;

use std::time::Instant;

use common::admin::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

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
    // Slack's answer, as the vendor gave it.
    let answers = &shown["result"]["responses"];
    assert_eq!(answers.as_array().map(Vec::len), Some(1), "{shown:#}");
    assert_eq!(answers[0]["status"], 200);
    let slack_body: Value = serde_json::from_str(answers[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(slack_body["ok"], true, "{shown:#}");
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
