//! `hubspot`: `upsert_contact` sets properties on the contact with an email, creating it when
//! needed, through `POST /crm/v3/objects/contacts/batch/upsert`. Upserts are idempotent, so a
//! retry never duplicates a contact. Deliveries that arrive within `batch_window_ms` share one
//! batch request (see [`batch`]); responses are classified per input in [`response`].

pub mod batch;
pub mod config;
pub mod request;
pub mod response;

use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use self::batch::{Client, Job};
use self::config::HubSpotConfig;
use crate::destinations::limit::Limiter;
use crate::destinations::{
    Attempted, Call, Connection, Destination, DestinationContext, Outcome, check_action,
};
use crate::model::{ConnectionSpec, FieldError};

const ACTIONS: &[&str] = &["upsert_contact"];

/// The HubSpot destination type.
pub struct HubSpot;

impl Destination for HubSpot {
    fn kind(&self) -> &'static str {
        "hubspot"
    }

    fn actions(&self) -> &'static [&'static str] {
        ACTIONS
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        let config = HubSpotConfig::from_spec(spec, ctx)?;
        let limiter = Limiter::new(config.rate, ctx.max_rate_wait);
        Ok(Arc::new(HubSpotConnection {
            client: Arc::new(Client::new(config, ctx.http.clone(), limiter)),
            batcher: OnceLock::new(),
        }))
    }
}

/// A configured HubSpot connection.
#[derive(Debug)]
pub struct HubSpotConnection {
    client: Arc<Client>,
    /// Started by the first `send`, so that connections can be built (and configs validated)
    /// outside a Tokio runtime.
    batcher: OnceLock<mpsc::Sender<Job>>,
}

impl Connection for HubSpotConnection {
    fn check_rule(&self, action: &str, with: &serde_json::Value) -> Result<(), FieldError> {
        check_action("hubspot", ACTIONS, action)?;
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

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        async move {
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
        .boxed()
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
    use serde_json::json;

    fn connection() -> Arc<dyn Connection> {
        let spec = ConnectionSpec {
            id: "hs".into(),
            kind: "hubspot".into(),
            credentials: [("token".to_owned(), crate::model::Secret::new("pat-na1-x"))].into(),
            settings: Default::default(),
        };
        let ctx = DestinationContext {
            http: reqwest::Client::new(),
            default_timeout: std::time::Duration::from_secs(1),
            allow_private_networks: false,
            max_rate_wait: std::time::Duration::from_secs(1),
        };
        HubSpot.connect(&spec, &ctx).unwrap()
    }

    #[test]
    fn rules_need_an_email_and_an_object_of_properties() {
        let c = connection();
        assert!(
            c.check_rule("upsert_contact", &json!({"email": "{{ payload.email }}"}))
                .is_ok()
        );
        assert_eq!(
            c.check_rule("upsert_contact", &json!({"properties": {}}))
                .unwrap_err()
                .path,
            "with.email"
        );
        assert_eq!(
            c.check_rule("upsert_contact", &json!({"email": "x", "properties": "p"}))
                .unwrap_err()
                .path,
            "with.properties"
        );
        assert_eq!(
            c.check_rule("create_deal", &json!({})).unwrap_err().path,
            "action"
        );
    }
}
