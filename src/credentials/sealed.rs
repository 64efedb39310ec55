//! One record of the credential store. Key: `<workspace>/<connection>` (neither id may contain
//! `/`). Value: JSON `{"v": 1, "key": "<key id>", "nonce": "<base64>", "data": "<base64>"}`,
//! where `data` is the AES-256-GCM encryption of the connection's credentials (a JSON object of
//! strings) under a random 96-bit nonce. The associated data binds the ciphertext to its record
//! key and key id: moved to another workspace or connection, or relabelled with another key id,
//! it no longer decrypts.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::keys::{Key, Keyring};
use crate::model::Secret;

/// A connection's credentials, by field name.
pub type Fields = BTreeMap<String, Secret>;

/// Which connection a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub workspace: String,
    pub connection: String,
}

impl RecordKey {
    /// The key of `connection` of `workspace`; `None` when an id holds `/` or is empty.
    pub fn new(workspace: &str, connection: &str) -> Option<Self> {
        let ok = |s: &str| !s.is_empty() && !s.contains('/');
        (ok(workspace) && ok(connection)).then(|| Self {
            workspace: workspace.to_owned(),
            connection: connection.to_owned(),
        })
    }

    /// Reads a Kafka record key.
    pub fn parse(key: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(key).ok()?;
        let (workspace, connection) = text.split_once('/')?;
        Self::new(workspace, connection)
    }

    fn associated_data(&self, key_id: &str) -> Vec<u8> {
        format!(
            "herald.credentials v1\n{}\n{}\n{key_id}",
            self.workspace, self.connection
        )
        .into_bytes()
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.connection)
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    v: u8,
    key: String,
    nonce: String,
    data: String,
}

/// Why a record cannot be read. No variant carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the credential record is not in the store's format")]
    Format,
    #[error("the credentials are encrypted with key `{0}`, which this processor does not have")]
    UnknownKey(String),
    #[error(
        "the credentials do not decrypt with key `{0}`: the record was altered or belongs to another connection"
    )]
    Tampered(String),
    #[error("the decrypted credentials are not an object of strings")]
    NotFields,
}

/// Encrypts `fields` for `key` with `with`.
pub fn seal(record: &RecordKey, fields: &Fields, with: &Key) -> Vec<u8> {
    let plain = serde_json::to_vec(fields).unwrap_or_default();
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = record.associated_data(&with.id);
    // AES-GCM encryption fails only for plaintexts beyond 64 GiB.
    let data = with
        .cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plain,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    let envelope = Envelope {
        v: 1,
        key: with.id.clone(),
        nonce: B64.encode(nonce),
        data: B64.encode(data),
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The key id a record is encrypted with, without decrypting it.
pub fn key_id(value: &[u8]) -> Result<String, OpenError> {
    let envelope: Envelope = serde_json::from_slice(value).map_err(|_| OpenError::Format)?;
    Ok(envelope.key)
}

/// Decrypts the record stored under `record`.
pub fn open(record: &RecordKey, value: &[u8], keys: &Keyring) -> Result<Fields, OpenError> {
    let envelope: Envelope = serde_json::from_slice(value).map_err(|_| OpenError::Format)?;
    if envelope.v != 1 {
        return Err(OpenError::Format);
    }
    let key = keys
        .get(&envelope.key)
        .ok_or_else(|| OpenError::UnknownKey(envelope.key.clone()))?;
    let nonce = B64.decode(&envelope.nonce).map_err(|_| OpenError::Format)?;
    let data = B64.decode(&envelope.data).map_err(|_| OpenError::Format)?;
    if nonce.len() != 12 {
        return Err(OpenError::Format);
    }
    let aad = record.associated_data(&envelope.key);
    let plain = key
        .cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &data,
                aad: &aad,
            },
        )
        .map_err(|_| OpenError::Tampered(envelope.key.clone()))?;
    serde_json::from_slice(&plain).map_err(|_| OpenError::NotFields)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANARY: &str = "canary-sealed-7d1";

    fn ring(keys: &str) -> Keyring {
        Keyring::from_sources(Some(keys), None, None, "").unwrap()
    }

    fn b64(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    fn fields() -> Fields {
        [("token".to_owned(), Secret::new(CANARY))].into()
    }

    #[test]
    fn a_record_opens_with_any_loaded_key_and_holds_no_plaintext() {
        let old = ring(&format!("k1:{}", b64(1)));
        let both = ring(&format!("k2:{},k1:{}", b64(2), b64(1)));
        let key = RecordKey::new("ws", "crm").unwrap();
        let value = seal(&key, &fields(), old.write_key().unwrap());
        assert!(!String::from_utf8_lossy(&value).contains(CANARY));
        assert_eq!(key_id(&value).unwrap(), "k1");
        assert_eq!(open(&key, &value, &both).unwrap(), fields());
        let again = seal(&key, &fields(), old.write_key().unwrap());
        assert_ne!(value, again, "a fresh nonce per record");
    }

    #[test]
    fn a_record_moved_tampered_or_under_an_unknown_key_does_not_open() {
        let keys = ring(&format!("k1:{}", b64(1)));
        let key = RecordKey::new("ws_a", "crm").unwrap();
        let value = seal(&key, &fields(), keys.write_key().unwrap());
        let moved = RecordKey::new("ws_b", "crm").unwrap();
        assert_eq!(
            open(&moved, &value, &keys),
            Err(OpenError::Tampered("k1".into()))
        );
        let other = RecordKey::new("ws_a", "slack").unwrap();
        assert!(open(&other, &value, &keys).is_err());

        let mut envelope: serde_json::Value = serde_json::from_slice(&value).unwrap();
        let data = envelope["data"].as_str().unwrap().to_owned();
        let mut bytes = B64.decode(data).unwrap();
        bytes[0] ^= 1;
        envelope["data"] = B64.encode(bytes).into();
        let tampered = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            open(&key, &tampered, &keys),
            Err(OpenError::Tampered("k1".into()))
        );

        let relabelled = ring(&format!("k9:{}", b64(1)));
        let mut envelope: serde_json::Value = serde_json::from_slice(&value).unwrap();
        envelope["key"] = "k9".into();
        let value9 = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            open(&key, &value9, &relabelled),
            Err(OpenError::Tampered("k9".into())),
            "the key id is bound too"
        );
        let unknown = ring(&format!("k2:{}", b64(2)));
        assert_eq!(
            open(&key, &value, &unknown),
            Err(OpenError::UnknownKey("k1".into()))
        );
        assert_eq!(open(&key, b"{}", &keys), Err(OpenError::Format));
    }

    #[test]
    fn record_keys_are_workspace_slash_connection() {
        let key = RecordKey::parse(b"ws_academyflow/crm").unwrap();
        assert_eq!(key.to_string(), "ws_academyflow/crm");
        assert_eq!(RecordKey::parse(b"ws/a/b"), None);
        assert_eq!(RecordKey::parse(b"ws"), None);
        assert_eq!(RecordKey::new("", "c"), None);
    }
}
