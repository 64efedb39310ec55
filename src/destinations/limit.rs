//! Per-connection request rate limits, shaped so that a vendor's sliding-window limit is never
//! exceeded at the default settings, and adaptive: a 429 halves the rate, successes bring it
//! back gradually.
//!
//! A vendor allowing `N` requests per window `W` is modelled as a GCRA ([`governor`]) with a
//! burst of `b = max(1, N/10)` and one request every `W / (N - b)` afterwards, so that any
//! window of length `W` holds at most `b + (N - b) = N` requests. Waiting for a slot is fine
//! for short waits; a call that would wait longer than `max_wait` is not held (it would hold
//! its partition): the connection answers [`crate::destinations::Outcome::RateLimited`] and the
//! delivery goes to a retry tier.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;

use crate::model::FieldError;

/// `rate_limit: {requests, per_ms}` in a connection's settings: at most `requests` requests in
/// any `per_ms` milliseconds. Overrides the vendor default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub requests: u32,
    pub per_ms: u64,
}

impl RateSpec {
    /// `requests` per `per`.
    pub const fn new(requests: u32, per: Duration) -> Self {
        Self {
            requests,
            per_ms: per.as_millis() as u64,
        }
    }

    /// A connection's `rate_limit` when given (checked; the error names the field under
    /// `rate_limit`), else the vendor's `default`.
    pub fn given_or(given: Option<Self>, default: Self) -> Result<Self, FieldError> {
        let Some(spec) = given else {
            return Ok(default);
        };
        if spec.requests == 0 {
            return Err(FieldError::new("rate_limit.requests", "must be at least 1"));
        }
        if spec.per_ms == 0 {
            return Err(FieldError::new("rate_limit.per_ms", "must be at least 1"));
        }
        Ok(spec)
    }
}

/// The lowest fraction of the configured rate that repeated 429s shrink it to.
const MIN_FACTOR: f64 = 1.0 / 16.0;
/// Each recovery step multiplies the rate by this.
const RECOVERY: f64 = 1.25;

/// A connection's rate limiter.
pub struct Limiter {
    spec: RateSpec,
    max_wait: Duration,
    state: Mutex<State>,
    clock: DefaultClock,
}

struct State {
    /// The share of `spec` currently allowed, in `MIN_FACTOR..=1`.
    factor: f64,
    /// Successes since the factor last changed.
    successes: u32,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("spec", &self.spec)
            .field("factor", &self.factor())
            .finish()
    }
}

impl Limiter {
    /// A limiter for `spec` that refuses waits longer than `max_wait`. A zero `requests` or
    /// `per_ms` (rejected by [`RateSpec::given_or`]) is treated as 1.
    pub fn new(spec: RateSpec, max_wait: Duration) -> Self {
        let spec = RateSpec {
            requests: spec.requests.max(1),
            per_ms: spec.per_ms.max(1),
        };
        Self {
            spec,
            max_wait,
            state: Mutex::new(State {
                factor: 1.0,
                successes: 0,
                limiter: Arc::new(RateLimiter::direct(quota(spec, 1.0))),
            }),
            clock: DefaultClock::default(),
        }
    }

    /// Waits for a slot. `Err(wait)` when the wait would exceed `max_wait`: the caller then
    /// answers `RateLimited { after: Some(wait) }` without calling the API.
    pub async fn acquire(&self) -> Result<(), Duration> {
        loop {
            let limiter = self.lock().limiter.clone();
            match limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    if wait > self.max_wait {
                        return Err(wait);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The API answered 429: halve the rate (down to 1/16 of the configured one).
    pub fn throttled(&self) {
        let mut state = self.lock();
        let factor = (state.factor / 2.0).max(MIN_FACTOR);
        state.set(self.spec, factor);
    }

    /// A request succeeded: after a window's worth of successes at a reduced rate, raise it
    /// by a quarter (up to the configured rate).
    pub fn succeeded(&self) {
        let mut state = self.lock();
        if state.factor >= 1.0 {
            return;
        }
        state.successes += 1;
        let window = ((self.spec.requests as f64) * state.factor).ceil().max(1.0) as u32;
        if state.successes >= window {
            let factor = (state.factor * RECOVERY).min(1.0);
            state.set(self.spec, factor);
        }
    }

    /// The share of the configured rate currently allowed.
    pub fn factor(&self) -> f64 {
        self.lock().factor
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn set(&mut self, spec: RateSpec, factor: f64) {
        self.factor = factor;
        self.successes = 0;
        self.limiter = Arc::new(RateLimiter::direct(quota(spec, factor)));
    }
}

/// The GCRA quota for `factor` × `spec`. Below the full rate the burst is 1, so that
/// replacing the limiter does not grant a fresh burst right after a 429.
fn quota(spec: RateSpec, factor: f64) -> Quota {
    let n = ((spec.requests as f64) * factor).floor().max(1.0) as u32;
    let burst = if factor < 1.0 { 1 } else { (n / 10).max(1) };
    let steady = (n - burst).max(1);
    let window = Duration::from_millis(spec.per_ms).mul_f64(if n == 1 && factor < 1.0 {
        // Fewer than one request per window: stretch the window instead.
        1.0 / ((spec.requests as f64) * factor)
    } else {
        1.0
    });
    let period = (window / steady).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::Reference;

    /// Counts how many grants of `quota` fall into the busiest window of length `window`
    /// when requests are made as fast as allowed, on a simulated clock.
    fn busiest_window(spec: RateSpec, factor: f64, total: usize) -> usize {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(spec, factor), clock.clone());
        let mut grants = Vec::new();
        while grants.len() < total {
            match limiter.check() {
                Ok(()) => grants.push(clock.now()),
                Err(e) => clock.advance(e.wait_time_from(clock.now())),
            }
        }
        let window = Duration::from_millis(spec.per_ms);
        (0..grants.len())
            .map(|i| {
                grants[i..]
                    .iter()
                    .take_while(|t| Duration::from(t.duration_since(grants[i])) < window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_window_holds_more_than_the_vendor_allows() {
        for (requests, per_ms) in [(100, 10_000), (190, 10_000), (5, 1_000), (1, 1_000)] {
            let spec = RateSpec { requests, per_ms };
            let busiest = busiest_window(spec, 1.0, 3 * requests as usize + 5);
            assert!(
                busiest <= requests as usize,
                "{requests}/{per_ms}ms allowed {busiest} in one window"
            );
            // And it is not needlessly slow: the window is used to at least 80%.
            assert!(
                busiest * 10 >= requests as usize * 8,
                "{requests}: {busiest}"
            );
        }
    }

    #[test]
    fn a_429_halves_the_rate_and_successes_restore_it() {
        let limiter = Limiter::new(RateSpec::new(100, Duration::from_secs(10)), Duration::ZERO);
        limiter.throttled();
        assert_eq!(limiter.factor(), 0.5);
        for _ in 0..10 {
            limiter.throttled();
        }
        assert_eq!(limiter.factor(), MIN_FACTOR);
        let spec = RateSpec::new(100, Duration::from_secs(10));
        assert!(busiest_window(spec, MIN_FACTOR, 20) <= 7);
        for _ in 0..10_000 {
            limiter.succeeded();
        }
        assert_eq!(limiter.factor(), 1.0);
    }

    #[tokio::test]
    async fn a_wait_beyond_the_threshold_is_refused_not_slept() {
        let limiter = Limiter::new(RateSpec::new(1, Duration::from_secs(60)), Duration::ZERO);
        assert_eq!(limiter.acquire().await, Ok(()));
        let wait = limiter.acquire().await.unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
    }
}
