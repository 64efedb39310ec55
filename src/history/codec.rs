//! The wire formats of the records Herald writes to `herald.deliveries` (a [`DeliveryRecord`])
//! and `herald.dlq` (a [`DeadDelivery`]): JSON objects (`history.format = "json"`, the
//! default), or Confluent wire format (`"avro"`): magic byte 0, the schema's registry id as 4
//! big-endian bytes, then the Avro datum, so that Kafka Connect's `AvroConverter`, ksqlDB or any
//! Confluent deserializer reads them with the schema they find in the registry.
//!
//! Writing Avro needs the schemas' ids: they are registered once, under `<topic>-value`
//! (TopicNameStrategy), retried with backoff while the registry is down; until then outcomes
//! wait, and `/readyz` says so. Reading takes either format, whatever `history.format` says, by
//! the first byte (`0` or `{`), so a cluster that switches keeps every record readable; an
//! Avro record is read with its writer schema, fetched from the registry by id (cached).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::kafka::registry::{RegisterError, Registry, RegistryError};
use crate::model::error::excerpt;
use crate::model::records::avro::{self, AvroRecord};
use crate::model::records::{DeadDelivery, DeliveryRecord};
use crate::settings::{HistoryFormat, Settings};

/// The first byte of a record in Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Encodes and decodes history and dead-delivery records.
#[derive(Debug)]
pub struct HistoryCodec {
    format: HistoryFormat,
    /// The registry, or why it could not be set up (a CA file that does not parse).
    registry: Result<Option<Arc<Registry>>, String>,
    deliveries_subject: String,
    dlq_subject: String,
    ids: OnceCell<Ids>,
    /// True while the schemas wait to be registered because the registry fails.
    registry_down: AtomicBool,
}

/// The registry ids of the schemas Herald writes with.
#[derive(Debug, Clone, Copy)]
struct Ids {
    record: u32,
    dead: u32,
}

/// Why a record could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The bytes are not a record of the expected kind, in either format: reading again
    /// cannot help.
    #[error("unreadable record: {0}")]
    Unreadable(String),
    /// The writer schema could not be fetched now; a later try may succeed.
    #[error(transparent)]
    Unavailable(RegistryError),
}

impl HistoryCodec {
    /// The codec `settings` ask for: `history.format`, and `ingest.schema_registry` for
    /// Avro records (written, or read after a switch).
    pub fn new(settings: &Settings) -> Self {
        let registry = Registry::new(&settings.ingest.schema_registry)
            .map(|r| r.map(Arc::new))
            .map_err(|e| e.to_string());
        Self {
            format: settings.history.format,
            registry,
            deliveries_subject: format!("{}-value", settings.topics.deliveries),
            dlq_subject: format!("{}-value", settings.topics.dlq),
            ids: OnceCell::new(),
            registry_down: AtomicBool::new(false),
        }
    }

    /// The format records are written in.
    pub fn format(&self) -> HistoryFormat {
        self.format
    }

    /// True while Avro output waits for its schemas to be registered because the registry
    /// fails.
    pub fn registry_down(&self) -> bool {
        self.registry_down.load(Ordering::Relaxed)
    }

    /// Whether records can be written now: JSON, or Avro with its schemas registered.
    pub fn is_ready(&self) -> bool {
        self.format == HistoryFormat::Json || self.ids.initialized()
    }

    /// Registers the schemas Avro output needs (once; every caller waits for the same
    /// registration), trying again with backoff while the registry fails. With JSON output,
    /// returns at once.
    pub async fn ready(&self) {
        if self.format == HistoryFormat::Avro {
            self.ids().await;
        }
    }

    async fn ids(&self) -> Ids {
        *self.ids.get_or_init(|| self.register()).await
    }

    async fn register(&self) -> Ids {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.try_register().await {
                Ok(ids) => {
                    self.registry_down.store(false, Ordering::Relaxed);
                    tracing::info!(
                        deliveries_subject = %self.deliveries_subject,
                        deliveries_schema_id = ids.record,
                        dlq_subject = %self.dlq_subject,
                        dlq_schema_id = ids.dead,
                        "history schemas registered: writing Avro"
                    );
                    return ids;
                }
                Err(reason) => {
                    self.registry_down.store(true, Ordering::Relaxed);
                    tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64,
                        "history schemas not registered: outcomes wait");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_register(&self) -> Result<Ids, String> {
        let registry = match &self.registry {
            Ok(Some(registry)) => registry,
            Ok(None) => return Err("no ingest.schema_registry.url is set".into()),
            Err(e) => return Err(e.clone()),
        };
        let register = |subject: &str, text: &'static str| {
            let registry = registry.clone();
            let subject = subject.to_owned();
            async move {
                registry
                    .register(&subject, text)
                    .await
                    .map_err(|e: RegisterError| e.to_string())
            }
        };
        Ok(Ids {
            record: register(&self.deliveries_subject, DeliveryRecord::schema_text()).await?,
            dead: register(&self.dlq_subject, DeadDelivery::schema_text()).await?,
        })
    }

    /// The value of a `herald.deliveries` record.
    pub async fn encode_record(&self, record: &DeliveryRecord) -> Vec<u8> {
        match self.format {
            HistoryFormat::Json => json(record),
            HistoryFormat::Avro => {
                let id = self.ids().await.record;
                confluent(id, record)
            }
        }
    }

    /// The value of a `herald.dlq` record for a delivery.
    pub async fn encode_dead(&self, dead: &DeadDelivery) -> Vec<u8> {
        match self.format {
            HistoryFormat::Json => json(dead),
            HistoryFormat::Avro => {
                let id = self.ids().await.dead;
                confluent(id, dead)
            }
        }
    }

    /// Reads a `herald.deliveries` value in either format.
    pub fn decode_record(&self, bytes: &[u8]) -> Result<DeliveryRecord, ReadError> {
        self.decode(bytes)
    }

    /// Reads a `herald.dlq` value of a delivery in either format.
    pub fn decode_dead(&self, bytes: &[u8]) -> Result<DeadDelivery, ReadError> {
        self.decode(bytes)
    }

    /// Reads a `herald.deliveries` value for a reader that must not skip a record: while the
    /// registry is unavailable, tries again with backoff until it answers or `give_up` says so
    /// (then the answer is [`ReadError::Unavailable`]). Blocks the thread: for readers on
    /// threads of their own.
    pub fn decode_record_waiting(
        &self,
        bytes: &[u8],
        give_up: impl Fn() -> bool,
    ) -> Result<DeliveryRecord, ReadError> {
        waiting(|| self.decode_record(bytes), give_up)
    }

    /// [`HistoryCodec::decode_record_waiting`] for a `herald.dlq` value of a delivery.
    pub fn decode_dead_waiting(
        &self,
        bytes: &[u8],
        give_up: impl Fn() -> bool,
    ) -> Result<DeadDelivery, ReadError> {
        waiting(|| self.decode_dead(bytes), give_up)
    }

    fn decode<T: AvroRecord + DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, ReadError> {
        let [CONFLUENT_MAGIC, a, b, c, d, datum @ ..] = bytes else {
            return serde_json::from_slice(bytes)
                .map_err(|e| ReadError::Unreadable(excerpt(&e.to_string())));
        };
        let id = u32::from_be_bytes([*a, *b, *c, *d]);
        let registry = match &self.registry {
            Ok(Some(registry)) => registry,
            Ok(None) => {
                return Err(ReadError::Unreadable(format!(
                    "schema id {id}: an Avro record, and no ingest.schema_registry.url is set"
                )));
            }
            Err(e) => return Err(ReadError::Unreadable(format!("schema id {id}: {e}"))),
        };
        let writer = registry.fetch_blocking(id).map_err(|e| match e {
            RegistryError::Unavailable { .. } => ReadError::Unavailable(e),
            other => ReadError::Unreadable(other.to_string()),
        })?;
        let mut datum = datum;
        let value =
            apache_avro::from_avro_datum(&writer, &mut datum, Some(T::schema())).map_err(|e| {
                ReadError::Unreadable(format!("schema id {id}: {}", excerpt(&e.to_string())))
            })?;
        T::from_avro(&value).map_err(|e| {
            ReadError::Unreadable(format!("schema id {id}: {}", excerpt(&e.to_string())))
        })
    }
}

fn waiting<T>(
    decode: impl Fn() -> Result<T, ReadError>,
    give_up: impl Fn() -> bool,
) -> Result<T, ReadError> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match decode() {
            Err(ReadError::Unavailable(e)) if !give_up() => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                    "record waits for its writer schema");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            answer => return answer,
        }
    }
}

/// How long a one-shot reader (`herald history`, redrive) waits for a registry that is down
/// before it gives up with an error rather than skip a record.
pub const ONE_SHOT_PATIENCE: Duration = Duration::from_secs(30);

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // History records and dead deliveries are plain data: they always serialise.
    serde_json::to_vec(value).expect("history records serialise")
}

/// Magic byte 0, `id` big-endian, the datum. A record the schema cannot hold (a number out of
/// Avro's range) is written as JSON instead, which every reader reads too: an outcome is never
/// dropped for its format.
fn confluent<T: AvroRecord + serde::Serialize>(id: u32, record: &T) -> Vec<u8> {
    match avro::to_datum(record) {
        Ok(datum) => {
            let mut out = Vec::with_capacity(5 + datum.len());
            out.push(CONFLUENT_MAGIC);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&datum);
            out
        }
        Err(e) => {
            tracing::error!(error = %e, "record does not fit its Avro schema; written as JSON");
            json(record)
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::records::{Attempt, DeliveryStatus};

    fn settings(url: &str, format: HistoryFormat) -> Settings {
        let mut s = Settings::defaults();
        s.ingest.schema_registry.url = url.to_owned();
        s.history.format = format;
        s
    }

    fn record() -> DeliveryRecord {
        let at = Utc.timestamp_millis_opt(1_774_102_690_123).unwrap();
        DeliveryRecord {
            delivery_id: "dl_1".into(),
            workspace_id: "ws".into(),
            event_id: "evt_1".into(),
            event: "signup".into(),
            rule_id: Some("r".into()),
            connection_id: Some("c".into()),
            destination: Some("webhook".into()),
            action: Some("post".into()),
            status: DeliveryStatus::Delivered,
            reason: None,
            attempts: vec![Attempt {
                at,
                outcome: "delivered".into(),
                status_code: Some(200),
                error: None,
                latency_ms: 3,
            }],
            skipped_count: None,
            next_attempt_at: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json_and_confluent_avro_are_both_read_whatever_the_format_written() {
        let (_sandbox, url) = crate::kafka::registry::tests::sandbox().await;
        let avro = HistoryCodec::new(&settings(&url, HistoryFormat::Avro));
        let json = HistoryCodec::new(&settings(&url, HistoryFormat::Json));
        assert!(json.is_ready() && !avro.is_ready());
        let as_json = json.encode_record(&record()).await;
        let as_avro = avro.encode_record(&record()).await;
        assert!(avro.is_ready());
        assert_eq!(as_json.first(), Some(&b'{'));
        assert_eq!(as_avro[0], CONFLUENT_MAGIC);
        for codec in [&avro, &json] {
            for bytes in [&as_json, &as_avro] {
                let bytes = bytes.clone();
                let read = tokio::task::block_in_place(|| codec.decode_record(&bytes)).unwrap();
                assert_eq!(read, record());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_avro_record_that_cannot_be_read_names_its_schema_id() {
        let (sandbox, url) = crate::kafka::registry::tests::sandbox().await;
        let codec = HistoryCodec::new(&settings(&url, HistoryFormat::Avro));
        let mut bytes = codec.encode_record(&record()).await;
        let read = |codec: &HistoryCodec, bytes: &[u8]| {
            tokio::task::block_in_place(|| codec.decode_record(bytes)).unwrap_err()
        };

        // An id the registry does not know.
        let unknown = [&[0, 0, 0, 0, 99][..], &bytes[5..]].concat();
        let err = read(&codec, &unknown);
        assert!(
            matches!(&err, ReadError::Unreadable(r) if r.contains("schema id 99")),
            "{err}"
        );

        // Without a registry.
        let none = HistoryCodec::new(&Settings::defaults());
        let err = read(&none, &bytes);
        assert!(
            matches!(&err, ReadError::Unreadable(r) if r.contains("schema id 1") && r.contains("ingest.schema_registry.url")),
            "{err}"
        );

        // A registry that is down: not unreadable, unavailable (a reader waits and tries again).
        let fresh = HistoryCodec::new(&settings(&url, HistoryFormat::Json));
        sandbox.inject(
            serde_json::from_value(
                serde_json::json!({"path": "/registry/schemas", "count": 1, "status": 503}),
            )
            .unwrap(),
        );
        let err = read(&fresh, &bytes);
        assert!(matches!(err, ReadError::Unavailable(_)), "{err}");
        let waited = tokio::task::block_in_place(|| fresh.decode_record_waiting(&bytes, || false));
        assert_eq!(waited.unwrap(), record(), "read once the registry answers");

        // A datum cut short.
        bytes.truncate(bytes.len() - 3);
        let err = read(&codec, &bytes);
        assert!(
            matches!(&err, ReadError::Unreadable(r) if r.contains("schema id 1")),
            "{err}"
        );
    }
}
