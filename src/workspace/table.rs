//! The workspace table: every processor reads the compacted `herald.workspaces` topic to its
//! end before it consumes events (like a Kafka Streams GlobalKTable), then follows it live.
//! A tombstone (key with no value) deletes a workspace. Connections whose credentials are in
//! the store take them from the credential table ([`crate::credentials::table`]), read to its
//! end before the first workspace compiles; when a connection's stored credentials change, its
//! workspace is compiled again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use super::compile::CompiledWorkspace;
use crate::credentials::{self, CredentialTable};
use crate::destinations::DestinationContext;
use crate::kafka;
use crate::model::WorkspaceConfig;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;

/// What the table holds for one workspace id.
#[derive(Debug, Clone)]
pub enum WorkspaceEntry {
    Ready(Arc<CompiledWorkspace>),
    /// The published config did not compile here (e.g. a secret's variable is not set in this
    /// processor's environment); its events are skipped with this reason.
    Invalid(String),
}

/// The current configuration of every workspace.
#[derive(Debug)]
pub struct WorkspaceTable {
    entries: RwLock<HashMap<String, WorkspaceEntry>>,
    /// Workspaces whose newest config did not compile here while an older one stays in force,
    /// with the reason.
    rejected: RwLock<HashMap<String, String>>,
    /// The newest record of each workspace, compiled again when its stored credentials change.
    records: RwLock<HashMap<String, Vec<u8>>>,
    credentials: Arc<CredentialTable>,
    ready: watch::Sender<bool>,
    /// Bumped by every applied record, so that indexes built from the table know they are stale.
    generation: AtomicU64,
}

impl Default for WorkspaceTable {
    fn default() -> Self {
        Self::new(Arc::default())
    }
}

impl WorkspaceTable {
    /// An empty table whose connections take stored credentials from `credentials`.
    pub fn new(credentials: Arc<CredentialTable>) -> Self {
        Self {
            entries: RwLock::default(),
            rejected: RwLock::default(),
            records: RwLock::default(),
            credentials,
            ready: watch::channel(false).0,
            generation: AtomicU64::new(0),
        }
    }

    /// Compiles `workspace_id` again from its newest record, after its stored credentials
    /// changed.
    pub fn recompile(&self, workspace_id: &str, ctx: &DestinationContext, vars: &Vars) {
        let record = self
            .records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(workspace_id)
            .cloned();
        if let Some(record) = record {
            tracing::info!(
                workspace = workspace_id,
                "stored credentials changed; compiling again"
            );
            self.apply(workspace_id, Some(&record), ctx, vars);
        }
    }

    /// The credential table connections take stored credentials from.
    pub fn credentials(&self) -> &Arc<CredentialTable> {
        &self.credentials
    }

    /// The newest record of `workspace_id` applied to the table (the JSON config as
    /// published), if any.
    pub fn newest_record(&self, workspace_id: &str) -> Option<Vec<u8>> {
        let records = self.records.read().unwrap_or_else(|p| p.into_inner());
        records.get(workspace_id).cloned()
    }

    /// The entry for `workspace_id`, if the table has one.
    pub fn get(&self, workspace_id: &str) -> Option<WorkspaceEntry> {
        // A poisoned lock means a panic while swapping an entry; the map is still whole.
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries.get(workspace_id).cloned()
    }

    /// Every workspace id with its entry, sorted by id.
    pub fn snapshot(&self) -> Vec<(String, WorkspaceEntry)> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Changes whenever a record is applied; equal values mean an unchanged table.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of workspaces known, valid or not.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Connections marked broken across every loaded workspace.
    pub fn broken_connections(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .map(|e| match e {
                WorkspaceEntry::Ready(ws) => ws.broken.count(),
                WorkspaceEntry::Invalid(_) => 0,
            })
            .sum()
    }

    /// Whether the table holds no workspace.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Workspaces whose newest config this replica rejected: invalid ones (their events are
    /// skipped) and those running their last good version.
    pub fn rejected_configs(&self) -> usize {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let invalid = entries
            .values()
            .filter(|e| matches!(e, WorkspaceEntry::Invalid(_)))
            .count();
        invalid
            + self
                .rejected
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len()
    }

    /// Why the newest config of `workspace_id` was rejected while an older one stays in force.
    pub fn rejected_reason(&self, workspace_id: &str) -> Option<String> {
        let rejected = self.rejected.read().unwrap_or_else(|p| p.into_inner());
        rejected.get(workspace_id).cloned()
    }

    /// Applies one record of `herald.workspaces`.
    pub fn apply(&self, key: &str, value: Option<&[u8]>, ctx: &DestinationContext, vars: &Vars) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        let mut rejected = self.rejected.write().unwrap_or_else(|p| p.into_inner());
        // Under the write lock: a reader that sees the new generation sees the new entry.
        self.generation.fetch_add(1, Ordering::AcqRel);
        rejected.remove(key);
        {
            let mut records = self.records.write().unwrap_or_else(|p| p.into_inner());
            match value {
                Some(v) => records.insert(key.to_owned(), v.to_vec()),
                None => records.remove(key),
            };
        }
        let Some(value) = value else {
            if entries.remove(key).is_some() {
                tracing::info!(workspace = key, "workspace deleted");
            }
            return;
        };
        let entry = match WorkspaceConfig::from_json(value) {
            Err(e) => WorkspaceEntry::Invalid(format!("config record is unreadable: {e}")),
            Ok(config) if config.workspace != key => WorkspaceEntry::Invalid(format!(
                "config record for `{}` is stored under key `{key}`",
                config.workspace
            )),
            Ok(config) => {
                match CompiledWorkspace::compile_with(&config, ctx, vars, Some(&self.credentials)) {
                    Ok(ws) => WorkspaceEntry::Ready(Arc::new(ws)),
                    Err(e) => WorkspaceEntry::Invalid(format!("config does not compile here: {e}")),
                }
            }
        };
        match (&entry, entries.get(key)) {
            (WorkspaceEntry::Ready(ws), _) => {
                tracing::info!(workspace = key, rules = ws.rules.len(), "workspace loaded")
            }
            (WorkspaceEntry::Invalid(reason), Some(WorkspaceEntry::Ready(_))) => {
                // Typically a `${env:…}` this replica lacks: the version that worked here goes
                // on rather than every later event of the workspace being skipped.
                tracing::error!(workspace = key, %reason,
                    "new workspace config rejected here; the last good version stays in force");
                rejected.insert(key.to_owned(), reason.clone());
                return;
            }
            (WorkspaceEntry::Invalid(reason), _) => {
                tracing::error!(workspace = key, %reason, "workspace config rejected")
            }
        }
        entries.insert(key.to_owned(), entry);
    }

    /// Marks the initial load done.
    pub fn mark_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Whether the table has been read to the end once.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the table has been read to the end once.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }
}

/// Starts the threads that load `herald.credentials` and then `herald.workspaces` into `table`
/// and follow both until `stop`.
pub fn spawn_loader(
    settings: &Settings,
    table: Arc<WorkspaceTable>,
    ctx: DestinationContext,
    vars: Vars,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, KafkaError> {
    let topic = settings.topics.workspaces.clone();
    let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
    let credentials = credentials::table::spawn_loader(
        settings,
        table.credentials.clone(),
        {
            let (table, ctx, vars) = (table.clone(), ctx.clone(), vars.clone());
            move |workspace: &str| table.recompile(workspace, &ctx, &vars)
        },
        stop.clone(),
    )?;
    let handle = std::thread::Builder::new()
        .name("herald-workspaces".into())
        .spawn(move || {
            // Workspaces compile with their stored credentials, so those are read first.
            while !table.credentials.is_ready() && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            kafka::follow::follow_compacted(
                &consumer,
                &topic,
                &stop,
                |m| match m.key().map(std::str::from_utf8) {
                    Some(Ok(key)) => table.apply(key, m.payload(), &ctx, &vars),
                    _ => tracing::error!(
                        topic,
                        partition = m.partition(),
                        offset = m.offset(),
                        "workspace record without a UTF-8 key ignored"
                    ),
                },
                || {
                    tracing::info!(workspaces = table.len(), "workspace table loaded");
                    table.mark_ready();
                },
            );
            let _ = credentials.join();
        })
        .map_err(|e| KafkaError::ClientCreation(format!("cannot start loader thread: {e}")))?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"workspace": "ws", "connections": [{"id": "hook", "type": "webhook",
        "url": "http://127.0.0.1:9/h", "credentials": {"secret": "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA=="}}]}"#;

    #[test]
    fn broken_connections_are_counted_until_the_workspace_is_applied_again() {
        let table = WorkspaceTable::default();
        let (ctx, vars) = (DestinationContext::for_local_tests(), Vars::default());
        table.apply("ws", Some(CONFIG.as_bytes()), &ctx, &vars);
        assert_eq!(table.broken_connections(), 0);
        let ready = || match table.get("ws") {
            Some(WorkspaceEntry::Ready(ws)) => ws,
            other => panic!("the workspace compiles: {other:?}"),
        };
        let ws = ready();
        ws.mark_broken("hook", "401");
        ws.mark_broken("hook", "401 again");
        assert_eq!(table.broken_connections(), 1);

        table.apply("ws", Some(CONFIG.as_bytes()), &ctx, &vars);
        assert_eq!(
            table.broken_connections(),
            0,
            "a new config starts with none broken"
        );
        ws.mark_broken("hook", "401");
        assert_eq!(
            table.broken_connections(),
            0,
            "the replaced config no longer counts"
        );
        ready().mark_broken("hook", "401");
        table.apply("ws", None, &ctx, &vars);
        assert_eq!(
            table.broken_connections(),
            0,
            "a deleted workspace no longer counts"
        );
    }

    #[test]
    fn a_config_that_does_not_compile_here_keeps_the_last_good_version() {
        let table = WorkspaceTable::default();
        let (ctx, vars) = (DestinationContext::for_local_tests(), Vars::default());
        let lacking = CONFIG.replace(
            "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==",
            "${env:HERALD_TEST_VARIABLE_THAT_IS_NOT_SET}",
        );
        table.apply("ws", Some(lacking.as_bytes()), &ctx, &vars);
        assert!(
            matches!(table.get("ws"), Some(WorkspaceEntry::Invalid(_))),
            "with no good version, the workspace is invalid here"
        );
        assert_eq!(table.rejected_configs(), 1);
        table.apply("ws", Some(CONFIG.as_bytes()), &ctx, &vars);
        assert_eq!(table.rejected_configs(), 0);
        let Some(WorkspaceEntry::Ready(good)) = table.get("ws") else {
            panic!("the good config compiles");
        };
        table.apply("ws", Some(lacking.as_bytes()), &ctx, &vars);
        match table.get("ws") {
            Some(WorkspaceEntry::Ready(kept)) => assert!(Arc::ptr_eq(&kept, &good)),
            other => panic!("the last good version stays: {other:?}"),
        }
        assert_eq!(
            table.rejected_configs(),
            1,
            "counted while the old version runs"
        );
        let reason = table.rejected_reason("ws").expect("the reason is kept");
        assert!(
            reason.contains("HERALD_TEST_VARIABLE_THAT_IS_NOT_SET"),
            "{reason}"
        );
        table.apply("ws", None, &ctx, &vars);
        assert!(table.get("ws").is_none(), "a tombstone still deletes it");
        assert_eq!(table.rejected_configs(), 0);
    }
}
