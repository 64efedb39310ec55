//! The Avro form of Herald's records, exactly as the schemas in `schemas/` define them.
//!
//! apache-avro's serde support does the encoding. Each record has a serde shape here (a remote
//! definition of the same fields) that differs from its JSON wire form only where Avro has no
//! such type: free-form JSON (an event's payload, a rule's templates) is carried as JSON text,
//! and times as `timestamp-millis` longs rather than RFC 3339 strings.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::types::Value;
use chrono::serde::{ts_milliseconds, ts_milliseconds_option};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::fingerprint;
use super::{
    Attempt, DeadDelivery, DeliveryRecord, DeliveryStatus, DeliveryTask, EventEnvelope, Truncated,
};
use crate::model::{ConnectionSpec, RuleSpec, Secret, WorkspaceConfig};

/// A record with an Avro schema in `schemas/`.
pub trait AvroRecord: AvroShape {
    /// The record's schema.
    fn schema() -> &'static Schema;

    /// The schema's text as it stands alone (every named type it uses defined in place), with
    /// its docs and defaults: what Herald registers in a schema registry.
    fn schema_text() -> &'static str;

    /// The record as an Avro value of [`AvroRecord::schema`].
    fn to_avro(&self) -> Result<Value, AvroError> {
        Ok(apache_avro::to_value(Shaped(self))?.resolve(Self::schema())?)
    }

    /// Reads the record back from an Avro value of its schema.
    fn from_avro(value: &Value) -> Result<Self, AvroError> {
        apache_avro::from_value::<Tracked<Self>>(value)?.0
    }
}

/// A type whose serde shape is the one its Avro schema describes.
pub trait AvroShape: Sized {
    /// Serializes the value in its Avro shape.
    fn serialize_avro<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Deserializes the value from its Avro shape.
    fn deserialize_avro<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// A value that does not have the shape the schema promises.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// A field whose value the record cannot take, with its path (`attempts[0].at`).
    #[error("field `{path}`: {message}")]
    Field { path: String, message: String },
    /// Single-object bytes whose writer schema is not one Herald knows.
    #[error("unknown writer schema: fingerprint {found}, expected {expected}")]
    UnknownFingerprint { found: String, expected: String },
    /// Bytes without the single-object header (`C3 01` and an 8-byte fingerprint).
    #[error("no single-object header (C3 01 and an 8-byte schema fingerprint)")]
    NotSingleObject,
    /// Bytes or a value that do not fit the schema.
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
}

/// Encodes `record` as an Avro datum (no header), validating it against the schema.
pub fn to_datum<T: AvroRecord>(record: &T) -> Result<Vec<u8>, AvroError> {
    Ok(apache_avro::to_avro_datum(T::schema(), record.to_avro()?)?)
}

/// Decodes an Avro datum written with `T`'s schema.
pub fn from_datum<T: AvroRecord>(mut bytes: &[u8]) -> Result<T, AvroError> {
    let value = apache_avro::from_avro_datum(T::schema(), &mut bytes, None)?;
    T::from_avro(&value)
}

/// Encodes `record` in Avro single-object encoding (`C3 01`, the schema's fingerprint as the
/// specification and the Java implementation compute it, datum).
pub fn to_single_object<T: AvroRecord>(record: &T) -> Result<Vec<u8>, AvroError> {
    let header = SpecHeader(fingerprint::of(T::schema()));
    let mut writer = apache_avro::GenericSingleObjectWriter::new_with_capacity_and_header_builder(
        T::schema(),
        1024,
        header,
    )?;
    let mut out = Vec::new();
    writer.write_value(record.to_avro()?, &mut out)?;
    Ok(out)
}

/// Decodes Avro single-object encoding written with `T`'s schema, whether its header carries
/// the specification's fingerprint or the one earlier Herald versions wrote
/// ([`fingerprint::legacy`]).
pub fn from_single_object<T: AvroRecord>(bytes: &[u8]) -> Result<T, AvroError> {
    let (found, mut datum) = split_single_object(bytes)?;
    let schema = T::schema();
    if found != fingerprint::of(schema) && found != fingerprint::legacy(schema) {
        return Err(AvroError::UnknownFingerprint {
            found: hex(&found),
            expected: hex(&fingerprint::of(schema)),
        });
    }
    let value = apache_avro::from_avro_datum(schema, &mut datum, None)?;
    T::from_avro(&value)
}

/// Splits single-object encoding into the writer schema's fingerprint and the datum.
pub fn split_single_object(bytes: &[u8]) -> Result<([u8; 8], &[u8]), AvroError> {
    match bytes {
        [0xC3, 0x01, rest @ ..] if rest.len() >= 8 => {
            let (fp, datum) = rest.split_at(8);
            // `split_at(8)` on a slice of at least 8 bytes: the array conversion cannot fail.
            Ok((fp.try_into().expect("8 bytes"), datum))
        }
        _ => Err(AvroError::NotSingleObject),
    }
}

/// A fingerprint as the 16 hex digits of its bytes in header order.
pub fn hex(fingerprint: &[u8; 8]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// The single-object header with a given fingerprint.
struct SpecHeader([u8; 8]);

impl apache_avro::headers::HeaderBuilder for SpecHeader {
    fn build_header(&self) -> Vec<u8> {
        [&SINGLE_OBJECT_MAGIC[..], &self.0].concat()
    }
}

/// The two magic bytes that start Avro single-object encoding.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];

/// `schema` with the first reference to the named type `name` replaced by its definition, so
/// that the result stands alone: apache-avro's writers need a schema without unresolved
/// references, and later references name the type defined there. Both texts come from `schemas/`.
pub fn inline_named_type(schema: &str, name: &str, definition: &str) -> String {
    schema.replacen(&format!("\"{name}\""), definition, 1)
}

const ENVELOPE_AVSC: &str = include_str!("../../../schemas/EventEnvelope.avsc");

const RECORD_AVSC: &str = include_str!("../../../schemas/DeliveryRecord.avsc");

/// DeliveryTask.avsc with the EventEnvelope it names defined in place.
static TASK_TEXT: LazyLock<String> = LazyLock::new(|| {
    let task = include_str!("../../../schemas/DeliveryTask.avsc");
    inline_named_type(task, "io.herald.EventEnvelope", ENVELOPE_AVSC)
});
/// DeadDelivery.avsc with the DeliveryRecord and DeliveryTask it names defined in place.
static DEAD_TEXT: LazyLock<String> = LazyLock::new(|| {
    let dead = include_str!("../../../schemas/DeadDelivery.avsc");
    let dead = inline_named_type(dead, "io.herald.DeliveryRecord", RECORD_AVSC);
    inline_named_type(&dead, "io.herald.DeliveryTask", &TASK_TEXT)
});

static ENVELOPE_SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(ENVELOPE_AVSC));
static TASK_SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(&TASK_TEXT));
static RECORD_SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(RECORD_AVSC));
static DEAD_SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(&DEAD_TEXT));

const WORKSPACE_AVSC: &str = include_str!("../../../schemas/WorkspaceConfig.avsc");
static WORKSPACE_SCHEMA: LazyLock<Schema> = LazyLock::new(|| parse(WORKSPACE_AVSC));

fn parse(avsc: &str) -> Schema {
    // The schema files are compiled in; the tests in `tests/schemas.rs` keep them valid.
    Schema::parse_str(avsc).expect("the schemas in schemas/ parse")
}

/// Serializes a value in its Avro shape.
struct Shaped<'a, T>(&'a T);

impl<T: AvroShape> Serialize for Shaped<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_avro(serializer)
    }
}

/// Deserializes a value from its Avro shape, keeping the path of the field that does not fit.
/// apache-avro's `from_value` hides its deserializer, so the path is tracked in here, and a
/// failure is handed out as the value: apache-avro's own error would keep only its text.
struct Tracked<T>(Result<T, AvroError>);

impl<'de, T: AvroShape> Deserialize<'de> for Tracked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut track = serde_path_to_error::Track::new();
        let tracked = serde_path_to_error::Deserializer::new(deserializer, &mut track);
        Ok(Self(T::deserialize_avro(tracked).map_err(|e| {
            AvroError::Field {
                path: track.path().to_string(),
                message: e.to_string(),
            }
        })))
    }
}

/// Ties each type to the remote definition of its Avro shape, and each record to its schema.
macro_rules! avro_shapes {
    ($($ty:ty => $shape:ident $(, $schema:ident, $text:expr)?;)*) => {$(
        impl AvroShape for $ty {
            fn serialize_avro<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                $shape::serialize(self, serializer)
            }
            fn deserialize_avro<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $shape::deserialize(d)
            }
        }
        $(impl AvroRecord for $ty {
            fn schema() -> &'static Schema {
                &$schema
            }
            fn schema_text() -> &'static str {
                &$text
            }
        })?
    )*};
}

avro_shapes! {
    EventEnvelope => AvroEnvelope, ENVELOPE_SCHEMA, ENVELOPE_AVSC;
    DeliveryTask => AvroTask, TASK_SCHEMA, TASK_TEXT;
    DeliveryRecord => AvroDeliveryRecord, RECORD_SCHEMA, RECORD_AVSC;
    DeadDelivery => AvroDeadDelivery, DEAD_SCHEMA, DEAD_TEXT;
    WorkspaceConfig => AvroWorkspace, WORKSPACE_SCHEMA, WORKSPACE_AVSC;
    Attempt => AvroAttempt;
    ConnectionSpec => AvroConnection;
    RuleSpec => AvroRule;
}

// Each shape is a serde remote definition: it lists the record's fields again, so a field added
// to a record without an Avro form here fails to compile rather than going missing.

#[derive(Serialize, Deserialize)]
#[serde(remote = "EventEnvelope")]
struct AvroEnvelope {
    event_id: String,
    workspace_id: String,
    event: String,
    resource: Option<String>,
    resource_id: Option<String>,
    #[serde(with = "json_text")]
    payload: serde_json::Map<String, serde_json::Value>,
    #[serde(with = "ts_milliseconds_option")]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(with = "ts_milliseconds_option")]
    received_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DeliveryTask")]
struct AvroTask {
    delivery_id: String,
    #[serde(with = "AvroEnvelope")]
    envelope: EventEnvelope,
    rule_id: String,
    connection_id: String,
    #[serde(with = "json_text")]
    request: serde_json::Value,
    attempt: u32,
    retries: u32,
    tier: u32,
    #[serde(with = "ts_milliseconds")]
    due_at: DateTime<Utc>,
    #[serde(with = "ts_milliseconds_option")]
    first_attempt_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    #[serde(with = "list")]
    attempts: Vec<Attempt>,
    #[serde(with = "ts_milliseconds_option")]
    redriven_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "Attempt")]
struct AvroAttempt {
    #[serde(with = "ts_milliseconds")]
    at: DateTime<Utc>,
    outcome: String,
    status_code: Option<u16>,
    error: Option<String>,
    latency_ms: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DeliveryRecord")]
struct AvroDeliveryRecord {
    delivery_id: String,
    workspace_id: String,
    event_id: String,
    event: String,
    rule_id: Option<String>,
    connection_id: Option<String>,
    destination: Option<String>,
    action: Option<String>,
    status: DeliveryStatus,
    reason: Option<String>,
    #[serde(with = "list")]
    attempts: Vec<Attempt>,
    skipped_count: Option<u64>,
    #[serde(with = "ts_milliseconds_option")]
    next_attempt_at: Option<DateTime<Utc>>,
    #[serde(with = "ts_milliseconds")]
    created_at: DateTime<Utc>,
    #[serde(with = "ts_milliseconds")]
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "DeadDelivery")]
struct AvroDeadDelivery {
    #[serde(with = "AvroDeliveryRecord")]
    record: DeliveryRecord,
    #[serde(with = "optional_task")]
    task: Option<DeliveryTask>,
    truncated: Option<Truncated>,
}

/// `#[serde(with = "optional_task")]`: an optional task in its Avro shape.
mod optional_task {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{AvroShape, DeliveryTask, Shaped};

    pub fn serialize<S: Serializer>(task: &Option<DeliveryTask>, s: S) -> Result<S::Ok, S::Error> {
        match task {
            Some(task) => s.serialize_some(&Shaped(task)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DeliveryTask>, D::Error> {
        struct Task(DeliveryTask);
        impl<'de> Deserialize<'de> for Task {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                DeliveryTask::deserialize_avro(d).map(Task)
            }
        }
        Ok(Option::<Task>::deserialize(d)?.map(|Task(t)| t))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "WorkspaceConfig")]
struct AvroWorkspace {
    workspace: String,
    publishable_keys: Vec<String>,
    #[serde(with = "list")]
    connections: Vec<ConnectionSpec>,
    #[serde(with = "list")]
    rules: Vec<RuleSpec>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "ConnectionSpec")]
struct AvroConnection {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    credentials: BTreeMap<String, Secret>,
    #[serde(with = "json_text")]
    settings: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(remote = "RuleSpec")]
struct AvroRule {
    id: String,
    event: String,
    resource: Option<String>,
    resource_id: Option<String>,
    when: Option<String>,
    connection: String,
    action: String,
    #[serde(with = "json_text")]
    with: serde_json::Value,
}

/// `#[serde(with = "json_text")]`: free-form JSON, which Avro carries as JSON text.
mod json_text {
    use serde::de::{DeserializeOwned, Error as _};
    use serde::ser::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&serde_json::to_string(value).map_err(S::Error::custom)?)
    }

    pub fn deserialize<'de, T: DeserializeOwned, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let text = <&str>::deserialize(d)?;
        serde_json::from_str(text)
            .map_err(|e| D::Error::custom(format_args!("invalid JSON text: {e}")))
    }
}

/// `#[serde(with = "list")]`: a list whose items take their Avro shape.
mod list {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{AvroShape, Shaped};

    pub fn serialize<T: AvroShape, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(Shaped))
    }

    pub fn deserialize<'de, T: AvroShape, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        struct Item<T>(T);
        impl<'de, T: AvroShape> Deserialize<'de> for Item<T> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                T::deserialize_avro(d).map(Item)
            }
        }
        let items = Vec::<Item<T>>::deserialize(d)?;
        Ok(items.into_iter().map(|Item(t)| t).collect())
    }
}
