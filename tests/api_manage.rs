//! The management API's workspace and credentials endpoints against a MockCluster broker, the
//! sandbox simulators and real HTTP: a workspace PUT is checked as `herald workspace apply`
//! checks a file and round-trips through GET; literal credentials never reach
//! `herald.workspaces` or `herald.credentials` in plain text; credentials are checked against
//! their connection's type; every new route checks its token.

mod common;

use std::time::{Duration, Instant};

use common::PATIENCE;
use common::admin::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

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
