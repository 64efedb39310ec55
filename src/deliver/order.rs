//! Lines: deliveries with the same key (a workspace's connection) run one after another, in
//! the order they joined, while different keys run concurrently. The event processor joins a
//! delivery to its connection's line in offset order, so "lesson 3 then lesson 4" reaches a CRM
//! in that order, and a connection that hangs holds only its own line.
//!
//! Each line is bounded, and so are a workspace's lines together: a full line, or a workspace
//! whose lines hold its bound, refuses to take more, and the caller sends the delivery
//! somewhere else (a retry tier) instead of letting one connection's backlog, or one
//! workspace's many connections, grow without end.
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

/// Every line, and how many turns each workspace has in its lines together.
#[derive(Debug, Default)]
struct State {
    lines: HashMap<Vec<u8>, Line>,
    workspaces: Shares,
}

/// How many places each workspace holds (turns in lines, retries in lanes); a workspace has an
/// entry only while it holds one, so the map is no larger than the places there are.
#[derive(Debug, Default)]
pub(super) struct Shares(HashMap<String, usize>);

impl Shares {
    pub(super) fn held(&self, workspace: &str) -> usize {
        self.0.get(workspace).copied().unwrap_or(0)
    }

    pub(super) fn take(&mut self, workspace: &str) {
        *self.0.entry(workspace.to_owned()).or_default() += 1;
    }

    pub(super) fn give_back(&mut self, workspace: &str) {
        if let Some(held) = self.0.get_mut(workspace) {
            *held -= 1;
            if *held == 0 {
                self.0.remove(workspace);
            }
        }
    }

    /// Workspaces holding a place.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Hands out turns per key (a workspace's connection), at most `max_len` waiting or running
/// per key and `max_per_workspace` per workspace.
#[derive(Debug, Clone)]
pub struct Lines {
    state: Arc<Mutex<State>>,
    max_len: usize,
    max_per_workspace: usize,
}

/// Why a place was refused, with the count that reached its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The connection's line (or lane) held this many.
    Connection(usize),
    /// The workspace's lines (or lanes) held this many together.
    Workspace(usize),
}

/// A place in a key's line: wait for it, then hold it until the work is done. Dropping it ends
/// the turn, so a task that fails or is aborted never blocks the line.
#[derive(Debug)]
pub struct Turn {
    state: Arc<Mutex<State>>,
    workspace: String,
    key: Vec<u8>,
    previous: Option<oneshot::Receiver<()>>,
    done: Option<oneshot::Sender<()>>,
}

impl Lines {
    /// Lines of at most `max_len` turns per key and `max_per_workspace` per workspace (each at
    /// least one).
    pub fn new(max_len: usize, max_per_workspace: usize) -> Self {
        Self {
            state: Arc::default(),
            max_len: max_len.max(1),
            max_per_workspace: max_per_workspace.max(1),
        }
    }

    /// Joins the line of `workspace`'s `connection`, behind every turn already in it; must be
    /// called in the order the work should run. Refused when the line already holds `max_len`
    /// turns, or the workspace's lines `max_per_workspace`.
    pub fn join(&self, workspace: &str, connection: &str) -> Result<Turn, Full> {
        let key = [workspace.as_bytes(), b"\0", connection.as_bytes()].concat();
        let (done, tail) = oneshot::channel();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let State { lines, workspaces } = &mut *state;
        let held = workspaces.held(workspace);
        let line = lines.get_mut(&key);
        if let Some(line) = &line
            && line.len >= self.max_len
        {
            return Err(Full::Connection(line.len));
        }
        if held >= self.max_per_workspace {
            return Err(Full::Workspace(held));
        }
        let previous = match line {
            Some(line) => {
                line.len += 1;
                Some(std::mem::replace(&mut line.tail, tail))
            }
            None => {
                lines.insert(key.clone(), Line { len: 1, tail });
                None
            }
        };
        workspaces.take(workspace);
        Ok(Turn {
            state: self.state.clone(),
            workspace: workspace.to_owned(),
            key,
            previous,
            done: Some(done),
        })
    }

    /// Keys with a turn in line.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lines
            .len()
    }

    /// Workspaces with a turn in line.
    #[cfg(test)]
    fn workspaces(&self) -> usize {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.workspaces.len()
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
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(line) = state.lines.get_mut(&self.key) {
            line.len -= 1;
            if line.len == 0 {
                state.lines.remove(&self.key);
            }
        }
        state.workspaces.give_back(&self.workspace);
        drop(state);
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
        let lines = Lines::new(10, 100);
        let first = lines.join("ws_a", "hook").unwrap();
        let mut second = lines.join("ws_a", "hook").unwrap();
        let mut other = lines.join("ws_b", "hook").unwrap();
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
        assert_eq!(lines.workspaces(), 0, "workspace counts are cleaned up");
    }

    #[tokio::test]
    async fn a_full_line_refuses_and_takes_again_once_a_turn_is_over() {
        let lines = Lines::new(3, 100);
        let turns: Vec<Turn> = (0..3).map(|_| lines.join("ws", "k").unwrap()).collect();
        assert_eq!(lines.join("ws", "k").unwrap_err(), Full::Connection(3));
        assert!(
            lines.join("ws", "other").is_ok(),
            "other keys have their own bound"
        );
        let mut turns = turns.into_iter();
        drop(turns.next());
        assert!(lines.join("ws", "k").is_ok());
    }

    #[tokio::test]
    async fn a_turn_dropped_before_its_wait_still_keeps_the_order() {
        let lines = Lines::new(10, 100);
        let first = lines.join("ws", "k").unwrap();
        let second = lines.join("ws", "k").unwrap();
        let mut third = lines.join("ws", "k").unwrap();
        drop(second); // abandoned while the first still runs
        let waiting = tokio::spawn(async move { third.wait().await });
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the third ran before the first");
        drop(first);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn a_workspace_holds_at_most_its_bound_across_its_lines() {
        let lines = Lines::new(3, 5);
        let mut held: Vec<Turn> = Vec::new();
        for connection in ["a", "b"] {
            for _ in 0..3 {
                if let Ok(turn) = lines.join("ws", connection) {
                    held.push(turn);
                }
            }
        }
        assert_eq!(held.len(), 5, "three in one line, two in the other");
        assert_eq!(lines.join("ws", "c").unwrap_err(), Full::Workspace(5));
        assert_eq!(
            lines.join("ws", "a").unwrap_err(),
            Full::Connection(3),
            "a full line says so first"
        );
        assert!(
            lines.join("other", "a").is_ok(),
            "another workspace has its own bound"
        );
        held.pop();
        let again = lines.join("ws", "c");
        assert!(again.is_ok(), "a place is free again");
        drop(held);
        assert_eq!(lines.workspaces(), 1, "only the turn still held counts");
    }
}
