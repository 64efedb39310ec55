//! The ActiveCampaign and Intercom destinations against their sandbox simulators over real
//! HTTP on 127.0.0.1: what ends up stored in the simulated account, the outcome of each
//! failure the vendors document, and that a retried multi-step action creates nothing twice.

use std::sync::Arc;
use std::time::Duration;

use herald::destinations::{Attempted, Call, Connection, DestinationContext, Outcome, lookup};
use herald::model::records::EventEnvelope;
use herald::model::{ConnectionSpec, Secret};
use herald_sandbox::{Fault, Sandbox};
use serde_json::{Value, json};

/// A sandbox served on an ephemeral port; its base URL.
async fn serve_sandbox() -> (Sandbox, String) {
    let sandbox = Sandbox::new(None).expect("sandbox");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (sandbox, url)
}

fn ctx() -> DestinationContext {
    DestinationContext {
        http: herald::destinations::http::client(true),
        default_timeout: Duration::from_secs(10),
        allow_private_networks: true,
        max_rate_wait: Duration::from_secs(30),
    }
}

fn connect(kind: &str, settings: Value, credential: (&str, &str)) -> Arc<dyn Connection> {
    let spec = ConnectionSpec {
        id: format!("{kind}-test"),
        kind: kind.to_owned(),
        credentials: [(credential.0.to_owned(), Secret::new(credential.1))].into(),
        settings: settings.as_object().cloned().unwrap(),
    };
    lookup(kind)
        .expect("registered")
        .connect(&spec, &ctx())
        .expect("valid connection")
}

fn envelope() -> EventEnvelope {
    EventEnvelope {
        event_id: "evt_1".into(),
        workspace_id: "ws_academyflow".into(),
        event: "page.completed".into(),
        resource: None,
        resource_id: None,
        payload: serde_json::Map::new(),
        occurred_at: None,
        received_at: None,
    }
}

async fn send(conn: &Arc<dyn Connection>, action: &str, with: Value) -> Attempted {
    let envelope = envelope();
    conn.send(Call {
        delivery_id: "dlv_1",
        action,
        request: &with,
        envelope: &envelope,
    })
    .await
}

async fn state(url: &str) -> Value {
    reqwest::get(format!("{url}/_sandbox/state"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn fault(path: &str, status: u16) -> Fault {
    Fault {
        path: path.to_owned(),
        count: 1,
        status,
        body: String::new(),
        retry_after: None,
        delay_ms: 0,
        rate: None,
    }
}

fn len(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// How many recorded requests had this method and path.
fn count(sandbox: &Sandbox, method: &str, path: &str) -> usize {
    sandbox
        .requests()
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

// --- ActiveCampaign ---------------------------------------------------------------------

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
    sandbox.inject(fault("/activecampaign/api/3/contactTags", 503));

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

    let mut limited = fault("/activecampaign/api/3/contact/sync", 429);
    limited.retry_after = Some("7".into());
    sandbox.inject(limited);
    let throttled = send(&conn, "sync_contact", json!({"email": "a@b.io"})).await;
    assert_eq!(
        throttled.outcome,
        Outcome::RateLimited {
            after: Some(Duration::from_secs(7))
        }
    );

    sandbox.inject(fault("/activecampaign/api/3/contact/sync", 500));
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
    let mut hang = fault("/activecampaign/api/3/contact/sync", 200);
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

// --- Intercom -----------------------------------------------------------------------------

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
    let mut f = fault(path, status);
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
    sandbox.inject(fault("/intercom/tags", 503));

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
