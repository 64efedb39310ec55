//! What is applied: `herald.workspaces` read to its end (latest record per workspace id,
//! tombstones dropping it), and the view `list`, `get` and `diff` show of a config, in which a
//! credential is a `${…}` reference or `<redacted>`, never a value.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use serde::Serialize;
use serde_json::Value;

use crate::app::destination_context;
use crate::kafka;
use crate::model::WorkspaceConfig;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;
use crate::workspace::compile::CompiledWorkspace;

/// What a literal credential value is shown as.
pub const REDACTED: &str = "<redacted>";

/// The latest record of one workspace id.
#[derive(Debug, Clone)]
pub enum Applied {
    Config(WorkspaceConfig),
    /// A record that is not a workspace config, or one stored under another id, with the reason.
    Unreadable(String),
}

/// Every applied workspace by id, and the connections (as `workspace/connection`) whose
/// credentials are in the credential store.
#[derive(Debug, Default)]
pub struct AppliedTable {
    pub workspaces: BTreeMap<String, Applied>,
    pub stored: BTreeSet<(String, String)>,
}

impl AppliedTable {
    /// Reads `herald.workspaces` and the keys (never the values) of `herald.credentials`.
    pub async fn read(settings: &Settings) -> anyhow::Result<Self> {
        let read = settings.clone();
        tokio::task::spawn_blocking(move || Self::read_blocking(&read))
            .await?
            .with_context(|| {
                format!(
                    "cannot read {} on {}",
                    settings.topics.workspaces, settings.kafka.brokers
                )
            })
    }

    fn read_blocking(settings: &Settings) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka::reader_config(settings).create()?;
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        kafka::read_to_end(&consumer, &settings.topics.workspaces, |m| {
            if let Some(key) = m.key() {
                let key = String::from_utf8_lossy(key).into_owned();
                latest.insert(key, m.payload().map(<[u8]>::to_vec));
            }
        })?;
        let workspaces = latest
            .into_iter()
            .filter_map(|(id, value)| {
                let value = value?;
                let applied = match WorkspaceConfig::from_json(&value) {
                    Ok(config) if config.workspace == id => Applied::Config(config),
                    Ok(config) => Applied::Unreadable(format!(
                        "the record for `{}` is stored under key `{id}`",
                        config.workspace
                    )),
                    Err(e) => Applied::Unreadable(format!("the record is unreadable: {e}")),
                };
                Some((id, applied))
            })
            .collect();
        let stored = crate::credentials::write::read_all(settings)?
            .into_iter()
            .filter(|(_, value)| value.is_some())
            .map(|(key, _)| (key.workspace, key.connection))
            .collect();
        Ok(Self { workspaces, stored })
    }

    /// The connections of `config` whose credentials come from the store.
    pub fn stored_connections(&self, config: &WorkspaceConfig) -> Vec<String> {
        config
            .connections
            .iter()
            .filter(|c| {
                c.credentials.is_empty()
                    && self
                        .stored
                        .contains(&(config.workspace.clone(), c.id.clone()))
            })
            .map(|c| c.id.clone())
            .collect()
    }
}

/// A workspace as `list` shows it.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub id: String,
    /// `valid`, or `invalid` with the reason.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub connections: usize,
    pub rules: usize,
}

impl Summary {
    /// Checks `applied` as `workspace apply` does, in this command's environment: a config
    /// whose `${env:…}` variable is not set here is invalid here, and says so.
    pub fn of(settings: &Settings, id: &str, applied: &Applied) -> Self {
        match applied {
            Applied::Unreadable(reason) => Self {
                id: id.to_owned(),
                status: "invalid",
                reason: Some(reason.clone()),
                connections: 0,
                rules: 0,
            },
            Applied::Config(config) => {
                let reason = compile_here(settings, config).err();
                Self {
                    id: id.to_owned(),
                    status: if reason.is_none() { "valid" } else { "invalid" },
                    reason,
                    connections: config.connections.len(),
                    rules: config.rules.len(),
                }
            }
        }
    }
}

fn compile_here(settings: &Settings, config: &WorkspaceConfig) -> Result<(), String> {
    let vars = Vars::from_env().restricted(
        &settings.credentials.env_prefix,
        &settings.credentials.files_dir,
    );
    CompiledWorkspace::compile(config, &destination_context(settings), &vars)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `config` as JSON with every literal credential value replaced by [`REDACTED`]; `${…}`
/// references stay, since they name where the value lives and are not the value.
pub fn redacted(config: &WorkspaceConfig) -> anyhow::Result<Value> {
    let mut value = serde_json::to_value(config)?;
    if let Some(connections) = value.get_mut("connections").and_then(Value::as_array_mut) {
        for connection in connections {
            if let Some(fields) = connection
                .get_mut("credentials")
                .and_then(Value::as_object_mut)
            {
                for field in fields.values_mut() {
                    if !field.as_str().is_some_and(|s| s.contains("${")) {
                        *field = Value::String(REDACTED.to_owned());
                    }
                }
            }
        }
    }
    Ok(value)
}

/// `value` as YAML text.
pub fn to_yaml(value: &Value) -> anyhow::Result<String> {
    Ok(serde_yaml_ng::to_string(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_credentials_are_redacted_and_references_kept() {
        let config = WorkspaceConfig::parse(
            "workspace: ws\nconnections:\n  - { id: s, type: slack, channel: c, credentials: \
             { token: xoxb-canary, other: \"${env:HERALD_CRED_X}\" } }\n",
        )
        .unwrap();
        let yaml = to_yaml(&redacted(&config).unwrap()).unwrap();
        assert!(!yaml.contains("canary"), "{yaml}");
        assert!(yaml.contains("token: <redacted>"), "{yaml}");
        assert!(yaml.contains("other: ${env:HERALD_CRED_X}"), "{yaml}");
        assert!(yaml.contains("channel: c"), "{yaml}");
    }
}
