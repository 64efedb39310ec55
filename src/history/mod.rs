//! Delivery history: the latest state of every delivery in the compacted `herald.deliveries`
//! topic (key = delivery id), written by [`writer`] in the format [`codec`] gives (JSON, or
//! Confluent Avro), read back by [`reader`] (a scan) or queried from the on-disk view [`store`]
//! keeps of it; "no rule matched" and "unknown workspace" become
//! throttled summaries ([`skips`]).

pub mod codec;
pub mod reader;
pub mod skips;
pub mod store;
pub mod stub;
pub mod writer;

pub use writer::{OutcomeWriter, WriteFailure};
