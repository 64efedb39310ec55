//! Records too large to write: what Herald writes instead, and that the partition moves on.
//! MockCluster speaks the Kafka protocol; the limit that bites is the producer's own
//! `message.max.bytes` (librdkafka refuses a larger record before sending it).

mod common;

use std::time::Duration;

use chrono::Utc;
use common::Harness;
use herald::history::OutcomeWriter;
use herald::model::records::{DeliveryRecord, DeliveryStatus};
use rdkafka::producer::FutureProducer;
use serde_json::json;

const LIMIT: usize = 100_000;

async fn small_limit_harness() -> Harness {
    Harness::new_with(|s| {
        s.kafka.max_record_bytes = LIMIT;
        s.processor.max_event_bytes = 30_000;
    })
    .await
}

const BIG_REQUEST: &str = r##"
workspace: ws_big
connections:
  - id: down
    type: webhook
    url: "http://127.0.0.1:7780/webhook/down?status=503"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
  - id: refusing
    type: webhook
    url: "http://127.0.0.1:7780/webhook/refusing?status=422"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
  - id: ok
    type: webhook
    url: "http://127.0.0.1:7780/webhook/ok"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - id: big-to-down
    event: big.retried
    connection: down
    action: post
    with: { note: "{{ payload.note }}{{ payload.note }}{{ payload.note }}{{ payload.note }}" }
  - id: big-to-refusing
    event: big.refused
    connection: refusing
    action: post
    with: { note: "{{ payload.note }}{{ payload.note }}{{ payload.note }}{{ payload.note }}" }
  - { id: small-to-ok, event: small, connection: ok, action: post }
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_task_too_large_to_store_ends_dead_with_a_truncated_dead_letter_and_the_workspace_goes_on()
 {
    let h = small_limit_harness().await;
    h.apply(&[("big.yaml", BIG_REQUEST)]).await;
    let running = h.start();
    // 25 kB of payload renders a 100 kB request: the event fits, its retry task cannot.
    let note = "n".repeat(25_000);
    h.emit(
        "ws_big",
        "big.retried",
        "evt_big",
        None,
        json!({ "note": note }),
    )
    .await;
    h.emit("ws_big", "small", "evt_small", None, json!({}))
        .await;

    let history = h
        .wait_for_history(
            "ws_big",
            "the big delivery ended and the next delivered",
            |r| {
                r.iter()
                    .any(|d| d.event_id == "evt_small" && d.status == DeliveryStatus::Delivered)
                    && r.iter()
                        .any(|d| d.event_id == "evt_big" && d.status == DeliveryStatus::Dead)
            },
        )
        .await;
    let big = history.iter().find(|d| d.event_id == "evt_big").unwrap();
    let reason = big.reason.as_deref().unwrap();
    assert!(
        reason.contains("retry task")
            && reason.contains("too large")
            && reason.contains("HTTP 503"),
        "{reason}"
    );
    let letters = h.wait_for_dead_letters(1).await;
    let letter = &letters[0];
    assert_eq!(letter.headers["herald.truncated"], "true");
    assert!(letter.value.len() < LIMIT);
    let value: serde_json::Value = serde_json::from_slice(&letter.value).unwrap();
    assert_eq!(value["record"]["delivery_id"], big.delivery_id.as_str());
    assert!(value["truncated"]["original_bytes"].as_u64().unwrap() > LIMIT as u64);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_to_write_is_a_stub_and_the_workspace_goes_on() {
    let h = small_limit_harness().await;
    h.apply(&[("big.yaml", BIG_REQUEST)]).await;
    let running = h.start();
    let note = "n".repeat(25_000);
    h.emit(
        "ws_big",
        "big.refused",
        "evt_big",
        None,
        json!({ "note": note }),
    )
    .await;
    h.emit("ws_big", "small", "evt_small", None, json!({}))
        .await;

    let history = h
        .wait_for_history(
            "ws_big",
            "the big delivery failed and the next delivered",
            |r| {
                r.iter()
                    .any(|d| d.event_id == "evt_small" && d.status == DeliveryStatus::Delivered)
                    && r.iter()
                        .any(|d| d.event_id == "evt_big" && d.status == DeliveryStatus::Failed)
            },
        )
        .await;
    let big = history.iter().find(|d| d.event_id == "evt_big").unwrap();
    assert!(
        big.reason.as_deref().unwrap().contains("HTTP 422"),
        "{big:?}"
    );
    let letters = h.wait_for_dead_letters(1).await;
    let letter = &letters[0];
    assert_eq!(letter.headers["herald.truncated"], "true");
    assert_eq!(letter.headers["herald.dlq.kind"], "failed_delivery");
    let value: serde_json::Value = serde_json::from_slice(&letter.value).unwrap();
    assert_eq!(value["record"]["status"], "failed");
    assert!(value.get("task").is_none(), "the task is what did not fit");
    running.stop().await;
}

fn huge_record(reason_bytes: usize) -> DeliveryRecord {
    let now = Utc::now();
    DeliveryRecord {
        delivery_id: "dl_huge".into(),
        workspace_id: "ws_huge".into(),
        event_id: "evt_huge".into(),
        event: "e".into(),
        rule_id: Some("r".into()),
        connection_id: Some("c".into()),
        destination: Some("webhook".into()),
        action: Some("post".into()),
        status: DeliveryStatus::Failed,
        reason: Some(format!("permanent: {}", "r".repeat(reason_bytes))),
        attempts: Vec::new(),
        skipped_count: None,
        next_attempt_at: None,
        created_at: now,
        updated_at: now,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_record_refused_by_the_producer_is_written_as_a_stub() {
    let h = small_limit_harness().await;
    // The writer checks a larger limit than its producer's own, so the record reaches
    // librdkafka, which refuses it locally as too large.
    let producer: FutureProducer = herald::kafka::producer_config(&h.settings)
        .create()
        .unwrap();
    let mut settings = h.settings.clone();
    settings.kafka.max_record_bytes = 10 * LIMIT;
    let metrics = herald::telemetry::Metrics::new();
    let writer = OutcomeWriter::new(producer, &settings, &metrics);
    tokio::time::timeout(
        Duration::from_secs(30),
        writer.history(&huge_record(200_000), None),
    )
    .await
    .expect("the writer moves on");
    let history = h
        .wait_for_history("ws_huge", "the stub", |r| !r.is_empty())
        .await;
    let reason = history[0].reason.as_deref().unwrap();
    assert_eq!(history[0].status, DeliveryStatus::Failed);
    assert!(
        reason.starts_with("truncated:") && reason.contains("refused by Kafka as too large"),
        "{reason}"
    );
    assert!(
        metrics.render().contains(
            r#"herald_produce_failures_total{reason="too_large",topic_kind="history"} 1"#
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_record_over_the_limit_is_written_as_a_stub_without_being_produced() {
    let h = small_limit_harness().await;
    let producer: FutureProducer = herald::kafka::producer_config(&h.settings)
        .create()
        .unwrap();
    let metrics = herald::telemetry::Metrics::new();
    let writer = OutcomeWriter::new(producer, &h.settings, &metrics);
    tokio::time::timeout(
        Duration::from_secs(30),
        writer.history(&huge_record(200_000), None),
    )
    .await
    .expect("the writer moves on");
    let history = h
        .wait_for_history("ws_huge", "the stub", |r| !r.is_empty())
        .await;
    let reason = history[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("truncated: the history record was")
            && reason.contains("over kafka.max_record_bytes = 100000"),
        "{reason}"
    );
}
