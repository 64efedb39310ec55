//! The `state` of a "Connect HubSpot" round trip: which workspace and connection the approval
//! is for, until when, signed (HMAC-SHA256 with a key derived from the credential store's
//! keys) so that a callback cannot be pointed at another workspace's connection. A state is
//! accepted once per replica: [`Used`] remembers the ones spent until they expire.
//!
//! Format: `base64url(JSON {"w", "c", "exp", "n"}) "." base64url(signature)`.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What the derived signing key is for.
pub const PURPOSE: &str = "herald oauth state v1";

/// Spent states remembered at once, per replica; beyond it, callbacks are refused until some
/// expire (each one needed an admin's start, so this is far above any real rate).
pub const MAX_SPENT: usize = 10_000;

/// The connection a state is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "w")]
    pub workspace: String,
    #[serde(rename = "c")]
    pub connection: String,
    /// Expiry, Unix milliseconds.
    pub exp: i64,
    /// Makes every state unique, so it can be spent once.
    #[serde(rename = "n")]
    pub nonce: String,
}

/// Why a state is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the state was not issued by this service (bad signature or shape)")]
    Forged,
    #[error("the state expired; start connecting again")]
    Expired,
    #[error("the state was used already; start connecting again")]
    Spent,
    #[error("too many connections are being completed at once; try again shortly")]
    Busy,
}

/// Signs `claims` with `key`.
pub fn sign(claims: &Claims, key: &[u8; 32]) -> String {
    let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signature = B64.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{signature}")
}

fn mac(key: &[u8; 32], payload: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(payload.as_bytes());
    mac
}

/// The claims of `state` if one of `keys` signed it and it has not expired at `now_ms`.
pub fn verify(state: &str, keys: &[[u8; 32]], now_ms: i64) -> Result<Claims, StateError> {
    let (payload, signature) = state.split_once('.').ok_or(StateError::Forged)?;
    let signature = B64.decode(signature).map_err(|_| StateError::Forged)?;
    // `verify_slice` compares in constant time.
    if !keys
        .iter()
        .any(|key| mac(key, payload).verify_slice(&signature).is_ok())
    {
        return Err(StateError::Forged);
    }
    let claims: Claims = B64
        .decode(payload)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(StateError::Forged)?;
    if claims.exp <= now_ms {
        return Err(StateError::Expired);
    }
    Ok(claims)
}

/// The states spent on this replica, until they expire.
#[derive(Debug, Default)]
pub struct Used(Mutex<HashMap<String, i64>>);

impl Used {
    /// Spends the state of `claims`; an error when it was spent before or too many are held.
    pub fn spend(&self, claims: &Claims, now_ms: i64) -> Result<(), StateError> {
        // A poisoned lock means a panic while inserting; the map is still whole.
        let mut spent = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spent.contains_key(&claims.nonce) {
            return Err(StateError::Spent);
        }
        if spent.len() >= MAX_SPENT {
            spent.retain(|_, exp| *exp > now_ms);
            if spent.len() >= MAX_SPENT {
                return Err(StateError::Busy);
            }
        }
        spent.insert(claims.nonce.clone(), claims.exp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(nonce: &str, exp: i64) -> Claims {
        Claims {
            workspace: "ws".into(),
            connection: "crm".into(),
            exp,
            nonce: nonce.into(),
        }
    }

    #[test]
    fn a_state_verifies_until_it_expires_and_only_with_its_keys() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        let c = claims("n1", 1_000);
        let state = sign(&c, &k1);
        assert_eq!(verify(&state, &[k2, k1], 999), Ok(c.clone()));
        assert_eq!(verify(&state, &[k1], 1_000), Err(StateError::Expired));
        assert_eq!(verify(&state, &[k2], 0), Err(StateError::Forged));
        // Another workspace in the payload, the old signature kept.
        let other = sign(
            &Claims {
                workspace: "other".into(),
                ..c.clone()
            },
            &k1,
        );
        let forged = format!(
            "{}.{}",
            other.split_once('.').unwrap().0,
            state.split_once('.').unwrap().1
        );
        assert_eq!(verify(&forged, &[k1], 0), Err(StateError::Forged));
        for junk in ["", "x", "a.b", ".", "ey.ey"] {
            assert_eq!(verify(junk, &[k1], 0), Err(StateError::Forged), "{junk}");
        }
    }

    #[test]
    fn a_state_is_spent_once_and_the_spent_set_is_bounded() {
        let used = Used::default();
        assert_eq!(used.spend(&claims("a", 10), 0), Ok(()));
        assert_eq!(used.spend(&claims("a", 10), 0), Err(StateError::Spent));
        for i in 1..MAX_SPENT {
            used.spend(&claims(&i.to_string(), 10), 0).unwrap();
        }
        assert_eq!(used.spend(&claims("full", 10), 0), Err(StateError::Busy));
        // Once they expire, they make room.
        assert_eq!(used.spend(&claims("later", 20), 10), Ok(()));
        assert_eq!(used.0.lock().unwrap().len(), 1);
    }
}
