//! The Rust records round-trip through apache-avro with exactly the schemas in `schemas/`:
//! each record is written with the schema read from disk and read back into an equal value.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::types::Value;
use chrono::{TimeZone, Utc};
use herald::model::WorkspaceConfig;
use herald::model::records::avro::{self, AvroRecord};
use herald::model::records::{
    Attempt, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope,
};

fn on_disk(name: &str) -> Schema {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");
    let envelope = std::fs::read_to_string(format!("{dir}/EventEnvelope.avsc")).unwrap();
    let text = std::fs::read_to_string(format!("{dir}/{name}.avsc")).unwrap();
    if name == "DeliveryTask" {
        // Its `envelope` field names the EventEnvelope record defined in EventEnvelope.avsc.
        Schema::parse_str(&avro::inline_named_type(
            &text,
            "io.herald.EventEnvelope",
            &envelope,
        ))
        .unwrap()
    } else {
        Schema::parse_str(&text).unwrap()
    }
}

/// Writes with the record's own schema, checks it equals the file's, reads back with the file's.
fn round_trip<T: AvroRecord + PartialEq + std::fmt::Debug>(name: &str, record: &T) {
    let schema = on_disk(name);
    assert_eq!(
        T::schema().canonical_form(),
        schema.canonical_form(),
        "{name} schema differs from schemas/{name}.avsc"
    );
    let value = record.to_avro().unwrap();
    assert!(
        value.validate(&schema),
        "{name} value does not validate against schemas/{name}.avsc"
    );
    let bytes = apache_avro::to_avro_datum(&schema, value).unwrap();
    let back = apache_avro::from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
    assert_eq!(&T::from_avro(&back).unwrap(), record, "{name}");
    assert_eq!(
        &avro::from_datum::<T>(&avro::to_datum(record).unwrap()).unwrap(),
        record
    );
    assert_eq!(
        &avro::from_single_object::<T>(&avro::to_single_object(record).unwrap()).unwrap(),
        record
    );
}

fn envelope() -> EventEnvelope {
    EventEnvelope {
        event_id: "evt_1".into(),
        workspace_id: "ws_academyflow".into(),
        event: "lesson.completed".into(),
        resource: Some("course".into()),
        resource_id: None,
        payload: serde_json::json!({"email": "nina@academyflow.io", "completion_percentage": 62, "nested": {"a": [1, 2]}})
            .as_object()
            .unwrap()
            .clone(),
        occurred_at: Some(Utc.with_ymd_and_hms(2026, 3, 21, 14, 18, 0).unwrap()),
        received_at: Some(Utc.timestamp_millis_opt(1_774_102_680_123).unwrap()),
    }
}

#[test]
fn event_envelope_round_trips() {
    round_trip("EventEnvelope", &envelope());
}

#[test]
fn delivery_task_round_trips() {
    round_trip(
        "DeliveryTask",
        &DeliveryTask {
            delivery_id: "dl_1".into(),
            envelope: envelope(),
            rule_id: "lesson-alert-to-slack".into(),
            connection_id: "instructor-slack".into(),
            request: serde_json::json!({"text": "hi", "blocks": [{"type": "divider"}]}),
            attempt: 2,
            retries: 1,
            tier: 1,
            due_at: Utc.timestamp_millis_opt(1_774_102_690_000).unwrap(),
            first_attempt_at: Some(Utc.timestamp_millis_opt(1_774_102_685_000).unwrap()),
            last_error: Some("HTTP 503".into()),
            attempts: vec![Attempt {
                at: Utc.timestamp_millis_opt(1_774_102_685_000).unwrap(),
                outcome: "retry".into(),
                status_code: Some(503),
                error: Some("HTTP 503".into()),
                latency_ms: 40,
            }],
            partition: Some(2),
        },
    );
}

#[test]
fn delivery_record_round_trips_for_every_status() {
    for status in DeliveryStatus::ALL {
        let at = Utc.timestamp_millis_opt(1_774_102_690_000).unwrap();
        round_trip(
            "DeliveryRecord",
            &DeliveryRecord {
                delivery_id: "dl_1".into(),
                workspace_id: "ws".into(),
                event_id: "evt_1".into(),
                event: "lesson.completed".into(),
                rule_id: Some("r".into()),
                connection_id: Some("c".into()),
                destination: Some("slack".into()),
                action: Some("post_message".into()),
                status,
                reason: (status != DeliveryStatus::Delivered)
                    .then(|| "slack error: channel_not_found".into()),
                attempts: vec![
                    Attempt {
                        at,
                        outcome: "retry".into(),
                        status_code: Some(503),
                        error: Some("HTTP 503".into()),
                        latency_ms: 12,
                    },
                    Attempt {
                        at,
                        outcome: "delivered".into(),
                        status_code: None,
                        error: None,
                        latency_ms: 0,
                    },
                ],
                skipped_count: (status == DeliveryStatus::Skipped).then_some(7),
                next_attempt_at: (status == DeliveryStatus::Retrying).then_some(at),
                created_at: at,
                updated_at: at,
            },
        );
    }
}

#[test]
fn workspace_config_round_trips_for_the_examples() {
    for text in [
        include_str!("../examples/academy.yaml"),
        include_str!("../examples/onboarding.yaml"),
    ] {
        let config = WorkspaceConfig::parse(text).unwrap();
        assert!(!config.rules.is_empty());
        round_trip("WorkspaceConfig", &config);
    }
    let mut config = WorkspaceConfig::parse(include_str!("../examples/academy.yaml")).unwrap();
    config.publishable_keys = vec!["pk_live_1".into()];
    config.connections[0].credentials =
        BTreeMap::from([("token".into(), herald::model::Secret::new("xoxb-1"))]);
    round_trip("WorkspaceConfig", &config);
}

#[test]
fn a_payload_that_is_not_a_json_object_is_refused_naming_the_field() {
    let Value::Record(mut fields) = envelope().to_avro().unwrap() else {
        panic!("a record is an Avro record");
    };
    for (name, value) in &mut fields {
        if name == "payload" {
            *value = Value::String("[1, 2]".into());
        }
    }
    let mut writer =
        apache_avro::GenericSingleObjectWriter::new_with_capacity(EventEnvelope::schema(), 256)
            .unwrap();
    let mut bytes = Vec::new();
    writer
        .write_value(Value::Record(fields), &mut bytes)
        .unwrap();
    let err = avro::from_single_object::<EventEnvelope>(&bytes).unwrap_err();
    assert!(err.to_string().contains("`payload`"), "{err}");
}
