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
  - {{ id: hook, type: webhook, url: "${{env:HERALD_SANDBOX_URL}}{path}", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
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
  - {{ id: bot, type: slack, base_url: "${{env:HERALD_SANDBOX_URL}}/slack/api", channel: "#c", credentials: {{ token: "{token}" }} }}
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
  - {{ id: bot, type: slack, base_url: "${{env:HERALD_SANDBOX_URL}}/slack/api", channel: "#c", credentials: {{ token: "{token}" }} }}
  - {{ id: hook, type: webhook, url: "${{env:HERALD_SANDBOX_URL}}/webhook/fix", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
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
