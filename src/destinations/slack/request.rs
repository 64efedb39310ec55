//! Rule arguments → Slack message body.

use serde_json::{Map, Value};

/// Builds the JSON body for an incoming webhook or `chat.postMessage` from the rendered
/// `with` (`text`, optional `blocks`, optional `channel`). `channel` is only sent to the Web
/// API, falling back to the connection's default.
pub fn message_body(with: &Value, channel: Option<&str>) -> Result<Value, String> {
    let with = with.as_object().ok_or("`with` must be an object")?;
    let mut body = Map::new();
    match with.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => {
            body.insert("text".into(), Value::String(t.clone()));
        }
        Some(Value::String(_)) | None => {
            if !with.contains_key("blocks") {
                return Err("`text` rendered empty and there are no `blocks`".into());
            }
        }
        Some(other) => {
            body.insert("text".into(), Value::String(other.to_string()));
        }
    }
    if let Some(blocks) = with.get("blocks") {
        if !blocks.is_array() {
            return Err("`blocks` must be a list of Block Kit blocks".into());
        }
        body.insert("blocks".into(), blocks.clone());
    }
    if let Some(channel) = with
        .get("channel")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .or(channel)
    {
        body.insert("channel".into(), Value::String(channel.to_owned()));
    }
    body.insert("unfurl_links".into(), Value::Bool(false));
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_blocks_and_channel_are_carried() {
        let body = message_body(
            &json!({"text": "Nina finished", "blocks": [{"type": "divider"}]}),
            Some("C1"),
        )
        .unwrap();
        assert_eq!(body["text"], "Nina finished");
        assert_eq!(body["blocks"][0]["type"], "divider");
        assert_eq!(body["channel"], "C1");
        let body = message_body(&json!({"text": "x", "channel": "C2"}), Some("C1")).unwrap();
        assert_eq!(body["channel"], "C2");
    }

    #[test]
    fn a_message_needs_text_or_blocks() {
        assert!(message_body(&json!({"text": "  "}), None).is_err());
        assert!(message_body(&json!({}), None).is_err());
        assert!(message_body(&json!({"blocks": "nope"}), None).is_err());
    }
}
