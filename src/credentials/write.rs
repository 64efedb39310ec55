//! Writing the store: set a connection's credentials, delete them (a tombstone), and re-encrypt
//! every record under the current write key. Used by `herald credentials`.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::keys::Keyring;
use super::sealed::{self, Fields, RecordKey};
use crate::kafka;
use crate::settings::Settings;

const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the store could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(
        "no key to encrypt with: set HERALD_SECRETS_KEYS, HERALD_SECRETS_KEY or credentials.keys_dir"
    )]
    NoKey,
    #[error("cannot write {topic}")]
    Kafka {
        topic: String,
        #[source]
        source: KafkaError,
    },
}

/// What `rotate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Records re-encrypted under the write key.
    pub rotated: Vec<String>,
    /// Records that were under the write key already.
    pub current: usize,
    /// Records that could not be opened, with the reason; left as they are.
    pub unreadable: Vec<(String, String)>,
}

/// Encrypts `fields` under the write key and stores them for `record`.
pub async fn put(
    settings: &Settings,
    producer: &FutureProducer,
    keys: &Keyring,
    record: &RecordKey,
    fields: &Fields,
) -> Result<(), WriteError> {
    let key = keys.write_key().ok_or(WriteError::NoKey)?;
    let value = sealed::seal(record, fields, key);
    send(settings, producer, record, Some(&value)).await
}

/// Deletes the credentials of `record` (a tombstone; compaction removes the older values).
pub async fn delete(
    settings: &Settings,
    producer: &FutureProducer,
    record: &RecordKey,
) -> Result<(), WriteError> {
    send(settings, producer, record, None).await
}

async fn send(
    settings: &Settings,
    producer: &FutureProducer,
    record: &RecordKey,
    value: Option<&[u8]>,
) -> Result<(), WriteError> {
    let topic = &settings.topics.credentials;
    let key = record.to_string();
    let mut out = FutureRecord::<String, [u8]>::to(topic).key(&key);
    if let Some(value) = value {
        out = out.payload(value);
    }
    producer
        .send(out, SEND_TIMEOUT)
        .await
        .map(|_| ())
        .map_err(|(source, _)| WriteError::Kafka {
            topic: topic.clone(),
            source,
        })
}

/// The latest value of every record now in the store (`None` for a deleted one).
pub fn read_all(settings: &Settings) -> Result<BTreeMap<RecordKey, Option<Vec<u8>>>, KafkaError> {
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    let mut latest = BTreeMap::new();
    kafka::read_to_end(&consumer, &settings.topics.credentials, |m| {
        if let Some(key) = m.key().and_then(RecordKey::parse) {
            latest.insert(key, m.payload().map(<[u8]>::to_vec));
        }
    })?;
    Ok(latest)
}

/// Re-encrypts every record of `latest` (see [`read_all`]) that is not under the write key.
/// Processors that hold both keys read either form, so deliveries go on while this runs.
pub async fn rotate(
    settings: &Settings,
    producer: &FutureProducer,
    keys: &Keyring,
    latest: BTreeMap<RecordKey, Option<Vec<u8>>>,
) -> Result<Rotation, WriteError> {
    let write = keys.write_key().ok_or(WriteError::NoKey)?;
    let mut rotation = Rotation::default();
    for (record, value) in latest {
        let Some(value) = value else { continue };
        let opened = sealed::key_id(&value).and_then(|id| {
            if id == write.id {
                Ok(None)
            } else {
                sealed::open(&record, &value, keys).map(Some)
            }
        });
        match opened {
            Ok(None) => rotation.current += 1,
            Ok(Some(fields)) => {
                put(settings, producer, keys, &record, &fields).await?;
                rotation.rotated.push(record.to_string());
            }
            Err(e) => rotation
                .unreadable
                .push((record.to_string(), e.to_string())),
        }
    }
    Ok(rotation)
}
