//! `herald workspace apply FILE…`: validate, then publish to `herald.workspaces`. The other
//! `herald workspace` commands read what is applied ([`applied`]): `list` and `get` ([`show`]),
//! `diff` ([`diff`]), and `delete` ([`delete`]).

pub mod applied;
pub mod delete;
pub mod diff;
pub mod show;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaArgs;
use super::output::Output;
use crate::app::destination_context;
use crate::credentials::{Keyring, RecordKey, write};
use crate::kafka;
use crate::model::WorkspaceConfig;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;
use crate::workspace::compile::CompiledWorkspace;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Validate and say what would be published; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Move literal credentials of the files into the encrypted credential store and publish
    /// the workspaces without them (without this, a literal credential is refused).
    #[arg(long)]
    pub store_credentials: bool,
    /// Point the files' sandbox address (`herald dev`'s http://127.0.0.1:7780, which the
    /// examples use) at this URL instead, e.g. `http://sandbox:8090`.
    #[arg(long, value_name = "URL")]
    pub sandbox_url: Option<String>,
    /// Workspace files (YAML or JSON), one workspace each.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Reads and validates workspace files; the error lists every problem as `FILE: path: message`.
pub fn validate_files(
    settings: &Settings,
    files: &[(String, String)],
    vars: &Vars,
) -> anyhow::Result<Vec<WorkspaceConfig>> {
    let ctx = destination_context(settings);
    let vars = &vars.clone().restricted(
        &settings.credentials.env_prefix,
        &settings.credentials.files_dir,
    );
    let mut problems = Vec::new();
    let mut configs = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (name, text) in files {
        let config = match WorkspaceConfig::parse(text) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if let Some(first) = seen.insert(config.workspace.clone(), name.clone()) {
            problems.push(format!(
                "{name}: workspace: `{}` is also defined in {first}",
                config.workspace
            ));
        }
        match CompiledWorkspace::compile(&config, &ctx, vars) {
            Ok(_) => configs.push(config),
            Err(errors) => problems.extend(errors.0.iter().map(|e| format!("{name}: {e}"))),
        }
    }
    if !problems.is_empty() {
        bail!(
            "invalid workspace configuration:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(configs)
}

/// Publishes configs (as written, `${env:…}` references unresolved) keyed by workspace id.
pub async fn publish(settings: &Settings, configs: &[WorkspaceConfig]) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka::producer_config(settings).create()?;
    for config in configs {
        let value = serde_json::to_vec(config)?;
        let record = FutureRecord::to(&settings.topics.workspaces)
            .key(config.workspace.as_bytes())
            .payload(&value);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| {
                format!(
                    "cannot publish workspace `{}` to {} on {}",
                    config.workspace, settings.topics.workspaces, settings.kafka.brokers
                )
            })?;
    }
    Ok(())
}

/// The literal (not `${…}`) credential values of `config`, by connection: the fields a
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

/// Moves every connection's literal credentials into the store and out of `configs`. A
/// connection that mixes literal values and references is refused: it would be half in each.
async fn store_literal_credentials(
    settings: &Settings,
    configs: &mut [WorkspaceConfig],
) -> anyhow::Result<Vec<String>> {
    let keys = Keyring::load(&settings.credentials)?;
    let producer: FutureProducer = kafka::producer_config(settings).create()?;
    let mut moved = Vec::new();
    for config in configs.iter_mut() {
        for (i, literal) in literal_credentials(config) {
            let connection = &config.connections[i];
            if literal.len() != connection.credentials.len() {
                bail!(
                    "{}: connections[{i}].credentials: mixes literal values and `${{…}}` \
                     references; store all of its fields or reference all of them",
                    config.workspace
                );
            }
            let record = RecordKey::new(&config.workspace, &connection.id)
                .ok_or_else(|| anyhow!("connections[{i}].id: cannot key a store record"))?;
            write::put(settings, &producer, &keys, &record, &connection.credentials).await?;
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
    }
    Ok(moved)
}

pub async fn apply(settings: &Settings, args: &ApplyArgs, output: Output) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let text = match &args.sandbox_url {
            Some(url) => super::dev::at_sandbox(&text, url),
            None => text,
        };
        files.push((path.display().to_string(), text));
    }
    let mut configs = validate_files(settings, &files, &Vars::from_env())?;
    if !args.store_credentials {
        let problems: Vec<String> = configs
            .iter()
            .zip(&files)
            .flat_map(|(config, (name, _))| {
                literal_credentials(config)
                    .into_iter()
                    .flat_map(move |(i, fields)| {
                        fields.into_iter().map(move |f| {
                            format!(
                                "{name}: connections[{i}].credentials.{f}: a literal credential \
                                 would be published in plain text; reference it \
                                 (`${{env:{}…}}`), store it with `herald credentials set`, or \
                                 pass --store-credentials to move it into the store",
                                settings.credentials.env_prefix
                            )
                        })
                    })
            })
            .collect();
        if !problems.is_empty() {
            bail!("refused:\n  {}", problems.join("\n  "));
        }
    }
    let summary = |configs: &[WorkspaceConfig], state: &str| -> Vec<serde_json::Value> {
        configs
            .iter()
            .map(|c| {
                serde_json::json!({
                    "workspace": c.workspace,
                    "connections": c.connections.len(),
                    "rules": c.rules.len(),
                    "state": state,
                })
            })
            .collect()
    };
    if args.dry_run {
        if output.is_json() {
            return Output::print_json(&serde_json::json!({
                "dry_run": true,
                "workspaces": summary(&configs, "valid"),
            }));
        }
        for c in &configs {
            println!(
                "valid {} ({} connections, {} rules)",
                c.workspace,
                c.connections.len(),
                c.rules.len()
            );
        }
        println!("dry run: nothing was published; `herald workspace diff` shows what would change");
        return Ok(());
    }
    let mut stored = Vec::new();
    if args.store_credentials {
        stored = store_literal_credentials(settings, &mut configs).await?;
        // Said before publishing: should publishing fail, the store has changed all the same.
        if !output.is_json() {
            for moved in &stored {
                println!(
                    "stored the credentials of {moved} in {}",
                    settings.topics.credentials
                );
            }
        }
    }
    publish(settings, &configs).await?;
    if output.is_json() {
        return Output::print_json(&serde_json::json!({
            "dry_run": false,
            "workspaces": summary(&configs, "applied"),
            "stored_credentials": stored,
        }));
    }
    for c in &configs {
        println!("applied {} to {}", c.workspace, settings.topics.workspaces);
    }
    Ok(())
}
