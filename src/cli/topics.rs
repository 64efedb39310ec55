//! `herald topics create`.

use anyhow::Context;

use crate::kafka::{self, TopicCreated};
use crate::settings::Settings;

pub async fn create(settings: &Settings) -> anyhow::Result<()> {
    let results = kafka::create_topics(settings)
        .await
        .with_context(|| format!("cannot create topics on {}", settings.kafka.brokers))?;
    for (topic, created) in results {
        let policy = if topic.compacted {
            ", cleanup.policy=compact"
        } else {
            ""
        };
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
