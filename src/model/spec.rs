//! The workspace configuration format (YAML or JSON), as users write it and as it is kept in
//! `herald.workspaces`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::FieldError;
use super::secret::Secret;

/// What every publishable key starts with, so that it is never mistaken for an admin token.
pub const PUBLISHABLE_KEY_PREFIX: &str = "pk_";

/// Length of a publishable key after its prefix, in bytes.
pub const PUBLISHABLE_KEY_BODY_BYTES: std::ops::RangeInclusive<usize> = 16..=128;

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

    /// Problems with `publishable_keys`: each is `pk_` then 16 to 128 letters, digits, `_` or
    /// `-`, and none is listed twice.
    pub fn check_publishable_keys(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        for (i, key) in self.publishable_keys.iter().enumerate() {
            let path = format!("publishable_keys[{i}]");
            // The message never repeats the key: it is a credential.
            let problem = match key.strip_prefix(PUBLISHABLE_KEY_PREFIX) {
                None => Some(format!("must start with `{PUBLISHABLE_KEY_PREFIX}`")),
                Some(rest) if !PUBLISHABLE_KEY_BODY_BYTES.contains(&rest.len()) => Some(format!(
                    "must have {} to {} characters after `{PUBLISHABLE_KEY_PREFIX}`",
                    PUBLISHABLE_KEY_BODY_BYTES.start(),
                    PUBLISHABLE_KEY_BODY_BYTES.end()
                )),
                Some(rest)
                    if !rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    Some("may hold only letters, digits, `_` and `-`".into())
                }
                Some(_) if self.publishable_keys[..i].contains(key) => {
                    Some("is listed twice".into())
                }
                Some(_) => None,
            };
            if let Some(problem) = problem {
                errors.push(FieldError::new(path, problem));
            }
        }
        errors
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
    fn publishable_keys_need_the_prefix_a_length_and_no_repeat() {
        let good = "pk_live_0123456789abcdef";
        let cases: &[(&str, Option<&str>)] = &[
            (good, None),
            ("sk_live_0123456789abcdef", Some("must start with `pk_`")),
            ("pk_short", Some("16 to 128 characters")),
            ("pk_live_0123456789abcde!", Some("only letters")),
        ];
        for (key, problem) in cases {
            let ws = WorkspaceConfig {
                workspace: "ws".into(),
                publishable_keys: vec![key.to_string()],
                connections: vec![],
                rules: vec![],
            };
            let errors = ws.check_publishable_keys();
            match problem {
                None => assert!(errors.is_empty(), "{key}: {errors:?}"),
                Some(p) => {
                    assert_eq!(errors.len(), 1, "{key}");
                    assert_eq!(errors[0].path, "publishable_keys[0]");
                    assert!(errors[0].message.contains(p), "{key}: {}", errors[0]);
                    assert!(!errors[0].message.contains(key), "the key is not repeated");
                }
            }
        }
        let twice = WorkspaceConfig {
            workspace: "ws".into(),
            publishable_keys: vec![good.into(), good.into()],
            connections: vec![],
            rules: vec![],
        };
        let errors = twice.check_publishable_keys();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "publishable_keys[1]");
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
