//! `herald redrive`: re-enqueue a workspace's failed and dead deliveries after a fix.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};

use super::KafkaArgs;
use super::output::{Output, Progress};
use crate::model::records::DeliveryStatus;
use crate::ops::redrive::{RedriveFilter, redrive};
use crate::settings::Settings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Status {
    Failed,
    Dead,
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[arg(long)]
    workspace: String,
    /// Only this connection's deliveries.
    #[arg(long)]
    connection: Option<String>,
    /// Only this rule's deliveries.
    #[arg(long)]
    rule: Option<String>,
    /// Only deliveries that failed at or after this time (RFC 3339, e.g. 2026-03-21T14:00:00Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Which final states to redrive.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Status::Failed, Status::Dead])]
    status: Vec<Status>,
    /// List what would be redriven; change nothing.
    #[arg(long)]
    dry_run: bool,
}

pub(super) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("`{text}` is not an RFC 3339 time like 2026-03-21T14:00:00Z: {e}"))
}

pub async fn run(settings: &Settings, args: &RedriveArgs, output: Output) -> anyhow::Result<()> {
    let filter = RedriveFilter {
        workspace_id: args.workspace.clone(),
        connection_id: args.connection.clone(),
        rule_id: args.rule.clone(),
        since: args.since,
        statuses: args
            .status
            .iter()
            .map(|s| match s {
                Status::Failed => DeliveryStatus::Failed,
                Status::Dead => DeliveryStatus::Dead,
            })
            .collect(),
    };
    let progress = Progress::start(format!(
        "finding the failed and dead deliveries of {}",
        args.workspace
    ));
    let records = redrive(settings, &filter, args.dry_run)
        .await
        .with_context(|| format!("cannot redrive on {}", settings.kafka.brokers))?;
    drop(progress);
    if output.is_json() {
        let deliveries: Vec<serde_json::Value> = records
            .iter()
            .map(|r| {
                serde_json::json!({
                    "delivery_id": r.delivery_id,
                    "rule_id": r.rule_id,
                    "connection_id": r.connection_id,
                    "was": r.status,
                    "reason": r.reason,
                })
            })
            .collect();
        return Output::print_json(&serde_json::json!({
            "workspace": args.workspace,
            "dry_run": args.dry_run,
            "count": records.len(),
            "deliveries": deliveries,
        }));
    }
    let verb = if args.dry_run {
        "would redrive"
    } else {
        "redriven"
    };
    for r in &records {
        println!(
            "{verb} {} rule={} connection={} (was {}: {})",
            r.delivery_id,
            r.rule_id.as_deref().unwrap_or("-"),
            r.connection_id.as_deref().unwrap_or("-"),
            r.status,
            r.reason.as_deref().unwrap_or("")
        );
    }
    println!(
        "{} deliveries {verb} for workspace {}",
        records.len(),
        args.workspace
    );
    Ok(())
}
