//! Delivery: the consumer loop ([`processor`]), ordered offset tracking ([`offsets`]),
//! per-workspace ordering ([`order`]) and routing one event to its deliveries ([`route`]).

pub mod offsets;
pub mod order;
pub mod processor;
pub mod route;
