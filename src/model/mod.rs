//! The model: what Herald reads and writes, with no behaviour beyond parsing and naming.
//! Everything else in the crate builds on it; it imports nothing of the crate.
//!
//! - [`spec`]: the workspace configuration format (connections and rules).
//! - [`secret`]: a credential that never prints.
//! - [`error`]: errors that name a field path.
//! - [`records`]: the records of the topics, and their Avro schemas.

pub mod error;
pub mod records;
pub mod secret;
pub mod spec;

pub use error::{ConfigErrors, FieldError, error_chain, excerpt};
pub use secret::Secret;
pub use spec::{ConnectionSpec, RuleSpec, WorkspaceConfig};
