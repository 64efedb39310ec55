//! The simulated ActiveCampaign account: what it stores and how each endpoint changes it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

/// Requests per second per token, as ActiveCampaign enforces per account.
pub const REQUESTS_PER_SECOND: u32 = 5;
/// Tokens whose rate-limit buckets are kept; past this the table is reset (a sandbox bound).
const MAX_BUCKETS: usize = 1_000;
/// The token that makes the simulator answer with the HTML login page.
pub const HTML_LOGIN_TOKEN: &str = "html-login";

#[derive(Debug, Clone)]
struct Contact {
    id: u64,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    fields: BTreeMap<String, String>,
}

/// The simulated account.
#[derive(Debug)]
pub struct State {
    contacts: Vec<Contact>,
    /// (id, name)
    tags: Vec<(u64, String)>,
    /// (id, contact, tag)
    contact_tags: Vec<(u64, u64, u64)>,
    /// (id, name)
    lists: Vec<(u64, String)>,
    /// (id, contact, list, status)
    contact_lists: Vec<(u64, u64, u64, u8)>,
    next_id: u64,
    /// Token bucket per token: (tokens left, when last refilled).
    buckets: HashMap<String, (f64, Instant)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            contacts: Vec::new(),
            tags: Vec::new(),
            contact_tags: Vec::new(),
            lists: vec![(1, "Newsletter".into()), (2, "Next lessons".into())],
            contact_lists: Vec::new(),
            next_id: 100,
            buckets: HashMap::new(),
        }
    }
}

impl State {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Takes one request from `token`'s bucket (5 per second, no burst beyond that), or says
    /// how long until one is free.
    pub(crate) fn admit(&mut self, token: &str, now: Instant) -> Result<u32, Duration> {
        let rate = f64::from(REQUESTS_PER_SECOND);
        if self.buckets.len() >= MAX_BUCKETS && !self.buckets.contains_key(token) {
            self.buckets.clear();
        }
        let (tokens, last) = self.buckets.entry(token.to_owned()).or_insert((rate, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(*tokens as u32)
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }

    /// Everything stored, for `GET /_sandbox/state`.
    pub(crate) fn snapshot(&self) -> Value {
        json!({
            "contacts": self.contacts.iter().map(contact_json).collect::<Vec<_>>(),
            "tags": self.tags.iter().map(|(id, name)| tag_json(*id, name)).collect::<Vec<_>>(),
            "contact_tags": self.contact_tags.iter()
                .map(|(id, c, t)| json!({"id": id.to_string(), "contact": c.to_string(), "tag": t.to_string()}))
                .collect::<Vec<_>>(),
            "lists": self.lists.iter()
                .map(|(id, name)| json!({"id": id.to_string(), "name": name}))
                .collect::<Vec<_>>(),
            "contact_lists": self.contact_lists.iter()
                .map(|(id, c, l, s)| json!({"id": id.to_string(), "contact": c.to_string(), "list": l.to_string(), "status": s.to_string()}))
                .collect::<Vec<_>>(),
        })
    }
}

fn contact_json(c: &Contact) -> Value {
    let now = chrono::Utc::now().to_rfc3339();
    json!({
        "id": c.id.to_string(), "email": c.email, "firstName": c.first_name.clone().unwrap_or_default(),
        "lastName": c.last_name.clone().unwrap_or_default(), "phone": c.phone.clone().unwrap_or_default(),
        "fieldValues": c.fields, "cdate": now, "udate": now, "links": {},
    })
}

fn tag_json(id: u64, name: &str) -> Value {
    json!({"tagType": "contact", "tag": name, "description": "", "cdate": chrono::Utc::now().to_rfc3339(), "links": {}, "id": id.to_string()})
}

/// A status and a JSON body.
pub(super) type Answer = (StatusCode, Value);

pub(super) fn reply(status: StatusCode, body: Value) -> Answer {
    (status, body)
}

fn errors(status: StatusCode, title: &str, code: &str, pointer: &str) -> Answer {
    reply(
        status,
        json!({"errors": [{"title": title, "detail": "", "code": code, "source": {"pointer": pointer}}]}),
    )
}

fn not_found(what: &str, id: &str) -> Answer {
    reply(
        StatusCode::NOT_FOUND,
        json!({"message": format!("No Result found for {what} with id {id}")}),
    )
}

/// Plausible enough for a simulator: one `@`, a dot in the domain, no spaces.
fn valid_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// An id given as a number or a numeric string.
fn id_of(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl State {
    /// `POST /contact/sync`: create or update by email.
    pub(crate) fn sync(&mut self, request: &Value) -> Answer {
        let Some(c) = request.get("contact").filter(|c| c.is_object()) else {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Missing attribute",
                "missing_attribute",
                "/data/attributes/contact",
            );
        };
        let email = text_of(c.get("email")).unwrap_or_default();
        if !valid_email(&email) {
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": [{"title": "Contact Email Address is not valid.", "detail": "",
                    "code": "email_invalid", "error": "must_be_valid_email_address",
                    "source": {"pointer": "/data/attributes/email"}}]}),
            );
        }
        let mut fields = BTreeMap::new();
        if let Some(values) = c.get("fieldValues").and_then(Value::as_array) {
            for fv in values {
                match (id_of(fv.get("field")), text_of(fv.get("value"))) {
                    (Some(field), Some(value)) => {
                        fields.insert(field.to_string(), value);
                    }
                    _ => {
                        return errors(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Field value is missing its field id or value",
                            "field_invalid",
                            "/data/attributes/fieldValues",
                        );
                    }
                }
            }
        }
        let existing = self
            .contacts
            .iter()
            .position(|x| x.email.eq_ignore_ascii_case(&email));
        let (status, index) = match existing {
            Some(i) => (StatusCode::OK, i),
            None => {
                let id = self.id();
                self.contacts.push(Contact {
                    id,
                    email: email.clone(),
                    first_name: None,
                    last_name: None,
                    phone: None,
                    fields: BTreeMap::new(),
                });
                (StatusCode::CREATED, self.contacts.len() - 1)
            }
        };
        let contact = &mut self.contacts[index];
        if let Some(v) = text_of(c.get("firstName")) {
            contact.first_name = Some(v);
        }
        if let Some(v) = text_of(c.get("lastName")) {
            contact.last_name = Some(v);
        }
        if let Some(v) = text_of(c.get("phone")) {
            contact.phone = Some(v);
        }
        contact.fields.extend(fields);
        let field_values: Vec<Value> = contact
            .fields
            .iter()
            .map(|(f, v)| json!({"contact": contact.id.to_string(), "field": f, "value": v}))
            .collect();
        reply(
            status,
            json!({"fieldValues": field_values, "contact": contact_json(contact)}),
        )
    }

    /// `GET /tags?search=` ("contains") or `filters[search][eq]=` (exact), with `limit`/`offset`.
    pub(crate) fn find_tags(&self, query: &HashMap<String, String>) -> Answer {
        let contains = query.get("search").map(|s| s.to_lowercase());
        let exact = query.get("filters[search][eq]");
        let limit = query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(20)
            .min(100);
        let offset = query
            .get("offset")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        let matching: Vec<&(u64, String)> = self
            .tags
            .iter()
            .filter(|(_, name)| {
                contains
                    .as_ref()
                    .is_none_or(|s| name.to_lowercase().contains(s))
            })
            .filter(|(_, name)| exact.is_none_or(|e| name == e))
            .collect();
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(id, name)| tag_json(*id, name))
            .collect();
        reply(
            StatusCode::OK,
            json!({"tags": page, "meta": {"total": matching.len().to_string()}}),
        )
    }

    /// `POST /tags`.
    pub(crate) fn create_tag(&mut self, request: &Value) -> Answer {
        let name = text_of(request.pointer("/tag/tag")).unwrap_or_default();
        if name.trim().is_empty() {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Missing attribute",
                "missing_attribute",
                "/data/attributes/tag",
            );
        }
        if self.tags.iter().any(|(_, n)| n.eq_ignore_ascii_case(&name)) {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Tag name already exists",
                "duplicate",
                "/data/attributes/tag",
            );
        }
        let id = self.id();
        self.tags.push((id, name.clone()));
        reply(StatusCode::CREATED, json!({"tag": tag_json(id, &name)}))
    }

    /// `POST /contactTags`.
    pub(crate) fn contact_tag(&mut self, request: &Value) -> Answer {
        let contact = id_of(request.pointer("/contactTag/contact"));
        let tag = id_of(request.pointer("/contactTag/tag"));
        let (Some(contact), Some(tag)) = (contact, tag) else {
            let attr = if contact.is_none() { "contact" } else { "tag" };
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": [{"status": 422, "title": "Missing attribute",
                    "source": {"pointer": format!("/data/attributes/{attr}")}}]}),
            );
        };
        if !self.contacts.iter().any(|c| c.id == contact) {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"errors": [{"status": 404, "title": "Not Found", "detail": "Contact not found"}]}),
            );
        }
        if !self.tags.iter().any(|(id, _)| *id == tag) {
            return reply(
                StatusCode::NOT_FOUND,
                json!({"errors": [{"status": 404, "title": "Not Found", "detail": "Tag not found"}]}),
            );
        }
        if self
            .contact_tags
            .iter()
            .any(|(_, c, t)| *c == contact && *t == tag)
        {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The contact already has this tag",
                "duplicate",
                "/data/attributes/tag",
            );
        }
        let id = self.id();
        self.contact_tags.push((id, contact, tag));
        reply(
            StatusCode::CREATED,
            json!({"contactTag": {"cdate": chrono::Utc::now().to_rfc3339(), "contact": contact.to_string(),
                "id": id.to_string(), "links": {}, "tag": tag.to_string()}}),
        )
    }

    /// `POST /contactLists`: subscribe (1) or unsubscribe (2); one row per contact and list.
    pub(crate) fn contact_list(&mut self, request: &Value) -> Answer {
        let raw_list = text_of(request.pointer("/contactList/list")).unwrap_or_default();
        let raw_contact = text_of(request.pointer("/contactList/contact")).unwrap_or_default();
        let status = id_of(request.pointer("/contactList/status"));
        let (Some(list), Some(contact), Some(status @ (1 | 2))) = (
            raw_list.parse::<u64>().ok(),
            raw_contact.parse::<u64>().ok(),
            status,
        ) else {
            return errors(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Missing or invalid attribute (list, contact, status 1 or 2)",
                "invalid",
                "/data/attributes/contactList",
            );
        };
        if !self.lists.iter().any(|(id, _)| *id == list) {
            return not_found("List", &raw_list);
        }
        let Some(c) = self.contacts.iter().find(|c| c.id == contact).cloned() else {
            return not_found("Subscriber", &raw_contact);
        };
        let status = status as u8;
        let id = match self
            .contact_lists
            .iter_mut()
            .find(|(_, c, l, _)| *c == contact && *l == list)
        {
            Some(row) => {
                row.3 = status;
                row.0
            }
            None => {
                let id = self.id();
                self.contact_lists.push((id, contact, list, status));
                id
            }
        };
        reply(
            StatusCode::CREATED,
            json!({"contacts": [contact_json(&c)], "contactList": {"contact": contact.to_string(),
                "list": list.to_string(), "status": status.to_string(), "id": id.to_string(), "links": {}}}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_admits_five_per_second_per_token() {
        let mut state = State::default();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(state.admit("a", t0).is_ok());
        }
        let wait = state.admit("a", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(200), "{wait:?}");
        assert!(state.admit("b", t0).is_ok(), "buckets are per token");
        assert!(state.admit("a", t0 + Duration::from_millis(200)).is_ok());
        assert!(state.admit("a", t0 + Duration::from_millis(200)).is_err());
        assert!(state.admit("a", t0 + Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn sync_upserts_by_email_and_rejects_invalid_ones() {
        let mut state = State::default();
        let body = json!({"contact": {"email": "nina@academyflow.io", "firstName": "Nina",
            "fieldValues": [{"field": "12", "value": "60"}]}});
        assert_eq!(state.sync(&body).0, StatusCode::CREATED);
        let body = json!({"contact": {"email": "NINA@academyflow.io", "lastName": "K"}});
        assert_eq!(state.sync(&body).0, StatusCode::OK);
        let snap = state.snapshot();
        assert_eq!(snap["contacts"].as_array().unwrap().len(), 1);
        assert_eq!(snap["contacts"][0]["firstName"], "Nina");
        assert_eq!(snap["contacts"][0]["lastName"], "K");
        assert_eq!(snap["contacts"][0]["fieldValues"]["12"], "60");
        let bad = json!({"contact": {"email": "not-an-email"}});
        assert_eq!(state.sync(&bad).0, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn tags_are_unique_by_name_and_contact_tags_by_pair() {
        let mut state = State::default();
        state.sync(&json!({"contact": {"email": "a@b.io"}}));
        let contact = state.contacts[0].id;
        assert_eq!(
            state
                .create_tag(&json!({"tag": {"tag": "module-3", "tagType": "contact"}}))
                .0,
            StatusCode::CREATED
        );
        assert_eq!(
            state.create_tag(&json!({"tag": {"tag": "Module-3"}})).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let tag = state.tags[0].0;
        let link = json!({"contactTag": {"contact": contact.to_string(), "tag": tag.to_string()}});
        assert_eq!(state.contact_tag(&link).0, StatusCode::CREATED);
        assert_eq!(state.contact_tag(&link).0, StatusCode::UNPROCESSABLE_ENTITY);
        let unknown = json!({"contactTag": {"contact": "9999", "tag": tag.to_string()}});
        assert_eq!(state.contact_tag(&unknown).0, StatusCode::NOT_FOUND);
        assert_eq!(state.contact_tags.len(), 1);
    }

    #[test]
    fn lists_one_and_two_exist_and_others_are_not_found() {
        let mut state = State::default();
        state.sync(&json!({"contact": {"email": "a@b.io"}}));
        let contact = state.contacts[0].id.to_string();
        let sub =
            |list: &str| json!({"contactList": {"list": list, "contact": contact, "status": 1}});
        assert_eq!(state.contact_list(&sub("2")).0, StatusCode::CREATED);
        assert_eq!(state.contact_list(&sub("2")).0, StatusCode::CREATED);
        assert_eq!(state.contact_lists.len(), 1);
        assert_eq!(state.contact_list(&sub("99")).0, StatusCode::NOT_FOUND);
    }
}
