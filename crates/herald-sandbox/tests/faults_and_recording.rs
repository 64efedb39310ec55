//! The layer around every simulator: injected faults answer first, every request is recorded
//! with the status it got, and the `/_sandbox/…` endpoints stay out of both.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_sandbox::{Fault, Sandbox};
use serde_json::json;
use tower::ServiceExt;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn send(sandbox: &Sandbox, request: Request<Body>) -> axum::response::Response {
    sandbox.router().oneshot(request).await.expect("infallible")
}

fn post(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn fault(path: &str, count: u32, status: u16) -> Fault {
    serde_json::from_value(json!({"path": path, "count": count, "status": status})).unwrap()
}

#[tokio::test]
async fn a_fault_answers_instead_of_the_simulator_and_both_answers_are_recorded() {
    let sandbox = Sandbox::new(None).unwrap();
    let mut down = fault("/webhook/a", 1, 503);
    down.retry_after = Some("7".into());
    sandbox.inject(down);

    let first = send(&sandbox, post("/webhook/a", r#"{"n": 1}"#)).await;
    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.headers()["retry-after"], "7");
    let second = send(&sandbox, post("/webhook/a", r#"{"n": 2}"#)).await;
    assert_eq!(second.status(), StatusCode::OK);

    let recorded = sandbox.requests();
    let seen: Vec<_> = recorded
        .iter()
        .map(|r| {
            (
                r.destination.as_str(),
                r.method.as_str(),
                r.path.as_str(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("webhook", "POST", "/webhook/a", 503),
            ("webhook", "POST", "/webhook/a", 200)
        ]
    );
    assert_eq!(recorded[0].body, json!({"n": 1}));
    assert_eq!(recorded[1].headers["content-type"], "application/json");
}

#[tokio::test]
async fn credentials_never_reach_the_record() {
    let sandbox = Sandbox::new(None).unwrap();
    let mut request = post(
        "/hubspot/crm/v3/objects/contacts/batch/upsert",
        r#"{"inputs": []}"#,
    );
    request
        .headers_mut()
        .insert("authorization", "Bearer pat-secret".parse().unwrap());
    let response = send(&sandbox, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let recorded = sandbox.requests();
    assert_eq!(recorded[0].destination, "hubspot");
    assert!(!recorded[0].headers.contains_key("authorization"));
}

#[tokio::test]
async fn the_webhook_verdict_on_the_signature_is_recorded() {
    let sandbox = Sandbox::new(Some(SECRET)).unwrap();
    let signed = Request::post("/webhook/hook")
        .header("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
        .header("webhook-timestamp", "1614265330")
        .header(
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        )
        .body(Body::from(r#"{"test": 2432232314}"#))
        .unwrap();
    assert_eq!(send(&sandbox, signed).await.status(), StatusCode::OK);
    let unsigned = post("/webhook/hook", r#"{"test": 2432232314}"#);
    assert_eq!(
        send(&sandbox, unsigned).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let verdicts: Vec<_> = sandbox
        .requests()
        .iter()
        .map(|r| (r.status, r.signature_valid))
        .collect();
    assert_eq!(verdicts, [(200, Some(true)), (401, Some(false))]);
}

#[tokio::test]
async fn the_sandbox_endpoints_are_neither_faulted_nor_recorded() {
    let sandbox = Sandbox::new(None).unwrap();
    sandbox.inject(fault("", 1, 500));
    let state = send(
        &sandbox,
        Request::get("/_sandbox/state").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(state.status(), StatusCode::OK);
    assert!(sandbox.requests().is_empty());

    let faulted = send(&sandbox, post("/slack/services/T/B/X", r#"{"text": "hi"}"#)).await;
    assert_eq!(
        faulted.status(),
        StatusCode::INTERNAL_SERVER_ERROR,
        "the fault was kept"
    );
    assert_eq!(sandbox.requests()[0].destination, "slack");
}

#[tokio::test]
async fn paths_are_recorded_decoded_and_faults_match_the_query_too() {
    let sandbox = Sandbox::new(None).unwrap();
    sandbox.inject(fault("/webhook/slow?status=", 1, 502));
    let faulted = send(&sandbox, post("/webhook/slow?status=200", "{}")).await;
    assert_eq!(faulted.status(), StatusCode::BAD_GATEWAY);
    let decoded = send(&sandbox, post("/webhook/caf%C3%A9%20bar", "{}")).await;
    assert_eq!(decoded.status(), StatusCode::OK);
    let paths: Vec<_> = sandbox.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/webhook/slow", "/webhook/café bar"]);
}

#[tokio::test]
async fn an_activecampaign_tag_search_is_recorded_with_its_search_term() {
    let sandbox = Sandbox::new(None).unwrap();
    let search = Request::get("/activecampaign/api/3/tags?search=vip&limit=100&offset=0")
        .header("api-token", "token-1")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&sandbox, search).await.status(), StatusCode::OK);
    let recorded = &sandbox.requests()[0];
    assert_eq!(
        (recorded.method.as_str(), recorded.path.as_str()),
        ("GET", "/activecampaign/api/3/tags?search=vip")
    );
    assert!(!recorded.headers.contains_key("api-token"));
}
