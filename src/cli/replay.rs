//! `herald replay --group G --to-datetime T [--topic T] [--execute]`: replay by consumer-group
//! offset reset. Without `--execute` it only prints the plan (`--dry-run` says so explicitly).
//!
//! `herald replay --workspace W --since T [--until T] [--rule R] [--force] [--dry-run]`: targeted
//! replay of one workspace's events, with no group offsets moved (see
//! [`crate::ops::workspace_replay`]); `--dry-run` counts the events it would replay.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args};
use rdkafka::consumer::BaseConsumer;

use super::KafkaArgs;
use super::output::{Output, Progress};
use super::workspace::applied::AppliedTable;
use crate::app::App;
use crate::kafka;
use crate::kafka::by_time::Resolved;
use crate::ops::group_replay::{self, ReplayError};
use crate::ops::workspace_replay::{self, Window};
use crate::settings::Settings;
use crate::settings::interpolate::Vars;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["group", "workspace"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Offset reset: the consumer group whose offsets move (the processor's is `kafka.group_id`).
    #[arg(long, requires = "to_datetime")]
    group: Option<String>,
    /// Offset reset: re-read everything from this time on (RFC 3339, e.g. 2026-03-21T14:00:00Z).
    #[arg(long, value_parser = super::redrive::parse_time, requires = "group")]
    to_datetime: Option<DateTime<Utc>>,
    /// Offset reset: the topic to rewind (default: `topics.events`).
    #[arg(long, requires = "group")]
    topic: Option<String>,
    /// Offset reset: commit the new offsets; without it, only print the plan.
    #[arg(long, requires = "group")]
    execute: bool,
    /// Targeted: re-process only this workspace's events (no offsets move).
    #[arg(long, requires = "since", conflicts_with = "group")]
    workspace: Option<String>,
    /// Targeted: events from this time (RFC 3339).
    #[arg(long, value_parser = super::redrive::parse_time, requires = "workspace")]
    since: Option<DateTime<Utc>>,
    /// Targeted: events before this time (default: up to now).
    #[arg(long, value_parser = super::redrive::parse_time, requires = "workspace")]
    until: Option<DateTime<Utc>>,
    /// Targeted: only this rule's deliveries.
    #[arg(long, requires = "workspace")]
    rule: Option<String>,
    /// Targeted: deliver again what history says was delivered.
    #[arg(long, requires = "workspace")]
    force: bool,
    /// Say what would be replayed; change nothing. Offset reset: the default without --execute.
    /// Targeted: count the workspace's events in the window and send none.
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
}

/// Exit code 2 for a replay refused because the group is live (nothing was changed).
pub struct Refused(pub String);

pub fn run(
    settings: &Settings,
    args: &ReplayArgs,
    runtime: &tokio::runtime::Runtime,
    output: Output,
) -> anyhow::Result<Result<(), Refused>> {
    match (&args.group, &args.to_datetime, &args.workspace, &args.since) {
        (Some(group), Some(time), _, _) => reset_offsets(settings, args, group, *time, output),
        (_, _, Some(workspace), Some(since)) => {
            let window = Window {
                workspace_id: workspace.clone(),
                since: *since,
                until: args.until,
                rule: args.rule.clone(),
                force: args.force,
            };
            runtime.block_on(replay_workspace(
                settings.clone(),
                window,
                args.dry_run,
                output,
            ))
        }
        // clap's `requires` rules make these unreachable.
        _ => Ok(Err(Refused(
            "give --group with --to-datetime, or --workspace with --since".into(),
        ))),
    }
}

async fn replay_workspace(
    settings: Settings,
    window: Window,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<Result<(), Refused>> {
    if let Err(e) = workspace_replay::check(&window) {
        return Ok(Err(Refused(e.to_string())));
    }
    let until = window
        .until
        .map_or_else(|| "now".to_owned(), |u| u.to_rfc3339());
    if dry_run {
        if !AppliedTable::read(&settings)
            .await?
            .workspaces
            .contains_key(&window.workspace_id)
        {
            anyhow::bail!(
                "workspace `{}` is not configured (apply it first)",
                window.workspace_id
            );
        }
        let progress = Progress::start(format!(
            "reading the events of {} in the window",
            window.workspace_id
        ));
        let report = workspace_replay::plan(&settings, &window).await?;
        drop(progress);
        if output.is_json() {
            Output::print_json(&serde_json::json!({
                "mode": "workspace",
                "workspace": window.workspace_id,
                "since": window.since,
                "until": window.until,
                "dry_run": true,
                "scanned": report.scanned,
                "events": report.events,
                "undecodable": report.undecodable,
            }))?;
        } else {
            println!(
                "dry run: {} event(s) of workspace {} from {} to {until} would be replayed ({} \
                 record(s) scanned); {}",
                report.events,
                window.workspace_id,
                window.since.to_rfc3339(),
                report.scanned,
                if window.force {
                    "--force sends again what history says was delivered"
                } else {
                    "what history says was delivered is skipped"
                },
            );
        }
        return Ok(Ok(()));
    }
    let progress = Progress::start(format!("replaying workspace {}", window.workspace_id));
    let app =
        App::start(settings.clone(), Vars::from_env()).context("cannot start the processor")?;
    tokio::time::timeout(Duration::from_secs(120), app.router.table.wait_ready())
        .await
        .context("the workspace topic was not read within 2 minutes")?;
    if app.router.table.get(&window.workspace_id).is_none() {
        anyhow::bail!(
            "workspace `{}` is not configured (apply it first)",
            window.workspace_id
        );
    }
    let report = workspace_replay::replay(&settings, &app.router, &window).await?;
    drop(progress);
    if output.is_json() {
        Output::print_json(&serde_json::json!({
            "mode": "workspace",
            "workspace": window.workspace_id,
            "since": window.since,
            "until": window.until,
            "dry_run": false,
            "scanned": report.scanned,
            "events": report.events,
            "undecodable": report.undecodable,
            "settled": report.routed.settled,
            "already_delivered": report.routed.already_delivered,
        }))?;
        return Ok(Ok(()));
    }
    println!(
        "replayed {} event(s) of workspace {} from {} to {until} ({} record(s) scanned{})",
        report.events,
        window.workspace_id,
        window.since.to_rfc3339(),
        report.scanned,
        if report.undecodable > 0 {
            format!(", {} undecodable left in the DLQ", report.undecodable)
        } else {
            String::new()
        }
    );
    println!(
        "{} deliveries attempted and recorded; {} already delivered and not sent again{}",
        report.routed.settled,
        report.routed.already_delivered,
        if report.routed.already_delivered > 0 {
            " (--force sends them again)"
        } else {
            ""
        }
    );
    println!("see: herald history --workspace {}", window.workspace_id);
    Ok(Ok(()))
}

fn reset_offsets(
    settings: &Settings,
    args: &ReplayArgs,
    group_id: &str,
    to_datetime: DateTime<Utc>,
    output: Output,
) -> anyhow::Result<Result<(), Refused>> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| settings.topics.events.clone());
    let reader: BaseConsumer = kafka::reader_config(settings).create()?;
    let group: BaseConsumer = kafka::consumer_config_for(settings, group_id).create()?;
    // Refuse when the group has members. Some brokers cannot describe groups; then the commit
    // below, made from outside the group, is what a live group makes the broker refuse.
    // Its own client: a broker that fails to describe groups may drop the connection.
    let checker: BaseConsumer = kafka::reader_config(settings).create()?;
    match group_replay::ensure_group_empty(&checker, group_id) {
        Ok(()) => {}
        Err(e @ ReplayError::GroupActive { .. }) => return Ok(Err(Refused(e.to_string()))),
        Err(e @ ReplayError::GroupUnknown { .. }) => {
            eprintln!(
                "warning: {}; relying on the broker to refuse offsets for a live group",
                crate::model::error_chain(&e)
            );
        }
        Err(e) => return Err(e).context("refusing to replay"),
    }
    let progress = Progress::start(format!("planning the replay of {topic}"));
    let plans = group_replay::plan(&reader, &group, &topic, to_datetime)
        .with_context(|| format!("cannot plan the replay of {topic}"))?;
    drop(progress);
    let how = |resolved: &Resolved| match resolved {
        Resolved::Broker => "broker",
        Resolved::Search => "timestamp search",
    };
    if !output.is_json() {
        println!(
            "{:>9}  {:>10}  {:>10}  {:>9}  resolved by",
            "partition", "current", "target", "re-read"
        );
        for p in &plans {
            let current = p.current.map_or("-".to_owned(), |c| c.to_string());
            println!(
                "{:>9}  {:>10}  {:>10}  {:>9}  {}",
                p.partition,
                current,
                p.target,
                p.reread,
                how(&p.resolved)
            );
        }
    }
    let total: i64 = plans.iter().map(|p| p.reread.max(0)).sum();
    let json = |executed: bool| {
        let partitions: Vec<serde_json::Value> = plans
            .iter()
            .map(|p| {
                serde_json::json!({
                    "partition": p.partition,
                    "current": p.current,
                    "target": p.target,
                    "reread": p.reread,
                    "resolved_by": how(&p.resolved),
                })
            })
            .collect();
        Output::print_json(&serde_json::json!({
            "mode": "group",
            "group": group_id,
            "topic": topic,
            "to_datetime": to_datetime,
            "dry_run": !executed,
            "reread": total,
            "partitions": partitions,
        }))
    };
    if args.execute {
        match group_replay::execute(&group, group_id, &topic, &plans) {
            Ok(()) => {}
            Err(e @ ReplayError::GroupLive { .. }) => return Ok(Err(Refused(e.to_string()))),
            Err(e) => return Err(e).context("cannot commit the new offsets"),
        }
        if output.is_json() {
            json(true)?;
            return Ok(Ok(()));
        }
        println!(
            "group {} now starts {topic} at {}: {total} events will be read again",
            group_id, to_datetime
        );
    } else if output.is_json() {
        json(false)?;
    } else {
        println!(
            "dry run: {total} events would be read again; add --execute to commit the new offsets"
        );
    }
    Ok(Ok(()))
}
