//! [`LockGuard`]: a held lease (see [`Lease`] for its life and for how
//! `valid_until` and release are kept honest).
//!
//! The guard reads its lease's validity for `is_lost()` and `lost()` (both
//! turn true once `valid_until` passes), takes turns for `extend`, and
//! releases by token on `release()` and on drop, also after a loss.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::lease::{Lease, release_lease};
use super::manager::LockManager;
use super::token::FencingToken;
use crate::error::{Error, Result};
use crate::metrics::ReleaseOutcome;
use crate::scripts;

/// A held lease. Dropping it releases the lease in the background; call
/// [`release`](Self::release) to release it and learn the outcome.
#[must_use = "dropping a guard releases the lock at once"]
pub struct LockGuard {
    lease: Arc<Lease>,
    manager: LockManager,
}

impl LockGuard {
    /// Every guard ends its lease exactly once (release, drop or loss), so
    /// the held-leases gauge goes up here and down in `mark_*`.
    pub(crate) fn new(lease: Arc<Lease>, manager: LockManager) -> LockGuard {
        crate::metrics::lease_taken(lease.class);
        LockGuard { lease, manager }
    }

    /// The key as given to [`LockManager::lock`] (without the namespace).
    pub fn key(&self) -> &[u8] {
        &self.lease.key[self.manager.namespace_len()..]
    }

    /// The fencing token, when the lock was requested with `.fenced()`.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.lease.fence
    }

    /// Until when this holder knows the lease is held: the send time of the
    /// last confirmed acquire, renewal or extend plus its TTL, on this
    /// process's monotonic clock. No allowance for the server's clock
    /// running faster is subtracted (Redlock subtracts one).
    pub fn valid_until(&self) -> Instant {
        self.lease.valid_until()
    }

    /// True once the lease is known lost: renewal or an extend found it
    /// gone or taken, renewal could not confirm it before it expired, or
    /// [`valid_until`](Self::valid_until) has passed (with or without
    /// auto-renewal). Once true, it stays true.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Resolves when the lease is lost (exactly when
    /// [`is_lost`](Self::is_lost) becomes true): renewal or an extend found
    /// the key gone or held by another token, renewal could not confirm it
    /// before it expired, or [`valid_until`](Self::valid_until) passed —
    /// without auto-renewal, that is when its TTL runs out. Pending while
    /// the lease is held and valid.
    pub async fn lost(&self) {
        loop {
            let changed = self.lease.changed.notified();
            if self.lease.is_lost() {
                return;
            }
            // Wakes at the current validity end, or when an extend lowers
            // it (or a renewal or extend moved it): checked again either way.
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(self.lease.valid_until()) => {}
            }
        }
    }

    /// Sets the lease to expire `ttl` from now, if it is still ours.
    /// [`Error::NotHeld`] when it was lost or taken meanwhile (or its
    /// `valid_until` has passed). Extends of one guard take turns: a second
    /// one waits for the first to end, so `valid_until` always follows the
    /// one the server applied last. The extend lowers `valid_until` to its
    /// send time plus `ttl` when it is sent ([`lost`](Self::lost) follows);
    /// a reply that comes after the lease was reported lost (that bound
    /// passed first) is [`Error::NotHeld`], and the loss stands: once the
    /// lease is reported lost, no extend returns `Ok`. When the extend fails without an answer
    /// (it may still land), the lease counts on the shorter of its old TTL
    /// and `ttl` from then on.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        self.manager.check_ttl(ttl, self.lease.auto_renew)?;
        let _turn = self.lease.extend_turn().await;
        if !self.lease.is_held() || self.lease.is_lost() {
            return Err(Error::NotHeld);
        }
        let request = scripts::extend(&self.lease.key, &self.lease.value(), ttl.as_millis() as u64);
        let sent_at = Instant::now();
        self.lease.extending(sent_at, ttl);
        // The old renewal schedule is void from here; a new one starts when
        // this call ends, however it ends (success, error, or dropped).
        // Declared after the turn, so it runs first: the new schedule is
        // registered while no other extend can start.
        let _reschedule = Reschedule { guard: self };
        let mut unknown = ExtendUnknown {
            lease: &self.lease,
            sent_at,
            ttl,
            armed: true,
        };
        let replies = self
            .manager
            .client()
            .execute_with(self.lease.slot, &request, self.lease.retry)
            .await?;
        let applied = scripts::compared(&replies, "extend")?;
        unknown.armed = false;
        if applied {
            // Applied, but a loss reported while the reply was on its way
            // stands (the key, still ours, is deleted on release or drop).
            if self.lease.extended(sent_at, ttl) {
                Ok(())
            } else {
                Err(Error::NotHeld)
            }
        } else {
            self.lease.mark_lost();
            Err(Error::NotHeld)
        }
    }

    /// Stops renewing and forgets the lease without releasing it (the caller
    /// releases it by token).
    pub(crate) fn disarm(self) {
        self.lease.take_for_release();
    }

    /// Releases the lease: compare-and-delete by token, also when the lease
    /// is already known lost (a renewal or extend whose reply never came
    /// back may have kept our token there). `Ok` when our token was there
    /// and is now deleted — or when a resend, after an attempt that went
    /// unanswered, finds the key absent on the same node (the slot map
    /// unchanged in between: no failover) while the lease was held and
    /// valid at the first attempt (that attempt most likely deleted it).
    /// [`Error::NotHeld`] when the key was absent or held by another token
    /// (expired, lost, or taken); [`lost()`](Self::lost) of a lost lease
    /// stays resolved either way. Any other error (the node unavailable, or
    /// busy, past the request timeout) hands the lease to the background
    /// release, as dropping the guard does: the key is deleted once the node
    /// answers, until the lease has certainly expired.
    pub async fn release(self) -> Result<()> {
        // Taking the state first disarms Drop's background release and
        // stops renewal of this lease.
        if !self.lease.take_for_release() {
            crate::metrics::release(self.lease.class, ReleaseOutcome::NotHeld);
            return Err(Error::NotHeld);
        }
        // Renewal has stopped: if this future is dropped before the release
        // is answered, the background release takes over.
        let mut pending = PendingRelease {
            manager: &self.manager,
            lease: Some(self.lease.clone()),
        };
        let released = release_lease(self.manager.client(), &self.lease).await;
        // Decided: nothing left to do. An error (the node unavailable or
        // busy past the request timeout) leaves the key possibly ours:
        // `pending` hands it to the background release, as a drop would
        // (the error is counted here, the background outcome there).
        if released.is_ok() {
            pending.lease = None;
        }
        match released {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::NotHeld),
            Err(e) => Err(e),
        }
    }

    /// The lease's current TTL.
    pub(crate) fn ttl(&self) -> Duration {
        self.lease.ttl()
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Lost leases too: the key may still hold our token.
        if self.lease.take_for_release() {
            self.manager.release_in_background(self.lease.clone());
        }
    }
}

/// Registers an auto-renewed lease for renewal again when an `extend`
/// ends, so that renewal follows its outcome.
struct Reschedule<'a> {
    guard: &'a LockGuard,
}

impl Drop for Reschedule<'_> {
    fn drop(&mut self) {
        let lease = &self.guard.lease;
        if lease.auto_renew && lease.is_held() {
            self.guard.manager.register(lease.clone());
        }
    }
}

/// An extend sent but not answered: dropped armed (an error, or the
/// future dropped), the extend may still land, and the lease counts on the
/// shorter TTL.
struct ExtendUnknown<'a> {
    lease: &'a Lease,
    sent_at: Instant,
    ttl: Duration,
    armed: bool,
}

impl Drop for ExtendUnknown<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.lease.extend_unknown(self.sent_at, self.ttl);
        }
    }
}

/// A release in progress; dropped unfinished or after an error, it hands
/// the lease to the background release.
struct PendingRelease<'a> {
    manager: &'a LockManager,
    lease: Option<Arc<Lease>>,
}

impl Drop for PendingRelease<'_> {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.manager.release_in_background(lease);
        }
    }
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &String::from_utf8_lossy(self.key()))
            .field("fencing_token", &self.lease.fence)
            .field("lost", &self.lease.is_lost())
            .finish_non_exhaustive()
    }
}
