//! With `history.format = "avro"`, the records of `herald.deliveries` and the dead deliveries of
//! `herald.dlq` are in Confluent wire format, their schemas registered under `<topic>-value`:
//! read as raw bytes the way a Kafka Connect sink reads them, each starts with magic byte 0 and
//! an id the registry knows, and decodes with the registered schema to a record valid against
//! the JSON Schema of the JSON form. Herald's own readers (`herald history`, the history store,
//! redrive, dedupe) read them, a switch from JSON loses nothing, and a registry that is down at
//! start holds outcomes back, losing none. (`history_interop.rs`: Python libraries read them.)

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use apache_avro::Schema;
use common::Harness;
use herald::history::store::{DeliveryQuery, HistoryStore, spawn_follower};
use herald::kafka;
use herald::model::records::avro::AvroRecord;
use herald::model::records::{DeadDelivery, DeliveryRecord, DeliveryStatus};
use herald::ops::redrive::{RedriveFilter, redrive};
use herald::settings::{HistoryFormat, Settings};
use jsonschema::{Retrieve, Uri, Validator};
use rdkafka::Message;
use serde_json::{Value, json};

const WORKSPACE: &str = r##"
workspace: ws_avro
connections:
  - id: good
    type: webhook
    url: "http://127.0.0.1:7780/webhook/ok"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
  - id: down
    type: webhook
    url: "http://127.0.0.1:7780/webhook/down?status=503"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - { id: hook-ok, event: signup, connection: good, action: post }
  - { id: hook-down, event: signup, connection: down, action: post }
"##;

/// A harness writing Avro history to the sandbox's registry.
async fn avro_harness() -> Harness {
    let mut h = Harness::new_with(|s| {
        // One short tier: dead after the first failed retry.
        s.retry.tiers = vec!["300ms".into()];
    })
    .await;
    h.settings.ingest.schema_registry.url = format!("{}/registry", h.sandbox_url);
    h.settings.history.format = HistoryFormat::Avro;
    h.apply(&[("avro.yaml", WORKSPACE)]).await;
    h
}

/// Every value of `topic` with its `herald.dlq.kind` header, as raw bytes.
async fn raw_values(settings: &Settings, topic: &str) -> Vec<(Option<String>, Vec<u8>)> {
    let (settings, topic) = (settings.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::message::Headers;
        let c: rdkafka::consumer::BaseConsumer = kafka::reader_config(&settings).create().unwrap();
        let mut out = Vec::new();
        kafka::read_to_end(&c, &topic, |m| {
            let kind = m.headers().and_then(|hs| {
                hs.iter()
                    .find(|h| h.key == "herald.dlq.kind")
                    .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
            });
            if let Some(bytes) = m.payload() {
                out.push((kind, bytes.to_vec()));
            }
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}

/// The id the registry gave `subject` (its only version).
fn subject_id(h: &Harness, subject: &str) -> u32 {
    let state = h.sandbox.state();
    let ids = state["registry"]["subjects"][subject]
        .as_array()
        .unwrap_or_else(|| panic!("subject {subject} registered: {state}"));
    assert_eq!(ids.len(), 1, "{subject}: one version");
    ids[0].as_u64().unwrap() as u32
}

/// Decodes Confluent wire-format `bytes` as a consumer that knows nothing of Herald does: the
/// writer schema is the one the registry holds under the record's id.
fn decode_with_registry<T: AvroRecord>(h: &Harness, bytes: &[u8], expected_id: u32) -> T {
    let [0, a, b, c, d, datum @ ..] = bytes else {
        panic!(
            "not Confluent wire format: {:?}",
            &bytes[..bytes.len().min(8)]
        );
    };
    let id = u32::from_be_bytes([*a, *b, *c, *d]);
    assert_eq!(id, expected_id, "the record's schema id");
    let text = h
        .sandbox
        .registry()
        .schema(id)
        .expect("id known")
        .to_owned();
    let schema = Schema::parse_str(&text).unwrap();
    let mut datum = datum;
    let value = apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap();
    assert!(datum.is_empty(), "the datum is read to its end");
    T::from_avro(&value).unwrap()
}

/// Resolves the JSON Schemas' references to each other from `schemas/json/`.
struct FromDirectory;

fn read_json_schema(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/json")
        .join(name);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

impl Retrieve for FromDirectory {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Ok(read_json_schema(
            uri.as_str().rsplit('/').next().unwrap_or_default(),
        ))
    }
}

fn json_schema(name: &str) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_retriever(FromDirectory)
        .build(&read_json_schema(name))
        .unwrap()
}

fn assert_valid(validator: &Validator, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{value} is not valid: {errors:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_dead_deliveries_are_confluent_avro_and_every_reader_reads_them() {
    let h = avro_harness().await;
    let running = h.start();
    h.emit("ws_avro", "signup", "evt_a1", None, json!({"plan": "pro"}))
        .await;
    // `herald history` reads the Avro records.
    let history = h
        .wait_for_history("ws_avro", "one delivered, one dead", |r| {
            r.len() == 2
                && r.iter().any(|d| d.status == DeliveryStatus::Delivered)
                && r.iter().any(|d| d.status == DeliveryStatus::Dead)
        })
        .await;
    h.wait_for_dead_letters(1).await;

    let record_id = subject_id(&h, "herald.deliveries-value");
    let dead_id = subject_id(&h, "herald.dlq-value");
    assert_ne!(record_id, dead_id);

    let record_schema = json_schema("DeliveryRecord.schema.json");
    let raw = raw_values(&h.settings, &h.settings.topics.deliveries).await;
    assert!(
        raw.len() >= 3,
        "delivered, retrying and dead records: {}",
        raw.len()
    );
    let mut latest = std::collections::HashMap::new();
    for (_, bytes) in &raw {
        let record: DeliveryRecord = decode_with_registry(&h, bytes, record_id);
        assert_valid(&record_schema, &serde_json::to_value(&record).unwrap());
        latest.insert(record.delivery_id.clone(), record);
    }
    for read in &history {
        assert_eq!(
            latest.get(&read.delivery_id),
            Some(read),
            "the registry's schema and Herald's reader read the same record"
        );
    }

    let dead_schema = json_schema("DeadDelivery.schema.json");
    let letters = raw_values(&h.settings, &h.settings.topics.dlq).await;
    let dead: Vec<DeadDelivery> = letters
        .iter()
        .filter(|(kind, _)| kind.as_deref() == Some("dead_delivery"))
        .map(|(_, bytes)| decode_with_registry(&h, bytes, dead_id))
        .collect();
    assert_eq!(dead.len(), 1);
    assert_valid(&dead_schema, &serde_json::to_value(&dead[0]).unwrap());
    let task = dead[0]
        .task
        .as_ref()
        .expect("the dead letter keeps its task");
    assert_eq!(task.rule_id, "hook-down");
    assert_eq!(task.envelope.payload["plan"], "pro");

    // The history store builds its view from the Avro records.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(HistoryStore::open(&dir.path().join("history.db")).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let follower = spawn_follower(&h.settings, store.clone(), stop.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !store.is_ready() {
        assert!(Instant::now() < deadline, "the store catches up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = store
        .query(&DeliveryQuery {
            workspace_id: "ws_avro".into(),
            limit: 10,
            ..DeliveryQuery::default()
        })
        .unwrap();
    let mut from_store = page.deliveries;
    from_store.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let mut expected = history.clone();
    expected.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    assert_eq!(from_store, expected, "the store holds what the topic holds");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::task::spawn_blocking(move || follower.join().unwrap())
        .await
        .unwrap();

    // Redrive finds the dead delivery in the Avro dead letter and writes Avro again.
    let filter = RedriveFilter {
        workspace_id: "ws_avro".into(),
        connection_id: None,
        rule_id: None,
        since: None,
        statuses: vec![DeliveryStatus::Failed, DeliveryStatus::Dead],
    };
    let redriven = redrive(&h.settings, &filter, false).await.unwrap();
    assert_eq!(redriven.len(), 1);
    assert_eq!(redriven[0].rule_id.as_deref(), Some("hook-down"));
    let dead_id_before = redriven[0].delivery_id.clone();
    let attempts_before = redriven[0].attempts.len();
    // Attempted again: the redrive's own `retrying` record may already be superseded by the
    // outcome of that attempt when history is read, so the attempts are what is counted.
    h.wait_for_history("ws_avro", "the redriven delivery attempted again", |r| {
        r.iter()
            .any(|d| d.delivery_id == dead_id_before && d.attempts.len() > attempts_before)
    })
    .await;
    running.stop().await;
    for (_, bytes) in raw_values(&h.settings, &h.settings.topics.deliveries).await {
        assert_eq!(
            &bytes[..5],
            &[&[0][..], &record_id.to_be_bytes()].concat()[..]
        );
    }
    assert_eq!(
        subject_id(&h, "herald.deliveries-value"),
        record_id,
        "redrive registered nothing new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_down_at_start_holds_outcomes_back_and_loses_none() {
    let h = avro_harness().await;
    h.sandbox.inject(
        serde_json::from_value(json!({"path": "/registry/subjects", "count": 3, "status": 503}))
            .unwrap(),
    );
    let running = h.start();
    h.emit("ws_avro", "signup", "evt_d1", None, json!({"plan": "team"}))
        .await;
    let codec = running
        .app
        .health
        .history_codec
        .clone()
        .expect("the health reports on the history format");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !codec.registry_down() {
        assert!(!codec.is_ready(), "not ready before the registry answered");
        assert!(
            Instant::now() < deadline,
            "the registry failure is reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let readyz = running.app.health.ready().unwrap_err();
    assert!(readyz.contains("schema registry unavailable"), "{readyz}");
    let history = h
        .wait_for_history("ws_avro", "the event's outcomes", |r| {
            r.iter().any(|d| d.status == DeliveryStatus::Delivered)
        })
        .await;
    assert_eq!(history[0].event_id, "evt_d1");
    assert!(codec.is_ready() && !codec.registry_down());
    let posts = h
        .requests("registry")
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect::<Vec<_>>();
    assert!(
        posts.iter().filter(|r| r.status == 503).count() == 3
            && posts.iter().any(|r| r.status == 200),
        "registered after three failures: {:?}",
        posts.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    let record_id = subject_id(&h, "herald.deliveries-value");
    let raw = raw_values(&h.settings, &h.settings.topics.deliveries).await;
    assert!(!raw.is_empty());
    for (_, bytes) in raw {
        let record: DeliveryRecord = decode_with_registry(&h, &bytes, record_id);
        assert_eq!(record.event_id, "evt_d1");
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_records_written_before_a_switch_to_avro_stay_readable() {
    let mut h = Harness::new().await;
    h.apply(&[("avro.yaml", WORKSPACE)]).await;
    let running = h.start();
    h.emit("ws_avro", "signup", "evt_j1", None, json!({})).await;
    h.wait_for_history("ws_avro", "the JSON outcome", |r| {
        r.iter().any(|d| d.status == DeliveryStatus::Delivered)
    })
    .await;
    running.stop().await;
    let json_records = raw_values(&h.settings, &h.settings.topics.deliveries).await;
    assert!(json_records.iter().all(|(_, b)| b.first() == Some(&b'{')));

    h.settings.ingest.schema_registry.url = format!("{}/registry", h.sandbox_url);
    h.settings.history.format = HistoryFormat::Avro;
    let running = h.start();
    h.emit("ws_avro", "signup", "evt_j2", None, json!({})).await;
    let history = h
        .wait_for_history("ws_avro", "both events' outcomes", |r| {
            ["evt_j1", "evt_j2"].iter().all(|e| {
                r.iter()
                    .any(|d| d.event_id == *e && d.status == DeliveryStatus::Delivered)
            })
        })
        .await;
    running.stop().await;
    let raw = raw_values(&h.settings, &h.settings.topics.deliveries).await;
    assert!(raw.iter().any(|(_, b)| b.first() == Some(&0)), "Avro now");
    assert!(history.iter().any(|d| d.event_id == "evt_j1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_reads_avro_history_and_does_not_deliver_twice() {
    let mut h = Harness::new().await;
    h.settings.ingest.schema_registry.url = format!("{}/registry", h.sandbox_url);
    h.settings.history.format = HistoryFormat::Avro;
    h.apply(&[(
        "ok.yaml",
        r##"
workspace: ws_once
connections:
  - id: good
    type: webhook
    url: "http://127.0.0.1:7780/webhook/ok"
    credentials: { secret: "${env:HERALD_CRED_WEBHOOK_SECRET}" }
rules:
  - { id: hook-ok, event: signup, connection: good, action: post }
"##,
    )])
    .await;
    let first = h.start();
    for i in 0..2 {
        h.emit("ws_once", "signup", &format!("evt_o{i}"), None, json!({}))
            .await;
    }
    h.wait_for_history("ws_once", "2 delivered", |r| {
        r.iter()
            .filter(|d| d.status == DeliveryStatus::Delivered)
            .count()
            == 2
    })
    .await;
    first.stop().await;
    let sent = h.requests("webhook").len();

    // A fresh consumer group reads both events again; the delivered set comes from the Avro
    // history records.
    let mut again = h.settings.clone();
    again.kafka.group_id = format!("{}-again", h.settings.kafka.group_id);
    let second = common::Running::start(again, h.vars());
    let already = || {
        second
            .app
            .metrics
            .deliveries
            .with_label_values(&["webhook", "post", "already_delivered"])
            .get()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while already() < 2 {
        assert!(Instant::now() < deadline, "events were not read again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(h.requests("webhook").len(), sent, "nothing sent twice");
    second.stop().await;
}
