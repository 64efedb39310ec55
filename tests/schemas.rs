//! The Rust records round-trip through apache-avro with exactly the schemas in `schemas/`:
//! each record is written with the schema read from disk and read back into an equal value.
//! Each schema also reads what its previous version (kept in `schemas/previous/`) wrote, so
//! records already in the topics stay readable after an upgrade.

use std::collections::BTreeMap;

use apache_avro::Schema;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::types::Value;
use chrono::{TimeZone, Utc};
use herald::model::WorkspaceConfig;
use herald::model::records::avro::{self, AvroRecord};
use herald::model::records::{
    Attempt, DeadDelivery, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope, Truncated,
};

const SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas");

/// The schema in `schemas/{path}.avsc`.
fn on_disk(path: &str) -> Schema {
    let read = |name: &str| std::fs::read_to_string(format!("{SCHEMAS}/{name}.avsc")).unwrap();
    // DeadDelivery names the DeliveryRecord and DeliveryTask records, and DeliveryTask's
    // `envelope` field the EventEnvelope record, each defined in its own file; the other
    // schemas stand alone and are left as they are.
    let mut text = read(path);
    for name in ["DeliveryRecord", "DeliveryTask", "EventEnvelope"] {
        text = avro::inline_named_type(&text, &format!("io.herald.{name}"), &read(name));
    }
    Schema::parse_str(&text).unwrap()
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

fn task() -> DeliveryTask {
    DeliveryTask {
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
        redriven_at: Some(Utc.timestamp_millis_opt(1_774_102_689_000).unwrap()),
        offset: Some(41),
    }
}

#[test]
fn delivery_task_round_trips() {
    round_trip("DeliveryTask", &task());
}

fn delivery_record(status: DeliveryStatus) -> DeliveryRecord {
    let at = Utc.timestamp_millis_opt(1_774_102_690_000).unwrap();
    DeliveryRecord {
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
    }
}

#[test]
fn delivery_record_round_trips_for_every_status() {
    for status in DeliveryStatus::ALL {
        round_trip("DeliveryRecord", &delivery_record(status));
    }
}

#[test]
fn dead_delivery_round_trips_with_its_task_or_truncated() {
    round_trip(
        "DeadDelivery",
        &DeadDelivery {
            record: delivery_record(DeliveryStatus::Dead),
            task: Some(task()),
            truncated: None,
        },
    );
    round_trip(
        "DeadDelivery",
        &DeadDelivery {
            record: delivery_record(DeliveryStatus::Failed),
            task: None,
            truncated: Some(Truncated {
                truncated: true,
                original_bytes: 3_000_000,
                reason: "the dead letter was 3000000 bytes".into(),
            }),
        },
    );
}

#[test]
fn the_standalone_schema_texts_parse_to_the_records_schemas() {
    fn check<T: AvroRecord>(name: &str) {
        let parsed = Schema::parse_str(T::schema_text()).unwrap();
        assert_eq!(
            parsed.canonical_form(),
            T::schema().canonical_form(),
            "{name}"
        );
        assert_eq!(
            parsed.canonical_form(),
            on_disk(name).canonical_form(),
            "{name}"
        );
    }
    check::<DeliveryRecord>("DeliveryRecord");
    check::<DeliveryTask>("DeliveryTask");
    check::<DeadDelivery>("DeadDelivery");
    check::<EventEnvelope>("EventEnvelope");
    check::<WorkspaceConfig>("WorkspaceConfig");
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

/// Schemas that have had one version only, so there is no earlier writer to read.
const FIRST_VERSIONS: &[&str] = &[
    "DeadDelivery",
    "EventEnvelope",
    "DeliveryRecord",
    "WorkspaceConfig",
];

/// Checks that schemas/{name}.avsc reads `record` as the previous version of the schema wrote
/// it. `record` holds what that version could hold: fields added since are at their defaults.
fn reads_what_the_previous_version_wrote<T>(name: &str, record: &T)
where
    T: AvroRecord + PartialEq + std::fmt::Debug,
{
    let has_previous = std::path::Path::new(&format!("{SCHEMAS}/previous/{name}.avsc")).exists();
    assert_ne!(
        has_previous,
        FIRST_VERSIONS.contains(&name),
        "{name}: either its previous version is in schemas/previous/ or it is a first version"
    );
    if !has_previous {
        return;
    }
    let (previous, current) = (on_disk(&format!("previous/{name}")), on_disk(name));
    SchemaCompatibility::can_read(&previous, &current)
        .unwrap_or_else(|e| panic!("{name} cannot read its previous version: {e}"));
    // The same value in the previous schema's shape is what the previous version wrote.
    let written = record.to_avro().unwrap().resolve(&previous).unwrap();
    let bytes = apache_avro::to_avro_datum(&previous, written).unwrap();
    let read =
        apache_avro::from_avro_datum(&previous, &mut bytes.as_slice(), Some(&current)).unwrap();
    assert_eq!(&T::from_avro(&read).unwrap(), record, "{name}");
}

#[test]
fn every_schema_reads_what_its_previous_version_wrote() {
    reads_what_the_previous_version_wrote("EventEnvelope", &envelope());
    // The previous version had no `partition`, `offset` nor `redriven_at`; its tasks read with
    // none.
    let task = DeliveryTask {
        partition: None,
        offset: None,
        redriven_at: None,
        ..task()
    };
    reads_what_the_previous_version_wrote("DeliveryTask", &task);
    reads_what_the_previous_version_wrote("DeliveryRecord", &delivery_record(DeliveryStatus::Dead));
    let dead = DeadDelivery {
        record: delivery_record(DeliveryStatus::Dead),
        task: Some(task.clone()),
        truncated: None,
    };
    reads_what_the_previous_version_wrote("DeadDelivery", &dead);
    let config = WorkspaceConfig::parse(include_str!("../examples/academy.yaml")).unwrap();
    reads_what_the_previous_version_wrote("WorkspaceConfig", &config);
}

#[test]
fn every_schema_is_checked_against_its_history() {
    let names = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".avsc").map(str::to_owned))
            .collect();
        names.sort();
        names
    };
    let checked = [
        "DeadDelivery",
        "DeliveryRecord",
        "DeliveryTask",
        "EventEnvelope",
        "WorkspaceConfig",
    ];
    assert_eq!(
        names(SCHEMAS),
        checked,
        "a schema the test above does not check"
    );
    for previous in names(&format!("{SCHEMAS}/previous")) {
        assert!(
            checked.contains(&previous.as_str()),
            "schemas/previous/{previous}.avsc has no current version"
        );
    }
}

#[test]
fn a_field_added_without_a_default_cannot_read_older_data() {
    let record = |fields: &str| {
        Schema::parse_str(&format!(
            r#"{{"type": "record", "name": "R", "fields": [{fields}]}}"#
        ))
        .unwrap()
    };
    let older = record(r#"{"name": "a", "type": "string"}"#);
    let without_default =
        record(r#"{"name": "a", "type": "string"}, {"name": "b", "type": "int"}"#);
    let with_default =
        record(r#"{"name": "a", "type": "string"}, {"name": "b", "type": "int", "default": 7}"#);
    let written = Value::Record(vec![("a".into(), Value::String("x".into()))]);
    let bytes = apache_avro::to_avro_datum(&older, written).unwrap();
    let read =
        |reader: &Schema| apache_avro::from_avro_datum(&older, &mut bytes.as_slice(), Some(reader));

    assert!(SchemaCompatibility::can_read(&older, &without_default).is_err());
    let err = read(&without_default).unwrap_err().to_string();
    assert!(err.contains(r#""b""#), "{err}");

    assert!(SchemaCompatibility::can_read(&older, &with_default).is_ok());
    let expected = Value::Record(vec![
        ("a".into(), Value::String("x".into())),
        ("b".into(), Value::Int(7)),
    ]);
    assert_eq!(read(&with_default).unwrap(), expected);
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

/// The Avro schemas and the JSON Schemas (`schemas/json/`) of the records Herald writes to
/// `herald.deliveries` and `herald.dlq` name the same fields, nested records included, so that
/// either format carries the whole record.
#[test]
fn the_avro_and_json_schemas_of_each_record_name_the_same_fields() {
    use std::collections::BTreeSet;

    use serde_json::Value as Json;

    fn json_schema(name: &str) -> Json {
        let path = format!("{SCHEMAS}/json/{name}.schema.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
    /// The field names of the Avro record at `path` (field names; `[]` steps into array items,
    /// `?` into a union's record branch).
    fn avro_fields(text: &str, path: &[&str]) -> BTreeSet<String> {
        let mut at: Json = serde_json::from_str(text).unwrap();
        for step in path {
            at = match *step {
                "[]" => at["items"].clone(),
                "?" => at
                    .as_array()
                    .and_then(|branches| branches.iter().find(|b| b.is_object()))
                    .cloned()
                    .unwrap(),
                field => at["fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["name"] == field)
                    .unwrap_or_else(|| panic!("no field {field}"))["type"]
                    .clone(),
            };
        }
        at["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect()
    }
    fn json_fields(schema: &Json, pointer: &str) -> BTreeSet<String> {
        schema
            .pointer(pointer)
            .unwrap_or_else(|| panic!("no {pointer}"))["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }
    let record = DeliveryRecord::schema_text();
    let task = DeliveryTask::schema_text();
    let dead = DeadDelivery::schema_text();
    let (record_json, task_json, dead_json) = (
        json_schema("DeliveryRecord"),
        json_schema("DeliveryTask"),
        json_schema("DeadDelivery"),
    );
    let pairs = [
        (
            "DeliveryRecord",
            avro_fields(record, &[]),
            json_fields(&record_json, ""),
        ),
        (
            "DeliveryRecord.attempts[]",
            avro_fields(record, &["attempts", "[]"]),
            json_fields(&record_json, "/$defs/Attempt"),
        ),
        (
            "DeliveryTask",
            avro_fields(task, &[]),
            json_fields(&task_json, ""),
        ),
        (
            "DeliveryTask.envelope",
            avro_fields(task, &["envelope"]),
            json_fields(&task_json, "/$defs/EventEnvelope"),
        ),
        (
            "DeliveryTask.attempts[]",
            avro_fields(task, &["attempts", "[]"]),
            json_fields(&record_json, "/$defs/Attempt"),
        ),
        (
            "DeadDelivery",
            avro_fields(dead, &[]),
            json_fields(&dead_json, ""),
        ),
        (
            "DeadDelivery.truncated",
            avro_fields(dead, &["truncated", "?"]),
            json_fields(&dead_json, "/properties/truncated"),
        ),
    ];
    for (what, avro, json) in pairs {
        assert_eq!(avro, json, "{what}: Avro fields, JSON Schema properties");
    }
}
