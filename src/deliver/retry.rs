//! The retry schedule: which tier a retryable delivery waits in, until when, and when it is
//! dead instead. Pure: the clock and the random draw are arguments, so the tests pin them.
//!
//! - `Retry` uses the next unused tier; after the last tier the delivery is dead.
//! - `RateLimited` never uses a tier up: being told to slow down is not a failed attempt. With
//!   no usable `Retry-After` it backs off instead: it waits in the tier numbered by the attempts
//!   made so far (the first attempt's 429 waits in the first tier, the second's in the second,
//!   and so on up to the last), so a destination that keeps answering 429 is called less and
//!   less often rather than once per first-tier delay until `max_age`.
//! - With `Retry-After`, the delivery goes to the smallest tier that is not earlier than it
//!   (or the last tier) and is due exactly then, without jitter.
//! - Without it, the tier's delay is spread by ±`jitter` so one outage's retries do not return
//!   all at once.
//! - Past `max_age` since the first attempt, the delivery is dead.
//! - A delivery not called because too many deliveries already wait for its connection (which
//!   is busy, not failing) is scheduled like a rate limit without a time: it uses no tier
//!   ([`RetryPolicy::next_busy`]).
//! - A delivery not called because its connection's circuit is open uses its next tier like a
//!   failed call, and waits for that tier's spread delay or, if longer, until the circuit lets
//!   a call through again, spread forward by the jitter ([`RetryPolicy::at_least`]). So the
//!   tiers last as long during an outage as the schedule says, and the deliveries an open
//!   circuit turned away do not all return at the instant it closes.
//!
//! [`RetryPolicy::head`] is the other half of the schedule: what the retry consumer does with
//! a tier partition's head record that is not due yet (hold it, or forward it to a later tier so
//! it does not hold the records behind it).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::destinations::Outcome;
use crate::settings::{Settings, Tier};

/// The configured tiers, jitter and maximum age.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub tiers: Vec<Tier>,
    jitter: f64,
    max_age: Duration,
}

/// What happens to a delivery after a retryable outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Wait in `tier` until `due_at`; `retries` is the new count of tiers used.
    Wait {
        tier: usize,
        due_at: DateTime<Utc>,
        retries: u32,
    },
    /// No more attempts.
    Dead { reason: String },
}

impl RetryPolicy {
    /// The policy the settings describe (validated at start-up).
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            tiers: settings.retry_tiers(),
            jitter: settings.retry.jitter,
            max_age: Duration::from_millis(settings.retry.max_age_ms),
        }
    }

    /// Decides the next step after `outcome` (a `Retry` or `RateLimited`), given the tiers used
    /// so far, the number of the attempt just made (1 for the first), the first attempt's time,
    /// now, and a uniform draw in [0, 1).
    pub fn next(
        &self,
        outcome: &Outcome,
        retries: u32,
        attempt: u32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        draw: f64,
    ) -> Next {
        let (after, uses_a_tier, reason) = match outcome {
            Outcome::Retry { after, reason } => (*after, true, reason.clone()),
            Outcome::RateLimited { after } => (*after, false, "rate limited".to_owned()),
            other => {
                return Next::Dead {
                    reason: other.reason().unwrap_or_else(|| "not retryable".into()),
                };
            }
        };
        let progress = (retries, attempt, first_attempt_at);
        self.schedule((after, uses_a_tier, reason), progress, now, draw)
    }

    /// `next` for a delivery not called because too many deliveries already wait for its
    /// connection (`reason` says so): like a rate limit without a time, it uses no tier and
    /// waits in the tier numbered by the attempts made so far, each deferral counted. A busy
    /// connection's overflow thus comes back less and less often, and is dead only past
    /// `max_age`.
    pub fn next_busy(
        &self,
        reason: &str,
        retries: u32,
        attempt: u32,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        draw: f64,
    ) -> Next {
        let progress = (retries, attempt, first_attempt_at);
        self.schedule((None, false, reason.to_owned()), progress, now, draw)
    }

    /// The schedule after a retryable outcome: `after` (a time the answer named), whether it
    /// uses a tier, and its reason; the tiers used so far, the attempt just made and the first
    /// attempt's time.
    fn schedule(
        &self,
        (after, uses_a_tier, reason): (Option<Duration>, bool, String),
        (retries, attempt, first_attempt_at): (u32, u32, DateTime<Utc>),
        now: DateTime<Utc>,
        draw: f64,
    ) -> Next {
        let next_tier = retries as usize;
        let last = self.tiers.len() - 1;
        if uses_a_tier && next_tier > last {
            return Next::Dead {
                reason: format!(
                    "retries exhausted after {} tiers; last error: {reason}",
                    self.tiers.len()
                ),
            };
        }
        let base_tier = match (uses_a_tier, after) {
            // Rate limited with no time given: back off by the attempts made so far.
            (false, None) => next_tier.max(attempt.saturating_sub(1) as usize),
            _ => next_tier,
        }
        .min(last);
        let (tier, wait) = match after {
            Some(after) => {
                let tier = self.tiers[base_tier..]
                    .iter()
                    .position(|t| t.delay >= after)
                    .map_or(last, |i| base_tier + i);
                (tier, after)
            }
            None => {
                let spread = 1.0 + self.jitter * (2.0 * draw.clamp(0.0, 1.0) - 1.0);
                let delay = self.tiers[base_tier].delay.mul_f64(spread);
                (base_tier, delay)
            }
        };
        let retries = if uses_a_tier { retries + 1 } else { retries };
        self.wait(tier, wait, retries, &reason, first_attempt_at, now)
    }

    /// `next` for a delivery that must not be attempted before `least` from now (its
    /// connection's circuit is open that long): a [`Next::Wait`] due earlier is due at `least`
    /// spread forward by up to the jitter instead, in the first tier from its own whose delay
    /// covers that; its count of tiers used stays as `next` set it. `reason` is the last error,
    /// for a delivery that becomes too old.
    pub fn at_least(
        &self,
        next: Next,
        least: Duration,
        reason: &str,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
        draw: f64,
    ) -> Next {
        let Next::Wait {
            tier,
            due_at,
            retries,
        } = next
        else {
            return next;
        };
        let floor = chrono::Duration::from_std(least)
            .ok()
            .and_then(|least| now.checked_add_signed(least));
        if floor.is_some_and(|floor| due_at >= floor) {
            return Next::Wait {
                tier,
                due_at,
                retries,
            };
        }
        let wait = least.mul_f64(1.0 + self.jitter * draw.clamp(0.0, 1.0));
        let tier = self.tiers[tier..]
            .iter()
            .position(|t| t.delay >= least)
            .map_or(self.tiers.len() - 1, |i| tier + i);
        self.wait(tier, wait, retries, reason, first_attempt_at, now)
    }

    /// Waiting `wait` in `tier` from `now`, or dead when that is past the maximum age.
    fn wait(
        &self,
        tier: usize,
        wait: Duration,
        retries: u32,
        reason: &str,
        first_attempt_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Next {
        // A server may ask for any wait (`Retry-After: 99999999999999`): one that no clock can
        // reach is past the maximum age too, never an overflow.
        let due_at = chrono::Duration::from_std(wait)
            .ok()
            .and_then(|wait| now.checked_add_signed(wait));
        let too_old = due_at.is_none_or(|due_at| {
            (due_at - first_attempt_at).to_std().unwrap_or_default() > self.max_age
        });
        let (Some(due_at), false) = (due_at, too_old) else {
            return Next::Dead {
                reason: format!(
                    "older than retry.max_age_ms ({}s) at its next attempt; last error: {reason}",
                    self.max_age.as_secs()
                ),
            };
        };
        Next::Wait {
            tier,
            due_at,
            retries,
        }
    }

    /// The longest a not-yet-due record may hold its partition of `tier`: the tier's delay,
    /// spread by the jitter. A record written to the tier by [`next`](Self::next) is due within
    /// it, unless it carries a `Retry-After` longer than the last tier.
    pub fn hold_limit(&self, tier: usize) -> Duration {
        self.tiers[tier.min(self.tiers.len() - 1)]
            .delay
            .mul_f64(1.0 + self.jitter)
    }

    /// What the retry consumer does with the head record of a partition of `tier`, `wait` before
    /// it is due and `in_tier` after it was written to that tier.
    ///
    /// - Due: attempt it.
    /// - Due within the tier's [`hold_limit`](Self::hold_limit): hold it until due.
    /// - Later: forward it, due time unchanged, to the first tier whose hold limit covers the
    ///   wait, so the records behind it are not held for it.
    /// - Later than even the last tier's limit, in the last tier: hold it until it has been in
    ///   the tier for the tier's delay, then forward it to the tail of the last tier again. It
    ///   is re-written at most once per that delay, never in a busy loop.
    pub fn head(&self, tier: usize, wait: Duration, in_tier: Duration) -> Head {
        if wait.is_zero() {
            return Head::Attempt;
        }
        let last = self.tiers.len() - 1;
        let tier = tier.min(last);
        if wait <= self.hold_limit(tier) {
            return Head::Hold(wait);
        }
        let fits = (0..last)
            .find(|&t| self.hold_limit(t) >= wait)
            .unwrap_or(last);
        if fits != tier {
            return Head::Forward(fits);
        }
        match self.tiers[tier].delay.checked_sub(in_tier) {
            Some(rest) if !rest.is_zero() => Head::Hold(rest.min(wait)),
            _ => Head::Forward(tier),
        }
    }
}

/// What to do with a tier partition's head record now (see [`RetryPolicy::head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// It is due: attempt it.
    Attempt,
    /// Pause the partition for this long with the record held, then decide again.
    Hold(Duration),
    /// Write it, due time unchanged, to the tail of this tier, then move past it.
    Forward(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        let mut settings = Settings::defaults();
        settings.retry.tiers = ["5s", "1m", "10m"].map(String::from).to_vec();
        settings.retry.max_age_ms = 3_600_000;
        RetryPolicy::from_settings(&settings)
    }

    fn retry(after: Option<u64>) -> Outcome {
        Outcome::Retry {
            after: after.map(Duration::from_secs),
            reason: "HTTP 503".into(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_wait_no_clock_can_reach_makes_the_delivery_dead_not_a_panic() {
        let p = policy();
        let absurd = Duration::from_secs(99_999_999_999_999);
        for outcome in [
            Outcome::RateLimited {
                after: Some(absurd),
            },
            Outcome::Retry {
                after: Some(absurd),
                reason: "HTTP 503".into(),
            },
            Outcome::RateLimited {
                after: Some(Duration::MAX),
            },
        ] {
            match p.next(&outcome, 0, 1, at(0), at(0), 0.5) {
                Next::Dead { reason } => assert!(reason.contains("max_age"), "{reason}"),
                other => panic!("{outcome:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn tiers_are_used_in_order_then_the_delivery_is_dead() {
        let p = policy();
        assert_eq!(p.tiers[0].topic, "herald.retry.5s");
        let cases = [(0, 0, 5), (1, 1, 60), (2, 2, 600)];
        for (retries, tier, secs) in cases {
            assert_eq!(
                p.next(&retry(None), retries, retries + 1, at(0), at(0), 0.5),
                Next::Wait {
                    tier,
                    due_at: at(secs),
                    retries: retries + 1
                },
                "after {retries} retries"
            );
        }
        let Next::Dead { reason } = p.next(&retry(None), 3, 4, at(0), at(0), 0.5) else {
            panic!("a fourth retry with three tiers")
        };
        assert!(
            reason.contains("retries exhausted") && reason.contains("HTTP 503"),
            "{reason}"
        );
    }

    #[test]
    fn jitter_spreads_the_delay_by_twenty_percent() {
        let p = policy();
        let due = |draw| match p.next(&retry(None), 1, 2, at(0), at(0), draw) {
            Next::Wait { due_at, .. } => (due_at - at(0)).num_seconds(),
            other => panic!("{other:?}"),
        };
        assert_eq!((due(0.0), due(0.5), due(0.999_999)), (48, 60, 71));
    }

    #[test]
    fn retry_after_picks_the_smallest_tier_not_earlier_and_waits_exactly() {
        let p = policy();
        assert_eq!(
            p.next(&retry(Some(30)), 0, 1, at(0), at(0), 0.0),
            Next::Wait {
                tier: 1,
                due_at: at(30),
                retries: 1
            }
        );
        // Longer than every tier: the last tier, still due at the exact time.
        assert_eq!(
            p.next(&retry(Some(1800)), 0, 1, at(0), at(0), 0.0),
            Next::Wait {
                tier: 2,
                due_at: at(1800),
                retries: 1
            }
        );
    }

    #[test]
    fn rate_limits_wait_without_using_a_tier() {
        let p = policy();
        let limited = Outcome::RateLimited {
            after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            p.next(&limited, 1, 2, at(0), at(0), 0.0),
            Next::Wait {
                tier: 1,
                due_at: at(2),
                retries: 1
            }
        );
        // Even with every tier used, a rate limit is not an exhausted retry.
        assert!(matches!(
            p.next(&limited, 3, 4, at(0), at(0), 0.0),
            Next::Wait { tier: 2, .. }
        ));
    }

    #[test]
    fn an_open_circuit_delays_a_delivery_to_its_reopening_spread_forward_never_earlier() {
        let p = policy(); // 5s, 1m, 10m; jitter 20%; max age 1 h
        let least = Duration::from_secs(30);
        let refused = |retries: u32, least: Duration, draw: f64| {
            let next = p.next(&retry(None), retries, retries + 1, at(0), at(0), draw);
            p.at_least(next, least, "HTTP 503", at(0), at(0), draw)
        };
        // Its tier (5 s) is earlier than the circuit reopens: the first tier that covers 30 s,
        // due from 30 s up to 20% later, one tier used as for a failed call.
        assert_eq!(
            refused(0, least, 0.0),
            Next::Wait {
                tier: 1,
                due_at: at(30),
                retries: 1
            }
        );
        assert_eq!(
            refused(0, least, 0.5),
            Next::Wait {
                tier: 1,
                due_at: at(33),
                retries: 1
            }
        );
        // Its tier (10 min) is later anyway: the schedule stands, jitter and all.
        assert_eq!(
            refused(2, least, 0.5),
            Next::Wait {
                tier: 2,
                due_at: at(600),
                retries: 3
            }
        );
        // Longer than every tier: the last one.
        assert!(matches!(
            refused(0, Duration::from_secs(1800), 0.0),
            Next::Wait { tier: 2, .. }
        ));
        // Past the maximum age, or a dead delivery: dead.
        let Next::Dead { reason } = refused(0, Duration::from_secs(4000), 0.0) else {
            panic!("4000 s is past the hour")
        };
        assert!(
            reason.contains("max_age") && reason.contains("HTTP 503"),
            "{reason}"
        );
        assert!(matches!(refused(3, least, 0.0), Next::Dead { .. }));
    }

    #[test]
    fn a_busy_connections_overflow_backs_off_without_using_a_tier() {
        let p = policy(); // 5s, 1m, 10m
        // (tiers used, attempt just made) → (tier, seconds to wait at the middle draw)
        let cases = [
            ((0, 1), (0, 5)),
            ((0, 2), (1, 60)),
            ((1, 3), (2, 600)),
            // Every tier used: still waiting, not dead.
            ((3, 9), (2, 600)),
        ];
        for ((retries, attempt), (tier, secs)) in cases {
            assert_eq!(
                p.next_busy("busy", retries, attempt, at(0), at(0), 0.5),
                Next::Wait {
                    tier,
                    due_at: at(secs),
                    retries
                },
                "deferred at attempt {attempt} with {retries} tiers used"
            );
        }
        let Next::Dead { reason } = p.next_busy("busy", 0, 3, at(0), at(3500), 0.5) else {
            panic!("past the hour")
        };
        assert!(
            reason.contains("max_age") && reason.contains("busy"),
            "{reason}"
        );
    }

    #[test]
    fn deliveries_past_the_maximum_age_are_dead() {
        let p = policy();
        let Next::Dead { reason } = p.next(&retry(None), 2, 3, at(0), at(3100), 0.5) else {
            panic!("3100 s + 600 s is past the hour")
        };
        assert!(reason.contains("max_age"), "{reason}");
    }

    #[test]
    fn rate_limits_without_a_time_climb_the_tiers_without_using_one() {
        let p = policy();
        let limited = Outcome::RateLimited { after: None };
        // (tiers used, attempt just made) → (tier, seconds to wait at the middle draw)
        let cases = [
            ((0, 1), (0, 5)),
            ((0, 2), (1, 60)),
            ((0, 3), (2, 600)),
            ((0, 9), (2, 600)),
            // A delivery that used tiers backs off from the next unused one at least.
            ((2, 2), (2, 600)),
        ];
        for ((retries, attempt), (tier, secs)) in cases {
            assert_eq!(
                p.next(&limited, retries, attempt, at(0), at(0), 0.5),
                Next::Wait {
                    tier,
                    due_at: at(secs),
                    retries
                },
                "rate limited at attempt {attempt} with {retries} tiers used"
            );
        }
    }

    #[test]
    fn a_head_is_held_only_within_its_tier_and_forwarded_otherwise() {
        let p = policy(); // 5s, 1m, 10m; jitter 20%
        let s = Duration::from_secs;
        let cases = [
            // (tier, wait, in tier) → what to do
            ((0, s(0), s(0)), Head::Attempt),
            ((0, s(6), s(0)), Head::Hold(s(6))),
            // Longer than 5 s + 20%: to the tier that fits, not holding the 5 s partition.
            ((0, s(7), s(0)), Head::Forward(1)),
            ((0, s(1800), s(0)), Head::Forward(2)),
            ((1, s(100), s(0)), Head::Forward(2)),
            ((2, s(700), s(0)), Head::Hold(s(700))),
            // Past every tier: held for the last tier's delay since written, then forwarded
            // to that tier's tail again.
            ((2, s(3000), s(0)), Head::Hold(s(600))),
            ((2, s(3000), s(450)), Head::Hold(s(150))),
            ((2, s(3000), s(600)), Head::Forward(2)),
            ((2, s(3000), s(5000)), Head::Forward(2)),
        ];
        for ((tier, wait, in_tier), expected) in cases {
            assert_eq!(
                p.head(tier, wait, in_tier),
                expected,
                "tier {tier}, due in {wait:?}, written {in_tier:?} ago"
            );
        }
    }
}
