//! [`LockRequest`]: how to ask for one lock, and the acquire protocol.
//!
//! Unfenced acquire is one round trip and no Lua: `SET key value NX PX ttl
//! GET`. Its reply tells three cases apart: nil (we set it), our own value
//! (an earlier attempt of this same acquire set it and its reply was lost:
//! acquired), anything else (held by someone else). Fenced acquire is one
//! script call (`fenced_acquire.lua`) with the same three outcomes.
//!
//! A failed acquire leaves no lease behind: once an attempt has sent its
//! request, the key may hold our token even if the reply never came back.
//! If the acquire then fails (deadline passed, an unavailability under
//! Redlock's `RedirectsOnly`, the recognised path's extend failing, a
//! replication timeout whose own release failed), or its future is dropped
//! before the attempt's outcome is known, the key is released by token in
//! the background, through the renewal task's release queue: best effort
//! (kept trying until the key has certainly expired, see
//! `Lease::release_gives_up_at`), counted in
//! `shardlock_orphan_releases_total`, never in the held-leases
//! gauge. An attempt that found the lock held by someone else leaves
//! nothing to release, nor does an acquire whose one attempt was never
//! written (`DeadlineExceeded` after a single attempt that found the
//! connection refused, the node in reconnect backoff, or no node for the
//! slot): a dead Redlock instance costs no background release per acquire.
//!
//! Cancel safety: nothing is registered before the reply is in hand, and no
//! task is spawned; dropping an `acquire()` future after it sent a request
//! hands that request's possible lease to the background release, as a
//! failure does.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use super::guard::LockGuard;
use super::lease::Lease;
use super::manager::LockManager;
use super::token::{FencingToken, lock_value, new_token};
use super::wait::until_acquired;
use crate::error::{Error, Result};
use crate::redirect::RetryCause;
use crate::request::Request;
use crate::router::Retry;
use crate::scripts;

/// A request for one lock, built by [`LockManager::lock`].
#[derive(Debug)]
#[must_use = "a lock request does nothing until .acquire() or .try_acquire() is awaited"]
pub struct LockRequest {
    manager: LockManager,
    key: Vec<u8>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    fenced: bool,
    auto_renew: bool,
    replicas: Option<u32>,
    /// Set by Redlock, which uses one token on every instance.
    token: Option<u128>,
    retry: Retry,
}

/// What one attempt found.
enum Attempt {
    Acquired(Option<FencingToken>),
    /// The key already holds our value: an earlier attempt of this acquire
    /// set it and its reply was lost. Its TTL counts from that attempt.
    Recognized,
    Held,
}

impl LockRequest {
    pub(crate) fn new(manager: LockManager, key: Vec<u8>) -> LockRequest {
        LockRequest {
            manager,
            key,
            ttl: None,
            wait: None,
            fenced: false,
            auto_renew: true,
            replicas: None,
            token: None,
            retry: Retry::UntilDeadline,
        }
    }

    /// One instance of a Redlock acquire: `token` instead of a fresh one
    /// (the same on every instance, so any of them can be released by it),
    /// and no retrying past an unavailability, here and in the lease's
    /// release and extend (the other instances make up for it).
    pub(crate) fn for_redlock(mut self, token: u128) -> Self {
        self.token = Some(token);
        self.retry = Retry::RedirectsOnly;
        self
    }

    /// Lease length (default: the manager's `default_ttl`). With
    /// auto-renewal the lease is renewed while the guard lives; without it
    /// the lease ends after `ttl` whatever the holder does.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`acquire`](Self::acquire) may wait while the lock is held
    /// by someone else (default: no wait, [`Error::Contended`] at once).
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Also obtain a [`FencingToken`] (one Lua call instead of a plain `SET`).
    pub fn fenced(mut self) -> Self {
        self.fenced = true;
        self
    }

    /// Renew the lease in the background while the guard lives (default
    /// true).
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// After taking the lease, wait until `n` replicas acknowledge it
    /// (`WAIT n`, in the same round trip). If fewer do within half the
    /// response timeout, the lease is released (or, if that fails, left to
    /// expire by its TTL) and the request fails with
    /// [`Error::ReplicationTimeout`]. This narrows the window in which a
    /// failover loses the lease; it does not close it (see the crate docs).
    pub fn replicas(mut self, n: u32) -> Self {
        self.replicas = Some(n);
        self
    }

    /// Takes the lock, waiting up to `.wait()` while someone else holds it.
    /// [`Error::Contended`] when held and no wait was set,
    /// [`Error::Timeout`] when still held after the wait.
    pub async fn acquire(self) -> Result<LockGuard> {
        let plan = self.plan()?;
        until_acquired(plan.class, self.wait, || self.attempt(&plan)).await
    }

    /// One attempt: `Some(guard)` when taken, `None` when held by someone
    /// else. `.wait()` does not apply.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        let plan = self.plan()?;
        match until_acquired(plan.class, None, || self.attempt(&plan)).await {
            Ok(guard) => Ok(Some(guard)),
            Err(Error::Contended) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Checks the arguments; nothing is sent before this passes.
    fn plan(&self) -> Result<Plan> {
        let ttl = self.ttl.unwrap_or(self.manager.settings().default_ttl);
        self.manager.check_ttl(ttl, self.auto_renew)?;
        let key = self.manager.full_key(&self.key)?;
        let slot = LockManager::slot_of(&key);
        Ok(Plan {
            class: self.manager.key_class(&self.key),
            key,
            slot,
            ttl,
            token: self.token.unwrap_or_else(new_token),
        })
    }

    async fn attempt(&self, plan: &Plan) -> Result<Option<LockGuard>> {
        let client = self.manager.client();
        let ttl_ms = plan.ttl.as_millis() as u64;
        let mut request = if self.fenced {
            let fence_key = self.manager.fence_key(plan.slot);
            let token = format!("{:032x}", plan.token);
            Request::script(
                &scripts::FENCED_ACQUIRE,
                &[&plan.key[..], &fence_key[..]],
                &[token, ttl_ms.to_string()],
            )
        } else {
            let mut set = redis::cmd("SET");
            set.arg(&plan.key[..])
                .arg(lock_value(plan.token, None))
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .arg("GET");
            Request::cmd(set)
        };
        let wait_timeout = self.replica_wait_timeout();
        if let Some(n) = self.replicas {
            request = request.then(
                redis::cmd("WAIT")
                    .arg(n)
                    .arg(wait_timeout.as_millis() as u64)
                    .clone(),
            );
            // WAIT holds its connection until it returns: not the shared one.
            request = request.blocking();
        }
        // Every attempt of this acquire carries the same token, so a retry
        // after a lost reply recognises its own earlier success.
        // From the send on, the key may hold our token: unless disarmed,
        // dropping this releases it in the background.
        let mut orphan = Orphan {
            manager: &self.manager,
            plan,
            fenced: self.fenced,
            retry: self.retry,
            armed: true,
        };
        // The send time of the attempt that got the reply: a lease it set
        // lives at least until then plus the TTL.
        let (replies, mut sent_at) =
            match client.execute_timed(plan.slot, &request, self.retry).await {
                Ok(sent) => sent,
                Err(e) => {
                    if nothing_written(&e) {
                        orphan.armed = false;
                    }
                    return Err(e);
                }
            };
        let outcome = match replies.first() {
            Some(reply) if self.fenced => parse_fenced(reply)?,
            Some(reply) => parse_set(reply, &lock_value(plan.token, None))?,
            None => return Err(Error::UnexpectedReply("no reply to acquire".into())),
        };
        let fence = match outcome {
            Attempt::Acquired(fence) => fence,
            Attempt::Held => {
                // Someone else's value: none of our attempts left ours.
                orphan.armed = false;
                return Ok(None);
            }
            Attempt::Recognized => {
                // Set the TTL again, so that it counts from now.
                let value = lock_value(plan.token, None);
                let extend = scripts::extend(&plan.key, &value, ttl_ms);
                sent_at = Instant::now();
                let replies = client.execute_with(plan.slot, &extend, self.retry).await?;
                if !scripts::compared(&replies, "extend")? {
                    // It expired meanwhile (and may be someone else's now).
                    orphan.armed = false;
                    return Ok(None);
                }
                None
            }
        };
        let mut lease = Lease::new(
            plan.key.clone(),
            plan.slot,
            plan.token,
            fence,
            plan.ttl,
            self.auto_renew,
            plan.class,
            sent_at,
        );
        lease.retry = self.retry;
        let lease = Arc::new(lease);
        if let Some(wanted) = self.replicas {
            let acked = match replies.get(1) {
                Some(Value::Int(n)) => *n as u64,
                other => return Err(Error::UnexpectedReply(format!("WAIT: {other:?}"))),
            };
            if acked < u64::from(wanted) {
                // Give the lease back; if that fails too, it expires by its
                // TTL. Either way the caller learns why it does not hold it.
                let release = scripts::release(&lease.key, &lease.value());
                match client.execute(plan.slot, &release).await {
                    Ok(_) => orphan.armed = false,
                    Err(e) => {
                        tracing::debug!(error = %e, "release after a replication timeout failed; released again in the background");
                    }
                }
                return Err(Error::ReplicationTimeout {
                    acked,
                    wanted: wanted.into(),
                });
            }
        }
        orphan.armed = false;
        if self.auto_renew {
            self.manager.register(lease.clone());
        }
        Ok(Some(LockGuard::new(lease, self.manager.clone())))
    }

    /// `WAIT`'s own timeout: half the response timeout, so its reply comes
    /// back before the attempt times out.
    fn replica_wait_timeout(&self) -> Duration {
        (self.manager.client().response_timeout() / 2).max(Duration::from_millis(1))
    }
}

/// True when `error` shows that the request was never written to a node:
/// its one attempt found no connection (refused, or the node in reconnect
/// backoff) or no node serving the slot. Then no key can hold its token.
/// With more attempts, only the last one's cause is known, and an earlier
/// one may have been written.
pub(crate) fn nothing_written(error: &Error) -> bool {
    matches!(
        error,
        Error::DeadlineExceeded {
            attempts: 1,
            last: RetryCause::ConnectionRefused
                | RetryCause::NodeBackoff
                | RetryCause::SlotUnassigned,
            ..
        }
    )
}

/// An attempt whose request was sent and whose outcome is not settled:
/// dropped armed (an error, or the future dropped), it hands what the
/// request may have set to the background release.
struct Orphan<'a> {
    manager: &'a LockManager,
    plan: &'a Plan,
    fenced: bool,
    retry: Retry,
    armed: bool,
}

impl Drop for Orphan<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let plan = self.plan;
        let lease = Lease::orphan(
            plan.key.clone(),
            plan.slot,
            plan.token,
            self.fenced,
            plan.ttl,
            plan.class,
            self.retry,
        );
        self.manager.release_in_background(Arc::new(lease));
    }
}

/// An acquire's checked arguments, fixed for all its attempts.
struct Plan {
    class: &'static str,
    key: Box<[u8]>,
    slot: u16,
    ttl: Duration,
    token: u128,
}

/// Reply to `SET … NX PX … GET`: nil = we set it; our value = an earlier
/// attempt of ours set it; another value = held.
fn parse_set(reply: &Value, ours: &str) -> Result<Attempt> {
    match reply {
        Value::Nil => Ok(Attempt::Acquired(None)),
        Value::BulkString(held) if held == ours.as_bytes() => Ok(Attempt::Recognized),
        Value::BulkString(_) => Ok(Attempt::Held),
        other => Err(Error::UnexpectedReply(format!("SET NX GET: {other:?}"))),
    }
}

/// Reply to `fenced_acquire.lua`: `{1, fence}` or `{0, holder}`.
fn parse_fenced(reply: &Value) -> Result<Attempt> {
    let bad = || Error::UnexpectedReply(format!("fenced acquire: {reply:?}"));
    let Value::Array(items) = reply else {
        return Err(bad());
    };
    match items.as_slice() {
        [Value::Int(1), Value::BulkString(fence)] => {
            let fence = std::str::from_utf8(fence)
                .ok()
                .and_then(|f| f.parse::<u64>().ok())
                .and_then(NonZeroU64::new)
                .ok_or_else(bad)?;
            Ok(Attempt::Acquired(Some(FencingToken::new(fence))))
        }
        [Value::Int(0), _] => Ok(Attempt::Held),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// The three SET NX GET outcomes, and garbage as an error.
    #[test]
    fn set_replies() {
        let ours = "00000000000000000000000000000001";
        assert!(matches!(
            parse_set(&Value::Nil, ours),
            Ok(Attempt::Acquired(None))
        ));
        assert!(matches!(
            parse_set(&bulk(ours), ours),
            Ok(Attempt::Recognized)
        ));
        assert!(matches!(
            parse_set(&bulk("someone-else"), ours),
            Ok(Attempt::Held)
        ));
        assert!(matches!(
            parse_set(&Value::Okay, ours),
            Err(Error::UnexpectedReply(_))
        ));
    }

    /// Fenced replies carry the fence; anything else is an error.
    #[test]
    fn fenced_replies() {
        let got = parse_fenced(&Value::Array(vec![Value::Int(1), bulk("1700000000000123")]));
        assert!(matches!(got, Ok(Attempt::Acquired(Some(f))) if f.get() == 1_700_000_000_000_123));
        let held = parse_fenced(&Value::Array(vec![Value::Int(0), bulk("x.5")]));
        assert!(matches!(held, Ok(Attempt::Held)));
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Int(1), bulk("0")]),
            Value::Array(vec![Value::Int(1), bulk("-3")]),
            Value::Array(vec![Value::Int(2), bulk("5")]),
            Value::Array(vec![Value::Int(1)]),
        ] {
            assert!(
                matches!(parse_fenced(&bad), Err(Error::UnexpectedReply(_))),
                "{bad:?}"
            );
        }
    }
}

#[cfg(test)]
#[path = "request_props.rs"]
mod props;
