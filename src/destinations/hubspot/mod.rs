//! `hubspot`: `upsert_contact` sets properties on the contact with an email, creating it when
//! needed, through `POST /crm/v3/objects/contacts/batch/upsert`. Upserts are idempotent, so a
//! retry never duplicates a contact. Deliveries that arrive within `batch_window_ms` share one
//! batch request (see [`batch`]); responses are classified per input in [`response`].
//! A connection authenticates with a private-app token or with the OAuth tokens of
//! "Connect HubSpot" ([`oauth`] speaks to the token endpoint), refreshed before they expire.

pub mod batch;
pub mod config;
pub mod oauth;
pub mod request;
pub mod response;

use std::sync::{Arc, OnceLock};

use tokio::sync::{mpsc, oneshot};

use self::batch::{Client, Job};
use self::config::{Credentials, HubSpotConfig, Settings};
use crate::destinations::connector::{Connector, actions};
use crate::destinations::http::HttpConnection;
use crate::destinations::preview::{Preview, Probe};
use crate::destinations::{Attempted, Call, DestinationContext, Outcome};
use crate::model::FieldError;
use secrecy::ExposeSecret;

actions! {
    /// What a HubSpot rule can do.
    pub enum Action {
        /// Set properties on the contact with an email, creating it when needed.
        UpsertContact = "upsert_contact",
    }
}

/// A configured HubSpot connection.
#[derive(Debug)]
pub struct HubSpot {
    client: Arc<Client>,
    /// Started by the first `send`, so that connections can be built (and configs validated)
    /// outside a Tokio runtime.
    batcher: OnceLock<mpsc::Sender<Job>>,
}

impl Connector for HubSpot {
    const KIND: &'static str = "hubspot";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(
        settings: Settings,
        credentials: Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError> {
        let config = HubSpotConfig::new(settings, credentials, ctx)?;
        let http = HttpConnection::new(ctx, config.timeout, config.rate);
        Ok(Self {
            client: Arc::new(Client::new(config, http, ctx.tokens.clone())),
            batcher: OnceLock::new(),
        })
    }

    fn check(
        &self,
        Action::UpsertContact: Action,
        with: &serde_json::Value,
    ) -> Result<(), FieldError> {
        let with = with
            .as_object()
            .ok_or_else(|| FieldError::new("with", "must be an object with `email`"))?;
        if !with.contains_key("email") {
            return Err(FieldError::new(
                "with.email",
                "is required: the contact's email (e.g. \"{{ payload.email }}\")",
            ));
        }
        match with.get("properties") {
            None | Some(serde_json::Value::Object(_)) => Ok(()),
            Some(_) => Err(FieldError::new(
                "with.properties",
                "must be an object of HubSpot property names to values",
            )),
        }
    }

    async fn send(&self, Action::UpsertContact: Action, call: Call<'_>) -> Attempted {
        let upsert = match request::upsert(call.request) {
            Ok(u) => u,
            Err(reason) => return Attempted::without_response(Outcome::Permanent { reason }),
        };
        let delivery_id = call.delivery_id.to_owned();
        let window = self.client.config.batch_window;
        if window.is_zero() {
            let mut attempts = self.client.upsert(&[(delivery_id, upsert)]).await;
            return attempts.pop().unwrap_or_else(batcher_gone);
        }
        let batcher = self
            .batcher
            .get_or_init(|| batch::spawn(self.client.clone(), window));
        let (reply, answer) = oneshot::channel();
        let job = Job {
            delivery_id,
            upsert,
            reply,
        };
        if batcher.send(job).await.is_err() {
            return batcher_gone();
        }
        answer.await.unwrap_or_else(|_| batcher_gone())
    }

    /// The batch request holds whichever deliveries arrive within the window, so one
    /// delivery's request is not known before it is sent.
    fn preview(&self, Action::UpsertContact: Action, _call: Call<'_>) -> Preview {
        Preview::Unavailable {
            reason: "HubSpot upserts are batched with the other deliveries of the connection's \
                     batch window; send the test event to see the outcome"
                .into(),
        }
    }

    /// `GET /account-info/v3/details`: reads the account the token belongs to, changes nothing.
    async fn probe(&self) -> Probe {
        let client = &self.client;
        // A fixed relative path always joins onto the base URL.
        let url = client
            .config
            .api_base
            .join("account-info/v3/details")
            .expect("relative path");
        let token = match client.bearer_token().await {
            Ok(token) => token,
            Err(outcome) => {
                let why = outcome
                    .reason()
                    .unwrap_or_else(|| outcome.kind().to_owned());
                return Probe::Failed(why);
            }
        };
        let token = token.expose_secret();
        let request = client
            .http
            .request(reqwest::Method::GET, url)
            .bearer_auth(token);
        Probe::call(&client.http, request, &[token], |r| {
            Probe::by_status(r, &[token])
        })
        .await
    }

    fn rate_factor(&self) -> Option<f64> {
        Some(self.client.http.limiter().factor())
    }

    /// An upsert sets the contact's properties: its subject is the normalised email.
    fn subject(
        &self,
        Action::UpsertContact: Action,
        request: &serde_json::Value,
    ) -> Option<String> {
        request::upsert(request).ok().map(|u| u.email)
    }
}

/// The batcher ends only when its connection is dropped (or its runtime shuts down).
fn batcher_gone() -> Attempted {
    Attempted::without_response(Outcome::Retry {
        after: None,
        reason: "the HubSpot batcher stopped before answering".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::{Connection, connector};
    use crate::model::ConnectionSpec;
    use serde_json::json;

    fn connection() -> HubSpot {
        let spec = ConnectionSpec {
            id: "hs".into(),
            kind: "hubspot".into(),
            credentials: [("token".to_owned(), crate::model::Secret::new("pat-na1-x"))].into(),
            settings: Default::default(),
        };
        connector::connect(&spec, &DestinationContext::for_tests()).unwrap()
    }

    #[test]
    fn rules_need_an_email_and_an_object_of_properties() {
        let c = connection();
        let check = |with| c.check(Action::UpsertContact, &with);
        assert!(check(json!({"email": "{{ payload.email }}"})).is_ok());
        assert_eq!(
            check(json!({"properties": {}})).unwrap_err().path,
            "with.email"
        );
        assert_eq!(
            check(json!({"email": "x", "properties": "p"}))
                .unwrap_err()
                .path,
            "with.properties"
        );
        let c: Arc<dyn Connection> = Arc::new(c);
        assert_eq!(c.bind("create_deal").unwrap_err().path, "action");
    }
}
