//! The Mailchimp destination against its sandbox simulator over real HTTP: outcomes as the
//! processor would see them, and what the simulated audiences end up holding.

mod common;

use std::sync::Arc;

use common::destinations::{Env, fault, reason};
use futures::future::join_all;
use herald::destinations::{Connection, DestinationContext, Outcome, lookup};
use herald::model::ConnectionSpec;
use serde_json::{Value, json};

fn mailchimp(env: &Env, key: &str, extra: Value) -> Arc<dyn Connection> {
    let spec = json!({"id": "mailchimp", "type": "mailchimp",
                      "credentials": {"api_key": key}, "audience_id": "aud1",
                      "base_url": format!("{}/mailchimp", env.url)});
    env.connect(spec, extra)
}

fn md5_hex(email: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(email.to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn member(email: &str) -> Value {
    json!({"email": email, "merge_fields": {"FNAME": "Ada", "LESSON": "Lesson 3"}})
}

#[tokio::test]
async fn mailchimp_upserts_a_member_and_never_overwrites_status() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({}));
    let a = env
        .send(&mc, "d1", "upsert_member", member("Ada@Example.com"))
        .await;
    assert_eq!(a.outcome, Outcome::Delivered, "{a:?}");
    assert_eq!(a.status_code, Some(200));
    let hash = md5_hex("ada@example.com");
    let state = env.state().await;
    let m = &state["mailchimp"]["audiences"]["aud1"][&hash];
    assert_eq!(m["status"], "subscribed");
    assert_eq!(m["merge_fields"]["LESSON"], "Lesson 3");

    // Someone who unsubscribed stays unsubscribed when their progress is synced.
    let gone = md5_hex("bo@example.com");
    let put = env
        .web
        .put(format!(
            "{}/mailchimp/3.0/lists/aud1/members/{gone}",
            env.url
        ))
        .basic_auth("x", Some("0123abcd-us6"))
        .json(&json!({"email_address": "bo@example.com", "status_if_new": "unsubscribed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let a = env
        .send(&mc, "d2", "upsert_member", member("bo@example.com"))
        .await;
    assert_eq!(a.outcome, Outcome::Delivered);
    let state = env.state().await;
    assert_eq!(
        state["mailchimp"]["audiences"]["aud1"][&gone]["status"],
        "unsubscribed"
    );
    for r in env.requests("mailchimp") {
        assert!(r.body.get("status").is_none(), "{:?}", r.body);
        assert!(!r.headers.contains_key("authorization"));
    }
}

#[tokio::test]
async fn mailchimp_add_tags_creates_a_missing_member_then_tags_it() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({"status_if_new": "pending"}));
    let with = json!({"email": "ada@example.com", "tags": ["module-3", "lesson-completed"]});
    let a = env.send(&mc, "d1", "add_tags", with.clone()).await;
    assert_eq!(a.outcome, Outcome::Delivered, "{a:?}");
    assert_eq!(a.status_code, Some(204));
    let steps: Vec<(String, u16)> = env
        .requests("mailchimp")
        .iter()
        .map(|r| (r.method.clone(), r.status))
        .collect();
    let expected = [("POST", 404), ("PUT", 200), ("POST", 204)].map(|(m, s)| (m.to_owned(), s));
    assert_eq!(steps, expected);
    let hash = md5_hex("ada@example.com");
    let m = env.state().await["mailchimp"]["audiences"]["aud1"][&hash].clone();
    assert_eq!(m["status"], "pending");
    assert_eq!(m["tags_count"], 2);
}

#[tokio::test]
async fn mailchimp_a_retried_add_tags_does_not_duplicate() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({}));
    let hash = md5_hex("ada@example.com");
    let tags_path = format!("/mailchimp/3.0/lists/aud1/members/{hash}/tags");
    // Sequence the first attempt: the tag call finds no member (404, as the simulator would
    // answer), the member is created, then the second tag call fails with a 503.
    let not_found = json!({"title": "Resource Not Found", "status": 404,
                           "detail": "The requested resource could not be found."})
    .to_string();
    env.sandbox.inject(fault(&tags_path, 1, 404, &not_found));
    env.sandbox.inject(fault(&tags_path, 1, 503, ""));
    let with = json!({"email": "ada@example.com", "tags": ["module-3"]});
    let first = env.send(&mc, "d1", "add_tags", with.clone()).await;
    assert_eq!(first.outcome.kind(), "retry", "{first:?}");
    let before = env.requests("mailchimp").len();
    assert_eq!(before, 3);
    let retried = env.send(&mc, "d1", "add_tags", with.clone()).await;
    assert_eq!(retried.outcome, Outcome::Delivered);
    assert_eq!(
        env.requests("mailchimp").len(),
        before + 1,
        "the member exists: one call"
    );
    let retried = env.send(&mc, "d1", "add_tags", with).await;
    assert_eq!(retried.outcome, Outcome::Delivered);
    let audience = env.state().await["mailchimp"]["audiences"]["aud1"].clone();
    assert_eq!(audience.as_object().unwrap().len(), 1);
    assert_eq!(audience[&hash]["tags"], json!([{"name": "module-3"}]));
}

#[tokio::test]
async fn mailchimp_an_unknown_audience_is_permanent_and_named() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({}));
    let with = json!({"email": "ada@example.com", "audience_id": "missing42", "tags": ["x"]});
    for action in ["upsert_member", "add_tags"] {
        let a = env.send(&mc, "d1", action, with.clone()).await;
        assert_eq!(a.outcome.kind(), "permanent", "{action}");
        assert_eq!(a.status_code, Some(404));
        assert!(reason(&a).contains("audience `missing42`"), "{a:?}");
    }
}

#[tokio::test]
async fn mailchimp_member_errors_are_permanent() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({}));
    for (email, expect) in [
        ("forgotten.ada@example.com", "permanently deleted"),
        ("compliance.bo@example.com", "will not subscribe them again"),
        ("ada@example", "looks fake or invalid"),
    ] {
        let a = env.send(&mc, "d1", "upsert_member", member(email)).await;
        assert_eq!(a.outcome.kind(), "permanent", "{email}");
        assert_eq!(a.status_code, Some(400));
        assert!(reason(&a).contains(expect), "{a:?}");
    }
    let a = env
        .send(&mc, "d2", "upsert_member", json!({"email": ""}))
        .await;
    assert!(reason(&a).contains("with.email"));
    assert_eq!(a.status_code, None);
}

#[tokio::test]
async fn mailchimp_bad_keys_break_the_connection_or_are_refused_at_config_time() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "invalid0123-us6", json!({}));
    let a = env
        .send(&mc, "d1", "upsert_member", member("ada@example.com"))
        .await;
    assert_eq!(a.outcome.kind(), "connection_broken");
    assert_eq!(a.status_code, Some(401));
    assert!(reason(&a).contains("credentials.api_key"), "{a:?}");
    assert!(!reason(&a).contains("invalid0123"));

    let spec: ConnectionSpec = serde_json::from_value(json!({
        "id": "mc", "type": "mailchimp", "credentials": {"api_key": "0123abcd"}}))
    .unwrap();
    let ctx = DestinationContext::for_tests();
    let err = lookup("mailchimp")
        .unwrap()
        .connect(&spec, &ctx)
        .unwrap_err();
    assert_eq!(err.path, "credentials.api_key");
}

#[tokio::test]
async fn mailchimp_server_errors_retry_and_429_is_rate_limited() {
    let env = Env::start().await;
    let mc = mailchimp(&env, "0123abcd-us6", json!({}));
    env.sandbox.inject(fault("/mailchimp/", 1, 500, r#"{"title":"Internal Server Error","status":500,"detail":"An unexpected internal error has occurred."}"#));
    env.sandbox.inject(fault("/mailchimp/", 1, 429, r#"{"title":"Too Many Requests","status":429,"detail":"You have exceeded the limit of 10 simultaneous connections."}"#));
    let a = env
        .send(&mc, "d1", "upsert_member", member("ada@example.com"))
        .await;
    assert_eq!(a.outcome.kind(), "retry");
    let a = env
        .send(&mc, "d1", "upsert_member", member("ada@example.com"))
        .await;
    assert_eq!(a.outcome, Outcome::RateLimited { after: None });
    let a = env
        .send(&mc, "d1", "upsert_member", member("ada@example.com"))
        .await;
    assert_eq!(a.outcome, Outcome::Delivered);
    assert_eq!(
        env.state().await["mailchimp"]["audiences"]["aud1"]
            .as_object()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn mailchimp_connections_keep_an_account_under_10_simultaneous_requests() {
    let env = Env::start().await;
    // The simulator refuses an 11th request in flight for one key...
    let raw = (0..15).map(|i| {
        let email = format!("raw{i}@example.com");
        env.web
            .put(format!(
                "{}/mailchimp/3.0/lists/slow1/members/{}",
                env.url,
                md5_hex(&email)
            ))
            .basic_auth("x", Some("raw0123-us6"))
            .json(&json!({"email_address": email, "status_if_new": "subscribed"}))
            .send()
    });
    let statuses: Vec<u16> = join_all(raw)
        .await
        .into_iter()
        .map(|r| r.unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().filter(|s| **s == 200).count() >= 10,
        "{statuses:?}"
    );

    // ...and two connections of one account (a config reload) never get there.
    let first = mailchimp(&env, "shared0123-us6", json!({"audience_id": "slow2"}));
    let second = mailchimp(&env, "shared0123-us6", json!({"audience_id": "slow2"}));
    let calls = (0..30).map(|i| {
        let c = if i % 2 == 0 { &first } else { &second };
        let env = &env;
        async move {
            env.send(
                c,
                &format!("d{i}"),
                "upsert_member",
                member(&format!("m{i}@example.com")),
            )
            .await
        }
    });
    let outcomes = join_all(calls).await;
    assert!(
        outcomes.iter().all(|o| o.outcome == Outcome::Delivered),
        "{outcomes:?}"
    );
    let members = env.state().await["mailchimp"]["audiences"]["slow2"].clone();
    assert_eq!(members.as_object().unwrap().len(), 30);
}
