//! Fetching a Confluent wire-format record's writer schema before the processor decodes it.
//!
//! Decoding is synchronous and in arrival order, and the consumer must be polled all the while
//! (or it leaves its group). So a record whose schema id is not cached waits here, before it is
//! begun: one fetch, bounded by `ingest.schema_registry.timeout_ms`; when the registry is
//! unavailable, fetching is paused on every assigned partition and the consumer keeps polling
//! (records already on their way are kept, in order, as while the in-flight window is full),
//! `/readyz` reports the registry, and the fetch is retried with backoff until it answers. A
//! registry outage thus holds input back; it never dead-letters a record.

use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use std::sync::atomic::Ordering;
use tokio::sync::watch;

use super::health::Health;
use super::processor::{ProcessorContext, stopped};
use crate::ingest::Decoder;
use crate::kafka::registry::RegistryError;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Makes sure `m`'s writer schema (if it has one to fetch) is cached, or known to be unknown.
/// False on shutdown: `m` was not begun and its offset is not stored.
pub async fn fetch_before_begin(
    decoder: &Decoder,
    consumer: &StreamConsumer<ProcessorContext>,
    m: &OwnedMessage,
    overflow: &mut Vec<OwnedMessage>,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let (Some(id), Some(registry)) = (decoder.schema_to_fetch(m.payload()), decoder.registry())
    else {
        return true;
    };
    let first = tokio::select! {
        answer = registry.fetch(id) => answer,
        _ = stopped(shutdown) => return false,
    };
    let Err(RegistryError::Unavailable { reason, .. }) = first else {
        return true;
    };
    let pause = |consumer: &StreamConsumer<ProcessorContext>| {
        if let Ok(assigned) = consumer.assignment() {
            let _ = consumer.pause(&assigned);
        }
    };
    pause(consumer);
    health.schema_registry_down.store(true, Ordering::Relaxed);
    tracing::warn!(schema_id = id, %reason, "schema registry unavailable: input paused");
    let mut backoff = FIRST_BACKOFF;
    let resumed = loop {
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {
                // Waiting for the registry is not a wedged processor.
                health.progressed();
                match registry.fetch(id).await {
                    Err(RegistryError::Unavailable { reason, .. }) => {
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        tracing::debug!(schema_id = id, %reason, ?backoff, "schema fetch failed");
                    }
                    _ => break true,
                }
            }
            r = consumer.recv() => match r {
                Ok(r) => {
                    overflow.push(r.detach());
                    pause(consumer); // a partition assigned meanwhile is paused too
                }
                Err(e) => tracing::warn!(error = %e, "consume error"),
            },
            _ = stopped(shutdown) => break false,
        }
    };
    health.schema_registry_down.store(false, Ordering::Relaxed);
    if let Ok(assigned) = consumer.assignment() {
        let _ = consumer.resume(&assigned);
    }
    if resumed {
        tracing::info!(schema_id = id, "schema registry answered: input resumed");
    }
    resumed
}
