//! Lines: deliveries with the same key (a workspace's connection) run one after another, in
//! the order they joined, while different keys run concurrently. The event processor joins a
//! delivery to its connection's line in offset order, so "lesson 3 then lesson 4" reaches a CRM
//! in that order, and a connection that hangs holds only its own line.
//!
//! Each line is bounded: a full line refuses to take more, and the caller sends the delivery
//! somewhere else (a retry tier) instead of letting one connection's backlog grow without end.
//! Retries (`deliver::retry_worker`) give up this order by design.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The state of one key's line.
#[derive(Debug)]
struct Line {
    /// Turns joined and not yet over (the running one included).
    len: usize,
    /// The signal that the last turn in line is over.
    tail: oneshot::Receiver<()>,
}

/// Hands out turns per key, at most `max_len` waiting or running per key.
#[derive(Debug, Clone)]
pub struct Lines {
    lines: Arc<Mutex<HashMap<Vec<u8>, Line>>>,
    max_len: usize,
}

/// A line was full: its length when the caller tried to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full(pub usize);

/// A place in a key's line: wait for it, then hold it until the work is done. Dropping it ends
/// the turn, so a task that fails or is aborted never blocks the line.
#[derive(Debug)]
pub struct Turn {
    lines: Arc<Mutex<HashMap<Vec<u8>, Line>>>,
    key: Vec<u8>,
    previous: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Lines {
    /// Lines of at most `max_len` turns per key (at least one).
    pub fn new(max_len: usize) -> Self {
        Self {
            lines: Arc::default(),
            max_len: max_len.max(1),
        }
    }

    /// Joins the line for `key`, behind every turn already in it; must be called in the order
    /// the work should run. Refused when the line already holds `max_len` turns.
    pub fn join(&self, key: &[u8]) -> Result<Turn, Full> {
        let (done, tail) = oneshot::channel();
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let previous = match lines.get_mut(key) {
            Some(line) if line.len >= self.max_len => return Err(Full(line.len)),
            Some(line) => {
                line.len += 1;
                Some(std::mem::replace(&mut line.tail, tail))
            }
            None => {
                lines.insert(key.to_vec(), Line { len: 1, tail });
                None
            }
        };
        Ok(Turn {
            lines: self.lines.clone(),
            key: key.to_vec(),
            previous,
            done: Some(done),
        })
    }

    /// Keys with a turn in line.
    pub fn len(&self) -> usize {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key has a turn in line.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Turn {
    /// Waits until every earlier turn of the key is over (done or abandoned).
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous holder was dropped: its turn is over either way.
            let _ = previous.await;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = lines.get_mut(&self.key) {
            line.len -= 1;
            if line.len == 0 {
                lines.remove(&self.key);
            }
        }
        drop(lines);
        // Wakes the next turn (also when this one never got to wait: a turn dropped early must
        // still not run before the ones ahead of it, so the next waits on this one's
        // predecessor through this chain).
        if let (Some(previous), Some(done)) = (self.previous.take(), self.done.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = previous.await;
                drop(done);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let lines = Lines::new(10);
        let first = lines.join(b"ws_a/hook").unwrap();
        let mut second = lines.join(b"ws_a/hook").unwrap();
        let mut other = lines.join(b"ws_b/hook").unwrap();
        other.wait().await; // would hang if keys were shared
        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = waiting.await.unwrap();
        drop(second);
        drop(other);
        assert!(lines.is_empty(), "lines are cleaned up");
    }

    #[tokio::test]
    async fn a_full_line_refuses_and_takes_again_once_a_turn_is_over() {
        let lines = Lines::new(3);
        let turns: Vec<Turn> = (0..3).map(|_| lines.join(b"k").unwrap()).collect();
        assert_eq!(lines.join(b"k").unwrap_err(), Full(3));
        assert!(
            lines.join(b"other").is_ok(),
            "other keys have their own bound"
        );
        let mut turns = turns.into_iter();
        drop(turns.next());
        assert!(lines.join(b"k").is_ok());
    }

    #[tokio::test]
    async fn a_turn_dropped_before_its_wait_still_keeps_the_order() {
        let lines = Lines::new(10);
        let first = lines.join(b"k").unwrap();
        let second = lines.join(b"k").unwrap();
        let mut third = lines.join(b"k").unwrap();
        drop(second); // abandoned while the first still runs
        let waiting = tokio::spawn(async move { third.wait().await });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the third ran before the first");
        drop(first);
        waiting.await.unwrap();
    }
}
