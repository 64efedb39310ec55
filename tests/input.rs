//! Input formats as producers other than Herald write them, through the whole pipeline:
//! MockCluster (real Kafka protocol) + the sandbox over real HTTP. Each event must be
//! delivered, not dead-lettered.

mod common;

use std::path::PathBuf;

use common::Harness;
use herald::model::records::DeliveryStatus;
use herald::model::records::avro::AvroRecord;

fn avro_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/avro")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_single_object_from_fastavro_the_avro_package_and_herald_is_delivered() {
    let dir = avro_fixture_dir();
    let h = Harness::new_with(|s| {
        s.ingest.avro_writer_schemas = vec![dir.join("EventEnvelope-evolved.avsc")];
    })
    .await;
    h.apply_fixtures().await;
    let running = h.start();

    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut expected = Vec::new();
    for m in &manifest {
        let bytes = std::fs::read(dir.join(m["file"].as_str().unwrap())).unwrap();
        h.produce(Some("ws_academyflow"), &bytes).await;
        expected.push(m["expect"]["event_id"].as_str().unwrap().to_owned());
    }
    // Herald's own writer, and apache-avro's default header (the fingerprint earlier Herald
    // versions wrote).
    let mut envelope = herald::model::records::EventEnvelope {
        event_id: "evt_herald".into(),
        workspace_id: "ws_academyflow".into(),
        event: "lesson.completed".into(),
        resource: Some("course".into()),
        resource_id: Some("creator-accelerator".into()),
        payload: serde_json::from_str(&manifest_payload()).unwrap(),
        occurred_at: Some("2026-03-21T15:06:00.250Z".parse().unwrap()),
        received_at: None,
    };
    h.produce(
        Some("ws_academyflow"),
        &herald::model::records::avro::to_single_object(&envelope).unwrap(),
    )
    .await;
    expected.push(envelope.event_id.clone());
    envelope.event_id = "evt_legacy".into();
    let mut legacy =
        apache_avro::GenericSingleObjectWriter::new_with_capacity(envelope_schema(), 256).unwrap();
    let mut bytes = Vec::new();
    legacy
        .write_value(envelope.to_avro().unwrap(), &mut bytes)
        .unwrap();
    h.produce(Some("ws_academyflow"), &bytes).await;
    expected.push(envelope.event_id.clone());

    let history = h
        .wait_for_history("ws_academyflow", "two deliveries per event", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2 * expected.len()
        })
        .await;
    for id in &expected {
        assert_eq!(
            history.iter().filter(|d| &d.event_id == id).count(),
            2,
            "{id}"
        );
    }
    let hooks = h.requests("webhook");
    assert_eq!(hooks.len(), expected.len());
    for hook in &hooks {
        assert_eq!(hook.body["timestamp"], "2026-03-21T15:06:00.250Z");
        assert_eq!(hook.body["data"]["payload"]["email"], "nina@academyflow.io");
    }
    assert!(h.dead_letters().await.is_empty(), "nothing dead-lettered");
    running.stop().await;
}

fn envelope_schema() -> &'static apache_avro::Schema {
    herald::model::records::EventEnvelope::schema()
}

/// The payload the Python libraries wrote, as JSON text.
fn manifest_payload() -> String {
    serde_json::json!({
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
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_in_structured_and_binary_mode_are_delivered() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;

    let h = Harness::new().await;
    h.apply_fixtures().await;
    let running = h.start();
    let payload: serde_json::Value = serde_json::from_str(&manifest_payload()).unwrap();
    let send = |key: Option<&'static str>, headers: Vec<(&'static str, String)>, value: Vec<u8>| {
        let producer = h.producer.clone();
        let topic = h.settings.topics.events.clone();
        async move {
            let mut owned = OwnedHeaders::new();
            for (k, v) in &headers {
                owned = owned.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record = FutureRecord::to(&topic).payload(&value).headers(owned);
            if let Some(k) = key {
                record = record.key(k);
            }
            producer
                .send(record, std::time::Duration::from_secs(10))
                .await
                .expect("produced");
        }
    };
    // Structured mode, the workspace in the `workspaceid` extension attribute.
    let structured = serde_json::json!({
        "specversion": "1.0",
        "type": "lesson.completed",
        "id": "ce-structured",
        "source": "/academy/lessons",
        "subject": "creator-accelerator",
        "time": "2026-03-21T15:06:00.250Z",
        "workspaceid": "ws_academyflow",
        "datacontenttype": "application/json",
        "data": payload,
    });
    send(
        None,
        vec![("content-type", "application/cloudevents+json".into())],
        serde_json::to_vec(&structured).unwrap(),
    )
    .await;
    // Binary mode, the workspace in the record key.
    let binary = [
        ("ce_specversion", "1.0"),
        ("ce_type", "lesson.completed"),
        ("ce_id", "ce-binary"),
        ("ce_source", "/academy/lessons"),
        ("ce_subject", "creator-accelerator"),
        ("ce_time", "2026-03-21T15:06:00.250Z"),
        ("content-type", "application/json"),
    ]
    .map(|(k, v)| (k, v.to_owned()))
    .to_vec();
    send(
        Some("ws_academyflow"),
        binary,
        serde_json::to_vec(&payload).unwrap(),
    )
    .await;

    let history = h
        .wait_for_history("ws_academyflow", "one Slack delivery per event", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2
        })
        .await;
    // CloudEvents carry no `resource`, so only the rule without a resource filter matches.
    for id in ["ce-structured", "ce-binary"] {
        let d: Vec<_> = history.iter().filter(|d| d.event_id == id).collect();
        assert_eq!(d.len(), 1, "{id}");
        assert_eq!(d[0].rule_id.as_deref(), Some("lesson-alert-to-slack"));
    }
    let slack = h.requests("slack");
    assert_eq!(slack.len(), 2);
    for post in slack {
        let text = post.body["text"].as_str().unwrap();
        assert!(
            text.contains("nina@academyflow.io") && text.contains("62%"),
            "{text}"
        );
    }
    assert!(h.dead_letters().await.is_empty(), "nothing dead-lettered");
    running.stop().await;
}

const LESSON_SCHEMA: &str = r#"{"type":"record","name":"LessonCompleted","namespace":"io.academy",
 "fields":[
  {"name":"attempt_id","type":"string"},
  {"name":"tenant","type":"string"},
  {"name":"email","type":"string"},
  {"name":"lesson_title","type":"string"},
  {"name":"course_id","type":"string"},
  {"name":"module_title","type":"string"},
  {"name":"completion_percentage","type":"int"},
  {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":8,"scale":2}},
  {"name":"completed_at","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;

/// A lesson record in Confluent wire format: magic byte 0, the schema id, the Avro datum.
fn confluent_lesson(schema: &apache_avro::Schema, id: u32, attempt: &str) -> Vec<u8> {
    use apache_avro::types::Value;
    let value = Value::Record(vec![
        ("attempt_id".into(), Value::String(attempt.into())),
        ("tenant".into(), Value::String("ws_academyflow".into())),
        ("email".into(), Value::String("nina@academyflow.io".into())),
        (
            "lesson_title".into(),
            Value::String("Customer Research Fundamentals".into()),
        ),
        (
            "course_id".into(),
            Value::String("course_creator-accelerator".into()),
        ),
        (
            "module_title".into(),
            Value::String("Growth Foundations".into()),
        ),
        ("completion_percentage".into(), Value::Int(62)),
        (
            "price".into(),
            Value::Decimal(apache_avro::Decimal::from(19900i32.to_be_bytes().to_vec())),
        ),
        (
            "completed_at".into(),
            Value::TimestampMillis(1_774_105_560_250),
        ),
    ]);
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend(apache_avro::to_avro_datum(schema, value).unwrap());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_records_are_read_with_the_registry_schema_and_mapped() {
    const TOPIC: &str = "academy.lessons";
    let mut h = Harness::new().await;
    h.mock.create_topic(TOPIC, 1, 1).unwrap();
    h.settings.ingest.schema_registry.url = format!("{}/registry", h.sandbox_url);
    h.settings.ingest.topics = vec![herald::settings::TopicMapping {
        topic: TOPIC.into(),
        event: "const:lesson.completed".into(),
        workspace: "field:tenant".into(),
        event_id: Some("attempt_id".into()),
        occurred_at: Some("completed_at".into()),
        resource: None,
        resource_id: Some("course_id".into()),
    }];
    let schema = apache_avro::Schema::parse_str(LESSON_SCHEMA).unwrap();
    let id = h
        .sandbox
        .registry()
        .register("academy.lessons-value", LESSON_SCHEMA)
        .unwrap();
    // The same record type with one more (defaulted) field: a second id, fetched later.
    let evolved_text = LESSON_SCHEMA.replace(
        r#"{"name":"attempt_id","type":"string"},"#,
        r#"{"name":"attempt_id","type":"string"},{"name":"source","type":"string","default":"web"},"#,
    );
    let evolved = apache_avro::Schema::parse_str(&evolved_text).unwrap();
    let evolved_id = h
        .sandbox
        .registry()
        .register("academy.lessons-value", &evolved_text)
        .unwrap();
    h.apply_fixtures().await;
    let running = h.start();

    let produce = |value: Vec<u8>| {
        let producer = h.producer.clone();
        async move {
            producer
                .send(
                    rdkafka::producer::FutureRecord::<(), _>::to(TOPIC).payload(&value),
                    std::time::Duration::from_secs(10),
                )
                .await
                .expect("produced");
        }
    };
    produce(confluent_lesson(&schema, id, "att_1")).await;
    // An id the registry does not know: dead-lettered, naming the id.
    produce(confluent_lesson(&schema, 4242, "att_unknown")).await;
    h.wait_for_dead_letters(1).await;
    // The registry fails three times: the record waits (input paused), then is delivered.
    h.sandbox.inject(
        serde_json::from_value(
            serde_json::json!({"path": "/registry/schemas", "count": 3, "status": 503}),
        )
        .unwrap(),
    );
    let mut evolved_record = confluent_lesson(&schema, evolved_id, "att_2");
    {
        // Re-encode with the evolved schema (the `source` field written).
        use apache_avro::types::Value;
        let mut datum = &evolved_record[5..];
        let Value::Record(mut fields) =
            apache_avro::from_avro_datum(&schema, &mut datum, None).unwrap()
        else {
            unreachable!()
        };
        fields.insert(1, ("source".into(), Value::String("mobile".into())));
        evolved_record.truncate(5);
        evolved_record.extend(apache_avro::to_avro_datum(&evolved, Value::Record(fields)).unwrap());
    }
    produce(evolved_record).await;

    let history = h
        .wait_for_history("ws_academyflow", "both lessons delivered", |r| {
            r.iter()
                .filter(|d| d.status == DeliveryStatus::Delivered)
                .count()
                == 2
        })
        .await;
    for id in ["att_1", "att_2"] {
        assert!(history.iter().any(|d| d.event_id == id), "{id}");
    }
    let slack = h.requests("slack");
    assert_eq!(slack.len(), 2);
    assert!(
        slack[0].body["text"]
            .as_str()
            .unwrap()
            .contains("Customer Research Fundamentals (62%)")
    );
    let letters = h.dead_letters().await;
    assert_eq!(letters.len(), 1, "only the unknown id is dead-lettered");
    let reason = &letters[0].headers["herald.dlq.reason"];
    assert!(reason.contains("4242"), "{reason}");
    assert!(
        h.requests("registry")
            .iter()
            .filter(|r| r.status == 503)
            .count()
            == 3,
        "the registry failed three times and the record waited"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_from_confluent_kafkas_avro_serializer_is_delivered() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/confluent");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let topic = manifest["topic"].as_str().unwrap().to_owned();
    let mut h = Harness::new().await;
    h.mock.create_topic(&topic, 1, 1).unwrap();
    // The simulator gives the schema the id the serializer got from a fresh one.
    let id = h
        .sandbox
        .registry()
        .register(
            manifest["subject"].as_str().unwrap(),
            manifest["schema"].as_str().unwrap(),
        )
        .unwrap();
    assert_eq!(Some(u64::from(id)), manifest["schema_id"].as_u64());
    h.settings.ingest.schema_registry.url = format!("{}/registry", h.sandbox_url);
    h.settings.ingest.topics = vec![herald::settings::TopicMapping {
        topic: topic.clone(),
        event: "const:lesson.completed".into(),
        workspace: "field:tenant".into(),
        event_id: Some("attempt_id".into()),
        occurred_at: Some("completed_at".into()),
        resource: None,
        resource_id: None,
    }];
    h.apply_fixtures().await;
    let running = h.start();
    let bytes = std::fs::read(dir.join(manifest["file"].as_str().unwrap())).unwrap();
    h.producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(&topic).payload(&bytes),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("produced");
    let history = h
        .wait_for_history("ws_academyflow", "the lesson delivered", |r| {
            r.iter().any(|d| d.status == DeliveryStatus::Delivered)
        })
        .await;
    assert_eq!(
        history[0].event_id,
        manifest["expect"]["event_id"].as_str().unwrap()
    );
    let slack = h.requests("slack");
    assert!(
        slack[0].body["text"]
            .as_str()
            .unwrap()
            .contains("nina@academyflow.io completed Customer Research Fundamentals (62%)")
    );
    assert!(h.dead_letters().await.is_empty());
    running.stop().await;
}
