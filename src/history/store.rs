//! The history query store: a materialised view of `herald.deliveries` in an embedded SQLite
//! file, answering "this workspace's deliveries, newest first, filtered" in milliseconds for
//! millions of deliveries with bounded memory.
//!
//! Why SQLite: the queries are secondary-index range scans with several optional filters and
//! keyset pagination, which an embedded key-value store would make us hand-build index by
//! index; SQLite keeps the data on disk with a fixed page cache, survives restarts (it resumes
//! from the offsets it stored in the same transactions as the records), and is rebuilt from the
//! topic when its file is missing. It is a cache of the topic, never the source of truth.
//!
//! A follower thread ([`spawn_follower`]) reads every partition of the topic from where the
//! file left off and applies records in batches: the latest record per delivery id replaces
//! the row, a tombstone deletes it. The store is ready once it reached the end the topic had
//! when the follower started.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::codec::{CONFLUENT_MAGIC, HistoryCodec, ReadError};
use crate::kafka;
use crate::model::records::{DeliveryRecord, DeliveryStatus};
use crate::settings::Settings;

/// SQLite page cache per store, in KiB: the store's memory bound, whatever its size on disk.
const CACHE_KIB: i64 = 16 * 1024;

/// Records applied per transaction while catching up.
const BATCH: usize = 2_000;

/// The most deliveries one query returns.
pub const MAX_LIMIT: usize = 500;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("history store: kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("history store: invalid cursor `{0}`")]
    Cursor(String),
}

/// Which deliveries to list. `workspace_id` is required; every other filter is optional.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub workspace_id: String,
    pub statuses: Vec<DeliveryStatus>,
    pub event: Option<String>,
    pub event_id: Option<String>,
    pub rule_id: Option<String>,
    pub connection_id: Option<String>,
    /// Last updated at or after.
    pub since: Option<DateTime<Utc>>,
    /// Last updated before.
    pub until: Option<DateTime<Utc>>,
    /// At most this many (capped at [`MAX_LIMIT`]).
    pub limit: usize,
    /// From a previous page's `next`.
    pub cursor: Option<String>,
}

/// One page of deliveries, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub deliveries: Vec<DeliveryRecord>,
    /// The cursor of the next page, when there may be one.
    pub next: Option<String>,
}

/// A record read from the topic: partition, offset, value (`None`: a tombstone) and key.
pub type Read = (i32, i64, Option<Vec<u8>>, Vec<u8>);

/// The store: one SQLite connection behind a lock (queries take milliseconds).
pub struct HistoryStore {
    db: Mutex<Connection>,
    ready: AtomicBool,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl HistoryStore {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Connection::open(path)?;
        db.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -{CACHE_KIB};
             CREATE TABLE IF NOT EXISTS deliveries (
                 delivery_id TEXT PRIMARY KEY,
                 workspace_id TEXT NOT NULL,
                 event_id TEXT NOT NULL,
                 event TEXT NOT NULL,
                 rule_id TEXT,
                 connection_id TEXT,
                 status TEXT NOT NULL,
                 updated_at INTEGER NOT NULL,
                 record TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS by_workspace
                 ON deliveries (workspace_id, updated_at DESC, delivery_id DESC);
             CREATE INDEX IF NOT EXISTS by_event_id ON deliveries (workspace_id, event_id);
             CREATE TABLE IF NOT EXISTS positions (
                 partition INTEGER PRIMARY KEY,
                 next_offset INTEGER NOT NULL
             );"
        ))?;
        Ok(Self {
            db: Mutex::new(db),
            ready: AtomicBool::new(false),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the store caught up with the topic's end at start.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The next offset to read per partition, as far as the file got.
    pub fn positions(&self) -> Result<HashMap<i32, i64>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT partition, next_offset FROM positions")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Applies records read from the topic, in order, with the positions they reach, in one
    /// transaction. A record that is not a delivery record is skipped (the topic is Herald's
    /// own; the CLI reports such records).
    pub fn apply(&self, records: &[Read]) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO deliveries
                     (delivery_id, workspace_id, event_id, event, rule_id, connection_id, status,
                      updated_at, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (delivery_id) DO UPDATE SET
                     workspace_id = ?2, event_id = ?3, event = ?4, rule_id = ?5,
                     connection_id = ?6, status = ?7, updated_at = ?8, record = ?9",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM deliveries WHERE delivery_id = ?1")?;
            let mut position = tx.prepare_cached(
                "INSERT INTO positions (partition, next_offset) VALUES (?1, ?2)
                 ON CONFLICT (partition) DO UPDATE SET next_offset = ?2",
            )?;
            for (partition, offset, value, key) in records {
                match value {
                    None => {
                        delete.execute([String::from_utf8_lossy(key)])?;
                    }
                    Some(value) => {
                        if let Ok(r) = serde_json::from_slice::<DeliveryRecord>(value) {
                            upsert.execute(params![
                                r.delivery_id,
                                r.workspace_id,
                                r.event_id,
                                r.event,
                                r.rule_id,
                                r.connection_id,
                                r.status.as_str(),
                                r.updated_at.timestamp_millis(),
                                String::from_utf8_lossy(value),
                            ])?;
                        }
                    }
                }
                position.execute(params![partition, offset + 1])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The latest state of one delivery of `workspace_id`.
    pub fn get(
        &self,
        workspace_id: &str,
        delivery_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let db = self.db();
        let text: Option<String> = db
            .query_row(
                "SELECT record FROM deliveries WHERE delivery_id = ?1 AND workspace_id = ?2",
                [delivery_id, workspace_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// One page of `query`'s deliveries, newest first (by last update, then id).
    pub fn query(&self, query: &DeliveryQuery) -> Result<Page, StoreError> {
        let mut sql = String::from("SELECT record FROM deliveries WHERE workspace_id = ?");
        let mut args: Vec<rusqlite::types::Value> = vec![query.workspace_id.clone().into()];
        if !query.statuses.is_empty() {
            let marks = vec!["?"; query.statuses.len()].join(", ");
            sql.push_str(&format!(" AND status IN ({marks})"));
            args.extend(query.statuses.iter().map(|s| s.as_str().to_owned().into()));
        }
        for (column, value) in [
            ("event", &query.event),
            ("event_id", &query.event_id),
            ("rule_id", &query.rule_id),
            ("connection_id", &query.connection_id),
        ] {
            if let Some(v) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(v.clone().into());
            }
        }
        if let Some(since) = query.since {
            sql.push_str(" AND updated_at >= ?");
            args.push(since.timestamp_millis().into());
        }
        if let Some(until) = query.until {
            sql.push_str(" AND updated_at < ?");
            args.push(until.timestamp_millis().into());
        }
        if let Some(cursor) = &query.cursor {
            let (at, id) = parse_cursor(cursor)?;
            sql.push_str(" AND (updated_at, delivery_id) < (?, ?)");
            args.push(at.into());
            args.push(id.into());
        }
        let limit = query.limit.clamp(1, MAX_LIMIT);
        sql.push_str(" ORDER BY updated_at DESC, delivery_id DESC LIMIT ?");
        args.push((limit as i64 + 1).into());
        let db = self.db();
        let mut stmt = db.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| r.get::<_, String>(0))?;
        let mut deliveries = Vec::new();
        for text in rows {
            if let Ok(record) = serde_json::from_str::<DeliveryRecord>(&text?) {
                deliveries.push(record);
            }
        }
        let next = (deliveries.len() > limit).then(|| {
            deliveries.truncate(limit);
            let last = &deliveries[limit - 1];
            format!(
                "{}_{}",
                last.updated_at.timestamp_millis(),
                last.delivery_id
            )
        });
        Ok(Page { deliveries, next })
    }

    /// How many deliveries of `workspace_id` last updated at or after `since` have each
    /// status (statuses with none are left out).
    pub fn counts(
        &self,
        workspace_id: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<(DeliveryStatus, u64)>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT status, COUNT(*) FROM deliveries WHERE workspace_id = ?1 AND updated_at >= ?2
             GROUP BY status",
        )?;
        let rows = stmt.query_map(params![workspace_id, since.timestamp_millis()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut counts = Vec::new();
        for row in rows {
            let (status, n) = row?;
            if let Some(status) = DeliveryStatus::ALL.iter().find(|s| s.as_str() == status) {
                counts.push((*status, n.max(0) as u64));
            }
        }
        Ok(counts)
    }
}

/// A cursor is `<milliseconds>_<delivery id>`: 1 to 16 digits, an underscore, anything.
fn parse_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    cursor
        .split_once('_')
        .filter(|(at, _)| (1..=16).contains(&at.len()) && at.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .ok_or_else(|| StoreError::Cursor(crate::model::excerpt(cursor)))
}

/// Follows `herald.deliveries` into `store` until `stop` is set: from where the file left off
/// (or the beginning), marking the store ready once it reached the end the topic had now.
pub fn spawn_follower(
    settings: &Settings,
    store: Arc<HistoryStore>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, StoreError> {
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    let topic = settings.topics.deliveries.clone();
    let positions = store.positions()?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..kafka::partition_count(&consumer, &topic)? {
        let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
        // Records before `low` were removed by retention since; their rows simply stay.
        let from = positions.get(&p).map(|&f| f.max(low));
        if from.is_none_or(|f| f < high) && high > low {
            ends.insert(p, high);
        }
        let offset = from.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(&topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    if ends.is_empty() {
        store.ready.store(true, Ordering::Relaxed);
    }
    let codec = HistoryCodec::new(settings);
    let handle = std::thread::Builder::new()
        .name("herald-history-store".into())
        .spawn(move || follow(&consumer, &codec, &store, &stop, ends))
        .expect("spawning a thread");
    Ok(handle)
}

fn follow(
    consumer: &BaseConsumer,
    codec: &HistoryCodec,
    store: &HistoryStore,
    stop: &AtomicBool,
    mut ends: HashMap<i32, i64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while !stop.load(Ordering::Relaxed) {
        let message = consumer.poll(Duration::from_millis(100));
        if let Some(Ok(m)) = &message {
            let key = m.key().unwrap_or_default().to_vec();
            let value = match m.payload() {
                Some(value) => match as_json(codec, value, stop) {
                    Some(json) => Some(json),
                    // Stopping while the registry is down: this record is read next time.
                    None => return,
                },
                None => None,
            };
            batch.push((m.partition(), m.offset(), value, key));
            if let Some(end) = ends.get(&m.partition())
                && m.offset() + 1 >= *end
            {
                ends.remove(&m.partition());
            }
        }
        if let Some(Err(e)) = &message {
            tracing::warn!(error = %e, "history store: read error");
        }
        // Apply when the batch is full, or when the topic has nothing more right now.
        if batch.len() >= BATCH || (!batch.is_empty() && !matches!(message, Some(Ok(_)))) {
            // Applied before anything more is read, so the batch never grows past its size.
            while let Err(e) = store.apply(&batch) {
                tracing::error!(error = %e, "history store: records not applied; trying again");
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            batch.clear();
        }
        if ends.is_empty() && batch.is_empty() && !store.is_ready() {
            store.ready.store(true, Ordering::Relaxed);
            tracing::info!("history store caught up with the deliveries topic");
        }
    }
}

/// A history value as the JSON the store keeps: Avro records are read with their writer schema
/// (waiting while the registry is down, so none is skipped), anything else is kept as it is.
/// `None` when `stop` was set while waiting.
fn as_json(codec: &HistoryCodec, value: &[u8], stop: &AtomicBool) -> Option<Vec<u8>> {
    if value.first() != Some(&CONFLUENT_MAGIC) {
        return Some(value.to_vec());
    }
    match codec.decode_record_waiting(value, || stop.load(Ordering::Relaxed)) {
        // A DeliveryRecord always serialises.
        Ok(record) => Some(serde_json::to_vec(&record).expect("history records serialise")),
        Err(ReadError::Unreadable(reason)) => {
            tracing::warn!(%reason, "history store: record skipped");
            Some(value.to_vec())
        }
        Err(ReadError::Unavailable(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, ws: &str, status: DeliveryStatus, at_s: i64) -> Vec<u8> {
        let at = DateTime::from_timestamp(1_800_000_000 + at_s, 0).unwrap();
        serde_json::to_vec(&DeliveryRecord {
            delivery_id: id.into(),
            workspace_id: ws.into(),
            event_id: format!("evt_{id}"),
            event: "lesson.completed".into(),
            rule_id: Some("r".into()),
            connection_id: Some(if at_s % 2 == 0 { "crm" } else { "hook" }.into()),
            destination: Some("webhook".into()),
            action: Some("post".into()),
            status,
            reason: None,
            attempts: Vec::new(),
            skipped_count: None,
            next_attempt_at: None,
            created_at: at,
            updated_at: at,
        })
        .unwrap()
    }

    fn store() -> (tempfile::TempDir, HistoryStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = HistoryStore::open(&dir.path().join("history.db")).unwrap();
        (dir, store)
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.deliveries
            .iter()
            .map(|d| d.delivery_id.as_str())
            .collect()
    }

    #[test]
    fn counts_are_per_status_of_one_workspace_since_a_time() {
        let (_dir, s) = store();
        let rows: Vec<Read> = [
            ("a", "ws", DeliveryStatus::Delivered, 10),
            ("b", "ws", DeliveryStatus::Delivered, 11),
            ("c", "ws", DeliveryStatus::Failed, 12),
            ("d", "ws", DeliveryStatus::Dead, 1),
            ("e", "other", DeliveryStatus::Failed, 13),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, (id, ws, status, at))| {
            (
                0,
                i as i64,
                Some(record(id, ws, status, at)),
                id.as_bytes().to_vec(),
            )
        })
        .collect();
        s.apply(&rows).unwrap();
        let since = DateTime::from_timestamp(1_800_000_005, 0).unwrap();
        let mut counts = s.counts("ws", since).unwrap();
        counts.sort_by_key(|(status, _)| status.as_str());
        assert_eq!(
            counts,
            [(DeliveryStatus::Delivered, 2), (DeliveryStatus::Failed, 1)]
        );
    }

    #[test]
    fn latest_record_wins_and_a_tombstone_deletes() {
        let (_dir, s) = store();
        s.apply(&[
            (
                0,
                0,
                Some(record("a", "ws", DeliveryStatus::Retrying, 1)),
                b"a".to_vec(),
            ),
            (
                0,
                1,
                Some(record("a", "ws", DeliveryStatus::Delivered, 2)),
                b"a".to_vec(),
            ),
            (
                1,
                0,
                Some(record("b", "ws", DeliveryStatus::Dead, 3)),
                b"b".to_vec(),
            ),
            (1, 1, None, b"b".to_vec()),
            (1, 2, Some(b"not a record".to_vec()), b"x".to_vec()),
        ])
        .unwrap();
        let a = s.get("ws", "a").unwrap().expect("a is stored");
        assert_eq!(a.status, DeliveryStatus::Delivered);
        assert!(
            s.get("ws", "b").unwrap().is_none(),
            "deleted by its tombstone"
        );
        assert!(
            s.get("other", "a").unwrap().is_none(),
            "another workspace's id"
        );
        assert_eq!(s.positions().unwrap(), HashMap::from([(0, 2), (1, 3)]));
    }

    #[test]
    fn filters_and_newest_first_pages_cover_everything_once() {
        let (_dir, s) = store();
        let mut records = Vec::new();
        for i in 0..25 {
            let status = if i % 5 == 0 {
                DeliveryStatus::Dead
            } else {
                DeliveryStatus::Delivered
            };
            records.push((
                0,
                i,
                Some(record(&format!("d{i:02}"), "ws", status, i)),
                vec![],
            ));
            records.push((
                0,
                100 + i,
                Some(record(&format!("o{i:02}"), "other", status, i)),
                vec![],
            ));
        }
        s.apply(&records).unwrap();
        let mut query = DeliveryQuery {
            workspace_id: "ws".into(),
            limit: 10,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = s.query(&query).unwrap();
            seen.extend(ids(&page).into_iter().map(String::from));
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (0..25).rev().map(|i| format!("d{i:02}")).collect();
        assert_eq!(
            seen, expected,
            "every delivery once, newest first, none of another workspace"
        );

        let dead = s
            .query(&DeliveryQuery {
                workspace_id: "ws".into(),
                statuses: vec![DeliveryStatus::Dead, DeliveryStatus::Failed],
                connection_id: Some("crm".into()),
                since: Some(DateTime::from_timestamp(1_800_000_005, 0).unwrap()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&dead), ["d20", "d10"]);
        let one = s
            .query(&DeliveryQuery {
                workspace_id: "ws".into(),
                event_id: Some("evt_d07".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(ids(&one), ["d07"]);
        let bad = s.query(&DeliveryQuery {
            workspace_id: "ws".into(),
            cursor: Some("garbage".into()),
            ..Default::default()
        });
        assert!(matches!(bad, Err(StoreError::Cursor(_))));
    }

    #[test]
    fn a_reopened_store_keeps_its_rows_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        {
            let s = HistoryStore::open(&path).unwrap();
            s.apply(&[(
                2,
                41,
                Some(record("a", "ws", DeliveryStatus::Delivered, 1)),
                vec![],
            )])
            .unwrap();
        }
        let s = HistoryStore::open(&path).unwrap();
        assert_eq!(s.positions().unwrap(), HashMap::from([(2, 42)]));
        assert!(s.get("ws", "a").unwrap().is_some());
    }
}
