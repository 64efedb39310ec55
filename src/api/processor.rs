//! What the management API reaches of the processor in this process: the router (its
//! workspace table and circuit breakers), the destination context and variables connections
//! are built with, and the credential store's keys. Health and tests answered from it are this
//! replica's view.

use std::sync::Arc;
use std::time::Duration;

use crate::credentials::Keyring;
use crate::deliver::route::Router;
use crate::destinations::DestinationContext;
use crate::settings::MAX_DESTINATION_TIMEOUT_MS;
use crate::settings::interpolate::Vars;

/// The processor's parts the management API uses.
pub struct Processor {
    pub router: Arc<Router>,
    pub ctx: DestinationContext,
    /// Restricted to the credential prefix and files, as the processor's own.
    pub vars: Vars,
    /// Encrypts credentials set through the API; may hold no write key.
    pub keys: Keyring,
}

impl Processor {
    /// The longest one call to a destination may take here: its longest allowed timeout plus
    /// the longest wait for its rate limit. A call that somehow outlives it is abandoned, so a
    /// hanging destination never holds an API request longer.
    pub fn call_bound(&self) -> Duration {
        Duration::from_millis(MAX_DESTINATION_TIMEOUT_MS) + self.ctx.max_rate_wait
    }
}
