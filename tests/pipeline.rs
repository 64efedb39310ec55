//! In-process integration: MockCluster (real Kafka protocol) + the sandbox over real HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Harness;
use herald::model::records::DeliveryStatus;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

fn seed_lesson() -> serde_json::Value {
    json!({
        "student_id": "stu_2048",
        "email": "nina@academyflow.io",
        "lesson_id": "lesson_customer-research",
        "lesson_title": "Customer Research Fundamentals",
        "module_id": "module_growth-foundations",
        "module_title": "Growth Foundations",
        "course_id": "course_creator-accelerator",
        "completion_percentage": 62,
        "time_spent_seconds": 1840,
        "completed_at": "2026-03-21T14:18:00Z"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_lesson_fans_out_to_slack_and_webhook_and_both_are_in_history() {
    let h = Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_seed_000",
        Some("course"),
        seed_lesson(),
    )
    .await;

    let history = h
        .wait_for_history("ws_academyflow", "two deliveries", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2
        })
        .await;
    let rules: HashSet<_> = history
        .iter()
        .filter_map(|d| d.rule_id.as_deref())
        .collect();
    assert_eq!(
        rules,
        HashSet::from(["lesson-alert-to-slack", "halfway-to-backend"])
    );
    for d in &history {
        assert_eq!(d.event_id, "evt_seed_000");
        assert_eq!(d.attempts.len(), 1);
        assert_eq!(d.attempts[0].status_code, Some(200));
        assert_eq!(
            d.delivery_id,
            herald::model::records::delivery_id(
                "ws_academyflow",
                "evt_seed_000",
                d.rule_id.as_deref().unwrap()
            )
        );
    }

    let slack = h.requests("slack");
    assert_eq!(slack.len(), 1);
    assert_eq!(slack[0].path, "/slack/api/chat.postMessage");
    assert_eq!(slack[0].body["channel"], "#instructors");
    let text = slack[0].body["text"].as_str().unwrap();
    assert!(
        text.contains("Customer Research Fundamentals") && text.contains("62%"),
        "{text}"
    );
    let context = slack[0].body["blocks"][1]["elements"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        context.contains("Growth Foundations") && context.contains("course_creator-accelerator")
    );

    let hooks = h.requests("webhook");
    assert_eq!(hooks.len(), 1);
    assert_eq!(
        hooks[0].signature_valid,
        Some(true),
        "Standard Webhooks signature verifies"
    );
    assert_eq!(
        hooks[0].headers["webhook-id"],
        history
            .iter()
            .find(|d| d.destination.as_deref() == Some("webhook"))
            .unwrap()
            .delivery_id
            .as_str()
    );
    assert_eq!(hooks[0].body["type"], "lesson.completed");
    assert_eq!(
        hooks[0].body["data"]["payload"]["email"],
        "nina@academyflow.io"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_resource_filter_and_templates_shape_the_deliveries() {
    let h = Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    // Below the halfway condition: only Slack.
    let mut low = seed_lesson();
    low["completion_percentage"] = json!(20);
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_low",
        Some("course"),
        low,
    )
    .await;
    // Onboarding: the webhook body is the rendered `with`, numbers keep their type.
    h.emit(
        "ws_northstar",
        "page.completed",
        "evt_page",
        Some("onboarding_sequence"),
        json!({"email": "alex@northstar.io", "page_id": "page_connect-crm", "page_title": "Connect your CRM", "sequence_step": 3}),
    )
    .await;
    // Another resource: the Slack rule filters on `onboarding_sequence`, the webhook does not.
    h.emit("ws_northstar", "page.completed", "evt_other", Some("docs"),
        json!({"email": "b@northstar.io", "page_id": "p", "page_title": "Docs", "sequence_step": 1})).await;

    let academy = h
        .wait_for_history("ws_academyflow", "the low-progress delivery", |r| {
            !r.is_empty()
        })
        .await;
    let northstar = h
        .wait_for_history("ws_northstar", "three deliveries", |r| r.len() == 3)
        .await;
    assert_eq!(academy.len(), 1);
    assert_eq!(academy[0].rule_id.as_deref(), Some("lesson-alert-to-slack"));
    let by_event: HashMap<&str, usize> = northstar.iter().fold(HashMap::new(), |mut m, d| {
        *m.entry(d.event_id.as_str()).or_default() += 1;
        m
    });
    assert_eq!(by_event["evt_page"], 2);
    assert_eq!(by_event["evt_other"], 1, "resource filter keeps Slack out");

    let hook = h
        .requests("webhook")
        .into_iter()
        .find(|r| r.body["page_id"] == "page_connect-crm")
        .unwrap();
    assert_eq!(
        hook.body,
        json!({"email": "alex@northstar.io", "step": 3, "page_id": "page_connect-crm", "tag": "step-3-complete"})
    );
    let slack = h.requests("slack");
    assert!(slack.iter().any(|r| r.path.starts_with("/slack/services/")
        && r.body["text"] == "Onboarding step 3 complete: Connect your CRM (alex@northstar.io)"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_typed_outcomes_with_specific_reasons() {
    let h = Harness::new().await;
    h.apply(&[(
        "failing.yaml",
        r##"
workspace: ws_failing
connections:
  - id: bot
    type: slack
    base_url: "http://127.0.0.1:7780/slack/api"
    channel: "#general"
    credentials: { token: "xoxp-not-a-bot-token" }
  - id: hook
    type: webhook
    url: "http://127.0.0.1:7780/webhook/down?status=503"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
  - id: good-hook
    type: webhook
    url: "http://127.0.0.1:7780/webhook/ok"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - { id: slack-bad-auth, event: signup, connection: bot, action: post_message, with: { text: "hi" } }
  - { id: hook-down, event: signup, connection: hook, action: post }
  - id: bad-template
    event: signup
    connection: good-hook
    action: post
    with: { email: "{{ payload.missing_field }}" }
  - { id: bad-condition, event: signup, when: "payload.plan_level > 3", connection: good-hook, action: post }
"##,
    )])
    .await;
    let running = h.start();
    h.emit(
        "ws_failing",
        "signup",
        "evt_f1",
        None,
        json!({"plan": "pro"}),
    )
    .await;
    let history = h
        .wait_for_history("ws_failing", "four outcomes", |r| r.len() == 4)
        .await;
    let outcome = |rule: &str| {
        let d = history
            .iter()
            .find(|d| d.rule_id.as_deref() == Some(rule))
            .unwrap();
        (d.status, d.reason.clone().unwrap())
    };
    let (status, reason) = outcome("slack-bad-auth");
    assert_eq!(status, DeliveryStatus::Dead);
    assert_eq!(reason, "connection_broken: slack error: invalid_auth");
    let (status, reason) = outcome("hook-down");
    assert!(
        matches!(status, DeliveryStatus::Retrying | DeliveryStatus::Dead),
        "{status}"
    );
    assert!(reason.contains("HTTP 503"), "{reason}");
    let (status, reason) = outcome("bad-template");
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(
        reason.contains("with.email") && reason.contains("undefined"),
        "{reason}"
    );
    let (status, reason) = outcome("bad-condition");
    assert_eq!(status, DeliveryStatus::Failed);
    assert!(reason.contains("when"), "{reason}");
    let slack = history
        .iter()
        .find(|d| d.rule_id.as_deref() == Some("slack-bad-auth"))
        .unwrap();
    assert_eq!(slack.attempts[0].outcome, "connection_broken");
    assert_eq!(
        slack.attempts[0].status_code,
        Some(200),
        "Slack says ok:false with HTTP 200"
    );
    assert!(
        h.requests("webhook")
            .iter()
            .all(|r| r.path != "/webhook/ok"),
        "templates failed before any call"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workspaces_and_unmatched_events_are_recorded_as_skipped() {
    let h = Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    for i in 0..5 {
        h.emit(
            "ws_ghost",
            "lesson.completed",
            &format!("evt_g{i}"),
            None,
            json!({}),
        )
        .await;
    }
    h.emit("ws_academyflow", "payment.failed", "evt_p", None, json!({}))
        .await;
    let ghost = h
        .wait_for_history("ws_ghost", "a skip summary counting 5", |r| {
            r.len() == 1 && r[0].skipped_count == Some(5)
        })
        .await;
    assert_eq!(ghost[0].status, DeliveryStatus::Skipped);
    assert!(
        ghost[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("unknown_workspace")
    );
    let academy = h
        .wait_for_history("ws_academyflow", "no_rule_matched", |r| !r.is_empty())
        .await;
    assert_eq!(academy[0].status, DeliveryStatus::Skipped);
    assert!(
        academy[0]
            .reason
            .as_deref()
            .unwrap()
            .starts_with("no_rule_matched"),
        "{:?}",
        academy[0].reason
    );
    assert!(h.sandbox.requests().is_empty());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_changes_and_tombstones_apply_live() {
    let h = Harness::new().await;
    let v1 = r#"
workspace: ws_live
connections:
  - { id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/v1", credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" } }
rules:
  - { id: r, event: e, connection: hook, action: post }
"#;
    h.apply(&[("v1.yaml", v1)]).await;
    let running = h.start();
    h.emit("ws_live", "e", "evt_1", None, json!({})).await;
    h.wait_for_history("ws_live", "first delivery", |r| r.len() == 1)
        .await;

    h.apply(&[("v2.yaml", &v1.replace("/webhook/v1", "/webhook/v2"))])
        .await;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut n = 0;
    // The table follows the topic asynchronously: emit until an event reaches v2.
    while !h
        .requests("webhook")
        .iter()
        .any(|r| r.path == "/webhook/v2")
    {
        assert!(std::time::Instant::now() < deadline, "v2 never took effect");
        n += 1;
        h.emit("ws_live", "e", &format!("evt_v2_{n}"), None, json!({}))
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A tombstone deletes the workspace: later events are skipped as unknown.
    let tombstone = rdkafka::producer::FutureRecord::<str, [u8]>::to(&h.settings.topics.workspaces)
        .key("ws_live");
    h.producer
        .send(tombstone, Duration::from_secs(5))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    loop {
        n += 1;
        h.emit("ws_live", "e", &format!("evt_gone_{n}"), None, json!({}))
            .await;
        let history = h.history("ws_live").await;
        if history.iter().any(|d| {
            d.reason
                .as_deref()
                .is_some_and(|r| r.starts_with("unknown_workspace"))
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tombstone never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_huge_name_is_dead_lettered_and_the_workspace_goes_on() {
    let h = Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    // No rule matches such a name; before names were bounded it became a skip summary that
    // carried the name twice, too large for the broker, and was produced again forever.
    let huge = format!(r#"{{"event":"{}","payload":{{}}}}"#, "e".repeat(600_000));
    h.produce(Some("ws_academyflow"), huge.as_bytes()).await;
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_after_huge",
        Some("course"),
        seed_lesson(),
    )
    .await;
    h.wait_for_history("ws_academyflow", "the event after the huge one", |r| {
        r.iter().any(|d| d.event_id == "evt_after_huge")
    })
    .await;

    let letters = h.wait_for_dead_letters(1).await;
    let letter = letters
        .iter()
        .find(|l| l.value == huge.as_bytes())
        .expect("the original bytes are dead-lettered");
    let reason = &letter.headers["herald.dlq.reason"];
    assert!(
        reason.contains("`event` is 600000 bytes, over the limit of 256"),
        "{reason}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_goes_to_the_dlq_with_its_reason_and_bytes_and_is_committed() {
    let mut h = Harness::new().await;
    h.settings.processor.max_event_bytes = 2048;
    h.apply_fixtures().await;
    let running = h.start();
    let oversized = format!(
        r#"{{"event":"x","payload":{{"pad":"{}"}}}}"#,
        "a".repeat(4096)
    );
    let bad: Vec<(Option<&str>, Vec<u8>, &str)> = vec![
        (
            Some("ws_academyflow"),
            b"{not json".to_vec(),
            "invalid JSON",
        ),
        (
            None,
            br#"{"event":"lesson.completed","payload":{}}"#.to_vec(),
            "workspace_id",
        ),
        (
            Some("ws_academyflow"),
            oversized.into_bytes(),
            "max_event_bytes",
        ),
    ];
    for (key, value, _) in &bad {
        h.produce(*key, value).await;
    }
    h.emit(
        "ws_academyflow",
        "lesson.completed",
        "evt_after",
        Some("course"),
        seed_lesson(),
    )
    .await;
    h.wait_for_history("ws_academyflow", "the good event after the bad ones", |r| {
        r.len() == 2
    })
    .await;

    // The DLQ holds each bad record's original bytes and a reason naming the problem.
    let letters: Vec<(Vec<u8>, String)> = h
        .wait_for_dead_letters(3)
        .await
        .into_iter()
        .map(|l| (l.value, l.headers["herald.dlq.reason"].clone()))
        .collect();
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (_, value, expect) in &bad {
        let (_, reason) = letters
            .iter()
            .find(|(bytes, _)| bytes == value)
            .expect("original bytes kept");
        assert!(reason.contains(expect), "{expect}: {reason}");
    }
    running.stop().await;

    // Everything was committed: the group's offsets cover all four records.
    let consumer: BaseConsumer = herald::kafka::consumer_config(&h.settings)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..h.settings.topics.partitions {
        tpl.add_partition(&h.settings.topics.events, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            rdkafka::Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum();
    assert_eq!(total, 4, "committed offsets: {committed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processor_dropped_mid_stream_and_restarted_delivers_every_event() {
    let h = Harness::new().await;
    h.apply(&[(
        "slow.yaml",
        r#"
workspace: ws_slow
connections:
  - { id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/slow?delay_ms=20", credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" } }
  - { id: other, type: webhook, url: "http://127.0.0.1:7780/webhook/other", credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" } }
rules:
  - { id: a, event: e, connection: hook, action: post }
  - { id: b, event: e, connection: other, action: post }
"#,
    )])
    .await;
    const EVENTS: usize = 120;
    for i in 0..EVENTS {
        h.emit(
            "ws_slow",
            "e",
            &format!("evt_{i:03}"),
            None,
            json!({"n": i}),
        )
        .await;
    }
    let first = h.start();
    // Let it get partway, then drop it with work in flight.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while h.requests("webhook").len() < 40 {
        assert!(
            std::time::Instant::now() < deadline,
            "first processor made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await;
    let seen_before_restart = h.requests("webhook").len();
    assert!(
        seen_before_restart < 2 * EVENTS,
        "the stream was not finished before the drop"
    );

    let second = h.start();
    let history = h
        .wait_for_history("ws_slow", "every delivery", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2 * EVENTS
        })
        .await;
    let events: HashSet<_> = history.iter().map(|d| d.event_id.clone()).collect();
    assert_eq!(events.len(), EVENTS, "no event lost");
    let received = h.requests("webhook");
    let unique: HashSet<_> = received
        .iter()
        .map(|r| r.headers["webhook-id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        unique.len(),
        2 * EVENTS,
        "every delivery reached the receiver"
    );
    let duplicates = received.len() - unique.len();
    println!(
        "dropped after {seen_before_restart} requests; duplicates after restart: {duplicates}"
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_connection_keeps_its_event_order_while_other_connections_proceed() {
    let h = Harness::new().await;
    let workspace = |name: &str| {
        format!(
            r#"
workspace: {name}
connections:
  - {{ id: slow, type: webhook, url: "http://127.0.0.1:7780/webhook/{name}/slow?delay_ms=150", credentials: {{ secret: "${{env:HERALD_CRED_WEBHOOK_SECRET}}" }} }}
  - {{ id: fast, type: webhook, url: "http://127.0.0.1:7780/webhook/{name}/fast", credentials: {{ secret: "${{env:HERALD_CRED_WEBHOOK_SECRET}}" }} }}
rules:
  - {{ id: even, event: e, when: "payload.n % 2 == 0", connection: slow, action: post, with: {{ n: "{{{{ payload.n }}}}" }} }}
  - {{ id: odd, event: e, when: "payload.n % 2 == 1", connection: fast, action: post, with: {{ n: "{{{{ payload.n }}}}" }} }}
"#
        )
    };
    let (a, b) = (workspace("ws_ordered"), workspace("ws_neighbour"));
    h.apply(&[("a.yaml", &a), ("b.yaml", &b)]).await;
    // Even events go to a slow endpoint, odd ones to a fast one.
    for n in 0..10 {
        h.emit(
            "ws_ordered",
            "e",
            &format!("evt_a{n}"),
            None,
            json!({"n": n}),
        )
        .await;
    }
    h.emit("ws_neighbour", "e", "evt_b1", None, json!({"n": 1}))
        .await;
    let running = h.start();
    h.wait_for_history("ws_ordered", "all ten", |r| r.len() == 10)
        .await;

    let received = h.requests("webhook");
    let to = |path: &str| -> Vec<i64> {
        received
            .iter()
            .filter(|r| r.path.starts_with(path))
            .map(|r| r.body["n"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(
        to("/webhook/ws_ordered/slow"),
        [0, 2, 4, 6, 8],
        "the slow connection got its events out of order"
    );
    assert_eq!(
        to("/webhook/ws_ordered/fast"),
        [1, 3, 5, 7, 9],
        "the fast connection got its events out of order"
    );
    let position = |path: &str| received.iter().rposition(|r| r.path.starts_with(path));
    assert!(
        position("/webhook/ws_ordered/fast") < position("/webhook/ws_ordered/slow"),
        "the fast connection waited for the slow one"
    );
    assert!(
        position("/webhook/ws_neighbour") < position("/webhook/ws_ordered/slow"),
        "the neighbour waited for the slow connection"
    );
    running.stop().await;
}

/// The rate-limit target: a burst of 1,000 events for one workspace, at the default HubSpot
/// settings, gets no 429 from the simulator, which enforces HubSpot's 100 requests per rolling
/// 10 s. (About 110 s: the limiter paces the connection at its quota.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_1000_events_for_one_workspace_gets_no_429_from_hubspot() {
    const EVENTS: usize = 1000;
    let h = Harness::new().await;
    let crm = r#"
workspace: ws_burst
connections:
  - { id: crm, type: hubspot, base_url: "http://127.0.0.1:7780/hubspot", credentials: { token: "pat-burst" } }
rules:
  - id: contact
    event: signed_up
    connection: crm
    action: upsert_contact
    with: { email: "{{ payload.email }}", properties: { lifecyclestage: "lead" } }
"#;
    h.apply(&[("burst.yaml", crm)]).await;
    for i in 0..EVENTS {
        let payload = json!({"email": format!("user{i}@burst.example")});
        h.emit("ws_burst", "signed_up", &format!("evt_{i}"), None, payload)
            .await;
    }
    let running = h.start();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        let history = h.history("ws_burst").await;
        let delivered = history
            .iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count();
        if delivered == EVENTS {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{delivered} of {EVENTS} delivered"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let requests = h.requests("hubspot");
    let limited = requests.iter().filter(|r| r.status == 429).count();
    eprintln!(
        "hubspot burst: {EVENTS} events, {} requests, {limited} answered 429, {:.0} s",
        requests.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(limited, 0, "the simulator refused requests");
    let contacts = h.sandbox.state()["hubspot"]["contacts"]
        .as_object()
        .map_or(0, |c| c.len());
    assert_eq!(contacts, EVENTS, "every contact is in the simulated CRM");
    running.stop().await;
}
