//! Shared pieces of the in-process integration tests: a MockCluster broker with Herald's
//! topics, the sandbox on 127.0.0.1:0, a processor that can be started and dropped, and
//! helpers that wait for what a user would look at (history, the sandbox, the DLQ).

#![allow(dead_code)]

pub mod admin;
pub mod destinations;

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::app::App;
use herald::history::reader::{self, HistoryQuery};
use herald::kafka::{self, topic_plan};
use herald::model::records::DeliveryRecord;
use herald::settings::Settings;
use herald::settings::interpolate::Vars;
use herald_sandbox::{RecordedRequest, Sandbox};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const WEBHOOK_SECRET: &str = "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==";

/// How long a test waits for something that should happen in well under a second.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// How long a graceful stop may take: the drain, the final commit and leaving the group.
pub const STOP_PATIENCE: Duration = Duration::from_secs(60);

pub struct Harness {
    pub mock: MockCluster<'static, DefaultProducerContext>,
    pub settings: Settings,
    pub sandbox: Sandbox,
    pub sandbox_url: String,
    pub producer: FutureProducer,
}

impl Harness {
    pub async fn new() -> Self {
        Self::new_with(|_| {}).await
    }

    /// A harness whose settings `adjust` changes before the topics are created.
    pub async fn new_with(adjust: impl FnOnce(&mut Settings)) -> Self {
        let mock = MockCluster::new(1).expect("mock cluster");
        let mut settings = Settings::defaults();
        settings.kafka.brokers = mock.bootstrap_servers();
        settings.kafka.group_id = format!("herald-test-{}", uuid::Uuid::now_v7().simple());
        settings.kafka.session_timeout_ms = 6000;
        settings.kafka.commit_interval_ms = 200;
        settings.topics.partitions = 3;
        settings.destinations.allow_private_networks = true;
        settings.destinations.timeout_ms = 5000;
        settings.processor.skip_summary_interval_ms = 100;
        settings.retry.tiers = ["200ms", "400ms", "800ms"].map(String::from).to_vec();
        settings.retry.group_id = format!("{}-retry", settings.kafka.group_id);
        adjust(&mut settings);
        for t in topic_plan(&settings) {
            mock.create_topic(&t.name, t.partitions, 1).expect("topic");
        }
        let sandbox = Sandbox::new(Some(WEBHOOK_SECRET)).expect("sandbox");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sandbox_url = format!("http://{}", listener.local_addr().unwrap());
        let router = sandbox.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let producer = kafka::producer_config(&settings)
            .create()
            .expect("producer");
        Self {
            mock,
            settings,
            sandbox,
            sandbox_url,
            producer,
        }
    }

    pub fn vars(&self) -> Vars {
        herald::cli::dev::example_vars(&self.sandbox_url)
            .into_iter()
            .fold(Vars::default(), |vars, (name, value)| {
                vars.with(name, value)
            })
            // This sandbox verifies with the tests' secret, and the examples sign with it too.
            .with("HERALD_CRED_ACADEMYFLOW_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .with("HERALD_CRED_NORTHSTAR_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .with("HERALD_CRED_WEBHOOK_SECRET", WEBHOOK_SECRET)
    }

    /// Validates and publishes workspace files given as (name, YAML), with the examples' sandbox
    /// address (`herald dev`'s) pointed at this harness's sandbox.
    pub async fn apply(&self, files: &[(&str, &str)]) {
        let files: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    herald::cli::dev::at_sandbox(t, &self.sandbox_url),
                )
            })
            .collect();
        let configs = herald::cli::workspace::validate_files(&self.settings, &files, &self.vars())
            .expect("valid workspaces");
        herald::cli::workspace::publish(&self.settings, &configs)
            .await
            .expect("published");
    }

    /// The compact academy and onboarding workspaces of tests/fixtures (Slack and webhook).
    pub async fn apply_fixtures(&self) {
        self.apply(&[
            ("academy.yaml", include_str!("../fixtures/academy.yaml")),
            (
                "onboarding.yaml",
                include_str!("../fixtures/onboarding.yaml"),
            ),
        ])
        .await;
    }

    /// The seed workspaces of examples/ (all five destinations and a webhook).
    pub async fn apply_examples(&self) {
        self.apply(&[
            ("academy.yaml", include_str!("../../examples/academy.yaml")),
            (
                "onboarding.yaml",
                include_str!("../../examples/onboarding.yaml"),
            ),
        ])
        .await;
    }

    /// Produces a raw record to the events topic.
    pub async fn produce(&self, key: Option<&str>, value: &[u8]) {
        let mut record = FutureRecord::to(&self.settings.topics.events).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("produced");
    }

    /// Produces an event in the emit shape with the given id.
    pub async fn emit(
        &self,
        workspace: &str,
        event: &str,
        event_id: &str,
        resource: Option<&str>,
        payload: serde_json::Value,
    ) {
        let body = serde_json::json!({
            "event_id": event_id,
            "event": event,
            "resource": resource,
            "payload": payload,
        });
        self.produce(Some(workspace), &serde_json::to_vec(&body).unwrap())
            .await;
    }

    pub fn start(&self) -> Running {
        Running::start(self.settings.clone(), self.vars())
    }

    /// The processor group's committed offset per events partition (`Offset::Invalid` where
    /// nothing is committed).
    pub fn committed(&self) -> Vec<(i32, rdkafka::Offset)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let group: BaseConsumer = kafka::consumer_config(&self.settings).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..self.settings.topics.partitions {
            tpl.add_partition(&self.settings.topics.events, p);
        }
        let committed = group
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap();
        committed
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect()
    }

    /// History of `workspace`, read the way `herald history` reads it.
    pub async fn history(&self, workspace: &str) -> Vec<DeliveryRecord> {
        let settings = self.settings.clone();
        let query = HistoryQuery {
            workspace_id: workspace.into(),
            event_id: None,
        };
        tokio::task::spawn_blocking(move || reader::read(&settings, &query))
            .await
            .unwrap()
            .expect("history readable")
            .0
    }

    /// Waits until `workspace`'s history satisfies `done`, and returns it.
    pub async fn wait_for_history(
        &self,
        workspace: &str,
        what: &str,
        done: impl Fn(&[DeliveryRecord]) -> bool,
    ) -> Vec<DeliveryRecord> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let records = self.history(workspace).await;
            if done(&records) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; history: {records:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The dead-letter topic's records: key, value, and headers by name.
    pub async fn dead_letters(&self) -> Vec<DeadLetterRecord> {
        let settings = self.settings.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::Message;
            use rdkafka::message::Headers;
            let c: rdkafka::consumer::BaseConsumer =
                kafka::reader_config(&settings).create().unwrap();
            let mut out = Vec::new();
            kafka::read_to_end(&c, &settings.topics.dlq, |m| {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(DeadLetterRecord {
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    headers,
                });
            })
            .unwrap();
            out
        })
        .await
        .unwrap()
    }

    /// Waits until the dead-letter topic holds at least `n` records.
    pub async fn wait_for_dead_letters(&self, n: usize) -> Vec<DeadLetterRecord> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let letters = self.dead_letters().await;
            if letters.len() >= n {
                return letters;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} dead letters, have {}",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn requests(&self, destination: &str) -> Vec<RecordedRequest> {
        self.sandbox
            .requests()
            .into_iter()
            .filter(|r| r.destination == destination)
            .collect()
    }
}

/// One record of the dead-letter topic.
#[derive(Debug)]
pub struct DeadLetterRecord {
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: std::collections::HashMap<String, String>,
}

/// A processor running in the background.
pub struct Running {
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(settings: Settings, vars: Vars) -> Self {
        let app = Arc::new(App::start(settings, vars).expect("app"));
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn({
            let app = app.clone();
            async move { app.run_processor(rx).await.expect("processor ran") }
        });
        Self { app, stop, task }
    }

    /// Graceful stop: drain, commit, leave the group, return; a stop that hangs fails the test.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(STOP_PATIENCE, self.task)
            .await
            .expect("the replica stopped in time")
            .expect("processor task");
    }

    /// Abrupt stop: the processor and its in-flight work are dropped mid-stream.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
