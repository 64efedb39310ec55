//! Delivery, the running pipeline: the consumer loop ([`processor`]), ordered offset
//! tracking ([`offsets`]), bounded per-connection lines ([`order`]), per-connection circuit
//! breakers ([`breaker`]), routing one event to its deliveries ([`route`]), settling an attempt's outcome ([`settle`]), the retry schedule
//! ([`retry`]) and the consumer of the retry tiers ([`retry_worker`]), skipping what was
//! delivered already ([`dedupe`]) and retried writes a later event superseded ([`supersede`]),
//! what `/readyz` and `/healthz` report ([`health`]), and refreshing OAuth connections' tokens
//! into the credential store ([`tokens`]). Operator commands
//! that act on the topics from outside the pipeline are in `ops`, above this module.

pub mod breaker;
pub mod dedupe;
pub mod health;
pub mod offsets;
pub mod order;
pub mod processor;
pub mod retry;
pub mod retry_worker;
pub mod route;
pub mod schemas;
pub mod settle;
pub mod supersede;
pub mod tokens;
