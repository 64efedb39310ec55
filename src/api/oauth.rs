//! "Connect HubSpot": `GET /oauth/hubspot/start?workspace=W&connection=C` (admin token, write
//! scope: the product's backend calls it and sends the account owner's browser to the answer's
//! `Location`) redirects to HubSpot's authorize page with a signed, expiring `state`
//! ([`state`]); HubSpot sends the owner back to `GET /oauth/hubspot/callback?code&state`, which
//! checks the state, exchanges the code and stores the tokens in the credential store for that
//! connection. A refused approval, a bad state or a refused code changes nothing.
//! See docs/credentials.md.

pub mod state;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::Utc;
use serde_json::json;

use self::state::{Claims, StateError, Used};
use super::ApiState;
use super::auth::Admin;
use super::error::ApiError;
use crate::credentials::RecordKey;
use crate::deliver::tokens::{self, hubspot_app};
use crate::destinations::hubspot::oauth::{self, App};
use crate::destinations::oauth::RefreshError;
use crate::model::FieldError;
use crate::workspace::table::WorkspaceEntry;

/// What the OAuth routes share besides [`ApiState`].
struct OAuth {
    /// `None` when `oauth.hubspot` is not configured.
    hubspot: Option<App>,
    used: Used,
    http: reqwest::Client,
}

/// The OAuth routes, to merge into the API's router.
pub fn routes(api: &ApiState) -> Router<ApiState> {
    let shared = Arc::new(OAuth {
        hubspot: hubspot_app(&api.settings),
        used: Used::default(),
        http: tokens::token_client(),
    });
    Router::new()
        .route("/oauth/hubspot/start", get(start))
        .route("/oauth/hubspot/callback", get(callback))
        .layer(Extension(shared))
}

/// The query's parameters by name (the last of repeated ones).
fn params(query: Option<String>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_configured",
        "HubSpot OAuth is not configured on this service (oauth.hubspot.client_id)",
    )
}

fn no_key() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_credential_key",
        "this service has no credential store key, so it can neither sign the state nor store \
         tokens (HERALD_SECRETS_KEY, credentials.keys_dir)",
    )
}

async fn start(
    admin: Admin<true>,
    State(api): State<ApiState>,
    Extension(oauth): Extension<Arc<OAuth>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let app = oauth.hubspot.as_ref().ok_or_else(not_configured)?;
    let params = params(query);
    let mut missing = Vec::new();
    for name in ["workspace", "connection"] {
        if params.get(name).is_none_or(|v| v.is_empty()) {
            missing.push(FieldError::new(name, "is required"));
        }
    }
    if !missing.is_empty() {
        return Err(ApiError::invalid(missing));
    }
    let (workspace, connection) = (&params["workspace"], &params["connection"]);
    check_connection(&api, workspace, connection)?;
    let keys = api.table.credentials().keys().derived_keys(state::PURPOSE);
    let key = keys.first().ok_or_else(no_key)?;
    let settings = &api.settings.oauth.hubspot;
    let claims = Claims {
        workspace: workspace.clone(),
        connection: connection.clone(),
        exp: Utc::now().timestamp_millis() + settings.state_ttl().as_millis() as i64,
        nonce: uuid::Uuid::now_v7().simple().to_string(),
    };
    // Checked by `Settings::load`.
    let mut authorize =
        url::Url::parse(&settings.authorize_url).map_err(|e| ApiError::internal(&e))?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &app.client_id)
        .append_pair("redirect_uri", &app.redirect_url)
        .append_pair("scope", &settings.scope())
        .append_pair("state", &state::sign(&claims, key));
    tracing::info!(workspace = %workspace, connection = %connection, token = %admin.name,
        "HubSpot connection started");
    Ok((
        StatusCode::FOUND,
        [(header::LOCATION, authorize.to_string())],
    )
        .into_response())
}

/// The workspace is loaded here and `connection` is one of its HubSpot connections.
fn check_connection(api: &ApiState, workspace: &str, connection: &str) -> Result<(), ApiError> {
    let Some(WorkspaceEntry::Ready(ws)) = api.table.get(workspace) else {
        return Err(ApiError::not_found("no workspace with that id"));
    };
    match ws.connections.iter().find(|(id, _)| id == connection) {
        None => Err(ApiError::not_found(
            "the workspace has no connection with that id",
        )),
        Some((_, kind)) if kind != "hubspot" => Err(ApiError::invalid(vec![FieldError::new(
            "connection",
            format!("is a {kind} connection; only hubspot connections connect with OAuth"),
        )])),
        Some(_) => Ok(()),
    }
}

async fn callback(
    State(api): State<ApiState>,
    Extension(oauth): Extension<Arc<OAuth>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let app = oauth.hubspot.as_ref().ok_or_else(not_configured)?;
    let params = params(query);
    let keys = api.table.credentials().keys().derived_keys(state::PURPOSE);
    if keys.is_empty() {
        return Err(no_key());
    }
    let now = Utc::now().timestamp_millis();
    let claims = params
        .get("state")
        .ok_or(StateError::Forged)
        .and_then(|s| state::verify(s, &keys, now))
        .and_then(|claims| oauth.used.spend(&claims, now).map(|()| claims))
        .map_err(refused_state)?;
    if let Some(error) = params.get("error") {
        let code = if is_code(error) {
            error.as_str()
        } else {
            "error"
        };
        tracing::info!(workspace = %claims.workspace, connection = %claims.connection,
            error = code, "HubSpot connection not approved");
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "not_approved",
            format!("HubSpot did not grant access ({code}); nothing changed"),
        ));
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| ApiError::invalid(vec![FieldError::new("code", "is required")]))?;
    check_connection(&api, &claims.workspace, &claims.connection)?;
    let record = RecordKey::new(&claims.workspace, &claims.connection)
        .ok_or_else(|| ApiError::not_found("no workspace with that id"))?;
    let tokens = oauth::exchange_code(&oauth.http, app, code)
        .await
        .map_err(|e| match e {
            RefreshError::Refused(why) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "code_refused",
                format!("HubSpot refused the authorization code ({why}); start connecting again"),
            ),
            RefreshError::Unavailable(why) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                "token_endpoint_failed",
                format!("HubSpot's token endpoint did not answer usefully ({why}); start connecting again"),
            ),
        })?;
    let credentials = api.table.credentials();
    if let Err(e) = tokens::store(&api.settings, &api.producer, credentials, &record, &tokens).await
    {
        tracing::error!(workspace = %record.workspace, connection = %record.connection,
            error = %crate::model::error_chain(&e), "HubSpot tokens not stored");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the tokens could not be stored; start connecting again",
        ));
    }
    tracing::info!(workspace = %record.workspace, connection = %record.connection,
        "HubSpot connection connected with OAuth");
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    Ok(if wants_html {
        Html(format!(
            "<!doctype html><title>HubSpot connected</title><p>HubSpot is connected to \
             connection <code>{}</code> of workspace <code>{}</code>. You can close this page.</p>",
            escape(&record.connection),
            escape(&record.workspace)
        ))
        .into_response()
    } else {
        Json(json!({
            "connected": true,
            "workspace": record.workspace,
            "connection": record.connection,
            "expires_at": tokens.expires_at.to_rfc3339(),
        }))
        .into_response()
    })
}

fn refused_state(e: StateError) -> ApiError {
    let (status, code) = match e {
        // The state is what authorises a callback: one this service cannot honour is 403.
        StateError::Forged => (StatusCode::FORBIDDEN, "invalid_state"),
        StateError::Expired => (StatusCode::FORBIDDEN, "expired_state"),
        StateError::Spent => (StatusCode::FORBIDDEN, "used_state"),
        StateError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
    };
    ApiError::new(status, code, format!("{e}; nothing changed"))
}

/// Whether an `error` parameter is a plain code, safe to repeat.
fn is_code(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
