//! The HubSpot destination against its sandbox simulator over real HTTP: outcomes as the
//! processor would see them, and what the simulated portal ends up holding.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::destinations::{Env, fault, reason};
use futures::future::join_all;
use herald::destinations::{Connection, Outcome};
use serde_json::{Value, json};

fn hubspot(env: &Env, token: &str, extra: Value) -> Arc<dyn Connection> {
    let spec = json!({"id": "hubspot", "type": "hubspot", "credentials": {"token": token},
                      "base_url": format!("{}/hubspot", env.url)});
    env.connect(spec, extra)
}

fn upsert(email: &str, props: Value) -> Value {
    json!({"email": email, "properties": props})
}

#[tokio::test]
async fn hubspot_batches_concurrent_upserts_and_merges_duplicate_emails() {
    let env = Env::start().await;
    let hs = hubspot(&env, "pat-na1-a", json!({}));
    let (a1, b, a2) = (
        upsert(
            "ada@example.com",
            json!({"course_progress": "40", "firstname": "Ada"}),
        ),
        upsert("bo@example.com", json!({"course_progress": "10"})),
        upsert("ADA@example.com", json!({"course_progress": "60"})),
    );
    let outcomes = join_all([
        env.send(&hs, "d1", "upsert_contact", a1),
        env.send(&hs, "d2", "upsert_contact", b),
        env.send(&hs, "d3", "upsert_contact", a2),
    ])
    .await;
    for o in &outcomes {
        assert_eq!(o.outcome, Outcome::Delivered, "{o:?}");
        assert_eq!(o.status_code, Some(200));
    }
    let requests = env.requests("hubspot");
    assert_eq!(requests.len(), 1, "one batch request");
    assert_eq!(requests[0].body["inputs"].as_array().unwrap().len(), 2);
    let state = env.state().await;
    let ada = &state["hubspot"]["contacts"]["ada@example.com"]["properties"];
    assert_eq!(ada["course_progress"], "60", "the later upsert wins");
    assert_eq!(ada["firstname"], "Ada");
    assert_eq!(
        state["hubspot"]["contacts"]["bo@example.com"]["properties"]["course_progress"],
        "10"
    );
}

#[tokio::test]
async fn hubspot_a_bad_input_fails_only_its_own_delivery() {
    let env = Env::start().await;
    let hs = hubspot(&env, "pat-na1-a", json!({}));
    let outcomes = join_all([
        env.send(
            &hs,
            "ok",
            "upsert_contact",
            upsert("ada@example.com", json!({"course_progress": "60"})),
        ),
        env.send(
            &hs,
            "bad-email",
            "upsert_contact",
            upsert("invalid-email", json!({})),
        ),
        env.send(
            &hs,
            "bad-prop",
            "upsert_contact",
            upsert("bo@example.com", json!({"favourite_colour": "red"})),
        ),
    ])
    .await;
    assert_eq!(outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(outcomes[1].outcome.kind(), "permanent");
    assert!(
        reason(&outcomes[1]).contains("\"invalid-email\" is not a valid email"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2].outcome.kind(), "permanent");
    assert!(
        reason(&outcomes[2]).contains("property `favourite_colour` does not exist"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2].status_code, Some(207));
    assert_eq!(env.requests("hubspot").len(), 1);
    let contacts = env.state().await["hubspot"]["contacts"].clone();
    assert_eq!(contacts.as_object().unwrap().len(), 1, "{contacts}");
}

#[tokio::test]
async fn hubspot_an_empty_email_is_permanent_without_a_call() {
    let env = Env::start().await;
    let hs = hubspot(&env, "pat-na1-a", json!({}));
    let a = env
        .send(&hs, "d1", "upsert_contact", upsert("  ", json!({})))
        .await;
    assert_eq!(a.outcome.kind(), "permanent");
    assert!(reason(&a).contains("with.email"), "{a:?}");
    assert_eq!(a.status_code, None);
    assert!(env.requests("hubspot").is_empty());
}

#[tokio::test]
async fn hubspot_bad_tokens_and_missing_scopes_break_the_connection() {
    let env = Env::start().await;
    let bad = hubspot(&env, "not-a-token", json!({"batch_window_ms": 0}));
    let a = env
        .send(
            &bad,
            "d1",
            "upsert_contact",
            upsert("ada@example.com", json!({})),
        )
        .await;
    assert_eq!(a.outcome.kind(), "connection_broken");
    assert_eq!(a.status_code, Some(401));
    assert!(reason(&a).contains("credentials.token"), "{a:?}");
    assert!(!reason(&a).contains("not-a-token"));
    let scopeless = hubspot(&env, "pat-noscopes-1", json!({}));
    let a = env
        .send(
            &scopeless,
            "d2",
            "upsert_contact",
            upsert("ada@example.com", json!({})),
        )
        .await;
    assert_eq!(a.outcome.kind(), "connection_broken");
    assert!(reason(&a).contains("crm.objects.contacts.write"), "{a:?}");
}

#[tokio::test]
async fn hubspot_daily_limit_pauses_the_connection_until_midnight() {
    let env = Env::start().await;
    let hs = hubspot(
        &env,
        "pat-daily-limit-1",
        json!({"account_utc_offset": "+00:00"}),
    );
    let a = env
        .send(
            &hs,
            "d1",
            "upsert_contact",
            upsert("ada@example.com", json!({})),
        )
        .await;
    let Outcome::RateLimited { after: Some(after) } = a.outcome else {
        panic!("{a:?}")
    };
    assert!(
        after > Duration::ZERO && after <= Duration::from_secs(86_400),
        "{after:?}"
    );
    // The pause holds: the next call is answered without asking HubSpot again.
    let b = env
        .send(
            &hs,
            "d2",
            "upsert_contact",
            upsert("bo@example.com", json!({})),
        )
        .await;
    assert_eq!(b.outcome.kind(), "rate_limited");
    assert_eq!(b.status_code, None);
    assert_eq!(env.requests("hubspot").len(), 1);
}

#[tokio::test]
async fn hubspot_the_simulator_enforces_100_requests_per_10_seconds() {
    let env = Env::start().await;
    // The connection's own limiter is raised so that the simulator's limit is the one hit.
    let hs = hubspot(
        &env,
        "pat-na1-burst",
        json!({"batch_window_ms": 0, "rate_limit": {"requests": 1000, "per_ms": 1000}}),
    );
    for i in 0..100 {
        let a = env
            .send(
                &hs,
                &format!("d{i}"),
                "upsert_contact",
                upsert(&format!("u{i}@example.com"), json!({})),
            )
            .await;
        assert_eq!(a.outcome, Outcome::Delivered, "request {i}");
    }
    let a = env
        .send(
            &hs,
            "d100",
            "upsert_contact",
            upsert("u100@example.com", json!({})),
        )
        .await;
    assert_eq!(a.status_code, Some(429));
    assert_eq!(
        a.outcome,
        Outcome::RateLimited {
            after: Some(Duration::from_secs(10))
        }
    );

    let raw = env
        .web
        .post(format!(
            "{}/hubspot/crm/v3/objects/contacts/batch/upsert",
            env.url
        ))
        .bearer_auth("pat-na1-burst")
        .json(&json!({"inputs": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 429);
    assert_eq!(raw.headers()["x-hubspot-ratelimit-max"], "100");
    assert_eq!(raw.headers()["x-hubspot-ratelimit-remaining"], "0");
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
}

#[tokio::test]
async fn hubspot_retries_a_5xx_and_the_retry_does_not_duplicate() {
    let env = Env::start().await;
    let hs = hubspot(&env, "pat-na1-a", json!({"batch_window_ms": 0}));
    env.sandbox
        .inject(fault("/hubspot/", 1, 503, "upstream unavailable"));
    let with = upsert("ada@example.com", json!({"course_progress": "60"}));
    let first = env.send(&hs, "d1", "upsert_contact", with.clone()).await;
    assert_eq!(first.outcome.kind(), "retry", "{first:?}");
    assert_eq!(first.status_code, Some(503));
    for _ in 0..2 {
        let again = env.send(&hs, "d1", "upsert_contact", with.clone()).await;
        assert_eq!(again.outcome, Outcome::Delivered);
    }
    let contacts = env.state().await["hubspot"]["contacts"].clone();
    assert_eq!(contacts.as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn hubspot_a_whole_batch_400_is_resolved_contact_by_contact() {
    let env = Env::start().await;
    let hs = hubspot(&env, "pat-na1-a", json!({}));
    let refused = r#"{"status":"error","message":"Invalid input JSON on line 1","correlationId":"c","category":"VALIDATION_ERROR"}"#;
    env.sandbox.inject(fault("/hubspot/", 1, 400, refused));
    let outcomes = join_all([
        env.send(
            &hs,
            "d1",
            "upsert_contact",
            upsert("ada@example.com", json!({})),
        ),
        env.send(
            &hs,
            "d2",
            "upsert_contact",
            upsert("bo@example.com", json!({})),
        ),
    ])
    .await;
    assert!(
        outcomes.iter().all(|o| o.outcome == Outcome::Delivered),
        "{outcomes:?}"
    );
    let inputs: Vec<usize> = env
        .requests("hubspot")
        .iter()
        .map(|r| r.body["inputs"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(
        inputs,
        [2, 1, 1],
        "the refused batch, then each contact alone"
    );
}

/// Counts the HTTP requests 1,000 concurrent upserts of distinct contacts take, with the
/// default batch window and with batching off. 1,000 is the processor's default in-flight
/// window (`processor.max_in_flight_events`).
#[tokio::test]
async fn hubspot_batching_takes_fewer_requests_for_1000_upserts() {
    let env = Env::start().await;
    let high = json!({"requests": 100_000, "per_ms": 1000});
    let mut counts = Vec::new();
    for (label, window) in [("on (200 ms)", 200), ("off", 0)] {
        let hs = hubspot(
            &env,
            "pat-unlimited-measure",
            json!({"batch_window_ms": window, "rate_limit": high}),
        );
        let before = env.requests("hubspot").len();
        let calls = (0..1000).map(|i| {
            let (id, with) = (
                format!("{label}-{i}"),
                upsert(
                    &format!("{window}-{i}@example.com"),
                    json!({"course_progress": "50"}),
                ),
            );
            let (env, hs) = (&env, &hs);
            async move { env.send(hs, &id, "upsert_contact", with).await }
        });
        let outcomes = join_all(calls).await;
        assert!(outcomes.iter().all(|o| o.outcome == Outcome::Delivered));
        let requests = env.requests("hubspot").len() - before;
        eprintln!("hubspot: 1000 upserts, batching {label}: {requests} HTTP requests");
        counts.push(requests);
    }
    assert_eq!(counts[1], 1000, "one request per upsert without batching");
    assert!(counts[0] >= 10, "at most 100 inputs per request");
    assert!(counts[0] < counts[1] / 10, "{counts:?}");
    let contacts = env.state().await["hubspot"]["contacts"].clone();
    assert_eq!(contacts.as_object().unwrap().len(), 2000);
}
