//! CloudEvents 1.0 on Kafka, in both content modes of the Kafka protocol binding.
//!
//! - **Structured**: the value is the event as JSON (`content-type:
//!   application/cloudevents+json`, or a JSON object with `specversion`); attributes and `data`
//!   are members of it.
//! - **Binary**: the attributes are headers with the `ce_` prefix (`ce_specversion`,
//!   `ce_type`, `ce_id`, `ce_source`, `ce_subject`, `ce_time`, extensions); the value is `data`.
//!
//! `type` is the event name, `id` the event id, `subject` the resource id, `time` when it
//! occurred, `data` (a JSON object) the payload. The workspace is the extension attribute named
//! by `ingest.cloudevents_workspace_attribute`, or else the record key.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::decode::{DecodeError, RawRecord};
use crate::model::excerpt;
use crate::model::records::EventEnvelope;

/// The media type of a structured-mode event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// The content mode a record is in, if it is a CloudEvent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Binary,
}

/// Which mode `raw` is in: binary when it has `ce_specversion` or `ce_type`, structured when
/// its `content-type` says so or its value is a JSON object with `specversion`.
pub fn mode(raw: &RawRecord, value: &[u8]) -> Option<Mode> {
    if raw.header("ce_specversion").is_some() || raw.header("ce_type").is_some() {
        return Some(Mode::Binary);
    }
    let structured_type = raw
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with(STRUCTURED_CONTENT_TYPE)
        });
    // A cheap look before the JSON is parsed (the emit shape has no `specversion`), then a
    // parse to be sure it is a top-level member, not one inside the payload.
    let has_specversion = !structured_type
        && value.windows(13).any(|w| w == b"\"specversion\"")
        && serde_json::from_slice::<Map<String, Value>>(value)
            .is_ok_and(|m| m.contains_key("specversion"));
    (structured_type || has_specversion).then_some(Mode::Structured)
}

/// The envelope of a CloudEvent; `workspace_id` is empty when the workspace attribute is absent
/// (the record key then names it).
pub fn decode(
    raw: &RawRecord,
    value: &[u8],
    mode: Mode,
    workspace_attribute: &str,
) -> Result<EventEnvelope, DecodeError> {
    let attributes = match mode {
        Mode::Structured => {
            let mut de = serde_json::Deserializer::from_slice(value);
            let json: Value =
                serde_path_to_error::deserialize(&mut de).map_err(|e| DecodeError::Json {
                    path: e.path().to_string(),
                    message: excerpt(&e.into_inner().to_string()),
                })?;
            match json {
                Value::Object(map) => map,
                _ => return Err(invalid("specversion", "the event is not a JSON object")),
            }
        }
        Mode::Binary => {
            let mut map = Map::new();
            for (name, value) in &raw.headers {
                let Some(attribute) = name.strip_prefix("ce_") else {
                    continue;
                };
                let text = std::str::from_utf8(value).map_err(|_| DecodeError::Invalid {
                    field: "ce_ header",
                    problem: format!("`{name}` is not UTF-8"),
                })?;
                map.insert(attribute.to_owned(), Value::String(text.to_owned()));
            }
            let data: Value = if value.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(value).map_err(|e| DecodeError::Json {
                    path: "data".into(),
                    message: format!(
                        "binary-mode data must be a JSON object: {}",
                        excerpt(&e.to_string())
                    ),
                })?
            };
            map.insert("data".into(), data);
            map
        }
    };
    let prefix = if mode == Mode::Binary { "ce_" } else { "" };
    let text = |name: &'static str| -> Result<Option<String>, DecodeError> {
        match attributes.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(DecodeError::Invalid {
                field: name,
                problem: format!("CloudEvents attribute `{prefix}{name}` must be a string"),
            }),
        }
    };
    let required = |name: &'static str| -> Result<String, DecodeError> {
        text(name)?.ok_or_else(|| DecodeError::Invalid {
            field: name,
            problem: format!("CloudEvents attribute `{prefix}{name}` is missing"),
        })
    };
    match text("specversion")?.as_deref() {
        Some("1.0") => {}
        None if mode == Mode::Binary => {}
        other => {
            return Err(invalid(
                "specversion",
                &format!("must be 1.0, found {other:?}"),
            ));
        }
    }
    let _source = required("source")?;
    let event = required("type")?;
    let event_id = required("id")?;
    let occurred_at = match text("time")? {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|e| invalid("time", &format!("`{prefix}time` is not RFC 3339: {e}")))?
                .with_timezone(&Utc),
        ),
    };
    let payload = match attributes.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) if attributes.contains_key("data_base64") => {
            return Err(invalid("data_base64", "binary data cannot be a payload"));
        }
        Some(_) => return Err(invalid("data", "must be a JSON object")),
    };
    if attributes.contains_key("data_base64") {
        return Err(invalid("data_base64", "binary data cannot be a payload"));
    }
    Ok(EventEnvelope {
        event_id,
        workspace_id: match attributes.get(workspace_attribute) {
            None => String::new(),
            Some(_) => text_attr(&attributes, workspace_attribute, prefix)?,
        },
        event,
        resource: None,
        resource_id: text("subject")?,
        payload,
        occurred_at,
        received_at: None,
    })
}

fn text_attr(
    attributes: &Map<String, Value>,
    name: &str,
    prefix: &str,
) -> Result<String, DecodeError> {
    match attributes.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(DecodeError::Invalid {
            field: "workspace_id",
            problem: format!("CloudEvents attribute `{prefix}{name}` must be a string"),
        }),
    }
}

fn invalid(field: &'static str, problem: &str) -> DecodeError {
    DecodeError::Invalid {
        field,
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode::{DEFAULT_WORKSPACE_ATTRIBUTE, decode as decode_record};

    fn raw(key: Option<&str>, headers: &[(&str, &str)], value: &str) -> RawRecord {
        RawRecord {
            topic: "herald.events".into(),
            partition: 0,
            offset: 7,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: Some(value.as_bytes().to_vec()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    const STRUCTURED: &str = r#"{"specversion":"1.0","type":"lesson.completed","id":"ce-1",
        "source":"/academy","subject":"creator-accelerator","time":"2026-03-21T15:06:00Z",
        "workspaceid":"ws_academyflow","datacontenttype":"application/json",
        "data":{"email":"nina@academyflow.io","completion_percentage":62}}"#;

    fn binary_headers() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce_specversion", "1.0"),
            ("ce_type", "lesson.completed"),
            ("ce_id", "ce-2"),
            ("ce_source", "/academy"),
            ("ce_subject", "creator-accelerator"),
            ("ce_time", "2026-03-21T15:06:00Z"),
            ("content-type", "application/json"),
        ]
    }

    #[test]
    fn structured_mode_by_content_type_or_by_shape() {
        for headers in [vec![("content-type", STRUCTURED_CONTENT_TYPE)], vec![]] {
            let r = raw(None, &headers, STRUCTURED);
            let e = decode_record(&r, 1 << 20, Utc::now()).unwrap();
            assert_eq!(
                (
                    e.event.as_str(),
                    e.event_id.as_str(),
                    e.workspace_id.as_str()
                ),
                ("lesson.completed", "ce-1", "ws_academyflow")
            );
            assert_eq!(e.resource_id.as_deref(), Some("creator-accelerator"));
            assert_eq!(e.payload["completion_percentage"], 62);
            assert_eq!(
                e.occurred_at.unwrap().to_rfc3339(),
                "2026-03-21T15:06:00+00:00"
            );
        }
    }

    #[test]
    fn binary_mode_takes_attributes_from_ce_headers_and_the_workspace_from_the_key() {
        let r = raw(
            Some("ws_academyflow"),
            &binary_headers(),
            r#"{"email":"a@b.c"}"#,
        );
        let e = decode_record(&r, 1 << 20, Utc::now()).unwrap();
        assert_eq!(
            (
                e.event.as_str(),
                e.event_id.as_str(),
                e.workspace_id.as_str()
            ),
            ("lesson.completed", "ce-2", "ws_academyflow")
        );
        assert_eq!(e.resource_id.as_deref(), Some("creator-accelerator"));
        assert_eq!(e.payload["email"], "a@b.c");
        let mut headers = binary_headers();
        headers.push(("ce_workspaceid", "ws_other"));
        let r = raw(None, &headers, "{}");
        let e = decode_record(&r, 1 << 20, Utc::now()).unwrap();
        assert_eq!(e.workspace_id, "ws_other");
        assert_eq!(DEFAULT_WORKSPACE_ATTRIBUTE, "workspaceid");
    }

    #[test]
    fn bad_cloudevents_name_the_attribute() {
        let without = |name: &str| {
            binary_headers()
                .into_iter()
                .filter(|(k, _)| *k != name)
                .collect::<Vec<_>>()
        };
        let cases = [
            (
                raw(Some("ws"), &without("ce_type"), "{}"),
                "`ce_type` is missing",
            ),
            (
                raw(Some("ws"), &without("ce_id"), "{}"),
                "`ce_id` is missing",
            ),
            (
                raw(Some("ws"), &without("ce_source"), "{}"),
                "`ce_source` is missing",
            ),
            (
                raw(Some("ws"), &binary_headers(), "[1]"),
                "`data` must be a JSON object",
            ),
            (
                raw(Some("ws"), &binary_headers(), "not json"),
                "binary-mode data",
            ),
            (
                raw(Some("ws"), &[], &STRUCTURED.replace("\"1.0\"", "\"0.3\"")),
                "specversion",
            ),
            (
                raw(
                    Some("ws"),
                    &[],
                    &STRUCTURED.replace("2026-03-21T15:06:00Z", "noon"),
                ),
                "time",
            ),
            (raw(None, &without("ce_time"), "{}"), "workspace_id"),
            (
                raw(Some("ws_b"), &[], STRUCTURED),
                "differs from the record key",
            ),
        ];
        for (r, expect) in cases {
            let err = decode_record(&r, 1 << 20, Utc::now())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }

    #[test]
    fn a_payload_member_named_specversion_is_still_the_emit_shape() {
        let body = r#"{"event":"x","payload":{"specversion":"1.0"}}"#;
        let e = decode_record(&raw(Some("ws"), &[], body), 1 << 20, Utc::now()).unwrap();
        assert_eq!(e.event, "x");
    }
}
