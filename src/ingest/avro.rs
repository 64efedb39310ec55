//! Avro single-object encoding of `EventEnvelope`: the writer schemas Herald knows, by
//! fingerprint.
//!
//! A single-object record names its writer schema only by its fingerprint (CRC-64-AVRO of the
//! schema's Parsing Canonical Form). Herald knows its own `EventEnvelope` under two: the
//! specification's, which Java, fastavro and the Python `avro` package write and Herald writes
//! too, and the one earlier Herald versions wrote ([`fingerprint::legacy`]). Producers' own
//! versions of the schema (one that added a defaulted field, say) are known from
//! `ingest.avro_writer_schemas` and read into Herald's schema by Avro schema resolution.

use std::collections::HashMap;
use std::path::PathBuf;

use apache_avro::Schema;

use crate::model::records::EventEnvelope;
use crate::model::records::avro::{self, AvroError, AvroRecord};
use crate::model::records::fingerprint;

/// A writer schema that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("ingest.avro_writer_schemas: {path}: {problem}")]
pub struct WriterSchemaError {
    pub path: PathBuf,
    pub problem: String,
}

/// The writer schemas of `EventEnvelope` Herald reads, by fingerprint.
#[derive(Debug, Default)]
pub struct SingleObjectSchemas {
    /// Writer schemas other than Herald's own.
    writers: HashMap<[u8; 8], Schema>,
}

impl SingleObjectSchemas {
    /// Herald's own schema and the producers' schemas in the files `paths`.
    pub fn load(paths: &[PathBuf]) -> Result<Self, WriterSchemaError> {
        let mut writers = HashMap::new();
        for path in paths {
            let problem = |p: String| WriterSchemaError {
                path: path.clone(),
                problem: p,
            };
            let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
            let schema = Schema::parse_str(&text).map_err(|e| problem(e.to_string()))?;
            // A producer using the Python `avro` package, or apache-avro, computes the legacy
            // fingerprint for the same schema: both name it.
            writers.insert(fingerprint::legacy(&schema), schema.clone());
            writers.insert(fingerprint::of(&schema), schema);
        }
        Ok(Self { writers })
    }

    /// Decodes a single-object record written with a known schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<EventEnvelope, AvroError> {
        let (found, mut datum) = avro::split_single_object(bytes)?;
        let Some(writer) = self.writers.get(&found) else {
            // Herald's own schema, under either fingerprint, or an unknown one.
            return avro::from_single_object(bytes);
        };
        let reader = EventEnvelope::schema();
        let value = apache_avro::from_avro_datum(writer, &mut datum, Some(reader))?;
        EventEnvelope::from_avro(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (file, fingerprint in header order) as scripts/avro_fixtures.py wrote them.
    fn fixtures() -> Vec<(String, Vec<u8>, serde_json::Value)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/avro");
        let manifest: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap())
                .unwrap();
        manifest
            .into_iter()
            .map(|m| {
                let file = m["file"].as_str().unwrap().to_owned();
                let bytes = std::fs::read(format!("{dir}/{file}")).unwrap();
                (file, bytes, m)
            })
            .collect()
    }

    fn evolved() -> SingleObjectSchemas {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/avro/EventEnvelope-evolved.avsc"
        );
        SingleObjectSchemas::load(&[path.into()]).unwrap()
    }

    #[test]
    fn herald_writes_the_fingerprint_fastavro_computes() {
        let (_, bytes, _) = fixtures()
            .into_iter()
            .find(|(f, ..)| f == "herald-fastavro.bin")
            .unwrap();
        let written = avro::to_single_object(&EventEnvelope {
            event_id: "e".into(),
            workspace_id: "w".into(),
            event: "x".into(),
            resource: None,
            resource_id: None,
            payload: Default::default(),
            occurred_at: None,
            received_at: None,
        })
        .unwrap();
        assert_eq!(written[..10], bytes[..10], "magic and fingerprint");
    }

    #[test]
    fn records_written_by_other_avro_libraries_are_read() {
        let schemas = evolved();
        for (file, bytes, manifest) in fixtures() {
            let e = schemas
                .decode(&bytes)
                .unwrap_or_else(|err| panic!("{file}: {err}"));
            let expect = &manifest["expect"];
            assert_eq!(e.event_id, expect["event_id"].as_str().unwrap(), "{file}");
            assert_eq!(e.workspace_id, expect["workspace_id"].as_str().unwrap());
            assert_eq!(e.resource_id.as_deref(), expect["resource_id"].as_str());
            assert_eq!(
                e.occurred_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                expect["occurred_at"].as_str().map(String::from),
                "{file}: timestamp-millis"
            );
            assert_eq!(
                e.payload["completion_percentage"],
                expect["completion_percentage"]
            );
        }
    }

    #[test]
    fn an_evolved_writer_schema_is_unknown_until_configured() {
        let (_, bytes, _) = fixtures()
            .into_iter()
            .find(|(f, ..)| f == "evolved-fastavro.bin")
            .unwrap();
        let err = SingleObjectSchemas::default().decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("unknown writer schema"), "{err}");
        assert!(evolved().decode(&bytes).is_ok());
    }
}
