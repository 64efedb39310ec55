//! Delivery: the consumer loop ([`processor`]), ordered offset tracking ([`offsets`]),
//! per-workspace ordering ([`order`]), routing one event to its deliveries ([`route`]),
//! settling an attempt's outcome ([`settle`]), the retry schedule ([`retry`]) and the
//! consumer of the retry tiers ([`retry_worker`]).

pub mod dedupe;
pub mod health;
pub mod offsets;
pub mod order;
pub mod processor;
pub mod retry;
pub mod retry_worker;
pub mod route;
pub mod settle;
