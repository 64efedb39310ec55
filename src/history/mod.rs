//! Delivery history: the latest state of every delivery in the compacted `herald.deliveries`
//! topic (key = delivery id), written by [`writer`], read back by [`reader`]; "no rule matched"
//! and "unknown workspace" become throttled summaries ([`skips`]).

pub mod reader;
pub mod skips;
pub mod stub;
pub mod writer;

pub use writer::{OutcomeWriter, WriteFailure};
