//! `herald emit`: produce one event in the seeds' emit shape, as JSON or in Avro single-object
//! encoding (with the schema fingerprint the Avro specification and Java compute).

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use super::KafkaArgs;
use super::output::Output;
use crate::kafka;
use crate::model::records::EventEnvelope;
use crate::model::records::avro;
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct EmitArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Workspace id (also the record key).
    #[arg(long)]
    workspace: String,
    /// Event name, e.g. lesson.completed.
    #[arg(long)]
    event: String,
    #[arg(long)]
    resource: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// Event id (default: a new unique id).
    #[arg(long)]
    event_id: Option<String>,
    /// How the record is encoded (docs/input.md).
    #[arg(long, value_enum, default_value_t = EmitFormat::Json)]
    format: EmitFormat,
    /// The payload: inline JSON, `@file`, or `-` for standard input.
    #[arg(value_name = "PAYLOAD")]
    payload: String,
}

/// The encodings `herald emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitFormat {
    /// The emit shape as JSON.
    Json,
    /// `EventEnvelope` in Avro single-object encoding.
    Avro,
}

pub async fn emit(settings: &Settings, args: &EmitArgs, output: Output) -> anyhow::Result<()> {
    let text = match args.payload.as_str() {
        "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the payload from stdin")?;
            s
        }
        p if p.starts_with('@') => std::fs::read_to_string(&p[1..])
            .with_context(|| format!("cannot read the payload file {}", &p[1..]))?,
        inline => inline.to_owned(),
    };
    let payload: serde_json::Value =
        serde_json::from_str(&text).context("PAYLOAD is not valid JSON")?;
    if !payload.is_object() {
        bail!("PAYLOAD must be a JSON object");
    }
    let event_id = args
        .event_id
        .clone()
        .unwrap_or_else(|| format!("evt_{}", uuid::Uuid::now_v7().simple()));
    let event = json!({
        "event_id": event_id,
        "workspace_id": args.workspace,
        "event": args.event,
        "resource": args.resource,
        "resource_id": args.resource_id,
        "payload": payload,
        "occurred_at": chrono::Utc::now(),
    });
    let producer: FutureProducer = kafka::producer_config(settings).create()?;
    let value = match args.format {
        EmitFormat::Json => serde_json::to_vec(&event)?,
        EmitFormat::Avro => {
            let envelope: EventEnvelope = serde_json::from_value(event)?;
            avro::to_single_object(&envelope)?
        }
    };
    let record = FutureRecord::to(&settings.topics.events)
        .key(args.workspace.as_bytes())
        .payload(&value);
    let delivered = producer
        .send(record, Duration::from_secs(30))
        .await
        .map_err(|(e, _)| e)
        .with_context(|| {
            format!(
                "cannot produce to {} on {}",
                settings.topics.events, settings.kafka.brokers
            )
        })?;
    if output.is_json() {
        return Output::print_json(&json!({
            "event_id": event_id,
            "topic": settings.topics.events,
            "partition": delivered.partition,
            "offset": delivered.offset,
        }));
    }
    println!(
        "emitted {event_id} to {} (partition {}, offset {})",
        settings.topics.events, delivered.partition, delivered.offset
    );
    Ok(())
}
