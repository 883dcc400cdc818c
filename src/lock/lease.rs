//! [`Lease`]: the record of one acquisition that the guard and the renewal
//! task share, and its release on the server.
//!
//! Life of a lease (`Lease::state`): held → lost (renewal or an extend found
//! it gone or taken, renewal could not confirm it in time, or its
//! `valid_until` passed) → released; or held → released. A lost lease is
//! still compare-and-deleted by token on release and on drop: a renewal or
//! extend whose reply never came back may have kept our token on the server.
//! Leases that no guard ever held (the cleanup of a failed acquire, a
//! Redlock release by token) are only ever released.
//!
//! `valid_until` never runs ahead of what the server may hold: extends of
//! one lease take turns, each one first lowers it to its own send time plus
//! TTL (waking `lost()` waiters, who then wait for the lowered bound), and
//! only the extend that got its reply sets it again — unless the lease was
//! reported lost meanwhile, which is never taken back; a renewal
//! confirms only while no extend is in flight (a confirmation that crossed
//! the start of one is taken back), and renewals of an older schedule are
//! void: `confirm_renewal` checks the schedule the renewal was sent under
//! against the lease's inside its compare-and-swap loop, so an extend that
//! ran entirely between the renewal task's own check and the confirmation
//! is not undone.
//!
//! Release tells apart a key it deleted, a key that was absent, and a key
//! held by another token. When an attempt went unanswered (timed out, or
//! its connection broke) and a resend to the same node then finds the key
//! absent, that attempt most likely deleted it: that counts as released if
//! the first attempt was sent while the lease was held and valid, and the
//! slot map (its version, and so the slot's primary) did not change
//! between the first attempt and the reply. After a failover, or any other
//! change of the map, the resend may reach a node that never had the
//! key — the lease may have been lost with the old primary's writes — and
//! an absent key is not held.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::token::{FencingToken, lock_value, lock_value_prefix};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metrics::ReleaseOutcome;
use crate::redirect::RetryCause;
use crate::request::Request;
use crate::router::Retry;
use crate::scripts::{self, Released};

/// Held by a guard.
const HELD: u8 = 0;
/// Held by a guard that knows it lost it (the key may still hold our token).
const LOST: u8 = 1;
/// Released (or handed to the background release) while held.
const RELEASED: u8 = 2;
/// Released (or handed to the background release) after it was lost.
const RELEASED_LOST: u8 = 3;
/// Never held by a guard: a release by token (Redlock's cleanup).
const UNGUARDED: u8 = 4;
/// Never held by a guard: the cleanup of an acquire that failed or was
/// cancelled after sending, whose request may have set the key.
const ORPHAN: u8 = 5;
/// [`ORPHAN`] of a fenced acquire: the fence is unknown, so the key is
/// released if its value starts with our token.
const ORPHAN_FENCED: u8 = 6;

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
    /// An extend is in flight (extends of one lease take turns).
    extending: AtomicBool,
    /// Wakes `lost()` waiters (on loss) and extends waiting for their turn
    /// (when one ends); each re-checks its own condition.
    pub(super) changed: Notify,
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
            extending: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// A record of what an acquire that failed (or was dropped) after
    /// sending may have left on `key`: released by token, never renewed,
    /// never counted as held. Fenced: the fence is unknown, so any value
    /// that starts with the token is ours.
    /// `ttl` is the acquire's: how long the key may live after the last
    /// attempt landed, and so how long the background release keeps
    /// trying.
    pub(crate) fn orphan(
        key: Box<[u8]>,
        slot: u16,
        token: u128,
        fenced: bool,
        ttl: Duration,
        class: &'static str,
        retry: Retry,
    ) -> Lease {
        let state = if fenced { ORPHAN_FENCED } else { ORPHAN };
        Lease::unheld(key, slot, token, ttl, class, retry, state)
    }

    /// A record for releasing `token`'s lease on `key` without a guard;
    /// `ttl` bounds how long that lease may live, and so how long the
    /// background release keeps trying.
    pub(crate) fn unguarded(
        key: Box<[u8]>,
        slot: u16,
        token: u128,
        ttl: Duration,
        class: &'static str,
        retry: Retry,
    ) -> Lease {
        Lease::unheld(key, slot, token, ttl, class, retry, UNGUARDED)
    }

    /// A record no guard holds, in `state` (an orphan or unguarded kind),
    /// whose key may carry our token for `ttl` from now.
    fn unheld(
        key: Box<[u8]>,
        slot: u16,
        token: u128,
        ttl: Duration,
        class: &'static str,
        retry: Retry,
        state: u8,
    ) -> Lease {
        let now = Instant::now();
        let mut lease = Lease::new(key, slot, token, None, ttl, false, class, now);
        lease.retry = retry;
        lease.state = AtomicU8::new(state);
        lease
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

    /// Records that a renewal of schedule `schedule`, sent at `sent_at` for
    /// `ttl`, was confirmed. It cannot move `valid_until` while an extend is
    /// in flight (the extend sets it when it ends), nor once an extend has
    /// started after the renewal was scheduled: every extend bumps the
    /// schedule before it lowers `valid_until`, so a load of `valid_until`
    /// that sees any of an extend's effects is followed by a schedule
    /// check that sees its bump, and a CAS that an extend crossed fails
    /// (the extend changed `valid_until`) and re-checks. An extend that
    /// starts while this runs sets its flag before lowering `valid_until`,
    /// so a raise that may have crossed it is taken back (a CAS that fails
    /// means the extend's own bound is already in place).
    pub(crate) fn confirm_renewal(&self, sent_at: Instant, ttl: Duration, schedule: u32) {
        let confirmed = since_epoch(sent_at + ttl);
        let mut current = self.valid_until.load(Ordering::SeqCst);
        loop {
            if self.extending.load(Ordering::SeqCst)
                || self.schedule.load(Ordering::SeqCst) != schedule
                || confirmed <= current
            {
                return;
            }
            match self.valid_until.compare_exchange(
                current,
                confirmed,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if self.extending.load(Ordering::SeqCst) {
            let _ = self.valid_until.compare_exchange(
                confirmed,
                current,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// Before an extend to `ttl` sent at `sent_at`: the lease may end as
    /// soon as that (a shorter TTL cuts it on the server even if the reply
    /// is lost), and renewals already in flight must not move it later.
    /// `lost()` waiters are woken, so that they wait for the lowered bound.
    pub(super) fn extending(&self, sent_at: Instant, ttl: Duration) {
        // Bumped before `valid_until` moves (see `confirm_renewal`).
        self.schedule.fetch_add(1, Ordering::SeqCst);
        self.valid_until
            .fetch_min(since_epoch(sent_at + ttl), Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// After an extend to `ttl` sent at `sent_at` was applied by the
    /// server: true when the lease is still held, and `valid_until` then
    /// counts from the extend. False when the lease was reported lost (or
    /// released) meanwhile — by `mark_lost`, or because its lowered
    /// `valid_until` passed while the reply was on its way: a loss once
    /// reported is never taken back, and `valid_until` is not raised
    /// (the TTL is kept, so that a release keeps trying long enough).
    /// A renewal sent before the extend, with the old TTL, may still land
    /// after it: with auto-renewal the lease counts on the shorter of the
    /// two TTLs until the next renewal (due at once) confirms the new one.
    pub(super) fn extended(&self, sent_at: Instant, ttl: Duration) -> bool {
        let counted = if self.auto_renew {
            ttl.min(self.ttl())
        } else {
            ttl
        };
        if ttl > self.ttl() || self.is_held() {
            self.set_ttl(ttl);
        }
        // The state is checked after the new bound is in place: a loss
        // reported before that check is seen by it and the bound is taken
        // back; one reported after it read the new bound.
        if self.is_lost() || !self.is_held() {
            return false;
        }
        let previous = self
            .valid_until
            .swap(since_epoch(sent_at + counted), Ordering::SeqCst);
        if self.is_lost() || !self.is_held() {
            let _ = self.valid_until.compare_exchange(
                since_epoch(sent_at + counted),
                previous,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
            return false;
        }
        true
    }

    /// After an extend to `ttl` sent at `sent_at` failed without an answer:
    /// it may still land, so the lease counts on the shorter TTL, and so
    /// does renewal (a renewal with the longer one could be overtaken by
    /// it).
    pub(super) fn extend_unknown(&self, sent_at: Instant, ttl: Duration) {
        if ttl < self.ttl() {
            self.set_ttl(ttl);
        }
        self.valid_until
            .fetch_min(since_epoch(sent_at + ttl), Ordering::AcqRel);
    }

    /// Waits until no other extend of this lease is in flight and takes the
    /// turn; it is given back when the returned value drops.
    pub(super) async fn extend_turn(&self) -> ExtendTurn<'_> {
        loop {
            let changed = self.changed.notified();
            if self
                .extending
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return ExtendTurn { lease: self };
            }
            changed.await;
        }
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

    /// Lost, or held past `valid_until` (which marks it lost now).
    pub(crate) fn is_lost(&self) -> bool {
        match self.state.load(Ordering::Acquire) {
            LOST | RELEASED_LOST => true,
            HELD => self.expire_if_due(),
            _ => false,
        }
    }

    /// Held → lost once `valid_until` has passed: the holder can no longer
    /// know it holds the lease. Counted in `shardlock_leases_lost_total`
    /// only with auto-renewal (renewal failed to confirm it); a lease
    /// without auto-renewal that runs out its TTL has simply ended.
    fn expire_if_due(&self) -> bool {
        if Instant::now() < self.valid_until() {
            return false;
        }
        self.end_as_lost(self.auto_renew);
        matches!(self.state.load(Ordering::Acquire), LOST | RELEASED_LOST)
    }

    /// Held → lost; wakes every `lost()` waiter. False if it was not held.
    pub(crate) fn mark_lost(&self) -> bool {
        self.end_as_lost(true)
    }

    fn end_as_lost(&self, counted: bool) -> bool {
        let changed = self
            .state
            .compare_exchange(HELD, LOST, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if changed {
            self.changed.notify_waiters();
            if counted {
                crate::metrics::lease_lost(self.class);
            }
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

    /// Held or lost → released, for a guard's release or drop: true when
    /// the lease's key is to be compare-and-deleted (once per lease).
    pub(super) fn take_for_release(&self) -> bool {
        if self.mark_released() {
            return true;
        }
        let lost = self
            .state
            .compare_exchange(LOST, RELEASED_LOST, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if lost {
            // A renewal or extend that went unanswered may have set our
            // token for another TTL from about now: the background release
            // keeps trying that long (see `release_gives_up_at`).
            self.valid_until
                .fetch_max(since_epoch(Instant::now() + self.ttl()), Ordering::AcqRel);
        }
        lost
    }

    /// When a background release of this lease stops trying: once the key
    /// has certainly expired on the server by its TTL. For a lease released
    /// while held that is one TTL past its `valid_until` (a renewal sent
    /// before then may have landed with its reply lost); for a lost lease,
    /// an orphan or an unguarded release, `valid_until` was set to the end
    /// of the longest TTL the key may still carry when it was handed over.
    /// Callers add one response timeout (a request may land that much after
    /// its send).
    pub(crate) fn release_gives_up_at(&self) -> Instant {
        let until = self.valid_until();
        if self.state.load(Ordering::Acquire) == RELEASED {
            until.checked_add(self.ttl()).unwrap_or(until)
        } else {
            until
        }
    }

    /// The `release.lua` arguments for this lease: its value, or for the
    /// orphan of a fenced acquire (whose fence is unknown) the value's
    /// prefix and the `prefix` flag.
    pub(crate) fn release_argv(&self) -> Vec<Vec<u8>> {
        if self.state.load(Ordering::Acquire) == ORPHAN_FENCED {
            vec![
                lock_value_prefix(self.token).into_bytes(),
                b"prefix".to_vec(),
            ]
        } else {
            vec![self.value().into_bytes()]
        }
    }

    /// Records a release's outcome: orphans of failed acquires in
    /// `shardlock_orphan_releases_total`, every other release in
    /// `shardlock_releases_total`.
    pub(crate) fn record_release(&self, outcome: ReleaseOutcome) {
        if matches!(self.state.load(Ordering::Acquire), ORPHAN | ORPHAN_FENCED) {
            crate::metrics::orphan_release(self.class, outcome);
        } else {
            crate::metrics::release(self.class, outcome);
        }
    }
}

/// The turn of one extend; gives it back to the next one when dropped.
pub(super) struct ExtendTurn<'a> {
    lease: &'a Lease,
}

impl Drop for ExtendTurn<'_> {
    fn drop(&mut self) {
        self.lease.extending.store(false, Ordering::SeqCst);
        self.lease.changed.notify_waiters();
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

/// Compare-and-delete of `lease` on the server, recorded by outcome: true
/// when it was still ours and is now gone (see [`LockGuard::release`] for a
/// resend that finds it absent). Orphans of failed acquires are recorded
/// apart, in `shardlock_orphan_releases_total`.
pub(crate) async fn release_lease(client: &Client, lease: &Lease) -> Result<bool> {
    let released = release_lease_unrecorded(client, lease).await;
    lease.record_release(match released {
        Ok(true) => ReleaseOutcome::Released,
        Ok(false) => ReleaseOutcome::NotHeld,
        Err(_) => ReleaseOutcome::Error,
    });
    released
}

/// [`release_lease`] without recording the outcome: for a caller that
/// tries again after an error and records once, when it is decided.
pub(crate) async fn release_lease_unrecorded(client: &Client, lease: &Lease) -> Result<bool> {
    let state = lease.state.load(Ordering::Acquire);
    let request = if state == ORPHAN_FENCED {
        scripts::release_prefix(&lease.key, &lock_value_prefix(lease.token))
    } else {
        scripts::release(&lease.key, &lease.value())
    };
    // Read before sending: a renewal that was in flight when the lease was
    // taken for release may still raise it.
    let valid_until = lease.valid_until();
    let (replies, resent) = send_release(client, lease, &request).await?;
    scripts::released(&replies).map(|found| match found {
        Released::Deleted => true,
        Released::Absent => {
            absent_counts_as_released(resent, state == RELEASED, Instant::now() < valid_until)
        }
        Released::Other => false,
    })
}

/// How a release's replies came back after earlier attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resent {
    /// The first attempt got the replies.
    No,
    /// An earlier attempt went unanswered (timed out or lost its
    /// connection: it may have run) and the replies came from the node
    /// that attempt went to: the slot map did not change in between (same
    /// version, same owner of the slot).
    ToTheSameNode,
    /// Resent after an attempt that went unanswered, but the slot map
    /// changed in between (a failover, a refresh, a MOVED): the replies may
    /// come from another node than the one the first attempt reached.
    Elsewhere,
    /// Resent only after attempts that certainly did not run (refused,
    /// backoff, a server's error reply).
    AfterRefusals,
}

/// Whether a release that found the key absent counts as released: only
/// when a resend went to the node an unanswered earlier attempt went to,
/// the lease was held when taken for release, and the reply that found the
/// key absent came back before the lease's `valid_until` (read before the
/// first attempt). `valid_until` is never later than the key's expiry on
/// the server, so the key cannot have expired by its TTL by then: the
/// unanswered attempt deleted it. A reply after `valid_until` may have
/// found a key that expired (the critical section outlived the lease), and
/// after a failover the key may be absent because the lease was lost with
/// the old primary's writes: neither counts.
fn absent_counts_as_released(resent: Resent, held: bool, answered_while_valid: bool) -> bool {
    resent == Resent::ToTheSameNode && held && answered_while_valid
}

/// Where `slot` is served in the slot map in use: its version and the
/// slot's primary.
fn owner_of(client: &Client, slot: u16) -> (u64, Option<std::sync::Arc<str>>) {
    let topology = client.topology();
    let owner = topology
        .primary_of_slot(slot)
        .map(|node| node.addr().clone());
    (topology.version(), owner)
}

/// Sends a release within one request timeout, retrying unavailability as
/// the lease's `retry` allows; also tells how the replies relate to earlier
/// attempts that went unanswered (see [`Resent`]).
async fn send_release(
    client: &Client,
    lease: &Lease,
    request: &Request,
) -> Result<(Vec<Value>, Resent)> {
    let router = client.router();
    let started = Instant::now();
    let deadline = started + client.request_timeout();
    let backoff = router.shared.config.retry_backoff;
    let first_owner = owner_of(client, lease.slot);
    let mut unanswered = false;
    let mut attempts: u32 = 0;
    loop {
        // Redirects are followed inside; every unavailability comes back
        // here, so that it is known whether the request may have run.
        match router
            .execute(lease.slot, request, deadline, Retry::RedirectsOnly)
            .await
        {
            Ok(replies) => {
                // Read after the reply: a MOVED followed inside, or a
                // failover the router learned of, changed the map.
                let resent = match (unanswered, owner_of(client, lease.slot) == first_owner) {
                    (true, true) => Resent::ToTheSameNode,
                    (true, false) => Resent::Elsewhere,
                    (false, _) if attempts == 0 => Resent::No,
                    (false, _) => Resent::AfterRefusals,
                };
                return Ok((replies, resent));
            }
            Err(Error::DeadlineExceeded {
                attempts: tried,
                last,
                ..
            }) => {
                attempts = attempts.saturating_add(tried);
                // A request written before its batching worker ended with
                // its runtime may have run too.
                unanswered |= matches!(
                    last,
                    RetryCause::TimedOut | RetryCause::ConnectionLost | RetryCause::WorkerStopped
                );
                let now = Instant::now();
                if lease.retry == Retry::RedirectsOnly || now >= deadline {
                    return Err(Error::DeadlineExceeded {
                        attempts,
                        elapsed: now - started,
                        last,
                    });
                }
                let delay = backoff.delay(attempts.saturating_sub(1));
                tokio::time::sleep_until(deadline.min(now + delay)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An absent key counts as released only after an unanswered attempt
    /// whose resend went to the same node, for a lease held when taken for
    /// release, with the reply back before its `valid_until`.
    /// A renewal confirmed after an extend ran entirely between the
    /// renewal task's schedule check and its confirmation (a renewal with
    /// the old 10 s TTL, the extend to 1 s) does not raise `valid_until`
    /// past the extend's bound.
    #[tokio::test]
    async fn a_renewal_confirmed_after_a_whole_extend_does_not_undo_it() {
        let sent_renewal = Instant::now();
        let lease = Lease::new(
            b"k".to_vec().into(),
            0,
            1,
            None,
            Duration::from_secs(10),
            true,
            "default",
            sent_renewal,
        );
        let scheduled = lease.schedule();
        {
            let _turn = lease.extend_turn().await;
            let sent_extend = Instant::now();
            lease.extending(sent_extend, Duration::from_secs(1));
            assert!(lease.extended(sent_extend, Duration::from_secs(1)));
        }
        let extended = lease.valid_until();
        lease.confirm_renewal(sent_renewal, Duration::from_secs(10), scheduled);
        assert_eq!(lease.valid_until(), extended);
        // A renewal of the current schedule still confirms.
        let sent = Instant::now();
        lease.confirm_renewal(sent, Duration::from_secs(10), lease.schedule());
        assert_eq!(lease.valid_until(), sent + Duration::from_secs(10));
    }

    #[test]
    fn absent_counts_as_released_only_after_a_resend_to_the_same_node() {
        let table = [
            (Resent::ToTheSameNode, true, true, true),
            (Resent::ToTheSameNode, false, true, false),
            (Resent::ToTheSameNode, true, false, false),
            (Resent::Elsewhere, true, true, false),
            (Resent::AfterRefusals, true, true, false),
            (Resent::No, true, true, false),
        ];
        for (resent, held, valid, expected) in table {
            assert_eq!(
                absent_counts_as_released(resent, held, valid),
                expected,
                "{resent:?} held {held} valid {valid}"
            );
        }
    }
}
