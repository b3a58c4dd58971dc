//! After a lost write, retry or give up — and how long to wait first. One answer for every
//! backend.
//!
//! The component runs the read → decide → conditional-write loop; when a write loses (another
//! process wrote the pool since it was read), it asks the host through the WIT import
//! `pause-before-retry(attempt)` whether to try again. Every [`crate::Backend`] answers with a
//! [`RetryPolicy`]: the budget is Whereabouts' (100 writes per call), the wait is bounded
//! exponential backoff with full jitter, so processes that collided spread out instead of
//! colliding again in step.

use std::time::Duration;

/// Writes one call may try before it gives up with CNI error 11 (Whereabouts retries 100 times).
pub const MAX_ATTEMPTS: u32 = 100;
/// The first backoff's ceiling; each lost write doubles it, up to [`MAX_DELAY`].
pub const BASE_DELAY: Duration = Duration::from_millis(2);
/// The longest single wait.
pub const MAX_DELAY: Duration = Duration::from_millis(200);

/// Bounded exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Writes per call, the first one included.
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { max_attempts: MAX_ATTEMPTS, base: BASE_DELAY, cap: MAX_DELAY }
    }
}

impl RetryPolicy {
    /// The same budget without waiting: for an in-process store, where the writer that won is
    /// a thread of this process and has already finished by the time we retry.
    pub fn without_waiting() -> Self {
        Self { base: Duration::ZERO, cap: Duration::ZERO, ..Self::default() }
    }

    /// Whether the write after lost write number `attempt` (0 for the first loss) may be tried.
    pub fn allows(&self, attempt: u32) -> bool {
        attempt.saturating_add(1) < self.max_attempts
    }

    /// The longest wait before that write: base·2^attempt, at most `cap`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(1u32 << attempt.min(16)).min(self.cap)
    }

    /// Sleeps a random time in [0, ceiling(attempt)]; false (without sleeping) once the
    /// budget is spent.
    pub fn pause(&self, attempt: u32) -> bool {
        if !self.allows(attempt) {
            return false;
        }
        let nanos = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        if nanos > 0 {
            std::thread::sleep(Duration::from_nanos(jitter() % nanos));
        }
        true
    }
}

/// A cheap per-process random number for jitter: no crate, no syscall beyond the clock.
fn jitter() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_max_attempts_writes_in_all() {
        let policy = RetryPolicy::default();
        // Lost writes 0..=98 may be retried: 1 + 99 = 100 writes.
        let retries = (0..).take_while(|&attempt| policy.allows(attempt)).count();
        assert_eq!(retries as u32 + 1, MAX_ATTEMPTS);
        assert!(!policy.allows(u32::MAX));
        assert!(!RetryPolicy::without_waiting().pause(MAX_ATTEMPTS - 1));
        assert!(RetryPolicy::without_waiting().pause(0));
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let ceilings: Vec<u128> = (0..9).map(|a| policy.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 200, 200]);
        assert_eq!(policy.ceiling(u32::MAX), MAX_DELAY);
        assert_eq!(RetryPolicy::without_waiting().ceiling(5), Duration::ZERO);
    }
}
