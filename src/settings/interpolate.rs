//! References in connections, so a workspace file (and the `herald.workspaces` topic) holds the
//! name of a secret, not the secret: `${env:NAME}` (a variable of the processor's environment)
//! and `${file:NAME}` (a file of `credentials.files_dir`). They are allowed only inside a
//! connection's `credentials`, and only for names that start with `credentials.env_prefix`, so a
//! workspace author cannot make the processor send its own secrets (`${env:KAFKA_PASSWORD}` in a
//! URL) anywhere. The processor resolves them when it loads a workspace; `herald workspace apply`
//! resolves them too, to check the result.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::model::{ConnectionSpec, FieldError, Secret};

/// The default of `credentials.env_prefix`.
pub const DEFAULT_PREFIX: &str = "HERALD_CRED_";

/// Where references are looked up: explicit values first, then the process environment.
#[derive(Debug, Clone)]
pub struct Vars {
    overrides: HashMap<String, String>,
    prefix: String,
    files_dir: Option<PathBuf>,
}

impl Default for Vars {
    fn default() -> Self {
        Self {
            overrides: HashMap::new(),
            prefix: DEFAULT_PREFIX.to_owned(),
            files_dir: None,
        }
    }
}

impl Vars {
    /// Looks references up in the process environment only.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// Adds a value that wins over the environment (used by `herald dev` for the sandbox's
    /// credentials).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(name.into(), value.into());
        self
    }

    /// Workspaces may reference only names that start with `prefix`
    /// (`credentials.env_prefix`), and `${file:NAME}` reads from `files_dir`
    /// (`credentials.files_dir`; empty: off).
    pub fn restricted(mut self, prefix: &str, files_dir: &str) -> Self {
        self.prefix = prefix.to_owned();
        self.files_dir = (!files_dir.is_empty()).then(|| PathBuf::from(files_dir));
        self
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// Replaces every `${env:NAME}` in `text`, any name: for the operator's own configuration
    /// (`kafka.client`), never for a workspace.
    pub fn resolve(&self, text: &str) -> Result<String, String> {
        self.substitute(text, |kind, name| match kind {
            "env" => self
                .lookup(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set")),
            _ => Err(format!(
                "`${{{kind}:{name}}}` is not a reference; write `${{env:NAME}}`"
            )),
        })
    }

    /// Replaces every `${env:NAME}` and `${file:NAME}` in a workspace's credential value; names
    /// must start with the prefix.
    fn resolve_credential(&self, text: &str) -> Result<String, String> {
        self.substitute(text, |kind, name| {
            if !name.starts_with(&self.prefix) {
                return Err(format!(
                    "`${{{kind}:{name}}}`: workspaces may reference only names that start with \
                     `{}` (credentials.env_prefix)",
                    self.prefix
                ));
            }
            match kind {
                "env" => self
                    .lookup(name)
                    .ok_or_else(|| format!("environment variable `{name}` is not set")),
                "file" => self.read_file(name),
                _ => unreachable!("substitute passes env and file only"),
            }
        })
    }

    fn read_file(&self, name: &str) -> Result<String, String> {
        let Some(dir) = &self.files_dir else {
            return Err(format!(
                "`${{file:{name}}}`: file references are off (credentials.files_dir is empty)"
            ));
        };
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("`${{file:{name}}}` must name a file, not a path"));
        }
        std::fs::read_to_string(dir.join(name))
            .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| format!("`${{file:{name}}}` cannot be read: {}", e.kind()))
    }

    /// Replaces every `${kind:NAME}` with what `value` says; messages never quote `text`, which
    /// may be a secret.
    fn substitute(
        &self,
        text: &str,
        value: impl Fn(&str, &str) -> Result<String, String>,
    ) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| "a `${` is not closed with `}`".to_owned())?;
            let reference = &after[..end];
            let (kind, name) = match reference.split_once(':') {
                Some((kind @ ("env" | "file"), name)) => (kind, name),
                _ => {
                    return Err(
                        "a `${…}` is not a reference; write `${env:NAME}` or `${file:NAME}`".into(),
                    );
                }
            };
            if name.is_empty() {
                return Err(format!("`${{{kind}:}}` names nothing"));
            }
            out.push_str(&value(kind, name)?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `spec` with every reference in its credentials resolved. References anywhere else
    /// (a URL, a channel) are refused, naming the field.
    pub fn resolve_connection(&self, spec: &ConnectionSpec) -> Result<ConnectionSpec, FieldError> {
        check_no_references(spec)?;
        let mut resolved = spec.clone();
        for (key, secret) in resolved.credentials.iter_mut() {
            let value = self
                .resolve_credential(secret.expose())
                .map_err(|m| FieldError::new(format!("credentials.{key}"), m))?;
            *secret = Secret::new(value);
        }
        Ok(resolved)
    }
}

/// Refuses `${…}` in a connection's settings: only `credentials` may reference secrets.
pub fn check_no_references(spec: &ConnectionSpec) -> Result<(), FieldError> {
    fn find(value: &serde_json::Value, path: String) -> Option<String> {
        match value {
            serde_json::Value::String(s) if s.contains("${") => Some(path),
            serde_json::Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| find(v, format!("{path}[{i}]"))),
            serde_json::Value::Object(fields) => fields
                .iter()
                .find_map(|(k, v)| find(v, format!("{path}.{k}"))),
            _ => None,
        }
    }
    for (key, value) in &spec.settings {
        if let Some(path) = find(value, key.clone()) {
            return Err(FieldError::new(
                path,
                "`${…}` references are allowed only in `credentials`",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(settings: serde_json::Value, token: &str) -> ConnectionSpec {
        ConnectionSpec {
            id: "c".into(),
            kind: "slack".into(),
            credentials: [("token".to_owned(), Secret::new(token))].into(),
            settings: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn references_resolve_from_overrides() {
        let vars = Vars::default().with("HOOK", "http://x").with("T", "tok");
        assert_eq!(
            vars.resolve("${env:HOOK}/a?t=${env:T}").unwrap(),
            "http://x/a?t=tok"
        );
        assert_eq!(vars.resolve("plain").unwrap(), "plain");
    }

    #[test]
    fn bad_references_say_why_without_quoting_the_value() {
        let vars = Vars::default();
        assert!(
            vars.resolve("${env:HERALD_TEST_SURELY_UNSET}")
                .unwrap_err()
                .contains("HERALD_TEST_SURELY_UNSET")
        );
        assert!(vars.resolve("${HOOK}").unwrap_err().contains("env:NAME"));
        let err = vars.resolve("canary-literal${env:X").unwrap_err();
        assert!(
            err.contains("not closed") && !err.contains("canary"),
            "{err}"
        );
    }

    #[test]
    fn credentials_reference_only_prefixed_names() {
        let vars = Vars::default()
            .with("HERALD_CRED_SLACK", "xoxb-1")
            .with("KAFKA_PASSWORD", "hunter2");
        let ok = vars
            .resolve_connection(&spec(serde_json::json!({}), "${env:HERALD_CRED_SLACK}"))
            .unwrap();
        assert_eq!(ok.credentials["token"].expose(), "xoxb-1");
        let err = vars
            .resolve_connection(&spec(serde_json::json!({}), "${env:KAFKA_PASSWORD}"))
            .unwrap_err();
        assert_eq!(err.path, "credentials.token");
        assert!(err.message.contains("HERALD_CRED_") && !err.message.contains("hunter2"));
        let custom = vars.clone().restricted("ACME_", "");
        assert!(
            custom
                .resolve_connection(&spec(serde_json::json!({}), "${env:HERALD_CRED_SLACK}"))
                .is_err()
        );
        let err = vars
            .resolve_connection(&spec(serde_json::json!({}), "${file:HERALD_CRED_SLACK}"))
            .unwrap_err();
        assert!(err.message.contains("files_dir"), "{err}");
    }

    #[test]
    fn references_outside_credentials_are_refused_naming_the_field() {
        let vars = Vars::default().with("HERALD_CRED_X", "x");
        let cases = [
            (
                serde_json::json!({"url": "https://evil.example/?k=${env:KAFKA_PASSWORD}"}),
                "url",
            ),
            (
                serde_json::json!({"base_url": "${env:HERALD_CRED_X}"}),
                "base_url",
            ),
            (
                serde_json::json!({"headers": {"a": ["${env:HERALD_CRED_X}"]}}),
                "headers.a[0]",
            ),
        ];
        for (settings, path) in cases {
            let err = vars.resolve_connection(&spec(settings, "t")).unwrap_err();
            assert_eq!(err.path, path);
            assert!(err.message.contains("only in `credentials`"), "{err}");
        }
    }

    #[test]
    fn file_references_read_a_file_of_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("HERALD_CRED_TOKEN"), "xoxb-file\n").unwrap();
        let vars = Vars::default().restricted("HERALD_CRED_", dir.path().to_str().unwrap());
        let ok = vars
            .resolve_connection(&spec(serde_json::json!({}), "${file:HERALD_CRED_TOKEN}"))
            .unwrap();
        assert_eq!(ok.credentials["token"].expose(), "xoxb-file");
        let err = vars
            .resolve_connection(&spec(serde_json::json!({}), "${file:HERALD_CRED_/../x}"))
            .unwrap_err();
        assert!(err.message.contains("not a path"), "{err}");
    }
}
