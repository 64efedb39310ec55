//! One phase of a run: its own topics (a fresh prefix, so phases and runs never read each
//! other's records), its workspaces, and a processor started and stopped around a measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::broker::EmbeddedBroker;
use crate::app::App;
use crate::deliver::processor::ProcessorError;
use crate::kafka::topic_plan;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;

/// Where the topics live.
pub enum Cluster<'a> {
    /// librdkafka's mock broker, in a process of its own.
    Embedded(&'a EmbeddedBroker),
    /// The brokers of `kafka.brokers` (or `--brokers`).
    Brokers,
}

impl Cluster<'_> {
    async fn create_topics(&self, settings: &Settings) -> anyhow::Result<()> {
        match self {
            Self::Embedded(mock) => {
                for t in topic_plan(settings) {
                    mock.create_topic(&t.name, t.partitions)?;
                }
            }
            Self::Brokers => {
                crate::kafka::create_topics(settings)
                    .await
                    .with_context(|| {
                        format!("cannot create topics on {}", settings.kafka.brokers)
                    })?;
            }
        }
        Ok(())
    }
}

/// The settings of one phase: `base` with topics and consumer groups of its own.
pub fn settings_for(base: &Settings, run: &str, phase: &str) -> Settings {
    let mut s = base.clone();
    let prefix = format!("herald-bench.{run}.{phase}.");
    s.topics.events = format!("{prefix}events");
    s.topics.workspaces = format!("{prefix}workspaces");
    s.topics.credentials = format!("{prefix}credentials");
    s.topics.deliveries = format!("{prefix}deliveries");
    s.topics.dlq = format!("{prefix}dlq");
    s.topics.retry_prefix = format!("{prefix}retry.");
    s.kafka.group_id = format!("{prefix}herald");
    s.retry.group_id = format!("{prefix}retry");
    s
}

/// Creates the phase's topics and publishes its workspace files.
pub async fn prepare(
    cluster: &Cluster<'_>,
    settings: &Settings,
    files: &[(String, String)],
) -> anyhow::Result<()> {
    cluster.create_topics(settings).await?;
    let configs = crate::cli::workspace::validate_files(settings, files, &Vars::default())?;
    crate::cli::workspace::publish(settings, &configs).await
}

/// A processor running in this process.
pub struct Running {
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ProcessorError>>,
}

impl Running {
    pub fn start(settings: &Settings) -> anyhow::Result<Self> {
        let app = Arc::new(App::start(settings.clone(), Vars::default())?);
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn({
            let app = app.clone();
            async move { app.run_processor(rx).await }
        });
        Ok(Self { app, stop, task })
    }

    /// Events routed so far.
    pub fn routed(&self) -> u64 {
        self.app.metrics.events.with_label_values(&["routed"]).get()
    }

    /// Deliveries to `kind`/`action` whose outcome was `delivered`, history acknowledged.
    pub fn delivered(&self, kind: &str, action: &str) -> u64 {
        self.app
            .metrics
            .deliveries
            .with_label_values(&[kind, action, "delivered"])
            .get()
    }

    pub fn in_flight(&self) -> i64 {
        self.app.metrics.in_flight.get()
    }

    /// Stops the processor without waiting for deliveries that hang (they are abandoned).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Err(e))) => Err(e.into()),
            Ok(Err(panic)) => Err(panic.into()),
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
        }
    }
}

/// Waits until `done` holds, checking every 5 ms; fails when `progress` has not moved for
/// `stall`, naming `what`.
pub async fn wait_until(
    what: &str,
    stall: Duration,
    mut progress: impl FnMut() -> u64,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let mut last = progress();
    let mut moved = Instant::now();
    while !done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = progress();
        if now != last {
            last = now;
            moved = Instant::now();
        } else if moved.elapsed() > stall {
            bail!("{what}: no progress for {} s (at {last})", stall.as_secs());
        }
    }
    Ok(())
}
