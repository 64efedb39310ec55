//! `herald history`: a workspace's deliveries, latest state each.

use anyhow::Context;
use clap::Args;

use super::KafkaArgs;
use super::output::{Output, Progress};
use crate::history::reader::{self, HistoryQuery};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[arg(long)]
    workspace: String,
    /// Only this event's deliveries.
    #[arg(long)]
    event_id: Option<String>,
    /// One JSON object per delivery, one per line (the same as `--output json`).
    #[arg(long)]
    json: bool,
}

pub fn show(settings: &Settings, args: &HistoryArgs, output: Output) -> anyhow::Result<()> {
    let query = HistoryQuery {
        workspace_id: args.workspace.clone(),
        event_id: args.event_id.clone(),
    };
    let progress = Progress::start(format!("reading {}", settings.topics.deliveries));
    let (records, unreadable) = reader::read(settings, &query).with_context(|| {
        format!(
            "cannot read {} on {}",
            settings.topics.deliveries, settings.kafka.brokers
        )
    })?;
    drop(progress);
    if unreadable > 0 {
        eprintln!("warning: {unreadable} history records could not be read and are not shown");
    }
    if args.json || output.is_json() {
        for r in &records {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    if records.is_empty() {
        eprintln!("no deliveries recorded for workspace {}", args.workspace);
        return Ok(());
    }
    println!(
        "{:<20} {:<10} {:<18} {:<28} {:<14} {:>8}  REASON",
        "UPDATED", "STATUS", "EVENT", "RULE", "CONNECTION", "ATTEMPTS"
    );
    for r in &records {
        let attempts = r
            .skipped_count
            .map(|c| format!("{c} ev"))
            .unwrap_or_else(|| r.attempts.len().to_string());
        println!(
            "{:<20} {:<10} {:<18} {:<28} {:<14} {:>8}  {}",
            r.updated_at.format("%Y-%m-%d %H:%M:%S"),
            r.status,
            r.event,
            r.rule_id.as_deref().unwrap_or("-"),
            r.connection_id.as_deref().unwrap_or("-"),
            attempts,
            r.reason.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
