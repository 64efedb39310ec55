//! Settings of the HTTP API (`[api]`): ingest limits, idempotency, rate limits, admin tokens.

use serde::Deserialize;

use super::SettingsError;
use crate::model::Secret;

/// The shortest admin token accepted, in bytes: anything shorter can be guessed.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 24;

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    pub max_body_bytes: usize,
    pub produce_timeout_ms: u64,
    pub idempotency_window_ms: u64,
    pub idempotency_max_entries: usize,
    pub rate_limit_per_second: u32,
    pub rate_limit_burst: u32,
    #[serde(default)]
    pub admin_tokens: Vec<AdminToken>,
}

/// One bearer token of the management API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Names the token in logs, never the token itself.
    pub name: String,
    /// The token, or a `${env:NAME}` reference resolved at start-up.
    pub token: Secret,
    pub scope: AdminScope,
}

/// What an admin token may do. `write` includes `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminScope {
    Read,
    Write,
}

impl ApiSettings {
    /// Checks ranges and resolves every admin token once, naming the key of the first problem.
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let positive = |key: &'static str, v: u64| {
            if v == 0 {
                return Err(SettingsError::Invalid {
                    key,
                    problem: "must be greater than 0".into(),
                });
            }
            Ok(())
        };
        positive("api.max_body_bytes", self.max_body_bytes as u64)?;
        positive("api.produce_timeout_ms", self.produce_timeout_ms)?;
        positive("api.idempotency_window_ms", self.idempotency_window_ms)?;
        positive(
            "api.idempotency_max_entries",
            self.idempotency_max_entries as u64,
        )?;
        positive(
            "api.rate_limit_per_second",
            self.rate_limit_per_second.into(),
        )?;
        positive("api.rate_limit_burst", self.rate_limit_burst.into())?;
        let mut names = std::collections::HashSet::new();
        for token in &self.admin_tokens {
            let invalid = |problem: String| SettingsError::Invalid {
                key: "api.admin_tokens",
                problem,
            };
            if token.name.trim().is_empty() {
                return Err(invalid("a token has an empty `name`".into()));
            }
            if !names.insert(token.name.as_str()) {
                return Err(invalid(format!("`{}` is named twice", token.name)));
            }
            let value = self::resolve(&token.token)
                .map_err(|problem| invalid(format!("token `{}`: {problem}", token.name)))?;
            if value.len() < MIN_ADMIN_TOKEN_BYTES {
                return Err(invalid(format!(
                    "token `{}` is shorter than {MIN_ADMIN_TOKEN_BYTES} bytes",
                    token.name
                )));
            }
            if value.starts_with("pk_") {
                return Err(invalid(format!(
                    "token `{}` starts with `pk_`, the prefix of publishable keys",
                    token.name
                )));
            }
        }
        Ok(())
    }
}

/// The token's value, its `${env:NAME}` references resolved.
pub fn resolve(token: &Secret) -> Result<String, String> {
    super::interpolate::Vars::from_env().resolve(token.expose())
}
