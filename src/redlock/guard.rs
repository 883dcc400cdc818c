//! [`RedlockGuard`]: a lease held by a majority of instances.

use std::time::Duration;

use futures_util::future::{join_all, select_all};
use tokio::time::Instant;

use super::RedlockManager;
use super::validity;
use crate::error::{Error, Result};
use crate::lock::LockGuard;

/// A Redlock lease. It is trusted until [`validity_deadline`]: the latest
/// instant a majority of instances confirmed (acquire, renewal or extend)
/// less the drift allowance. Dropping it releases the lease in the
/// background on every instance that took it (lost ones included); an
/// instance that did not take it in time was handed to its own background
/// release by the acquire, when its request may have set the key.
///
/// [`validity_deadline`]: Self::validity_deadline
#[must_use = "dropping a guard releases the lock at once"]
pub struct RedlockGuard {
    manager: RedlockManager,
    key: Vec<u8>,
    token: u128,
    /// The acquire's TTL: the longest an instance that did not take the
    /// lock in time may keep our token (extends go only to held ones).
    ttl: Duration,
    /// Per instance: the guard where the lock was taken.
    guards: Vec<Option<LockGuard>>,
    /// Set by `release`, so that drop does not release again.
    released: bool,
    /// Whether the instances renew it (decides the TTL floor of `extend`).
    auto_renew: bool,
    /// Set once the lease was seen lost: it stays lost, even if a renewal
    /// lands within the drift allowance afterwards.
    lost: std::sync::atomic::AtomicBool,
}

impl RedlockGuard {
    pub(super) fn new(
        manager: RedlockManager,
        key: Vec<u8>,
        token: u128,
        ttl: Duration,
        guards: Vec<Option<LockGuard>>,
        auto_renew: bool,
    ) -> RedlockGuard {
        RedlockGuard {
            manager,
            key,
            token,
            ttl,
            guards,
            released: false,
            auto_renew,
            lost: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The key as given to [`RedlockManager::lock`].
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// Instances whose lease is held and not known lost.
    pub fn instances_held(&self) -> usize {
        self.held().count()
    }

    fn held(&self) -> impl Iterator<Item = &LockGuard> {
        self.guards.iter().flatten().filter(|g| !g.is_lost())
    }

    /// Until when the lease may be trusted, on this process's monotonic
    /// clock: each instance still holding it is trusted until its
    /// confirmed-until instant less `ttl × drift_factor + 2 ms` (with the
    /// TTL it confirmed), and the lease until the `quorum`-th latest of
    /// those. In the past once fewer than a quorum hold it.
    pub fn validity_deadline(&self) -> Instant {
        let factor = self.manager.drift_factor();
        let deadlines: Vec<Instant> = self
            .held()
            .map(|g| validity::instance_deadline(g.valid_until(), g.ttl(), factor))
            .collect();
        validity::quorum_deadline(deadlines, self.manager.quorum())
            // Fewer than a quorum: already over.
            .unwrap_or_else(|| Instant::now() - Duration::from_nanos(1))
    }

    /// True once the validity deadline has passed; stays true from then on
    /// (a renewal landing within the drift allowance afterwards does not
    /// make the lease trusted again).
    pub fn is_lost(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.lost.load(Relaxed) {
            return true;
        }
        // The deadline first: with fewer than a quorum held it is "just
        // before now", which must not be later than the time it is
        // compared with.
        let deadline = self.validity_deadline();
        let lost = Instant::now() >= deadline;
        if lost {
            self.lost.store(true, Relaxed);
        }
        lost
    }

    /// Resolves when the validity deadline passes without a majority
    /// renewal or extend, or when so many instances report their lease lost
    /// that no majority is left.
    pub async fn lost(&self) {
        loop {
            if self.is_lost() {
                return;
            }
            let deadline = self.validity_deadline();
            let losses: Vec<_> = self.held().map(|g| Box::pin(g.lost())).collect();
            if losses.is_empty() {
                tokio::time::sleep_until(deadline).await;
            } else {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    _ = select_all(losses) => {}
                }
            }
        }
    }

    /// Sets the lease to `ttl` from now on every instance that holds it, in
    /// parallel. Succeeds when a majority confirmed it and validity is left
    /// (`sent + ttl - drift` still ahead); otherwise [`Error::NotHeld`] and
    /// the lease is no longer trusted beyond its current deadline.
    /// [`Error::InvalidArgument`], before anything is sent, for a `ttl` not
    /// above the drift allowance or refused by any instance's TTL checks
    /// (above its `max_ttl`, or below its floor).
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        for manager in self.manager.managers() {
            manager.check_ttl(ttl, self.auto_renew)?;
        }
        let drift = validity::drift(ttl, self.manager.drift_factor());
        if ttl <= drift {
            return Err(Error::InvalidArgument(format!(
                "ttl {ttl:?} is not above the drift allowance {drift:?}"
            )));
        }
        if self.is_lost() {
            return Err(Error::NotHeld);
        }
        let timeout = self.manager.instance_timeout();
        let sent = Instant::now();
        let confirmed = join_all(self.held().map(|g| async move {
            matches!(
                tokio::time::timeout(timeout, g.extend(ttl)).await,
                Ok(Ok(()))
            )
        }))
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
        let deadline = validity::deadline(sent, ttl, self.manager.drift_factor());
        if confirmed >= self.manager.quorum() && Instant::now() < deadline {
            Ok(())
        } else {
            Err(Error::NotHeld)
        }
    }

    /// Releases the lease on every instance (compare-and-delete by token,
    /// also on instances that did not take it in time), each within the
    /// instance timeout. [`Error::NotHeld`] when the validity had already
    /// run out; the instances are cleaned up either way. Unreachable
    /// instances keep at most a lease that expires after its TTL.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let lost = self.is_lost();
        let all: Vec<usize> = (0..self.manager.instances()).collect();
        // A lost instance's lease may carry an extend's TTL.
        let ttl = self
            .guards
            .iter()
            .flatten()
            .map(LockGuard::ttl)
            .fold(self.ttl, Duration::max);
        for guard in self.guards.drain(..).flatten() {
            guard.disarm();
        }
        self.manager
            .release_on(&self.key, self.token, ttl, &all)
            .await;
        if lost { Err(Error::NotHeld) } else { Ok(()) }
    }
}

impl Drop for RedlockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Each instance guard, lost or not, releases its own lease by token
        // in the background (once). An instance that did not take the lock
        // in time needs nothing here: its acquire, failed or cut off by the
        // instance timeout after sending, already handed what it may have
        // set to that instance's background release (and one that could
        // not have written anything, or answered that another holder has
        // the key, left nothing).
        self.guards.clear();
    }
}

impl std::fmt::Debug for RedlockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedlockGuard")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("instances_held", &self.instances_held())
            .field("validity_deadline", &self.validity_deadline())
            .finish_non_exhaustive()
    }
}
