//! An independent reader: history and dead-delivery records Herald writes in Confluent Avro
//! (`history.format = "avro"`) are decoded by Python's fastavro and `confluent-kafka`'s
//! AvroDeserializer, each with the writer schema it finds in the registry. The records Herald
//! writes are committed in `tests/fixtures/history/` (this test checks Herald still writes them
//! byte for byte), with what the libraries decoded from them (`scripts/history_fixtures.py`).

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use herald::history::codec::HistoryCodec;
use herald::model::records::avro::AvroRecord;
use herald::model::records::{
    Attempt, DeadDelivery, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope,
};
use herald::settings::{HistoryFormat, Settings};
use serde_json::{Value, json};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/history")
}

fn fixture_record() -> DeliveryRecord {
    let at = Utc.timestamp_millis_opt(1_774_102_690_123).unwrap();
    DeliveryRecord {
        delivery_id: "dl_0123456789abcdef0123456789abcdef".into(),
        workspace_id: "ws_academyflow".into(),
        event_id: "evt_lesson_42".into(),
        event: "lesson.completed".into(),
        rule_id: Some("lesson-progress-to-hubspot".into()),
        connection_id: Some("hubspot".into()),
        destination: Some("hubspot".into()),
        action: Some("upsert_contact".into()),
        status: DeliveryStatus::Dead,
        reason: Some("retries exhausted: HTTP 503".into()),
        attempts: vec![Attempt {
            at,
            outcome: "retry".into(),
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            latency_ms: 87,
        }],
        skipped_count: None,
        next_attempt_at: None,
        created_at: at,
        updated_at: at,
    }
}

fn fixture_dead() -> DeadDelivery {
    let record = fixture_record();
    let at = record.created_at;
    DeadDelivery {
        task: Some(DeliveryTask {
            delivery_id: record.delivery_id.clone(),
            envelope: EventEnvelope {
                event_id: record.event_id.clone(),
                workspace_id: record.workspace_id.clone(),
                event: record.event.clone(),
                resource: Some("course".into()),
                resource_id: Some("crs_7".into()),
                payload: json!({"email": "nina@academyflow.io", "completion_percentage": 62})
                    .as_object()
                    .unwrap()
                    .clone(),
                occurred_at: Some(at),
                received_at: Some(at),
            },
            rule_id: "lesson-progress-to-hubspot".into(),
            connection_id: "hubspot".into(),
            request: json!({"email": "nina@academyflow.io"}),
            attempt: 2,
            retries: 1,
            tier: 0,
            due_at: at,
            first_attempt_at: Some(at),
            last_error: Some("HTTP 503".into()),
            attempts: record.attempts.clone(),
            partition: Some(1),
            redriven_at: None,
            offset: Some(41),
        }),
        record,
        truncated: None,
    }
}

/// Encodes the fixture records as Herald writes them into a fresh registry simulator (where
/// the history schema gets id 1 and the dead-delivery schema id 2).
async fn herald_writes_the_fixtures() -> (Vec<u8>, Vec<u8>) {
    let sandbox = herald_sandbox::Sandbox::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/registry", listener.local_addr().unwrap());
    let router = sandbox.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let mut settings = Settings::defaults();
    settings.ingest.schema_registry.url = url;
    settings.history.format = HistoryFormat::Avro;
    let codec = HistoryCodec::new(&settings);
    codec.ready().await;
    let record = codec.encode_record(&fixture_record()).await;
    let dead = codec.encode_dead(&fixture_dead()).await;
    assert_eq!(&record[..5], &[0, 0, 0, 0, 1]);
    assert_eq!(&dead[..5], &[0, 0, 0, 0, 2]);
    (record, dead)
}

#[tokio::test]
async fn records_herald_writes_are_decoded_by_fastavro_and_confluent_kafka() {
    let (record, dead) = herald_writes_the_fixtures().await;
    let dir = fixture_dir();
    if std::env::var_os("HERALD_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("delivery-record.bin"), &record).unwrap();
        std::fs::write(dir.join("dead-delivery.bin"), &dead).unwrap();
    }
    let committed = |name: &str| {
        std::fs::read(dir.join(name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; write it with HERALD_WRITE_FIXTURES=1, then run scripts/history_fixtures.py")
        })
    };
    assert_eq!(
        committed("delivery-record.bin"),
        record,
        "Herald writes the committed history record byte for byte"
    );
    assert_eq!(committed("dead-delivery.bin"), dead);

    // What the Python libraries decoded from those bytes (scripts/history_fixtures.py).
    let decoded: Value =
        serde_json::from_slice(&std::fs::read(dir.join("decoded.json")).unwrap()).unwrap();
    let record_json = avro_json(&fixture_record());
    let dead_json = avro_json(&fixture_dead());
    for library in ["fastavro", "confluent-kafka"] {
        assert_eq!(
            decoded[library]["delivery-record.bin"], record_json,
            "{library} reads the history record"
        );
        assert_eq!(
            decoded[library]["dead-delivery.bin"], dead_json,
            "{library} reads the dead delivery"
        );
    }
    assert_eq!(
        decoded["schema_ids"],
        json!({"delivery-record.bin": 1, "dead-delivery.bin": 2})
    );
}

/// A record as a generic Avro reader renders it in JSON: the fields of its Avro schema, times as
/// epoch milliseconds, free-form JSON as JSON text, unions as their value.
fn avro_json<T: AvroRecord>(record: &T) -> Value {
    fn render(value: &apache_avro::types::Value) -> Value {
        use apache_avro::types::Value as A;
        match value {
            A::Null => Value::Null,
            A::Boolean(b) => json!(b),
            A::Int(i) => json!(i),
            A::Long(l) | A::TimestampMillis(l) => json!(l),
            A::String(s) | A::Enum(_, s) => json!(s),
            A::Union(_, inner) => render(inner),
            A::Array(items) => Value::Array(items.iter().map(render).collect()),
            A::Record(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(name, v)| (name.clone(), render(v)))
                    .collect(),
            ),
            other => panic!("no such type in Herald's schemas: {other:?}"),
        }
    }
    render(&record.to_avro().unwrap())
}
