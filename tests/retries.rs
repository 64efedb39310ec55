//! Retry tiers, dead letters and broken connections, on MockCluster with the sandbox injecting
//! destination faults. Tiers are short here (200 ms, 400 ms, 800 ms).

mod common;

use common::{Harness, WEBHOOK_SECRET};
use herald::model::records::{DeliveryRecord, DeliveryStatus};
use herald_sandbox::Fault;
use serde_json::json;

fn hook_workspace(name: &str, path: &str) -> String {
    format!(
        r#"
workspace: {name}
connections:
  - {{ id: hook, type: webhook, url: "http://127.0.0.1:7780{path}", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
rules:
  - {{ id: r, event: e, connection: hook, action: post }}
"#
    )
}

fn fault(path: &str, count: u32, status: u16, retry_after: Option<&str>) -> Fault {
    Fault {
        path: path.into(),
        count,
        status,
        body: format!("simulated {status}"),
        retry_after: retry_after.map(String::from),
        delay_ms: 0,
        rate: None,
    }
}

fn finished(status: DeliveryStatus) -> impl Fn(&[DeliveryRecord]) -> bool {
    move |r| r.len() == 1 && r[0].status == status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_through_the_tiers_until_delivered() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_flaky", "/webhook/flaky"))])
        .await;
    h.sandbox.inject(fault("/webhook/flaky", 1, 503, None));
    h.sandbox.inject(fault("/webhook/flaky", 1, 500, None));
    let running = h.start();
    h.emit("ws_flaky", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history(
            "ws_flaky",
            "delivered after retries",
            finished(DeliveryStatus::Delivered),
        )
        .await;
    let attempts: Vec<(&str, Option<u16>)> = history[0]
        .attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.status_code))
        .collect();
    assert_eq!(
        attempts,
        [
            ("retry", Some(503)),
            ("retry", Some(500)),
            ("delivered", Some(200))
        ]
    );
    // Same delivery id on every attempt, so the receiver can drop repeats.
    let ids: Vec<_> = h
        .requests("webhook")
        .iter()
        .map(|r| r.headers["webhook-id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id == ids[0]));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_exactly() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_limited", "/webhook/limited"))])
        .await;
    h.sandbox
        .inject(fault("/webhook/limited", 1, 429, Some("1")));
    let running = h.start();
    h.emit("ws_limited", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history(
            "ws_limited",
            "delivered",
            finished(DeliveryStatus::Delivered),
        )
        .await;
    let a = &history[0].attempts;
    assert_eq!(
        (a[0].outcome.as_str(), a[0].status_code),
        ("rate_limited", Some(429))
    );
    let waited = a[1].at - a[0].at;
    assert!(
        waited >= chrono::Duration::milliseconds(1000),
        "second attempt after {waited}, before Retry-After"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_are_dead_with_every_attempt_in_the_dlq() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_down", "/webhook/down"))])
        .await;
    h.sandbox.inject(fault("/webhook/down", 10, 503, None));
    let running = h.start();
    h.emit("ws_down", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history("ws_down", "dead", finished(DeliveryStatus::Dead))
        .await;
    assert_eq!(
        history[0].attempts.len(),
        4,
        "first attempt plus one per tier"
    );
    assert!(
        history[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("retries exhausted after 3 tiers"),
        "{:?}",
        history[0].reason
    );
    let letters = h.wait_for_dead_letters(1).await;
    assert_eq!(letters[0].headers["herald.dlq.kind"], "dead_delivery");
    assert_eq!(letters[0].key.as_deref(), Some("ws_down"));
    let dead: herald::history::writer::DeadDelivery =
        serde_json::from_slice(&letters[0].value).unwrap();
    assert_eq!(dead.record.attempts.len(), 4);
    assert_eq!(dead.record.delivery_id, history[0].delivery_id);
    assert_eq!(
        (dead.task.attempt, dead.task.retries),
        (5, 0),
        "a redrive would be attempt 5, tiers afresh"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_goes_to_the_dlq_at_once() {
    let h = Harness::new().await;
    h.apply(&[(
        "ws.yaml",
        &hook_workspace("ws_bad", "/webhook/bad?status=422"),
    )])
    .await;
    let running = h.start();
    h.emit("ws_bad", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history("ws_bad", "failed", finished(DeliveryStatus::Failed))
        .await;
    assert_eq!(history[0].attempts.len(), 1, "not retried");
    let letters = h.wait_for_dead_letters(1).await;
    assert_eq!(letters[0].headers["herald.dlq.kind"], "failed_delivery");
    assert!(letters[0].headers["herald.dlq.reason"].starts_with("HTTP 422"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_is_not_called_again_until_the_workspace_is_applied() {
    let h = Harness::new().await;
    let workspace = |token: &str| {
        format!(
            r##"
workspace: ws_slack
connections:
  - {{ id: bot, type: slack, base_url: "http://127.0.0.1:7780/slack/api", channel: "#c", credentials: {{ token: "{token}" }} }}
rules:
  - {{ id: r, event: e, connection: bot, action: post_message, with: {{ text: "{{{{ payload.n }}}}" }} }}
"##
        )
    };
    h.apply(&[("ws.yaml", &workspace("xoxp-wrong-kind"))]).await;
    let running = h.start();
    h.emit("ws_slack", "e", "evt_1", None, json!({"n": 1}))
        .await;
    h.wait_for_history("ws_slack", "first dead", |r| {
        r.len() == 1 && r[0].status == DeliveryStatus::Dead
    })
    .await;
    h.emit("ws_slack", "e", "evt_2", None, json!({"n": 2}))
        .await;
    let history = h
        .wait_for_history("ws_slack", "second parked", |r| r.len() == 2)
        .await;
    for d in &history {
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert!(
            d.reason
                .as_deref()
                .unwrap()
                .starts_with("connection_broken: slack error: invalid_auth")
        );
    }
    let parked = history.iter().find(|d| d.event_id == "evt_2").unwrap();
    assert!(
        parked.attempts.is_empty(),
        "the broken connection was not called"
    );
    assert_eq!(h.requests("slack").len(), 1);

    // The operator fixes the token: the connection works again.
    h.apply(&[("ws.yaml", &workspace("xoxb-right"))]).await;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut n = 2;
    loop {
        n += 1;
        h.emit("ws_slack", "e", &format!("evt_{n}"), None, json!({"n": n}))
            .await;
        let history = h.history("ws_slack").await;
        if history
            .iter()
            .any(|d| d.status == DeliveryStatus::Delivered)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fix never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_in_a_retry_tier_goes_to_the_dlq_and_does_not_loop() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_ok", "/webhook/ok"))])
        .await;
    let running = h.start();
    let tier = format!("{}200ms", h.settings.topics.retry_prefix);
    let poison = rdkafka::producer::FutureRecord::to(&tier)
        .key("ws_ok")
        .payload("{not a task");
    h.producer
        .send(poison, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let letters = h.wait_for_dead_letters(1).await;
    assert_eq!(
        letters[0].headers["herald.dlq.kind"],
        "undecodable_retry_task"
    );
    assert_eq!(letters[0].value, b"{not a task");
    // The tiers keep working after it.
    h.sandbox.inject(fault("/webhook/ok", 1, 503, None));
    h.emit("ws_ok", "e", "evt_1", None, json!({})).await;
    h.wait_for_history("ws_ok", "delivered", finished(DeliveryStatus::Delivered))
        .await;
    assert_eq!(
        h.dead_letters().await.len(),
        1,
        "the poison record was dead-lettered once"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_after_fixing_the_connection_delivers_the_dead_deliveries_once() {
    use herald::ops::redrive::{RedriveFilter, redrive};
    use herald::workspace::table::WorkspaceEntry;

    let h = Harness::new().await;
    let workspace = |token: &str| {
        format!(
            r##"
workspace: ws_fix
connections:
  - {{ id: bot, type: slack, base_url: "http://127.0.0.1:7780/slack/api", channel: "#c", credentials: {{ token: "{token}" }} }}
  - {{ id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/fix", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
rules:
  - {{ id: alert, event: e, connection: bot, action: post_message, with: {{ text: "n={{{{ payload.n }}}}" }} }}
  - {{ id: hook, event: e, connection: hook, action: post }}
"##
        )
    };
    h.apply(&[("ws.yaml", &workspace("xoxp-revoked"))]).await;
    let running = h.start();
    h.emit("ws_fix", "e", "evt_1", None, json!({"n": 1})).await;
    h.emit("ws_fix", "e", "evt_2", None, json!({"n": 2})).await;
    h.wait_for_history("ws_fix", "two dead, two delivered", |r| {
        r.iter()
            .filter(|d| d.status == DeliveryStatus::Dead)
            .count()
            == 2
            && r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2
    })
    .await;

    let filter = RedriveFilter {
        workspace_id: "ws_fix".into(),
        connection_id: Some("bot".into()),
        rule_id: None,
        since: None,
        statuses: vec![DeliveryStatus::Failed, DeliveryStatus::Dead],
    };
    let planned = redrive(&h.settings, &filter, true).await.unwrap();
    assert_eq!(planned.len(), 2, "dry run lists both");
    assert_eq!(
        h.history("ws_fix")
            .await
            .iter()
            .filter(|d| d.status == DeliveryStatus::Dead)
            .count(),
        2,
        "dry run changed nothing"
    );

    // The fix: a valid bot token. Wait until this processor has loaded it.
    h.apply(&[("ws.yaml", &workspace("xoxb-fixed"))]).await;
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !matches!(running.app.router.table.get("ws_fix"), Some(WorkspaceEntry::Ready(ws)) if ws.broken_reason("bot").is_none())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the fixed config never loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let redriven = redrive(&h.settings, &filter, false).await.unwrap();
    assert_eq!(redriven.len(), 2);
    let history = h
        .wait_for_history("ws_fix", "all delivered", |r| {
            r.len() == 4 && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
        })
        .await;
    let alert = |event: &str| {
        history
            .iter()
            .find(|d| d.event_id == event && d.rule_id.as_deref() == Some("alert"))
            .unwrap()
    };
    let outcomes = |event: &str| {
        alert(event)
            .attempts
            .iter()
            .map(|a| a.outcome.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes("evt_1"),
        ["connection_broken", "delivered"],
        "history shows the new attempt"
    );
    assert_eq!(
        outcomes("evt_2"),
        ["delivered"],
        "the parked one was never called before"
    );
    let posted: Vec<_> = h
        .requests("slack")
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["text"].clone())
        .collect();
    assert_eq!(
        posted.len(),
        3,
        "one rejected call, then each message once: {posted:?}"
    );

    assert!(
        redrive(&h.settings, &filter, false)
            .await
            .unwrap()
            .is_empty(),
        "nothing left to redrive"
    );
    running.stop().await;
}

/// A task for rule `r` of `workspace`, as the processor writes it to a tier, due at `due_at`.
fn task(workspace: &str, delivery_id: &str, due_at: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let now = chrono::Utc::now();
    serde_json::to_vec(&json!({
        "delivery_id": delivery_id,
        "envelope": {"event_id": delivery_id, "workspace_id": workspace, "event": "e", "payload": {}},
        "rule_id": "r",
        "connection_id": "hook",
        "request": {},
        "attempt": 2,
        "retries": 1,
        "tier": 0,
        "due_at": due_at,
        "first_attempt_at": now,
        "last_error": "HTTP 503",
        "attempts": [],
        "partition": 0,
    }))
    .unwrap()
}

/// Writes `value` to `partition` of the retry tier `tier` (e.g. `200ms`).
async fn write_to_tier(h: &Harness, tier: &str, partition: i32, key: &str, value: &[u8]) {
    let topic = format!("{}{tier}", h.settings.topics.retry_prefix);
    let record = rdkafka::producer::FutureRecord::to(&topic)
        .partition(partition)
        .key(key)
        .payload(value);
    h.producer
        .send(record, std::time::Duration::from_secs(10))
        .await
        .unwrap();
}

/// The delivery ids and due times of the tasks in the retry tier `tier`, in offset order.
async fn tier_tasks(h: &Harness, tier: &str) -> Vec<(String, String)> {
    let settings = h.settings.clone();
    let topic = format!("{}{tier}", settings.topics.retry_prefix);
    tokio::task::spawn_blocking(move || {
        use rdkafka::Message;
        let c: rdkafka::consumer::BaseConsumer =
            herald::kafka::reader_config(&settings).create().unwrap();
        let mut out = Vec::new();
        herald::kafka::read_to_end(&c, &topic, |m| {
            let t: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            out.push((
                t["delivery_id"].as_str().unwrap().to_owned(),
                t["due_at"].as_str().unwrap().to_owned(),
            ));
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}

/// Waits until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// How many calls the webhook received for each delivery id.
fn calls_per_delivery(h: &Harness) -> std::collections::BTreeMap<String, usize> {
    let mut calls = std::collections::BTreeMap::new();
    for r in h.requests("webhook") {
        let id = r.headers["webhook-id"].as_str().unwrap().to_owned();
        *calls.entry(id).or_default() += 1;
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_due_in_an_hour_does_not_hold_the_sooner_tasks_behind_it() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_far", "/webhook/far"))])
        .await;
    let far_due = chrono::Utc::now() + chrono::Duration::hours(1);
    // A long Retry-After can put a task an hour away at the head of a partition.
    write_to_tier(&h, "200ms", 0, "ws_far", &task("ws_far", "dl_far", far_due)).await;
    let soon = task("ws_far", "dl_soon", chrono::Utc::now());
    write_to_tier(&h, "200ms", 0, "ws_far", &soon).await;
    let started = std::time::Instant::now();
    let running = h.start();

    let history = h
        .wait_for_history("ws_far", "the sooner task delivered", |r| {
            r.iter().any(|d| d.delivery_id == "dl_soon")
        })
        .await;
    assert_eq!(
        history.len(),
        1,
        "the far task was not attempted: {history:#?}"
    );
    assert_eq!(history[0].status, DeliveryStatus::Delivered);

    // The far task was forwarded to the last tier, due time unchanged; not lost, not dead.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let copies = loop {
        let copies: Vec<_> = tier_tasks(&h, "800ms")
            .await
            .into_iter()
            .filter(|(id, _)| id == "dl_far")
            .collect();
        if copies.len() >= 2 {
            break copies;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not forwarded: {copies:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let due = far_due.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    assert!(copies.iter().all(|(_, d)| *d == due), "{copies:?} != {due}");
    // Re-forwarded at most once per last-tier delay (800 ms), not in a busy loop.
    let bound = (started.elapsed().as_secs_f64() / 0.8).ceil() as usize + 2;
    assert!(copies.len() <= bound, "{} copies", copies.len());
    assert!(h.dead_letters().await.is_empty());
    assert_eq!(calls_per_delivery(&h).get("dl_far"), None);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_rate_limits_without_retry_after_climb_the_tiers() {
    let h = Harness::new().await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_429", "/webhook/429"))])
        .await;
    h.sandbox.inject(fault("/webhook/429", 3, 429, None));
    let running = h.start();
    h.emit("ws_429", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history("ws_429", "delivered", finished(DeliveryStatus::Delivered))
        .await;
    let a = &history[0].attempts;
    let outcomes: Vec<&str> = a.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["rate_limited", "rate_limited", "rate_limited", "delivered"],
        "three rate limits used up none of the three tiers"
    );
    // Tiers 200 ms, 400 ms, 800 ms, each spread by at most ±20%.
    for (i, least_ms) in [(1, 160), (2, 320), (3, 640)] {
        let waited = a[i].at - a[i - 1].at;
        assert!(
            waited >= chrono::Duration::milliseconds(least_ms),
            "attempt {} came {waited} after the one before, sooner than its tier",
            i + 1
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_task_whose_partition_moves_away_and_back_is_attempted_once() {
    let h = Harness::new_with(|s| {
        s.retry.tiers = vec!["60s".into()];
        s.topics.partitions = 2;
        // Rebalances on MockCluster wait up to the session timeout less a second.
        s.kafka.session_timeout_ms = 3000;
        s.kafka
            .client
            .insert("heartbeat.interval.ms".into(), "250".into());
    })
    .await;
    h.apply(&[("ws.yaml", &hook_workspace("ws_move", "/webhook/move"))])
        .await;
    // One held task at the head of each partition, one behind each, due a second later.
    let due = chrono::Utc::now() + chrono::Duration::seconds(30);
    for p in 0..2 {
        let head = task("ws_move", &format!("dl_head_{p}"), due);
        write_to_tier(&h, "60s", p, "ws_move", &head).await;
        let next = task(
            "ws_move",
            &format!("dl_next_{p}"),
            due + chrono::Duration::seconds(1),
        );
        write_to_tier(&h, "60s", p, "ws_move", &next).await;
    }
    let holding = |running: &common::Running| {
        running
            .app
            .router
            .metrics
            .retry_oldest_age
            .with_label_values(&["60s"])
            .get()
            > 0.0
    };
    let first = h.start();
    wait_until("the first replica holds the heads", || holding(&first)).await;
    // A second replica joins: one partition moves to it, and it holds that head in turn.
    let second = h.start();
    wait_until("the second replica holds a head", || holding(&second)).await;
    // It leaves again: the partition comes back to the first replica.
    second.stop().await;

    h.wait_for_history("ws_move", "all four delivered", |r| {
        r.len() == 4 && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    let calls = calls_per_delivery(&h);
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(
        calls.values().all(|n| *n == 1),
        "attempted more than once: {calls:?}"
    );
    first.stop().await;
}
