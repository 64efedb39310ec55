//! `herald workspace list` and `herald workspace get ID`: what `herald.workspaces` holds.

use anyhow::bail;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::applied::{Applied, AppliedTable, Summary, redacted, to_yaml};
use crate::cli::KafkaArgs;
use crate::cli::output::Output;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Workspace id.
    pub id: String,
}

pub async fn list(settings: &Settings, output: Output) -> anyhow::Result<()> {
    let table = AppliedTable::read(settings).await?;
    let all: Vec<Summary> = table
        .workspaces
        .iter()
        .map(|(id, applied)| Summary::of(settings, id, applied))
        .collect();
    if output.is_json() {
        return Output::print_json(&serde_json::json!({ "workspaces": all }));
    }
    if all.is_empty() {
        eprintln!("no workspace is applied in {}", settings.topics.workspaces);
        return Ok(());
    }
    println!(
        "{:<28} {:<8} {:>11} {:>5}  REASON",
        "WORKSPACE", "STATUS", "CONNECTIONS", "RULES"
    );
    for s in &all {
        println!(
            "{:<28} {:<8} {:>11} {:>5}  {}",
            s.id,
            s.status,
            s.connections,
            s.rules,
            s.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `get`'s JSON document.
#[derive(Debug, Serialize)]
struct Shown {
    #[serde(flatten)]
    summary: Summary,
    /// Connections whose credentials are in the credential store.
    stored_credentials: Vec<String>,
    config: Value,
}

pub async fn get(settings: &Settings, args: &GetArgs, output: Output) -> anyhow::Result<()> {
    let table = AppliedTable::read(settings).await?;
    let Some(applied) = table.workspaces.get(&args.id) else {
        bail!(
            "workspace `{}` is not applied in {}",
            args.id,
            settings.topics.workspaces
        );
    };
    let summary = Summary::of(settings, &args.id, applied);
    let Applied::Config(config) = applied else {
        bail!(
            "workspace `{}`: {}",
            args.id,
            summary.reason.unwrap_or_default()
        );
    };
    let stored = table.stored_connections(config);
    let config = redacted(config)?;
    if output.is_json() {
        return Output::print_json(&Shown {
            summary,
            stored_credentials: stored,
            config,
        });
    }
    // Comments, so that the text still applies as it is.
    println!("# {} in {}", args.id, settings.topics.workspaces);
    if let Some(reason) = &summary.reason {
        println!("# invalid here: {}", reason.replace('\n', "\n#   "));
    }
    for connection in &stored {
        println!(
            "# connection {connection}: credentials stored in {}",
            settings.topics.credentials
        );
    }
    print!("{}", to_yaml(&config)?);
    Ok(())
}
