//! `herald replay --group G --to-datetime T [--topic T] [--execute]`: replay by consumer-group
//! offset reset. Without `--execute` it only prints the plan.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use rdkafka::consumer::BaseConsumer;

use super::KafkaArgs;
use crate::deliver::replay::{self, ReplayError, Resolved};
use crate::kafka;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The consumer group whose offsets move (the processor's is `kafka.group_id`).
    #[arg(long)]
    group: String,
    /// Re-read everything from this time on (RFC 3339, e.g. 2026-03-21T14:00:00Z).
    #[arg(long, value_parser = super::redrive::parse_time)]
    to_datetime: DateTime<Utc>,
    /// The topic to rewind (default: `topics.events`).
    #[arg(long)]
    topic: Option<String>,
    /// Commit the new offsets; without it, only print the plan.
    #[arg(long)]
    execute: bool,
}

/// Exit code 2 for a replay refused because the group is live (nothing was changed).
pub struct Refused(pub String);

pub fn run(settings: &Settings, args: &ReplayArgs) -> anyhow::Result<Result<(), Refused>> {
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| settings.topics.events.clone());
    let reader: BaseConsumer = kafka::reader_config(settings).create()?;
    let group: BaseConsumer = kafka::consumer_config_for(settings, &args.group).create()?;
    // Refuse when the group has members. Some brokers cannot describe groups; then the commit
    // below, made from outside the group, is what a live group makes the broker refuse.
    // Its own client: a broker that fails to describe groups may drop the connection.
    let checker: BaseConsumer = kafka::reader_config(settings).create()?;
    match replay::ensure_group_empty(&checker, &args.group) {
        Ok(()) => {}
        Err(e @ ReplayError::GroupActive { .. }) => return Ok(Err(Refused(e.to_string()))),
        Err(e @ ReplayError::GroupUnknown { .. }) => {
            eprintln!(
                "warning: {}; relying on the broker to refuse offsets for a live group",
                crate::destinations::http::error_chain(&e)
            );
        }
        Err(e) => return Err(e).context("refusing to replay"),
    }
    let plans = replay::plan(&reader, &group, &topic, args.to_datetime)
        .with_context(|| format!("cannot plan the replay of {topic}"))?;
    println!(
        "{:>9}  {:>10}  {:>10}  {:>9}  resolved by",
        "partition", "current", "target", "re-read"
    );
    for p in &plans {
        let current = p.current.map_or("-".to_owned(), |c| c.to_string());
        let how = match p.resolved {
            Resolved::Broker => "broker",
            Resolved::Search => "timestamp search",
        };
        println!(
            "{:>9}  {:>10}  {:>10}  {:>9}  {how}",
            p.partition, current, p.target, p.reread
        );
    }
    let total: i64 = plans.iter().map(|p| p.reread.max(0)).sum();
    if args.execute {
        match replay::execute(&group, &args.group, &topic, &plans) {
            Ok(()) => {}
            Err(e @ ReplayError::GroupLive { .. }) => return Ok(Err(Refused(e.to_string()))),
            Err(e) => return Err(e).context("cannot commit the new offsets"),
        }
        println!(
            "group {} now starts {topic} at {}: {total} events will be read again",
            args.group, args.to_datetime
        );
    } else {
        println!(
            "dry run: {total} events would be read again; add --execute to commit the new offsets"
        );
    }
    Ok(Ok(()))
}
