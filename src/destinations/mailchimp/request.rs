//! Rule arguments → Mailchimp member and tag requests.

use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use super::config::{STATUSES, is_audience_id};

/// A member to upsert (and, for `add_tags`, to tag).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub audience_id: String,
    /// As given, trimmed.
    pub email: String,
    /// `md5(lowercase(email))`, the member's id in URLs.
    pub hash: String,
    pub status_if_new: String,
    pub merge_fields: Map<String, Value>,
}

/// The connection's defaults a rule may override.
#[derive(Debug, Clone, Copy)]
pub struct Defaults<'a> {
    pub audience_id: Option<&'a str>,
    pub status_if_new: &'a str,
}

/// Mailchimp's subscriber hash: the hex MD5 of the lowercased email.
pub fn subscriber_hash(email: &str) -> String {
    let digest = Md5::digest(email.trim().to_lowercase().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `email`, `audience_id`, `status_if_new` and `merge_fields` from a rendered `with`.
/// The error is a reason naming the field.
pub fn member(with: &Value, defaults: Defaults<'_>) -> Result<Member, String> {
    let with = with
        .as_object()
        .ok_or("`with` must be an object with `email`")?;
    let text = |key: &str| with.get(key).and_then(Value::as_str).map(str::trim);
    let email = match with.get("email") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.trim().to_owned(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err("`with.email` is missing or rendered empty; no member to update".into());
        }
        Some(other) => return Err(format!("`with.email` must be a string, got {other}")),
    };
    let audience_id = match text("audience_id").filter(|a| !a.is_empty()) {
        Some(a) => a,
        None => defaults.audience_id.ok_or(
            "no audience: `with.audience_id` is empty and the connection has no `audience_id`",
        )?,
    };
    if !is_audience_id(audience_id) {
        return Err(format!(
            "`with.audience_id` `{audience_id}` is not a Mailchimp audience id"
        ));
    }
    let status_if_new = text("status_if_new")
        .filter(|s| !s.is_empty())
        .unwrap_or(defaults.status_if_new);
    if !STATUSES.contains(&status_if_new) {
        return Err(format!(
            "`with.status_if_new` `{status_if_new}` is not one of {}",
            STATUSES.join(", ")
        ));
    }
    let merge_fields = match with.get("merge_fields") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("`with.merge_fields` must be an object".into()),
    };
    Ok(Member {
        audience_id: audience_id.to_owned(),
        hash: subscriber_hash(&email),
        email,
        status_if_new: status_if_new.to_owned(),
        merge_fields,
    })
}

/// Reads `with.tags`: a list of tag names, or one name.
pub fn tags(with: &Value) -> Result<Vec<String>, String> {
    let names: Vec<&Value> = match with.get("tags") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one @ Value::String(_)) => vec![one],
        None | Some(Value::Null) => return Err("`with.tags` is missing".into()),
        Some(_) => return Err("`with.tags` must be a list of tag names".into()),
    };
    let mut tags = Vec::new();
    for name in names {
        match name {
            Value::String(s) if !s.trim().is_empty() => tags.push(s.trim().to_owned()),
            Value::String(_) => {}
            Value::Number(n) => tags.push(n.to_string()),
            other => return Err(format!("`with.tags` holds {other}, not a tag name")),
        }
    }
    if tags.is_empty() {
        return Err("`with.tags` rendered empty; no tag to add".into());
    }
    Ok(tags)
}

/// The body of `PUT /lists/{id}/members/{hash}`. `status` is never sent: it would overwrite
/// the status of existing members (re-subscribing people who unsubscribed).
pub fn upsert_body(member: &Member) -> Value {
    json!({
        "email_address": member.email,
        "status_if_new": member.status_if_new,
        "merge_fields": member.merge_fields,
    })
}

/// The body of `POST /lists/{id}/members/{hash}/tags`.
pub fn tags_body(tags: &[String]) -> Value {
    let tags: Vec<Value> = tags
        .iter()
        .map(|name| json!({"name": name, "status": "active"}))
        .collect();
    json!({"tags": tags, "is_syncing": false})
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults<'static> = Defaults {
        audience_id: Some("aud1"),
        status_if_new: "subscribed",
    };

    #[test]
    fn the_hash_is_md5_of_the_lowercased_email() {
        // md5("ada@example.com")
        assert_eq!(
            subscriber_hash(" Ada@Example.COM"),
            "3e3417d7ef77d5932a6734b916515ed5"
        );
    }

    #[test]
    fn a_member_never_carries_status() {
        let m = member(
            &json!({"email": "Ada@Example.com", "merge_fields": {"FNAME": "Ada"}}),
            DEFAULTS,
        )
        .unwrap();
        assert_eq!(m.audience_id, "aud1");
        assert_eq!(m.email, "Ada@Example.com");
        let body = upsert_body(&m);
        assert_eq!(
            body,
            json!({"email_address": "Ada@Example.com", "status_if_new": "subscribed",
                   "merge_fields": {"FNAME": "Ada"}})
        );
        let m = member(
            &json!({"email": "a@b.io", "audience_id": "other", "status_if_new": "pending"}),
            DEFAULTS,
        )
        .unwrap();
        assert_eq!(
            (m.audience_id.as_str(), m.status_if_new.as_str()),
            ("other", "pending")
        );
    }

    #[test]
    fn missing_or_bad_fields_are_named() {
        let no_audience = Defaults {
            audience_id: None,
            status_if_new: "subscribed",
        };
        for (with, defaults, field) in [
            (json!({}), DEFAULTS, "with.email"),
            (json!({"email": ""}), DEFAULTS, "with.email"),
            (json!({"email": "a@b.io"}), no_audience, "with.audience_id"),
            (
                json!({"email": "a@b.io", "audience_id": "a/b"}),
                DEFAULTS,
                "with.audience_id",
            ),
            (
                json!({"email": "a@b.io", "status_if_new": "x"}),
                DEFAULTS,
                "with.status_if_new",
            ),
            (
                json!({"email": "a@b.io", "merge_fields": 1}),
                DEFAULTS,
                "with.merge_fields",
            ),
        ] {
            let reason = member(&with, defaults).unwrap_err();
            assert!(reason.contains(field), "{with}: {reason}");
        }
    }

    #[test]
    fn tags_are_a_list_or_one_name() {
        assert_eq!(
            tags(&json!({"tags": ["a", " b ", ""]})).unwrap(),
            ["a", "b"]
        );
        assert_eq!(tags(&json!({"tags": "module-3"})).unwrap(), ["module-3"]);
        assert!(
            tags(&json!({"tags": [""]}))
                .unwrap_err()
                .contains("with.tags")
        );
        assert!(tags(&json!({})).unwrap_err().contains("with.tags"));
        assert!(tags(&json!({"tags": [{"name": "x"}]})).is_err());
        assert_eq!(
            tags_body(&["a".into()]),
            json!({"tags": [{"name": "a", "status": "active"}], "is_syncing": false})
        );
    }
}
