//! The two actions, step by step. A retry repeats every step; none of them creates anything
//! twice: the contact is searched before it is created and a 409 on create names the existing
//! one; `POST /tags` creates or fetches by name; tagging and `PUT` are idempotent.

use reqwest::Method;
use serde_json::{Value, json};

use super::request::{self, Identity};
use super::{Intercom, fail_on};
use crate::destinations::Attempted;
use crate::destinations::steps::{Step, permanent};

/// An id usable as a path segment (Intercom's ids are hex or decimal).
fn id_of(v: &Value) -> Option<String> {
    let id = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let safe = !id.is_empty()
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    safe.then_some(id)
}

fn unexpected(status: u16, what: &str, body: &Value) -> Attempted {
    crate::destinations::steps::unexpected("Intercom", status, what, body)
}

impl Intercom {
    pub(super) async fn tag_contact(&self, with: &Value) -> Step<u16> {
        let who = request::identity(with).map_err(permanent)?;
        let name = request::tag(with).map_err(permanent)?;
        let mut contact = self.find_or_create(&who).await?;
        let mut tag = match self.tags.get(&name) {
            Some(id) => id,
            None => self.upsert_tag(&name).await?,
        };
        let (mut refound, mut retagged) = (false, false);
        loop {
            let body = json!({ "id": tag });
            let path = format!("contacts/{contact}/tags");
            let reply = self.request(Method::POST, &path, Some(&body)).await?;
            if reply.is_user_not_found() && !refound {
                // Deleted or merged since we found it: look again, once.
                refound = true;
                contact = self.find_or_create(&who).await?;
                continue;
            }
            if reply.is_resource_not_found() && !retagged {
                // The cached tag was deleted in Intercom: fetch it by name again, once.
                retagged = true;
                self.tags.forget(&name);
                tag = self.upsert_tag(&name).await?;
                continue;
            }
            return fail_on(&reply).map(|_| reply.status);
        }
    }

    pub(super) async fn update_attributes(&self, with: &Value) -> Step<u16> {
        let who = request::identity(with).map_err(permanent)?;
        let attributes = request::attributes(with).map_err(permanent)?;
        let body = json!({ "custom_attributes": attributes });
        let mut contact = self.find_or_create(&who).await?;
        let mut refound = false;
        loop {
            let path = format!("contacts/{contact}");
            let reply = self.request(Method::PUT, &path, Some(&body)).await?;
            if reply.is_user_not_found() && !refound {
                refound = true;
                contact = self.find_or_create(&who).await?;
                continue;
            }
            return fail_on(&reply).map(|_| reply.status);
        }
    }

    /// The contact's id: by external_id, then by email, else created. Exactly one match
    /// counts as found; none or several leads to a create, whose 409 names the contact.
    async fn find_or_create(&self, who: &Identity) -> Step<String> {
        for (field, value) in [("external_id", &who.external_id), ("email", &who.email)] {
            let Some(value) = value else { continue };
            let body = request::search_body(field, value);
            let reply = self
                .request(Method::POST, "contacts/search", Some(&body))
                .await?;
            let found = fail_on(&reply)?;
            if let [one] = found["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                return id_of(&one["id"])
                    .ok_or_else(|| unexpected(reply.status, "contact id", &found));
            }
        }
        let body = request::create_body(who);
        let reply = self.request(Method::POST, "contacts", Some(&body)).await?;
        if let Some(id) = reply.conflict_id() {
            return Ok(id);
        }
        let created = fail_on(&reply)?;
        id_of(&created["id"]).ok_or_else(|| unexpected(reply.status, "contact id", &created))
    }

    /// `POST /tags` creates the tag or returns the one with that name.
    async fn upsert_tag(&self, name: &str) -> Step<String> {
        let body = json!({ "name": name });
        let reply = self.request(Method::POST, "tags", Some(&body)).await?;
        let tag = fail_on(&reply)?;
        let id = id_of(&tag["id"]).ok_or_else(|| unexpected(reply.status, "tag id", &tag))?;
        self.tags.insert(name, &id);
        Ok(id)
    }
}
