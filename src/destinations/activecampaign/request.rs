//! Rule arguments → ActiveCampaign request bodies. Every action names the contact by
//! `with.email`; `sync_contact` and the contact part of the other two also take `first_name`,
//! `last_name`, `phone` and `field_values` (custom field id → value).

use serde_json::{Map, Value, json};

use super::Action;
use crate::destinations::connector::Action as _;
use crate::model::FieldError;

/// The contact fields every action accepts.
const CONTACT_KEYS: &[&str] = &["email", "first_name", "last_name", "phone", "field_values"];

/// The extra field an action requires beside the contact ones.
fn extra_key(action: Action) -> Option<&'static str> {
    match action {
        Action::SyncContact => None,
        Action::AddTag => Some("tag"),
        Action::AddToList => Some("list_id"),
    }
}

/// Checks the shape of a rule's `with` for `action`.
pub fn check(action: Action, with: &Value) -> Result<(), FieldError> {
    let name = action.name();
    let extra = extra_key(action);
    let with = with
        .as_object()
        .ok_or_else(|| FieldError::new("with", "must be an object with at least `email`"))?;
    for key in with.keys() {
        if !CONTACT_KEYS.contains(&key.as_str()) && Some(key.as_str()) != extra {
            let mut known = CONTACT_KEYS.to_vec();
            known.extend(extra);
            return Err(FieldError::new(
                format!("with.{key}"),
                format!("unknown field; `{name}` takes {}", known.join(", ")),
            ));
        }
    }
    for required in std::iter::once("email").chain(extra) {
        match with.get(required) {
            None | Some(Value::Null) => {
                return Err(FieldError::new(format!("with.{required}"), "is required"));
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(FieldError::new(
                    format!("with.{required}"),
                    "must not be empty",
                ));
            }
            Some(Value::Array(_) | Value::Object(_)) => {
                return Err(FieldError::new(
                    format!("with.{required}"),
                    "must be a single value",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(Value::Object(fields)) = with.get("field_values")
        && let Some(key) = fields.keys().find(|k| k.parse::<u64>().is_err())
    {
        return Err(FieldError::new(
            format!("with.field_values.{key}"),
            "custom fields are named by their numeric id (Contacts → Fields in ActiveCampaign)",
        ));
    }
    match with.get("field_values") {
        None | Some(Value::Object(_) | Value::Array(_) | Value::String(_)) => Ok(()),
        Some(_) => Err(FieldError::new(
            "with.field_values",
            "must map custom field ids to values, e.g. {\"12\": \"{{ payload.completion_percentage }}\"}",
        )),
    }
}

/// The contact an action syncs, from the rendered `with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    /// (custom field id, value)
    pub field_values: Vec<(String, String)>,
}

/// A scalar as text; `None` for null or an empty string.
fn scalar(with: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match with.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(_) => Err(format!(
            "with.{key} rendered to a list or object, not a single value"
        )),
    }
}

/// A value that must be present: the error names the field.
pub fn required(with: &Value, key: &str) -> Result<String, String> {
    let with = with.as_object().ok_or("`with` must be an object")?;
    scalar(with, key)?.ok_or_else(|| {
        format!("with.{key} is missing or rendered empty; the event has no value for it")
    })
}

/// Reads the contact fields of the rendered `with`.
pub fn contact(with: &Value) -> Result<Contact, String> {
    let email = required(with, "email")?;
    let with = with.as_object().ok_or("`with` must be an object")?;
    let mut field_values = Vec::new();
    let mut push = |field: String, value: &Value| -> Result<(), String> {
        if field.parse::<u64>().is_err() {
            return Err(format!(
                "with.field_values: `{field}` is not a custom field id (a number)"
            ));
        }
        match value {
            Value::Null => Ok(()),
            Value::String(s) => {
                field_values.push((field, s.clone()));
                Ok(())
            }
            Value::Number(_) | Value::Bool(_) => {
                field_values.push((field, value.to_string()));
                Ok(())
            }
            _ => Err(format!("with.field_values.{field} is not a single value")),
        }
    };
    match with.get("field_values") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (field, value) in map {
                push(field.clone(), value)?;
            }
        }
        Some(Value::Array(items)) => {
            for item in items {
                let field = match item.get("field") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => {
                        return Err("with.field_values: each item needs `field` and `value`".into());
                    }
                };
                push(field, item.get("value").unwrap_or(&Value::Null))?;
            }
        }
        Some(_) => return Err("with.field_values must map custom field ids to values".into()),
    }
    Ok(Contact {
        email,
        first_name: scalar(with, "first_name")?,
        last_name: scalar(with, "last_name")?,
        phone: scalar(with, "phone")?,
        field_values,
    })
}

/// `with.list_id`, a positive number.
pub fn list_id(with: &Value) -> Result<String, String> {
    let id = required(with, "list_id")?;
    match id.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.to_string()),
        _ => Err(format!(
            "with.list_id `{id}` is not a list id (a positive number)"
        )),
    }
}

/// `POST /contact/sync`.
pub fn sync_body(c: &Contact) -> Value {
    let mut contact = Map::new();
    contact.insert("email".into(), json!(c.email));
    for (key, value) in [
        ("firstName", &c.first_name),
        ("lastName", &c.last_name),
        ("phone", &c.phone),
    ] {
        if let Some(v) = value {
            contact.insert(key.into(), json!(v));
        }
    }
    if !c.field_values.is_empty() {
        let values: Vec<Value> = c
            .field_values
            .iter()
            .map(|(field, value)| json!({"field": field, "value": value}))
            .collect();
        contact.insert("fieldValues".into(), Value::Array(values));
    }
    json!({ "contact": contact })
}

/// `POST /tags`.
pub fn create_tag_body(name: &str) -> Value {
    json!({"tag": {"tag": name, "tagType": "contact", "description": ""}})
}

/// `POST /contactTags`.
pub fn contact_tag_body(contact: &str, tag: &str) -> Value {
    json!({"contactTag": {"contact": contact, "tag": tag}})
}

/// `POST /contactLists` with status 1 (subscribed).
pub fn contact_list_body(contact: &str, list: &str) -> Value {
    json!({"contactList": {"list": list, "contact": contact, "status": 1}})
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
                "sync_contact",
                json!({"email": "{{ payload.email }}", "first_name": "x"}),
            ),
            (
                "add_tag",
                json!({"email": "{{ payload.email }}", "tag": "module-3"}),
            ),
            ("add_to_list", json!({"email": "a@b.io", "list_id": 2})),
            (
                "sync_contact",
                json!({"email": "a@b.io", "field_values": {"12": "{{ payload.pct }}"}}),
            ),
        ];
        for (action, with) in ok {
            assert_eq!(check(action, &with), Ok(()), "{action} {with}");
        }
        let bad = [
            ("sync_contact", json!("x"), "with"),
            ("sync_contact", json!({}), "with.email"),
            ("sync_contact", json!({"email": " "}), "with.email"),
            ("add_tag", json!({"email": "a@b.io"}), "with.tag"),
            ("add_to_list", json!({"email": "a@b.io"}), "with.list_id"),
            (
                "sync_contact",
                json!({"email": "a@b.io", "tag": "x"}),
                "with.tag",
            ),
            (
                "sync_contact",
                json!({"email": "a@b.io", "field_values": {"Score": 1}}),
                "with.field_values.Score",
            ),
            (
                "sync_contact",
                json!({"email": "a@b.io", "field_values": 3}),
                "with.field_values",
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
    fn the_contact_and_its_custom_fields_become_a_sync_body() {
        let with = json!({"email": "nina@academyflow.io", "first_name": "Nina", "last_name": "",
            "field_values": {"12": 62, "13": "Growth Foundations", "14": null}});
        let c = contact(&with).unwrap();
        assert_eq!(c.last_name, None);
        assert_eq!(
            sync_body(&c),
            json!({"contact": {"email": "nina@academyflow.io", "firstName": "Nina",
                "fieldValues": [{"field": "12", "value": "62"}, {"field": "13", "value": "Growth Foundations"}]}})
        );
        let listed = json!({"email": "a@b.io", "field_values": [{"field": 12, "value": "60"}]});
        assert_eq!(
            contact(&listed).unwrap().field_values,
            vec![("12".into(), "60".into())]
        );
    }

    #[test]
    fn missing_values_name_the_field() {
        assert!(
            contact(&json!({"email": ""}))
                .unwrap_err()
                .contains("with.email")
        );
        assert!(contact(&json!({})).unwrap_err().contains("with.email"));
        assert!(
            required(&json!({"email": "a@b.io", "tag": ""}), "tag")
                .unwrap_err()
                .contains("with.tag")
        );
        assert!(
            list_id(&json!({"list_id": "news"}))
                .unwrap_err()
                .contains("with.list_id")
        );
        assert_eq!(list_id(&json!({"list_id": 2})).unwrap(), "2");
    }
}
