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
