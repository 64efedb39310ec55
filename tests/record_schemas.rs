//! The JSON Schemas in `schemas/json/` describe what Herald really writes: every record of
//! `herald.deliveries` and every dead delivery of `herald.dlq`, written by the pipeline for
//! delivered, retried, failed, dead and skipped deliveries, is valid against them, read as raw
//! bytes the way another consumer (a Kafka Connect sink, a script) reads them.

mod common;

use std::path::PathBuf;

use common::Harness;
use herald::kafka;
use jsonschema::{Retrieve, Uri, Validator};
use rdkafka::Message;
use serde_json::{Value, json};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/json")
}

fn read_schema(name: &str) -> Value {
    let text = std::fs::read_to_string(schema_dir().join(name)).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

/// Resolves the schemas' references to each other (`DeliveryRecord.schema.json`) from the
/// directory, never from the network.
struct FromDirectory;

impl Retrieve for FromDirectory {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.as_str().rsplit('/').next().unwrap_or_default();
        Ok(read_schema(name))
    }
}

fn validator(name: &str) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(FromDirectory)
        .build(&read_schema(name))
        .unwrap_or_else(|e| panic!("{name} compiles: {e}"))
}

fn check(validator: &Validator, what: &str, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} {value} is not valid: {errors:#?}"
    );
}

/// Every value of `topic`, as JSON.
async fn raw_values(h: &Harness, topic: String) -> Vec<(Vec<(String, String)>, Value)> {
    let settings = h.settings.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::message::Headers;
        let c: rdkafka::consumer::BaseConsumer = kafka::reader_config(&settings).create().unwrap();
        let mut out = Vec::new();
        kafka::read_to_end(&c, &topic, |m| {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| {
                            let value = h.value.unwrap_or_default();
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(value).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Some(bytes) = m.payload() {
                let value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
                out.push((headers, value));
            }
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_dead_deliveries_match_their_json_schemas() {
    let h = Harness::new_with(|s| {
        // One short tier: dead after the first failed retry, so the test sees it soon.
        s.retry.tiers = vec!["1s".into()];
    })
    .await;
    h.apply(&[(
        "records.yaml",
        r##"
workspace: ws_records
connections:
  - id: bot
    type: slack
    base_url: "http://127.0.0.1:7780/slack/api"
    channel: "#general"
    credentials: { token: "xoxp-not-a-bot-token" }
  - id: down
    type: webhook
    url: "http://127.0.0.1:7780/webhook/down?status=503"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
  - id: good
    type: webhook
    url: "http://127.0.0.1:7780/webhook/ok"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - { id: slack-bad-auth, event: signup, connection: bot, action: post_message, with: { text: "hi" } }
  - { id: hook-down, event: signup, connection: down, action: post }
  - { id: hook-ok, event: signup, connection: good, action: post }
  - id: bad-template
    event: signup
    connection: good
    action: post
    with: { email: "{{ payload.missing_field }}" }
"##,
    )])
    .await;
    let running = h.start();
    h.emit(
        "ws_records",
        "signup",
        "evt_s1",
        None,
        json!({"plan": "pro"}),
    )
    .await;
    // An event of no workspace: recorded as skipped.
    h.emit("ws_nobody", "signup", "evt_s2", None, json!({}))
        .await;
    h.wait_for_history("ws_records", "every outcome final", |r| {
        r.len() == 4 && r.iter().all(|d| d.status.as_str() != "retrying")
    })
    .await;
    h.wait_for_history("ws_nobody", "the skip", |r| !r.is_empty())
        .await;
    let letters = h.wait_for_dead_letters(3).await;
    assert!(letters.len() >= 3);
    running.stop().await;

    let record = validator("DeliveryRecord.schema.json");
    let history = raw_values(&h, h.settings.topics.deliveries.clone()).await;
    let mut statuses: Vec<String> = Vec::new();
    for (_, value) in &history {
        check(&record, "history record", value);
        statuses.push(value["status"].as_str().unwrap_or_default().to_owned());
    }
    for status in ["delivered", "retrying", "failed", "dead", "skipped"] {
        assert!(
            statuses.iter().any(|s| s == status),
            "the topic holds a {status} record to check: {statuses:?}"
        );
    }

    let dead = validator("DeadDelivery.schema.json");
    let mut kinds = Vec::new();
    for (headers, value) in raw_values(&h, h.settings.topics.dlq.clone()).await {
        let kind = headers
            .iter()
            .find(|(k, _)| k == "herald.dlq.kind")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if kind == "dead_delivery" || kind == "failed_delivery" {
            check(&dead, "dead delivery", &value);
            kinds.push(kind);
        }
    }
    assert!(kinds.iter().any(|k| k == "dead_delivery"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "failed_delivery"), "{kinds:?}");

    // The schemas are strict: a changed shape is refused.
    let mut odd = history[0].1.clone();
    odd["status"] = json!("lost");
    assert!(!record.is_valid(&odd), "an unknown status is refused");
    let mut odd = history[0].1.clone();
    odd["attempt_count"] = json!(3);
    assert!(!record.is_valid(&odd), "an unknown field is refused");
}
