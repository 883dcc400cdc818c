//! Redlock's time arithmetic, I/O-free.
//!
//! A lease taken on a majority of instances is trusted only until
//! `sent + ttl - drift`, where `sent` is when the acquire (or the renewal
//! or extend that confirmed it) was sent, and `drift = ttl × drift_factor +
//! 2 ms` allows for the instances' clocks running faster than ours and for
//! the time the last reply took to arrive. An acquire succeeds only if that
//! deadline is still ahead when the replies are in.

use std::time::Duration;

use tokio::time::Instant;

/// Fixed part of the drift allowance (Redlock's customary 2 ms).
pub const DRIFT_FLOOR: Duration = Duration::from_millis(2);

/// `ttl × drift_factor + 2 ms`, saturating (`drift_factor` is in `[0,
/// 0.5)`, checked when the manager is built, so `mul_f64` cannot panic).
pub(crate) fn drift(ttl: Duration, drift_factor: f64) -> Duration {
    ttl.mul_f64(drift_factor).saturating_add(DRIFT_FLOOR)
}

/// Until when a lease confirmed by requests sent at `sent` for `ttl` may
/// be trusted; `sent` itself when the drift eats the whole TTL, or when the
/// sum is beyond the clock's range (never later than the truth).
pub(crate) fn deadline(sent: Instant, ttl: Duration, drift_factor: f64) -> Instant {
    sent.checked_add(ttl.saturating_sub(drift(ttl, drift_factor)))
        .unwrap_or(sent)
}

/// The deadline a quorum of instances gives: with each instance's own
/// deadline (its confirmed-until instant less the drift of the TTL it
/// confirmed), the `quorum`-th latest one: a majority can be trusted at
/// least until then. `None` when fewer than `quorum` instances hold it.
pub(crate) fn quorum_deadline(mut deadlines: Vec<Instant>, quorum: usize) -> Option<Instant> {
    if quorum == 0 || deadlines.len() < quorum {
        return None;
    }
    deadlines.sort_unstable_by(|a, b| b.cmp(a));
    Some(deadlines[quorum - 1])
}

/// One instance's deadline: confirmed `until`, for a lease of `ttl`.
pub(crate) fn instance_deadline(until: Instant, ttl: Duration, drift_factor: f64) -> Instant {
    until.checked_sub(drift(ttl, drift_factor)).unwrap_or(until)
}

/// Instances a majority of `n` needs.
pub(crate) fn quorum(n: usize) -> usize {
    n / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Drift is `ttl × factor + 2 ms`; majorities of 3, 5, 7.
    #[test]
    fn drift_and_quorum() {
        assert_eq!(drift(MS(10_000), 0.01), MS(102));
        assert_eq!(drift(MS(1_000), 0.0), MS(2));
        assert_eq!(drift(MS(200), 0.05), MS(12));
        assert_eq!([quorum(3), quorum(5), quorum(7)], [2, 3, 4]);
    }

    /// With paused time: an acquire sent at t0 with a 1 s TTL and factor
    /// 0.01 is valid until t0 + 988 ms and not a nanosecond longer; time
    /// spent waiting for replies comes off the validity.
    #[tokio::test(start_paused = true)]
    async fn validity_runs_out_on_time() {
        let sent = Instant::now();
        let until = deadline(sent, MS(1_000), 0.01);
        assert_eq!(until - sent, MS(988));
        tokio::time::advance(MS(987)).await;
        assert!(Instant::now() < until, "1 ms of validity is left");
        tokio::time::advance(MS(1)).await;
        assert!(Instant::now() >= until, "validity is used up");
        // A TTL shorter than the drift gives no validity at all.
        assert_eq!(deadline(sent, MS(1), 0.01), sent);
    }

    /// The quorum deadline is the quorum-th latest instance deadline: one
    /// instance confirmed far ahead does not extend it, and fewer than a
    /// quorum of holders gives none. Each instance's deadline subtracts the
    /// drift of the TTL that instance confirmed.
    #[tokio::test(start_paused = true)]
    async fn quorum_deadline_takes_the_majority() {
        let t0 = Instant::now();
        let at = |ms| t0 + MS(ms);
        // 5 instances, quorum 3: sorted latest first 5000, 1200, 1100, 1000, 900.
        let held = vec![at(1_000), at(5_000), at(1_100), at(900), at(1_200)];
        assert_eq!(quorum_deadline(held.clone(), 3), Some(at(1_100)));
        assert_eq!(quorum_deadline(held[..3].to_vec(), 3), Some(at(1_000)));
        assert_eq!(quorum_deadline(held[..2].to_vec(), 3), None);
        assert_eq!(quorum_deadline(Vec::new(), 0), None);
        // A 60 s lease allows 602 ms of drift, a 1 s lease 12 ms.
        assert_eq!(instance_deadline(at(61_000), MS(60_000), 0.01), at(60_398));
        assert_eq!(instance_deadline(at(1_000), MS(1_000), 0.01), at(988));
    }
}
