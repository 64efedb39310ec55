//! The typed side of a destination. Each destination implements [`Connector`]: its settings and
//! credentials are serde types (unknown keys refused), its actions an enum parsed once when the
//! workspace is compiled, and the connection it builds is the connector value itself.
//! [`Adapter`] turns any connector into the [`Destination`] that [`super::REGISTRY`] lists, and
//! binds each rule's action to its connection as a [`BoundAction`], which the router calls.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::preview::{Preview, Probe};
use super::{Attempted, Call, Connection, Destination, DestinationContext, Outcome};
use crate::model::{ConnectionSpec, FieldError, Secret};

/// A destination type, typed: what a connection of it is made of and what it can do.
pub trait Connector: Sized + Send + Sync + fmt::Debug + 'static {
    /// The `type` of its connections.
    const KIND: &'static str;
    /// The settings beside `id` and `type` (`#[serde(deny_unknown_fields)]`).
    type Config: DeserializeOwned;
    /// `credentials` (`#[serde(deny_unknown_fields)]`), held as `secrecy::SecretString` and
    /// exposed only where they are sent.
    type Credentials: DeserializeOwned;
    /// The actions a rule may name, an enum declared with `actions!`.
    type Action: Action;

    /// Checks the settings and credentials and builds the connection; errors name the field
    /// relative to the connection, e.g. `credentials.token` or `rate_limit.requests`.
    fn connect(
        config: Self::Config,
        credentials: Self::Credentials,
        ctx: &DestinationContext,
    ) -> Result<Self, FieldError>;

    /// Checks the shape of a rule's (unrendered) `with` for `action` before the workspace is
    /// accepted; errors name the field relative to the rule, e.g. `with.text`.
    fn check(&self, action: Self::Action, with: &Value) -> Result<(), FieldError>;

    /// Makes one attempt at `action` with the call's rendered `with`.
    fn send(&self, action: Self::Action, call: Call<'_>) -> impl Future<Output = Attempted> + Send;

    /// The record an action overwrites, read from the rendered `with`: `Some` (e.g. the
    /// contact's normalised email) for actions that SET state, where a later write replaces an
    /// earlier one, so a retried write older than the last successful one must not be sent;
    /// `None` for additive actions (posts, tags, list subscriptions), which are always sent,
    /// and for a `with` the action cannot read (its attempt fails and says why).
    fn subject(&self, action: Self::Action, request: &Value) -> Option<String>;

    /// The requests one attempt at `action` would send for the call, built by the code that
    /// sends them (see [`Preview`]). By default: not available.
    fn preview(&self, action: Self::Action, call: Call<'_>) -> Preview {
        let _ = (action, call);
        Preview::Unavailable {
            reason: format!("{} connections do not show their requests", Self::KIND),
        }
    }

    /// One harmless authenticated call ("test connection"). By default there is none.
    fn probe(&self) -> impl Future<Output = Probe> + Send {
        async {
            Probe::Unsupported(format!(
                "{} connections have no harmless call to test with",
                Self::KIND
            ))
        }
    }

    /// The share of the configured request rate its limiter now allows (below 1 after the API
    /// answered 429), for connections with one limiter.
    fn rate_factor(&self) -> Option<f64> {
        None
    }
}

/// The actions of one destination, as an enum; declare one with `actions!`.
pub trait Action: Copy + Send + Sync + fmt::Debug + 'static {
    /// Every action's name, as rules write it.
    const NAMES: &'static [&'static str];

    /// The action a rule names, if there is one by that name.
    fn parse(name: &str) -> Option<Self>;

    /// The action's name, as rules write it (and history and metrics record it).
    fn name(self) -> &'static str;
}

/// Declares an action enum and its names:
/// `actions! { pub enum Action { Post = "post", } }`.
macro_rules! actions {
    (
        $(#[$attr:meta])*
        $vis:vis enum $enum:ident { $($(#[$vattr:meta])* $variant:ident = $name:literal,)+ }
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $enum { $($(#[$vattr])* $variant,)+ }

        impl $crate::destinations::connector::Action for $enum {
            const NAMES: &'static [&'static str] = &[$($name),+];

            fn parse(name: &str) -> Option<Self> {
                match name {
                    $($name => Some(Self::$variant),)+
                    _ => None,
                }
            }

            fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)+
                }
            }
        }
    };
}
pub(crate) use actions;

/// Reads a connection spec into a connector's settings and credentials, naming the offending
/// field (`base_url`, `credentials.tokn`).
pub fn parse<C: Connector>(
    spec: &ConnectionSpec,
) -> Result<(C::Config, C::Credentials), FieldError> {
    let config = deserialize(Value::Object(spec.settings.clone()))?;
    let credentials = parse_credentials::<C>(&spec.credentials)?;
    Ok((config, credentials))
}

/// Reads credentials into a connector's typed credentials; errors name `credentials.<field>`.
fn parse_credentials<C: Connector>(
    credentials: &BTreeMap<String, Secret>,
) -> Result<C::Credentials, FieldError> {
    let credentials = credentials
        .iter()
        .map(|(key, secret)| (key.clone(), Value::String(secret.expose().to_owned())))
        .collect();
    deserialize(Value::Object(credentials)).map_err(|e| e.under("credentials"))
}

/// Builds a connector's connection from its (interpolated) spec.
pub fn connect<C: Connector>(
    spec: &ConnectionSpec,
    ctx: &DestinationContext,
) -> Result<C, FieldError> {
    let (config, credentials) = parse::<C>(spec)?;
    C::connect(config, credentials, ctx)
}

/// Deserialises `value`; the error's path is relative to it. Only keys and types reach the
/// message, never a value, so a credential cannot end up in it.
fn deserialize<T: DeserializeOwned>(value: Value) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(FieldError::from)
}

/// A [`Connector`] as the [`Destination`] the registry lists.
pub struct Adapter<C>(PhantomData<fn() -> C>);

impl<C> Adapter<C> {
    /// The registry entry of `C`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<C> Default for Adapter<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Connector> Destination for Adapter<C> {
    fn kind(&self) -> &'static str {
        C::KIND
    }

    fn actions(&self) -> &'static [&'static str] {
        C::Action::NAMES
    }

    fn connect(
        &self,
        spec: &ConnectionSpec,
        ctx: &DestinationContext,
    ) -> Result<Arc<dyn Connection>, FieldError> {
        Ok(Arc::new(connect::<C>(spec, ctx)?))
    }

    fn check_settings(&self, spec: &ConnectionSpec) -> Result<(), FieldError> {
        deserialize::<C::Config>(Value::Object(spec.settings.clone())).map(|_| ())
    }

    fn check_credentials(&self, credentials: &BTreeMap<String, Secret>) -> Result<(), FieldError> {
        parse_credentials::<C>(credentials).map(|_| ())
    }
}

/// A connection that cannot be used here (its stored credentials are missing or do not
/// decrypt): rules bind to it by action name, and every call it is asked to make answers
/// [`Outcome::ConnectionBroken`] with the reason, so its deliveries are parked, not lost.
pub fn unusable(destination: &dyn Destination, reason: String) -> Arc<dyn Connection> {
    Arc::new(Unusable {
        kind: destination.kind(),
        actions: destination.actions(),
        reason,
    })
}

#[derive(Debug)]
struct Unusable {
    kind: &'static str,
    actions: &'static [&'static str],
    reason: String,
}

struct UnusableAction {
    connection: Arc<Unusable>,
    action: &'static str,
}

impl Connection for Unusable {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        let reason = format!("the connection is unusable here: {}", self.reason);
        Box::pin(async move { Probe::Failed(reason) })
    }

    fn rate_factor(&self) -> Option<f64> {
        None
    }

    fn bind(self: Arc<Self>, action: &str) -> Result<BoundAction, FieldError> {
        let Some(action) = self.actions.iter().copied().find(|a| *a == action) else {
            return Err(FieldError::new(
                "action",
                format!(
                    "`{action}` is not an action of {} connections (known: {})",
                    self.kind,
                    self.actions.join(", ")
                ),
            ));
        };
        Ok(BoundAction(Arc::new(UnusableAction {
            connection: self,
            action,
        })))
    }
}

impl Act for UnusableAction {
    fn kind(&self) -> &'static str {
        self.connection.kind
    }

    fn name(&self) -> &'static str {
        self.action
    }

    /// Without its connection the shape of `with` cannot be checked; it is checked when the
    /// workspace compiles with usable credentials.
    fn check(&self, _with: &Value) -> Result<(), FieldError> {
        Ok(())
    }

    fn send<'a>(&'a self, _call: Call<'a>) -> BoxFuture<'a, Attempted> {
        let reason = self.connection.reason.clone();
        Box::pin(async move { Attempted::without_response(Outcome::ConnectionBroken { reason }) })
    }

    fn subject(&self, _request: &Value) -> Option<String> {
        None
    }

    fn preview(&self, _call: Call<'_>) -> Preview {
        Preview::Unavailable {
            reason: format!(
                "the connection is unusable here: {}",
                self.connection.reason
            ),
        }
    }
}

impl<C: Connector> Connection for C {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(Connector::probe(self))
    }

    fn rate_factor(&self) -> Option<f64> {
        Connector::rate_factor(self)
    }

    fn bind(self: Arc<Self>, action: &str) -> Result<BoundAction, FieldError> {
        let action = C::Action::parse(action).ok_or_else(|| {
            FieldError::new(
                "action",
                format!(
                    "`{action}` is not an action of {} connections (known: {})",
                    C::KIND,
                    C::Action::NAMES.join(", ")
                ),
            )
        })?;
        Ok(BoundAction(Arc::new(Bound {
            connection: self,
            action,
        })))
    }
}

/// A rule's action bound to its connection: parsed once, when the workspace is compiled.
#[derive(Clone)]
pub struct BoundAction(Arc<dyn Act>);

impl BoundAction {
    /// The action's name, as the rule wrote it.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// Checks the shape of a rule's (unrendered) `with`; errors name the field relative to
    /// the rule.
    pub fn check(&self, with: &Value) -> Result<(), FieldError> {
        self.0.check(with)
    }

    /// Makes one attempt at the call.
    pub fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        self.0.send(call)
    }

    /// The record this action overwrites for a rendered `with`, or `None` when the action is
    /// additive (see [`Connector::subject`]).
    pub fn subject(&self, request: &Value) -> Option<String> {
        self.0.subject(request)
    }

    /// The requests one attempt would send for the call, redacted (see [`Connector::preview`]).
    pub fn preview(&self, call: Call<'_>) -> Preview {
        self.0.preview(call)
    }
}

impl fmt::Debug for BoundAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundAction({}.{})", self.0.kind(), self.0.name())
    }
}

/// What [`BoundAction`] erases.
trait Act: Send + Sync {
    fn kind(&self) -> &'static str;
    fn name(&self) -> &'static str;
    fn check(&self, with: &Value) -> Result<(), FieldError>;
    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted>;
    fn subject(&self, request: &Value) -> Option<String>;
    fn preview(&self, call: Call<'_>) -> Preview;
}

struct Bound<C: Connector> {
    connection: Arc<C>,
    action: C::Action,
}

impl<C: Connector> Act for Bound<C> {
    fn kind(&self) -> &'static str {
        C::KIND
    }

    fn name(&self) -> &'static str {
        self.action.name()
    }

    fn check(&self, with: &Value) -> Result<(), FieldError> {
        self.connection.check(self.action, with)
    }

    fn send<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Attempted> {
        Box::pin(self.connection.send(self.action, call))
    }

    fn subject(&self, request: &Value) -> Option<String> {
        self.connection.subject(self.action, request)
    }

    fn preview(&self, call: Call<'_>) -> Preview {
        self.connection.preview(self.action, call)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::destinations::hubspot::{self, HubSpot};
    use crate::model::Secret;

    fn spec(settings: Value, credentials: &[(&str, &str)]) -> ConnectionSpec {
        ConnectionSpec {
            id: "hs".into(),
            kind: "hubspot".into(),
            credentials: credentials
                .iter()
                .map(|(k, v)| (k.to_string(), Secret::new(*v)))
                .collect(),
            settings: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    fn error(spec: &ConnectionSpec) -> FieldError {
        connect::<HubSpot>(spec, &DestinationContext::for_tests()).unwrap_err()
    }

    #[test]
    fn settings_and_credentials_errors_name_the_field() {
        let token = [("token", "pat-na1-x")];
        let cases = [
            (spec(json!({"timeout_ms": "soon"}), &token), "timeout_ms"),
            (
                spec(json!({"rate_limit": {"requests": 1}}), &token),
                "rate_limit",
            ),
            (
                spec(json!({}), &[("tokn", "pat-na1-x")]),
                "credentials.tokn",
            ),
        ];
        for (spec, path) in cases {
            let err = error(&spec);
            assert_eq!(err.path, path, "{err}");
            assert!(!err.message.contains("pat-na1-x"), "{err}");
        }
    }

    #[test]
    fn state_setting_actions_name_their_subject_and_additive_ones_none() {
        let connection = |kind: &str, settings: Value, credentials: &[(&str, &str)]| {
            let mut spec = spec(settings, credentials);
            spec.kind = kind.into();
            super::super::lookup(kind)
                .unwrap()
                .connect(&spec, &DestinationContext::for_tests())
                .unwrap()
        };
        let who = json!({"email": " Ada@Example.com ", "tag": "t", "list_id": 2, "tags": ["t"],
                         "properties": {}, "attributes": {}, "text": "hi"});
        let hubspot = connection("hubspot", json!({}), &[("token", "pat")]);
        let mailchimp = connection(
            "mailchimp",
            json!({"audience_id": "aud1"}),
            &[("api_key", "k-us6")],
        );
        let intercom = connection("intercom", json!({}), &[("token", "t")]);
        let activecampaign = connection(
            "activecampaign",
            json!({"base_url": "https://acct.api-us1.com"}),
            &[("api_token", "t")],
        );
        let slack = connection("slack", json!({"channel": "#c"}), &[("token", "xoxb-1")]);
        let webhook = connection(
            "webhook",
            json!({"url": "https://hooks.example.com/x"}),
            &[("secret", "whsec_aGVyYWxkLWRldi1zYW5kYm94LXNlY3JldA==")],
        );
        let ada_hash = crate::destinations::mailchimp::request::subscriber_hash("ada@example.com");
        // (connection, action, rendered `with`, the subject it names)
        type Case<'a> = (&'a Arc<dyn Connection>, &'a str, &'a Value, Option<String>);
        let cases: [Case; 11] = [
            (
                &hubspot,
                "upsert_contact",
                &who,
                Some("ada@example.com".into()),
            ),
            (
                &mailchimp,
                "upsert_member",
                &who,
                Some(format!("aud1/{ada_hash}")),
            ),
            (&mailchimp, "add_tags", &who, None),
            (
                &intercom,
                "update_attributes",
                &who,
                Some("email:ada@example.com".into()),
            ),
            (
                &intercom,
                "update_attributes",
                &json!({"external_id": "u-7", "email": "a@b.io", "attributes": {}}),
                Some("external_id:u-7".into()),
            ),
            (&intercom, "tag_contact", &who, None),
            (
                &activecampaign,
                "sync_contact",
                &who,
                Some("ada@example.com".into()),
            ),
            (&activecampaign, "add_tag", &who, None),
            (&activecampaign, "add_to_list", &who, None),
            (&slack, "post_message", &who, None),
            (&webhook, "post", &who, None),
        ];
        for (connection, action, with, subject) in cases {
            let bound = connection.clone().bind(action).unwrap();
            assert_eq!(bound.subject(with), subject, "{bound:?}");
        }
        let hubspot = hubspot.bind("upsert_contact").unwrap();
        assert_eq!(
            hubspot.subject(&json!({"email": ""})),
            None,
            "unreadable: no subject"
        );
    }

    #[test]
    fn actions_parse_by_name_and_unknown_ones_are_named() {
        use hubspot::Action as HubSpotAction;
        assert_eq!(HubSpotAction::NAMES, ["upsert_contact"]);
        let action = HubSpotAction::parse("upsert_contact").unwrap();
        assert_eq!(action.name(), "upsert_contact");
        assert_eq!(HubSpotAction::parse("create_deal"), None);

        let c: Arc<dyn Connection> = Adapter::<HubSpot>::new()
            .connect(
                &spec(json!({}), &[("token", "pat")]),
                &DestinationContext::for_tests(),
            )
            .unwrap();
        let bound = c.clone().bind("upsert_contact").unwrap();
        assert_eq!(bound.name(), "upsert_contact");
        assert_eq!(format!("{bound:?}"), "BoundAction(hubspot.upsert_contact)");
        assert_eq!(bound.check(&json!({})).unwrap_err().path, "with.email");
        assert_eq!(
            bound.subject(&json!({"email": " Ada@Example.com ", "properties": {}})),
            Some("ada@example.com".into()),
            "an upsert overwrites the contact, named by its normalised email"
        );
        let err = c.bind("create_deal").unwrap_err();
        assert_eq!(err.path, "action");
        assert_eq!(
            err.message,
            "`create_deal` is not an action of hubspot connections (known: upsert_contact)"
        );
    }
}
