//! Configuration: the documented defaults in `defaults.toml`, then `herald.toml` (or
//! `--config FILE`), then `HERALD__SECTION__KEY` environment variables.
//!
//! Every struct denies unknown fields, so a misspelt key fails start-up instead of being
//! ignored, and `validate` checks ranges with a message naming the key.

pub mod api;
pub mod interpolate;
pub mod oauth;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The defaults, compiled into the binary so `herald` runs with no file at all.
pub const DEFAULTS_TOML: &str = include_str!("../defaults.toml");

/// Everything Herald can be configured with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: TopicSettings,
    pub processor: ProcessorSettings,
    pub ingest: IngestSettings,
    pub retry: RetrySettings,
    pub destinations: DestinationSettings,
    pub http: HttpSettings,
    pub api: api::ApiSettings,
    pub log: LogSettings,
    pub credentials: CredentialSettings,
    pub oauth: oauth::OAuthSettings,
    pub history: HistorySettings,
}

/// The history query store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistorySettings {
    /// The store's SQLite file; empty turns the store off.
    pub store_path: String,
    /// How history and dead-delivery records are written; either is read.
    pub format: HistoryFormat,
}

/// The wire format of the records Herald writes to `herald.deliveries` and `herald.dlq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryFormat {
    /// JSON objects, described by the JSON Schemas in `schemas/json/`.
    Json,
    /// Confluent wire format (magic byte 0, 4-byte schema id, Avro datum), the schemas in
    /// `schemas/` registered in `ingest.schema_registry` under `<topic>-value`.
    Avro,
}

/// How to reach Kafka.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub session_timeout_ms: u64,
    pub commit_interval_ms: u64,
    pub message_timeout_ms: u64,
    pub linger_ms: u64,
    /// The consumers' `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: u64,
    pub statistics_interval_ms: u64,
    pub max_poll_interval_ms: u64,
    /// The largest record Herald writes (key, value and headers); larger ones are written as
    /// truncated stubs. Also the producer's `message.max.bytes`.
    pub max_record_bytes: usize,
    /// Extra librdkafka properties, passed as is.
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// Topic names and sizes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    pub events: String,
    pub workspaces: String,
    pub credentials: String,
    pub deliveries: String,
    pub dlq: String,
    pub retry_prefix: String,
    pub partitions: i32,
    pub workspace_partitions: i32,
    pub replication_factor: i32,
    /// `retention.ms` of the history topic, which is compacted and deleted.
    pub deliveries_retention_ms: u64,
}

/// The processor's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorSettings {
    pub max_in_flight_events: usize,
    pub max_queued_per_connection: usize,
    pub max_queued_per_workspace: usize,
    pub max_event_bytes: usize,
    pub skip_summary_interval_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub dedupe_window_ms: u64,
    pub dedupe_max_entries: usize,
    pub liveness_timeout_ms: u64,
}

/// Input formats beyond Herald's own JSON and Avro.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Avro schema files (`.avsc`) of producers' versions of `EventEnvelope`, recognised by
    /// their fingerprint in single-object encoding and read into Herald's own.
    pub avro_writer_schemas: Vec<std::path::PathBuf>,
    /// The CloudEvents extension attribute that names the workspace (else the record key).
    pub cloudevents_workspace_attribute: String,
    /// Where writer schemas of Confluent wire-format records are fetched.
    pub schema_registry: SchemaRegistrySettings,
    /// Per input topic, where its records keep the event's fields (Confluent wire format).
    #[serde(default)]
    pub topics: Vec<TopicMapping>,
}

/// Where a topic's records keep the envelope's fields. Paths are dotted field names into the
/// record (`customer.workspace`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicMapping {
    pub topic: String,
    /// `const:<name>`, `field:<path>`, or `record` (the record's full name).
    pub event: String,
    /// `key` (the record key) or `field:<path>`.
    pub workspace: String,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<String>,
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub resource_id: Option<String>,
}

/// A Confluent-compatible schema registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistrySettings {
    /// Base URL; empty means no registry (Confluent wire-format records are dead-lettered).
    pub url: String,
    /// Basic auth user (Confluent Cloud: the API key); empty for none.
    pub username: String,
    /// Basic auth password (the API secret).
    pub password: crate::model::Secret,
    /// A PEM file of CA certificates trusted for an `https` URL, besides the system's.
    pub ca_file: String,
    pub timeout_ms: u64,
    /// Schemas kept by id (and ids the registry does not know).
    pub max_cached_schemas: usize,
}

/// Retry tiers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub tiers: Vec<String>,
    pub jitter: f64,
    pub max_age_ms: u64,
    pub group_id: String,
    pub max_in_flight: usize,
    pub max_in_flight_per_connection: usize,
    pub max_deferrals_per_second: u32,
    pub supersede_max_subjects: usize,
}

/// One delay tier and its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub delay: Duration,
    /// As configured, e.g. `5s`; also the topic suffix and the metrics label.
    pub name: String,
    pub topic: String,
}

/// The longest a destination call may take, in milliseconds (`destinations.timeout_ms` and a
/// connection's `timeout_ms`): a call holds its event's place, so an endpoint that never
/// answers must not hold it for long.
pub const MAX_DESTINATION_TIMEOUT_MS: u64 = 60_000;

/// Room a record Herald writes needs beside an input event of `processor.max_event_bytes`:
/// the envelope's other fields, the dead-letter headers, ids and history fields.
pub const RECORD_HEADROOM_BYTES: usize = 64 * 1024;

/// librdkafka's bounds for `message.max.bytes`.
const PRODUCER_RECORD_BYTES: std::ops::RangeInclusive<usize> = 1_000..=1_000_000_000;

/// Defaults shared by every destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationSettings {
    pub timeout_ms: u64,
    pub allow_private_networks: bool,
    pub max_rate_wait_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub breaker_max_connections: usize,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub listen: String,
}

/// The credential store (`topics.credentials`) and the references workspaces may make.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// A directory of key files (file name = key id, content = base64 of 32 bytes); empty for
    /// none. Keys also come from `HERALD_SECRETS_KEYS` and `HERALD_SECRETS_KEY`.
    pub keys_dir: String,
    /// The id of the key new records are encrypted with; empty for the first key given.
    pub write_key: String,
    /// The only variable names (and `${file:…}` names) a workspace's `credentials` may reference.
    pub env_prefix: String,
    /// Where `${file:NAME}` references are read from; empty turns them off.
    pub files_dir: String,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration: `{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
    #[error("configuration: `kafka.client.\"{key}\"`: {problem}")]
    InvalidClient { key: String, problem: String },
}

impl Settings {
    /// The retry tiers, in order, with their topics.
    pub fn retry_tiers(&self) -> Vec<Tier> {
        self.retry
            .tiers
            .iter()
            .map(|name| Tier {
                // Validated by `Settings::load`.
                delay: parse_duration(name).unwrap_or(Duration::from_secs(5)),
                name: name.clone(),
                topic: format!("{}{name}", self.topics.retry_prefix),
            })
            .collect()
    }

    /// Loads the defaults, then `file` (or `herald.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// Like [`Settings::load`] with an explicit environment, so tests need not touch the
    /// process environment.
    pub fn load_from(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        use config::{Config, Environment, File, FileFormat};

        let mut builder =
            Config::builder().add_source(File::from_str(DEFAULTS_TOML, FileFormat::Toml));
        builder = match file {
            Some(path) => builder.add_source(File::from(path).format(FileFormat::Toml)),
            None => builder.add_source(File::new("herald.toml", FileFormat::Toml).required(false)),
        };
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("HERALD__"))
            .collect();
        builder = builder.add_source(
            Environment::with_prefix("HERALD")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("retry.tiers")
                .with_list_parse_key("ingest.avro_writer_schemas")
                .source(Some(env)),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The defaults alone.
    pub fn defaults() -> Self {
        // The embedded defaults are checked by the `defaults_are_valid` test.
        Self::load_from(None::<&Path>, std::iter::empty()).expect("embedded defaults are valid")
    }

    fn validate(&self) -> Result<(), SettingsError> {
        fn positive(key: &'static str, v: u64) -> Result<(), SettingsError> {
            if v == 0 {
                return Err(SettingsError::Invalid {
                    key,
                    problem: "must be greater than 0".into(),
                });
            }
            Ok(())
        }
        fn nonempty(key: &'static str, v: &str) -> Result<(), SettingsError> {
            if v.trim().is_empty() {
                return Err(SettingsError::Invalid {
                    key,
                    problem: "must not be empty".into(),
                });
            }
            Ok(())
        }
        nonempty("kafka.brokers", &self.kafka.brokers)?;
        let vars = crate::settings::interpolate::Vars::from_env();
        for (key, value) in &self.kafka.client {
            if key == "message.max.bytes" {
                return Err(SettingsError::InvalidClient {
                    key: key.clone(),
                    problem: "set `kafka.max_record_bytes` instead, so that Herald's size checks \
                              and the producer's agree"
                        .into(),
                });
            }
            let resolved = vars
                .resolve(value)
                .map_err(|problem| SettingsError::InvalidClient {
                    key: key.clone(),
                    problem,
                })?;
            check_client_property(key, &resolved)?;
        }
        nonempty("kafka.group_id", &self.kafka.group_id)?;
        positive("kafka.session_timeout_ms", self.kafka.session_timeout_ms)?;
        positive("kafka.commit_interval_ms", self.kafka.commit_interval_ms)?;
        positive("kafka.message_timeout_ms", self.kafka.message_timeout_ms)?;
        // The consumer is polled at least every second; a shorter interval than a session
        // would only cause needless rebalances.
        // librdkafka's own bound.
        if self.kafka.fetch_wait_max_ms > 300_000 {
            return Err(SettingsError::Invalid {
                key: "kafka.fetch_wait_max_ms",
                problem: "must be at most 300000".into(),
            });
        }
        if self.kafka.max_poll_interval_ms < self.kafka.session_timeout_ms {
            return Err(SettingsError::Invalid {
                key: "kafka.max_poll_interval_ms",
                problem: format!(
                    "must be at least kafka.session_timeout_ms ({})",
                    self.kafka.session_timeout_ms
                ),
            });
        }
        for (key, name) in [
            ("topics.events", &self.topics.events),
            ("topics.workspaces", &self.topics.workspaces),
            ("topics.credentials", &self.topics.credentials),
            ("topics.deliveries", &self.topics.deliveries),
            ("topics.dlq", &self.topics.dlq),
        ] {
            nonempty(key, name)?;
        }
        positive("topics.partitions", self.topics.partitions.max(0) as u64)?;
        positive(
            "topics.workspace_partitions",
            self.topics.workspace_partitions.max(0) as u64,
        )?;
        positive(
            "topics.replication_factor",
            self.topics.replication_factor.max(0) as u64,
        )?;
        positive(
            "processor.max_in_flight_events",
            self.processor.max_in_flight_events as u64,
        )?;
        positive(
            "processor.max_queued_per_connection",
            self.processor.max_queued_per_connection as u64,
        )?;
        positive(
            "processor.max_queued_per_workspace",
            self.processor.max_queued_per_workspace as u64,
        )?;
        positive(
            "processor.liveness_timeout_ms",
            self.processor.liveness_timeout_ms,
        )?;
        positive(
            "destinations.breaker_cooldown_ms",
            self.destinations.breaker_cooldown_ms,
        )?;
        positive(
            "destinations.breaker_max_connections",
            self.destinations.breaker_max_connections as u64,
        )?;
        positive(
            "processor.max_event_bytes",
            self.processor.max_event_bytes as u64,
        )?;
        if !PRODUCER_RECORD_BYTES.contains(&self.kafka.max_record_bytes) {
            return Err(SettingsError::Invalid {
                key: "kafka.max_record_bytes",
                problem: format!(
                    "{} is outside {}..={}",
                    self.kafka.max_record_bytes,
                    PRODUCER_RECORD_BYTES.start(),
                    PRODUCER_RECORD_BYTES.end()
                ),
            });
        }
        if self.processor.max_event_bytes + RECORD_HEADROOM_BYTES > self.kafka.max_record_bytes {
            return Err(SettingsError::Invalid {
                key: "processor.max_event_bytes",
                problem: format!(
                    "({}) plus {RECORD_HEADROOM_BYTES} bytes of headroom must fit in \
                     kafka.max_record_bytes ({}): an accepted event must be writable to the \
                     dead-letter topic and to a retry tier",
                    self.processor.max_event_bytes, self.kafka.max_record_bytes
                ),
            });
        }
        positive(
            "processor.skip_summary_interval_ms",
            self.processor.skip_summary_interval_ms,
        )?;
        positive("destinations.timeout_ms", self.destinations.timeout_ms)?;
        if self.destinations.timeout_ms > MAX_DESTINATION_TIMEOUT_MS {
            return Err(SettingsError::Invalid {
                key: "destinations.timeout_ms",
                problem: format!("must be at most {MAX_DESTINATION_TIMEOUT_MS}"),
            });
        }
        let attribute = &self.ingest.cloudevents_workspace_attribute;
        if attribute.is_empty()
            || attribute.len() > 20
            || !attribute
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(SettingsError::Invalid {
                key: "ingest.cloudevents_workspace_attribute",
                problem: format!(
                    "`{attribute}` is not a CloudEvents attribute name (1 to 20 of a-z, 0-9)"
                ),
            });
        }
        let registry = &self.ingest.schema_registry;
        if !registry.url.is_empty() && url::Url::parse(&registry.url).is_err() {
            return Err(SettingsError::Invalid {
                key: "ingest.schema_registry.url",
                problem: format!("`{}` is not a URL", registry.url),
            });
        }
        if !registry.ca_file.is_empty() && std::fs::metadata(&registry.ca_file).is_err() {
            return Err(SettingsError::Invalid {
                key: "ingest.schema_registry.ca_file",
                problem: format!("`{}` cannot be read", registry.ca_file),
            });
        }
        positive("ingest.schema_registry.timeout_ms", registry.timeout_ms)?;
        for mapping in &self.ingest.topics {
            let problem = |p: String| SettingsError::Invalid {
                key: "ingest.topics",
                problem: format!("topic `{}`: {p}", mapping.topic),
            };
            nonempty("ingest.topics", &mapping.topic)?;
            let event_ok = mapping.event == "record"
                || mapping
                    .event
                    .strip_prefix("const:")
                    .is_some_and(|n| !n.is_empty())
                || mapping
                    .event
                    .strip_prefix("field:")
                    .is_some_and(|n| !n.is_empty());
            if !event_ok {
                return Err(problem(format!(
                    "event `{}` is not `record`, `const:<name>` or `field:<path>`",
                    mapping.event
                )));
            }
            let workspace_ok = mapping.workspace == "key"
                || mapping
                    .workspace
                    .strip_prefix("field:")
                    .is_some_and(|n| !n.is_empty());
            if !workspace_ok {
                return Err(problem(format!(
                    "workspace `{}` is not `key` or `field:<path>`",
                    mapping.workspace
                )));
            }
            if registry.url.is_empty() {
                return Err(problem("needs ingest.schema_registry.url".into()));
            }
        }
        if self.history.format == HistoryFormat::Avro && registry.url.is_empty() {
            return Err(SettingsError::Invalid {
                key: "history.format",
                problem: "`avro` needs a schema registry: set ingest.schema_registry.url".into(),
            });
        }
        positive(
            "ingest.schema_registry.max_cached_schemas",
            registry.max_cached_schemas as u64,
        )?;
        for path in &self.ingest.avro_writer_schemas {
            let problem = |p: String| SettingsError::Invalid {
                key: "ingest.avro_writer_schemas",
                problem: format!("{}: {p}", path.display()),
            };
            let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
            let writer =
                apache_avro::Schema::parse_str(&text).map_err(|e| problem(e.to_string()))?;
            let reader = <crate::model::records::EventEnvelope as crate::model::records::avro::AvroRecord>::schema();
            apache_avro::schema_compatibility::SchemaCompatibility::can_read(&writer, reader)
                .map_err(|e| problem(format!("cannot be read as EventEnvelope: {e}")))?;
        }
        nonempty("topics.retry_prefix", &self.topics.retry_prefix)?;
        nonempty("retry.group_id", &self.retry.group_id)?;
        positive("retry.max_age_ms", self.retry.max_age_ms)?;
        positive("retry.max_in_flight", self.retry.max_in_flight as u64)?;
        positive(
            "retry.max_in_flight_per_connection",
            self.retry.max_in_flight_per_connection as u64,
        )?;
        positive(
            "retry.max_deferrals_per_second",
            u64::from(self.retry.max_deferrals_per_second),
        )?;
        positive(
            "retry.supersede_max_subjects",
            self.retry.supersede_max_subjects as u64,
        )?;
        if !(0.0..1.0).contains(&self.retry.jitter) {
            return Err(SettingsError::Invalid {
                key: "retry.jitter",
                problem: format!("{} is not a fraction in [0, 1)", self.retry.jitter),
            });
        }
        if self.retry.tiers.is_empty() {
            return Err(SettingsError::Invalid {
                key: "retry.tiers",
                problem: "needs at least one tier".into(),
            });
        }
        let mut previous = Duration::ZERO;
        for tier in &self.retry.tiers {
            let delay = parse_duration(tier).map_err(|problem| SettingsError::Invalid {
                key: "retry.tiers",
                problem,
            })?;
            if delay <= previous {
                return Err(SettingsError::Invalid {
                    key: "retry.tiers",
                    problem: format!("`{tier}` must be longer than the tier before it"),
                });
            }
            previous = delay;
        }
        let prefix = &self.credentials.env_prefix;
        if prefix.len() < 3
            || !prefix
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            // An empty or tiny prefix would let workspaces read the processor's own secrets.
            return Err(SettingsError::Invalid {
                key: "credentials.env_prefix",
                problem: format!(
                    "`{prefix}` must be at least 3 characters of A-Z, 0-9 and `_`, like HERALD_CRED_"
                ),
            });
        }
        // Dedupe reads the history topic: it cannot remember deliveries the topic has deleted.
        if self.topics.deliveries_retention_ms < self.processor.dedupe_window_ms {
            return Err(SettingsError::Invalid {
                key: "topics.deliveries_retention_ms",
                problem: format!(
                    "must be at least processor.dedupe_window_ms ({})",
                    self.processor.dedupe_window_ms
                ),
            });
        }
        self.api.validate()?;
        self.oauth.hubspot.validate()?;
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(SettingsError::Invalid {
                key: "http.listen",
                problem: format!("`{}` is not an address like 0.0.0.0:8080", self.http.listen),
            });
        }
        Ok(())
    }

    /// The per-request timeout destinations use unless a connection overrides it.
    pub fn destination_timeout(&self) -> Duration {
        Duration::from_millis(self.destinations.timeout_ms)
    }
}

/// Asks librdkafka whether it takes `value` for `key`, at start-up rather than when the first
/// client is made. librdkafka's message quotes the value, which may be a password resolved from
/// the environment, so the value is cut out of it.
fn check_client_property(key: &str, value: &str) -> Result<(), SettingsError> {
    let mut probe = rdkafka::ClientConfig::new();
    probe.set(key, value);
    let Err(e) = probe.create_native_config() else {
        return Ok(());
    };
    let text = match e {
        rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
        other => other.to_string(),
    };
    let problem = if value.is_empty() {
        text
    } else {
        text.replace(value, "…")
    };
    Err(SettingsError::InvalidClient {
        key: key.to_owned(),
        problem,
    })
}

/// Parses `250ms`, `5s`, `1m`, `10m`, `1h`, `6h`, `3d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{text}` has an unknown unit (ms, s, m, h, d)")),
    };
    if n == 0 {
        return Err(format!("`{text}` is zero"));
    }
    Ok(Duration::from_millis(n * ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration file holding `text`, in a directory that lives as long as the guard.
    fn config_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, text).unwrap();
        (dir, file)
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::defaults();
        assert_eq!(s.topics.events, "herald.events");
        assert_eq!(s.processor.max_event_bytes, 1024 * 1024);
        assert!(!s.destinations.allow_private_networks);
    }

    #[test]
    fn environment_overrides_file_and_defaults() {
        let (_dir, file) = config_file("[kafka]\nbrokers = \"file:9092\"\ngroup_id = \"g\"\n");
        let s = Settings::load_from(
            Some(&file),
            env(&[
                ("HERALD__KAFKA__BROKERS", "env:9092"),
                ("HERALD__PROCESSOR__MAX_IN_FLIGHT_EVENTS", "7"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kafka.brokers, "env:9092");
        assert_eq!(s.kafka.group_id, "g");
        assert_eq!(s.processor.max_in_flight_events, 7);
    }

    #[test]
    fn unknown_key_in_file_is_rejected_by_name() {
        let (_dir, file) = config_file("[processor]\nmax_inflight = 3\n");
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("max_inflight"), "{err}");
    }

    #[test]
    fn unknown_environment_key_is_rejected() {
        let err = Settings::load_from(None, env(&[("HERALD__KAFKA__BROKER", "x:1")])).unwrap_err();
        assert!(err.to_string().contains("broker"), "{err}");
    }

    #[test]
    fn history_retention_is_never_shorter_than_the_dedupe_window() {
        let err = Settings::load_from(
            None,
            env(&[("HERALD__TOPICS__DELIVERIES_RETENTION_MS", "86400000")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("topics.deliveries_retention_ms"),
            "{err}"
        );
        let ok = Settings::load_from(
            None,
            env(&[
                ("HERALD__TOPICS__DELIVERIES_RETENTION_MS", "86400000"),
                ("HERALD__PROCESSOR__DEDUPE_WINDOW_MS", "3600000"),
            ]),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn admin_tokens_are_checked_and_redacted() {
        let (_dir, path) = config_file(
            "[[api.admin_tokens]]\nname = \"ops\"\ntoken = \"pk_0123456789abcdefghijklmnop\"\nscope = \"write\"\n",
        );
        let err = Settings::load_from(Some(&path), env(&[])).unwrap_err();
        assert!(err.to_string().contains("api.admin_tokens"), "{err}");
        assert!(!err.to_string().contains("pk_0123"), "{err}");
        let (_dir, path) = config_file(
            "[[api.admin_tokens]]\nname = \"ops\"\ntoken = \"adm_0123456789abcdefghijklmnop\"\nscope = \"read\"\n",
        );
        let settings = Settings::load_from(Some(&path), env(&[])).unwrap();
        assert!(!format!("{settings:?}").contains("adm_0123"));
    }

    #[test]
    fn invalid_value_names_the_key() {
        let err = Settings::load_from(
            None,
            env(&[("HERALD__PROCESSOR__MAX_IN_FLIGHT_EVENTS", "0")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("processor.max_in_flight_events"),
            "{err}"
        );
        let err =
            Settings::load_from(None, env(&[("HERALD__HTTP__LISTEN", "nowhere")])).unwrap_err();
        assert!(err.to_string().contains("http.listen"), "{err}");
        let err = Settings::load_from(None, env(&[("HERALD__LOG__FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        let err =
            Settings::load_from(None, env(&[("HERALD__CREDENTIALS__ENV_PREFIX", "")])).unwrap_err();
        assert!(err.to_string().contains("credentials.env_prefix"), "{err}");
        let err = Settings::load_from(None, env(&[("HERALD__RETRY__JITTER", "1.5")])).unwrap_err();
        assert!(err.to_string().contains("retry.jitter"), "{err}");
        let err = Settings::load_from(None, env(&[("HERALD__DESTINATIONS__TIMEOUT_MS", "60001")]))
            .unwrap_err();
        assert!(err.to_string().contains("destinations.timeout_ms"), "{err}");
        let ok = Settings::load_from(None, env(&[("HERALD__DESTINATIONS__TIMEOUT_MS", "60000")]));
        assert!(ok.is_ok(), "{ok:?}");
        let err = Settings::load_from(None, env(&[("HERALD__KAFKA__FETCH_WAIT_MAX_MS", "300001")]))
            .unwrap_err();
        assert!(err.to_string().contains("kafka.fetch_wait_max_ms"), "{err}");
    }

    #[test]
    fn record_size_settings_must_agree() {
        let err = Settings::load_from(
            None,
            env(&[("HERALD__PROCESSOR__MAX_EVENT_BYTES", "2097152")]),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("processor.max_event_bytes") && text.contains("kafka.max_record_bytes"),
            "{text}"
        );
        let ok = Settings::load_from(
            None,
            env(&[
                ("HERALD__PROCESSOR__MAX_EVENT_BYTES", "2097152"),
                ("HERALD__KAFKA__MAX_RECORD_BYTES", "4194304"),
            ]),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let (_dir, file) = config_file("[kafka.client]\n\"message.max.bytes\" = \"5000000\"\n");
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("message.max.bytes") && text.contains("kafka.max_record_bytes"),
            "{text}"
        );
    }

    #[test]
    fn ingest_settings_are_validated_naming_the_key() {
        let cases = [
            (
                "[ingest]\ncloudevents_workspace_attribute = \"Work_Space\"\n",
                "ingest.cloudevents_workspace_attribute",
            ),
            (
                "[ingest]\navro_writer_schemas = [\"/surely/not/here.avsc\"]\n",
                "ingest.avro_writer_schemas",
            ),
            (
                "[ingest.schema_registry]\nurl = \"not a url\"\n",
                "ingest.schema_registry.url",
            ),
            (
                "[history]\nformat = \"avro\"\n",
                "`history.format` `avro` needs a schema registry",
            ),
            ("[history]\nformat = \"xml\"\n", "history.format"),
            (
                "[[ingest.topics]]\ntopic = \"t\"\nevent = \"record\"\nworkspace = \"key\"\n",
                "needs ingest.schema_registry.url",
            ),
            (
                "[ingest.schema_registry]\nurl = \"http://r\"\n[[ingest.topics]]\ntopic = \"t\"\nevent = \"typo:x\"\nworkspace = \"key\"\n",
                "ingest.topics",
            ),
            (
                "[ingest.schema_registry]\nurl = \"http://r\"\n[[ingest.topics]]\ntopic = \"t\"\nevent = \"record\"\nworkspace = \"value\"\n",
                "workspace `value`",
            ),
        ];
        for (text, expect) in cases {
            let (_dir, file) = config_file(text);
            let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
            assert!(err.to_string().contains(expect), "{expect}: {err}");
        }
        let (_dir, file) = config_file(
            "[ingest.schema_registry]\nurl = \"http://r\"\n[[ingest.topics]]\ntopic = \"t\"\nevent = \"field:type\"\nworkspace = \"field:tenant.id\"\n",
        );
        let ok = Settings::load_from(Some(&file), env(&[])).unwrap();
        assert_eq!(ok.ingest.topics[0].workspace, "field:tenant.id");
    }

    #[test]
    fn a_client_property_librdkafka_refuses_is_named_without_its_value() {
        let (_dir, file) =
            config_file("[kafka.client]\n\"security.protocol\" = \"canary-protocol\"\n");
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("kafka.client.\"security.protocol\""),
            "{text}"
        );
        assert!(!text.contains("canary"), "{text}");
    }

    #[test]
    fn client_properties_may_reference_the_environment() {
        let (_dir, file) = config_file(
            "[kafka.client]\n\"sasl.password\" = \"${env:HERALD_TEST_SURELY_UNSET_PW}\"\n",
        );
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sasl.password") && text.contains("HERALD_TEST_SURELY_UNSET_PW"),
            "{text}"
        );
    }

    #[test]
    fn retry_tiers_must_parse_and_grow() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("0s").is_err());
        let (_dir, file) = config_file("[retry]\ntiers = [\"1m\", \"5s\"]\n");
        let err = Settings::load_from(Some(&file), env(&[])).unwrap_err();
        assert!(err.to_string().contains("retry.tiers"), "{err}");
    }
}
