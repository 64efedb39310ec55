//! `herald history`: a workspace's deliveries, latest state each, oldest first. With `--url`,
//! from the management API of a running Herald (its history query store, page by page);
//! without, by scanning the deliveries topic.

use anyhow::{Context, bail};
use clap::Args;

use super::KafkaArgs;
use super::output::{Output, Progress};
use crate::api::deliveries::DeliveryList;
use crate::history::reader::{self, HistoryQuery};
use crate::history::store::MAX_LIMIT;
use crate::model::records::DeliveryRecord;
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
    /// Ask the API of a running Herald (e.g. http://127.0.0.1:7780) instead of scanning the
    /// deliveries topic; it needs `history.store_path` set on that server.
    #[arg(long)]
    url: Option<String>,
    /// The admin token (read scope) for --url.
    #[arg(long, env = "HERALD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// One JSON object per delivery, one per line (the same as `--output json`).
    #[arg(long)]
    json: bool,
}

pub async fn show(settings: &Settings, args: &HistoryArgs, output: Output) -> anyhow::Result<()> {
    let records = match &args.url {
        Some(url) => {
            let progress = Progress::start(format!("reading {url}"));
            let records = from_api(url, args).await;
            drop(progress);
            records?
        }
        None => {
            let settings = settings.clone();
            let query = HistoryQuery {
                workspace_id: args.workspace.clone(),
                event_id: args.event_id.clone(),
            };
            tokio::task::spawn_blocking(move || scan(&settings, &query)).await??
        }
    };
    print(&records, args, output)
}

/// Every delivery of the topic scan, warning about records it could not read.
fn scan(settings: &Settings, query: &HistoryQuery) -> anyhow::Result<Vec<DeliveryRecord>> {
    let progress = Progress::start(format!("reading {}", settings.topics.deliveries));
    let (records, unreadable) = reader::read(settings, query).with_context(|| {
        format!(
            "cannot read {} on {}",
            settings.topics.deliveries, settings.kafka.brokers
        )
    })?;
    drop(progress);
    if unreadable > 0 {
        eprintln!("warning: {unreadable} history records could not be read and are not shown");
    }
    Ok(records)
}

/// Every delivery the API lists, page after page, oldest first as the scan gives them.
async fn from_api(url: &str, args: &HistoryArgs) -> anyhow::Result<Vec<DeliveryRecord>> {
    let Some(token) = &args.token else {
        bail!("--url needs an admin token: --token TOKEN or HERALD_ADMIN_TOKEN");
    };
    let base = url::Url::parse(url).with_context(|| format!("--url `{url}` is not a URL"))?;
    let mut endpoint = base
        .join(&format!("v1/workspaces/{}/deliveries", args.workspace))
        .with_context(|| format!("--url `{url}` is not a base URL"))?;
    let http = reqwest::Client::new();
    let mut records = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        {
            let mut query = endpoint.query_pairs_mut();
            query.clear().append_pair("limit", &MAX_LIMIT.to_string());
            if let Some(event_id) = &args.event_id {
                query.append_pair("event_id", event_id);
            }
            if let Some(cursor) = &cursor {
                query.append_pair("cursor", cursor);
            }
        }
        let response = http
            .get(endpoint.clone())
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("no error message");
            bail!("{base} answered {status}: {message}");
        }
        let page: DeliveryList = response
            .json()
            .await
            .with_context(|| format!("{base} did not answer a page of deliveries"))?;
        records.extend(page.deliveries);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    records.sort_by_key(|r| r.created_at);
    Ok(records)
}

fn print(records: &[DeliveryRecord], args: &HistoryArgs, output: Output) -> anyhow::Result<()> {
    if args.json || output.is_json() {
        for r in records {
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
    for r in records {
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
