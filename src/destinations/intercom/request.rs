//! Rule arguments → Intercom request bodies. Both actions name the contact by
//! `with.external_id` and/or `with.email` (external_id is looked up first).

use serde_json::{Map, Value, json};

use super::Action;
use crate::destinations::connector::Action as _;
use crate::model::FieldError;

/// The field an action requires beside the contact's identity.
fn payload_key(action: Action) -> &'static str {
    match action {
        Action::TagContact => "tag",
        Action::UpdateAttributes => "attributes",
    }
}

/// Checks the shape of a rule's `with` for `action`.
pub fn check(action: Action, with: &Value) -> Result<(), FieldError> {
    let key = payload_key(action);
    let action = action.name();
    let with = with.as_object().ok_or_else(|| {
        FieldError::new(
            "with",
            format!("must be an object with `{key}` and `external_id` or `email`"),
        )
    })?;
    for k in with.keys() {
        if !["external_id", "email", key].contains(&k.as_str()) {
            return Err(FieldError::new(
                format!("with.{k}"),
                format!("unknown field; `{action}` takes external_id, email, {key}"),
            ));
        }
    }
    if !with.contains_key("external_id") && !with.contains_key("email") {
        return Err(FieldError::new(
            "with.external_id",
            "give `external_id` or `email` (or both) to find the contact",
        ));
    }
    match (key, with.get(key)) {
        (_, None | Some(Value::Null)) => Err(FieldError::new(format!("with.{key}"), "is required")),
        ("tag", Some(Value::String(s))) if s.trim().is_empty() => {
            Err(FieldError::new("with.tag", "must not be empty"))
        }
        ("tag", Some(Value::Array(_) | Value::Object(_))) => {
            Err(FieldError::new("with.tag", "must be one tag name"))
        }
        ("attributes", Some(Value::Object(m))) if m.is_empty() => Err(FieldError::new(
            "with.attributes",
            "must name at least one custom attribute",
        )),
        ("attributes", Some(Value::Array(_) | Value::Number(_) | Value::Bool(_))) => {
            Err(FieldError::new(
                "with.attributes",
                "must map custom attribute names to values",
            ))
        }
        _ => Ok(()),
    }
}

/// Who the contact is, from the rendered `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub external_id: Option<String>,
    pub email: Option<String>,
}

fn scalar(with: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match with.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("with.{key} rendered to something other than text")),
    }
}

fn object(with: &Value) -> Result<&Map<String, Value>, String> {
    with.as_object()
        .ok_or_else(|| "`with` must be an object".to_owned())
}

/// The contact's identity; at least one of the two must have rendered a value.
pub fn identity(with: &Value) -> Result<Identity, String> {
    let with = object(with)?;
    let who = Identity {
        external_id: scalar(with, "external_id")?,
        email: scalar(with, "email")?,
    };
    if who.external_id.is_none() && who.email.is_none() {
        return Err(
            "with.external_id and with.email are both missing or rendered empty; \
             the event does not say which contact"
                .into(),
        );
    }
    Ok(who)
}

/// `with.tag`.
pub fn tag(with: &Value) -> Result<String, String> {
    scalar(object(with)?, "tag")?.ok_or_else(|| "with.tag is missing or rendered empty".to_owned())
}

/// `with.attributes`, an object of custom attributes.
pub fn attributes(with: &Value) -> Result<Map<String, Value>, String> {
    match object(with)?.get("attributes") {
        Some(Value::Object(m)) if !m.is_empty() => Ok(m.clone()),
        Some(Value::Object(_)) | None | Some(Value::Null) => {
            Err("with.attributes is missing or rendered empty".into())
        }
        Some(_) => Err("with.attributes must map custom attribute names to values".into()),
    }
}

/// `POST /contacts/search` for one exact field.
pub fn search_body(field: &str, value: &str) -> Value {
    json!({"query": {"field": field, "operator": "=", "value": value}})
}

/// `POST /contacts` for a user with this identity.
pub fn create_body(who: &Identity) -> Value {
    let mut body = Map::new();
    body.insert("role".into(), json!("user"));
    if let Some(x) = &who.external_id {
        body.insert("external_id".into(), json!(x));
    }
    if let Some(e) = &who.email {
        body.insert("email".into(), json!(e));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(action: &str, with: &Value) -> Result<(), FieldError> {
        super::check(Action::parse(action).expect("an action"), with)
    }

    #[test]
    fn rule_shapes_are_checked_with_the_field_named() {
        let ok = [
            (
                "tag_contact",
                json!({"external_id": "{{ payload.user_id }}", "tag": "step-3"}),
            ),
            (
                "tag_contact",
                json!({"email": "{{ payload.email }}", "tag": "{{ payload.page_id }}"}),
            ),
            (
                "update_attributes",
                json!({"email": "a@b.io", "attributes": {"onboarding_step": 3}}),
            ),
        ];
        for (action, with) in ok {
            assert_eq!(check(action, &with), Ok(()), "{action} {with}");
        }
        let bad = [
            ("tag_contact", json!([]), "with"),
            ("tag_contact", json!({"tag": "x"}), "with.external_id"),
            ("tag_contact", json!({"email": "a@b.io"}), "with.tag"),
            (
                "tag_contact",
                json!({"email": "a@b.io", "tag": ""}),
                "with.tag",
            ),
            (
                "tag_contact",
                json!({"email": "a@b.io", "tag": "x", "name": "n"}),
                "with.name",
            ),
            (
                "update_attributes",
                json!({"email": "a@b.io"}),
                "with.attributes",
            ),
            (
                "update_attributes",
                json!({"email": "a@b.io", "attributes": {}}),
                "with.attributes",
            ),
            (
                "update_attributes",
                json!({"email": "a@b.io", "attributes": [1]}),
                "with.attributes",
            ),
        ];
        for (action, with, field) in bad {
            assert_eq!(
                check(action, &with).unwrap_err().path,
                field,
                "{action} {with}"
            );
        }
    }

    #[test]
    fn the_identity_needs_one_rendered_value() {
        let who = identity(&json!({"external_id": "usr_5012", "email": ""})).unwrap();
        assert_eq!(
            who,
            Identity {
                external_id: Some("usr_5012".into()),
                email: None
            }
        );
        assert_eq!(
            create_body(&who),
            json!({"role": "user", "external_id": "usr_5012"})
        );
        let err = identity(&json!({"external_id": "", "email": " "})).unwrap_err();
        assert!(
            err.contains("with.external_id") && err.contains("with.email"),
            "{err}"
        );
        assert!(tag(&json!({"tag": ""})).unwrap_err().contains("with.tag"));
        assert!(
            attributes(&json!({"attributes": {}}))
                .unwrap_err()
                .contains("with.attributes")
        );
    }
}
