//! Who is calling. Ingest takes a workspace's publishable key (`Authorization: Bearer pk_…`);
//! the management API takes an admin token from `api.admin_tokens` with a scope. Neither
//! accepts the other. Presented secrets are hashed (SHA-256) and compared with the known
//! digests in constant time, so neither the answer's timing nor a map lookup reveals how much
//! of a guess was right.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::ApiError;
use crate::model::spec::PUBLISHABLE_KEY_PREFIX;
use crate::settings::api::{AdminScope, AdminToken};
use crate::workspace::table::{WorkspaceEntry, WorkspaceTable};

type Digest32 = [u8; 32];

/// Digest of a publishable key → its workspace (`None` for a key two workspaces list).
type Owners = HashMap<Digest32, Option<String>>;

fn digest(secret: &str) -> Digest32 {
    Sha256::digest(secret.as_bytes()).into()
}

/// The bearer token of the request, if it has one.
fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The admin tokens, resolved once at start-up.
#[derive(Default)]
pub struct AdminTokens(Vec<(String, Digest32, AdminScope)>);

impl AdminTokens {
    /// Resolves each token's `${env:…}` references (already checked by `Settings::load`).
    pub fn new(tokens: &[AdminToken]) -> Self {
        Self(
            tokens
                .iter()
                .filter_map(|t| {
                    let value = crate::settings::api::resolve(&t.token).ok()?;
                    Some((t.name.clone(), digest(&value), t.scope))
                })
                .collect(),
        )
    }

    /// The name and scope of the token `presented` is, comparing against every token.
    fn find(&self, presented: &str) -> Option<(&str, AdminScope)> {
        let presented = digest(presented);
        let mut found = None;
        for (name, known, scope) in &self.0 {
            // No early exit: every token is compared whichever matches.
            if bool::from(known.ct_eq(&presented)) {
                found = Some((name.as_str(), *scope));
            }
        }
        found
    }
}

/// A caller of the management API holding a token of at least scope `read` (`WRITE = false`)
/// or `write` (`WRITE = true`).
pub struct Admin<const WRITE: bool> {
    /// The token's name, for logs.
    pub name: String,
    /// The token's scope, for a request that needs write only with some parameters.
    pub scope: AdminScope,
}

impl<const WRITE: bool> FromRequestParts<ApiState> for Admin<WRITE> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &ApiState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("an admin token is required: `Authorization: Bearer TOKEN`")
        })?;
        if token.starts_with(PUBLISHABLE_KEY_PREFIX) {
            return Err(ApiError::unauthorized(
                "publishable keys only post events; the management API takes an admin token",
            ));
        }
        let (name, scope) = api
            .admin
            .find(token)
            .ok_or_else(|| ApiError::unauthorized("the admin token is not valid"))?;
        let needed = if WRITE {
            AdminScope::Write
        } else {
            AdminScope::Read
        };
        if scope < needed {
            return Err(ApiError::forbidden(
                "this admin token has the read scope; this request needs write",
            ));
        }
        tracing::debug!(token = name, "admin request");
        Ok(Self {
            name: name.into(),
            scope,
        })
    }
}

/// Publishable key → workspace, rebuilt from the live table whenever the table changed.
pub struct KeyIndex {
    table: Arc<WorkspaceTable>,
    /// The table generation it was built from, and the index; a key that two workspaces list
    /// posts for neither.
    built: RwLock<(Option<u64>, Owners)>,
}

impl KeyIndex {
    pub fn new(table: Arc<WorkspaceTable>) -> Self {
        Self {
            table,
            built: RwLock::new((None, HashMap::new())),
        }
    }

    /// The workspace whose key `presented` is, with the key's digest (the rate limit's key).
    fn find(&self, presented: &str) -> Option<(String, Digest32)> {
        let generation = self.table.generation();
        let stale = self.built.read().unwrap_or_else(|p| p.into_inner()).0 != Some(generation);
        if stale {
            let index = self.build();
            *self.built.write().unwrap_or_else(|p| p.into_inner()) = (Some(generation), index);
        }
        let presented = digest(presented);
        let built = self.built.read().unwrap_or_else(|p| p.into_inner());
        let (known, workspace) = built.1.get_key_value(&presented)?;
        // The lookup matched on the digest; the comparison that decides is constant-time.
        if bool::from(known.ct_eq(&presented)) {
            workspace.clone().map(|ws| (ws, presented))
        } else {
            None
        }
    }

    fn build(&self) -> Owners {
        let mut index = Owners::new();
        for (id, entry) in self.table.snapshot() {
            let WorkspaceEntry::Ready(ws) = entry else {
                continue;
            };
            for key in &ws.publishable_keys {
                index
                    .entry(digest(key.expose()))
                    .and_modify(|owner| {
                        tracing::error!(workspace = %id,
                            "a publishable key is listed by two workspaces; it posts for neither");
                        *owner = None;
                    })
                    .or_insert_with(|| Some(id.clone()));
            }
        }
        index
    }
}

/// A caller of the ingest API: the workspace its publishable key belongs to.
pub struct Publisher {
    pub workspace: String,
    pub(super) key_digest: Digest32,
}

impl FromRequestParts<ApiState> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &ApiState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("a publishable key is required: `Authorization: Bearer pk_…`")
        })?;
        if !key.starts_with(PUBLISHABLE_KEY_PREFIX) {
            return Err(ApiError::unauthorized(
                "events are posted with a workspace's publishable key (`pk_…`)",
            ));
        }
        let (workspace, key_digest) = api
            .keys
            .find(key)
            .ok_or_else(|| ApiError::unauthorized("the publishable key is not valid"))?;
        Ok(Self {
            workspace,
            key_digest,
        })
    }
}
