//! Remembering answers for a while, so that a retried request (same `Idempotency-Key`, or an
//! event with the same `event_id`) gets the first answer again instead of making a second
//! event. Bounded in time (`api.idempotency_window_ms`) and in entries
//! (`api.idempotency_max_entries`, oldest first out). In memory, per replica: a retry that
//! reaches another replica, or arrives after a restart, is written again with the same
//! `event_id`, and the processor's delivery ids (derived from it) keep it from being sent twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
// Tokio's clock, so that tests can move it.
use tokio::time::Instant;

/// The answer of one request or event: its event ids.
pub type Answer = OnceCell<Vec<String>>;

/// Answers by key, each kept for the window.
pub struct Recent {
    window: Duration,
    max_entries: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<String, (Instant, Arc<Answer>)>,
    /// Keys in the order they were added, to evict the oldest.
    order: VecDeque<(Instant, String)>,
}

impl Recent {
    pub fn new(window: Duration, max_entries: usize) -> Self {
        Self {
            window,
            max_entries: max_entries.max(1),
            inner: Mutex::default(),
        }
    }

    /// The slot for `key`: filled if a request with that key was answered within the window,
    /// being filled if one is under way (waiting on it answers the same), else new and empty.
    /// A slot whose request failed stays empty, so the next request with the key tries again.
    pub fn slot(&self, key: String) -> Arc<Answer> {
        let now = Instant::now();
        // Nothing panics while the lock is held; a poisoned map is still whole.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.evict(now, self.window, usize::MAX);
        if let Some((_, answer)) = inner.slots.get(&key) {
            return answer.clone();
        }
        // Only a new key makes room: a remembered one is never evicted by its own lookup.
        inner.evict(now, self.window, self.max_entries);
        let answer = Arc::new(Answer::new());
        inner.order.push_back((now, key.clone()));
        inner.slots.insert(key, (now, answer.clone()));
        answer
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .slots
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Drops expired slots, then the oldest until one more fits.
    fn evict(&mut self, now: Instant, window: Duration, max_entries: usize) {
        while let Some((added, _)) = self.order.front() {
            let expired = now.duration_since(*added) >= window;
            if !expired && self.slots.len() < max_entries {
                break;
            }
            if let Some((added, key)) = self.order.pop_front()
                && self.slots.get(&key).is_some_and(|(at, _)| *at == added)
            {
                self.slots.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_gets_its_first_answer_until_the_window_ends() {
        let recent = Recent::new(Duration::from_millis(50), 10);
        let first = recent.slot("ws/a".into());
        first.set(vec!["evt_1".into()]).unwrap();
        assert_eq!(
            recent.slot("ws/a".into()).get(),
            Some(&vec!["evt_1".to_owned()])
        );
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(recent.slot("ws/a".into()).get(), None);
    }

    #[tokio::test]
    async fn the_oldest_key_goes_first_when_full() {
        let recent = Recent::new(Duration::from_secs(60), 2);
        for key in ["a", "b", "c"] {
            recent.slot(key.into()).set(vec![key.into()]).unwrap();
        }
        assert_eq!(recent.len(), 2);
        assert_eq!(recent.slot("a".into()).get(), None, "a was evicted");
        assert_eq!(recent.len(), 2, "adding a again evicted b");
        assert_eq!(recent.slot("c".into()).get(), Some(&vec!["c".to_owned()]));
    }
}
