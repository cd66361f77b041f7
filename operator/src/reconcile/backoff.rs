//! Per-object retry delays for failed reconciles.
//!
//! Transient failures back off exponentially with jitter, counted per
//! TenantCluster so one broken tenant does not slow the others, and reset on the
//! first success. Permanent failures wait a fixed, long delay: only a spec edit
//! can fix them, and that edit triggers a reconcile on its own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use kube::runtime::reflector::ObjectRef;

use crate::api::TenantCluster;

/// First retry delay after a transient failure (before jitter).
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(2);
/// Longest retry delay after repeated transient failures (before jitter).
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Delay before re-checking an object whose last failure was permanent.
pub const PERMANENT_ERROR_REQUEUE: Duration = Duration::from_secs(300);

type Delays = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// Retry state of every object that is currently failing.
pub struct RetryBackoff {
    builder: ExponentialBuilder,
    failing: Mutex<HashMap<ObjectRef<TenantCluster>, Delays>>,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self::new(None)
    }
}

impl RetryBackoff {
    /// Doubling delays from [`MIN_RETRY_DELAY`] to [`MAX_RETRY_DELAY`], each stretched by
    /// a random 0–100 % so replicas of a failing burst do not retry in lockstep.
    /// `jitter_seed` makes the sequence reproducible (tests).
    pub fn new(jitter_seed: Option<u64>) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(MIN_RETRY_DELAY)
            .with_max_delay(MAX_RETRY_DELAY)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        let builder = match jitter_seed {
            Some(seed) => builder.with_jitter_seed(seed),
            None => builder,
        };
        Self { builder, failing: Mutex::new(HashMap::new()) }
    }

    /// The delay before the next attempt for `object`, after one more transient failure.
    pub fn next_delay(&self, object: &ObjectRef<TenantCluster>) -> Duration {
        let mut failing = self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        failing
            .entry(object.clone())
            .or_insert_with(|| self.builder.build())
            .next()
            // The sequence is unbounded; the fallback only guards a future backon change.
            .unwrap_or(MAX_RETRY_DELAY)
    }

    /// Forgets the failure history of `object` (it reconciled, or was deleted).
    pub fn reset(&self, object: &ObjectRef<TenantCluster>) {
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(object);
    }

    /// Number of objects with a failure history.
    pub fn failing_objects(&self) -> usize {
        self.failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectRef<TenantCluster> {
        ObjectRef::new(name).within("tenants")
    }

    #[test]
    fn delays_double_within_jitter_bounds_and_cap() {
        let backoff = RetryBackoff::new(Some(7));
        let team_a = object("team-a");
        let mut base = MIN_RETRY_DELAY;
        for attempt in 0..12 {
            let delay = backoff.next_delay(&team_a);
            assert!(
                delay >= base && delay < base * 2,
                "attempt {attempt}: {delay:?} not in [{base:?}, {:?})",
                base * 2
            );
            base = (base * 2).min(MAX_RETRY_DELAY);
        }
        // After many failures the base is the cap.
        assert_eq!(base, MAX_RETRY_DELAY);
    }

    #[test]
    fn objects_back_off_independently_and_reset_on_success() {
        let backoff = RetryBackoff::new(Some(1));
        let (team_a, team_b) = (object("team-a"), object("team-b"));
        for _ in 0..5 {
            backoff.next_delay(&team_a);
        }
        assert!(backoff.next_delay(&team_a) >= MIN_RETRY_DELAY * 32);
        assert!(backoff.next_delay(&team_b) < MIN_RETRY_DELAY * 2, "team-b starts from the minimum");
        assert_eq!(backoff.failing_objects(), 2);

        backoff.reset(&team_a);
        assert_eq!(backoff.failing_objects(), 1);
        assert!(backoff.next_delay(&team_a) < MIN_RETRY_DELAY * 2, "reset starts over");
    }

    #[test]
    fn same_seed_gives_the_same_delays() {
        let first = RetryBackoff::new(Some(42));
        let second = RetryBackoff::new(Some(42));
        let team_a = object("team-a");
        let delays = |backoff: &RetryBackoff| (0..4).map(|_| backoff.next_delay(&team_a)).collect::<Vec<_>>();
        assert_eq!(delays(&first), delays(&second));
    }
}
