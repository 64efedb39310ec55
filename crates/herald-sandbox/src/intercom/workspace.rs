//! The simulated Intercom workspace: what it stores and how each endpoint changes it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

/// Intercom's default per-app limit.
pub const DEFAULT_LIMIT_PER_MINUTE: u32 = 10_000;
/// How long a new contact stays invisible to search unless tuned.
pub const DEFAULT_SEARCH_LAG: Duration = Duration::from_secs(2);
/// Intercom enforces its per-minute limit in windows of this many seconds.
const WINDOW_SECS: u64 = 10;
/// Tokens whose windows are kept; past this the table is reset (a sandbox bound).
const MAX_WINDOWS: usize = 1_000;
/// The API versions the simulator accepts in `Intercom-Version`.
pub(crate) const VERSIONS: &[&str] = &[
    "1.0", "1.1", "1.2", "1.3", "1.4", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7",
    "2.8", "2.9", "2.10", "2.11", "2.12", "2.13", "2.14", "2.15", "2.16", "Unstable",
];

#[derive(Debug, Clone)]
struct Contact {
    id: String,
    external_id: Option<String>,
    email: Option<String>,
    role: String,
    custom_attributes: Map<String, Value>,
    tags: Vec<u64>,
    created: Instant,
    created_at: i64,
}

/// The simulated workspace.
#[derive(Debug)]
pub struct State {
    contacts: Vec<Contact>,
    /// (id, name)
    tags: Vec<(u64, String)>,
    next_id: u64,
    search_lag: Duration,
    limit_per_minute: u32,
    /// Per token: (start of the current window in Unix seconds, requests in it).
    windows: HashMap<String, (u64, u32)>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            contacts: Vec::new(),
            tags: Vec::new(),
            next_id: 0,
            search_lag: DEFAULT_SEARCH_LAG,
            limit_per_minute: DEFAULT_LIMIT_PER_MINUTE,
            windows: HashMap::new(),
        }
    }
}

/// The rate-limit headers of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateHeaders {
    pub(crate) fn apply(self, response: &mut Response) {
        let h = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
        ] {
            // Decimal digits are always a valid header value.
            h.insert(name, value.parse().expect("digits"));
        }
    }
}

impl State {
    /// Forgets contacts and tags, keeping the tuning.
    pub(crate) fn reset(&mut self) {
        *self = Self {
            search_lag: self.search_lag,
            limit_per_minute: self.limit_per_minute,
            ..Self::default()
        };
    }

    /// The per-window limit: the per-minute limit spread over six 10-second windows.
    fn window_limit(&self) -> u32 {
        self.limit_per_minute.div_ceil(6).max(1)
    }

    /// Counts one request of `token` at `now_unix` seconds: `Ok` with the headers to send, or
    /// `Err` with the headers of a 429.
    pub(crate) fn admit(&mut self, token: &str, now_unix: u64) -> Result<RateHeaders, RateHeaders> {
        let limit = self.window_limit();
        let start = now_unix - now_unix % WINDOW_SECS;
        if self.windows.len() >= MAX_WINDOWS && !self.windows.contains_key(token) {
            self.windows.clear();
        }
        let window = self.windows.entry(token.to_owned()).or_insert((start, 0));
        if window.0 != start {
            *window = (start, 0);
        }
        let reset = start + WINDOW_SECS;
        if window.1 >= limit {
            return Err(RateHeaders {
                limit,
                remaining: 0,
                reset,
            });
        }
        window.1 += 1;
        Ok(RateHeaders {
            limit,
            remaining: limit - window.1,
            reset,
        })
    }

    /// Everything stored, for `GET /_sandbox/state`.
    pub(crate) fn snapshot(&self) -> Value {
        json!({
            "contacts": self.contacts.iter().map(|c| self.contact_json(c)).collect::<Vec<_>>(),
            "tags": self.tags.iter().map(|(id, name)| json!({"type": "tag", "id": id.to_string(), "name": name})).collect::<Vec<_>>(),
        })
    }

    fn contact_json(&self, c: &Contact) -> Value {
        let tags: Vec<Value> = c
            .tags
            .iter()
            .filter_map(|t| self.tags.iter().find(|(id, _)| id == t))
            .map(|(id, name)| json!({"type": "tag", "id": id.to_string(), "name": name}))
            .collect();
        json!({
            "type": "contact", "id": c.id, "workspace_id": "sandbox", "external_id": c.external_id,
            "role": c.role, "email": c.email, "custom_attributes": c.custom_attributes,
            "created_at": c.created_at, "updated_at": chrono::Utc::now().timestamp(),
            "tags": {"type": "list", "data": tags, "total_count": tags.len()},
        })
    }
}

/// A status and a JSON body.
pub(crate) type Answer = (StatusCode, Value);

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    (
        status,
        json!({"type": "error.list", "request_id": uuid::Uuid::now_v7().to_string(),
            "errors": [{"code": code, "message": message}]}),
    )
}

fn ok(body: Value) -> Answer {
    (StatusCode::OK, body)
}

fn user_not_found() -> Answer {
    error(StatusCode::NOT_FOUND, "not_found", "User Not Found")
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl State {
    /// `PUT /_sandbox/intercom`: the search lag and the per-minute limit.
    pub(crate) fn tune(
        &mut self,
        search_lag: Option<Duration>,
        limit_per_minute: Option<u32>,
    ) -> Answer {
        if let Some(lag) = search_lag {
            self.search_lag = lag;
        }
        if let Some(limit) = limit_per_minute {
            self.limit_per_minute = limit.max(1);
        }
        ok(json!({"search_lag_ms": self.search_lag.as_millis() as u64,
            "limit_per_minute": self.limit_per_minute, "limit_per_10_seconds": self.window_limit()}))
    }

    /// `GET /contacts/{id}`.
    pub(crate) fn get(&self, id: &str) -> Answer {
        match self.contacts.iter().find(|c| c.id == id) {
            Some(c) => ok(self.contact_json(c)),
            None => user_not_found(),
        }
    }

    /// `DELETE /contacts/{id}`.
    pub(crate) fn delete(&mut self, id: &str) -> Answer {
        match self.contacts.iter().position(|c| c.id == id) {
            Some(i) => {
                self.contacts.remove(i);
                ok(json!({"id": id, "object": "contact", "deleted": true}))
            }
            None => user_not_found(),
        }
    }

    /// `POST /contacts/search` with one `field = value` query on `id`, `external_id` or `email`.
    pub(crate) fn search(&self, request: &Value) -> Answer {
        let query = &request["query"];
        let field = query["field"].as_str().unwrap_or("");
        let operator = query["operator"].as_str().unwrap_or("");
        let Some(value) = text(query.get("value")) else {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "query.value is required",
            );
        };
        if operator != "=" || !matches!(field, "id" | "external_id" | "email") {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "The sandbox searches only `id`, `external_id` or `email` with operator `=`",
            );
        }
        let now = Instant::now();
        let data: Vec<Value> = self
            .contacts
            .iter()
            .filter(|c| now.saturating_duration_since(c.created) >= self.search_lag)
            .filter(|c| match field {
                "id" => c.id == value,
                "external_id" => c.external_id.as_deref() == Some(value.as_str()),
                _ => c
                    .email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(&value)),
            })
            .map(|c| self.contact_json(c))
            .collect();
        ok(
            json!({"type": "list", "data": data, "total_count": data.len(),
            "pages": {"type": "pages", "page": 1, "per_page": 50, "total_pages": 1}}),
        )
    }

    /// `POST /contacts`: 409 when the email or external_id is taken.
    pub(crate) fn create(&mut self, request: &Value) -> Answer {
        let email = text(request.get("email"));
        let external_id = text(request.get("external_id"));
        let role = request["role"].as_str().unwrap_or("user").to_owned();
        if email.is_none() && external_id.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "A contact of role user needs an email or an external_id",
            );
        }
        if let Some(e) = &email
            && (!e.contains('@') || e.contains(char::is_whitespace))
        {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "Email address is invalid",
            );
        }
        let taken = self.contacts.iter().find(|c| {
            let same_email =
                matches!((&c.email, &email), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
            let same_external =
                matches!((&c.external_id, &external_id), (Some(a), Some(b)) if a == b);
            same_email || same_external
        });
        if let Some(c) = taken {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                &format!(
                    "A contact matching those details already exists with id={}",
                    c.id
                ),
            );
        }
        if let Err(response) = check_attributes(request.get("custom_attributes")) {
            return response;
        }
        self.next_id += 1;
        let contact = Contact {
            id: format!("{:024x}", 0x6650_0000_0000_0000_u64 + self.next_id),
            external_id,
            email,
            role,
            custom_attributes: request["custom_attributes"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            tags: Vec::new(),
            created: Instant::now(),
            created_at: chrono::Utc::now().timestamp(),
        };
        let body = self.contact_json(&contact);
        self.contacts.push(contact);
        ok(body)
    }

    /// `PUT /contacts/{id}`: merges `custom_attributes`, sets `email` / `external_id`.
    pub(crate) fn update(&mut self, id: &str, request: &Value) -> Answer {
        if let Err(response) = check_attributes(request.get("custom_attributes")) {
            return response;
        }
        let Some(i) = self.contacts.iter().position(|c| c.id == id) else {
            return user_not_found();
        };
        let contact = &mut self.contacts[i];
        if let Some(attrs) = request["custom_attributes"].as_object() {
            contact
                .custom_attributes
                .extend(attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        if let Some(e) = text(request.get("email")) {
            contact.email = Some(e);
        }
        if let Some(x) = text(request.get("external_id")) {
            contact.external_id = Some(x);
        }
        ok(self.contact_json(&self.contacts[i]))
    }

    /// `POST /tags`: creates the tag unless one has the name; tags `users` when given.
    pub(crate) fn create_tag(&mut self, request: &Value) -> Answer {
        let Some(name) = text(request.get("name")).filter(|n| !n.trim().is_empty()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                "invalid tag parameters",
            );
        };
        let id = match self.tags.iter().find(|(_, n)| *n == name) {
            Some((id, _)) => *id,
            None => {
                self.next_id += 1;
                self.tags.push((self.next_id, name.clone()));
                self.next_id
            }
        };
        if let Some(users) = request["users"].as_array() {
            for user in users {
                let uid = text(user.get("id")).unwrap_or_default();
                let Some(c) = self.contacts.iter_mut().find(|c| c.id == uid) else {
                    return user_not_found();
                };
                if !c.tags.contains(&id) {
                    c.tags.push(id);
                }
            }
        }
        ok(json!({"type": "tag", "id": id.to_string(), "name": name}))
    }

    /// `POST /contacts/{id}/tags` with `{"id": tag}`; tagging twice is harmless.
    pub(crate) fn tag_contact(&mut self, contact: &str, request: &Value) -> Answer {
        let tag = text(request.get("id")).and_then(|t| t.parse::<u64>().ok());
        let Some((tag, name)) =
            tag.and_then(|t| self.tags.iter().find(|(id, _)| *id == t).cloned())
        else {
            return error(StatusCode::NOT_FOUND, "not_found", "Resource Not Found");
        };
        let Some(c) = self.contacts.iter_mut().find(|c| c.id == contact) else {
            return user_not_found();
        };
        if !c.tags.contains(&tag) {
            c.tags.push(tag);
        }
        ok(json!({"type": "tag", "id": tag.to_string(), "name": name,
            "applied_at": chrono::Utc::now().timestamp(), "applied_by": {"type": "admin", "id": "1"}}))
    }
}

/// Custom attributes must be defined in Intercom first; here every name is, except those
/// starting with `undefined_`.
fn check_attributes(attrs: Option<&Value>) -> Result<(), Answer> {
    match attrs {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(map)) => match map.keys().find(|k| k.starts_with("undefined_")) {
            Some(name) => Err(error(
                StatusCode::BAD_REQUEST,
                "parameter_invalid",
                &format!("Custom attribute '{name}' does not exist"),
            )),
            None => Ok(()),
        },
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "parameter_invalid",
            "custom_attributes must be an object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minute_limit_is_enforced_in_ten_second_windows() {
        let mut state = State {
            limit_per_minute: 60,
            ..State::default()
        };
        let t = 1_700_000_003;
        for i in 0..10 {
            let h = state.admit("tok", t).unwrap();
            assert_eq!((h.limit, h.remaining, h.reset), (10, 9 - i, 1_700_000_010));
        }
        let refused = state.admit("tok", t + 5).unwrap_err();
        assert_eq!((refused.remaining, refused.reset), (0, 1_700_000_010));
        assert!(state.admit("other", t).is_ok(), "windows are per token");
        assert_eq!(state.admit("tok", t + 7).unwrap().remaining, 9);
        assert_eq!(State::default().window_limit(), 1_667);
    }

    #[test]
    fn search_hides_new_contacts_until_the_lag_passes() {
        let mut state = State::default();
        let (status, created) =
            state.create(&json!({"role": "user", "external_id": "u1", "email": "a@b.io"}));
        assert_eq!(status, StatusCode::OK);
        let q = json!({"query": {"field": "external_id", "operator": "=", "value": "u1"}});
        let (status, found) = state.search(&q);
        assert_eq!((status, &found["total_count"]), (StatusCode::OK, &json!(0)));
        state.search_lag = Duration::ZERO;
        let (_, found) = state.search(&q);
        assert_eq!(found["data"][0]["id"], created["id"]);
        let q = json!({"query": {"field": "email", "operator": "=", "value": "A@B.io"}});
        assert_eq!(state.search(&q).1["total_count"], 1);
    }

    #[test]
    fn a_second_create_conflicts_with_the_first_ones_id() {
        let mut state = State::default();
        state.create(&json!({"email": "a@b.io"}));
        let id = state.contacts[0].id.clone();
        let (status, again) = state.create(&json!({"email": "A@b.io", "external_id": "u9"}));
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            again["errors"][0]["message"],
            format!("A contact matching those details already exists with id={id}")
        );
        assert_eq!(state.contacts.len(), 1);
    }

    #[test]
    fn tags_are_created_once_by_name_and_applied_once() {
        let mut state = State::default();
        state.create(&json!({"email": "a@b.io"}));
        let id = state.contacts[0].id.clone();
        state.create_tag(&json!({"name": "step-3"}));
        state.create_tag(&json!({"name": "step-3"}));
        assert_eq!(state.tags.len(), 1);
        let tag = json!({"id": state.tags[0].0.to_string()});
        assert_eq!(state.tag_contact(&id, &tag).0, StatusCode::OK);
        assert_eq!(state.tag_contact(&id, &tag).0, StatusCode::OK);
        assert_eq!(state.contacts[0].tags.len(), 1);
        assert_eq!(state.tag_contact("nope", &tag).0, StatusCode::NOT_FOUND);
        assert_eq!(
            state.tag_contact(&id, &json!({"id": "999"})).1["errors"][0]["message"],
            "Resource Not Found"
        );
        let undefined = json!({"custom_attributes": {"undefined_x": 1}});
        let (status, body) = state.update(&id, &undefined);
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body["errors"][0]["message"],
            "Custom attribute 'undefined_x' does not exist"
        );
    }
}
