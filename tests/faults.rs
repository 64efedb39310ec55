//! Fault tests: many deliveries through flaky destinations, and the broker going down
//! mid-stream. Nothing may be lost, and no offset may be committed past an unfinished event.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Harness, WEBHOOK_SECRET};
use herald::model::records::DeliveryStatus;
use herald_sandbox::Fault;
use serde_json::json;

fn workspaces(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("ws{i}.yaml"),
                format!(
                    r#"
workspace: ws_{i}
connections:
  - {{ id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/flaky/{i}", timeout_ms: 500, credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
rules:
  - {{ id: r, event: e, connection: hook, action: post }}
"#
                ),
            )
        })
        .collect()
}

async fn apply_workspaces(h: &Harness, n: usize) {
    let files = workspaces(n);
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    h.apply(&files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_percent_transient_failure_rate_over_1000_deliveries_ends_all_delivered() {
    const EVENTS: usize = 1000;
    const WORKSPACES: usize = 10;
    // Eight short tiers: a delivery dies only after nine failed attempts (0.3^9, about 2 in
    // 100,000), so "every one ends delivered" holds; rate limits do not use a tier.
    let h = Harness::new_with(|s| {
        s.retry.tiers = [
            "100ms", "200ms", "300ms", "400ms", "500ms", "600ms", "700ms", "800ms",
        ]
        .map(String::from)
        .to_vec();
        // Five failures in a row on one connection (one chance in about 30 here) open its
        // circuit; the deliveries it turns away wait for the cool-down, which is kept as short
        // as the tiers so that they still end within the test's patience.
        s.destinations.breaker_cooldown_ms = 500;
    })
    .await;
    apply_workspaces(&h, WORKSPACES).await;
    // 30% of requests fail: 503s, 429s with Retry-After, and answers slower than the 500 ms
    // timeout.
    for (status, rate, retry_after, delay_ms) in [
        (503, 0.15, None, 0),
        (429, 0.10, Some("1"), 0),
        (200, 0.05, None, 1500),
    ] {
        h.sandbox.inject(Fault {
            path: "/webhook/flaky".into(),
            count: u32::MAX,
            status,
            body: "simulated".into(),
            retry_after: retry_after.map(String::from),
            delay_ms,
            rate: Some(rate),
        });
    }
    let running = h.start();
    for i in 0..EVENTS {
        h.emit(
            &format!("ws_{}", i % WORKSPACES),
            "e",
            &format!("evt_{i}"),
            None,
            json!({"n": i}),
        )
        .await;
    }
    let mut all = Vec::new();
    for w in 0..WORKSPACES {
        let ws = format!("ws_{w}");
        let history = h
            .wait_for_history(&ws, "every delivery delivered", |r| {
                r.len() == EVENTS / WORKSPACES
                    && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
            })
            .await;
        all.extend(history);
    }
    assert_eq!(all.len(), EVENTS);
    let mut distribution: BTreeMap<usize, usize> = BTreeMap::new();
    for d in &all {
        *distribution.entry(d.attempts.len()).or_default() += 1;
    }
    let outcomes: BTreeMap<String, usize> =
        all.iter()
            .flat_map(|d| &d.attempts)
            .fold(BTreeMap::new(), |mut m, a| {
                *m.entry(a.outcome.clone()).or_default() += 1;
                m
            });
    println!("attempts per delivery (attempts: deliveries): {distribution:?}");
    println!("attempt outcomes: {outcomes:?}");
    // The sandbox abandons a slow answer when the client times out, so it records no work for
    // it; a real receiver might have done the work and would then see the webhook-id twice.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in h.requests("webhook").iter().filter(|r| r.status == 200) {
        *seen
            .entry(r.headers["webhook-id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    assert_eq!(seen.len(), EVENTS, "the receiver accepted every delivery");
    println!(
        "receiver accepted {} deliveries, {duplicates} duplicate(s)",
        seen.len()
    );
    assert!(
        distribution.keys().any(|&a| a > 1),
        "faults were injected and retried"
    );
    assert!(
        outcomes.contains_key("rate_limited") && outcomes.contains_key("retry"),
        "{outcomes:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_down_for_seconds_mid_stream_loses_nothing() {
    const EVENTS: usize = 200;
    let h = Harness::new().await;
    apply_workspaces(&h, 4).await;
    let running = h.start();
    for i in 0..EVENTS / 2 {
        h.emit(
            &format!("ws_{}", i % 4),
            "e",
            &format!("evt_{i}"),
            None,
            json!({}),
        )
        .await;
    }
    // Down while the first half is being processed, for several seconds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.mock.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    h.mock.broker_up(1).unwrap();
    for i in EVENTS / 2..EVENTS {
        h.emit(
            &format!("ws_{}", i % 4),
            "e",
            &format!("evt_{i}"),
            None,
            json!({}),
        )
        .await;
    }
    let mut delivered = 0;
    for w in 0..4 {
        let history = h
            .wait_for_history(&format!("ws_{w}"), "every event delivered", |r| {
                r.len() == EVENTS / 4 && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
            })
            .await;
        delivered += history.len();
    }
    assert_eq!(delivered, EVENTS);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_through_every_tier_then_dead() {
    let h = Harness::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = format!(
        r#"
workspace: ws_gone
connections:
  - {{ id: hook, type: webhook, url: "http://127.0.0.1:{port}/nothing-listens", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
rules:
  - {{ id: r, event: e, connection: hook, action: post }}
"#
    );
    h.apply(&[("ws.yaml", &file)]).await;
    let running = h.start();
    h.emit("ws_gone", "e", "evt_1", None, json!({})).await;
    let history = h
        .wait_for_history("ws_gone", "dead", |r| {
            r.len() == 1 && r[0].status == DeliveryStatus::Dead
        })
        .await;
    assert_eq!(history[0].attempts.len(), 4);
    assert!(
        history[0].attempts.iter().all(|a| a
            .error
            .as_deref()
            .unwrap()
            .starts_with("could not connect"))
    );
    running.stop().await;
}

/// Committed offsets of the processor's group on the events topic, summed.
fn committed_events(h: &Harness) -> i64 {
    h.committed()
        .into_iter()
        .map(|(_, offset)| match offset {
            rdkafka::Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_errors_on_history_and_retry_topics_hold_the_commit_and_lose_nothing() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    const EVENTS: usize = 20;
    let h = Harness::new().await;
    // One event per workspace: a workspace's next event waits for the previous one's outcomes.
    apply_workspaces(&h, EVENTS).await;
    for i in 0..EVENTS {
        h.emit(
            &format!("ws_{i}"),
            "e",
            &format!("evt_{i}"),
            None,
            json!({}),
        )
        .await;
    }
    // A third of the first attempts fail, so retry tasks must be produced too.
    h.sandbox.inject(Fault {
        path: "/webhook/flaky".into(),
        count: 7,
        status: 503,
        body: "unavailable".into(),
        retry_after: None,
        delay_ms: 0,
        rate: None,
    });
    // From now on every produce request fails with a non-retriable error, which reaches the
    // writer as a failed delivery report for each history record and retry task.
    h.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 100_000],
    );
    let running = h.start();
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while h.requests("webhook").len() < EVENTS {
        assert!(
            std::time::Instant::now() < deadline,
            "first attempts not made: {} requests, {} in flight",
            h.requests("webhook").len(),
            running.app.metrics.in_flight.get()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every first attempt was made, none of their outcomes is acknowledged: nothing may be
    // committed, and the processor says it is not ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        committed_events(&h),
        0,
        "an offset was committed past unacknowledged outcomes"
    );
    assert!(
        running.app.health.ready().is_err(),
        "readiness must fail while outcomes are not acknowledged"
    );

    h.mock.clear_request_errors(RDKafkaApiKey::Produce);
    let mut delivered = 0;
    for w in 0..EVENTS {
        let history = h
            .wait_for_history(&format!("ws_{w}"), "every event delivered", |r| {
                r.len() == 1 && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
            })
            .await;
        delivered += history.len();
    }
    assert_eq!(delivered, EVENTS);
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while committed_events(&h) < EVENTS as i64 {
        assert!(
            std::time::Instant::now() < deadline,
            "offsets not committed after recovery"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
}

fn slow_workspace(delay_ms: u64) -> String {
    format!(
        r#"
workspace: ws_slow
connections:
  - {{ id: hook, type: webhook, url: "http://127.0.0.1:7780/webhook/slow?delay_ms={delay_ms}", credentials: {{ secret: "{WEBHOOK_SECRET}" }} }}
rules:
  - {{ id: r, event: e, connection: hook, action: post }}
"#
    )
}

async fn wait_in_flight(running: &common::Running, n: i64) {
    let deadline = std::time::Instant::now() + common::PATIENCE;
    while running.app.metrics.in_flight.get() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "events never in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_deliveries_finish_and_commits_them() {
    const EVENTS: usize = 6;
    let h = Harness::new_with(|s| s.processor.shutdown_timeout_ms = 20_000).await;
    h.apply(&[("slow.yaml", &slow_workspace(1500))]).await;
    for i in 0..EVENTS {
        h.emit("ws_slow", "e", &format!("evt_{i}"), None, json!({}))
            .await;
    }
    let running = h.start();
    // Events of one workspace run one after another: one delivery is in flight at a time.
    wait_in_flight(&running, 1).await;
    running.stop().await;
    // What was in flight (fetched, 1.5 s per delivery) finished and was recorded and committed.
    let history = h.history("ws_slow").await;
    assert!(!history.is_empty(), "the in-flight delivery was abandoned");
    assert!(
        history
            .iter()
            .all(|r| r.status == DeliveryStatus::Delivered)
    );
    assert_eq!(
        committed_events(&h),
        history.len() as i64,
        "finished events are committed"
    );

    // The rest is read by the next run, nothing twice.
    let running = h.start();
    h.wait_for_history("ws_slow", "all delivered", |r| {
        r.len() == EVENTS && r.iter().all(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    running.stop().await;
    assert_eq!(
        h.requests("webhook").len(),
        EVENTS,
        "no event delivered twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_timeout_leaves_unfinished_events_uncommitted() {
    let h = Harness::new_with(|s| s.processor.shutdown_timeout_ms = 200).await;
    h.apply(&[("slow.yaml", &slow_workspace(3000))]).await;
    h.emit("ws_slow", "e", "evt_0", None, json!({})).await;
    let running = h.start();
    wait_in_flight(&running, 1).await;
    running.stop().await;
    assert_eq!(committed_events(&h), 0, "an unfinished event was committed");
    assert!(h.history("ws_slow").await.is_empty());

    // The next run delivers it (again, if the receiver got the abandoned attempt).
    let running = h.start();
    h.wait_for_history("ws_slow", "delivered after restart", |r| {
        r.len() == 1 && r[0].status == DeliveryStatus::Delivered
    })
    .await;
    running.stop().await;
    assert_eq!(committed_events(&h), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_error_that_can_never_succeed_stops_the_processor_with_its_reason() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let h = Harness::new().await;
    apply_workspaces(&h, 1).await;
    h.emit("ws_0", "e", "evt_0", None, json!({})).await;
    // Every produce from now on is refused as an invalid record: producing again cannot help.
    h.mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_RECORD; 10_000],
    );
    let app = herald::app::App::start(h.settings.clone(), h.vars()).expect("app");
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let stopped = tokio::time::timeout(common::PATIENCE, app.run_processor(rx))
        .await
        .expect("the processor stops instead of producing again forever");
    let reason = stopped.expect_err("it stops with an error").to_string();
    assert!(
        reason.contains(&format!(
            "cannot write to `{}`",
            h.settings.topics.deliveries
        )),
        "{reason}"
    );
    assert!(
        app.metrics.render().contains(
            r#"herald_produce_failures_total{reason="permanent",topic_kind="history"} 1"#
        ),
        "{}",
        app.metrics.render()
    );
    h.mock.clear_request_errors(RDKafkaApiKey::Produce);
    assert_eq!(
        committed_events(&h),
        0,
        "the unfinished event stays uncommitted"
    );
}
