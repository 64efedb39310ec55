//! A Confluent-compatible schema registry: writer schemas of Confluent wire-format records,
//! fetched by id (`GET /schemas/ids/{id}`) and kept in a bounded cache, and the registration of
//! the schemas Herald writes with (`POST /subjects/{subject}/versions`), cached likewise.
//!
//! A schema is immutable under its id, so a fetched schema is kept until the cache is full
//! (then the oldest goes). An id the registry answers 404 for is kept too, as unknown: records
//! with it go to the DLQ with a reason naming the id. Any other failure (unreachable, 5xx,
//! timeout) is [`RegistryError::Unavailable`]: the caller keeps the record and tries again.
//!
//! Input decoding (`ingest`) and the history and dead-letter records (`history`) share this
//! client, so it sits at the Kafka layer, below both.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apache_avro::Schema;

use crate::settings::SchemaRegistrySettings;

/// A registry that cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum RegistrySetupError {
    #[error("ingest.schema_registry.ca_file: {0}")]
    CaFile(String),
    #[error("ingest.schema_registry: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why a schema is not at hand.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The registry does not know the id (404): the record cannot be read, ever.
    #[error("schema id {id} is unknown to the schema registry")]
    NotFound { id: u32 },
    /// The registry answered with a schema Herald cannot use: the record cannot be read.
    #[error("schema id {id} from the schema registry is not a usable Avro schema: {reason}")]
    Invalid { id: u32, reason: String },
    /// The registry could not answer now; a later try may succeed.
    #[error("schema registry unavailable fetching schema id {id}: {reason}")]
    Unavailable { id: u32, reason: String },
}

/// Why a schema could not be registered.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    /// The registry refused the schema (4xx other than auth): registering again cannot help.
    #[error("the schema registry refused the schema for subject `{subject}`: {reason}")]
    Refused { subject: String, reason: String },
    /// The registry could not answer now; a later try may succeed.
    #[error("schema registry unavailable registering subject `{subject}`: {reason}")]
    Unavailable { subject: String, reason: String },
}

/// A schema registry client with a bounded cache by id.
#[derive(Debug)]
pub struct Registry {
    http: reqwest::Client,
    base: String,
    username: String,
    password: crate::model::Secret,
    max_cached: usize,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    by_id: HashMap<u32, Result<Arc<Schema>, RegistryError>>,
    order: VecDeque<u32>,
    /// Ids of schemas registered by this client, by subject and schema text. Herald registers
    /// only its own few record schemas; the bound is the same as for fetched schemas.
    registered: HashMap<(String, String), u32>,
}

impl Registry {
    /// The registry `settings` describe, or `None` when no URL is set.
    pub fn new(settings: &SchemaRegistrySettings) -> Result<Option<Self>, RegistrySetupError> {
        if settings.url.is_empty() {
            return Ok(None);
        }
        // No idle connections are kept: the client is called rarely (answers are cached), and
        // readers on blocking threads call it from a runtime of their own (`fetch_blocking`),
        // where a connection pooled by another runtime would not be served.
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .pool_max_idle_per_host(0);
        if !settings.ca_file.is_empty() {
            let pem = std::fs::read(&settings.ca_file)
                .map_err(|e| RegistrySetupError::CaFile(e.to_string()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistrySetupError::CaFile(e.to_string()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Some(Self {
            http: builder.build()?,
            base: settings.url.trim_end_matches('/').to_owned(),
            username: settings.username.clone(),
            password: settings.password.clone(),
            max_cached: settings.max_cached_schemas.max(1),
            cache: Mutex::default(),
        }))
    }

    /// The cached answer for `id`: its schema, or why it cannot be read. `None` when it has not
    /// been fetched (or was fetched while the registry was unavailable).
    pub fn cached(&self, id: u32) -> Option<Result<Arc<Schema>, RegistryError>> {
        self.lock().by_id.get(&id).cloned()
    }

    /// Fetches the schema with `id` (unless cached) and caches the answer, except an
    /// [`RegistryError::Unavailable`] one.
    pub async fn fetch(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let answer = self.get(id).await;
        if !matches!(answer, Err(RegistryError::Unavailable { .. })) {
            let mut cache = self.lock();
            if cache.by_id.insert(id, answer.clone()).is_none() {
                cache.order.push_back(id);
            }
            while cache.order.len() > self.max_cached {
                if let Some(old) = cache.order.pop_front() {
                    cache.by_id.remove(&old);
                }
            }
        }
        answer
    }

    /// [`Registry::fetch`] for synchronous code (the readers of history and dead letters, on
    /// blocking threads): the fetch runs on a thread and runtime of its own, so it works inside
    /// and outside a Tokio runtime alike. Cached answers come back without a thread.
    pub fn fetch_blocking(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let unavailable = |reason: String| RegistryError::Unavailable { id, reason };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| unavailable(e.to_string()))?
                        .block_on(self.fetch(id))
                })
                .join()
                .unwrap_or_else(|_| Err(unavailable("the fetch panicked".into())))
        })
    }

    /// Registers `schema` (Avro schema text) under `subject` and answers its id; the registry
    /// answers the existing id for a schema it knows. Cached: a second call does not ask again.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegisterError> {
        let key = (subject.to_owned(), schema.to_owned());
        if let Some(id) = self.lock().registered.get(&key) {
            return Ok(*id);
        }
        let unavailable = |reason: String| RegisterError::Unavailable {
            subject: subject.to_owned(),
            reason,
        };
        let request = self
            .http
            .post(format!("{}/subjects/{subject}/versions", self.base))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema }));
        let response = self
            .authorised(request)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_client_error()
            && status != reqwest::StatusCode::UNAUTHORIZED
            && status != reqwest::StatusCode::FORBIDDEN
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            let body = response.text().await.unwrap_or_default();
            return Err(RegisterError::Refused {
                subject: subject.to_owned(),
                reason: crate::model::excerpt(&format!("HTTP {status}: {body}")),
            });
        }
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            id: u32,
        }
        let Answer { id } = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut cache = self.lock();
        if cache.registered.len() < self.max_cached {
            cache.registered.insert(key, id);
        }
        Ok(id)
    }

    async fn get(&self, id: u32) -> Result<Arc<Schema>, RegistryError> {
        let unavailable = |reason: String| RegistryError::Unavailable { id, reason };
        let request = self
            .http
            .get(format!("{}/schemas/ids/{id}", self.base))
            .header("accept", "application/vnd.schemaregistry.v1+json");
        let response = self
            .authorised(request)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound { id });
        }
        if !status.is_success() {
            return Err(unavailable(format!("HTTP {status}")));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            schema: String,
            #[serde(default, rename = "schemaType")]
            schema_type: Option<String>,
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if answer.schema_type.as_deref().is_some_and(|t| t != "AVRO") {
            return Err(RegistryError::Invalid {
                id,
                reason: format!(
                    "a {} schema, not Avro",
                    answer.schema_type.unwrap_or_default()
                ),
            });
        }
        Schema::parse_str(&answer.schema)
            .map(Arc::new)
            .map_err(|e| RegistryError::Invalid {
                id,
                reason: crate::model::excerpt(&e.to_string()),
            })
    }

    /// `request` with the registry's basic auth, when one is configured.
    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.username.is_empty() {
            request
        } else {
            request.basic_auth(&self.username, Some(self.password.expose()))
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#;

    /// A registry simulator (the sandbox's) on a free port, and its URL.
    pub(crate) async fn sandbox() -> (herald_sandbox::Sandbox, String) {
        let sandbox = herald_sandbox::Sandbox::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/registry", listener.local_addr().unwrap());
        let router = sandbox.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (sandbox, url)
    }

    fn settings(url: &str, max: usize) -> SchemaRegistrySettings {
        let mut s = crate::settings::Settings::defaults().ingest.schema_registry;
        s.url = url.to_owned();
        s.max_cached_schemas = max;
        s
    }

    #[tokio::test]
    async fn schemas_are_fetched_by_id_cached_and_unknown_ids_are_remembered() {
        let (sandbox, url) = sandbox().await;
        let id = sandbox.registry().register("r-value", SCHEMA).unwrap();
        let registry = Registry::new(&settings(&url, 2)).unwrap().unwrap();
        assert!(registry.cached(id).is_none());
        let schema = registry.fetch(id).await.unwrap();
        assert!(matches!(*schema, Schema::Record(_)));
        assert!(registry.cached(id).unwrap().is_ok());
        assert_eq!(
            registry.fetch(99).await.unwrap_err(),
            RegistryError::NotFound { id: 99 }
        );
        assert_eq!(
            registry.cached(99),
            Some(Err(RegistryError::NotFound { id: 99 }))
        );
        let fetched = sandbox
            .requests()
            .iter()
            .filter(|r| r.destination == "registry")
            .count();
        registry.fetch(id).await.unwrap();
        assert_eq!(
            sandbox
                .requests()
                .iter()
                .filter(|r| r.destination == "registry")
                .count(),
            fetched,
            "a cached schema is not fetched again"
        );
    }

    #[tokio::test]
    async fn a_schema_is_registered_once_under_its_subject_and_fetched_back_by_id() {
        let (sandbox, url) = sandbox().await;
        let registry = Registry::new(&settings(&url, 10)).unwrap().unwrap();
        let id = registry.register("h-value", SCHEMA).await.unwrap();
        assert_eq!(
            registry.register("h-value", SCHEMA).await.unwrap(),
            id,
            "cached"
        );
        let posts = sandbox
            .requests()
            .iter()
            .filter(|r| r.destination == "registry" && r.method == "POST")
            .count();
        assert_eq!(posts, 1, "a registered schema is not registered again");
        assert!(matches!(
            *registry.fetch(id).await.unwrap(),
            Schema::Record(_)
        ));
        let blocking = Registry::new(&settings(&url, 10)).unwrap().unwrap();
        let fetched = tokio::task::spawn_blocking(move || blocking.fetch_blocking(id))
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(*fetched, Schema::Record(_)));

        let refused = registry.register("h-value", "not json").await.unwrap_err();
        assert!(
            matches!(refused, RegisterError::Refused { .. }),
            "{refused}"
        );
        let closed = Registry::new(&settings("http://127.0.0.1:9", 10))
            .unwrap()
            .unwrap();
        let down = closed.register("h-value", SCHEMA).await.unwrap_err();
        assert!(matches!(down, RegisterError::Unavailable { .. }), "{down}");
    }

    #[tokio::test]
    async fn an_unreachable_or_failing_registry_is_unavailable_and_not_cached() {
        let (sandbox, url) = sandbox().await;
        let id = sandbox.registry().register("r-value", SCHEMA).unwrap();
        sandbox.inject(
            serde_json::from_value(
                serde_json::json!({"path": "/registry", "count": 1, "status": 503}),
            )
            .unwrap(),
        );
        let registry = Registry::new(&settings(&url, 10)).unwrap().unwrap();
        let err = registry.fetch(id).await.unwrap_err();
        assert!(matches!(err, RegistryError::Unavailable { .. }), "{err}");
        assert!(registry.cached(id).is_none());
        assert!(registry.fetch(id).await.is_ok(), "the next try succeeds");

        let closed = Registry::new(&settings("http://127.0.0.1:9", 10))
            .unwrap()
            .unwrap();
        let err = closed.fetch(1).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::Unavailable { id: 1, .. }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn basic_auth_is_sent_and_the_password_stays_out_of_debug() {
        let (sandbox, url) = sandbox().await;
        let id = sandbox.registry().register("r-value", SCHEMA).unwrap();
        sandbox.registry().require_basic_auth("KEY", "s3cret");
        let anonymous = Registry::new(&settings(&url, 10)).unwrap().unwrap();
        let err = anonymous.fetch(id).await.unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        let mut s = settings(&url, 10);
        s.username = "KEY".into();
        s.password = crate::model::Secret::new("s3cret");
        let registry = Registry::new(&s).unwrap().unwrap();
        registry.fetch(id).await.unwrap();
        assert!(!format!("{registry:?}").contains("s3cret"));
    }
}
