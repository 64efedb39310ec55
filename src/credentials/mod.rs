//! The credential store: connections' credentials kept encrypted in the compacted
//! `herald.credentials` topic, so workspace configs (which may live in git) carry no secret.
//! [`keys`] loads the operator's keys (several at once, for rotation), [`sealed`] is the record
//! format (AES-256-GCM bound to its workspace and connection), [`table`] the live, decrypted
//! table every processor follows and [`write`] what the CLI uses to set, delete and re-encrypt.
//! See docs/credentials.md.

pub mod keys;
pub mod sealed;
pub mod table;
pub mod write;

pub use self::keys::Keyring;
pub use self::sealed::{Fields, RecordKey};
pub use self::table::{CredentialTable, Stored};
