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
//! herald.credentials ► credentials (encrypted store, decrypted in memory)
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
//! The modules, in layers. Each uses only the layers below it; `tests/architecture.rs` reads
//! every `crate::…` path and fails on an edge that runs the other way.
//!
//! ```text
//! cli                      the `herald` commands
//! app                      wires a processor: consumers, producer, HTTP server
//! console                  the web console at /console: pages over the API's handlers
//! api                      HTTP: ingest, the management API
//! ops                      operator commands (group and workspace replay, redrive, replay of
//!                          one delivery), run by the CLI and the API
//! deliver                  the running pipeline: consumer loop, offsets, order, routing,
//!                          settling outcomes, retry tiers, dedupe, health
//! workspace                compiled workspaces, rule templates, the live table
//! ingest, history,         decode input; write and read outcomes; one folder per
//!   destinations,            destination behind one typed connector trait; the encrypted
//!   credentials              credential store and its keys
//! kafka, telemetry         client settings, topic plan, reading by offset and time, the schema
//!                          registry client (input and history share it); logs, metrics
//! settings                 configuration and `${env:…}` references
//! model                    spec types, secrets, field errors, records and their Avro form
//! ```
//!
//! The destination simulators (`herald sandbox`, and inside `herald dev`) are their own crate,
//! `herald_sandbox` in `crates/herald-sandbox`, that does not depend on this one: the code under
//! test never verifies itself.

pub mod api;
pub mod app;
pub mod cli;
pub mod console;
pub mod credentials;
pub mod deliver;
pub mod destinations;
pub mod history;
pub mod ingest;
pub mod kafka;
pub mod model;
pub mod ops;
pub mod settings;
pub mod telemetry;
pub mod workspace;
