//! The three actions, step by step. A retry repeats every step; each is written so that
//! repeating it changes nothing: the sync upserts by email, tags are found before they are
//! created, and "already tagged" / "already exists" answers count as done.

use reqwest::Method;
use serde_json::Value;

use super::{ActiveCampaign, fail_on, request};
use crate::destinations::steps::{Step, permanent};
use crate::destinations::{Attempted, Outcome};

/// Tag search pages read before giving up on finding an exact name (100 tags each).
const MAX_TAG_PAGES: usize = 10;

/// An id given as a string or a number.
fn id_at(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unexpected(status: u16, what: &str, body: &Value) -> Attempted {
    crate::destinations::steps::unexpected("ActiveCampaign", status, what, body)
}

impl ActiveCampaign {
    /// `sync_contact`, and the first step of the others: the contact's id.
    async fn sync(&self, with: &Value) -> Step<(u16, String)> {
        let contact = request::contact(with).map_err(permanent)?;
        let body = request::sync_body(&contact);
        let (status, reply) = self
            .step(Method::POST, "contact/sync", &[], Some(&body))
            .await?;
        let id =
            id_at(&reply, "/contact/id").ok_or_else(|| unexpected(status, "contact id", &reply))?;
        Ok((status, id))
    }

    pub(super) async fn sync_contact(&self, with: &Value) -> Step<u16> {
        self.sync(with).await.map(|(status, _)| status)
    }

    pub(super) async fn add_to_list(&self, with: &Value) -> Step<u16> {
        let list = request::list_id(with).map_err(permanent)?;
        let (_, contact) = self.sync(with).await?;
        let body = request::contact_list_body(&contact, &list);
        let (status, _) = self
            .step(Method::POST, "contactLists", &[], Some(&body))
            .await?;
        Ok(status)
    }

    pub(super) async fn add_tag(&self, with: &Value) -> Step<u16> {
        let name = request::required(with, "tag").map_err(permanent)?;
        let (_, contact) = self.sync(with).await?;
        let (mut tag, mut cached) = match self.tags.get(&name) {
            Some(id) => (id, true),
            None => (self.find_or_create_tag(&name).await?, false),
        };
        loop {
            let body = request::contact_tag_body(&contact, &tag);
            let reply = self
                .request(Method::POST, "contactTags", &[], Some(&body))
                .await?;
            if reply.is_duplicate() {
                // Tagged already (an earlier attempt got this far): done.
                return Ok(reply.status);
            }
            if cached && matches!(reply.status, 404 | 422) {
                // The cached tag may have been deleted in ActiveCampaign: look it up afresh,
                // once.
                self.tags.forget(&name);
                tag = self.find_or_create_tag(&name).await?;
                cached = false;
                continue;
            }
            return fail_on(&reply).map(|_| reply.status);
        }
    }

    /// The tag's id: found by name, or created. A create answered "duplicate" (another
    /// worker, or an earlier attempt, made it meanwhile) is resolved by looking again.
    async fn find_or_create_tag(&self, name: &str) -> Step<String> {
        if let Some(id) = self.find_tag(name, false).await? {
            self.tags.insert(name, &id);
            return Ok(id);
        }
        let body = request::create_tag_body(name);
        let reply = self.request(Method::POST, "tags", &[], Some(&body)).await?;
        let id = if reply.is_duplicate() {
            // AC compares names case-insensitively on create; accept such a match here.
            self.find_tag(name, true).await?.ok_or_else(|| Attempted {
                outcome: Outcome::Retry {
                    after: None,
                    reason: format!(
                        "ActiveCampaign says tag `{name}` exists but searching for it finds no such tag"
                    ),
                },
                status_code: Some(reply.status),
            })?
        } else {
            let created = fail_on(&reply)?;
            id_at(&created, "/tag/id")
                .ok_or_else(|| unexpected(reply.status, "tag id", &created))?
        };
        self.tags.insert(name, &id);
        Ok(id)
    }

    /// Searches tags by name ("contains") and picks the exact match.
    async fn find_tag(&self, name: &str, ignore_case: bool) -> Step<Option<String>> {
        let same = |tag: &str| {
            if ignore_case {
                tag.eq_ignore_ascii_case(name)
            } else {
                tag == name
            }
        };
        for page in 0..MAX_TAG_PAGES {
            let offset = (page * 100).to_string();
            let query = [
                ("search", name),
                ("limit", "100"),
                ("offset", offset.as_str()),
            ];
            let (_, found) = self.step(Method::GET, "tags", &query, None).await?;
            let tags = found["tags"].as_array().cloned().unwrap_or_default();
            if let Some(tag) = tags.iter().find(|t| t["tag"].as_str().is_some_and(same)) {
                return Ok(id_at(tag, "/id"));
            }
            let total = match &found["meta"]["total"] {
                Value::String(s) => s.parse().unwrap_or(0),
                Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
                _ => 0,
            };
            if tags.is_empty() || (page + 1) * 100 >= total {
                break;
            }
        }
        Ok(None)
    }
}
