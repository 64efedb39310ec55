//! `herald topics create` and `herald topics check`.

use anyhow::Context;
use serde_json::json;

use super::output::Output;
use crate::kafka::{self, TopicCreated};
use crate::settings::Settings;

pub async fn create(settings: &Settings, output: Output) -> anyhow::Result<()> {
    let results = kafka::create_topics(settings)
        .await
        .with_context(|| format!("cannot create topics on {}", settings.kafka.brokers))?;
    if output.is_json() {
        let topics: Vec<serde_json::Value> = results
            .iter()
            .map(|(topic, created)| {
                let configs: serde_json::Map<String, serde_json::Value> = topic
                    .configs()
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value.into()))
                    .collect();
                json!({
                    "name": topic.name,
                    "created": matches!(created, TopicCreated::Created),
                    "partitions": topic.partitions,
                    "configs": configs,
                })
            })
            .collect();
        return Output::print_json(&json!({ "topics": topics }));
    }
    for (topic, created) in results {
        let policy: String = topic
            .configs()
            .iter()
            .map(|(key, value)| format!(", {key}={value}"))
            .collect();
        let what = match created {
            TopicCreated::Created => "created",
            TopicCreated::AlreadyExists => "exists ",
        };
        println!(
            "{what} {} ({} partitions{policy})",
            topic.name, topic.partitions
        );
    }
    Ok(())
}

/// Reports every topic whose partitions or settings differ from the plan; fails if any does.
pub async fn check(settings: &Settings, output: Output) -> anyhow::Result<()> {
    let checks = kafka::topic_check::check_topics(settings)
        .await
        .with_context(|| format!("cannot describe topics on {}", settings.kafka.brokers))?;
    let differing = checks.iter().filter(|c| !c.differences.is_empty()).count();
    if output.is_json() {
        let topics: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                json!({
                    "name": c.spec.name,
                    "ok": c.differences.is_empty(),
                    "differences": c.differences,
                })
            })
            .collect();
        Output::print_json(&json!({ "ok": differing == 0, "topics": topics }))?;
    } else {
        for check in &checks {
            if check.differences.is_empty() {
                println!("ok      {}", check.spec.name);
            } else {
                println!(
                    "differs {}: {}",
                    check.spec.name,
                    check.differences.join("; ")
                );
            }
        }
    }
    if differing > 0 {
        anyhow::bail!(
            "{differing} topic(s) differ from the plan; `herald topics create` leaves existing \
             topics as they are: change them with kafka-configs.sh or kafka-topics.sh"
        );
    }
    Ok(())
}
