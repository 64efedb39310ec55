//! Wiring the processor stack together, shared by `herald run`, `herald dev` and the tests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

use crate::api::ApiState;
use crate::api::processor::Processor;
use crate::credentials::keys::KeyError;
use crate::credentials::{CredentialTable, Keyring};
use crate::deliver::breaker::{BreakerSettings, Breakers};
use crate::deliver::dedupe::Dedupe;
use crate::deliver::health::Health;
use crate::deliver::processor::{self, ProcessorError};
use crate::deliver::retry::RetryPolicy;
use crate::deliver::retry_worker;
use crate::deliver::route::Router;
use crate::deliver::supersede::LastWrites;
use crate::deliver::tokens::StoredTokens;
use crate::destinations::{DestinationContext, http};
use crate::history::OutcomeWriter;
use crate::history::skips::SkipSummaries;
use crate::history::store::{HistoryStore, StoreError, spawn_follower};
use crate::kafka;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;
use crate::telemetry::Metrics;
use crate::workspace::table::{WorkspaceTable, spawn_loader};

/// The destination context the settings describe.
pub fn destination_context(settings: &Settings) -> DestinationContext {
    DestinationContext {
        http: http::client(settings.destinations.allow_private_networks),
        default_timeout: settings.destination_timeout(),
        allow_private_networks: settings.destinations.allow_private_networks,
        max_rate_wait: Duration::from_millis(settings.destinations.max_rate_wait_ms),
        oauth: None,
        tokens: None,
    }
}

/// Why a processor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the credential store's keys")]
    Keys(#[from] KeyError),
    #[error(transparent)]
    History(#[from] StoreError),
}

/// A running workspace table plus everything the processor needs.
pub struct App {
    pub settings: Settings,
    pub health: Arc<Health>,
    pub metrics: Metrics,
    pub router: Arc<Router>,
    /// The history query store, when `history.store_path` is set.
    pub history: Option<Arc<HistoryStore>>,
    /// The HTTP API's state: ingest producer, key index, admin tokens.
    pub api: ApiState,
    loader_stop: Arc<AtomicBool>,
    loader: Option<JoinHandle<()>>,
    history_follower: Option<JoinHandle<()>>,
}

impl App {
    /// Starts following `herald.workspaces` and prepares the processor.
    pub fn start(settings: Settings, vars: Vars) -> Result<Self, StartError> {
        let mut ctx = destination_context(&settings);
        let keys = Keyring::load(&settings.credentials)?;
        if keys.is_empty() {
            tracing::warn!(
                "no credential store key (HERALD_SECRETS_KEYS, HERALD_SECRETS_KEY, \
                 credentials.keys_dir): connections with stored credentials are unusable"
            );
        }
        let vars = vars.restricted(
            &settings.credentials.env_prefix,
            &settings.credentials.files_dir,
        );
        let credentials = Arc::new(CredentialTable::new(keys));
        let producer: FutureProducer = kafka::producer_config(&settings).create()?;
        ctx.oauth = Some(Arc::new(StoredTokens::new(
            &settings,
            producer.clone(),
            credentials.clone(),
        )));
        let table = Arc::new(WorkspaceTable::new(credentials));
        let loader_stop = Arc::new(AtomicBool::new(false));
        let loader = spawn_loader(
            &settings,
            table.clone(),
            ctx,
            vars.clone(),
            loader_stop.clone(),
        )?;
        let producer: FutureProducer = kafka::producer_config(&settings).create()?;
        let metrics = Metrics::new();
        let mut writer = OutcomeWriter::new(producer, &settings, &metrics);
        let dedupe = Dedupe::start(&settings)?;
        if dedupe.is_some() {
            let reader: BaseConsumer = kafka::reader_config(&settings).create()?;
            writer = writer.co_partitioned(kafka::partition_count(
                &reader,
                &settings.topics.deliveries,
            )?);
        }
        let router = Arc::new(Router {
            table: table.clone(),
            writer,
            skips: SkipSummaries::new(Duration::from_millis(
                settings.processor.skip_summary_interval_ms,
            )),
            metrics: metrics.clone(),
            policy: RetryPolicy::from_settings(&settings),
            breakers: Breakers::new(BreakerSettings::from_settings(&settings)),
            dedupe,
            last_writes: LastWrites::new(settings.retry.supersede_max_subjects),
        });
        let (history, history_follower) = if settings.history.store_path.is_empty() {
            (None, None)
        } else {
            let store = Arc::new(HistoryStore::open(Path::new(&settings.history.store_path))?);
            let follower = spawn_follower(&settings, store.clone(), loader_stop.clone())?;
            (Some(store), Some(follower))
        };
        let health = Arc::new(
            Health::new(
                table,
                router.writer.health(),
                Duration::from_millis(settings.processor.liveness_timeout_ms),
            )
            .with_dedupe(router.dedupe.clone())
            .with_history_codec(router.writer.codec())
            .with_history(history.clone()),
        );
        let processor = Processor {
            router: router.clone(),
            ctx: destination_context(&settings),
            vars,
            keys: Keyring::load(&settings.credentials)?,
        };
        let api = ApiState::start(&settings, health.clone(), metrics.clone(), processor)?;
        Ok(Self {
            health,
            api,
            history,
            history_follower,
            metrics,
            router,
            settings,
            loader_stop,
            loader: Some(loader),
        })
    }

    /// The HTTP routes: health, metrics, ingest, the management API and the web console.
    pub fn http_routes(&self) -> axum::Router {
        let routes = crate::api::routes(self.api.clone());
        crate::api::layered(routes.merge(crate::console::router(self.api.clone())))
    }

    /// Runs the event processor and the retry-tier consumer until `shutdown`, or until an
    /// outcome cannot be written in a way producing again cannot fix: then it returns that
    /// error at once, the unfinished events uncommitted, so the process exits and is restarted.
    pub async fn run_processor(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), ProcessorError> {
        let events = processor::run(
            &self.settings,
            self.router.clone(),
            self.health.clone(),
            shutdown.clone(),
        );
        let retries = retry_worker::run(&self.settings, self.router.clone(), shutdown);
        // Avro output registers its schemas now rather than at the first outcome, so that
        // `/readyz` tells of a registry that is down before any event waits for it.
        let codec = self.router.writer.codec();
        let register = async move {
            codec.ready().await;
            std::future::pending::<std::convert::Infallible>().await
        };
        tokio::select! {
            ran = async { tokio::try_join!(events, retries).map(|_| ()) } => ran,
            failure = self.router.writer.failed() => Err(failure.into()),
            never = register => match never {},
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.loader_stop.store(true, Ordering::Relaxed);
        if let Some(dedupe) = &self.router.dedupe {
            dedupe.stop();
        }
        if let Some(handle) = self.loader.take() {
            let _ = handle.join();
        }
        if let Some(handle) = self.history_follower.take() {
            let _ = handle.join();
        }
    }
}
