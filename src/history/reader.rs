//! Reading delivery history back: the whole compacted topic, latest record per delivery id.
//! This is a scan, fit for the CLI and for workspaces' recent history; dedupe keeps its own
//! view of the partitions it owns (`deliver::dedupe`). Records are read in either format
//! ([`codec`](super::codec)).

use std::collections::HashMap;
use std::time::Instant;

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;

use super::codec::{HistoryCodec, ONE_SHOT_PATIENCE, ReadError};
use crate::kafka;
use crate::kafka::registry::RegistryError;
use crate::model::records::DeliveryRecord;
use crate::settings::Settings;

/// Which records to return.
#[derive(Debug, Default, Clone)]
pub struct HistoryQuery {
    pub workspace_id: String,
    pub event_id: Option<String>,
}

/// Why history could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryReadError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// An Avro record's writer schema could not be fetched: the scan stops rather than skip it.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

/// The latest state of every delivery matching `query`, oldest first. Records that cannot be
/// read are counted in the second value, not hidden.
pub fn read(
    settings: &Settings,
    query: &HistoryQuery,
) -> Result<(Vec<DeliveryRecord>, usize), HistoryReadError> {
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    let codec = HistoryCodec::new(settings);
    let mut latest: HashMap<String, (usize, DeliveryRecord)> = HashMap::new();
    let mut unreadable = 0;
    let mut unavailable = None;
    let mut seq = 0;
    kafka::read_to_end(&consumer, &settings.topics.deliveries, |m| {
        seq += 1;
        let Some(value) = m.payload() else {
            return;
        };
        if unavailable.is_some() {
            return;
        }
        let started = Instant::now();
        match codec.decode_record_waiting(value, || started.elapsed() > ONE_SHOT_PATIENCE) {
            Ok(r) => {
                let wanted = r.workspace_id == query.workspace_id
                    && query.event_id.as_ref().is_none_or(|e| *e == r.event_id);
                if wanted {
                    latest.insert(r.delivery_id.clone(), (seq, r));
                }
            }
            Err(ReadError::Unavailable(e)) => unavailable = Some(e),
            Err(ReadError::Unreadable(_)) => unreadable += 1,
        }
    })?;
    if let Some(e) = unavailable {
        return Err(e.into());
    }
    let mut records: Vec<_> = latest.into_values().collect();
    records.sort_by_key(|(seq, r)| (r.created_at, *seq));
    Ok((records.into_iter().map(|(_, r)| r).collect(), unreadable))
}
