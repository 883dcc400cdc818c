//! Redlock: one lease held by a majority of independent Redis deployments.
//!
//! [`RedlockManager`] is built from N independent [`LockManager`]s (each a
//! cluster or a standalone server; N odd, at least 3; no two reaching the
//! same deployment, told apart by seed and node addresses, cluster node ids
//! and standalone `run_id`s, see [`RedlockManagerBuilder::build`]). An
//! acquire tries the
//! same key with the same token on all N at once, each cut off after a
//! short per-instance timeout, and succeeds when a majority took it AND the
//! lease's validity is still ahead: `sent + ttl - drift`, with `drift = ttl
//! × drift_factor + 2 ms` (see [`validity`]). Otherwise it releases the key
//! on every instance (also those that did not answer: a late `SET` would
//! otherwise linger until its TTL) and, within `.wait(d)`, tries again
//! after a random delay.
//!
//! What it gives: a lease that survives the loss of a minority of whole
//! deployments, under Redlock's assumptions — bounded clock drift between
//! the instances and this process, and process pauses shorter than the
//! remaining validity. What it does not give: a strictly increasing
//! fencing token (see the README), or safety when an instance restarts
//! without persistence and forgets a lease within its TTL.
//!
//! ```no_run
//! use std::time::Duration;
//! use shardlock::{LockManager, RedlockManager};
//!
//! # async fn example() -> shardlock::Result<()> {
//! let mut instances = Vec::new();
//! for url in ["redis://10.0.1.1:6379", "redis://10.0.2.1:6379", "redis://10.0.3.1:6379"] {
//!     // Each instance is its own deployment: a standalone server or a cluster.
//!     instances.push(LockManager::builder().seeds([url]).build().await?);
//! }
//! let redlock = RedlockManager::builder().instances(instances).build()?;
//! let guard = redlock
//!     .lock("invoice:42")
//!     .ttl(Duration::from_secs(10))
//!     .wait(Duration::from_secs(2))
//!     .acquire()
//!     .await?;
//! // Trust the lease only until guard.validity_deadline(); guard.lost() says when it ends.
//! guard.release().await?;
//! # Ok(()) }
//! ```

mod guard;
pub mod validity;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

pub use guard::RedlockGuard;

use crate::error::{Error, Result};
use crate::lock::{LockGuard, LockManager};

/// Builds a [`RedlockManager`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .build() is called"]
pub struct RedlockManagerBuilder {
    instances: Vec<LockManager>,
    drift_factor: f64,
    instance_timeout: Duration,
}

impl RedlockManagerBuilder {
    /// The independent deployments, one [`LockManager`] each (an odd
    /// number, at least 3). Their own settings (namespace, TTL limits,
    /// renewal) apply on each. No two may reach the same deployment (see
    /// [`build`](Self::build)).
    pub fn instances(mut self, managers: impl IntoIterator<Item = LockManager>) -> Self {
        self.instances.extend(managers);
        self
    }

    /// Allowance for the instances' clocks running faster than this
    /// process's, as a fraction of the TTL (default 0.01; 2 ms are always
    /// added). At least 0, below 0.5.
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// How long one instance may take to answer one acquire, extend or
    /// release before it counts as unavailable (default 100 ms; above zero
    /// and below every instance's `max_ttl`, else [`build`](Self::build)
    /// fails with [`Error::InvalidArgument`]). Keep it a small part of the
    /// TTL: time spent waiting comes off the validity.
    pub fn instance_timeout(mut self, timeout: Duration) -> Self {
        self.instance_timeout = timeout;
        self
    }

    /// Checks the settings. [`Error::InvalidArgument`] for an even number
    /// of instances, fewer than 3, two instances that reach the same
    /// deployment, a drift factor outside `[0, 0.5)`, or an instance
    /// timeout of zero or not below every instance's `max_ttl` (no lease
    /// could then keep any validity).
    ///
    /// Two instances are the same deployment when they share a seed
    /// address, a node address of their slot maps, or a server identity
    /// learnt when they connected: a cluster node id, or a standalone
    /// server's `run_id` (so `127.0.0.1:p` and `localhost:p` are one
    /// server). One deployment counted twice would vote twice: its second
    /// `SET` recognises its own token.
    pub fn build(self) -> Result<RedlockManager> {
        let n = self.instances.len();
        if n < 3 || n.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "Redlock needs an odd number of instances, at least 3; got {n}"
            )));
        }
        distinct_deployments(&self.instances)?;
        if !(0.0..0.5).contains(&self.drift_factor) {
            return Err(Error::InvalidArgument(format!(
                "drift_factor {} is outside [0, 0.5)",
                self.drift_factor
            )));
        }
        if self.instance_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "instance_timeout must be above zero".into(),
            ));
        }
        let shortest_max_ttl = self
            .instances
            .iter()
            .map(|m| m.settings().max_ttl)
            .min()
            .unwrap_or_default();
        if self.instance_timeout >= shortest_max_ttl {
            return Err(Error::InvalidArgument(format!(
                "instance_timeout {:?} is not below the instances' max_ttl ({shortest_max_ttl:?})",
                self.instance_timeout
            )));
        }
        Ok(RedlockManager {
            inner: Arc::new(Inner {
                quorum: validity::quorum(n),
                instances: self.instances,
                drift_factor: self.drift_factor,
                instance_timeout: self.instance_timeout,
            }),
        })
    }
}

/// What identifies the deployment a manager reaches: its seeds, the node
/// addresses of its slot map, and the node ids (cluster node ids, or a
/// standalone server's `run_id`).
fn deployment_marks(manager: &LockManager) -> Vec<String> {
    let client = manager.client();
    let topology = client.topology();
    let mut marks: Vec<String> = client
        .seeds()
        .iter()
        .map(|seed| format!("address {seed}"))
        .collect();
    for node in topology.nodes() {
        marks.push(format!("address {}", node.addr()));
        if let Some(id) = node.id() {
            marks.push(format!("server id {id}"));
        }
    }
    marks.sort_unstable();
    marks.dedup();
    marks
}

/// Refuses two instances that reach one deployment.
fn distinct_deployments(instances: &[LockManager]) -> Result<()> {
    let marks: Vec<Vec<String>> = instances.iter().map(deployment_marks).collect();
    for (i, a) in marks.iter().enumerate() {
        for (j, b) in marks.iter().enumerate().skip(i + 1) {
            if let Some(shared) = a.iter().find(|m| b.binary_search(m).is_ok()) {
                return Err(Error::InvalidArgument(format!(
                    "Redlock instances {i} and {j} reach the same deployment (both have {shared}); \
                     each instance must be an independent deployment"
                )));
            }
        }
    }
    Ok(())
}

/// Locks held by a majority of independent deployments. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RedlockManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instances: Vec<LockManager>,
    quorum: usize,
    drift_factor: f64,
    instance_timeout: Duration,
}

impl RedlockManager {
    /// A builder: no instances yet, drift factor 0.01, instance timeout
    /// 100 ms.
    pub fn builder() -> RedlockManagerBuilder {
        RedlockManagerBuilder {
            instances: Vec::new(),
            drift_factor: 0.01,
            instance_timeout: Duration::from_millis(100),
        }
    }

    /// A request for the lock on `key`; nothing is sent until
    /// [`RedlockRequest::acquire`] or [`RedlockRequest::try_acquire`].
    pub fn lock(&self, key: impl AsRef<[u8]>) -> RedlockRequest {
        RedlockRequest {
            manager: self.clone(),
            key: key.as_ref().to_vec(),
            ttl: None,
            wait: None,
            auto_renew: true,
        }
    }

    /// Number of instances.
    pub fn instances(&self) -> usize {
        self.inner.instances.len()
    }

    /// Instances a lease needs (a majority).
    pub fn quorum(&self) -> usize {
        self.inner.quorum
    }

    pub(crate) fn managers(&self) -> &[LockManager] {
        &self.inner.instances
    }

    pub(crate) fn drift_factor(&self) -> f64 {
        self.inner.drift_factor
    }

    pub(crate) fn instance_timeout(&self) -> Duration {
        self.inner.instance_timeout
    }

    /// Releases `token`'s lease on `key` (of at most `ttl`) on every
    /// instance in `which`, each bounded by the instance timeout; returns
    /// how many were still ours. An instance that did not answer in time,
    /// or failed after the release may have been written, is handed to its
    /// background release, which keeps trying until the lease has expired
    /// (one that refused the connection has nothing of ours to release
    /// that this attempt could reach, and queues nothing).
    pub(crate) async fn release_on(
        &self,
        key: &[u8],
        token: u128,
        ttl: Duration,
        which: &[usize],
    ) -> usize {
        let timeout = self.instance_timeout();
        let released = join_all(which.iter().map(|&i| {
            let manager = &self.managers()[i];
            async move {
                match tokio::time::timeout(timeout, manager.release_token(key, token, ttl)).await {
                    Ok(Ok(released)) => released,
                    Ok(Err(e)) if crate::lock::nothing_written(&e) => false,
                    _ => {
                        manager.release_token_in_background(key, token, ttl);
                        false
                    }
                }
            }
        }))
        .await;
        released.into_iter().filter(|r| *r).count()
    }
}

/// A request for one Redlock lease, built by [`RedlockManager::lock`].
#[derive(Debug)]
#[must_use = "a lock request does nothing until .acquire() or .try_acquire() is awaited"]
pub struct RedlockRequest {
    manager: RedlockManager,
    key: Vec<u8>,
    ttl: Option<Duration>,
    wait: Option<Duration>,
    auto_renew: bool,
}

/// How one attempt ended.
enum Attempt {
    Acquired(RedlockGuard),
    /// Held elsewhere (or validity used up): worth retrying.
    Contended,
}

impl RedlockRequest {
    /// Lease length (default: the first instance's `default_ttl`). It must
    /// exceed the drift allowance plus the instance timeout and pass every
    /// instance's TTL checks (at most its `max_ttl`), else the acquire fails
    /// with [`Error::InvalidArgument`] before anything is sent.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How long [`acquire`](Self::acquire) may keep trying while the lock
    /// is held elsewhere (default: one attempt). Any length is accepted;
    /// one beyond the clock's range waits without end.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Renew the lease on every instance that holds it while the guard
    /// lives (default true), through each instance's own batched renewal.
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// One attempt: `Some(guard)` when a majority took it in time, `None`
    /// when it is held elsewhere. [`Error::NoQuorum`] when too many
    /// instances failed or did not answer for a majority to be possible.
    pub async fn try_acquire(self) -> Result<Option<RedlockGuard>> {
        let ttl = self.checked_ttl()?;
        match self.attempt(ttl).await? {
            Attempt::Acquired(guard) => Ok(Some(guard)),
            Attempt::Contended => Ok(None),
        }
    }

    /// Takes the lock on a majority, trying again after a random delay
    /// while it is held elsewhere, up to `.wait()`. [`Error::Contended`]
    /// without a wait, [`Error::Timeout`] after it, [`Error::NoQuorum`]
    /// when too many instances are unavailable. Nothing stays held on any
    /// instance after a failed attempt (unreachable instances keep at most
    /// a lease that expires after its TTL).
    pub async fn acquire(self) -> Result<RedlockGuard> {
        let ttl = self.checked_ttl()?;
        let started = Instant::now();
        let until = self.wait.map(|w| crate::lock::wait_deadline(started, w));
        loop {
            if let Attempt::Acquired(guard) = self.attempt(ttl).await? {
                return Ok(guard);
            }
            let now = Instant::now();
            let Some(until) = until else {
                return Err(Error::Contended);
            };
            if now >= until {
                return Err(Error::Timeout {
                    waited: now - started,
                });
            }
            // A random delay, so that contenders do not retry in step.
            let delay = Duration::from_micros(fastrand::u64(1_000..=50_000));
            tokio::time::sleep_until(until.min(now + delay)).await;
        }
    }

    /// The TTL after every instance's own checks; nothing is sent before.
    fn checked_ttl(&self) -> Result<Duration> {
        let first = &self.manager.managers()[0];
        let ttl = self.ttl.unwrap_or(first.settings().default_ttl);
        for manager in self.manager.managers() {
            manager.check_ttl(ttl, self.auto_renew)?;
            manager.full_key(&self.key)?;
        }
        let drift = validity::drift(ttl, self.manager.drift_factor());
        if ttl <= drift.saturating_add(self.manager.instance_timeout()) {
            return Err(Error::InvalidArgument(format!(
                "ttl {ttl:?} leaves no validity after the drift allowance ({drift:?}) and the instance timeout ({:?})",
                self.manager.instance_timeout()
            )));
        }
        Ok(ttl)
    }

    async fn attempt(&self, ttl: Duration) -> Result<Attempt> {
        let manager = &self.manager;
        let token = crate::lock::new_token();
        let timeout = manager.instance_timeout();
        let sent = Instant::now();
        let tries = join_all(manager.managers().iter().map(|m| {
            let request = m
                .lock(&self.key)
                .ttl(ttl)
                .auto_renew(self.auto_renew)
                .for_redlock(token);
            tokio::time::timeout(timeout, request.try_acquire())
        }))
        .await;
        let mut guards: Vec<Option<LockGuard>> = Vec::with_capacity(tries.len());
        let mut unavailable = 0;
        for tried in tries {
            match tried {
                Ok(Ok(Some(guard))) => guards.push(Some(guard)),
                Ok(Ok(None)) => guards.push(None),
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "Redlock instance failed");
                    unavailable += 1;
                    guards.push(None);
                }
                Err(_) => {
                    unavailable += 1;
                    guards.push(None);
                }
            }
        }
        let acquired = guards.iter().flatten().count();
        let deadline = validity::deadline(sent, ttl, manager.drift_factor());
        if acquired >= manager.quorum() && Instant::now() < deadline {
            return Ok(Attempt::Acquired(RedlockGuard::new(
                manager.clone(),
                self.key.clone(),
                token,
                ttl,
                guards,
                self.auto_renew,
            )));
        }
        // Give back everything, on every instance: also those that did not
        // answer, whose SET may still land (it is ours by token).
        let all: Vec<usize> = (0..guards.len()).collect();
        for guard in guards.into_iter().flatten() {
            guard.disarm();
        }
        manager.release_on(&self.key, token, ttl, &all).await;
        if unavailable > manager.instances() - manager.quorum() {
            return Err(Error::NoQuorum {
                acquired,
                needed: manager.quorum(),
                unavailable,
            });
        }
        Ok(Attempt::Contended)
    }
}
