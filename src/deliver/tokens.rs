//! The processor's OAuth token sources: a connection's refresh goes to its destination's token
//! endpoint, and the rotated tokens are written back to the credential store, encrypted, so
//! every replica (and the next start) uses them. The store's record then changes, and the
//! workspace is compiled again with the new tokens like after any credential change.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rdkafka::producer::FutureProducer;
use secrecy::SecretString;

use crate::credentials::{self, CredentialTable, Fields, RecordKey};
use crate::destinations::hubspot::{self, oauth::App};
use crate::destinations::oauth::{OAuthTokens, RefreshError, TokenSource, TokenSources};
use crate::model::Secret;
use crate::settings::Settings;

/// The token sources of every OAuth connection this processor builds.
#[derive(Clone)]
pub struct StoredTokens(Arc<Shared>);

struct Shared {
    settings: Settings,
    producer: FutureProducer,
    credentials: Arc<CredentialTable>,
    /// `None` when `oauth.hubspot` is not configured.
    hubspot: Option<App>,
    /// For the operator's token endpoint, which is trusted: no SSRF guard.
    http: reqwest::Client,
}

impl std::fmt::Debug for StoredTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredTokens(hubspot: {})", self.0.hubspot.is_some())
    }
}

/// The HubSpot app `settings` configure, if any.
pub fn hubspot_app(settings: &Settings) -> Option<App> {
    let app = &settings.oauth.hubspot;
    if !app.enabled() {
        return None;
    }
    Some(App {
        // Checked by `Settings::load`.
        token_url: url::Url::parse(&app.token_url).ok()?,
        client_id: app.client_id.clone(),
        client_secret: SecretString::from(app.client_secret().expose().to_owned()),
        redirect_url: app.callback_url(),
        timeout: app.timeout(),
    })
}

/// A client for token endpoints: no redirects (an answer is the endpoint's own).
pub fn token_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

impl StoredTokens {
    /// Token sources that write to `credentials`' topic with `producer`.
    pub fn new(
        settings: &Settings,
        producer: FutureProducer,
        credentials: Arc<CredentialTable>,
    ) -> Self {
        Self(Arc::new(Shared {
            hubspot: hubspot_app(settings),
            settings: settings.clone(),
            producer,
            credentials,
            http: token_client(),
        }))
    }
}

impl TokenSources for StoredTokens {
    fn for_connection(
        &self,
        kind: &str,
        workspace: &str,
        connection: &str,
    ) -> Option<Arc<dyn TokenSource>> {
        if kind != <hubspot::HubSpot as crate::destinations::connector::Connector>::KIND {
            return None;
        }
        self.0.hubspot.as_ref()?;
        Some(Arc::new(ConnectionTokens {
            shared: self.0.clone(),
            record: RecordKey::new(workspace, connection)?,
        }))
    }
}

/// The token source of one HubSpot connection.
struct ConnectionTokens {
    shared: Arc<Shared>,
    record: RecordKey,
}

impl std::fmt::Debug for ConnectionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionTokens({})", self.record)
    }
}

impl TokenSource for ConnectionTokens {
    fn refresh<'a>(
        &'a self,
        refresh_token: &'a SecretString,
    ) -> BoxFuture<'a, Result<OAuthTokens, RefreshError>> {
        Box::pin(async move {
            let shared = &self.shared;
            let Some(app) = &shared.hubspot else {
                return Err(RefreshError::Unavailable(
                    "oauth.hubspot is not configured".into(),
                ));
            };
            let tokens = hubspot::oauth::refresh(&shared.http, app, refresh_token).await?;
            if let Err(e) = store(
                &shared.settings,
                &shared.producer,
                &shared.credentials,
                &self.record,
                &tokens,
            )
            .await
            {
                // The fresh tokens work in this processor meanwhile; HubSpot keeps the refresh
                // token, so the stored one still refreshes after a restart.
                tracing::error!(workspace = %self.record.workspace,
                    connection = %self.record.connection,
                    error = %crate::model::error_chain(&e),
                    "refreshed tokens not written back to the credential store");
            }
            Ok(tokens)
        })
    }

    fn refresh_margin(&self) -> Duration {
        self.shared.settings.oauth.hubspot.refresh_margin()
    }
}

/// Writes `tokens` as the credentials of `record`, encrypted with the write key.
pub async fn store(
    settings: &Settings,
    producer: &FutureProducer,
    credentials: &CredentialTable,
    record: &RecordKey,
    tokens: &OAuthTokens,
) -> Result<(), credentials::write::WriteError> {
    let fields: Fields = tokens
        .to_fields()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Secret::new(value)))
        .collect();
    credentials::write::put(settings, producer, credentials.keys(), record, &fields).await
}
