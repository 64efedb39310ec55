//! Per-workspace ordering inside a partition. Events of different workspaces run
//! concurrently; events of the same workspace (same record key) start in offset order, each
//! after the one before it finished, so "lesson 3 then lesson 4" reaches a CRM in that order.
//! Retries (`deliver::retry_worker`) give up this order by design.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

/// The last event in line for a key: its sequence number and the signal of its end.
type Tail = (u64, oneshot::Receiver<()>);

/// Hands out turns per key.
#[derive(Debug, Default)]
pub struct KeyOrder {
    tails: Mutex<HashMap<Vec<u8>, Tail>>,
    seq: Mutex<u64>,
}

/// A place in a key's line: wait for it, then hold it until the event is finished.
#[derive(Debug)]
pub struct Turn {
    key: Vec<u8>,
    seq: u64,
    previous: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl KeyOrder {
    /// Joins the line for `key`; must be called in arrival order.
    pub fn join(&self, key: &[u8]) -> Turn {
        let seq = {
            let mut s = self.seq.lock().unwrap_or_else(|p| p.into_inner());
            *s += 1;
            *s
        };
        let (done, rx) = oneshot::channel();
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        let previous = tails.insert(key.to_vec(), (seq, rx)).map(|(_, rx)| rx);
        Turn {
            key: key.to_vec(),
            seq,
            previous,
            done: Some(done),
        }
    }

    /// Leaves the line; the next event of the key may start.
    pub fn leave(&self, mut turn: Turn) {
        let mut tails = self.tails.lock().unwrap_or_else(|p| p.into_inner());
        if tails
            .get(&turn.key)
            .is_some_and(|(seq, _)| *seq == turn.seq)
        {
            tails.remove(&turn.key);
        }
        drop(tails);
        turn.done.take();
    }

    /// Keys with an event in line.
    pub fn len(&self) -> usize {
        self.tails.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key has an event in line.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Turn {
    /// Waits until the previous event of the key finished (or was abandoned).
    pub async fn wait(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous holder was dropped: its turn is over either way.
            let _ = previous.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let order = KeyOrder::default();
        let first = order.join(b"ws_a");
        let mut second = order.join(b"ws_a");
        let mut other = order.join(b"ws_b");
        other.wait().await; // would hang if keys were shared
        let waiting = tokio::spawn(async move {
            second.wait().await;
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        order.leave(first);
        let second = waiting.await.unwrap();
        order.leave(second);
        order.leave(other);
        assert!(order.is_empty(), "lines are cleaned up");
    }
}
