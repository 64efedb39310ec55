//! The workspace configuration format (YAML or JSON), as users write it and as it is kept in
//! `herald.workspaces`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::FieldError;
use super::secret::Secret;

/// One workspace: its connections and rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    pub workspace: String,
    /// Keys a product may use to post events for this workspace over HTTP.
    #[serde(default)]
    pub publishable_keys: Vec<String>,
    #[serde(default)]
    pub connections: Vec<ConnectionSpec>,
    #[serde(default)]
    pub rules: Vec<RuleSpec>,
}

/// A connected tool. Type-specific settings sit beside `id` and `type`; each destination
/// rejects the settings it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSpec {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub credentials: BTreeMap<String, Secret>,
    #[serde(flatten)]
    pub settings: serde_json::Map<String, serde_json::Value>,
}

/// A rule: which events, under which condition, become which call on which connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// A minijinja expression over the event; the rule applies when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    pub connection: String,
    pub action: String,
    /// Templates over the event, rendered into the action's arguments.
    #[serde(default)]
    pub with: serde_json::Value,
}

impl WorkspaceConfig {
    /// Parses YAML (which includes JSON), naming the path of the first field that does not fit.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(FieldError::from)
    }

    /// Parses the JSON form kept in `herald.workspaces`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FieldError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            FieldError::new(path, e.into_inner().to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = ConnectionSpec {
            id: "hook".into(),
            kind: "webhook".into(),
            credentials: [("secret".to_owned(), Secret::new("whsec_topsecret"))].into(),
            settings: Default::default(),
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn parse_error_names_the_field_path() {
        let err = WorkspaceConfig::parse(
            "workspace: ws\nrules:\n  - id: r\n    event: e\n    connection: c\n    action: a\n    whenn: x\n",
        )
        .unwrap_err();
        assert_eq!(err.path, "rules[0].whenn");
        assert!(err.message.contains("whenn"), "{err}");
    }

    #[test]
    fn type_specific_settings_are_kept_beside_id_and_type() {
        let ws = WorkspaceConfig::parse(
            "workspace: ws\nconnections:\n  - id: hook\n    type: webhook\n    url: http://x\n",
        )
        .unwrap();
        assert_eq!(ws.connections[0].settings["url"], "http://x");
    }
}
