//! [`LockManager`]: the entry point for locks, and its builder.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::class::KeyClasses;
use super::lease::Lease;
use super::many::ManyLockRequest;
use super::request::LockRequest;
use crate::client::{Client, ClientBuilder};
use crate::error::{Error, Result};
use crate::renew::{self, RenewHandle};
use crate::slot::{key_slot, slot_tag};

/// The shortest lease: `PX` counts whole milliseconds.
const MIN_TTL: Duration = Duration::from_millis(1);

/// The longest `max_ttl`: 2³² − 1 ms.
const MAX_TTL_LIMIT: Duration = Duration::from_millis(u32::MAX as u64);

/// Where a wait of `wait` that starts at `started` ends. Any length is
/// accepted: one beyond the clock's range (e.g. `Duration::MAX`) ends a
/// century on, which is never in practice.
pub(crate) fn wait_deadline(started: Instant, wait: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let wait = wait.min(CENTURY);
    started
        .checked_add(wait)
        .or_else(|| started.checked_add(wait / 1000))
        .unwrap_or(started)
}

/// Builds a [`LockManager`]: the connection settings of a [`ClientBuilder`]
/// plus the lock settings.
#[derive(Debug)]
#[must_use = "a builder does nothing until .build() is awaited"]
pub struct LockManagerBuilder {
    client: ClientBuilder,
    settings: Settings,
}

/// Lock settings, checked by `build`.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) namespace: String,
    pub(crate) fence_namespace: String,
    pub(crate) default_ttl: Duration,
    pub(crate) max_ttl: Duration,
    pub(crate) max_key_len: usize,
    pub(crate) max_keys: usize,
    pub(crate) renew_interval: Duration,
    pub(crate) renew_chunk: usize,
    pub(crate) key_classes: KeyClasses,
    /// A `key_classes` declaration that was refused, reported by `build`.
    key_classes_error: Option<String>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            namespace: "shardlock:lock:".into(),
            fence_namespace: "shardlock:fence:".into(),
            default_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(3600),
            max_key_len: 4096,
            max_keys: 1024,
            renew_interval: Duration::from_millis(100),
            renew_chunk: 500,
            key_classes: KeyClasses::none(),
            key_classes_error: None,
        }
    }
}

macro_rules! client_setting {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.client = self.client.$name(value);
            self
        }
    };
}

impl LockManagerBuilder {
    /// Nodes to ask for the slot map first (see [`ClientBuilder::seeds`]).
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.client = self.client.seeds(seeds);
        self
    }

    client_setting!(
        /// ACL user name for every node.
        username: impl Into<String>
    );
    client_setting!(
        /// Password for every node.
        password: impl Into<String>
    );
    client_setting!(
        /// See [`ClientBuilder::connect_timeout`].
        connect_timeout: Duration
    );
    client_setting!(
        /// See [`ClientBuilder::response_timeout`].
        response_timeout: Duration
    );
    client_setting!(
        /// Deadline of one Redis request, retries included (see
        /// [`ClientBuilder::request_timeout`]); a lock's `.wait()` is on top.
        request_timeout: Duration
    );
    client_setting!(
        /// See [`ClientBuilder::refresh_interval`].
        refresh_interval: Duration
    );
    client_setting!(
        /// See [`ClientBuilder::auto_pipeline`].
        auto_pipeline: bool
    );

    /// Prefix of every lock key (default `shardlock:lock:`). It must contain
    /// no braces, so the user key's own hash tag decides the slot.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.settings.namespace = namespace.into();
        self
    }

    /// Prefix of the per-slot fencing counters (default `shardlock:fence:`);
    /// no braces, and neither namespace may be a prefix of the other.
    pub fn fence_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.settings.fence_namespace = namespace.into();
        self
    }

    /// Lease length when a request sets none (default 10 s; at least 1 ms
    /// and at most `max_ttl`, else [`build`](Self::build) fails with
    /// [`Error::InvalidArgument`]).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.settings.default_ttl = ttl;
        self
    }

    /// Longest lease a request may ask for (default 1 hour; at least 1 ms,
    /// at most 2³² − 1 ms ≈ 49.7 days).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.settings.max_ttl = ttl;
        self
    }

    /// Longest user key, in bytes (default 4096).
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.settings.max_key_len = len;
        self
    }

    /// Most keys in one `lock_many` (default 1024).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.settings.max_keys = keys;
        self
    }

    /// How often the renewal task looks for leases due (default 100 ms;
    /// above zero and at most `default_ttl / 3`, hence `max_ttl / 3`). An
    /// auto-renewed lease is renewed when a third of its TTL has passed, so
    /// its TTL must be at least three intervals; requests renew by default,
    /// so the default TTL must be too.
    pub fn renew_interval(mut self, interval: Duration) -> Self {
        self.settings.renew_interval = interval;
        self
    }

    /// Most leases renewed by one script call (default 500), so that no
    /// single script runs long on the server.
    pub fn renew_chunk(mut self, leases: usize) -> Self {
        self.settings.renew_chunk = leases;
        self
    }

    /// Declares the key classes metrics are labelled with (`key_class`):
    /// a small fixed set, and a function from a key (as given to
    /// [`LockManager::lock`]) to one of them; whatever else it returns is
    /// recorded as `other`. A raw key is never a label. Without this every
    /// key is in class `default`. At most 32 classes, distinct, non-empty.
    ///
    /// ```
    /// # fn example() -> shardlock::LockManagerBuilder {
    /// shardlock::LockManager::builder().key_classes(&["user", "order"], |key| {
    ///     match key.split(|b| *b == b':').next() {
    ///         Some(b"user") => "user",
    ///         Some(b"order") => "order",
    ///         _ => "other",
    ///     }
    /// })
    /// # }
    /// ```
    pub fn key_classes(
        mut self,
        classes: &[&'static str],
        classify: impl Fn(&[u8]) -> &'static str + Send + Sync + 'static,
    ) -> Self {
        match KeyClasses::declared(classes, Arc::new(classify)) {
            Ok(declared) => self.settings.key_classes = declared,
            Err(Error::InvalidArgument(m)) => self.settings.key_classes_error = Some(m),
            Err(other) => self.settings.key_classes_error = Some(other.to_string()),
        }
        self
    }

    /// Checks the settings, connects (see [`ClientBuilder::build`]) and
    /// starts the renewal task.
    pub async fn build(self) -> Result<LockManager> {
        self.settings.validate()?;
        let client = self.client.build().await?;
        Ok(LockManager::with_client(client, self.settings))
    }
}

impl Settings {
    fn validate(&self) -> Result<()> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        if let Some(e) = &self.key_classes_error {
            return invalid(e.clone());
        }
        for (name, ns) in [
            ("namespace", &self.namespace),
            ("fence_namespace", &self.fence_namespace),
        ] {
            if ns.contains(['{', '}']) {
                return invalid(format!(
                    "{name} {ns:?} contains a brace; it would decide the hash slot instead of the key"
                ));
            }
        }
        if self.namespace.starts_with(&self.fence_namespace)
            || self.fence_namespace.starts_with(&self.namespace)
        {
            return invalid(format!(
                "namespace {:?} and fence_namespace {:?} overlap: a lock key could collide with a fencing counter",
                self.namespace, self.fence_namespace
            ));
        }
        if self.renew_chunk == 0 {
            return invalid("renew_chunk must be above zero".into());
        }
        // The bounds below keep every `Instant + setting` (and `3 ×
        // renew_interval`) far from overflow.
        if self.max_ttl > MAX_TTL_LIMIT {
            return invalid(format!(
                "max_ttl {:?} is above 49 days (2^32 - 1 ms)",
                self.max_ttl
            ));
        }
        if self.max_ttl < MIN_TTL {
            return invalid(format!("max_ttl {:?} is below 1ms", self.max_ttl));
        }
        if self.default_ttl < MIN_TTL || self.default_ttl > self.max_ttl {
            return invalid(format!(
                "default_ttl {:?} is outside 1ms..=max_ttl ({:?})",
                self.default_ttl, self.max_ttl
            ));
        }
        // Requests renew by default, so a default TTL shorter than three
        // intervals would refuse every request that sets no TTL.
        if self.renew_interval.is_zero() || self.renew_interval > self.default_ttl / 3 {
            return invalid(format!(
                "renew_interval {:?} is outside (0, default_ttl / 3 = {:?}]: an auto-renewed lease needs a TTL of at least three intervals, and requests renew by default",
                self.renew_interval,
                self.default_ttl / 3
            ));
        }
        if self.max_key_len == 0 || self.max_keys == 0 {
            return invalid("max_key_len and max_keys must be above zero".into());
        }
        Ok(())
    }
}

/// Exclusive locks on a Redis Cluster (or one standalone server). Cheap to
/// clone; the renewal task stops when the last clone and the last guard
/// are dropped.
#[derive(Clone)]
pub struct LockManager {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    settings: Settings,
    renew: RenewHandle,
    /// Leases handed to the background release since the build.
    background_releases: std::sync::atomic::AtomicU64,
}

impl LockManager {
    /// A builder with default settings.
    pub fn builder() -> LockManagerBuilder {
        LockManagerBuilder {
            client: Client::builder(),
            settings: Settings::default(),
        }
    }

    fn with_client(client: Client, settings: Settings) -> LockManager {
        for class in settings.key_classes.all() {
            crate::metrics::register_class(class);
        }
        let renew = renew::spawn(
            client.clone(),
            settings.renew_interval,
            settings.renew_chunk,
        );
        LockManager {
            inner: Arc::new(Inner {
                client,
                settings,
                renew,
                background_releases: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// A request for the lock on `key`; nothing is sent until
    /// [`LockRequest::acquire`] or [`LockRequest::try_acquire`].
    pub fn lock(&self, key: impl AsRef<[u8]>) -> LockRequest {
        LockRequest::new(self.clone(), key.as_ref().to_vec())
    }

    /// A request for the locks on all of `keys` at once (all or none); see
    /// [`ManyLockRequest`].
    pub fn lock_many<I, K>(&self, keys: I) -> ManyLockRequest
    where
        I: IntoIterator<Item = K>,
        K: AsRef<[u8]>,
    {
        ManyLockRequest::new(
            self.clone(),
            keys.into_iter().map(|k| k.as_ref().to_vec()).collect(),
        )
    }

    /// Stops (or resumes) the renewal of every lease of this manager, as if
    /// it were cut off from Redis: its leases expire and are reported lost.
    /// For fault tests only.
    #[cfg(feature = "testkit")]
    #[doc(hidden)]
    pub fn pause_renewal(&self, paused: bool) {
        self.inner.renew.set_paused(paused);
    }

    /// The routed client underneath.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn namespace_len(&self) -> usize {
        self.inner.settings.namespace.len()
    }

    /// Checks a user key; returns the full key (namespace included).
    pub(crate) fn full_key(&self, key: &[u8]) -> Result<Box<[u8]>> {
        let settings = &self.inner.settings;
        if key.is_empty() {
            return Err(Error::InvalidArgument("the lock key is empty".into()));
        }
        if key.len() > settings.max_key_len {
            return Err(Error::InvalidArgument(format!(
                "the lock key is {} bytes long, above max_key_len ({})",
                key.len(),
                settings.max_key_len
            )));
        }
        let mut full = Vec::with_capacity(settings.namespace.len() + key.len());
        full.extend_from_slice(settings.namespace.as_bytes());
        full.extend_from_slice(key);
        Ok(full.into_boxed_slice())
    }

    /// Checks a lease length: at least 1 ms (three renewal intervals when
    /// auto-renewed), at most `max_ttl`. Every TTL a request or an extend
    /// takes passes here first, so `Instant + ttl` cannot overflow.
    pub(crate) fn check_ttl(&self, ttl: Duration, auto_renew: bool) -> Result<()> {
        let settings = &self.inner.settings;
        let floor = if auto_renew {
            settings.renew_interval.saturating_mul(3)
        } else {
            MIN_TTL
        };
        if ttl < floor {
            return Err(Error::InvalidArgument(format!(
                "ttl {ttl:?} is below {floor:?}{}",
                if auto_renew {
                    " (three renewal intervals: an auto-renewed lease is renewed after a third of its TTL)"
                } else {
                    ""
                }
            )));
        }
        if ttl > settings.max_ttl {
            return Err(Error::InvalidArgument(format!(
                "ttl {ttl:?} is above max_ttl ({:?})",
                settings.max_ttl
            )));
        }
        Ok(())
    }

    /// The fencing counter of `slot`: `<fence_namespace>{<tag of slot>}`.
    pub(crate) fn fence_key(&self, slot: u16) -> Vec<u8> {
        format!(
            "{}{{{}}}",
            self.inner.settings.fence_namespace,
            slot_tag(slot)
        )
        .into_bytes()
    }

    /// Hands a held lease to the renewal task.
    pub(crate) fn register(&self, lease: Arc<Lease>) {
        self.inner.renew.register(lease);
    }

    /// A record of the lease `token` may hold on `key` here for `ttl`, for
    /// releasing it without a guard (Redlock cleans up instances that took
    /// the lock but whose replies came too late).
    fn unguarded_lease(&self, key: &[u8], token: u128, ttl: Duration) -> Result<Arc<Lease>> {
        let full = self.full_key(key)?;
        let slot = Self::slot_of(&full);
        let class = self.key_class(key);
        // Only Redlock releases by token; its instances do not wait out an
        // unavailability.
        let retry = crate::router::Retry::RedirectsOnly;
        Ok(Arc::new(Lease::unguarded(
            full, slot, token, ttl, class, retry,
        )))
    }

    /// Compare-and-delete of `key` if it holds `token`'s value (a lease of
    /// at most `ttl`); true when it did and is now gone.
    pub(crate) async fn release_token(
        &self,
        key: &[u8],
        token: u128,
        ttl: Duration,
    ) -> Result<bool> {
        let lease = self.unguarded_lease(key, token, ttl)?;
        super::lease::release_lease(self.client(), &lease).await
    }

    /// [`release_token`](Self::release_token) in the background (a
    /// foreground one that timed out or failed after it may have been
    /// written).
    pub(crate) fn release_token_in_background(&self, key: &[u8], token: u128, ttl: Duration) {
        if let Ok(lease) = self.unguarded_lease(key, token, ttl) {
            self.release_in_background(lease);
        }
    }

    /// Releases a lease whose guard was dropped, without waiting.
    pub(crate) fn release_in_background(&self, lease: Arc<Lease>) {
        self.inner
            .background_releases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.renew.release(lease);
    }

    /// Waits until the background release has decided every lease handed
    /// to it before this call — dropped guards, releases that failed,
    /// failed acquires' orphans — and any handed to it meanwhile: each one
    /// deleted by token, found gone, or given up (the key has certainly
    /// expired by its TTL). For a graceful shutdown: drop or release the
    /// guards, then call this before the process exits, so that no lease
    /// this process took outlives it by more than it must.
    ///
    /// Fails with [`Error::ReleasesPending`] when `timeout` passes first
    /// (a node is unreachable, or guards keep being dropped), and with
    /// [`Error::Stopped`] when the runtime that ran the background task
    /// shut down meanwhile (its releases wait for the next one). Releases
    /// of leases still held by guards are not waited for. A zero `timeout`
    /// only asks whether anything is pending.
    pub async fn flush_releases(&self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.inner.renew.flushed()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped("renewal")),
            Err(_) => Err(Error::ReleasesPending { waited: timeout }),
        }
    }

    /// Leases handed to the background release since this manager was
    /// built: dropped guards, releases that failed, failed acquires'
    /// orphans. For tests that check that clean-up stays bounded.
    #[cfg(feature = "testkit")]
    pub fn background_releases_total(&self) -> u64 {
        self.inner
            .background_releases
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The metrics class of `key` (as the application gave it).
    pub(crate) fn key_class(&self, key: &[u8]) -> &'static str {
        self.inner.settings.key_classes.of(key)
    }

    /// `key_slot` of a full key.
    pub(crate) fn slot_of(full_key: &[u8]) -> u16 {
        key_slot(full_key)
    }
}

impl std::fmt::Debug for LockManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockManager")
            .field("namespace", &self.inner.settings.namespace)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Namespaces with braces, overlapping namespaces and zero limits are refused by name.
    #[test]
    fn settings_are_checked() {
        let ok = Settings::default();
        ok.validate().unwrap();
        let cases: Vec<(Settings, &str)> = vec![
            (
                Settings {
                    namespace: "lock:{x}:".into(),
                    ..ok.clone()
                },
                "brace",
            ),
            (
                Settings {
                    fence_namespace: "f{".into(),
                    ..ok.clone()
                },
                "brace",
            ),
            (
                Settings {
                    namespace: "".into(),
                    ..ok.clone()
                },
                "overlap",
            ),
            (
                Settings {
                    namespace: "a:".into(),
                    fence_namespace: "a:fence:".into(),
                    ..ok.clone()
                },
                "overlap",
            ),
            (
                Settings {
                    renew_chunk: 0,
                    ..ok.clone()
                },
                "renew_chunk",
            ),
            (
                Settings {
                    max_ttl: Duration::from_secs(60 * 24 * 3600),
                    ..ok.clone()
                },
                "49 days",
            ),
            (
                Settings {
                    max_keys: 0,
                    ..ok.clone()
                },
                "max_keys",
            ),
            (
                Settings {
                    default_ttl: ok.max_ttl + Duration::from_nanos(1),
                    ..ok.clone()
                },
                "default_ttl",
            ),
            (
                Settings {
                    max_ttl: Duration::ZERO,
                    ..ok.clone()
                },
                "max_ttl",
            ),
            (
                Settings {
                    renew_interval: Duration::MAX,
                    ..ok.clone()
                },
                "renew_interval",
            ),
            (
                Settings {
                    renew_interval: Duration::ZERO,
                    ..ok.clone()
                },
                "renew_interval",
            ),
        ];
        for (settings, needle) in cases {
            match settings.validate() {
                Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{settings:?}: {other:?}"),
            }
        }
    }
}
