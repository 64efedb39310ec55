//! Decoding input records. Accepted: the seeds' emit shape as JSON (`event`, `resource`,
//! `resource_id`, `payload`, plus `workspace_id` unless the record key carries it, optional
//! `event_id` and `occurred_at`), and Avro single-object encoding of `EventEnvelope`
//! ([`avro`](super::avro)). `docs/input.md` documents each format.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::avro::{SingleObjectSchemas, WriterSchemaError};
use super::cloudevents;
use super::confluent::{self, TopicMapping};
use crate::kafka::registry::{Registry, RegistrySetupError};
use crate::model::excerpt;
use crate::model::records::EventEnvelope;
use crate::model::records::avro::{AvroError, SINGLE_OBJECT_MAGIC};
use crate::settings::Settings;
use std::collections::HashMap;
use std::sync::Arc;

/// The longest name or identifier an event may carry (`event`, `event_id`, `workspace_id`,
/// `resource`, `resource_id`, the record key), in bytes. Each is copied into every history
/// record, skip summary, retry task and dead letter the event causes, so an unbounded one could
/// make records the broker refuses.
pub const MAX_NAME_BYTES: usize = 256;

/// A record as read from Kafka, owned so it can move to a task.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The record's headers in order (a header without a value has an empty one).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawRecord {
    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A Kafka message's headers, owned, for [`RawRecord::headers`].
pub fn headers_of<H: rdkafka::message::Headers>(headers: Option<&H>) -> Vec<(String, Vec<u8>)> {
    headers
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}

/// Why a record is not an event. The text names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record is {size} bytes, over processor.max_event_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("record has no value")]
    Empty,
    #[error("invalid JSON at `{path}`: {message}")]
    Json { path: String, message: String },
    #[error("invalid Avro single-object EventEnvelope: {0}")]
    Avro(String),
    #[error("{0}")]
    Registry(String),
    #[error("invalid Avro record in Confluent wire format: {0}")]
    Confluent(String),
    #[error("`{field}` {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    event: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    payload: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    received_at: Option<DateTime<Utc>>,
}

/// Decodes input records as configured: the size limit and the known Avro writer schemas.
#[derive(Debug)]
pub struct Decoder {
    max_bytes: usize,
    avro: SingleObjectSchemas,
    workspace_attribute: String,
    registry: Option<Arc<Registry>>,
    mappings: HashMap<String, TopicMapping>,
}

/// A decoder that cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum DecoderSetupError {
    #[error(transparent)]
    WriterSchema(#[from] WriterSchemaError),
    #[error(transparent)]
    Registry(#[from] RegistrySetupError),
}

impl Decoder {
    /// The decoder `settings` describe; fails when a configured writer schema cannot be read.
    pub fn new(settings: &Settings) -> Result<Self, DecoderSetupError> {
        Ok(Self {
            registry: Registry::new(&settings.ingest.schema_registry)?.map(Arc::new),
            mappings: settings
                .ingest
                .topics
                .iter()
                .map(|m| (m.topic.clone(), m.clone()))
                .collect(),
            max_bytes: settings.processor.max_event_bytes,
            avro: SingleObjectSchemas::load(&settings.ingest.avro_writer_schemas)?,
            workspace_attribute: settings.ingest.cloudevents_workspace_attribute.clone(),
        })
    }

    /// Decodes `raw` into an envelope; `received_at` is set to `now` unless the record has one.
    pub fn decode(
        &self,
        raw: &RawRecord,
        now: DateTime<Utc>,
    ) -> Result<EventEnvelope, DecodeError> {
        let formats = Formats {
            avro: &self.avro,
            workspace_attribute: &self.workspace_attribute,
            registry: self.registry.as_deref(),
            mappings: &self.mappings,
        };
        decode_with(raw, self.max_bytes, formats, now)
    }

    /// The schema registry, when one is configured.
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_deref()
    }

    /// The schema id a record in Confluent wire format needs fetched before it can be decoded
    /// (it is not cached yet); `None` for every other record.
    pub fn schema_to_fetch(&self, payload: Option<&[u8]>) -> Option<u32> {
        let id = confluent::schema_id(payload?)?;
        let registry = self.registry.as_ref()?;
        registry.cached(id).is_none().then_some(id)
    }

    /// The topics whose records are mapped (consumed besides the events topic).
    pub fn mapped_topics(&self) -> impl Iterator<Item = &str> {
        self.mappings.keys().map(String::as_str)
    }
}

/// Decodes `raw` with Herald's own Avro schema only; `received_at` is set to `now` unless the
/// record carries one.
pub fn decode(
    raw: &RawRecord,
    max_bytes: usize,
    now: DateTime<Utc>,
) -> Result<EventEnvelope, DecodeError> {
    let formats = Formats {
        avro: &SingleObjectSchemas::default(),
        workspace_attribute: DEFAULT_WORKSPACE_ATTRIBUTE,
        registry: None,
        mappings: &HashMap::new(),
    };
    decode_with(raw, max_bytes, formats, now)
}

/// The CloudEvents extension attribute that names the workspace unless configured otherwise.
pub const DEFAULT_WORKSPACE_ATTRIBUTE: &str = "workspaceid";

/// What the formats need beyond the bytes.
#[derive(Clone, Copy)]
struct Formats<'a> {
    avro: &'a SingleObjectSchemas,
    workspace_attribute: &'a str,
    registry: Option<&'a Registry>,
    mappings: &'a HashMap<String, TopicMapping>,
}

fn decode_with(
    raw: &RawRecord,
    max_bytes: usize,
    formats: Formats<'_>,
    now: DateTime<Utc>,
) -> Result<EventEnvelope, DecodeError> {
    let header_bytes: usize = raw.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    let size = raw.payload.as_ref().map_or(0, Vec::len) + header_bytes;
    if size > max_bytes {
        return Err(DecodeError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    let cloudevent = raw
        .payload
        .as_deref()
        .map_or(cloudevents::mode(raw, b""), |v| cloudevents::mode(raw, v));
    // A binary-mode CloudEvent may carry all it says in headers, with no value.
    let bytes = match (raw.payload.as_deref(), cloudevent) {
        (Some(b), _) => b,
        (None, Some(cloudevents::Mode::Binary)) => b"",
        (None, _) => return Err(DecodeError::Empty),
    };
    check_length("key", raw.key.as_deref().map(<[u8]>::len))?;
    let key = match raw.key.as_deref().map(std::str::from_utf8) {
        None => None,
        Some(Ok("")) => None,
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => {
            return Err(DecodeError::Invalid {
                field: "key",
                problem: "is not UTF-8; the record key is the workspace id".into(),
            });
        }
    };
    let mut envelope = if let Some(id) = confluent::schema_id(bytes) {
        confluent_envelope(raw, bytes, id, formats, key)?
    } else if let Some(mode) = cloudevent {
        cloudevents::decode(raw, bytes, mode, formats.workspace_attribute)?
    } else if bytes.starts_with(&SINGLE_OBJECT_MAGIC) {
        formats.avro.decode(bytes).map_err(|e| {
            let hint = match e {
                AvroError::UnknownFingerprint { .. } => {
                    "; a producer's own version of the schema must be listed in ingest.avro_writer_schemas"
                }
                _ => "",
            };
            DecodeError::Avro(format!("{}{hint}", excerpt(&e.to_string())))
        })?
    } else {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let json: JsonEvent = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            // serde quotes the offending value ("invalid type: string \"…\""), which may be
            // most of the record: the reason keeps an excerpt.
            DecodeError::Json {
                path,
                message: excerpt(&e.into_inner().to_string()),
            }
        })?;
        EventEnvelope {
            event_id: json.event_id.unwrap_or_default(),
            workspace_id: json.workspace_id.unwrap_or_default(),
            event: json.event,
            resource: json.resource,
            resource_id: json.resource_id,
            payload: json.payload.unwrap_or_default(),
            occurred_at: json.occurred_at,
            received_at: json.received_at,
        }
    };
    for (field, value) in [
        ("event", Some(&envelope.event)),
        ("event_id", Some(&envelope.event_id)),
        ("workspace_id", Some(&envelope.workspace_id)),
        ("resource", envelope.resource.as_ref()),
        ("resource_id", envelope.resource_id.as_ref()),
    ] {
        check_length(field, value.map(String::len))?;
    }
    match (envelope.workspace_id.is_empty(), key) {
        (true, Some(k)) => envelope.workspace_id = k.to_owned(),
        (true, None) => {
            return Err(DecodeError::Invalid {
                field: "workspace_id",
                problem: "is missing: set it in the event or use it as the record key".into(),
            });
        }
        (false, Some(k)) if k != envelope.workspace_id => {
            return Err(DecodeError::Invalid {
                field: "workspace_id",
                problem: format!(
                    "`{}` differs from the record key `{k}`",
                    envelope.workspace_id
                ),
            });
        }
        (false, _) => {}
    }
    if envelope.event.trim().is_empty() {
        return Err(DecodeError::Invalid {
            field: "event",
            problem: "must not be empty".into(),
        });
    }
    if envelope.event_id.is_empty() {
        // Derived from the record's coordinates, never random: re-reading the same record after
        // a crash or a replay yields the same event id, hence the same delivery ids.
        envelope.event_id = format!("kafka:{}/{}/{}", raw.topic, raw.partition, raw.offset);
    }
    envelope.received_at.get_or_insert(now);
    Ok(envelope)
}

/// A Confluent wire-format record, read with its writer schema (already fetched) and mapped.
fn confluent_envelope(
    raw: &RawRecord,
    bytes: &[u8],
    id: u32,
    formats: Formats<'_>,
    key: Option<&str>,
) -> Result<EventEnvelope, DecodeError> {
    let invalid = |problem: String| DecodeError::Invalid {
        field: "schema id",
        problem,
    };
    let mapping = formats.mappings.get(&raw.topic).ok_or_else(|| {
        invalid(format!(
            "{id}: a Confluent wire-format record on `{}`, a topic without an ingest.topics mapping",
            raw.topic
        ))
    })?;
    let registry = formats
        .registry
        .ok_or_else(|| invalid(format!("{id}: no ingest.schema_registry.url is set")))?;
    match registry.cached(id) {
        Some(Ok(schema)) => confluent::decode(&bytes[5..], &schema, mapping, key),
        Some(Err(e)) => Err(DecodeError::Registry(e.to_string())),
        // The processor fetches a record's schema before decoding it; a decoder used without
        // that step (a workspace replay) cannot read the record.
        None => Err(DecodeError::Registry(format!(
            "schema id {id} has not been fetched from the schema registry"
        ))),
    }
}

/// Refuses a name longer than [`MAX_NAME_BYTES`]; the error names the field, not the value.
fn check_length(field: &'static str, len: Option<usize>) -> Result<(), DecodeError> {
    match len {
        Some(len) if len > MAX_NAME_BYTES => Err(DecodeError::Invalid {
            field,
            problem: format!("is {len} bytes, over the limit of {MAX_NAME_BYTES}"),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: Option<&str>, payload: &[u8]) -> RawRecord {
        RawRecord {
            topic: "herald.events".into(),
            partition: 2,
            offset: 41,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: Some(payload.to_vec()),
            headers: Vec::new(),
        }
    }

    const SEED: &str = r#"{"event":"lesson.completed","resource":"course","resource_id":"creator-accelerator",
        "payload":{"email":"nina@academyflow.io","completion_percentage":62}}"#;

    #[test]
    fn seed_emit_shape_with_workspace_in_the_key() {
        let e = decode(
            &raw(Some("ws_academyflow"), SEED.as_bytes()),
            1 << 20,
            Utc::now(),
        )
        .unwrap();
        assert_eq!(e.workspace_id, "ws_academyflow");
        assert_eq!(e.event, "lesson.completed");
        assert_eq!(e.resource_id.as_deref(), Some("creator-accelerator"));
        assert_eq!(e.payload["completion_percentage"], 62);
        assert_eq!(
            e.event_id, "kafka:herald.events/2/41",
            "derived from coordinates"
        );
        assert!(e.received_at.is_some());
    }

    #[test]
    fn producer_event_id_and_workspace_field_are_kept() {
        let body = r#"{"event":"page.completed","workspace_id":"ws_n","event_id":"evt_9",
            "occurred_at":"2026-03-21T15:06:00Z","payload":{}}"#;
        let e = decode(&raw(None, body.as_bytes()), 1 << 20, Utc::now()).unwrap();
        assert_eq!(
            (e.workspace_id.as_str(), e.event_id.as_str()),
            ("ws_n", "evt_9")
        );
        assert_eq!(
            e.occurred_at.unwrap().to_rfc3339(),
            "2026-03-21T15:06:00+00:00"
        );
    }

    #[test]
    fn bad_input_names_the_problem() {
        let max = 1 << 20;
        let cases: Vec<(RawRecord, &str)> = vec![
            (raw(Some("ws"), b"{not json"), "invalid JSON"),
            (raw(None, br#"{"event":"x","payload":{}}"#), "workspace_id"),
            (
                raw(Some("ws"), br#"{"event":"x","payload":[1]}"#),
                "payload",
            ),
            (raw(Some("ws"), br#"{"event":"","payload":{}}"#), "event"),
            (raw(Some("ws"), br#"{"evnt":"x"}"#), "evnt"),
            (
                raw(Some("a"), br#"{"event":"x","workspace_id":"b"}"#),
                "differs",
            ),
            (
                raw(Some("ws"), br#"{"event":"x","occurred_at":"yesterday"}"#),
                "occurred_at",
            ),
            (raw(Some("ws"), &[0xC3, 0x01, 1, 2, 3]), "Avro"),
        ];
        for (r, expect) in cases {
            let err = decode(&r, max, Utc::now()).unwrap_err().to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
        let mut empty = raw(Some("ws"), b"");
        empty.payload = None;
        assert_eq!(
            decode(&empty, max, Utc::now()).unwrap_err(),
            DecodeError::Empty
        );
    }

    #[test]
    fn long_names_are_refused_naming_the_field_not_the_value() {
        let long = "n".repeat(MAX_NAME_BYTES + 1);
        let fits = "n".repeat(MAX_NAME_BYTES);
        let event = |field: &str, value: &str| {
            let mut body = serde_json::json!({"event": "x", "payload": {}});
            body[field] = value.into();
            body.to_string().into_bytes()
        };
        for field in [
            "event",
            "event_id",
            "workspace_id",
            "resource",
            "resource_id",
        ] {
            let key = if field == "workspace_id" {
                None
            } else {
                Some("ws")
            };
            let err = decode(&raw(key, &event(field, &long)), 1 << 20, Utc::now()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("`{field}` is 257 bytes")),
                "{text}"
            );
            assert!(!text.contains(&long), "the value stays out of the reason");
            let ok = decode(&raw(key, &event(field, &fits)), 1 << 20, Utc::now());
            assert!(ok.is_ok(), "{field}: {ok:?}");
        }
        let err = decode(&raw(Some(&long), SEED.as_bytes()), 1 << 20, Utc::now()).unwrap_err();
        assert!(err.to_string().starts_with("`key` is 257 bytes"), "{err}");
    }

    #[test]
    fn a_reason_quotes_at_most_an_excerpt_of_the_input() {
        let long = "q".repeat(100_000);
        let body = format!(r#"{{"event":"x","payload":"{long}"}}"#);
        let err = decode(&raw(Some("ws"), body.as_bytes()), 1 << 20, Utc::now()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("payload"), "{text}");
        assert!(text.len() < 1_000, "{} bytes", text.len());
    }

    #[test]
    fn oversized_records_are_refused() {
        let big = format!(
            r#"{{"event":"x","payload":{{"pad":"{}"}}}}"#,
            "a".repeat(2000)
        );
        let err = decode(&raw(Some("ws"), big.as_bytes()), 1000, Utc::now()).unwrap_err();
        assert!(
            matches!(err, DecodeError::TooLarge { max: 1000, .. }),
            "{err}"
        );
    }

    #[test]
    fn avro_single_object_encoding_is_accepted() {
        let sent = EventEnvelope {
            event_id: "evt_1".into(),
            workspace_id: "ws".into(),
            event: "lesson.completed".into(),
            resource: Some("course".into()),
            resource_id: None,
            payload: serde_json::json!({"email": "a@b.c"})
                .as_object()
                .unwrap()
                .clone(),
            occurred_at: None,
            received_at: None,
        };
        let bytes = crate::model::records::avro::to_single_object(&sent).unwrap();
        let got = decode(&raw(Some("ws"), &bytes), 1 << 20, Utc::now()).unwrap();
        assert_eq!(got.payload, sent.payload);
        assert_eq!(got.event_id, "evt_1");
    }
}
