//! Connections that answered "bad credentials". The state belongs to one compiled config:
//! applying the workspace again (the fix) compiles a new config, which starts with none broken.

use std::collections::HashMap;
use std::sync::Mutex;

/// The broken connections of one compiled workspace, with the reason each broke.
#[derive(Debug, Default)]
pub struct BrokenConnections {
    reasons: Mutex<HashMap<String, String>>,
}

impl BrokenConnections {
    /// Marks `connection_id` broken; `true` when it was not broken before.
    pub fn mark(&self, connection_id: &str, reason: &str) -> bool {
        self.lock()
            .insert(connection_id.to_owned(), reason.to_owned())
            .is_none()
    }

    /// Why `connection_id` is broken, if it is.
    pub fn reason(&self, connection_id: &str) -> Option<String> {
        self.lock().get(connection_id).cloned()
    }

    /// How many connections are broken.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        // A poisoned lock means a panic while inserting; the map is still whole.
        self.reasons.lock().unwrap_or_else(|p| p.into_inner())
    }
}
