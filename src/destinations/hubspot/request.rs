//! Rule arguments → HubSpot batch-upsert inputs. Upserts for the same email in one batch are
//! merged into one input (HubSpot answers a whole batch with 400 "Duplicate IDs" otherwise).

use serde_json::{Map, Value, json};

/// One contact upsert: the properties to set on the contact with this email.
#[derive(Debug, Clone, PartialEq)]
pub struct Upsert {
    /// Trimmed and lowercased: HubSpot stores emails lowercased, and merging needs one key.
    pub email: String,
    /// Property values as HubSpot takes them: strings.
    pub properties: Map<String, Value>,
}

/// Reads the rendered `with` of an `upsert_contact` rule. The error is a reason naming the field.
pub fn upsert(with: &Value) -> Result<Upsert, String> {
    let with = with
        .as_object()
        .ok_or("`with` must be an object with `email` and `properties`")?;
    let email = match with.get("email") {
        Some(Value::String(e)) if !e.trim().is_empty() => e.trim().to_lowercase(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err("`with.email` is missing or rendered empty; no contact to update".into());
        }
        Some(other) => return Err(format!("`with.email` must be a string, got {other}")),
    };
    let mut properties = Map::new();
    match with.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(props)) => {
            for (name, value) in props {
                let value = match value {
                    Value::String(s) => s.clone(),
                    // HubSpot clears a property set to "".
                    Value::Null => String::new(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    Value::Array(_) | Value::Object(_) => {
                        return Err(format!(
                            "`with.properties.{name}` must be a string, number or boolean"
                        ));
                    }
                };
                properties.insert(name.clone(), Value::String(value));
            }
        }
        Some(_) => return Err("`with.properties` must be an object".into()),
    }
    properties.insert("email".into(), Value::String(email.clone()));
    Ok(Upsert { email, properties })
}

/// One input of a batch request and the indexes of the calls merged into it.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub trace_id: String,
    pub upsert: Upsert,
    pub members: Vec<usize>,
}

/// Merges upserts by email, in arrival order: later properties win. The trace id of an input
/// is the first merged call's.
pub fn merge<'a>(calls: impl IntoIterator<Item = (&'a str, &'a Upsert)>) -> Vec<Input> {
    let mut inputs: Vec<Input> = Vec::new();
    for (i, (trace_id, upsert)) in calls.into_iter().enumerate() {
        match inputs.iter_mut().find(|x| x.upsert.email == upsert.email) {
            Some(input) => {
                for (k, v) in &upsert.properties {
                    input.upsert.properties.insert(k.clone(), v.clone());
                }
                input.members.push(i);
            }
            None => inputs.push(Input {
                trace_id: trace_id.to_owned(),
                upsert: upsert.clone(),
                members: vec![i],
            }),
        }
    }
    inputs
}

/// The body of `POST /crm/v3/objects/contacts/batch/upsert`. A trace id on every input turns
/// on HubSpot's multi-status mode, so one bad input fails alone (207) instead of the batch.
pub fn batch_body(inputs: &[Input]) -> Value {
    let inputs: Vec<Value> = inputs
        .iter()
        .map(|input| {
            json!({
                "idProperty": "email",
                "id": input.upsert.email,
                "objectWriteTraceId": input.trace_id,
                "properties": input.upsert.properties,
            })
        })
        .collect();
    json!({ "inputs": inputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_becomes_string_properties_with_the_email() {
        let u = upsert(&json!({
            "email": "  Ada@Example.com ",
            "properties": {"course_progress": 60, "active": true, "note": null, "x": "y"}
        }))
        .unwrap();
        assert_eq!(u.email, "ada@example.com");
        assert_eq!(
            Value::Object(u.properties),
            json!({"course_progress": "60", "active": "true", "note": "", "x": "y",
                   "email": "ada@example.com"})
        );
    }

    #[test]
    fn a_missing_email_or_bad_properties_name_the_field() {
        for (with, field) in [
            (json!({"properties": {}}), "with.email"),
            (json!({"email": "  "}), "with.email"),
            (json!({"email": 3}), "with.email"),
            (
                json!({"email": "a@b.c", "properties": []}),
                "with.properties",
            ),
            (
                json!({"email": "a@b.c", "properties": {"p": {"nested": 1}}}),
                "with.properties.p",
            ),
        ] {
            let reason = upsert(&with).unwrap_err();
            assert!(reason.contains(field), "{with}: {reason}");
        }
    }

    #[test]
    fn duplicate_emails_merge_with_later_properties_winning() {
        let a1 = upsert(&json!({"email": "a@x.io", "properties": {"p": "1", "q": "1"}})).unwrap();
        let b = upsert(&json!({"email": "b@x.io", "properties": {"p": "2"}})).unwrap();
        let a2 = upsert(&json!({"email": "A@x.io", "properties": {"p": "3"}})).unwrap();
        let inputs = merge([("d1", &a1), ("d2", &b), ("d3", &a2)]);
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].trace_id, "d1");
        assert_eq!(inputs[0].members, vec![0, 2]);
        assert_eq!(inputs[0].upsert.properties["p"], "3");
        assert_eq!(inputs[0].upsert.properties["q"], "1");
        assert_eq!(inputs[1].members, vec![1]);
        let body = batch_body(&inputs);
        assert_eq!(body["inputs"][0]["idProperty"], "email");
        assert_eq!(body["inputs"][0]["id"], "a@x.io");
        assert_eq!(body["inputs"][0]["objectWriteTraceId"], "d1");
        assert_eq!(body["inputs"][1]["properties"]["email"], "b@x.io");
    }
}
