//! Herald: an outbound integration layer. A product emits a business event once into Kafka;
//! for each workspace (tenant) Herald applies that workspace's rules and calls each tool the
//! workspace connected, recording every outcome.
//!
//! The flow, and the module that owns each stage:
//!
//! ```text
//! herald.events ──► ingest (decode, validate; bad input ──► herald.dlq)
//!                     │
//! herald.workspaces ─► workspace (config table, rules, templates)
//!                     │
//!                     ▼
//!                   deliver (consumer loop, ordered offsets, per-workspace order)
//!                     │  one delivery per (event × matched rule)
//!                     ▼
//!                   destinations/<type> (request, response → typed Outcome)
//!                     │
//!                     ▼
//!                   history (herald.deliveries, compacted; skip summaries)
//! ```
//!
//! - [`settings`]: configuration (defaults, `herald.toml`, `HERALD__…`).
//! - [`records`]: the records and their Avro schemas.
//! - [`kafka`]: client settings, the topic plan.
//! - [`api`]: health and metrics over HTTP; [`sandbox`]: local destination simulators.
//! - [`cli`]: the `herald` commands; [`app`] wires a processor together.

pub mod api;
pub mod app;
pub mod cli;
pub mod deliver;
pub mod destinations;
pub mod history;
pub mod ingest;
pub mod kafka;
pub mod records;
pub mod sandbox;
pub mod settings;
pub mod telemetry;
pub mod workspace;
