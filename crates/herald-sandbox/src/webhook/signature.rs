//! Standard Webhooks verification, written from the specification rather than borrowed from
//! the signer it checks: a shared mistake would otherwise pass on both sides.
//!
//! The secret is `whsec_` followed by the base64 of the key. A request carries `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-separated list of
//! `v1,<base64 of HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; one matching entry is enough.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a `--webhook-secret` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BadSecret {
    #[error("must start with `whsec_` followed by a base64 key")]
    Prefix,
    #[error("the part after `whsec_` is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// The key of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, BadSecret> {
    let encoded = secret.strip_prefix("whsec_").ok_or(BadSecret::Prefix)?;
    Ok(STANDARD.decode(encoded)?)
}

/// Whether one of the `v1` signatures in `signatures` signs `id`, `timestamp` and `body` with
/// `key`. Other versions are skipped, as the specification asks of receivers.
pub fn verify(key: &[u8], id: &str, timestamp: &str, body: &[u8], signatures: &str) -> bool {
    // The timestamp is signed as sent, but it must be a number of seconds.
    if timestamp.parse::<i64>().is_err() {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    signatures
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| STANDARD.decode(s).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn key() -> Vec<u8> {
        decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap()
    }

    /// The example from the Standard Webhooks reference libraries' test suite.
    #[test]
    fn the_reference_vector_verifies() {
        assert!(verify(&key(), ID, TIMESTAMP, BODY, SIGNATURE));
    }

    #[test]
    fn one_matching_entry_among_several_is_enough() {
        let listed = format!("v2,abc v1,AAAA {SIGNATURE}");
        assert!(verify(&key(), ID, TIMESTAMP, BODY, &listed));
    }

    #[test]
    fn every_signed_part_matters() {
        let key = key();
        assert!(!verify(&key, "msg_other", TIMESTAMP, BODY, SIGNATURE));
        assert!(!verify(&key, ID, "1614265331", BODY, SIGNATURE));
        assert!(!verify(&key, ID, TIMESTAMP, br#"{"test": 1}"#, SIGNATURE));
        assert!(!verify(b"another key", ID, TIMESTAMP, BODY, SIGNATURE));
        assert!(!verify(&key, ID, "soon", BODY, SIGNATURE));
    }

    #[test]
    fn secrets_need_the_prefix_and_base64() {
        assert!(matches!(decode_secret("MfKQ9r8G"), Err(BadSecret::Prefix)));
        assert!(matches!(
            decode_secret("whsec_not base64!"),
            Err(BadSecret::Base64(_))
        ));
    }
}
