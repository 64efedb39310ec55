//! `herald topics create` and `herald topics check`.

use anyhow::Context;

use crate::kafka::{self, TopicCreated};
use crate::settings::Settings;

pub async fn create(settings: &Settings) -> anyhow::Result<()> {
    let results = kafka::create_topics(settings)
        .await
        .with_context(|| format!("cannot create topics on {}", settings.kafka.brokers))?;
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
pub async fn check(settings: &Settings) -> anyhow::Result<()> {
    let checks = kafka::topic_check::check_topics(settings)
        .await
        .with_context(|| format!("cannot describe topics on {}", settings.kafka.brokers))?;
    let mut differing = 0;
    for check in &checks {
        if check.differences.is_empty() {
            println!("ok      {}", check.spec.name);
        } else {
            differing += 1;
            println!(
                "differs {}: {}",
                check.spec.name,
                check.differences.join("; ")
            );
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
