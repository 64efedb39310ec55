//! The keys that protect the credential store. Several can be loaded at once, so that a new key
//! is rolled out to every processor before records are re-encrypted with it
//! (`herald credentials rotate-key`) and the old one is retired only after.

use std::fmt;
use std::path::Path;

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::settings::CredentialSettings;

/// Several keys, `id:base64` comma separated; the first is the write key.
pub const KEYS_VAR: &str = "HERALD_SECRETS_KEYS";
/// One key, `base64` or `id:base64` (what the Helm chart sets from a Secret).
pub const KEY_VAR: &str = "HERALD_SECRETS_KEY";

/// One AES-256 key and its id. Its bytes never appear in `Debug` output.
pub struct Key {
    pub id: String,
    pub(super) cipher: Aes256Gcm,
    /// A one-way digest of the key that other keys are derived from (see
    /// [`Keyring::derived_keys`]), so the AES key itself serves only the store.
    seed: [u8; 32],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

/// The loaded keys and which one encrypts.
#[derive(Debug, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    write: usize,
}

/// Keys that cannot be used. Messages name the source and the key id, never the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{source_name}: {problem}")]
    Malformed {
        source_name: String,
        problem: String,
    },
    #[error("key id `{0}` is given twice")]
    Duplicate(String),
    #[error("`credentials.write_key`: no key has the id `{0}`")]
    UnknownWriteKey(String),
    #[error(
        "`credentials.write_key` must name one of the keys of `credentials.keys_dir` ({0} found)"
    )]
    AmbiguousWriteKey(usize),
}

impl Keyring {
    /// The keys the environment (`HERALD_SECRETS_KEYS`, `HERALD_SECRETS_KEY`) and
    /// `credentials.keys_dir` give, in that order.
    pub fn load(settings: &CredentialSettings) -> Result<Self, KeyError> {
        let dir = (!settings.keys_dir.is_empty()).then(|| Path::new(&settings.keys_dir));
        Self::from_sources(
            std::env::var(KEYS_VAR).ok().as_deref(),
            std::env::var(KEY_VAR).ok().as_deref(),
            dir,
            &settings.write_key,
        )
    }

    /// [`Keyring::load`] from explicit values.
    pub fn from_sources(
        keys: Option<&str>,
        key: Option<&str>,
        dir: Option<&Path>,
        write_key: &str,
    ) -> Result<Self, KeyError> {
        let mut ring = Keyring::default();
        for (i, item) in keys
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .enumerate()
        {
            let Some((id, b64)) = item.split_once(':') else {
                return Err(malformed(
                    format!("{KEYS_VAR} (item {})", i + 1),
                    "write each key as id:base64",
                ));
            };
            ring.push(parse(&format!("{KEYS_VAR} key `{id}`"), Some(id), b64)?)?;
        }
        if let Some(item) = key.map(str::trim).filter(|s| !s.is_empty()) {
            let (id, b64) = match item.split_once(':') {
                Some((id, b64)) => (Some(id), b64),
                None => (None, item),
            };
            ring.push(parse(KEY_VAR, id, b64)?)?;
        }
        let from_env = ring.keys.len();
        if let Some(dir) = dir {
            let entries = std::fs::read_dir(dir).map_err(|e| {
                malformed(
                    format!("credentials.keys_dir `{}`", dir.display()),
                    &e.to_string(),
                )
            })?;
            let mut files: Vec<_> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                // Kubernetes mounts a Secret with `..data` links and dot files beside the keys.
                .filter(|p| {
                    p.is_file()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| !n.starts_with('.'))
                })
                .collect();
            files.sort();
            for path in files {
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                let name = format!("credentials.keys_dir file `{id}`");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| malformed(name.clone(), &e.to_string()))?;
                ring.push(parse(&name, Some(id), text.trim())?)?;
            }
        }
        ring.write = if !write_key.is_empty() {
            ring.keys
                .iter()
                .position(|k| k.id == write_key)
                .ok_or_else(|| KeyError::UnknownWriteKey(write_key.to_owned()))?
        } else if from_env == 0 && ring.keys.len() > 1 {
            return Err(KeyError::AmbiguousWriteKey(ring.keys.len()));
        } else {
            0
        };
        Ok(ring)
    }

    fn push(&mut self, key: Key) -> Result<(), KeyError> {
        if self.get(&key.id).is_some() {
            return Err(KeyError::Duplicate(key.id));
        }
        self.keys.push(key);
        Ok(())
    }

    /// Whether no key is loaded (the store can then be neither read nor written).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key new records are encrypted with.
    pub fn write_key(&self) -> Option<&Key> {
        self.keys.get(self.write)
    }

    /// The key with id `id`.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// A 32-byte key for `purpose` (e.g. signing OAuth `state`) derived from each loaded key,
    /// the write key's first: sign with the first, accept any, so that a signature made before
    /// a key rotation still verifies.
    pub fn derived_keys(&self, purpose: &str) -> Vec<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let derive = |key: &Key| {
            // HMAC takes keys of any length.
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.seed).expect("any key length");
            mac.update(purpose.as_bytes());
            <[u8; 32]>::from(mac.finalize().into_bytes())
        };
        self.ids()
            .into_iter()
            .filter_map(|id| self.get(id))
            .map(derive)
            .collect()
    }

    /// Every key id, the write key first.
    pub fn ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        if self.write < ids.len() {
            let write = ids.remove(self.write);
            ids.insert(0, write);
        }
        ids
    }
}

fn malformed(source_name: String, problem: &str) -> KeyError {
    KeyError::Malformed {
        source_name,
        problem: problem.to_owned(),
    }
}

/// A key from its base64 text; without an id, the id is derived from the key's hash so every
/// processor given the same key agrees on it.
fn parse(source_name: &str, id: Option<&str>, b64: &str) -> Result<Key, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| malformed(source_name.to_owned(), "is not base64"))?;
    if bytes.len() != 32 {
        return Err(malformed(
            source_name.to_owned(),
            &format!(
                "is {} bytes; an AES-256 key is 32 (e.g. `openssl rand -base64 32`)",
                bytes.len()
            ),
        ));
    }
    let id = match id {
        Some(id) => id.trim().to_owned(),
        None => {
            let digest = Sha256::digest(&bytes);
            format!(
                "key-{:02x}{:02x}{:02x}{:02x}",
                digest[0], digest[1], digest[2], digest[3]
            )
        }
    };
    let valid = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(malformed(
            source_name.to_owned(),
            "a key id is 1-64 letters, digits, `_`, `-` or `.`",
        ));
    }
    let cipher = Aes256Gcm::new_from_slice(&bytes)
        .map_err(|_| malformed(source_name.to_owned(), "is not an AES-256 key"))?;
    let seed = Sha256::new()
        .chain_update(b"herald derived keys v1\0")
        .chain_update(&bytes)
        .finalize()
        .into();
    Ok(Key { id, cipher, seed })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn b64(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn the_first_key_writes_and_every_key_reads() {
        let keys = format!("k2:{},k1:{}", b64(2), b64(1));
        let ring = Keyring::from_sources(Some(&keys), Some(&b64(3)), None, "").unwrap();
        assert_eq!(ring.write_key().unwrap().id, "k2");
        assert_eq!(ring.ids()[..2], ["k2", "k1"]);
        assert!(ring.ids()[2].starts_with("key-"), "{:?}", ring.ids());
        let ring = Keyring::from_sources(Some(&keys), None, None, "k1").unwrap();
        assert_eq!(ring.write_key().unwrap().id, "k1");
    }

    #[test]
    fn a_directory_of_key_files_needs_its_write_key_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("2026-01"), b64(1)).unwrap();
        std::fs::write(dir.path().join("2026-06"), format!("{}\n", b64(2))).unwrap();
        std::fs::write(dir.path().join(".hidden"), "x").unwrap();
        let err = Keyring::from_sources(None, None, Some(dir.path()), "").unwrap_err();
        assert_eq!(err, KeyError::AmbiguousWriteKey(2));
        let ring = Keyring::from_sources(None, None, Some(dir.path()), "2026-06").unwrap();
        assert_eq!(ring.ids(), ["2026-06", "2026-01"]);
    }

    #[test]
    fn bad_keys_are_named_without_their_value() {
        let short = base64::engine::general_purpose::STANDARD.encode(b"canary-short-key");
        let cases = [
            (format!("k1:{short}"), "is 16 bytes"),
            ("k1:not base64!".to_owned(), "is not base64"),
            (b64(1), "write each key as id:base64"),
            (format!("k1:{},k1:{}", b64(1), b64(2)), "given twice"),
            (format!("bad id:{}", b64(1)), "a key id is"),
        ];
        for (keys, expect) in cases {
            let err = Keyring::from_sources(Some(&keys), None, None, "").unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect), "{keys}: {text}");
            assert!(!text.contains(&short) && !text.contains(&b64(1)), "{text}");
        }
        let err = Keyring::from_sources(None, Some(&b64(1)), None, "k9").unwrap_err();
        assert_eq!(err, KeyError::UnknownWriteKey("k9".into()));
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_key_and_the_write_key_comes_first() {
        let ring = |keys: &str| Keyring::from_sources(Some(keys), None, None, "").unwrap();
        let k1 = ring(&format!("k1:{}", b64(1)));
        let both = ring(&format!("k2:{},k1:{}", b64(2), b64(1)));
        let [a] = k1.derived_keys("oauth state")[..] else {
            panic!("one key, one derived key")
        };
        assert_ne!(a, k1.derived_keys("other")[0]);
        assert_eq!(both.derived_keys("oauth state")[1], a);
        assert_ne!(both.derived_keys("oauth state")[0], a);
        assert_ne!(&a[..], &[1u8; 32][..]);
    }

    #[test]
    fn debug_shows_only_ids() {
        let ring = Keyring::from_sources(Some(&format!("k1:{}", b64(7))), None, None, "").unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1") && !shown.contains(&b64(7)), "{shown}");
    }
}
