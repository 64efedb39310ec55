//! The processor's health, as `/readyz` reports it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::workspace::table::WorkspaceTable;

/// What `/readyz` reports.
#[derive(Debug, Default)]
pub struct Health {
    pub table: Arc<WorkspaceTable>,
    /// Set once the processor's consumer subscribed (it may still wait for an assignment).
    pub consuming: AtomicBool,
    /// False while outcomes fail to be acknowledged by Kafka.
    pub producer: Arc<AtomicBool>,
}

impl Health {
    /// Health over `table` and the outcome producer's flag.
    pub fn new(table: Arc<WorkspaceTable>, producer: Arc<AtomicBool>) -> Self {
        Self {
            table,
            consuming: AtomicBool::new(false),
            producer,
        }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_table_consumer_and_producer() {
        let producer = Arc::new(AtomicBool::new(true));
        let health = Health::new(Arc::new(WorkspaceTable::default()), producer.clone());
        assert!(health.ready().unwrap_err().contains("workspace table"));
        health.table.mark_ready();
        assert!(health.ready().unwrap_err().contains("consumer"));
        health.consuming.store(true, Ordering::Relaxed);
        assert_eq!(health.ready(), Ok(()));
        producer.store(false, Ordering::Relaxed);
        assert!(health.ready().unwrap_err().contains("producer"));
    }
}
