//! The credential table: every processor reads `herald.credentials` to its end before it
//! compiles workspaces, then follows it live, decrypting each record in memory. A record that
//! does not decrypt makes its connection unusable (with the reason), nothing else.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use super::keys::Keyring;
use super::sealed::{self, Fields, RecordKey};
use crate::kafka;
use crate::settings::Settings;

/// What the store holds for one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Ready(Arc<Fields>),
    /// The record is there but cannot be used here; the reason names no secret.
    Unusable(String),
}

/// The decrypted credentials of every connection that has stored ones.
#[derive(Debug)]
pub struct CredentialTable {
    keys: Keyring,
    entries: RwLock<HashMap<RecordKey, Stored>>,
    ready: watch::Sender<bool>,
}

impl Default for CredentialTable {
    fn default() -> Self {
        Self::new(Keyring::default())
    }
}

impl CredentialTable {
    /// An empty table that decrypts with `keys`.
    pub fn new(keys: Keyring) -> Self {
        Self {
            keys,
            entries: RwLock::default(),
            ready: watch::channel(false).0,
        }
    }

    /// The keys records are decrypted with, and new ones encrypted with.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// The stored credentials of `connection` of `workspace`, if any were stored. Only the
    /// workspace's own connection is ever looked up by this pair.
    pub fn get(&self, workspace: &str, connection: &str) -> Option<Stored> {
        let key = RecordKey::new(workspace, connection)?;
        // A poisoned lock means a panic while swapping an entry; the map is still whole.
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(&key).cloned()
    }

    /// Applies one record of `herald.credentials`; returns the workspace whose credentials
    /// changed (a record that re-encrypts the same values, as key rotation writes, is no change).
    pub fn apply(&self, key: &[u8], value: Option<&[u8]>) -> Option<String> {
        let Some(record) = RecordKey::parse(key) else {
            tracing::error!(
                "credential record with a key that is not `workspace/connection` ignored"
            );
            return None;
        };
        let entry = value.map(|v| match sealed::open(&record, v, &self.keys) {
            Ok(fields) => Stored::Ready(Arc::new(fields)),
            Err(e) => {
                tracing::error!(workspace = %record.workspace, connection = %record.connection,
                    error = %e, "stored credentials unusable");
                Stored::Unusable(e.to_string())
            }
        });
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let previous = match entry {
            Some(entry) => entries.insert(record.clone(), entry.clone()),
            None => entries.remove(&record),
        };
        let current = entries.get(&record);
        (previous.as_ref() != current).then(|| record.workspace.clone())
    }

    /// Number of connections with stored credentials, usable or not.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no credentials are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the initial load done.
    pub fn mark_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Whether the topic has been read to its end once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }
}

/// Starts the thread that loads `herald.credentials` into `table` and follows it until `stop`;
/// `changed` is called with the workspace of every record that changed a connection's
/// credentials after the initial load.
pub fn spawn_loader(
    settings: &Settings,
    table: Arc<CredentialTable>,
    changed: impl Fn(&str) + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, KafkaError> {
    let topic = settings.topics.credentials.clone();
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    std::thread::Builder::new()
        .name("herald-credentials".into())
        .spawn(move || {
            kafka::follow::follow_compacted(
                &consumer,
                &topic,
                &stop,
                |m| {
                    let Some(key) = m.key() else {
                        tracing::error!(
                            partition = m.partition(),
                            offset = m.offset(),
                            "credential record without a key ignored"
                        );
                        return;
                    };
                    if let Some(workspace) = table.apply(key, m.payload())
                        && table.is_ready()
                    {
                        changed(&workspace);
                    }
                },
                || {
                    tracing::info!(connections = table.len(), "credential store loaded");
                    table.mark_ready();
                },
            )
        })
        .map_err(|e| KafkaError::ClientCreation(format!("cannot start loader thread: {e}")))
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::model::Secret;

    #[test]
    fn only_a_change_of_values_counts_and_bad_records_are_unusable() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([1u8; 32]);
        let b64_2 = base64::engine::general_purpose::STANDARD.encode([2u8; 32]);
        let keys = |k: &str| Keyring::from_sources(Some(k), None, None, "").unwrap();
        let table = CredentialTable::new(keys(&format!("k2:{b64_2},k1:{b64}")));
        let record = RecordKey::new("ws", "crm").unwrap();
        let fields: Fields = [("token".to_owned(), Secret::new("t1"))].into();
        let k1 = keys(&format!("k1:{b64}"));
        let value = sealed::seal(&record, &fields, k1.write_key().unwrap());
        assert_eq!(table.apply(b"ws/crm", Some(&value)), Some("ws".into()));
        assert_eq!(
            table.get("ws", "crm"),
            Some(Stored::Ready(Arc::new(fields.clone())))
        );
        assert_eq!(
            table.get("other", "crm"),
            None,
            "another workspace sees nothing"
        );
        let k2 = keys(&format!("k2:{b64_2}"));
        let rotated = sealed::seal(&record, &fields, k2.write_key().unwrap());
        assert_eq!(table.apply(b"ws/crm", Some(&rotated)), None);
        assert_eq!(table.apply(b"ws/crm", Some(b"garbage")), Some("ws".into()));
        assert!(
            matches!(table.get("ws", "crm"), Some(Stored::Unusable(r)) if r.contains("format"))
        );
        assert_eq!(table.apply(b"ws/crm", None), Some("ws".into()));
        assert_eq!(table.get("ws", "crm"), None);
        assert_eq!(table.apply(b"no-slash", Some(&value)), None);
    }
}
