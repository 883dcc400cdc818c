//! Connections to nodes: one multiplexed connection per node, made lazily,
//! replaced when it breaks, with capped jittered backoff between failed
//! connection attempts; and, for blocking requests (`WAIT`), a few
//! dedicated connections per node, so they never hold up the shared one.
//!
//! Invariants:
//! - The fast path (a live connection exists) takes no lock: it loads an
//!   `ArcSwapOption` and clones the connection handle.
//! - At most one connection attempt per node runs at a time; callers that
//!   arrive meanwhile wait for its outcome (bounded by their deadline) rather
//!   than opening connections of their own.
//! - After a failed attempt, callers fail fast with
//!   [`RetryCause::NodeBackoff`] until the backoff delay has passed, so a dead
//!   node costs one connection attempt per delay, not one per request.
//! - A blocking request runs alone on one of at most
//!   [`BLOCKING_CONNECTIONS`] connections of its node, never on the shared
//!   connection: Redis answers nothing else on a connection while `WAIT`
//!   blocks it. More concurrent blocking requests wait for a free one. Its
//!   connections are made through the same gate and backoff as the shared
//!   one (the two invariants above hold for every connection of a node).
//! - Nothing here is bound to one tokio runtime: a connection whose driver
//!   task died with its runtime fails its next request as dropped and is
//!   replaced, and a batching worker that died with its runtime is started
//!   again on the next caller's runtime.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::batcher::Batcher;
use crate::config::Config;
use crate::redirect::{Action, RetryCause, classify};

/// A live connection as handed to callers; compare with `Arc::ptr_eq`.
pub(crate) type Conn = Arc<MultiplexedConnection>;

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Nothing tried: the node is in backoff after earlier failures.
    Backoff,
    /// The caller's deadline passed while connecting or waiting.
    Deadline,
    /// The connection attempt failed.
    Failed(RedisError),
    /// The address or settings cannot make a connection.
    Invalid(String),
}

impl ConnectError {
    /// What the router should do about it.
    pub(crate) fn action(&self) -> Action {
        match self {
            ConnectError::Backoff => Action::Refresh(RetryCause::NodeBackoff),
            ConnectError::Deadline => Action::Refresh(RetryCause::TimedOut),
            ConnectError::Failed(e) => classify(&Err(e.clone())),
            ConnectError::Invalid(m) => Action::Fail(crate::redirect::FailCause::Other(m.clone())),
        }
    }
}

/// Every node this client has talked to, by `host:port`.
///
/// Reads (one per request) load an immutable map without locking; the
/// rare insertions and removals copy it under `writer`.
pub(crate) struct NodePool {
    config: Arc<Config>,
    /// Pipelines written, counted by the nodes' batchers.
    writes: Arc<AtomicU64>,
    nodes: ArcSwap<HashMap<Arc<str>, Arc<Node>>>,
    writer: Mutex<()>,
}

impl NodePool {
    pub(crate) fn new(config: Arc<Config>, writes: Arc<AtomicU64>) -> NodePool {
        NodePool {
            config,
            writes,
            nodes: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
        }
    }

    /// The node at `addr`, created (unconnected) on first use.
    pub(crate) fn node(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.nodes.load().get(addr) {
            return node.clone();
        }
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.nodes.load_full();
        if let Some(node) = current.get(addr) {
            return node.clone();
        }
        let node = Arc::new(Node::new(
            addr.into(),
            self.config.clone(),
            self.writes.clone(),
        ));
        let mut next = HashMap::clone(&current);
        next.insert(node.addr.clone(), node.clone());
        self.nodes.store(Arc::new(next));
        node
    }

    /// Forgets nodes for which `keep` is false; their connections close
    /// once in-flight requests holding them finish.
    pub(crate) fn retain(&self, keep: impl Fn(&str) -> bool) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.nodes.load_full();
        if current.keys().all(|addr| keep(addr)) {
            return;
        }
        let mut next = HashMap::clone(&current);
        next.retain(|addr, _| keep(addr));
        self.nodes.store(Arc::new(next));
    }

    /// Number of nodes known, connected or not.
    pub(crate) fn len(&self) -> usize {
        self.nodes.load().len()
    }
}

/// One node: its live connection, if any, and its reconnect state.
pub(crate) struct Node {
    addr: Arc<str>,
    config: Arc<Config>,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Held only by the one caller making a connection attempt.
    gate: tokio::sync::Mutex<Reconnect>,
    /// Started on first use (from within the runtime); stops with the node,
    /// or with its runtime, and is then started again on the next caller's.
    batcher: ArcSwapOption<Batcher>,
    /// Held by the one caller starting a batcher.
    respawn: Mutex<()>,
    /// Connections for blocking requests (see [`Node::blocking_connection`]).
    blocking: Arc<BlockingPool>,
    writes: Arc<AtomicU64>,
}

#[derive(Default)]
struct Reconnect {
    /// Consecutive failed attempts.
    failures: u32,
    /// No attempt before this instant.
    not_before: Option<Instant>,
}

impl Node {
    fn new(addr: Arc<str>, config: Arc<Config>, writes: Arc<AtomicU64>) -> Node {
        Node {
            addr,
            config,
            conn: ArcSwapOption::empty(),
            gate: tokio::sync::Mutex::new(Reconnect::default()),
            batcher: ArcSwapOption::empty(),
            respawn: Mutex::new(()),
            blocking: Arc::new(BlockingPool {
                permits: Semaphore::new(BLOCKING_CONNECTIONS),
                idle: Mutex::new(Vec::new()),
            }),
            writes,
        }
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// The worker that batches this node's requests (see [`Batcher`]),
    /// started on the caller's runtime if there is none or the one there
    /// is stopped (its runtime shut down). Must be called from within a
    /// runtime.
    pub(crate) fn batcher(&self) -> Arc<Batcher> {
        if let Some(batcher) = self.batcher.load_full().filter(|b| !b.is_stopped()) {
            return batcher;
        }
        let _respawn = self.respawn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(batcher) = self.batcher.load_full().filter(|b| !b.is_stopped()) {
            return batcher;
        }
        let batcher = Arc::new(Batcher::spawn(self.writes.clone()));
        self.batcher.store(Some(batcher.clone()));
        batcher
    }

    /// A live connection, connecting first if there is none.
    pub(crate) async fn connection(&self, deadline: Instant) -> Result<Conn, ConnectError> {
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        let mut gate = tokio::time::timeout_at(deadline, self.gate.lock())
            .await
            .map_err(|_| ConnectError::Deadline)?;
        // Someone else may have connected while we waited for the gate.
        if let Some(conn) = self.conn.load_full() {
            return Ok(conn);
        }
        if gate.not_before.is_some_and(|t| Instant::now() < t) {
            return Err(ConnectError::Backoff);
        }
        let attempt_deadline = deadline.min(Instant::now() + self.config.connect_timeout);
        match tokio::time::timeout_at(attempt_deadline, self.connect()).await {
            Ok(Ok(conn)) => {
                let conn = Arc::new(conn);
                self.conn.store(Some(conn.clone()));
                *gate = Reconnect::default();
                crate::metrics::node_connected(&self.addr);
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.note_failure(&mut gate);
                Err(e)
            }
            Err(_) => {
                self.note_failure(&mut gate);
                Err(ConnectError::Failed(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect to {} timed out", self.addr),
                ))))
            }
        }
    }

    fn note_failure(&self, gate: &mut Reconnect) {
        let delay = self.config.reconnect_backoff.delay(gate.failures);
        gate.failures = gate.failures.saturating_add(1);
        gate.not_before = Some(Instant::now() + delay);
    }

    async fn connect(&self) -> Result<MultiplexedConnection, ConnectError> {
        let info = self
            .config
            .connection_info(&self.addr)
            .map_err(|e| ConnectError::Invalid(e.to_string()))?;
        let client = redis::Client::open(info).map_err(ConnectError::Failed)?;
        let settings = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(self.config.response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&settings)
            .await
            .map_err(ConnectError::Failed)
    }

    /// A connection of this node's own for one blocking request (`WAIT`),
    /// never the shared one: made on first use, kept for the next blocking
    /// request when given back, at most [`BLOCKING_CONNECTIONS`] in use at
    /// once. Callers beyond that wait for one to come free, within their
    /// deadline ([`ConnectError::Deadline`] when it passes). A new
    /// connection is made through the node's reconnect gate, as the shared
    /// one is: one attempt per node at a time, none while the node backs
    /// off ([`ConnectError::Backoff`]), and a failed attempt backs the node
    /// off for every caller; a dead node costs one connection attempt per
    /// backoff delay, not one per blocking request.
    pub(crate) async fn blocking_connection(
        &self,
        deadline: Instant,
    ) -> Result<BlockingConn, ConnectError> {
        let permit = tokio::time::timeout_at(deadline, self.blocking.permits.acquire())
            .await
            .map_err(|_| ConnectError::Deadline)?;
        // The semaphore is never closed.
        let Ok(permit) = permit else {
            return Err(ConnectError::Deadline);
        };
        let idle = self
            .blocking
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let mut gate = tokio::time::timeout_at(deadline, self.gate.lock())
                    .await
                    .map_err(|_| ConnectError::Deadline)?;
                if gate.not_before.is_some_and(|t| Instant::now() < t) {
                    return Err(ConnectError::Backoff);
                }
                let attempt_deadline = deadline.min(Instant::now() + self.config.connect_timeout);
                match tokio::time::timeout_at(attempt_deadline, self.connect()).await {
                    Ok(Ok(conn)) => {
                        *gate = Reconnect::default();
                        conn
                    }
                    Ok(Err(e)) => {
                        self.note_failure(&mut gate);
                        return Err(e);
                    }
                    Err(_) => {
                        self.note_failure(&mut gate);
                        return Err(ConnectError::Deadline);
                    }
                }
            }
        };
        // From here the permit is returned by the `BlockingConn`'s drop.
        permit.forget();
        Ok(BlockingConn {
            pool: self.blocking.clone(),
            conn,
            reusable: false,
        })
    }

    /// Drops `broken` so the next caller reconnects; a newer connection
    /// made meanwhile by another caller is kept.
    pub(crate) fn discard(&self, broken: &Conn) {
        let current = self.conn.load();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, broken)) {
            self.conn.compare_and_swap(&*current, None);
        }
    }
}

/// Most connections per node for blocking requests. Each blocking request
/// holds a whole connection (and a client slot on the server) until it
/// returns, up to its timeout; unbounded, a burst of replica-acknowledged
/// acquires, or a stalled replica that makes every `WAIT` last its full
/// timeout, would open one connection per acquire to the same primary.
pub(crate) const BLOCKING_CONNECTIONS: usize = 8;

/// A node's connections for blocking requests: idle ones, and permits for
/// the ones in use.
struct BlockingPool {
    permits: Semaphore,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

/// One blocking request's connection. Dropped, it frees its permit; the
/// connection goes back to the idle set only if [`BlockingConn::give_back`]
/// was called (the request ended with its replies, so nothing is left
/// unanswered on it).
pub(crate) struct BlockingConn {
    pool: Arc<BlockingPool>,
    conn: MultiplexedConnection,
    reusable: bool,
}

impl BlockingConn {
    /// The connection, for one request.
    pub(crate) fn get(&mut self) -> &mut MultiplexedConnection {
        &mut self.conn
    }

    /// Keeps the connection for the next blocking request.
    pub(crate) fn give_back(mut self) {
        self.reusable = true;
    }
}

impl Drop for BlockingConn {
    fn drop(&mut self) {
        if self.reusable {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(self.conn.clone());
        }
        self.pool.permits.add_permits(1);
    }
}
