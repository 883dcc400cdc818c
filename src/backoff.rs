//! Capped, jittered exponential backoff (I/O-free).
//!
//! Delay for attempt `n` (0-based) is drawn uniformly from
//! `[d/2, d]` with `d = min(cap, base · 2ⁿ)`: the lower half keeps progress
//! steady, the random upper half keeps many clients that failed together
//! from retrying together.

use std::time::Duration;

/// A backoff policy: a first delay and a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
}

impl Backoff {
    /// A policy whose delays start near `base` and never exceed `cap`.
    pub(crate) const fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap }
    }

    /// The upper bound of the delay before attempt `attempt` (0-based).
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before attempt `attempt`, jittered with `unit` in `[0, 1)`.
    pub(crate) fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before attempt `attempt`, with random jitter.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Ceilings double from the base and stop at the cap, also for huge attempt numbers.
    #[test]
    fn ceilings_double_then_cap() {
        let b = Backoff::new(MS(10), MS(1000));
        let table = [
            (0, 10),
            (1, 20),
            (2, 40),
            (3, 80),
            (6, 640),
            (7, 1000),
            (31, 1000),
            (u32::MAX, 1000),
        ];
        for (attempt, ms) in table {
            assert_eq!(b.ceiling(attempt), MS(ms), "attempt {attempt}");
        }
    }

    /// Jitter stays within [ceiling/2, ceiling].
    #[test]
    fn jitter_bounds() {
        let b = Backoff::new(MS(10), MS(1000));
        assert_eq!(b.delay_with(2, 0.0), MS(20));
        assert_eq!(b.delay_with(2, 1.0), MS(40));
        assert_eq!(b.delay_with(2, 0.5), MS(30));
        assert_eq!(b.delay_with(2, 7.0), MS(40));
        for attempt in 0..40 {
            let d = b.delay(attempt);
            assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt));
        }
    }
}
