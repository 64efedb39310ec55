//! Event → webhook request: the JSON body and the Standard Webhooks signature headers.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::model::records::EventEnvelope;

/// The body Herald posts when a rule has no `with`: Standard Webhooks' `type`, `timestamp`,
/// `data` shape, with the event's fields under `data`.
pub fn default_body(envelope: &EventEnvelope) -> Value {
    let timestamp = envelope.occurred_at.or(envelope.received_at);
    json!({
        "type": envelope.event,
        "timestamp": timestamp.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "data": {
            "event_id": envelope.event_id,
            "workspace_id": envelope.workspace_id,
            "resource": envelope.resource,
            "resource_id": envelope.resource_id,
            "payload": envelope.payload,
        }
    })
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, the Standard Webhooks signature.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let sig = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::webhook::config::decode_secret;

    /// The example from the Standard Webhooks reference libraries' test suite.
    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn signature_changes_with_every_signed_part() {
        let key = b"0123456789abcdef0123";
        let base = signature(key, "id", 1, b"{}");
        assert_ne!(base, signature(key, "id2", 1, b"{}"));
        assert_ne!(base, signature(key, "id", 2, b"{}"));
        assert_ne!(base, signature(key, "id", 1, b"{ }"));
    }
}
