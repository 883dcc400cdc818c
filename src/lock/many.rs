//! `lock_many`: several locks taken all or none.
//!
//! Protocol. One call draws one token and stores the same value
//! (`lock_value(token, None)`) in every key, so each attempt of the call
//! recognises the keys it set itself. The keys are put in one global order,
//! by slot and then by full key bytes, and grouped by the primary that
//! serves their slot in the current slot map. Shards are visited one after
//! another, in the order of their first key, and each gets ONE pipeline of
//! `SET key value NX PX ttl GET`, one command per key, sent straight to its
//! primary. Per reply:
//! - nil: taken; our own value: taken by an earlier attempt of this call
//!   whose rollback did not get through, so its TTL is set again
//!   (compare-and-pexpire) before the call succeeds;
//! - another value: held by someone else;
//! - an error reply (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, …: the slot
//!   moved or is moving), or no reply at all (the connection failed): that
//!   key is taken on its own through the router, which follows redirects and
//!   retries. The same value makes that resend idempotent.
//!
//! Once a shard reports a key held by someone else, no later shard is
//! visited: every key this attempt may have set is given back
//! (compare-and-delete, one pipeline per shard, error replies resent through
//! the router), and the call fails with [`Error::Contended`], or, with
//! `.wait()`, backs off (capped, jittered) and tries the whole set again
//! until the wait runs out ([`Error::Timeout`]). Any other error is also
//! returned only after the rollback.
//!
//! Why concurrent overlapping calls cannot deadlock: a deadlock needs a
//! holder that waits for a lock while keeping others, and an attempt never
//! does; it either gets every key or gives back what it took before it
//! sleeps. The fixed order makes the first conflict between two calls
//! happen at the lowest key they share, which one of them finds free, so the
//! usual outcome is that one call wins and the other backs off, rather than
//! both holding halves and both retrying; the jittered backoff breaks the
//! ties that remain (two pipelines on one node can still interleave).
//!
//! Cost: on the fast path, round trips = number of shards the keys live on
//! (one pipeline each, `RouterStats::attempts` grows by exactly that), and
//! no Lua. A contended attempt adds one rollback pipeline per shard it
//! touched, sent concurrently. Keys of a slot that moves meanwhile cost one
//! routed request each.
//!
//! Cancel safety: nothing is registered and no task is spawned before every
//! key is held. Dropping the `acquire()` future while an attempt is in
//! progress hands every key that attempt took or may have taken (sent
//! without an answer) to the background release, by token, as a failed
//! single acquire does (counted in `shardlock_orphan_releases_total`).
//!
//! A key whose rollback fails (its node unavailable or busy past the
//! request timeout) may still hold the call's value. Every attempt of the
//! call stores that same value, so such a key is not released while the
//! call goes on: a later attempt recognises it and, if that attempt takes
//! everything, holds and guards it. When the call fails, or its future is
//! dropped, every such key goes to the background release by token (once
//! per key, counted in `shardlock_orphan_releases_total`), which keeps
//! trying until the key has certainly expired; a key whose background
//! release fails too expires after its TTL.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use redis::{Pipeline, Value};
use tokio::time::Instant;

use super::guard::LockGuard;
use super::lease::Lease;
use super::manager::LockManager;
use super::token::{lock_value, new_token};
use super::wait::until_acquired;
use crate::error::{Error, Result};
use crate::request::Request;
use crate::scripts;

/// A request for several locks at once, built by [`LockManager::lock_many`].
/// The leases are auto-renewed while their guards live.
#[derive(Debug)]
#[must_use = "a lock request does nothing until .acquire() is awaited"]
pub struct ManyLockRequest {
    manager: LockManager,
    keys: Vec<Vec<u8>>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
}

/// The guards of a `lock_many`, in the order the keys were given.
#[derive(Debug)]
pub struct LockGuards {
    guards: Vec<LockGuard>,
}

impl LockGuards {
    /// The guards, in the order the keys were given.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// The guards, in the order the keys were given, to hold or release one
    /// by one.
    pub fn into_guards(self) -> Vec<LockGuard> {
        self.guards
    }

    /// Releases every lease (concurrently); the first error, in key order,
    /// is returned after trying all.
    pub async fn release(self) -> Result<()> {
        let outcomes = join_all(self.guards.into_iter().map(LockGuard::release)).await;
        outcomes.into_iter().collect()
    }
}

impl ManyLockRequest {
    pub(crate) fn new(manager: LockManager, keys: Vec<Vec<u8>>) -> ManyLockRequest {
        ManyLockRequest {
            manager,
            keys,
            ttl: None,
            wait: None,
        }
    }

    /// Lease length of every lock (default: the manager's `default_ttl`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`acquire`](Self::acquire) may wait while any of the locks
    /// is held by someone else (default: no wait, [`Error::Contended`] at
    /// once). Nothing is held while it waits.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Takes all the locks or none. [`Error::Contended`] when one is held
    /// and no wait was set, [`Error::Timeout`] when one was still held after
    /// the wait; in both cases (and on any other error) none is left held.
    pub async fn acquire(self) -> Result<LockGuards> {
        let plan = self.plan()?;
        let class = self.manager.key_class(&self.keys[0]);
        // When the last attempt (the one that took everything) was sent.
        let sent_at = std::sync::Mutex::new(Instant::now());
        // Keys whose rollback failed: released by token if the call fails
        // or is dropped; ours (and guarded) if it succeeds.
        let mut leftovers = Leftovers {
            manager: &self.manager,
            plan: &plan,
            keys: std::sync::Mutex::new(vec![false; plan.keys.len()]),
            armed: true,
        };
        let leftovers_ref = &leftovers;
        let this = &self;
        until_acquired(class, self.wait, || {
            *sent_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            async move {
                Ok(this
                    .attempt(leftovers_ref.plan, leftovers_ref)
                    .await?
                    .then_some(()))
            }
        })
        .await?;
        // Every key is held by the attempt that succeeded (a leftover of an
        // earlier one was recognised and its TTL set again): none is
        // released.
        leftovers.armed = false;
        drop(leftovers);
        let sent_at = *sent_at.lock().unwrap_or_else(|p| p.into_inner());
        Ok(self.guards(plan, sent_at))
    }

    /// Checks the arguments and fixes the order; nothing is sent before
    /// this passes.
    fn plan(&self) -> Result<Plan> {
        let settings = self.manager.settings();
        if self.keys.is_empty() {
            return Err(Error::InvalidArgument(
                "lock_many was given no keys: there is nothing to lock".into(),
            ));
        }
        if self.keys.len() > settings.max_keys {
            return Err(Error::InvalidArgument(format!(
                "lock_many was given {} keys, above max_keys ({})",
                self.keys.len(),
                settings.max_keys
            )));
        }
        let ttl = self.ttl.unwrap_or(settings.default_ttl);
        self.manager.check_ttl(ttl, true)?;
        let mut keys = self
            .keys
            .iter()
            .enumerate()
            .map(|(given, key)| {
                let full = self.manager.full_key(key).map_err(|e| match e {
                    Error::InvalidArgument(m) => {
                        Error::InvalidArgument(format!("lock_many key at position {given}: {m}"))
                    }
                    other => other,
                })?;
                Ok(PlannedKey {
                    slot: LockManager::slot_of(&full),
                    full,
                    given,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The global order. Stable, so equal keys stay in the given order.
        keys.sort_by(|a, b| (a.slot, &a.full).cmp(&(b.slot, &b.full)));
        if let Some(pair) = keys.windows(2).find(|w| w[0].full == w[1].full) {
            let user_key = &pair[0].full[self.manager.namespace_len()..];
            return Err(Error::InvalidArgument(format!(
                "lock_many was given the key {:?} twice (positions {} and {}): one holder cannot take a lock twice",
                String::from_utf8_lossy(user_key),
                pair[0].given,
                pair[1].given
            )));
        }
        let token = new_token();
        Ok(Plan {
            keys,
            ttl_ms: ttl.as_millis() as u64,
            ttl,
            token,
            value: lock_value(token, None),
        })
    }

    /// One attempt: `true` when every key is ours, `false` when some key is
    /// held by someone else. Unless it returns `true`, whatever it may have
    /// taken has been given back.
    /// Keys whose rollback failed are added to `leftovers`.
    async fn attempt(&self, plan: &Plan, leftovers: &Leftovers<'_>) -> Result<bool> {
        // Until the attempt has settled (all taken, or rolled back),
        // dropping it hands what it may hold to the background release.
        let mut attempt = Unsettled {
            leftovers,
            states: vec![KeyState::Untried; plan.keys.len()],
            settled: false,
        };
        let mut outcome = self.take_all(plan, &mut attempt.states).await;
        if matches!(outcome, Ok(true)) {
            outcome = self.refresh_recognized(plan, &attempt.states).await;
        }
        if !matches!(outcome, Ok(true)) {
            let failed = self.roll_back(plan, &attempt.states).await;
            leftovers.add(failed);
        }
        attempt.settled = true;
        outcome
    }

    /// Sets the TTL again on keys an earlier attempt took (compare-and-
    /// pexpire), so that every lease counts from this attempt; false when
    /// one of them is no longer ours.
    async fn refresh_recognized(&self, plan: &Plan, states: &[KeyState]) -> Result<bool> {
        for (i, key) in plan.keys.iter().enumerate() {
            if states[i] != KeyState::Recognized {
                continue;
            }
            let extend = scripts::extend(&key.full, &plan.value, plan.ttl_ms);
            let replies = self.manager.client().execute(key.slot, &extend).await?;
            if !scripts::compared(&replies, "extend")? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Takes the keys shard by shard in the global order; stops at the first
    /// shard that reports a key held by someone else.
    async fn take_all(&self, plan: &Plan, states: &mut [KeyState]) -> Result<bool> {
        let groups = self.group(plan, 0..plan.keys.len());
        for group in groups {
            let reroute = match &group.node {
                Some(addr) => {
                    self.take_on_node(plan, addr, &group.members, states)
                        .await?
                }
                None => group.members.clone(),
            };
            let held =
                |states: &[KeyState]| group.members.iter().any(|&i| states[i] == KeyState::Held);
            if held(states) {
                return Ok(false);
            }
            for i in reroute {
                self.take_routed(plan, i, states).await?;
            }
            if held(states) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// One pipeline of `SET NX GET` to `addr`; returns the keys to take
    /// through the router instead (error replies, or all on a failed send).
    async fn take_on_node(
        &self,
        plan: &Plan,
        addr: &str,
        members: &[usize],
        states: &mut [KeyState],
    ) -> Result<Vec<usize>> {
        let client = self.manager.client();
        let mut pipeline = Pipeline::with_capacity(members.len());
        for &i in members {
            pipeline.add_command(plan.set_cmd(&plan.keys[i]));
            // Sent: it may be applied even if no reply comes back.
            states[i] = KeyState::Unknown;
        }
        let deadline = Instant::now() + client.request_timeout();
        let Ok(replies) = client
            .router()
            .send_to_node(addr, &pipeline, deadline)
            .await
        else {
            // The router meets the same failure on the first resend and
            // handles it (backoff, refresh hint).
            return Ok(members.to_vec());
        };
        if replies.len() != members.len() {
            return Err(Error::UnexpectedReply(format!(
                "{} replies to a pipeline of {} SET NX GET",
                replies.len(),
                members.len()
            )));
        }
        let mut reroute = Vec::new();
        for (&i, reply) in members.iter().zip(&replies) {
            states[i] = match classify_set(reply, plan.value.as_bytes()) {
                Found::Taken => KeyState::Taken,
                Found::Recognized => KeyState::Recognized,
                Found::Held => KeyState::Held,
                Found::Reroute => {
                    // An error reply: the command did not run there.
                    reroute.push(i);
                    KeyState::Untried
                }
                Found::Unexpected => {
                    return Err(Error::UnexpectedReply(format!("SET NX GET: {reply:?}")));
                }
            };
        }
        Ok(reroute)
    }

    /// `SET NX GET` for one key through the router (follows MOVED and ASK).
    async fn take_routed(&self, plan: &Plan, i: usize, states: &mut [KeyState]) -> Result<()> {
        let key = &plan.keys[i];
        states[i] = KeyState::Unknown;
        let replies = self
            .manager
            .client()
            .execute(key.slot, &Request::cmd(plan.set_cmd(key)))
            .await?;
        states[i] = match replies
            .first()
            .map(|r| classify_set(r, plan.value.as_bytes()))
        {
            Some(Found::Taken) => KeyState::Taken,
            Some(Found::Recognized) => KeyState::Recognized,
            Some(Found::Held) => KeyState::Held,
            _ => return Err(Error::UnexpectedReply(format!("SET NX GET: {replies:?}"))),
        };
        Ok(())
    }

    /// Gives back every key this attempt took or may have taken:
    /// compare-and-delete with our value, one pipeline per shard
    /// (concurrently), error replies and failed sends resent one by one
    /// through the router. Returns the keys that could not be given back: a
    /// later attempt of this call recognises them as its own, and if the
    /// call fails they go to the background release.
    async fn roll_back(&self, plan: &Plan, states: &[KeyState]) -> Vec<usize> {
        let ours = (0..plan.keys.len()).filter(|&i| {
            matches!(
                states[i],
                KeyState::Taken | KeyState::Recognized | KeyState::Unknown
            )
        });
        let groups = self.group(plan, ours);
        if groups.is_empty() {
            return Vec::new();
        }
        let rerouted = join_all(groups.iter().map(|group| async move {
            match &group.node {
                Some(addr) => self.release_on_node(plan, addr, &group.members).await,
                None => group.members.clone(),
            }
        }))
        .await;
        let client = self.manager.client();
        join_all(rerouted.into_iter().flatten().map(|i| async move {
            let key = &plan.keys[i];
            let release = scripts::release(&key.full, &plan.value);
            match client.execute(key.slot, &release).await {
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "lock_many rollback failed; left to the call's outcome");
                    Some(i)
                }
            }
        }))
        .await
        .into_iter()
        .flatten()
        .collect()
    }

    /// One pipeline of `release.lua` calls to `addr` (resent by source if
    /// the node does not know the script); returns the keys whose release
    /// must go through the router.
    async fn release_on_node(&self, plan: &Plan, addr: &str, members: &[usize]) -> Vec<usize> {
        let client = self.manager.client();
        let deadline = Instant::now() + client.request_timeout();
        for eval in [false, true] {
            let mut pipeline = Pipeline::with_capacity(members.len());
            for &i in members {
                let release = scripts::release(&plan.keys[i].full, &plan.value);
                for cmd in release.attempt(false, eval).cmd_iter() {
                    pipeline.add_command(cmd.clone());
                }
            }
            match client
                .router()
                .send_to_node(addr, &pipeline, deadline)
                .await
            {
                Ok(replies) if !eval && replies.iter().any(is_noscript) => continue,
                Ok(replies) => {
                    let answered = replies.iter().map(Some).chain(std::iter::repeat(None));
                    return members
                        .iter()
                        .zip(answered)
                        .filter(|(_, reply)| !matches!(reply, Some(Value::Int(_))))
                        .map(|(&i, _)| i)
                        .collect();
                }
                Err(_) => break,
            }
        }
        members.to_vec()
    }

    /// Groups `indices` (in the global order) by the primary serving their
    /// slot in the current slot map.
    fn group(&self, plan: &Plan, indices: impl IntoIterator<Item = usize>) -> Vec<Group> {
        let topology = self.manager.client().topology();
        group_by_node(
            indices.into_iter().map(|i| (i, plan.keys[i].slot)),
            |slot| {
                topology
                    .primary_of_slot(slot)
                    .map(|node| node.addr().clone())
            },
        )
    }

    /// The guards of a fully taken plan, registered for renewal, in the
    /// order the keys were given.
    fn guards(&self, plan: Plan, sent_at: Instant) -> LockGuards {
        let namespace_len = self.manager.namespace_len();
        let mut leases: Vec<(usize, Arc<Lease>)> = plan
            .keys
            .into_iter()
            .map(|key| {
                let class = self.manager.key_class(&key.full[namespace_len..]);
                let lease = Lease::new(
                    key.full, key.slot, plan.token, None, plan.ttl, true, class, sent_at,
                );
                (key.given, Arc::new(lease))
            })
            .collect();
        for (_, lease) in &leases {
            self.manager.register(lease.clone());
        }
        leases.sort_unstable_by_key(|(given, _)| *given);
        LockGuards {
            guards: leases
                .into_iter()
                .map(|(_, lease)| LockGuard::new(lease, self.manager.clone()))
                .collect(),
        }
    }
}

/// An attempt in progress; dropped before it settled (its future was
/// dropped), every key it took or may have taken joins the call's
/// leftovers, which the call's drop then releases.
struct Unsettled<'a> {
    leftovers: &'a Leftovers<'a>,
    states: Vec<KeyState>,
    settled: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let maybe_ours = self.states.iter().enumerate().filter(|(_, state)| {
            matches!(
                state,
                KeyState::Taken | KeyState::Recognized | KeyState::Unknown
            )
        });
        self.leftovers.add(maybe_ours.map(|(i, _)| i).collect());
        // The call is being dropped: release now rather than rely on the
        // order in which its locals drop.
        self.leftovers.release();
    }
}

/// Keys of one `lock_many` call that may still hold its value although no
/// attempt holds them (a rollback that failed, an attempt dropped). Dropped
/// armed — the call failed or was dropped — each is released by token in
/// the background, once, as a failed single acquire's key is (counted in
/// `shardlock_orphan_releases_total`). Disarmed when the call succeeds: the
/// attempt that succeeded holds every key (all attempts share one value),
/// so none may be released then.
struct Leftovers<'a> {
    manager: &'a LockManager,
    plan: &'a Plan,
    /// By index in the plan.
    keys: std::sync::Mutex<Vec<bool>>,
    armed: bool,
}

impl Leftovers<'_> {
    fn add(&self, keys: Vec<usize>) {
        let mut left = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        for i in keys {
            left[i] = true;
        }
    }

    /// Hands every leftover to the background release (each at most once).
    fn release(&self) {
        let taken = {
            let mut left = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *left, vec![false; self.plan.keys.len()])
        };
        for (key, _) in self.plan.keys.iter().zip(taken).filter(|(_, left)| *left) {
            let class = self
                .manager
                .key_class(&key.full[self.manager.namespace_len()..]);
            let lease = Lease::orphan(
                key.full.clone(),
                key.slot,
                self.plan.token,
                false,
                self.plan.ttl,
                class,
                crate::router::Retry::UntilDeadline,
            );
            self.manager.release_in_background(Arc::new(lease));
        }
    }
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.release();
        }
    }
}

/// A call's checked arguments, fixed for all its attempts.
struct Plan {
    /// In the global order: by slot, then by full key.
    keys: Vec<PlannedKey>,
    ttl: Duration,
    ttl_ms: u64,
    token: u128,
    /// What every key holds while we hold it.
    value: String,
}

struct PlannedKey {
    /// Namespace included.
    full: Box<[u8]>,
    slot: u16,
    /// Position in the list as given.
    given: usize,
}

impl Plan {
    fn set_cmd(&self, key: &PlannedKey) -> redis::Cmd {
        let mut set = redis::cmd("SET");
        set.arg(&key.full[..])
            .arg(&self.value)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms)
            .arg("GET");
        set
    }
}

/// Where one key of an attempt stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyState {
    /// Not sent, or refused with an error reply (not applied).
    Untried,
    /// Ours.
    Taken,
    /// Ours from an earlier attempt whose rollback did not reach it: its
    /// TTL counts from then, so it is set again before the call succeeds.
    Recognized,
    /// Held by someone else.
    Held,
    /// Sent without an answer: perhaps ours; given back on rollback.
    Unknown,
}

/// Keys served by one node, in the global order.
#[derive(Debug, PartialEq, Eq)]
struct Group {
    /// `None`: no known node serves the slot; take the keys through the router.
    node: Option<Arc<str>>,
    members: Vec<usize>,
}

/// Groups `(index, slot)` pairs by `node_of(slot)`, groups in the order of
/// their first member, members in the order given.
fn group_by_node(
    keys: impl IntoIterator<Item = (usize, u16)>,
    node_of: impl Fn(u16) -> Option<Arc<str>>,
) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for (i, slot) in keys {
        let node = node_of(slot);
        match groups.iter_mut().find(|g| g.node == node) {
            Some(group) => group.members.push(i),
            None => groups.push(Group {
                node,
                members: vec![i],
            }),
        }
    }
    groups
}

/// What one `SET … NX GET` reply says about its key.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nil: we set it.
    Taken,
    /// Our own value: an earlier attempt set it.
    Recognized,
    /// Someone else's value.
    Held,
    /// An error reply: take the key through the router.
    Reroute,
    /// Not a reply `SET … GET` gives.
    Unexpected,
}

fn classify_set(reply: &Value, ours: &[u8]) -> Found {
    match reply {
        Value::Nil => Found::Taken,
        Value::BulkString(held) if held == ours => Found::Recognized,
        Value::BulkString(_) => Found::Held,
        Value::ServerError(_) => Found::Reroute,
        _ => Found::Unexpected,
    }
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// An error reply, through the redis crate's own parser.
    fn error(line: &str) -> Value {
        let reply = redis::parse_redis_value(format!("-{line}\r\n").as_bytes()).unwrap();
        assert!(matches!(reply, Value::ServerError(_)), "{reply:?}");
        reply
    }

    /// Nil and our own value are taken, another value is held, error replies
    /// (redirects, cluster down) go through the router, anything else is bad.
    #[test]
    fn set_replies() {
        let ours = b"00000000000000000000000000000001";
        let table = [
            (Value::Nil, Found::Taken),
            (bulk("00000000000000000000000000000001"), Found::Recognized),
            (bulk("00000000000000000000000000000002"), Found::Held),
            (error("MOVED 3999 127.0.0.1:6381"), Found::Reroute),
            (error("ASK 3999 127.0.0.1:6381"), Found::Reroute),
            (
                error("TRYAGAIN Multiple keys request during rehashing of slot"),
                Found::Reroute,
            ),
            (error("CLUSTERDOWN The cluster is down"), Found::Reroute),
            (Value::Okay, Found::Unexpected),
            (Value::Int(1), Found::Unexpected),
        ];
        for (reply, found) in table {
            assert_eq!(classify_set(&reply, ours), found, "{reply:?}");
        }
    }

    /// Keys keep the global order inside a group; groups come in the order of
    /// their first key; unserved slots form their own group.
    #[test]
    fn groups_follow_the_first_key() {
        let node_of = |slot: u16| -> Option<Arc<str>> {
            match slot {
                0..=99 => Some("a:1".into()),
                100..=199 => Some("b:2".into()),
                200..=299 => None,
                _ => Some("a:1".into()),
            }
        };
        let keys = [(0, 150), (1, 150), (2, 10), (3, 250), (4, 300), (5, 120)];
        let groups = group_by_node(keys, node_of);
        let got: Vec<(Option<&str>, Vec<usize>)> = groups
            .iter()
            .map(|g| (g.node.as_deref(), g.members.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("b:2"), vec![0, 1, 5]),
                (Some("a:1"), vec![2, 4]),
                (None, vec![3]),
            ]
        );
        assert!(group_by_node([], node_of).is_empty());
    }
}

#[cfg(test)]
#[path = "many_props.rs"]
mod props;
