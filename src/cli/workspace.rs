//! `herald workspace apply FILE…`: validate, then publish to `herald.workspaces`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaArgs;
use crate::app::destination_context;
use crate::kafka;
use crate::model::WorkspaceConfig;
use crate::settings::Settings;
use crate::settings::interpolate::Vars;
use crate::workspace::compile::CompiledWorkspace;

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Validate only; publish nothing.
    #[arg(long)]
    pub dry_run: bool,
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

pub async fn apply(settings: &Settings, args: &ApplyArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        files.push((path.display().to_string(), text));
    }
    let configs = validate_files(settings, &files, &Vars::from_env())?;
    if args.dry_run {
        for c in &configs {
            println!(
                "valid {} ({} connections, {} rules)",
                c.workspace,
                c.connections.len(),
                c.rules.len()
            );
        }
        return Ok(());
    }
    publish(settings, &configs).await?;
    for c in &configs {
        println!("applied {} to {}", c.workspace, settings.topics.workspaces);
    }
    Ok(())
}
