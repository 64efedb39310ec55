//! Confluent wire format: magic byte `0`, the writer schema's registry id (4 bytes,
//! big-endian), then an Avro datum. Producers write their own record types, so a topic's
//! [`TopicMapping`] says where the event name, workspace and the other envelope fields are;
//! the whole record becomes the payload as JSON (timestamps as ISO 8601, decimals as strings).

use apache_avro::Schema;
use apache_avro::schema::{Name, ResolvedSchema};
use apache_avro::types::Value as Avro;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::decode::DecodeError;
use crate::model::excerpt;
use crate::model::records::EventEnvelope;
pub use crate::settings::TopicMapping;

/// The registry id of a record in Confluent wire format, or `None` for any other record.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// Decodes `datum` (the bytes after the 5-byte header) with its writer `schema` and maps it.
pub fn decode(
    datum: &[u8],
    schema: &Schema,
    mapping: &TopicMapping,
    key: Option<&str>,
) -> Result<EventEnvelope, DecodeError> {
    let mut reader = datum;
    let value = apache_avro::from_avro_datum(schema, &mut reader, None)
        .map_err(|e| DecodeError::Confluent(excerpt(&e.to_string())))?;
    let resolved = ResolvedSchema::try_from(schema)
        .map_err(|e| DecodeError::Confluent(excerpt(&e.to_string())))?;
    let record_name = match schema {
        Schema::Record(r) => r.name.fullname(None),
        _ => String::new(),
    };
    let json = to_json(&value, schema, resolved.get_names());
    let Value::Object(record) = json else {
        return Err(DecodeError::Invalid {
            field: "payload",
            problem: "the writer schema is not a record".into(),
        });
    };
    map(record, &record_name, mapping, key)
}

/// Applies `mapping` to a record read as JSON.
pub fn map(
    record: Map<String, Value>,
    record_name: &str,
    mapping: &TopicMapping,
    key: Option<&str>,
) -> Result<EventEnvelope, DecodeError> {
    let field = |path: &str| -> Result<String, DecodeError> {
        let mut at = record.get(path.split('.').next().unwrap_or_default());
        for part in path.split('.').skip(1) {
            at = at.and_then(|v| v.get(part));
        }
        match at {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            None | Some(Value::Null) => Err(DecodeError::Invalid {
                field: "ingest.topics",
                problem: format!("field `{path}` is absent from the record"),
            }),
            Some(_) => Err(DecodeError::Invalid {
                field: "ingest.topics",
                problem: format!("field `{path}` is not a string or a number"),
            }),
        }
    };
    let optional = |path: &Option<String>| path.as_deref().map(field).transpose();
    let event = match mapping.event.split_once(':') {
        Some(("const", name)) => name.to_owned(),
        Some(("field", path)) => field(path)?,
        _ => record_name.to_owned(),
    };
    let workspace_id = match mapping.workspace.split_once(':') {
        Some(("field", path)) => field(path)?,
        _ => key.unwrap_or_default().to_owned(),
    };
    let occurred_at = match optional(&mapping.occurred_at)? {
        None => None,
        Some(t) => Some(
            DateTime::parse_from_rfc3339(&t)
                .map_err(|e| DecodeError::Invalid {
                    field: "occurred_at",
                    problem: format!("`{t}` is not a timestamp: {e}"),
                })?
                .with_timezone(&Utc),
        ),
    };
    Ok(EventEnvelope {
        event_id: optional(&mapping.event_id)?.unwrap_or_default(),
        workspace_id,
        event,
        resource: optional(&mapping.resource)?,
        resource_id: optional(&mapping.resource_id)?,
        occurred_at,
        payload: record,
        received_at: None,
    })
}

type Names<'s> = std::collections::HashMap<Name, &'s Schema>;

/// An Avro value as JSON: records as objects, unions as their branch, timestamps and dates as
/// ISO 8601 text, decimals as exact decimal text, bytes and fixed as `\u00XX` text like Avro's
/// JSON encoding.
pub fn to_json(value: &Avro, schema: &Schema, names: &Names<'_>) -> Value {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        s => s,
    };
    match (value, schema) {
        (Avro::Null, _) => Value::Null,
        (Avro::Boolean(b), _) => Value::Bool(*b),
        (Avro::Int(i), _) => Value::from(*i),
        (Avro::Long(i), _) => Value::from(*i),
        (Avro::Float(f), _) => Value::from(*f as f64),
        (Avro::Double(f), _) => Value::from(*f),
        (Avro::String(s), _) | (Avro::Enum(_, s), _) => Value::String(s.clone()),
        (Avro::Bytes(b), _) | (Avro::Fixed(_, b), _) => {
            Value::String(b.iter().map(|&c| c as char).collect())
        }
        (Avro::Uuid(u), _) => Value::String(u.to_string()),
        (Avro::Union(i, inner), Schema::Union(u)) => match u.variants().get(*i as usize) {
            Some(branch) => to_json(inner, branch, names),
            None => Value::Null,
        },
        (Avro::Union(_, inner), s) => to_json(inner, s, names),
        (Avro::Array(items), Schema::Array(a)) => {
            Value::Array(items.iter().map(|v| to_json(v, &a.items, names)).collect())
        }
        (Avro::Map(entries), Schema::Map(m)) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v, &m.types, names)))
                .collect(),
        ),
        (Avro::Record(fields), Schema::Record(r)) => Value::Object(
            fields
                .iter()
                .zip(&r.fields)
                .map(|((name, v), f)| (name.clone(), to_json(v, &f.schema, names)))
                .collect(),
        ),
        (Avro::Date(days), _) => chrono::NaiveDate::from_num_days_from_ce_opt(719_163 + days)
            .map_or(Value::Null, |d| Value::String(d.to_string())),
        (Avro::TimeMillis(ms), _) => Value::String(time_of_day(i64::from(*ms) * 1_000_000)),
        (Avro::TimeMicros(us), _) => Value::String(time_of_day(us * 1_000)),
        (Avro::TimestampMillis(t), _) | (Avro::LocalTimestampMillis(t), _) => {
            instant(DateTime::from_timestamp_millis(*t))
        }
        (Avro::TimestampMicros(t), _) | (Avro::LocalTimestampMicros(t), _) => {
            instant(DateTime::from_timestamp_micros(*t))
        }
        (Avro::TimestampNanos(t), _) | (Avro::LocalTimestampNanos(t), _) => {
            instant(Some(DateTime::from_timestamp_nanos(*t)))
        }
        (Avro::Decimal(d), Schema::Decimal(s)) => match Vec::<u8>::try_from(d) {
            Ok(bytes) => Value::String(decimal_text(&bytes, s.scale)),
            Err(_) => Value::Null,
        },
        (Avro::BigDecimal(d), _) => Value::String(d.to_string()),
        (Avro::Duration(d), _) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
        // A value that does not match its schema cannot come out of the decoder.
        (other, _) => Value::String(format!("{other:?}")),
    }
}

fn instant(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| {
        Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    })
}

fn time_of_day(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let nano = nanos.rem_euclid(1_000_000_000);
    chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs as u32, nano as u32)
        .map_or_else(String::new, |t| t.to_string())
}

/// A two's-complement big-endian unscaled value with `scale` digits after the point.
fn decimal_text(bytes: &[u8], scale: usize) -> String {
    if bytes.is_empty() || bytes.len() > 16 {
        return String::new();
    }
    let negative = bytes[0] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 16];
    buf[16 - bytes.len()..].copy_from_slice(bytes);
    let unscaled = i128::from_be_bytes(buf);
    let digits = unscaled.unsigned_abs().to_string();
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = digits.split_at(digits.len() - scale);
    let sign = if negative { "-" } else { "" };
    if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORDER: &str = r#"{"type":"record","name":"OrderPlaced","namespace":"io.shop","fields":[
        {"name":"order_id","type":"string"},
        {"name":"tenant","type":{"type":"record","name":"Tenant","fields":[{"name":"id","type":"string"}]}},
        {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"placed_at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    fn order_datum(schema: &Schema) -> Vec<u8> {
        let value = Avro::Record(vec![
            ("order_id".into(), Avro::String("ord_1".into())),
            (
                "tenant".into(),
                Avro::Record(vec![("id".into(), Avro::String("ws_shop".into()))]),
            ),
            (
                "amount".into(),
                Avro::Decimal(apache_avro::Decimal::from(
                    (-12345i64).to_be_bytes().to_vec(),
                )),
            ),
            ("placed_at".into(), Avro::TimestampMillis(1_774_105_560_250)),
            ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
        ]);
        apache_avro::to_avro_datum(schema, value).unwrap()
    }

    fn mapping() -> TopicMapping {
        TopicMapping {
            topic: "shop.orders".into(),
            event: "record".into(),
            workspace: "field:tenant.id".into(),
            event_id: Some("order_id".into()),
            occurred_at: Some("placed_at".into()),
            resource: None,
            resource_id: Some("order_id".into()),
        }
    }

    #[test]
    fn the_framing_carries_the_schema_id() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 9]), Some(258));
        assert_eq!(schema_id(b"{}"), None);
        assert_eq!(schema_id(&[0, 0, 1]), None);
    }

    #[test]
    fn a_record_is_mapped_and_becomes_the_payload_as_json() {
        let schema = Schema::parse_str(ORDER).unwrap();
        let e = decode(&order_datum(&schema), &schema, &mapping(), None).unwrap();
        assert_eq!(e.event, "io.shop.OrderPlaced");
        assert_eq!(e.workspace_id, "ws_shop");
        assert_eq!(e.event_id, "ord_1");
        assert_eq!(e.resource_id.as_deref(), Some("ord_1"));
        assert_eq!(
            e.occurred_at.unwrap().to_rfc3339(),
            "2026-03-21T15:06:00.250+00:00"
        );
        assert_eq!(e.payload["amount"], "-123.45", "decimals as exact text");
        assert_eq!(e.payload["placed_at"], "2026-03-21T15:06:00.250Z");
        assert_eq!(e.payload["tenant"]["id"], "ws_shop");
        assert_eq!(e.payload["note"], Value::Null);
    }

    #[test]
    fn event_and_workspace_from_a_constant_and_the_key() {
        let schema = Schema::parse_str(ORDER).unwrap();
        let mut m = mapping();
        m.event = "const:order.placed".into();
        m.workspace = "key".into();
        let e = decode(&order_datum(&schema), &schema, &m, Some("ws_k")).unwrap();
        assert_eq!(
            (e.event.as_str(), e.workspace_id.as_str()),
            ("order.placed", "ws_k")
        );
    }

    #[test]
    fn an_absent_mapped_field_names_its_path() {
        let schema = Schema::parse_str(ORDER).unwrap();
        let mut m = mapping();
        m.resource = Some("customer.segment".into());
        let err = decode(&order_datum(&schema), &schema, &m, None).unwrap_err();
        assert!(
            err.to_string().contains("`customer.segment` is absent"),
            "{err}"
        );
        m.resource = Some("note".into());
        let err = decode(&order_datum(&schema), &schema, &m, None).unwrap_err();
        assert!(err.to_string().contains("`note` is absent"), "{err}");
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(decimal_text(&[0x30, 0x39], 2), "123.45");
        assert_eq!(decimal_text(&[0x05], 3), "0.005");
        assert_eq!(decimal_text(&[0xff], 0), "-1");
    }

    #[test]
    fn a_record_written_by_confluent_kafka_reads_as_the_fixture_says() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/confluent");
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(format!("{dir}/{}", manifest["file"].as_str().unwrap())).unwrap();
        assert_eq!(
            schema_id(&bytes).map(u64::from),
            manifest["schema_id"].as_u64()
        );
        let schema = Schema::parse_str(manifest["schema"].as_str().unwrap()).unwrap();
        let mut m = mapping();
        m.workspace = "field:tenant".into();
        m.event_id = Some("attempt_id".into());
        m.occurred_at = Some("completed_at".into());
        m.resource_id = None;
        let e = decode(&bytes[5..], &schema, &m, None).unwrap();
        let expect = &manifest["expect"];
        assert_eq!(e.event_id, expect["event_id"].as_str().unwrap());
        assert_eq!(e.event, "io.academy.LessonCompleted");
        assert_eq!(e.payload["price"], expect["price"]);
        assert_eq!(e.payload["completed_at"], expect["completed_at"]);
        assert_eq!(e.payload["coupon"], Value::Null);
    }
}
