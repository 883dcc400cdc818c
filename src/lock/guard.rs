//! [`LockGuard`]: a held lease, and the [`Lease`] record it shares with the
//! renewal task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::manager::LockManager;
use super::token::{FencingToken, lock_value};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metrics::ReleaseOutcome;
use crate::router::Retry;
use crate::scripts;

const HELD: u8 = 0;
const LOST: u8 = 1;
const RELEASED: u8 = 2;

/// One acquisition: what the renewal task and the guard both need. Kept
/// small: a million of these are held at once in the memory benchmark.
pub(crate) struct Lease {
    /// The full key (namespace included).
    pub(crate) key: Box<[u8]>,
    pub(crate) slot: u16,
    pub(crate) token: u128,
    pub(crate) fence: Option<FencingToken>,
    /// Current lease length in milliseconds (changed by `extend`).
    ttl_ms: std::sync::atomic::AtomicU32,
    /// Renewed by the renewal task (decides the shortest allowed TTL).
    pub(crate) auto_renew: bool,
    /// The key's class, for metrics.
    pub(crate) class: &'static str,
    /// How release and extend retry (Redlock's leases give up at the
    /// first unavailability: other instances make up for it).
    pub(crate) retry: Retry,
    acquired_at: Instant,
    /// Until when the lease is known held: the send time of the last
    /// confirmed acquire, renewal or extend plus its TTL, in nanoseconds
    /// after [`epoch`].
    valid_until: AtomicU64,
    /// Renewal schedule; bumped by `extend`, which re-registers the lease.
    schedule: AtomicU32,
    state: AtomicU8,
    lost: Notify,
}

impl Lease {
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per field of the record, named at each of the three call sites"
    )]
    pub(crate) fn new(
        key: Box<[u8]>,
        slot: u16,
        token: u128,
        fence: Option<FencingToken>,
        ttl: Duration,
        auto_renew: bool,
        class: &'static str,
        sent_at: Instant,
    ) -> Lease {
        Lease {
            key,
            slot,
            token,
            fence,
            ttl_ms: std::sync::atomic::AtomicU32::new(ttl_ms(ttl)),
            auto_renew,
            class,
            retry: Retry::UntilDeadline,
            acquired_at: Instant::now(),
            valid_until: AtomicU64::new(since_epoch(sent_at + ttl)),
            schedule: AtomicU32::new(0),
            state: AtomicU8::new(HELD),
            lost: Notify::new(),
        }
    }

    /// What the lock key holds while this lease is held.
    pub(crate) fn value(&self) -> String {
        lock_value(self.token, self.fence)
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.load(Ordering::Relaxed).into())
    }

    pub(crate) fn set_ttl(&self, ttl: Duration) {
        self.ttl_ms.store(ttl_ms(ttl), Ordering::Relaxed);
    }

    /// Records that the lease was confirmed (renewed or extended) by a
    /// request sent at `sent_at` for `ttl`.
    pub(crate) fn confirm(&self, sent_at: Instant, ttl: Duration) {
        self.valid_until
            .fetch_max(since_epoch(sent_at + ttl), Ordering::AcqRel);
    }

    /// Before an extend to `ttl` sent at `sent_at`: the lease may end as
    /// soon as that (a shorter TTL cuts it on the server even if the reply
    /// is lost), and renewals already in flight must not move it later.
    fn extending(&self, sent_at: Instant, ttl: Duration) {
        self.schedule.fetch_add(1, Ordering::AcqRel);
        self.valid_until
            .fetch_min(since_epoch(sent_at + ttl), Ordering::AcqRel);
    }

    /// The current renewal schedule (the renewal task's entries carry it).
    pub(crate) fn schedule(&self) -> u32 {
        self.schedule.load(Ordering::Acquire)
    }

    /// Until when the lease is known held (see the field).
    pub(crate) fn valid_until(&self) -> Instant {
        epoch() + Duration::from_nanos(self.valid_until.load(Ordering::Acquire))
    }

    pub(crate) fn is_held(&self) -> bool {
        self.state.load(Ordering::Acquire) == HELD
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.state.load(Ordering::Acquire) == LOST
    }

    /// Held → lost; wakes every `lost()` waiter. False if it was not held.
    pub(crate) fn mark_lost(&self) -> bool {
        let changed = self
            .state
            .compare_exchange(HELD, LOST, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.lost.notify_waiters();
            crate::metrics::lease_lost(self.class);
            crate::metrics::lease_ended(self.class, self.acquired_at.elapsed());
        }
        changed
    }

    /// Held → released. False if it was not held (lost, or released before).
    pub(crate) fn mark_released(&self) -> bool {
        let changed = self
            .state
            .compare_exchange(HELD, RELEASED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            crate::metrics::lease_ended(self.class, self.acquired_at.elapsed());
        }
        changed
    }
}

/// A fixed instant of this process that validity times count from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    Instant::from_std(*EPOCH.get_or_init(std::time::Instant::now))
}

fn since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds of a validated TTL (at most `u32::MAX` ms, checked on input).
fn ttl_ms(ttl: Duration) -> u32 {
    u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX)
}

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

    /// True once the lease is known lost (renewal found it gone or taken,
    /// or could not confirm it before it expired).
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Resolves when the lease is lost: renewal found the key gone or held
    /// by another token, or could not renew it before it expired. Pending
    /// for as long as the lease is held; never resolves after a release.
    pub async fn lost(&self) {
        loop {
            let notified = self.lease.lost.notified();
            if self.lease.is_lost() {
                return;
            }
            notified.await;
        }
    }

    /// Sets the lease to expire `ttl` from now, if it is still ours.
    /// [`Error::NotHeld`] when it was lost or taken meanwhile.
    pub async fn extend(&self, ttl: Duration) -> Result<()> {
        self.manager.check_ttl(ttl, self.lease.auto_renew)?;
        if !self.lease.is_held() {
            return Err(Error::NotHeld);
        }
        let request = scripts::extend(&self.lease.key, &self.lease.value(), ttl.as_millis() as u64);
        let sent_at = Instant::now();
        self.lease.extending(sent_at, ttl);
        // The old renewal schedule is void from here; a new one starts when
        // this call ends, however it ends (success, error, or dropped).
        let _reschedule = Reschedule { guard: self };
        let replies = self
            .manager
            .client()
            .execute_with(self.lease.slot, &request, self.lease.retry)
            .await?;
        if scripts::compared(&replies, "extend")? {
            self.lease.set_ttl(ttl);
            self.lease.confirm(sent_at, ttl);
            Ok(())
        } else {
            self.lease.mark_lost();
            Err(Error::NotHeld)
        }
    }

    /// Stops renewing and forgets the lease without releasing it (the caller
    /// releases it by token).
    pub(crate) fn disarm(self) {
        self.lease.mark_released();
    }

    /// Releases the lease (compare-and-delete: only if it is still ours).
    /// [`Error::NotHeld`] when it had already expired, been lost or taken.
    pub async fn release(self) -> Result<()> {
        // Taking the state first disarms Drop's background release and
        // stops renewal of this lease.
        if !self.lease.mark_released() {
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
        pending.lease = None;
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
        if self.lease.mark_released() {
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

/// A release in progress; dropped unfinished, it hands the lease to the
/// background release.
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

/// Compare-and-delete of `lease` on the server, recorded by outcome: true
/// when it was still ours and is now gone.
pub(crate) async fn release_lease(client: &Client, lease: &Lease) -> Result<bool> {
    let request = scripts::release(&lease.key, &lease.value());
    let released = match client.execute_with(lease.slot, &request, lease.retry).await {
        Ok(replies) => scripts::compared(&replies, "release"),
        Err(e) => Err(e),
    };
    crate::metrics::release(
        lease.class,
        match released {
            Ok(true) => ReleaseOutcome::Released,
            Ok(false) => ReleaseOutcome::NotHeld,
            Err(_) => ReleaseOutcome::Error,
        },
    );
    released
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
