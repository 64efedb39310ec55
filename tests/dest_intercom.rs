//! The Intercom destination against its sandbox simulator over real HTTP on 127.0.0.1: what
//! ends up stored in the simulated workspace, the outcome of each failure the vendor
//! documents, and that a retried multi-step action creates nothing twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::destinations::{connect, count, fault, len, send, serve_sandbox, state};
use herald::destinations::{Connection, Outcome};
use herald_sandbox::Fault;
use serde_json::{Value, json};

fn intercom(url: &str, token: &str) -> Arc<dyn Connection> {
    connect(
        "intercom",
        json!({"base_url": format!("{url}/intercom")}),
        ("token", token),
    )
}

/// Tunes the Intercom simulator (search lag, rate limit).
async fn tune_intercom(url: &str, tuning: Value) {
    let response = reqwest::Client::new()
        .put(format!("{url}/_sandbox/intercom"))
        .json(&tuning)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
}

fn envelope_fault(path: &str, status: u16, code: &str, message: &str) -> Fault {
    let mut f = fault(path, 1, status, "");
    f.body = json!({"type": "error.list", "request_id": "r1",
        "errors": [{"code": code, "message": message}]})
    .to_string();
    f
}

#[tokio::test]
async fn intercom_tag_contact_retried_while_search_lags_makes_one_contact_and_one_tag() {
    let (sandbox, url) = serve_sandbox().await;
    // New contacts stay invisible to search, as at Intercom for a while after a create.
    tune_intercom(&url, json!({"search_lag_ms": 3_600_000})).await;
    let with =
        json!({"external_id": "usr_5012", "email": "alex@northstar.io", "tag": "connected-crm"});
    sandbox.inject(fault("/intercom/tags", 1, 503, ""));

    let conn = intercom(&url, "ic-token-1");
    let first = send(&conn, "tag_contact", with.clone()).await;
    assert_eq!(
        (first.outcome.kind(), first.status_code),
        ("retry", Some(503))
    );
    let second = send(&conn, "tag_contact", with.clone()).await;
    assert_eq!(second.outcome, Outcome::Delivered, "{second:?}");

    // Once search has caught up, a fresh connection finds the contact instead of creating it.
    tune_intercom(&url, json!({"search_lag_ms": 0})).await;
    let third = send(&intercom(&url, "ic-token-1"), "tag_contact", with).await;
    assert_eq!(third.outcome, Outcome::Delivered, "{third:?}");

    let ic = &state(&url).await["intercom"];
    assert_eq!(len(&ic["contacts"]), 1, "{ic}");
    let contact = &ic["contacts"][0];
    assert_eq!(contact["external_id"], "usr_5012");
    assert_eq!(contact["email"], "alex@northstar.io");
    assert_eq!(len(&ic["tags"]), 1, "{ic}");
    assert_eq!(len(&contact["tags"]["data"]), 1, "{contact}");
    assert_eq!(contact["tags"]["data"][0]["name"], "connected-crm");
    let creates: Vec<u16> = sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/intercom/contacts")
        .map(|r| r.status)
        .collect();
    assert_eq!(
        creates,
        [200, 409],
        "the retry's create met the first contact"
    );
    for r in sandbox.requests().iter().filter(|r| r.status != 503) {
        assert_eq!(r.headers["intercom-version"], "2.14", "{r:?}");
        assert_eq!(r.headers["accept"], "application/json");
        assert!(!r.headers.contains_key("authorization"));
    }
}

#[tokio::test]
async fn intercom_update_attributes_finds_the_contact_by_email() {
    let (sandbox, url) = serve_sandbox().await;
    tune_intercom(&url, json!({"search_lag_ms": 0})).await;
    let conn = intercom(&url, "ic-token-2");
    let first = send(
        &conn,
        "update_attributes",
        json!({"external_id": "usr_7", "email": "sam@northstar.io", "attributes": {"onboarding_step": 3}}),
    )
    .await;
    assert_eq!(first.outcome, Outcome::Delivered, "{first:?}");
    let second = send(
        &conn,
        "update_attributes",
        json!({"email": "sam@northstar.io", "attributes": {"last_page": "Connect your CRM"}}),
    )
    .await;
    assert_eq!(second.outcome, Outcome::Delivered, "{second:?}");

    let ic = &state(&url).await["intercom"];
    assert_eq!(len(&ic["contacts"]), 1, "{ic}");
    assert_eq!(
        ic["contacts"][0]["custom_attributes"],
        json!({"onboarding_step": 3, "last_page": "Connect your CRM"})
    );
    assert_eq!(count(&sandbox, "POST", "/intercom/contacts"), 1);
    let puts = sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 2);
}

#[tokio::test]
async fn intercom_a_contact_or_tag_gone_mid_action_is_looked_up_again() {
    let (sandbox, url) = serve_sandbox().await;
    tune_intercom(&url, json!({"search_lag_ms": 0})).await;
    let conn = intercom(&url, "ic-token-3");
    let with = json!({"external_id": "usr_9", "tag": "step-3"});
    assert_eq!(
        send(&conn, "tag_contact", with.clone()).await.outcome,
        Outcome::Delivered
    );
    let id = state(&url).await["intercom"]["contacts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag_path = format!("/intercom/contacts/{id}/tags");

    sandbox.inject(envelope_fault(
        &tag_path,
        404,
        "not_found",
        "User Not Found",
    ));
    let refound = send(&conn, "tag_contact", with.clone()).await;
    assert_eq!(refound.outcome, Outcome::Delivered, "{refound:?}");

    sandbox.inject(envelope_fault(
        &tag_path,
        404,
        "not_found",
        "Resource Not Found",
    ));
    let retagged = send(&conn, "tag_contact", with.clone()).await;
    assert_eq!(retagged.outcome, Outcome::Delivered, "{retagged:?}");
    // The first call and the re-fetch after "Resource Not Found"; the cache served the rest.
    assert_eq!(count(&sandbox, "POST", "/intercom/tags"), 2);

    for _ in 0..2 {
        sandbox.inject(envelope_fault(
            &tag_path,
            404,
            "not_found",
            "User Not Found",
        ));
    }
    let gone = send(&conn, "tag_contact", with).await;
    let Outcome::Permanent { reason } = &gone.outcome else {
        panic!("{gone:?}")
    };
    assert!(reason.contains("User Not Found"), "{reason}");
    let ic = &state(&url).await["intercom"];
    assert_eq!((len(&ic["contacts"]), len(&ic["tags"])), (1, 1), "{ic}");
}

#[tokio::test]
async fn intercom_failures_are_classified_like_the_reference() {
    let (sandbox, url) = serve_sandbox().await;
    tune_intercom(&url, json!({"search_lag_ms": 0})).await;
    let tag = json!({"email": "a@b.io", "tag": "x"});

    let refused = send(&intercom(&url, "bad-token"), "tag_contact", tag.clone()).await;
    assert_eq!(refused.status_code, Some(401));
    let Outcome::ConnectionBroken { reason } = &refused.outcome else {
        panic!("{refused:?}")
    };
    assert!(reason.contains("Access Token Invalid"), "{reason}");

    let revoked = send(&intercom(&url, "revoked-1"), "tag_contact", tag.clone()).await;
    let Outcome::ConnectionBroken { reason } = &revoked.outcome else {
        panic!("{revoked:?}")
    };
    assert!(reason.contains("token_revoked"), "{reason}");

    let old = connect(
        "intercom",
        json!({"base_url": format!("{url}/intercom"), "api_version": "9.99"}),
        ("token", "ic-token-4"),
    );
    let version = send(&old, "tag_contact", tag.clone()).await;
    let Outcome::ConnectionBroken { reason } = &version.outcome else {
        panic!("{version:?}")
    };
    assert!(reason.contains("api_version"), "{reason}");

    let conn = intercom(&url, "ic-token-4");
    let undefined = send(
        &conn,
        "update_attributes",
        json!({"email": "a@b.io", "attributes": {"undefined_score": 1}}),
    )
    .await;
    assert_eq!(undefined.status_code, Some(400));
    let Outcome::Permanent { reason } = &undefined.outcome else {
        panic!("{undefined:?}")
    };
    assert!(
        reason.contains("Custom attribute 'undefined_score' does not exist"),
        "{reason}"
    );

    let before = sandbox.requests().len();
    let nobody = send(
        &conn,
        "tag_contact",
        json!({"external_id": "", "email": "", "tag": "x"}),
    )
    .await;
    let Outcome::Permanent { reason } = &nobody.outcome else {
        panic!("{nobody:?}")
    };
    assert!(reason.contains("with.external_id"), "{reason}");
    assert_eq!(
        sandbox.requests().len(),
        before,
        "no API call without an identity"
    );

    let mut limited = envelope_fault("/intercom/contacts/search", 429, "rate_limit_exceeded", "x");
    limited.retry_after = Some("5".into());
    sandbox.inject(limited);
    let throttled = send(&conn, "tag_contact", tag.clone()).await;
    assert_eq!(
        throttled.outcome,
        Outcome::RateLimited {
            after: Some(Duration::from_secs(5))
        }
    );

    sandbox.inject(envelope_fault(
        "/intercom/contacts/search",
        503,
        "service_unavailable",
        "down",
    ));
    let down = send(&conn, "tag_contact", tag).await;
    assert_eq!(
        (down.outcome.kind(), down.status_code),
        ("retry", Some(503))
    );
}

#[tokio::test]
async fn intercom_exceeding_the_ten_second_window_waits_for_the_reset() {
    let (sandbox, url) = serve_sandbox().await;
    // 6 per minute is 1 per 10-second window: a tag_contact (4+ calls) must exceed it.
    tune_intercom(&url, json!({"search_lag_ms": 0, "limit_per_minute": 6})).await;
    let conn = intercom(&url, "ic-token-5");
    let limited = send(&conn, "tag_contact", json!({"email": "a@b.io", "tag": "x"})).await;
    assert_eq!(limited.status_code, Some(429));
    let Outcome::RateLimited { after: Some(after) } = limited.outcome else {
        panic!("{limited:?}")
    };
    assert!(
        after >= Duration::from_secs(1) && after <= Duration::from_secs(10),
        "{after:?}"
    );
    let refused = sandbox
        .requests()
        .into_iter()
        .find(|r| r.status == 429)
        .unwrap();
    assert_eq!(refused.destination, "intercom");
}
