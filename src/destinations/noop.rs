//! `noop`: a destination that completes every call at once, without I/O. Only `herald bench`
//! configures it, to measure the pipeline's own cost (consume, decode, route, render, settle,
//! history) apart from HTTP. It is not in [`super::REGISTRY`]: [`super::lookup`] finds it only
//! in a process that called [`enable_for_benchmark`], so a workspace file applied to a real
//! processor that names `type: noop` is refused like any unknown type.

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Deserialize;

use crate::destinations::connector::{Connector, actions};
use crate::destinations::{Attempted, Call, DestinationContext, Outcome};
use crate::model::FieldError;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Makes `type: noop` a known destination in this process. Called by `herald bench` only.
pub fn enable_for_benchmark() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether this process accepts `type: noop` connections.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

actions! {
    /// What a noop rule can do.
    pub enum Action {
        /// Completes at once as delivered.
        Deliver = "deliver",
    }
}

/// No settings beside `id` and `type`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {}

/// A connection without credentials would be looked up in the credential store, so the
/// benchmark gives it one it never uses.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[allow(dead_code)]
    token: secrecy::SecretString,
}

/// A connection that delivers everything at once.
#[derive(Debug)]
pub struct Noop;

impl Connector for Noop {
    const KIND: &'static str = "noop";
    type Config = Settings;
    type Credentials = Credentials;
    type Action = Action;

    fn connect(_: Settings, _: Credentials, _: &DestinationContext) -> Result<Self, FieldError> {
        Ok(Self)
    }

    fn check(&self, Action::Deliver: Action, _with: &serde_json::Value) -> Result<(), FieldError> {
        Ok(())
    }

    async fn send(&self, Action::Deliver: Action, _call: Call<'_>) -> Attempted {
        Attempted::without_response(Outcome::Delivered)
    }

    fn subject(&self, Action::Deliver: Action, _request: &serde_json::Value) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn noop_is_unknown_unless_the_benchmark_enabled_it() {
        // Tests of one binary share the process; none other enables it.
        assert!(super::super::lookup("noop").is_none());
        super::enable_for_benchmark();
        assert_eq!(super::super::lookup("noop").map(|d| d.kind()), Some("noop"));
        assert!(super::super::REGISTRY.iter().all(|d| d.kind() != "noop"));
    }
}
