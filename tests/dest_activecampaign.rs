//! The ActiveCampaign destination against its sandbox simulator over real HTTP on 127.0.0.1:
//! what ends up stored in the simulated account, the outcome of each failure the vendor
//! documents, and that a retried multi-step action creates nothing twice.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::destinations::{connect, count, fault, len, send, serve_sandbox, state};
use herald::destinations::{Connection, Outcome};
use serde_json::json;

fn activecampaign(url: &str, token: &str) -> Arc<dyn Connection> {
    connect(
        "activecampaign",
        json!({"base_url": format!("{url}/activecampaign")}),
        ("api_token", token),
    )
}

#[tokio::test]
async fn activecampaign_add_tag_retried_tags_once_and_creates_nothing_twice() {
    let (sandbox, url) = serve_sandbox().await;
    let with =
        json!({"email": "alex@northstar.io", "first_name": "Alex", "tag": "onboarding-step-3"});
    sandbox.inject(fault("/activecampaign/api/3/contactTags", 1, 503, ""));

    let conn = activecampaign(&url, "ac-token-1");
    let first = send(&conn, "add_tag", with.clone()).await;
    assert_eq!(first.outcome.kind(), "retry", "{first:?}");
    assert_eq!(first.status_code, Some(503));
    let second = send(&conn, "add_tag", with.clone()).await;
    assert_eq!(second.outcome, Outcome::Delivered);
    // A fresh connection (a restart: no tag cache) retrying once more: already tagged.
    let fresh = activecampaign(&url, "ac-token-1");
    let third = send(&fresh, "add_tag", with).await;
    assert_eq!(third.outcome, Outcome::Delivered, "{third:?}");

    let ac = &state(&url).await["activecampaign"];
    assert_eq!(len(&ac["contacts"]), 1, "{ac}");
    assert_eq!(ac["contacts"][0]["email"], "alex@northstar.io");
    assert_eq!(ac["contacts"][0]["firstName"], "Alex");
    assert_eq!(len(&ac["tags"]), 1, "{ac}");
    assert_eq!(ac["tags"][0]["tag"], "onboarding-step-3");
    assert_eq!(len(&ac["contact_tags"]), 1, "{ac}");
    assert_eq!(ac["contact_tags"][0]["contact"], ac["contacts"][0]["id"]);
    assert_eq!(ac["contact_tags"][0]["tag"], ac["tags"][0]["id"]);
    assert_eq!(count(&sandbox, "POST", "/activecampaign/api/3/tags"), 1);
    // One search before the create; the first connection's retry used its cache; the fresh
    // connection searched once more.
    assert_eq!(
        count(
            &sandbox,
            "GET",
            "/activecampaign/api/3/tags?search=onboarding-step-3"
        ),
        2
    );
    for r in sandbox.requests() {
        assert!(
            !r.headers.contains_key("api-token"),
            "token recorded: {r:?}"
        );
    }
}

#[tokio::test]
async fn activecampaign_tag_named_differently_in_case_is_found_after_a_duplicate_answer() {
    let (_sandbox, url) = serve_sandbox().await;
    let a = activecampaign(&url, "ac-token-2");
    let tagged = send(&a, "add_tag", json!({"email": "a@b.io", "tag": "Module-3"})).await;
    assert_eq!(tagged.outcome, Outcome::Delivered);
    let b = activecampaign(&url, "ac-token-2");
    let tagged = send(&b, "add_tag", json!({"email": "c@d.io", "tag": "module-3"})).await;
    assert_eq!(tagged.outcome, Outcome::Delivered, "{tagged:?}");
    let ac = &state(&url).await["activecampaign"];
    assert_eq!(len(&ac["tags"]), 1, "{ac}");
    assert_eq!(len(&ac["contact_tags"]), 2, "{ac}");
}

#[tokio::test]
async fn activecampaign_sync_contact_and_add_to_list() {
    let (_sandbox, url) = serve_sandbox().await;
    let conn = activecampaign(&url, "ac-token-3");
    let synced = send(
        &conn,
        "sync_contact",
        json!({"email": "nina@academyflow.io", "first_name": "Nina", "field_values": {"12": 62}}),
    )
    .await;
    assert_eq!(synced.outcome, Outcome::Delivered);
    assert_eq!(synced.status_code, Some(201));
    let listed = send(
        &conn,
        "add_to_list",
        json!({"email": "nina@academyflow.io", "list_id": "2"}),
    )
    .await;
    assert_eq!(listed.outcome, Outcome::Delivered);
    let again = send(
        &conn,
        "add_to_list",
        json!({"email": "nina@academyflow.io", "list_id": 2}),
    )
    .await;
    assert_eq!(again.outcome, Outcome::Delivered);

    let unknown = send(
        &conn,
        "add_to_list",
        json!({"email": "nina@academyflow.io", "list_id": 99}),
    )
    .await;
    assert_eq!(unknown.status_code, Some(404));
    let Outcome::Permanent { reason } = &unknown.outcome else {
        panic!("{unknown:?}")
    };
    assert!(reason.contains("List with id 99"), "{reason}");

    let ac = &state(&url).await["activecampaign"];
    assert_eq!(len(&ac["contacts"]), 1, "{ac}");
    assert_eq!(ac["contacts"][0]["fieldValues"]["12"], "62");
    assert_eq!(len(&ac["contact_lists"]), 1, "{ac}");
    assert_eq!(ac["contact_lists"][0]["list"], "2");
    assert_eq!(ac["contact_lists"][0]["status"], "1");
}

#[tokio::test]
async fn activecampaign_failures_are_classified_like_the_reference() {
    let (sandbox, url) = serve_sandbox().await;
    let conn = activecampaign(&url, "ac-token-4");

    let invalid = send(&conn, "sync_contact", json!({"email": "not-an-email"})).await;
    assert_eq!(invalid.status_code, Some(422));
    let Outcome::Permanent { reason } = &invalid.outcome else {
        panic!("{invalid:?}")
    };
    assert!(
        reason.contains("email: Contact Email Address is not valid."),
        "{reason}"
    );

    let before = sandbox.requests().len();
    let empty = send(&conn, "add_tag", json!({"email": "", "tag": "x"})).await;
    let Outcome::Permanent { reason } = &empty.outcome else {
        panic!("{empty:?}")
    };
    assert!(reason.contains("with.email"), "{reason}");
    assert_eq!(
        sandbox.requests().len(),
        before,
        "no API call without an email"
    );

    let refused = send(
        &activecampaign(&url, "bad-token"),
        "sync_contact",
        json!({"email": "a@b.io"}),
    )
    .await;
    assert_eq!(refused.status_code, Some(403));
    assert_eq!(refused.outcome.kind(), "connection_broken");

    let login = send(
        &activecampaign(&url, "html-login"),
        "sync_contact",
        json!({"email": "a@b.io"}),
    )
    .await;
    assert_eq!(login.status_code, Some(200));
    let Outcome::ConnectionBroken { reason } = &login.outcome else {
        panic!("{login:?}")
    };
    assert!(reason.contains("HTML page"), "{reason}");

    let mut limited = fault("/activecampaign/api/3/contact/sync", 1, 429, "");
    limited.retry_after = Some("7".into());
    sandbox.inject(limited);
    let throttled = send(&conn, "sync_contact", json!({"email": "a@b.io"})).await;
    assert_eq!(
        throttled.outcome,
        Outcome::RateLimited {
            after: Some(Duration::from_secs(7))
        }
    );

    sandbox.inject(fault("/activecampaign/api/3/contact/sync", 1, 500, ""));
    let down = send(&conn, "sync_contact", json!({"email": "a@b.io"})).await;
    assert_eq!(
        (down.outcome.kind(), down.status_code),
        ("retry", Some(500))
    );

    let slow = connect(
        "activecampaign",
        json!({"base_url": format!("{url}/activecampaign"), "timeout_ms": 200}),
        ("api_token", "ac-token-4"),
    );
    let mut hang = fault("/activecampaign/api/3/contact/sync", 1, 200, "");
    hang.delay_ms = 5_000;
    sandbox.inject(hang);
    let timed_out = send(&slow, "sync_contact", json!({"email": "a@b.io"})).await;
    assert_eq!(
        timed_out.outcome,
        Outcome::Retry {
            after: None,
            reason: "request timed out".into()
        }
    );
}

#[tokio::test]
async fn activecampaign_limiter_keeps_a_burst_under_the_accounts_5_per_second() {
    let (sandbox, url) = serve_sandbox().await;
    let conn = activecampaign(&url, "ac-token-5");
    for i in 0..12 {
        let synced = send(
            &conn,
            "sync_contact",
            json!({"email": format!("s{i}@b.io")}),
        )
        .await;
        assert_eq!(synced.outcome, Outcome::Delivered, "sync {i}");
    }
    assert!(sandbox.requests().iter().all(|r| r.status != 429));
    assert_eq!(len(&state(&url).await["activecampaign"]["contacts"]), 12);
}
