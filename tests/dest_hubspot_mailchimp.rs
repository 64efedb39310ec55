//! The HubSpot and Mailchimp destinations against the sandbox simulators over real HTTP:
//! outcomes as the processor would see them, and what the simulated accounts end up holding.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use herald::destinations::{
    Attempted, Call, Connection, DestinationContext, Outcome, http, lookup,
};
use herald::model::ConnectionSpec;
use herald::model::records::EventEnvelope;
use herald_sandbox::{Fault, RecordedRequest, Sandbox};
use serde_json::{Value, json};

struct Env {
    url: String,
    sandbox: Sandbox,
    web: reqwest::Client,
    envelope: EventEnvelope,
}

impl Env {
    async fn start() -> Self {
        let sandbox = Sandbox::new(None).expect("sandbox");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = sandbox.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let envelope = serde_json::from_value(json!({
            "event_id": "evt_1", "workspace_id": "ws_academyflow", "event": "lesson.completed",
            "payload": {"email": "ada@example.com"}
        }))
        .unwrap();
        Self {
            url,
            sandbox,
            web: reqwest::Client::new(),
            envelope,
        }
    }

    fn connect(&self, spec: Value) -> Arc<dyn Connection> {
        let spec: ConnectionSpec = serde_json::from_value(spec).expect("spec");
        let ctx = DestinationContext {
            http: http::client(true),
            default_timeout: Duration::from_secs(10),
            allow_private_networks: true,
            max_rate_wait: Duration::from_secs(5),
        };
        lookup(&spec.kind)
            .expect("registered")
            .connect(&spec, &ctx)
            .expect("connects")
    }

    fn hubspot(&self, token: &str, extra: Value) -> Arc<dyn Connection> {
        let mut spec = json!({"id": "hubspot", "type": "hubspot", "credentials": {"token": token},
                              "base_url": format!("{}/hubspot", self.url)});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.connect(spec)
    }

    fn mailchimp(&self, key: &str, extra: Value) -> Arc<dyn Connection> {
        let mut spec = json!({"id": "mailchimp", "type": "mailchimp",
                              "credentials": {"api_key": key}, "audience_id": "aud1",
                              "base_url": format!("{}/mailchimp", self.url)});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        self.connect(spec)
    }

    async fn send(
        &self,
        c: &Arc<dyn Connection>,
        id: &str,
        action: &str,
        with: Value,
    ) -> Attempted {
        let call = Call {
            delivery_id: id,
            action,
            request: &with,
            envelope: &self.envelope,
        };
        c.send(call).await
    }

    async fn state(&self) -> Value {
        self.web
            .get(format!("{}/_sandbox/state", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    fn requests(&self, destination: &str) -> Vec<RecordedRequest> {
        let mut r = self.sandbox.requests();
        r.retain(|r| r.destination == destination);
        r
    }
}

fn upsert(email: &str, props: Value) -> Value {
    json!({"email": email, "properties": props})
}

fn md5_hex(email: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(email.to_lowercase().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn reason(a: &Attempted) -> String {
    a.outcome.reason().unwrap_or_default()
}

// ---------------------------------------------------------------- HubSpot

#[tokio::test]
async fn hubspot_batches_concurrent_upserts_and_merges_duplicate_emails() {
    let env = Env::start().await;
    let hs = env.hubspot("pat-na1-a", json!({}));
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
    let hs = env.hubspot("pat-na1-a", json!({}));
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
    let hs = env.hubspot("pat-na1-a", json!({}));
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
    let bad = env.hubspot("not-a-token", json!({"batch_window_ms": 0}));
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
    let scopeless = env.hubspot("pat-noscopes-1", json!({}));
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
    let hs = env.hubspot("pat-daily-limit-1", json!({"account_utc_offset": "+00:00"}));
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
    let hs = env.hubspot(
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
    let hs = env.hubspot("pat-na1-a", json!({"batch_window_ms": 0}));
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
    let hs = env.hubspot("pat-na1-a", json!({}));
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
        let hs = env.hubspot(
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

fn fault(path: &str, count: u32, status: u16, body: &str) -> Fault {
    serde_json::from_value(json!({"path": path, "count": count, "status": status, "body": body}))
        .unwrap()
}

// ---------------------------------------------------------------- Mailchimp

fn member(email: &str) -> Value {
    json!({"email": email, "merge_fields": {"FNAME": "Ada", "LESSON": "Lesson 3"}})
}

#[tokio::test]
async fn mailchimp_upserts_a_member_and_never_overwrites_status() {
    let env = Env::start().await;
    let mc = env.mailchimp("0123abcd-us6", json!({}));
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
    let mc = env.mailchimp("0123abcd-us6", json!({"status_if_new": "pending"}));
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
    let mc = env.mailchimp("0123abcd-us6", json!({}));
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
    let mc = env.mailchimp("0123abcd-us6", json!({}));
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
    let mc = env.mailchimp("0123abcd-us6", json!({}));
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
    let mc = env.mailchimp("invalid0123-us6", json!({}));
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
    let ctx = DestinationContext {
        http: reqwest::Client::new(),
        default_timeout: Duration::from_secs(1),
        allow_private_networks: false,
        max_rate_wait: Duration::from_secs(1),
    };
    let err = lookup("mailchimp")
        .unwrap()
        .connect(&spec, &ctx)
        .unwrap_err();
    assert_eq!(err.path, "credentials.api_key");
}

#[tokio::test]
async fn mailchimp_server_errors_retry_and_429_is_rate_limited() {
    let env = Env::start().await;
    let mc = env.mailchimp("0123abcd-us6", json!({}));
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
    let first = env.mailchimp("shared0123-us6", json!({"audience_id": "slow2"}));
    let second = env.mailchimp("shared0123-us6", json!({"audience_id": "slow2"}));
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
