//! `${env:NAME}` references in connections, so a workspace file (and the `herald.workspaces`
//! topic) holds the name of a secret, not the secret. The processor resolves them when it
//! loads a workspace; `herald workspace apply` resolves them too, to check the result.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::{ConnectionSpec, FieldError, Secret};

/// Where references are looked up: explicit values first, then the process environment.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    overrides: HashMap<String, String>,
}

impl Vars {
    /// Looks references up in the process environment only.
    pub fn from_env() -> Self {
        Self::default()
    }

    /// Adds a value that wins over the environment (used by `herald dev` for the sandbox URL).
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(name.into(), value.into());
        self
    }

    fn lookup(&self, name: &str) -> Option<String> {
        self.overrides
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    /// Replaces every `${env:NAME}` in `text`.
    pub fn resolve(&self, text: &str) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
            let reference = &after[..end];
            let name = reference.strip_prefix("env:").ok_or_else(|| {
                format!("`${{{reference}}}` is not a reference; write `${{env:NAME}}`")
            })?;
            if name.is_empty() {
                return Err("`${env:}` names no variable".into());
            }
            let value = self
                .lookup(name)
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `spec` with every reference in its credentials and settings resolved.
    pub fn resolve_connection(&self, spec: &ConnectionSpec) -> Result<ConnectionSpec, FieldError> {
        let mut resolved = spec.clone();
        for (key, secret) in resolved.credentials.iter_mut() {
            let value = self
                .resolve(secret.expose())
                .map_err(|m| FieldError::new(format!("credentials.{key}"), m))?;
            *secret = Secret::new(value);
        }
        for (key, value) in resolved.settings.iter_mut() {
            self.resolve_value(value)
                .map_err(|m| FieldError::new(key.clone(), m))?;
        }
        Ok(resolved)
    }

    fn resolve_value(&self, value: &mut Value) -> Result<(), String> {
        match value {
            Value::String(s) if s.contains("${") => *s = self.resolve(s)?,
            Value::Array(items) => items.iter_mut().try_for_each(|v| self.resolve_value(v))?,
            Value::Object(fields) => fields
                .values_mut()
                .try_for_each(|v| self.resolve_value(v))?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_references_say_why() {
        let vars = Vars::default();
        assert!(
            vars.resolve("${env:HERALD_TEST_SURELY_UNSET}")
                .unwrap_err()
                .contains("HERALD_TEST_SURELY_UNSET")
        );
        assert!(vars.resolve("${HOOK}").unwrap_err().contains("env:NAME"));
        assert!(vars.resolve("${env:X").unwrap_err().contains("unclosed"));
    }

    #[test]
    fn connection_errors_name_the_credential() {
        let spec = ConnectionSpec {
            id: "c".into(),
            kind: "slack".into(),
            credentials: [(
                "token".to_owned(),
                Secret::new("${env:HERALD_TEST_SURELY_UNSET}"),
            )]
            .into(),
            settings: Default::default(),
        };
        let err = Vars::default().resolve_connection(&spec).unwrap_err();
        assert_eq!(err.path, "credentials.token");
    }
}
