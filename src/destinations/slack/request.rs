//! Rule arguments → Slack message body.

use serde_json::{Map, Value, json};

use crate::model::records::EventEnvelope;

/// Block Kit allows at most this many fields in one section.
const MAX_FIELDS: usize = 10;

/// Builds the JSON body for an incoming webhook or `chat.postMessage` from the rendered
/// `with` (`text`, optional `blocks` or `fields`, optional `channel`). `channel` is only sent
/// to the Web API, falling back to the connection's default.
///
/// Without `blocks`, a message with `fields` (label → value, e.g. `Course`, `Module`, or
/// `Step`, `Page`) is laid out as Block Kit: the text as a section, the fields as a
/// two-column section, and a context line naming the event and when it happened.
pub fn message_body(
    with: &Value,
    channel: Option<&str>,
    envelope: &EventEnvelope,
) -> Result<Value, String> {
    let with = with.as_object().ok_or("`with` must be an object")?;
    let mut body = Map::new();
    let text = match with.get("text") {
        Some(Value::String(t)) if !t.trim().is_empty() => Some(t.clone()),
        Some(Value::String(_)) | None => {
            if !with.contains_key("blocks") {
                return Err("`text` rendered empty and there are no `blocks`".into());
            }
            None
        }
        Some(other) => Some(other.to_string()),
    };
    if let Some(text) = &text {
        body.insert("text".into(), Value::String(text.clone()));
    }
    match (with.get("blocks"), with.get("fields")) {
        (Some(_), Some(_)) => return Err("give either `blocks` or `fields`, not both".into()),
        (Some(blocks), None) => {
            if !blocks.is_array() {
                return Err("`blocks` must be a list of Block Kit blocks".into());
            }
            body.insert("blocks".into(), blocks.clone());
        }
        (None, Some(fields)) => {
            let text = text.as_deref().unwrap_or_default();
            body.insert("blocks".into(), field_blocks(text, fields, envelope)?);
        }
        (None, None) => {}
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

/// The Block Kit layout for `text` and `fields`.
fn field_blocks(text: &str, fields: &Value, envelope: &EventEnvelope) -> Result<Value, String> {
    let fields = fields
        .as_object()
        .ok_or("`fields` must be a map of label to value")?;
    if fields.len() > MAX_FIELDS {
        return Err(format!(
            "`fields` has {} entries; Slack shows at most {MAX_FIELDS}",
            fields.len()
        ));
    }
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    let shown: Vec<Value> = fields
        .iter()
        .filter(|(_, value)| !value.is_null() && value.as_str() != Some(""))
        .map(|(label, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            json!({"type": "mrkdwn", "text": format!("*{label}*\n{value}")})
        })
        .collect();
    if !shown.is_empty() {
        blocks.push(json!({"type": "section", "fields": shown}));
    }
    let when = envelope
        .occurred_at
        .or(envelope.received_at)
        .map(|t| format!(" · {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": format!("`{}`{when}", envelope.event)}],
    }));
    Ok(Value::Array(blocks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> EventEnvelope {
        serde_json::from_value(json!({
            "event_id": "e1", "workspace_id": "ws", "event": "lesson.completed",
            "payload": {}, "occurred_at": "2026-03-21T14:18:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn text_blocks_and_channel_are_carried() {
        let body = message_body(
            &json!({"text": "Nina finished", "blocks": [{"type": "divider"}]}),
            Some("C1"),
            &envelope(),
        )
        .unwrap();
        assert_eq!(body["text"], "Nina finished");
        assert_eq!(body["blocks"][0]["type"], "divider");
        assert_eq!(body["channel"], "C1");
        let body = message_body(
            &json!({"text": "x", "channel": "C2"}),
            Some("C1"),
            &envelope(),
        )
        .unwrap();
        assert_eq!(body["channel"], "C2");
    }

    #[test]
    fn a_message_needs_text_or_blocks() {
        assert!(message_body(&json!({"text": "  "}), None, &envelope()).is_err());
        assert!(message_body(&json!({}), None, &envelope()).is_err());
        assert!(message_body(&json!({"blocks": "nope"}), None, &envelope()).is_err());
    }

    #[test]
    fn fields_become_block_kit_sections_with_the_event_as_context() {
        let with = json!({
            "text": "Nina completed *Customer Research*",
            "fields": {"Course": "Creator Accelerator", "Module": "Growth Foundations", "Empty": ""},
        });
        let body = message_body(&with, Some("C1"), &envelope()).unwrap();
        let blocks = body["blocks"].as_array().unwrap();
        assert_eq!(
            blocks[0]["text"]["text"],
            "Nina completed *Customer Research*"
        );
        assert_eq!(
            blocks[1]["fields"][0]["text"],
            "*Course*\nCreator Accelerator"
        );
        assert_eq!(
            blocks[1]["fields"][1]["text"],
            "*Module*\nGrowth Foundations"
        );
        assert_eq!(
            blocks[1]["fields"].as_array().unwrap().len(),
            2,
            "empty values are left out"
        );
        assert_eq!(
            blocks[2]["elements"][0]["text"],
            "`lesson.completed` · 2026-03-21 14:18 UTC"
        );
        assert_eq!(
            body["text"], "Nina completed *Customer Research*",
            "the notification fallback"
        );
        let both = json!({"text": "x", "fields": {}, "blocks": []});
        assert!(message_body(&both, None, &envelope()).is_err());
        let many: serde_json::Map<String, Value> =
            (0..11).map(|i| (format!("f{i}"), json!(i))).collect();
        let err = message_body(&json!({"text": "x", "fields": many}), None, &envelope());
        assert!(err.unwrap_err().contains("at most 10"));
    }
}
