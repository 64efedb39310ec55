//! `herald credentials set|delete|rotate-key`: the credential store from the command line.
//! Values come from standard input or a file, never from the command line (where `ps` and shell
//! history would show them), and are never printed.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use rdkafka::Message;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;

use super::KafkaArgs;
use super::output::Output;
use crate::credentials::{Fields, Keyring, RecordKey, write};
use crate::destinations;
use crate::kafka;
use crate::model::{Secret, WorkspaceConfig};
use crate::settings::Settings;

#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Store a connection's credentials (a JSON or YAML object, from stdin or --file).
    Set(SetArgs),
    /// Delete a connection's stored credentials.
    Delete(TargetArgs),
    /// Re-encrypt every stored record with the current write key.
    RotateKey(KafkaArgs),
}

/// Which connection.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Workspace id.
    #[arg(long)]
    pub workspace: String,
    /// Connection id within the workspace.
    #[arg(long)]
    pub connection: String,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Read the credentials from this file instead of standard input.
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The connection's type, when its workspace is not published yet (default: the type the
    /// published workspace gives the connection).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
}

impl CredentialsCommand {
    /// The Kafka arguments of the command.
    pub fn kafka(&self) -> &KafkaArgs {
        match self {
            Self::Set(a) => &a.target.kafka,
            Self::Delete(a) => &a.kafka,
            Self::RotateKey(k) => k,
        }
    }
}

pub async fn run(
    settings: &Settings,
    command: &CredentialsCommand,
    output: Output,
) -> anyhow::Result<()> {
    let producer: FutureProducer = kafka::producer_config(settings).create()?;
    match command {
        CredentialsCommand::Set(args) => {
            let record = record_key(&args.target)?;
            let text = match &args.file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                None => {
                    let mut text = String::new();
                    std::io::stdin()
                        .read_to_string(&mut text)
                        .context("cannot read standard input")?;
                    text
                }
            };
            let fields = parse_fields(&text)?;
            let kind = match &args.kind {
                Some(kind) => kind.clone(),
                None => published_kind(settings, &record).await?,
            };
            check(&kind, &fields)?;
            let keys = Keyring::load(&settings.credentials)?;
            write::put(settings, &producer, &keys, &record, &fields).await?;
            let names: Vec<&str> = fields.keys().map(String::as_str).collect();
            let key = keys.write_key().map(|k| k.id.as_str()).unwrap_or_default();
            if output.is_json() {
                return Output::print_json(&serde_json::json!({
                    "stored": record.to_string(),
                    "type": kind,
                    "fields": names,
                    "key": key,
                }));
            }
            println!(
                "stored credentials of {record} ({kind}: {}) in {} under key {}",
                names.join(", "),
                settings.topics.credentials,
                key
            );
        }
        CredentialsCommand::Delete(args) => {
            let record = record_key(args)?;
            write::delete(settings, &producer, &record).await?;
            if output.is_json() {
                return Output::print_json(&serde_json::json!({ "deleted": record.to_string() }));
            }
            println!(
                "deleted the credentials of {record} from {}",
                settings.topics.credentials
            );
        }
        CredentialsCommand::RotateKey(_) => {
            let keys = Keyring::load(&settings.credentials)?;
            let read = settings.clone();
            let latest = tokio::task::spawn_blocking(move || write::read_all(&read))
                .await?
                .with_context(|| format!("cannot read {}", settings.topics.credentials))?;
            let rotation = write::rotate(settings, &producer, &keys, latest).await?;
            let write_key = keys.write_key().map(|k| k.id.as_str()).unwrap_or_default();
            if output.is_json() {
                let unreadable: Vec<serde_json::Value> = rotation
                    .unreadable
                    .iter()
                    .map(|(record, why)| serde_json::json!({ "record": record, "reason": why }))
                    .collect();
                Output::print_json(&serde_json::json!({
                    "key": write_key,
                    "rotated": rotation.rotated,
                    "current": rotation.current,
                    "unreadable": unreadable,
                }))?;
            } else {
                for record in &rotation.rotated {
                    println!("re-encrypted {record} with key {write_key}");
                }
                println!(
                    "{} re-encrypted, {} already under key {write_key}, {} unreadable",
                    rotation.rotated.len(),
                    rotation.current,
                    rotation.unreadable.len()
                );
            }
            if !rotation.unreadable.is_empty() {
                for (record, why) in &rotation.unreadable {
                    eprintln!("{record}: {why}");
                }
                bail!(
                    "some records were left as they are; set them again with `herald credentials set`"
                );
            }
        }
    }
    Ok(())
}

fn record_key(args: &TargetArgs) -> anyhow::Result<RecordKey> {
    RecordKey::new(&args.workspace, &args.connection)
        .ok_or_else(|| anyhow!("--workspace and --connection must be non-empty and contain no `/`"))
}

/// A JSON or YAML object of strings. The error never quotes the input.
pub fn parse_fields(text: &str) -> anyhow::Result<Fields> {
    let value: serde_json::Value = serde_yaml_ng::from_str(text)
        .map_err(|_| anyhow!("the credentials are not a JSON or YAML object"))?;
    let serde_json::Value::Object(map) = value else {
        bail!("the credentials are not an object of fields, like {{\"token\": \"…\"}}");
    };
    map.into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => Ok((name, Secret::new(s))),
            _ => Err(anyhow!("credentials.{name}: must be a string")),
        })
        .collect()
}

/// Checks `fields` against the credential fields of `kind`.
pub fn check(kind: &str, fields: &Fields) -> anyhow::Result<()> {
    let destination =
        destinations::lookup(kind).ok_or_else(|| anyhow!("`{kind}` is not a destination type"))?;
    destination
        .check_credentials(fields)
        .map_err(|e| anyhow!("invalid credentials for a {kind} connection: {e}"))
}

/// The type the published workspace gives the connection.
async fn published_kind(settings: &Settings, record: &RecordKey) -> anyhow::Result<String> {
    let read = settings.clone();
    let workspace = record.workspace.clone();
    let config = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<WorkspaceConfig>> {
        let consumer: BaseConsumer = kafka::reader_config(&read).create()?;
        let mut latest = None;
        kafka::read_to_end(&consumer, &read.topics.workspaces, |m| {
            if m.key() == Some(workspace.as_bytes()) {
                latest = m.payload().map(WorkspaceConfig::from_json);
            }
        })?;
        Ok(latest.and_then(Result::ok))
    })
    .await??;
    let config = config.ok_or_else(|| {
        anyhow!(
            "workspace `{}` is not published; give the connection's type with --type",
            record.workspace
        )
    })?;
    config
        .connections
        .iter()
        .find(|c| c.id == record.connection)
        .map(|c| c.kind.clone())
        .ok_or_else(|| {
            anyhow!(
                "workspace `{}` has no connection `{}`; give its type with --type",
                record.workspace,
                record.connection
            )
        })
}
