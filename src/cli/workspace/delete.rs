//! `herald workspace delete ID`: publishes a tombstone to `herald.workspaces`; every processor
//! then drops the workspace. It asks first on a terminal; scripts pass `--yes`, and `--dry-run`
//! says what would be deleted.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::applied::{Applied, AppliedTable};
use crate::cli::KafkaArgs;
use crate::cli::output::Output;
use crate::kafka;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Say what would be deleted; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete without asking (required when standard input is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Workspace id.
    pub id: String,
}

/// A deletion that was not confirmed: exit code 2, nothing changed.
pub struct NotConfirmed(pub String);

pub async fn delete(
    settings: &Settings,
    args: &DeleteArgs,
    output: Output,
) -> anyhow::Result<Result<(), NotConfirmed>> {
    let table = AppliedTable::read(settings).await?;
    let Some(applied) = table.workspaces.get(&args.id) else {
        bail!(
            "workspace `{}` is not applied in {}",
            args.id,
            settings.topics.workspaces
        );
    };
    let what = match applied {
        Applied::Config(c) => format!(
            "workspace {} ({} connections, {} rules)",
            args.id,
            c.connections.len(),
            c.rules.len()
        ),
        Applied::Unreadable(_) => format!("workspace {} (an unreadable record)", args.id),
    };
    if !args.dry_run && !args.yes {
        if !std::io::stdin().is_terminal() {
            return Ok(Err(NotConfirmed(
                "standard input is not a terminal: pass --yes to delete without asking".into(),
            )));
        }
        eprint!("delete {what} from {}? [y/N] ", settings.topics.workspaces);
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(Err(NotConfirmed("not confirmed".into())));
        }
    }
    if !args.dry_run {
        let producer: FutureProducer = kafka::producer_config(settings).create()?;
        let tombstone =
            FutureRecord::<[u8], [u8]>::to(&settings.topics.workspaces).key(args.id.as_bytes());
        producer
            .send(tombstone, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .with_context(|| {
                format!(
                    "cannot publish the deletion of `{}` to {}",
                    args.id, settings.topics.workspaces
                )
            })?;
    }
    if output.is_json() {
        Output::print_json(&serde_json::json!({
            "workspace": args.id,
            "dry_run": args.dry_run,
            "deleted": !args.dry_run,
        }))?;
    } else if args.dry_run {
        println!(
            "dry run: would delete {what} from {}",
            settings.topics.workspaces
        );
    } else {
        println!("deleted {what} from {}", settings.topics.workspaces);
    }
    let stored = match applied {
        Applied::Config(c) => table.stored_connections(c),
        Applied::Unreadable(_) => Vec::new(),
    };
    if !stored.is_empty() && !args.dry_run {
        eprintln!(
            "note: the stored credentials of {} stay in {}; remove them with `herald credentials \
             delete --workspace {} --connection …`",
            stored.join(", "),
            settings.topics.credentials,
            args.id
        );
    }
    Ok(Ok(()))
}
