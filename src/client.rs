//! [`Client`]: a routed connection to a Redis Cluster (or one standalone
//! server), the base every lock operation runs on.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::{Cmd, FromRedisValue, Value};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::NodePool;
use crate::refresh;
use crate::request::Request;
use crate::router::{Retry, Router, Shared};
use crate::stats::{Counters, RouterStats};
use crate::topology::Topology;

/// Builds a [`Client`]. Every setting has a default except the seeds.
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until .build() is awaited"]
pub struct ClientBuilder {
    config: Config,
    seed_error: Option<String>,
}

impl ClientBuilder {
    /// Nodes to ask for the slot map first: any node(s) of the cluster, or
    /// one standalone server, as `redis://[user:password@]host:port` or
    /// `host:port`. Credentials in a URL apply to every node unless
    /// [`username`](Self::username) / [`password`](Self::password) are set.
    ///
    /// For a standalone server, every seed must name that one server (two
    /// addresses of it are fine: they are told apart by `run_id`); seeds
    /// naming two servers, or a primary and its replica, make
    /// [`build`](Self::build) fail with [`Error::InvalidArgument`].
    pub fn seeds<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for seed in seeds {
            if let Err(e) = self.config.add_seed(seed.as_ref())
                && self.seed_error.is_none()
            {
                self.seed_error = Some(e.to_string());
            }
        }
        self
    }

    /// ACL user name for every node.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.config.username = Some(username.into());
        self
    }

    /// Password for every node.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.config.password = Some(password.into());
        self
    }

    /// Limit for opening one connection, handshake included (default 1 s;
    /// above zero, at most one day, else [`build`](Self::build) fails with
    /// [`Error::InvalidArgument`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Limit for one reply (default 1 s; above zero, at most one day); a
    /// timed-out attempt is retried within the request's deadline.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.config.response_timeout = timeout;
        self
    }

    /// Default deadline of one request, retries included (default 5 s;
    /// above zero, at most one day).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// How often the slot map is fetched even without hints (default 10 s;
    /// above zero, at most one day).
    pub fn refresh_interval(mut self, interval: Duration) -> Self {
        self.config.refresh_interval = interval;
        self
    }

    /// Least time between two hint-triggered fetches (default 100 ms; zero
    /// is allowed, at most one day).
    pub fn refresh_min_gap(mut self, gap: Duration) -> Self {
        self.config.refresh_min_gap = gap;
        self
    }

    /// Whether requests for one node that are submitted together leave in
    /// one write as one pipeline (default on). Off, every request is its
    /// own write: no difference when idle, several times the system calls
    /// on the client and more CPU on the servers when busy (see
    /// `docs/BENCHMARKS.md`).
    pub fn auto_pipeline(mut self, enabled: bool) -> Self {
        self.config.auto_pipeline = enabled;
        self
    }

    /// Checks the settings, fetches the slot map from the seeds and starts
    /// the refresher. Fails with [`Error::InvalidArgument`] for bad
    /// settings or seeds that name more than one standalone server,
    /// [`Error::Auth`] when a node refuses the credentials,
    /// [`Error::UnsupportedServer`] when a seed runs Redis before 7.0, and
    /// [`Error::NoNodeReachable`] (naming each seed and why) when no seed
    /// gives a usable slot map (or, for a standalone server, another seed
    /// does not answer); each seed costs at most the connect plus response
    /// timeout.
    pub async fn build(self) -> Result<Client> {
        if let Some(e) = self.seed_error {
            return Err(Error::InvalidArgument(e));
        }
        self.config.validate()?;
        let config = Arc::new(self.config);
        let counters = Counters::default();
        let nodes = NodePool::new(config.clone(), counters.writes.clone());
        let topology = refresh::fetch_first(&config, &nodes).await?;
        let shared = Arc::new(Shared {
            config,
            topology: ArcSwap::from_pointee(topology.with_version(1)),
            nodes,
            counters,
        });
        crate::metrics::topology_version(1);
        crate::metrics::register_zeroes();
        let refresher = refresh::spawn(shared.clone());
        Ok(Client {
            router: Arc::new(Router::new(shared, refresher)),
        })
    }
}

/// A routed connection to a Redis Cluster or a standalone server. Cheap to
/// clone; the refresher stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    router: Arc<Router>,
}

impl Client {
    /// A builder with default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Runs `request` on the primary serving `slot`, following redirects
    /// and retrying within the default request timeout. Returns one reply
    /// per command; an error reply that retrying cannot cure fails the call.
    pub async fn execute(&self, slot: u16, request: &Request) -> Result<Vec<Value>> {
        let deadline = Instant::now() + self.router.shared.config.request_timeout;
        self.execute_until(slot, request, deadline).await
    }

    /// [`execute`](Self::execute) with an explicit deadline.
    pub async fn execute_until(
        &self,
        slot: u16,
        request: &Request,
        deadline: Instant,
    ) -> Result<Vec<Value>> {
        if slot >= crate::slot::SLOT_COUNT {
            return Err(Error::InvalidArgument(format!(
                "slot {slot} is out of range (0..16384)"
            )));
        }
        self.router
            .execute(slot, request, deadline, Retry::UntilDeadline)
            .await
    }

    /// [`execute_with`](Self::execute_with), also returning when the
    /// attempt that got the replies was sent.
    pub(crate) async fn execute_timed(
        &self,
        slot: u16,
        request: &Request,
        retry: Retry,
    ) -> Result<(Vec<Value>, Instant)> {
        let deadline = Instant::now() + self.router.shared.config.request_timeout;
        self.router
            .execute_timed(slot, request, deadline, retry)
            .await
    }

    /// [`execute`](Self::execute) with the default deadline and `retry`.
    pub(crate) async fn execute_with(
        &self,
        slot: u16,
        request: &Request,
        retry: Retry,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + self.router.shared.config.request_timeout;
        self.router.execute(slot, request, deadline, retry).await
    }

    /// Runs one command on the primary serving `key`'s slot and converts
    /// its reply.
    pub async fn query<T: FromRedisValue>(&self, key: impl AsRef<[u8]>, cmd: Cmd) -> Result<T> {
        let slot = crate::slot::key_slot(key.as_ref());
        let mut replies = self.execute(slot, &Request::cmd(cmd)).await?;
        let reply = replies
            .pop()
            .ok_or_else(|| Error::UnexpectedReply("no reply".into()))?;
        redis::from_redis_value(reply).map_err(|e| Error::UnexpectedReply(e.to_string()))
    }

    /// The slot map in use now (it may be stale; MOVED repairs it).
    pub fn topology(&self) -> Arc<Topology> {
        self.router.shared.topology.load_full()
    }

    /// Routing counters since this client was built.
    pub fn stats(&self) -> RouterStats {
        let version = self.router.shared.topology.load().version();
        self.router.shared.counters.snapshot(version)
    }

    /// Fetches the slot map now and waits for the fetch (bounded by the
    /// request timeout). Fails with [`Error::NoNodeReachable`] when no node
    /// gave a usable map; the map in use is then kept.
    pub async fn refresh(&self) -> Result<()> {
        let deadline = Instant::now() + self.router.shared.config.request_timeout;
        self.router
            .refresher()
            .refresh_now(&self.router.shared.counters, deadline)
            .await
    }

    /// Sends a refresh hint, as a MOVED reply would; fetches are coalesced.
    pub fn hint_refresh(&self) -> Result<()> {
        self.router
            .refresher()
            .request(&self.router.shared.counters)
    }

    pub(crate) fn router(&self) -> &Router {
        &self.router
    }

    /// The seeds, as `host:port`.
    pub(crate) fn seeds(&self) -> &[String] {
        &self.router.shared.config.seeds
    }

    /// The response timeout of one attempt.
    pub(crate) fn response_timeout(&self) -> Duration {
        self.router.shared.config.response_timeout
    }

    /// The default request timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.router.shared.config.request_timeout
    }

    /// Number of nodes with a connection handle (connected or not).
    pub fn known_nodes(&self) -> usize {
        self.router.shared.nodes.len()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
