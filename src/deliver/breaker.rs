//! Per-connection circuit breakers, so that a dead endpoint does not cost a timeout per event.
//!
//! After `failures` transient failures in a row (timeouts, refused connections, 5xx) a
//! connection's breaker opens: for `cooldown`, its deliveries go to their retry tier without a
//! call. Then one delivery goes through as a probe (half-open): if it is answered, the breaker
//! closes; if it fails too, the breaker opens again for twice as long, up to
//! [`MAX_COOLDOWN_FACTOR`] times `cooldown`. Any answer that is not a transient failure (a
//! success, a 4xx, a rate limit) proves the endpoint alive and resets the count.
//!
//! State is kept per replica, only for connections with failures, and for at most
//! `max_connections` of them: past that, further connections simply have no breaker until one
//! recovers, so a flood of failing tenants cannot grow the map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::destinations::Outcome;

/// An open breaker's cool-down grows at most to this many times the configured one.
pub const MAX_COOLDOWN_FACTOR: u32 = 8;

/// How long a probe may stay unanswered before another delivery may probe (a probe whose task
/// was lost must not keep the breaker half-open for ever): longer than any destination call.
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Breaker settings.
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Consecutive transient failures that open a breaker; 0 turns breakers off.
    pub failures: u32,
    pub cooldown: Duration,
    /// Connections tracked at most.
    pub max_connections: usize,
}

impl BreakerSettings {
    /// The `destinations.breaker_*` settings.
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        let d = &settings.destinations;
        Self {
            failures: d.breaker_failures,
            cooldown: Duration::from_millis(d.breaker_cooldown_ms),
            max_connections: d.breaker_max_connections,
        }
    }
}

/// Each state keeps the last transient failure and when it happened (wall-clock, to show).
#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
        last_error: String,
        failed_at: SystemTime,
    },
    Open {
        until: Instant,
        cooldown: Duration,
        last_error: String,
        failed_at: SystemTime,
    },
    HalfOpen {
        since: Instant,
        cooldown: Duration,
        last_error: String,
        failed_at: SystemTime,
    },
}

/// How one connection's breaker stands, as this replica sees it (for the management API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CircuitView {
    /// `closed`, `open` (calls refused until `open_until`) or `half_open` (one probe call
    /// decides).
    pub state: &'static str,
    /// Transient failures in a row, while closed.
    pub failures: u32,
    /// The last transient failure's reason and time, while the connection has any.
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub open_until: Option<DateTime<Utc>>,
}

/// Whether a delivery may call its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Call it; `probe` when this call decides whether the breaker closes.
    Call { probe: bool },
    /// Do not call; try again after `retry_in`.
    Refused { retry_in: Duration, reason: String },
}

/// The breakers of every connection with recent failures, keyed by workspace and connection.
#[derive(Debug)]
pub struct Breakers {
    settings: BreakerSettings,
    states: Mutex<HashMap<(String, String), State>>,
    /// Breakers open or half-open (kept with each change, so reading it is cheap).
    open: AtomicUsize,
}

impl Breakers {
    /// Breakers with `settings`.
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            states: Mutex::default(),
            open: AtomicUsize::new(0),
        }
    }

    /// Whether a delivery to `connection` of `workspace` may call it now.
    pub fn admit(&self, workspace: &str, connection: &str, now: Instant) -> Admission {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        // Every delivery asks; while no connection failed, that costs no key to build.
        if states.is_empty() {
            return Admission::Call { probe: false };
        }
        let Some(state) = states.get_mut(&(workspace.to_owned(), connection.to_owned())) else {
            return Admission::Call { probe: false };
        };
        match state {
            State::Closed { .. } => Admission::Call { probe: false },
            State::Open {
                until,
                cooldown,
                last_error,
                failed_at,
            } => {
                if now < *until {
                    return refused(*until - now, last_error);
                }
                *state = State::HalfOpen {
                    since: now,
                    cooldown: *cooldown,
                    last_error: std::mem::take(last_error),
                    failed_at: *failed_at,
                };
                Admission::Call { probe: true }
            }
            State::HalfOpen {
                since, last_error, ..
            } => {
                if now.duration_since(*since) > PROBE_TIMEOUT {
                    *since = now;
                    return Admission::Call { probe: true };
                }
                refused(self.settings.cooldown, last_error)
            }
        }
    }

    /// Whether [`admit`](Self::admit) would refuse a delivery to `connection` now (open, or
    /// half-open with its probe under way), without taking the probe.
    pub fn turns_away(&self, workspace: &str, connection: &str, now: Instant) -> bool {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.is_empty() {
            return false;
        }
        match states.get(&(workspace.to_owned(), connection.to_owned())) {
            Some(State::Open { until, .. }) => now < *until,
            Some(State::HalfOpen { since, .. }) => now.duration_since(*since) <= PROBE_TIMEOUT,
            Some(State::Closed { .. }) | None => false,
        }
    }

    /// Records how a call to `connection` went.
    pub fn record(&self, workspace: &str, connection: &str, outcome: &Outcome, now: Instant) {
        if self.settings.failures == 0 {
            return;
        }
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.is_empty() && !matches!(outcome, Outcome::Retry { .. }) {
            return; // nothing to reset: the common case of a healthy fleet
        }
        let key = (workspace.to_owned(), connection.to_owned());
        let Outcome::Retry { reason, .. } = outcome else {
            // Answered (or broken, which is handled elsewhere): the endpoint is alive.
            if states
                .remove(&key)
                .is_some_and(|s| !matches!(s, State::Closed { .. }))
            {
                self.open.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(
                    workspace,
                    connection,
                    "circuit closed: the connection answers again"
                );
            }
            return;
        };
        let len = states.len();
        let base = self.settings.cooldown;
        let state = match states.get_mut(&key) {
            Some(state) => state,
            None if len >= self.settings.max_connections => return,
            None => states.entry(key).or_insert(State::Closed {
                failures: 0,
                last_error: String::new(),
                failed_at: SystemTime::now(),
            }),
        };
        let reopen = match state {
            State::Closed {
                failures,
                last_error,
                failed_at,
            } => {
                *failures += 1;
                *last_error = reason.clone();
                *failed_at = SystemTime::now();
                (*failures >= self.settings.failures).then_some(base)
            }
            // A failed probe: open again, for longer.
            State::HalfOpen { cooldown, .. } => {
                Some((*cooldown * 2).min(base * MAX_COOLDOWN_FACTOR))
            }
            // A call admitted before the breaker opened ended after it: nothing new.
            State::Open { .. } => None,
        };
        if let Some(cooldown) = reopen {
            if matches!(state, State::Closed { .. }) {
                self.open.fetch_add(1, Ordering::Relaxed);
            }
            tracing::warn!(
                workspace,
                connection,
                reason,
                cooldown_ms = cooldown.as_millis() as u64,
                "circuit open: deliveries go to their retry tier without a call until a probe succeeds"
            );
            *state = State::Open {
                until: now + cooldown,
                cooldown,
                last_error: reason.clone(),
                failed_at: SystemTime::now(),
            };
        }
    }

    /// How the breaker of `connection` stands at `now`; closed with no failure when it is not
    /// tracked.
    pub fn view(&self, workspace: &str, connection: &str, now: Instant) -> CircuitView {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let key = (workspace.to_owned(), connection.to_owned());
        let shown = |at: &SystemTime| Some(DateTime::<Utc>::from(*at));
        match states.get(&key) {
            None => CircuitView {
                state: "closed",
                failures: 0,
                last_error: None,
                last_error_at: None,
                open_until: None,
            },
            Some(State::Closed {
                failures,
                last_error,
                failed_at,
            }) => CircuitView {
                state: "closed",
                failures: *failures,
                last_error: Some(last_error.clone()),
                last_error_at: shown(failed_at),
                open_until: None,
            },
            Some(State::Open {
                until,
                last_error,
                failed_at,
                ..
            }) => CircuitView {
                state: if now < *until { "open" } else { "half_open" },
                failures: 0,
                last_error: Some(last_error.clone()),
                last_error_at: shown(failed_at),
                open_until: (now < *until).then(|| {
                    Utc::now() + chrono::Duration::from_std(*until - now).unwrap_or_default()
                }),
            },
            Some(State::HalfOpen {
                last_error,
                failed_at,
                ..
            }) => CircuitView {
                state: "half_open",
                failures: 0,
                last_error: Some(last_error.clone()),
                last_error_at: shown(failed_at),
                open_until: None,
            },
        }
    }

    /// Connections whose breaker is open or half-open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections tracked (with failures or an open breaker).
    pub fn len(&self) -> usize {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no connection is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn refused(retry_in: Duration, last_error: &str) -> Admission {
    Admission::Refused {
        retry_in,
        reason: format!(
            "circuit open after repeated failures (not called); last error: {last_error}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(max_connections: usize) -> Breakers {
        Breakers::new(BreakerSettings {
            failures: 3,
            cooldown: Duration::from_secs(10),
            max_connections,
        })
    }

    fn timeout() -> Outcome {
        Outcome::Retry {
            after: None,
            reason: "request timed out".into(),
        }
    }

    const CALL: Admission = Admission::Call { probe: false };

    #[test]
    fn the_view_shows_the_state_the_last_error_and_until_when() {
        let b = breakers(10);
        let now = Instant::now();
        assert_eq!(b.view("ws", "c", now).state, "closed");
        b.record("ws", "c", &timeout(), now);
        let view = b.view("ws", "c", now);
        assert_eq!(
            (view.state, view.failures, view.last_error.as_deref()),
            ("closed", 1, Some("request timed out"))
        );
        assert!(view.last_error_at.is_some());
        b.record("ws", "c", &timeout(), now);
        b.record("ws", "c", &timeout(), now);
        let view = b.view("ws", "c", now);
        assert_eq!(view.state, "open");
        assert!(view.open_until.is_some_and(|t| t > chrono::Utc::now()));
        let later = now + Duration::from_secs(11);
        assert_eq!(b.view("ws", "c", later).state, "half_open");
        assert_eq!(b.view("ws", "other", now).state, "closed");
    }

    #[test]
    fn turns_away_agrees_with_admit_without_taking_the_probe() {
        let b = breakers(10);
        let t0 = Instant::now();
        assert!(!b.turns_away("ws", "c", t0));
        for _ in 0..3 {
            b.record("ws", "c", &timeout(), t0);
        }
        assert!(b.turns_away("ws", "c", t0));
        assert!(!b.turns_away("ws", "other", t0));
        let later = t0 + Duration::from_secs(11);
        assert!(
            !b.turns_away("ws", "c", later),
            "cooled down: a probe may go"
        );
        assert_eq!(
            b.admit("ws", "c", later),
            Admission::Call { probe: true },
            "asking did not take the probe"
        );
        assert!(b.turns_away("ws", "c", later), "its probe is under way");
    }

    #[test]
    fn opens_after_consecutive_failures_then_probes_once_and_closes_on_success() {
        let b = breakers(100);
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record("ws", "hook", &timeout(), t0);
        }
        assert_eq!(
            b.admit("ws", "hook", t0),
            CALL,
            "two failures do not open it"
        );
        b.record("ws", "hook", &timeout(), t0);
        match b.admit("ws", "hook", t0 + Duration::from_secs(4)) {
            Admission::Refused { retry_in, reason } => {
                assert_eq!(retry_in, Duration::from_secs(6));
                assert!(reason.contains("request timed out"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            b.admit("ws", "other", t0),
            CALL,
            "other connections unaffected"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            b.admit("ws", "hook", later),
            Admission::Call { probe: true }
        );
        assert!(
            matches!(b.admit("ws", "hook", later), Admission::Refused { .. }),
            "one probe at a time"
        );
        b.record("ws", "hook", &Outcome::Delivered, later);
        assert_eq!(b.admit("ws", "hook", later), CALL);
        assert!(b.is_empty(), "a recovered connection is forgotten");
    }

    #[test]
    fn a_failed_probe_opens_it_again_for_longer() {
        let b = breakers(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record("ws", "hook", &timeout(), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("ws", "hook", t1), Admission::Call { probe: true });
        b.record("ws", "hook", &timeout(), t1);
        assert!(matches!(
            b.admit("ws", "hook", t1 + Duration::from_secs(19)),
            Admission::Refused { .. }
        ));
        assert_eq!(
            b.admit("ws", "hook", t1 + Duration::from_secs(20)),
            Admission::Call { probe: true }
        );
    }

    #[test]
    fn an_answer_that_is_not_a_transient_failure_resets_the_count() {
        let b = breakers(100);
        let t0 = Instant::now();
        for outcome in [
            timeout(),
            timeout(),
            Outcome::Permanent {
                reason: "HTTP 400".into(),
            },
            timeout(),
            timeout(),
        ] {
            b.record("ws", "hook", &outcome, t0);
        }
        assert_eq!(b.admit("ws", "hook", t0), CALL);
    }

    #[test]
    fn a_lost_probe_does_not_keep_it_half_open() {
        let b = breakers(100);
        let t0 = Instant::now();
        for _ in 0..3 {
            b.record("ws", "hook", &timeout(), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(b.admit("ws", "hook", t1), Admission::Call { probe: true });
        assert_eq!(
            b.admit("ws", "hook", t1 + PROBE_TIMEOUT + Duration::from_secs(1)),
            Admission::Call { probe: true }
        );
    }

    #[test]
    fn tracks_at_most_max_connections() {
        let b = breakers(5);
        let t0 = Instant::now();
        for i in 0..50 {
            for _ in 0..3 {
                b.record("ws", &format!("hook{i}"), &timeout(), t0);
            }
        }
        assert_eq!(b.len(), 5, "the map is bounded");
        assert_eq!(b.open(), 5);
        assert_eq!(b.admit("ws", "hook49", t0), CALL, "untracked: no breaker");
    }
}
