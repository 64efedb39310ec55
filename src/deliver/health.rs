//! The processor's health: `/readyz` (ready to take traffic) and `/healthz` (alive, not
//! wedged).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use super::dedupe::Dedupe;
use crate::history::codec::HistoryCodec;
use crate::history::store::HistoryStore;
use crate::workspace::table::WorkspaceTable;

/// What `/readyz` and `/healthz` report.
#[derive(Debug, Default)]
pub struct Health {
    pub table: Arc<WorkspaceTable>,
    /// Set once the processor's consumer subscribed (it may still wait for an assignment).
    pub consuming: AtomicBool,
    /// False while outcomes fail to be acknowledged by Kafka.
    pub producer: Arc<AtomicBool>,
    /// The dedupe sets, for the count of partitions running with a partial one.
    pub dedupe: Option<Arc<Dedupe>>,
    /// The history query store, when there is one: ready once it caught up.
    pub history: Option<Arc<HistoryStore>>,
    /// True while input records wait for a writer schema the registry cannot give now.
    pub schema_registry_down: AtomicBool,
    /// The format of history and dead-delivery records: Avro output is ready once its schemas
    /// are registered.
    pub history_codec: Option<Arc<HistoryCodec>>,
    /// No progress for this long while there is lag means wedged.
    liveness_timeout: Duration,
    /// When an input record last finished, or the consumer last had nothing to do (ms since
    /// the Unix epoch).
    progress_at_ms: AtomicI64,
    /// The event consumer's total lag at its last statistics.
    lag: AtomicI64,
}

impl Health {
    /// Health over `table` and the outcome producer's flag.
    pub fn new(
        table: Arc<WorkspaceTable>,
        producer: Arc<AtomicBool>,
        liveness_timeout: Duration,
    ) -> Self {
        Self {
            table,
            consuming: AtomicBool::new(false),
            producer,
            dedupe: None,
            history: None,
            schema_registry_down: AtomicBool::new(false),
            history_codec: None,
            liveness_timeout,
            progress_at_ms: AtomicI64::new(now_ms()),
            lag: AtomicI64::new(0),
        }
    }

    /// Health that also reports whether history records can be written in their format.
    pub fn with_history_codec(mut self, codec: Arc<HistoryCodec>) -> Self {
        self.history_codec = Some(codec);
        self
    }

    /// Health that also reports on `dedupe`'s partitions.
    pub fn with_dedupe(mut self, dedupe: Option<Arc<Dedupe>>) -> Self {
        self.dedupe = dedupe;
        self
    }

    /// Health that also waits for `history` to catch up.
    pub fn with_history(mut self, history: Option<Arc<HistoryStore>>) -> Self {
        self.history = history;
        self
    }

    /// An input record finished.
    pub fn progressed(&self) {
        self.progress_at_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The consumer's total lag, from its statistics; no lag counts as progress (idle is not
    /// wedged).
    pub fn lag_is(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
        if lag == 0 {
            self.progressed();
        }
    }

    /// Alive unless no input record finished for `processor.liveness_timeout_ms` while there
    /// was lag to consume.
    pub fn live(&self) -> Result<(), String> {
        self.live_at(now_ms())
    }

    fn live_at(&self, now_ms: i64) -> Result<(), String> {
        // Outcomes waiting for the registry to register the history schemas are not a wedged
        // processor (`/readyz` reports the registry); restarting would not bring it back.
        if self
            .history_codec
            .as_ref()
            .is_some_and(|c| c.registry_down())
        {
            self.progress_at_ms.store(now_ms, Ordering::Relaxed);
        }
        let lag = self.lag.load(Ordering::Relaxed);
        let idle = Duration::from_millis(
            (now_ms - self.progress_at_ms.load(Ordering::Relaxed)).max(0) as u64,
        );
        if lag > 0 && idle > self.liveness_timeout {
            return Err(format!(
                "wedged: no input record finished for {}s while {lag} records wait \
                 (processor.liveness_timeout_ms)",
                idle.as_secs()
            ));
        }
        Ok(())
    }

    /// Ready when the workspace table is loaded and the consumer is in its group.
    pub fn ready(&self) -> Result<(), &'static str> {
        if !self.table.is_ready() {
            return Err("workspace table not loaded yet");
        }
        if !self.consuming.load(Ordering::Relaxed) {
            return Err("consumer not subscribed yet");
        }
        if !self.producer.load(Ordering::Relaxed) {
            return Err("producer failing: outcomes are not being acknowledged by Kafka");
        }
        if self.history.as_ref().is_some_and(|h| !h.is_ready()) {
            return Err("history store still catching up with the deliveries topic");
        }
        if self.schema_registry_down.load(Ordering::Relaxed) {
            return Err("schema registry unavailable: input records wait for their writer schema");
        }
        if let Some(codec) = self.history_codec.as_ref().filter(|c| !c.is_ready()) {
            return Err(if codec.registry_down() {
                "schema registry unavailable: history and dead-letter schemas not registered yet, outcomes wait"
            } else {
                "registering the history and dead-letter schemas in the schema registry"
            });
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_table_consumer_and_producer() {
        let producer = Arc::new(AtomicBool::new(true));
        let health = Health::new(
            Arc::new(WorkspaceTable::default()),
            producer.clone(),
            Duration::from_secs(60),
        );
        assert!(health.ready().unwrap_err().contains("workspace table"));
        health.table.mark_ready();
        assert!(health.ready().unwrap_err().contains("consumer"));
        health.consuming.store(true, Ordering::Relaxed);
        assert_eq!(health.ready(), Ok(()));
        producer.store(false, Ordering::Relaxed);
        assert!(health.ready().unwrap_err().contains("producer"));
    }

    #[test]
    fn wedged_only_without_progress_while_there_is_lag() {
        let health = Health::new(
            Arc::new(WorkspaceTable::default()),
            Arc::new(AtomicBool::new(true)),
            Duration::from_secs(60),
        );
        let later = now_ms() + 61_000;
        assert_eq!(health.live_at(later), Ok(()), "no lag: idle, not wedged");
        health.lag.store(500, Ordering::Relaxed);
        let why = health.live_at(later).unwrap_err();
        assert!(why.contains("500 records wait"), "{why}");
        health.progressed();
        assert_eq!(health.live_at(now_ms() + 1_000), Ok(()));
        health.lag_is(0);
        assert_eq!(health.live_at(now_ms() + 1_000), Ok(()));
    }

    #[tokio::test]
    async fn waiting_for_the_registry_to_register_the_history_schemas_is_unready_not_wedged() {
        let mut settings = crate::settings::Settings::defaults();
        settings.ingest.schema_registry.url = "http://127.0.0.1:9".into();
        settings.ingest.schema_registry.timeout_ms = 200;
        settings.history.format = crate::settings::HistoryFormat::Avro;
        let codec = Arc::new(HistoryCodec::new(&settings));
        let health = Health::new(
            Arc::new(WorkspaceTable::default()),
            Arc::new(AtomicBool::new(true)),
            Duration::from_secs(60),
        )
        .with_history_codec(codec.clone());
        health.table.mark_ready();
        health.consuming.store(true, Ordering::Relaxed);
        assert!(health.ready().unwrap_err().contains("registering"));
        let registering = tokio::spawn({
            let codec = codec.clone();
            async move { codec.ready().await }
        });
        while !codec.registry_down() {
            tokio::task::yield_now().await;
        }
        let why = health.ready().unwrap_err();
        assert!(why.contains("schema registry unavailable"), "{why}");
        health.lag.store(500, Ordering::Relaxed);
        assert_eq!(health.live_at(now_ms() + 61_000), Ok(()), "not wedged");
        registering.abort();
    }
}
