//! Checking a workspace file before it is published, and publishing it: shared by
//! `herald workspace apply` and `PUT /v1/workspaces/{id}`, so that both accept and refuse
//! the same files with the same field errors.
//!
//! A credential written literally in a file (not a `${…}` reference) would be published in
//! plain text to `herald.workspaces`: it is refused, or moved into the encrypted credential
//! store first ([`store_literal_credentials`]) and left out of the published config.

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::compile::CompiledWorkspace;
use crate::credentials::write::{self, WriteError};
use crate::credentials::{Keyring, RecordKey};
use crate::destinations::DestinationContext;
use crate::model::{FieldError, WorkspaceConfig};
use crate::settings::Settings;
use crate::settings::interpolate::Vars;

/// How long publishing one record may wait for Kafka's acknowledgement.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Parses and compiles one workspace file (YAML or JSON) as the processor would, without the
/// credential store: every problem, each naming its field. `vars` should already be
/// restricted to the credential prefix (see [`Vars::restricted`]).
pub fn check(
    text: &str,
    ctx: &DestinationContext,
    vars: &Vars,
) -> Result<WorkspaceConfig, Vec<FieldError>> {
    let config = WorkspaceConfig::parse(text).map_err(|e| vec![e])?;
    CompiledWorkspace::compile(&config, ctx, vars).map_err(|errors| errors.0)?;
    Ok(config)
}

/// The literal (not `${…}`) credential values of `config`, by connection index: the fields a
/// workspace file should not hold in plain text.
pub fn literal_credentials(config: &WorkspaceConfig) -> Vec<(usize, Vec<&str>)> {
    config
        .connections
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let literal: Vec<&str> = c
                .credentials
                .iter()
                .filter(|(_, v)| !v.expose().contains("${"))
                .map(|(k, _)| k.as_str())
                .collect();
            (!literal.is_empty()).then_some((i, literal))
        })
        .collect()
}

/// One error per literal credential of `config`, at `connections[i].credentials.<field>`;
/// `remedy` ends the message (how the caller could move it into the store instead).
pub fn refuse_literal_credentials(
    config: &WorkspaceConfig,
    env_prefix: &str,
    remedy: &str,
) -> Vec<FieldError> {
    literal_credentials(config)
        .into_iter()
        .flat_map(|(i, fields)| {
            fields.into_iter().map(move |f| {
                FieldError::new(
                    format!("connections[{i}].credentials.{f}"),
                    format!(
                        "a literal credential would be published in plain text; reference it \
                         (`${{env:{env_prefix}…}}`), store it with `herald credentials set`, or \
                         {remedy}"
                    ),
                )
            })
        })
        .collect()
}

/// Connections that mix literal values and references: they cannot be moved into the store,
/// which would then hold half of them.
pub fn mixed_credentials(config: &WorkspaceConfig) -> Vec<FieldError> {
    literal_credentials(config)
        .into_iter()
        .filter(|(i, literal)| literal.len() != config.connections[*i].credentials.len())
        .map(|(i, _)| {
            FieldError::new(
                format!("connections[{i}].credentials"),
                "mixes literal values and `${…}` references; store all of its fields or \
                 reference all of them",
            )
        })
        .collect()
}

/// Why literal credentials could not be moved into the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Mixed(Vec<FieldError>),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Moves every connection's literal credentials into the store and out of `config`; returns
/// the records written, with their fields. Nothing is stored when a connection mixes
/// literal values and references.
pub async fn store_literal_credentials(
    settings: &Settings,
    producer: &FutureProducer,
    keys: &Keyring,
    config: &mut WorkspaceConfig,
) -> Result<Vec<String>, StoreError> {
    let mixed = mixed_credentials(config);
    if !mixed.is_empty() {
        return Err(StoreError::Mixed(mixed));
    }
    let mut moved = Vec::new();
    for (i, literal) in literal_credentials(config) {
        let connection = &config.connections[i];
        // Connection ids were checked by `check`; one that cannot key a record is refused.
        let record = RecordKey::new(&config.workspace, &connection.id).ok_or_else(|| {
            StoreError::Mixed(vec![FieldError::new(
                format!("connections[{i}].id"),
                "cannot key a credential record",
            )])
        })?;
        write::put(settings, producer, keys, &record, &connection.credentials).await?;
        moved.push(format!("{record} ({})", literal.join(", ")));
    }
    for connection in &mut config.connections {
        if !connection.credentials.is_empty()
            && connection
                .credentials
                .values()
                .all(|v| !v.expose().contains("${"))
        {
            connection.credentials.clear();
        }
    }
    Ok(moved)
}

/// Publishes `config` (as written, `${env:…}` references unresolved) keyed by its id; returns
/// the record's value, which the workspace table holds once it applied it.
pub async fn publish(
    settings: &Settings,
    producer: &FutureProducer,
    config: &WorkspaceConfig,
) -> Result<Vec<u8>, KafkaError> {
    // Serialising a config read from JSON or YAML cannot fail.
    let value = serde_json::to_vec(config).expect("a workspace config serialises");
    let record = FutureRecord::to(&settings.topics.workspaces)
        .key(config.workspace.as_bytes())
        .payload(&value);
    producer
        .send(record, SEND_TIMEOUT)
        .await
        .map_err(|(e, _)| e)?;
    Ok(value)
}
