//! The Avro form of Herald's records, exactly as the schemas in `schemas/` define them.
//!
//! The mapping is written out by hand rather than derived: free-form JSON (an event's payload, a
//! rule's templates) has no Avro type, so the schemas carry it as JSON text, while the JSON wire
//! format keeps it as nested JSON.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;
use chrono::{DateTime, Utc};

use super::{Attempt, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope};
use crate::model::{ConnectionSpec, RuleSpec, Secret, WorkspaceConfig};

const ENVELOPE_AVSC: &str = include_str!("../../../schemas/EventEnvelope.avsc");
const TASK_AVSC: &str = include_str!("../../../schemas/DeliveryTask.avsc");
const RECORD_AVSC: &str = include_str!("../../../schemas/DeliveryRecord.avsc");
const WORKSPACE_AVSC: &str = include_str!("../../../schemas/WorkspaceConfig.avsc");

// The schema files are compiled in; the tests in `tests/schemas.rs` keep them valid.
static SCHEMAS: LazyLock<[Schema; 4]> = LazyLock::new(|| {
    [
        Schema::parse_str(ENVELOPE_AVSC).expect("EventEnvelope.avsc parses"),
        Schema::parse_str(&inline_named_type(
            TASK_AVSC,
            "io.herald.EventEnvelope",
            ENVELOPE_AVSC,
        ))
        .expect("DeliveryTask.avsc parses"),
        Schema::parse_str(RECORD_AVSC).expect("DeliveryRecord.avsc parses"),
        Schema::parse_str(WORKSPACE_AVSC).expect("WorkspaceConfig.avsc parses"),
    ]
});

/// `schema` with every reference to the named type `name` replaced by its definition
/// `definition`, so that the result stands alone (apache-avro's writers need a schema without
/// unresolved references). Both texts come from `schemas/`.
pub fn inline_named_type(schema: &str, name: &str, definition: &str) -> String {
    fn replace(v: &mut serde_json::Value, name: &str, def: &serde_json::Value, done: &mut bool) {
        match v {
            serde_json::Value::String(s) if s == name && !*done => {
                *v = def.clone();
                *done = true;
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|i| replace(i, name, def, done))
            }
            serde_json::Value::Object(fields) => fields
                .values_mut()
                .for_each(|f| replace(f, name, def, done)),
            _ => {}
        }
    }
    let (Ok(mut schema_json), Ok(def)) = (
        serde_json::from_str::<serde_json::Value>(schema),
        serde_json::from_str::<serde_json::Value>(definition),
    ) else {
        return schema.to_owned();
    };
    let mut done = false;
    replace(&mut schema_json, name, &def, &mut done);
    schema_json.to_string()
}

/// A record with an Avro schema in `schemas/`.
pub trait AvroRecord: Sized {
    /// The record's schema.
    fn schema() -> &'static Schema;
    /// The record as an Avro value of [`AvroRecord::schema`].
    fn to_avro(&self) -> Value;
    /// Reads the record back from an Avro value of its schema.
    fn from_avro(value: Value) -> Result<Self, AvroError>;
}

/// A value that does not have the shape the schema promises.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` has the wrong type: {found}")]
    WrongType { field: &'static str, found: String },
    #[error("field `{field}` is not valid JSON: {source}")]
    Json {
        field: &'static str,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
}

/// Encodes `record` as an Avro datum (no header), validating it against the schema.
pub fn to_datum<T: AvroRecord>(record: &T) -> Result<Vec<u8>, AvroError> {
    Ok(apache_avro::to_avro_datum(T::schema(), record.to_avro())?)
}

/// Decodes an Avro datum written with `T`'s schema.
pub fn from_datum<T: AvroRecord>(mut bytes: &[u8]) -> Result<T, AvroError> {
    T::from_avro(apache_avro::from_avro_datum(T::schema(), &mut bytes, None)?)
}

/// Encodes `record` in Avro single-object encoding (`C3 01`, schema fingerprint, datum).
pub fn to_single_object<T: AvroRecord>(record: &T) -> Result<Vec<u8>, AvroError> {
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity(T::schema(), 1024)?;
    let mut out = Vec::new();
    writer.write_value(record.to_avro(), &mut out)?;
    Ok(out)
}

/// Decodes Avro single-object encoding written with `T`'s schema.
pub fn from_single_object<T: AvroRecord>(mut bytes: &[u8]) -> Result<T, AvroError> {
    let reader = apache_avro::GenericSingleObjectReader::new(T::schema().clone())?;
    T::from_avro(reader.read_value(&mut bytes)?)
}

/// The two magic bytes that start Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

// ---- building values --------------------------------------------------------------------------

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> Value) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(1, Box::new(f(v))),
    }
}

fn ts(t: DateTime<Utc>) -> Value {
    Value::TimestampMillis(t.timestamp_millis())
}

fn json_text(v: &impl serde::Serialize) -> Value {
    // Serialising a serde_json value or map to text cannot fail.
    Value::String(serde_json::to_string(v).expect("JSON values serialise"))
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

// ---- reading values ---------------------------------------------------------------------------

struct Fields(HashMap<String, Value>);

impl Fields {
    fn of(value: Value, field: &'static str) -> Result<Self, AvroError> {
        match value {
            Value::Record(fields) => Ok(Self(fields.into_iter().collect())),
            other => Err(wrong(field, &other)),
        }
    }

    fn take(&mut self, field: &'static str) -> Result<Value, AvroError> {
        match self.0.remove(field) {
            Some(Value::Union(_, inner)) => Ok(*inner),
            Some(v) => Ok(v),
            None => Err(AvroError::Missing(field)),
        }
    }

    fn string(&mut self, field: &'static str) -> Result<String, AvroError> {
        match self.take(field)? {
            Value::String(s) | Value::Enum(_, s) => Ok(s),
            other => Err(wrong(field, &other)),
        }
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, AvroError> {
        match self.take(field)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            other => Err(wrong(field, &other)),
        }
    }

    fn long(&mut self, field: &'static str) -> Result<i64, AvroError> {
        match self.take(field)? {
            Value::Long(v) | Value::TimestampMillis(v) => Ok(v),
            Value::Int(v) => Ok(v.into()),
            other => Err(wrong(field, &other)),
        }
    }

    fn opt_long(&mut self, field: &'static str) -> Result<Option<i64>, AvroError> {
        match self.take(field)? {
            Value::Null => Ok(None),
            Value::Long(v) | Value::TimestampMillis(v) => Ok(Some(v)),
            Value::Int(v) => Ok(Some(v.into())),
            other => Err(wrong(field, &other)),
        }
    }

    fn time(&mut self, field: &'static str) -> Result<DateTime<Utc>, AvroError> {
        let ms = self.long(field)?;
        millis(field, ms)
    }

    fn opt_time(&mut self, field: &'static str) -> Result<Option<DateTime<Utc>>, AvroError> {
        self.opt_long(field)?
            .map(|ms| millis(field, ms))
            .transpose()
    }

    fn json<T: serde::de::DeserializeOwned>(
        &mut self,
        field: &'static str,
    ) -> Result<T, AvroError> {
        let text = self.string(field)?;
        serde_json::from_str(&text).map_err(|source| AvroError::Json { field, source })
    }

    fn array(&mut self, field: &'static str) -> Result<Vec<Value>, AvroError> {
        match self.take(field)? {
            Value::Array(items) => Ok(items),
            other => Err(wrong(field, &other)),
        }
    }
}

fn wrong(field: &'static str, found: &Value) -> AvroError {
    AvroError::WrongType {
        field,
        found: format!("{found:?}"),
    }
}

fn millis(field: &'static str, ms: i64) -> Result<DateTime<Utc>, AvroError> {
    DateTime::from_timestamp_millis(ms).ok_or(AvroError::WrongType {
        field,
        found: format!("timestamp {ms} out of range"),
    })
}

// ---- the records ------------------------------------------------------------------------------

impl AvroRecord for EventEnvelope {
    fn schema() -> &'static Schema {
        &SCHEMAS[0]
    }

    fn to_avro(&self) -> Value {
        record(vec![
            ("event_id", s(&self.event_id)),
            ("workspace_id", s(&self.workspace_id)),
            ("event", s(&self.event)),
            ("resource", opt(self.resource.as_deref(), s)),
            ("resource_id", opt(self.resource_id.as_deref(), s)),
            ("payload", json_text(&self.payload)),
            ("occurred_at", opt(self.occurred_at, ts)),
            ("received_at", opt(self.received_at, ts)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, AvroError> {
        let mut f = Fields::of(value, "EventEnvelope")?;
        Ok(Self {
            event_id: f.string("event_id")?,
            workspace_id: f.string("workspace_id")?,
            event: f.string("event")?,
            resource: f.opt_string("resource")?,
            resource_id: f.opt_string("resource_id")?,
            payload: f.json("payload")?,
            occurred_at: f.opt_time("occurred_at")?,
            received_at: f.opt_time("received_at")?,
        })
    }
}

impl AvroRecord for DeliveryTask {
    fn schema() -> &'static Schema {
        &SCHEMAS[1]
    }

    fn to_avro(&self) -> Value {
        record(vec![
            ("delivery_id", s(&self.delivery_id)),
            ("envelope", self.envelope.to_avro()),
            ("rule_id", s(&self.rule_id)),
            ("connection_id", s(&self.connection_id)),
            ("request", json_text(&self.request)),
            ("attempt", Value::Int(self.attempt as i32)),
            ("retries", Value::Int(self.retries as i32)),
            ("tier", Value::Int(self.tier as i32)),
            ("due_at", ts(self.due_at)),
            ("first_attempt_at", opt(self.first_attempt_at, ts)),
            ("last_error", opt(self.last_error.as_deref(), s)),
            ("partition", opt(self.partition, Value::Int)),
            ("attempts", attempts_to_avro(&self.attempts)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, AvroError> {
        let mut f = Fields::of(value, "DeliveryTask")?;
        Ok(Self {
            delivery_id: f.string("delivery_id")?,
            envelope: EventEnvelope::from_avro(f.take("envelope")?)?,
            rule_id: f.string("rule_id")?,
            connection_id: f.string("connection_id")?,
            request: f.json("request")?,
            attempt: non_negative("attempt", f.long("attempt")?)?,
            retries: non_negative("retries", f.long("retries")?)?,
            tier: non_negative("tier", f.long("tier")?)?,
            due_at: f.time("due_at")?,
            first_attempt_at: f.opt_time("first_attempt_at")?,
            last_error: f.opt_string("last_error")?,
            partition: f.opt_long("partition")?.map(|p| p as i32),
            attempts: attempts_from_avro(&mut f)?,
        })
    }
}

fn attempts_to_avro(attempts: &[Attempt]) -> Value {
    Value::Array(
        attempts
            .iter()
            .map(|a| {
                record(vec![
                    ("at", ts(a.at)),
                    ("outcome", s(&a.outcome)),
                    ("status_code", opt(a.status_code, |c| Value::Int(c.into()))),
                    ("error", opt(a.error.as_deref(), s)),
                    ("latency_ms", Value::Long(a.latency_ms as i64)),
                ])
            })
            .collect(),
    )
}

fn attempts_from_avro(f: &mut Fields) -> Result<Vec<Attempt>, AvroError> {
    f.array("attempts")?
        .into_iter()
        .map(|v| {
            let mut a = Fields::of(v, "attempts")?;
            Ok(Attempt {
                at: a.time("at")?,
                outcome: a.string("outcome")?,
                status_code: a
                    .opt_long("status_code")?
                    .and_then(|c| u16::try_from(c).ok()),
                error: a.opt_string("error")?,
                latency_ms: a.long("latency_ms")?.max(0) as u64,
            })
        })
        .collect()
}

fn non_negative(field: &'static str, v: i64) -> Result<u32, AvroError> {
    u32::try_from(v).map_err(|_| AvroError::WrongType {
        field,
        found: format!("{v} is negative"),
    })
}

impl AvroRecord for DeliveryRecord {
    fn schema() -> &'static Schema {
        &SCHEMAS[2]
    }

    fn to_avro(&self) -> Value {
        let status = DeliveryStatus::ALL
            .iter()
            .position(|s| *s == self.status)
            .unwrap_or(0);
        record(vec![
            ("delivery_id", s(&self.delivery_id)),
            ("workspace_id", s(&self.workspace_id)),
            ("event_id", s(&self.event_id)),
            ("event", s(&self.event)),
            ("rule_id", opt(self.rule_id.as_deref(), s)),
            ("connection_id", opt(self.connection_id.as_deref(), s)),
            ("destination", opt(self.destination.as_deref(), s)),
            ("action", opt(self.action.as_deref(), s)),
            (
                "status",
                Value::Enum(status as u32, self.status.as_str().to_owned()),
            ),
            ("reason", opt(self.reason.as_deref(), s)),
            ("attempts", attempts_to_avro(&self.attempts)),
            (
                "skipped_count",
                opt(self.skipped_count, |c| Value::Long(c as i64)),
            ),
            ("next_attempt_at", opt(self.next_attempt_at, ts)),
            ("created_at", ts(self.created_at)),
            ("updated_at", ts(self.updated_at)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, AvroError> {
        let mut f = Fields::of(value, "DeliveryRecord")?;
        let status_name = f.string("status")?;
        let status = DeliveryStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == status_name)
            .ok_or(AvroError::WrongType {
                field: "status",
                found: status_name,
            })?;
        let attempts = attempts_from_avro(&mut f)?;
        Ok(Self {
            delivery_id: f.string("delivery_id")?,
            workspace_id: f.string("workspace_id")?,
            event_id: f.string("event_id")?,
            event: f.string("event")?,
            rule_id: f.opt_string("rule_id")?,
            connection_id: f.opt_string("connection_id")?,
            destination: f.opt_string("destination")?,
            action: f.opt_string("action")?,
            status,
            reason: f.opt_string("reason")?,
            attempts,
            skipped_count: f.opt_long("skipped_count")?.map(|c| c.max(0) as u64),
            next_attempt_at: f.opt_time("next_attempt_at")?,
            created_at: f.time("created_at")?,
            updated_at: f.time("updated_at")?,
        })
    }
}

impl AvroRecord for WorkspaceConfig {
    fn schema() -> &'static Schema {
        &SCHEMAS[3]
    }

    fn to_avro(&self) -> Value {
        let connections = self
            .connections
            .iter()
            .map(|c| {
                let credentials = c
                    .credentials
                    .iter()
                    .map(|(k, v)| (k.clone(), s(v.expose())))
                    .collect();
                record(vec![
                    ("id", s(&c.id)),
                    ("type", s(&c.kind)),
                    ("credentials", Value::Map(credentials)),
                    ("settings", json_text(&c.settings)),
                ])
            })
            .collect();
        let rules = self
            .rules
            .iter()
            .map(|r| {
                record(vec![
                    ("id", s(&r.id)),
                    ("event", s(&r.event)),
                    ("resource", opt(r.resource.as_deref(), s)),
                    ("resource_id", opt(r.resource_id.as_deref(), s)),
                    ("when", opt(r.when.as_deref(), s)),
                    ("connection", s(&r.connection)),
                    ("action", s(&r.action)),
                    ("with", json_text(&r.with)),
                ])
            })
            .collect();
        record(vec![
            ("workspace", s(&self.workspace)),
            (
                "publishable_keys",
                Value::Array(self.publishable_keys.iter().map(|k| s(k)).collect()),
            ),
            ("connections", Value::Array(connections)),
            ("rules", Value::Array(rules)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, AvroError> {
        let mut f = Fields::of(value, "WorkspaceConfig")?;
        let publishable_keys = f
            .array("publishable_keys")?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                other => Err(wrong("publishable_keys", &other)),
            })
            .collect::<Result<_, _>>()?;
        let connections = f
            .array("connections")?
            .into_iter()
            .map(|v| {
                let mut c = Fields::of(v, "connections")?;
                let credentials = match c.take("credentials")? {
                    Value::Map(m) => m
                        .into_iter()
                        .map(|(k, v)| match v {
                            Value::String(s) => Ok((k, Secret::new(s))),
                            other => Err(wrong("credentials", &other)),
                        })
                        .collect::<Result<BTreeMap<_, _>, _>>()?,
                    other => return Err(wrong("credentials", &other)),
                };
                Ok(ConnectionSpec {
                    id: c.string("id")?,
                    kind: c.string("type")?,
                    credentials,
                    settings: c.json("settings")?,
                })
            })
            .collect::<Result<_, AvroError>>()?;
        let rules = f
            .array("rules")?
            .into_iter()
            .map(|v| {
                let mut r = Fields::of(v, "rules")?;
                Ok(RuleSpec {
                    id: r.string("id")?,
                    event: r.string("event")?,
                    resource: r.opt_string("resource")?,
                    resource_id: r.opt_string("resource_id")?,
                    when: r.opt_string("when")?,
                    connection: r.string("connection")?,
                    action: r.string("action")?,
                    with: r.json("with")?,
                })
            })
            .collect::<Result<_, AvroError>>()?;
        Ok(Self {
            workspace: f.string("workspace")?,
            publishable_keys,
            connections,
            rules,
        })
    }
}
