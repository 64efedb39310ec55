//! Comparing the topics on the cluster with the plan (`herald topics check`): a topic that is
//! missing, has fewer partitions than planned, or whose cleanup policy or retention differs.
//! `herald topics create` leaves existing topics as they are, so this is how an operator finds
//! a topic created by hand, or before a setting changed.

use std::collections::HashMap;

use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;

use super::{METADATA_TIMEOUT, TopicSpec, base, topic_plan};
use crate::settings::Settings;

/// How one topic of the plan stands on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCheck {
    pub spec: TopicSpec,
    /// What differs from the plan, one line each; empty when the topic matches.
    pub differences: Vec<String>,
}

/// Checks every topic of the plan against the cluster.
pub async fn check_topics(settings: &Settings) -> Result<Vec<TopicCheck>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = base(settings).create()?;
    let metadata = admin.inner().fetch_metadata(None, METADATA_TIMEOUT)?;
    let partitions: HashMap<&str, i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name(), t.partitions().len() as i32))
        .collect();
    let plan = topic_plan(settings);
    let existing: Vec<&TopicSpec> = plan
        .iter()
        .filter(|t| partitions.contains_key(t.name.as_str()))
        .collect();
    let resources: Vec<ResourceSpecifier<'_>> = existing
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let described = admin
        .describe_configs(
            &resources,
            &AdminOptions::new().request_timeout(Some(METADATA_TIMEOUT)),
        )
        .await?;
    let mut configs: HashMap<&str, HashMap<String, String>> = HashMap::new();
    for (spec, result) in existing.iter().zip(described) {
        let resource = result.map_err(KafkaError::AdminOp)?;
        let entries = resource
            .entries
            .into_iter()
            .filter_map(|e| Some((e.name, e.value?)))
            .collect();
        configs.insert(&spec.name, entries);
    }
    let empty = HashMap::new();
    Ok(plan
        .iter()
        .map(|spec| TopicCheck {
            differences: differences(
                spec,
                partitions.get(spec.name.as_str()).copied(),
                configs.get(spec.name.as_str()).unwrap_or(&empty),
            ),
            spec: spec.clone(),
        })
        .collect())
}

/// What differs between `spec` and a topic with `partitions` (`None`: the topic is missing)
/// and `configs`.
pub fn differences(
    spec: &TopicSpec,
    partitions: Option<i32>,
    configs: &HashMap<String, String>,
) -> Vec<String> {
    let Some(partitions) = partitions else {
        return vec!["missing: run `herald topics create`".into()];
    };
    let mut out = Vec::new();
    if partitions < spec.partitions {
        out.push(format!(
            "{partitions} partitions, the plan has {}",
            spec.partitions
        ));
    }
    let mut wanted = spec.configs();
    if !spec.compacted {
        wanted.push(("cleanup.policy", "delete".into()));
    }
    for (key, value) in wanted {
        let actual = configs.get(key).map(String::as_str).unwrap_or("(unset)");
        let same = if key == "cleanup.policy" {
            policies(actual) == policies(&value)
        } else {
            actual == value
        };
        if !same {
            out.push(format!("{key}={actual}, the plan has {key}={value}"));
        }
    }
    out
}

/// A cleanup policy as a sorted set, so that `delete,compact` equals `compact,delete`.
fn policies(policy: &str) -> Vec<&str> {
    let mut all: Vec<&str> = policy.split(',').map(str::trim).collect();
    all.sort_unstable();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries() -> TopicSpec {
        let settings = Settings::defaults();
        topic_plan(&settings)
            .into_iter()
            .find(|t| t.name == settings.topics.deliveries)
            .unwrap()
    }

    fn configs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn history_is_compacted_and_deleted_after_the_retention_setting() {
        let spec = deliveries();
        assert_eq!(
            spec.configs(),
            [
                ("cleanup.policy", "compact,delete".to_owned()),
                ("retention.ms", "2592000000".to_owned()),
            ]
        );
    }

    #[test]
    fn a_topic_like_the_plan_has_no_differences() {
        let spec = deliveries();
        let on_cluster = configs(&[
            ("cleanup.policy", "delete,compact"),
            ("retention.ms", "2592000000"),
        ]);
        assert!(differences(&spec, Some(spec.partitions), &on_cluster).is_empty());
    }

    #[test]
    fn policy_retention_partitions_and_absence_are_reported() {
        let spec = deliveries();
        let on_cluster = configs(&[("cleanup.policy", "compact"), ("retention.ms", "604800000")]);
        let found = differences(&spec, Some(1), &on_cluster);
        assert_eq!(
            found,
            [
                "1 partitions, the plan has 6",
                "cleanup.policy=compact, the plan has cleanup.policy=compact,delete",
                "retention.ms=604800000, the plan has retention.ms=2592000000",
            ]
        );
        assert_eq!(differences(&spec, None, &on_cluster).len(), 1);
    }
}
