//! Tag ids by name, cached per connection, for destinations that tag contacts by tag id
//! (ActiveCampaign, Intercom): one lookup per tag name instead of one per delivery.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// Tag ids remembered per connection; past this the cache starts over.
pub const MAX_CACHED_TAGS: usize = 10_000;

/// Tag name → tag id, at most [`MAX_CACHED_TAGS`] of them.
#[derive(Debug, Default)]
pub struct TagCache {
    ids: Mutex<HashMap<String, String>>,
}

impl TagCache {
    /// The cached id of tag `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    /// Remembers that tag `name` has id `id`.
    pub fn insert(&self, name: &str, id: &str) {
        let mut ids = self.lock();
        if ids.len() >= MAX_CACHED_TAGS {
            ids.clear();
        }
        ids.insert(name.to_owned(), id.to_owned());
    }

    /// Forgets tag `name` (it was deleted in the tool).
    pub fn forget(&self, name: &str) {
        self.lock().remove(name);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, String>> {
        // A poisoned lock means a panic while inserting; the map is still whole.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_starts_over_when_full() {
        let cache = TagCache::default();
        for i in 0..MAX_CACHED_TAGS {
            cache.insert(&format!("t{i}"), &i.to_string());
        }
        assert_eq!(cache.get("t0").as_deref(), Some("0"));
        cache.insert("one-more", "x");
        assert_eq!(cache.get("t0"), None);
        assert_eq!(cache.get("one-more").as_deref(), Some("x"));
        cache.forget("one-more");
        assert_eq!(cache.get("one-more"), None);
    }
}
