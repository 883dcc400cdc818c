//! The topology refresher: the one task that fetches the slot map.
//!
//! A handle plus a worker. Handles ([`RefreshHandle`]) send hints; the
//! worker fetches `CLUSTER SHARDS` and swaps a new snapshot in. The worker
//! ends when the last handle drops; if it dies, handles report
//! [`Error::Stopped`] instead of hanging. A worker that ended with its
//! runtime is replaced by the router on the next call's runtime (see
//! `Router::refresher`).
//!
//! Single flight: hints go through a channel of capacity one, so any number
//! of hints sent while a fetch is pending or running cost at most one more
//! fetch. Fetches triggered by hints are at least `refresh_min_gap` apart;
//! a periodic fetch runs every `refresh_interval` regardless.
//!
//! Which node answers: the nodes of the current snapshot (primaries first,
//! starting at a rotating position so fetches spread), then the seeds. A
//! snapshot that leaves slots unassigned is used only if no node offers a
//! complete one.
//!
//! Every node asked is checked first: `HELLO` must report Redis 7.0 or
//! later (`SET … NX … GET` and `CLUSTER SHARDS` need it; there is no
//! `CLUSTER SLOTS` fallback), else it counts as
//! [`NodeFailureCause::Unsupported`] and, at build, the client fails with
//! [`Error::UnsupportedServer`].
//!
//! One deployment per client: at build, when a seed turns out to be a
//! standalone server, every other seed must answer as that same server
//! (same `run_id`; two names for one server are fine), else
//! [`Error::InvalidArgument`] (two servers, a primary and its replica, a
//! standalone server and a cluster node) or, if one does not answer,
//! [`Error::NoNodeReachable`]. Afterwards a standalone client asks only
//! the address it was built on, so it never moves to another server, and a
//! client never switches between cluster and standalone: such an answer is
//! a failed fetch.

use std::sync::Arc;

use redis::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, NodeFailure, NodeFailureCause, Result};
use crate::node::NodePool;
use crate::redirect::{Action, FailCause, RetryCause, classify, classify_error};
use crate::router::Shared;
use crate::stats::Counters;
use crate::topology::{Topology, server};

/// Fetches started and completed, so callers can wait for a fresh one,
/// and how the latest completed fetch went.
#[derive(Clone, Debug, Default)]
struct Progress {
    started: u64,
    completed: u64,
    /// `Some` when the latest completed fetch found no usable node.
    failures: Option<Arc<[NodeFailure]>>,
}

/// The sending side: cheap to clone, sends hints, waits for fetches.
#[derive(Clone)]
pub(crate) struct RefreshHandle {
    hints: mpsc::Sender<()>,
    progress: watch::Receiver<Progress>,
}

impl RefreshHandle {
    /// True once the worker has ended: the runtime it ran on shut down (or
    /// it panicked). See [`crate::router::Router::refresher`].
    pub(crate) fn is_stopped(&self) -> bool {
        self.hints.is_closed()
    }

    /// Asks for a fetch soon. Hints that arrive while one is pending are
    /// merged into it.
    pub(crate) fn request(&self, counters: &Counters) -> Result<()> {
        Counters::bump(&counters.refresh_requests);
        match self.hints.try_send(()) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(())) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(())) => Err(Error::Stopped("topology refresher")),
        }
    }

    /// Asks for a fetch and waits until one that started after this call
    /// has completed; fails with the nodes' failures if that fetch found
    /// no usable node.
    pub(crate) async fn refresh_now(&self, counters: &Counters, deadline: Instant) -> Result<()> {
        let called = Instant::now();
        let mut progress = self.progress.clone();
        let started_before = progress.borrow_and_update().started;
        self.request(counters)?;
        let wait = progress.wait_for(|p| p.completed > started_before);
        let failures = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(done)) => done.failures.clone(),
            Ok(Err(_)) => return Err(Error::Stopped("topology refresher")),
            Err(_) => {
                return Err(Error::DeadlineExceeded {
                    attempts: 1,
                    elapsed: called.elapsed(),
                    last: RetryCause::TimedOut,
                });
            }
        };
        match failures {
            None => Ok(()),
            Some(failures) => Err(Error::NoNodeReachable(failures.to_vec())),
        }
    }
}

/// Starts the worker for `shared`; it runs until every handle is dropped.
pub(crate) fn spawn(shared: Arc<Shared>) -> RefreshHandle {
    let (hints_tx, hints_rx) = mpsc::channel(1);
    let (progress_tx, progress_rx) = watch::channel(Progress::default());
    tokio::spawn(run(shared, hints_rx, progress_tx));
    RefreshHandle {
        hints: hints_tx,
        progress: progress_rx,
    }
}

async fn run(
    shared: Arc<Shared>,
    mut hints: mpsc::Receiver<()>,
    progress: watch::Sender<Progress>,
) {
    let config = shared.config.clone();
    let mut next_periodic = Instant::now() + config.refresh_interval;
    let mut last_fetch: Option<Instant> = None;
    let mut rotation: usize = 0;
    loop {
        tokio::select! {
            hint = hints.recv() => if hint.is_none() { return },
            _ = tokio::time::sleep_until(next_periodic) => {}
        }
        if let Some(earliest) = last_fetch.map(|t| t + config.refresh_min_gap) {
            tokio::time::sleep_until(earliest).await;
        }
        // Every hint sent up to here is answered by the fetch below.
        while hints.try_recv().is_ok() {}
        progress.send_modify(|p| p.started += 1);
        let current = shared.topology.load_full();
        rotation = rotation.wrapping_add(1);
        let failures = match fetch(&config, &shared.nodes, Some(&current), rotation).await {
            Ok(topology) => {
                let version = shared.install(topology);
                Counters::bump(&shared.counters.refreshes);
                crate::metrics::topology_refresh(true, version);
                None
            }
            Err(failures) => {
                Counters::bump(&shared.counters.refresh_failures);
                crate::metrics::topology_refresh(false, 0);
                tracing::warn!(
                    error = %Error::NoNodeReachable(failures.clone()),
                    "topology refresh failed; keeping the current slot map"
                );
                Some(Arc::from(failures))
            }
        };
        progress.send_modify(|p| {
            p.completed += 1;
            p.failures = failures;
        });
        let now = Instant::now();
        last_fetch = Some(now);
        next_periodic = now + config.refresh_interval;
    }
}

/// The first slot map, when a client is built: [`fetch`] from the seeds,
/// and, when a standalone server answered, the check that every other seed
/// is that same server (same `run_id`).
///
/// Errors: [`Error::Auth`] when a seed refused the credentials,
/// [`Error::UnsupportedServer`] when one runs Redis before 7.0,
/// [`Error::NoNodeReachable`] when no seed gave a usable map (or, with a
/// standalone server, another seed did not answer; a refusal of our
/// credentials or an old version there is reported as above), and
/// [`Error::InvalidArgument`] when the seeds name more than one deployment
/// (two standalone servers, a primary and its replica, a standalone server
/// and a cluster node, or nodes of two clusters that answer).
pub(crate) async fn fetch_first(config: &Config, nodes: &NodePool) -> Result<Topology> {
    let topology = fetch(config, nodes, None, 0)
        .await
        .map_err(first_fetch_error)?;
    if topology.is_standalone() {
        same_server_everywhere(config, nodes, &topology).await?;
    } else {
        same_cluster_everywhere(config, nodes, &topology).await?;
    }
    Ok(topology)
}

/// Every seed that is not a node of `cluster`'s map and answers must be a
/// node of that same cluster (its map shares a node id with `cluster`'s):
/// otherwise two clients given the same seeds in another order would lock
/// on different deployments. Seeds that do not answer are skipped (a
/// cluster stays usable with a node down); the refresher never moves to
/// another cluster later either (see [`fetch`]).
async fn same_cluster_everywhere(
    config: &Config,
    nodes: &NodePool,
    cluster: &Topology,
) -> Result<()> {
    let known: Vec<&str> = cluster.nodes().map(|n| n.addr().as_ref()).collect();
    let answered = cluster
        .nodes()
        .next()
        .map(|n| n.addr().to_string())
        .unwrap_or_default();
    for seed in &config.seeds {
        if known.contains(&seed.as_str()) {
            continue;
        }
        match fetch_from(config, nodes, seed).await {
            Ok(other) if other.is_standalone() => {
                return Err(Error::InvalidArgument(format!(
                    "seed {seed} is a standalone server but the other seeds are nodes of a \
                     cluster; give the nodes of one deployment"
                )));
            }
            Ok(other) if !same_cluster(cluster, &other) => {
                return Err(Error::InvalidArgument(format!(
                    "seed {seed} is a node of another cluster than {answered} (their slot maps \
                     share no node id); give the nodes of one deployment"
                )));
            }
            Ok(_) => {}
            Err(cause) => {
                tracing::debug!(%seed, ?cause, "seed not checked at build: it did not answer");
            }
        }
    }
    Ok(())
}

/// Whether two cluster slot maps describe one cluster: they share a node id
/// (node ids are random 160-bit names, kept for a node's life). Maps
/// without ids cannot be told apart and count as one.
fn same_cluster(a: &Topology, b: &Topology) -> bool {
    let ids: Vec<&str> = a.nodes().filter_map(|n| n.id()).collect();
    let mut others = b.nodes().filter_map(|n| n.id()).peekable();
    if ids.is_empty() || others.peek().is_none() {
        return true;
    }
    others.any(|id| ids.contains(&id))
}

/// The error of a first fetch that found no usable node: the first
/// refused credential or unsupported server, else every node's failure.
fn first_fetch_error(failures: Vec<NodeFailure>) -> Error {
    for f in &failures {
        match &f.cause {
            NodeFailureCause::Failed(FailCause::Auth(message)) => {
                return Error::Auth {
                    addr: f.addr.clone(),
                    message: message.clone(),
                };
            }
            NodeFailureCause::Unsupported(version) => {
                return Error::UnsupportedServer {
                    addr: f.addr.clone(),
                    version: version.clone(),
                    minimum: server::MIN_VERSION_TEXT,
                };
            }
            _ => {}
        }
    }
    Error::NoNodeReachable(failures)
}

/// Every seed other than the one that gave `standalone` must be that same
/// server: a standalone server that reports the same `run_id`. Two names for
/// one server are fine; anything else would let two clients with the same
/// seeds in another order lock on different servers.
async fn same_server_everywhere(
    config: &Config,
    nodes: &NodePool,
    standalone: &Topology,
) -> Result<()> {
    let primary = standalone
        .shards()
        .first()
        .map(|s| s.primary())
        .ok_or_else(|| Error::Other("a standalone slot map without a server".into()))?;
    let answered = primary.addr().as_ref();
    let mut checked: Vec<&str> = vec![answered];
    for seed in &config.seeds {
        if checked.contains(&seed.as_str()) {
            continue;
        }
        checked.push(seed);
        let other = match fetch_from(config, nodes, seed).await {
            Ok(other) => other,
            Err(cause) => {
                return Err(first_fetch_error(vec![NodeFailure {
                    addr: seed.clone(),
                    cause,
                }]));
            }
        };
        let other_id = other.shards().first().and_then(|s| s.primary().id());
        if !other.is_standalone() {
            return Err(Error::InvalidArgument(format!(
                "seed {seed} is a cluster node but seed {answered} is a standalone server; \
                 give the nodes of one deployment"
            )));
        }
        match (primary.id(), other_id) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                return Err(Error::InvalidArgument(format!(
                    "seeds {answered} and {seed} are two different standalone servers \
                     (run_id {a} and {b}); a standalone deployment is one server: give only \
                     its address (a replica is not a seed)"
                )));
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "seeds {answered} and {seed} are standalone servers that cannot be told \
                     apart (INFO server gave no run_id); give one seed"
                )));
            }
        }
    }
    Ok(())
}

/// Asks for the slot map. With a standalone `current`, only its server is
/// asked (a standalone client never moves to another server: not to a
/// replica, not to another seed); otherwise the nodes of `current`, then
/// the seeds, primaries first starting at `rotation` (mod their number), so
/// successive fetches spread over the cluster. Once a client has a map, an
/// answer of the other kind (a standalone server for a cluster, or the
/// reverse) is refused as a bad topology, and so is a cluster map that
/// shares no node id with the current one (another cluster's node, e.g. a
/// seed that did not answer at build).
pub(crate) async fn fetch(
    config: &Config,
    nodes: &NodePool,
    current: Option<&Topology>,
    rotation: usize,
) -> Result<Topology, Vec<NodeFailure>> {
    let mut candidates: Vec<String> = Vec::new();
    match current {
        Some(current) if current.is_standalone() => {
            candidates.extend(current.nodes().map(|n| n.addr().to_string()));
        }
        Some(current) => {
            // Primaries first (rotated), then replicas; nodes the cluster
            // reports as failing go last.
            let shards = current.shards();
            let primaries =
                (0..shards.len()).map(|i| shards[(rotation + i) % shards.len()].primary());
            let replicas = shards.iter().flat_map(|s| s.replicas());
            let (healthy, failing): (Vec<_>, Vec<_>) =
                primaries.chain(replicas).partition(|n| n.is_healthy());
            candidates.extend(healthy.iter().chain(&failing).map(|n| n.addr().to_string()));
        }
        None => {}
    }
    if !current.is_some_and(Topology::is_standalone) {
        for seed in &config.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
    }

    let mut failures = Vec::new();
    let mut partial: Option<Topology> = None;
    for addr in candidates {
        match fetch_from(config, nodes, &addr).await {
            Ok(topology)
                if current.is_some_and(|c| c.is_standalone() != topology.is_standalone()) =>
            {
                failures.push(NodeFailure {
                    addr,
                    cause: NodeFailureCause::BadTopology(
                        if topology.is_standalone() {
                            "a standalone server answered for a cluster"
                        } else {
                            "a cluster node answered for a standalone server"
                        }
                        .into(),
                    ),
                });
            }
            Ok(topology)
                if current.is_some_and(|c| !c.is_standalone() && !same_cluster(c, &topology)) =>
            {
                failures.push(NodeFailure {
                    addr,
                    cause: NodeFailureCause::BadTopology(
                        "a node of another cluster answered (no node id in common with the \
                         current slot map)"
                            .into(),
                    ),
                });
            }
            Ok(topology) if topology.unassigned_slots() == 0 => return Ok(topology),
            Ok(topology) => {
                failures.push(NodeFailure {
                    addr,
                    cause: NodeFailureCause::BadTopology(format!(
                        "{} slots unassigned",
                        topology.unassigned_slots()
                    )),
                });
                partial.get_or_insert(topology);
            }
            Err(cause) => failures.push(NodeFailure { addr, cause }),
        }
    }
    partial.ok_or(failures)
}

/// One node's view of the slot map, after checking its version: `HELLO`
/// and `CLUSTER SHARDS` in one round trip; for a standalone server also
/// `INFO server`, for its `run_id`.
async fn fetch_from(
    config: &Config,
    nodes: &NodePool,
    addr: &str,
) -> Result<Topology, NodeFailureCause> {
    let deadline = Instant::now() + config.connect_timeout + config.response_timeout;
    let node = nodes.node(addr);
    let conn = node
        .connection(deadline)
        .await
        .map_err(|e| failure(e.action()))?;
    let mut c = (*conn).clone();

    let mut pipeline = redis::pipe();
    pipeline.cmd("HELLO").cmd("CLUSTER").arg("SHARDS");
    let replies = match query(&mut c, &pipeline, deadline).await {
        Ok(replies) => replies,
        Err(e) => {
            if e.is_unrecoverable_error() || e.is_connection_dropped() {
                node.discard(&conn);
            }
            return Err(failure(classify(&Err(e))));
        }
    };
    let [hello, shards] = <[Value; 2]>::try_from(replies).map_err(|replies| {
        NodeFailureCause::BadTopology(format!("{} replies to 2 commands", replies.len()))
    })?;
    check_version(&hello)?;
    match shards {
        Value::ServerError(e) => {
            let detail = e.details().unwrap_or_default();
            if detail
                .to_ascii_lowercase()
                .contains("cluster support disabled")
            {
                let run_id = run_id(&mut c, deadline).await;
                return Ok(Topology::standalone_server(addr, run_id));
            }
            Err(failure(classify_error(e.code(), detail)))
        }
        value => Topology::from_cluster_shards(&value, addr)
            .map_err(|e| NodeFailureCause::BadTopology(e.to_string())),
    }
}

/// Refuses a server older than 7.0, by its `HELLO` reply; a server without
/// `HELLO` predates 6.0, and one that wants an argument for it is 6.0.
fn check_version(hello: &Value) -> Result<(), NodeFailureCause> {
    let version = match hello {
        Value::ServerError(e) => {
            let detail = e.details().unwrap_or_default();
            let lower = detail.to_ascii_lowercase();
            if lower.contains("unknown command") {
                return Err(NodeFailureCause::Unsupported(
                    "before 6.0 (no HELLO command)".into(),
                ));
            }
            // Redis 6.0's HELLO needs its protocol argument (optional
            // since 6.2).
            if lower.contains("wrong number of arguments") {
                return Err(NodeFailureCause::Unsupported(
                    "6.0 (HELLO needs a protocol version)".into(),
                ));
            }
            return Err(failure(classify_error(e.code(), detail)));
        }
        reply => server::hello_version(reply).ok_or_else(|| {
            NodeFailureCause::BadTopology(format!("HELLO reply without a version: {reply:?}"))
        })?,
    };
    if server::is_supported(&version) {
        Ok(())
    } else {
        Err(NodeFailureCause::Unsupported(version))
    }
}

/// The server's `run_id`, or `None` when `INFO server` fails or lacks it
/// (e.g. an ACL that denies `INFO`).
async fn run_id(conn: &mut redis::aio::MultiplexedConnection, deadline: Instant) -> Option<String> {
    let mut pipeline = redis::pipe();
    pipeline.cmd("INFO").arg("server");
    let replies = query(conn, &pipeline, deadline).await.ok()?;
    let info: String = match replies.into_iter().next()? {
        Value::ServerError(_) => return None,
        value => redis::from_redis_value(value).ok()?,
    };
    server::info_field(&info, "run_id").map(str::to_owned)
}

async fn query(
    conn: &mut redis::aio::MultiplexedConnection,
    pipeline: &redis::Pipeline,
    deadline: Instant,
) -> redis::RedisResult<Vec<Value>> {
    let sent = conn.send_packed_commands(pipeline, 0, pipeline.len());
    match tokio::time::timeout_at(deadline, sent).await {
        Ok(replies) => replies,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "topology query timed out",
        ))),
    }
}

fn failure(action: Action) -> NodeFailureCause {
    match action {
        Action::Fail(cause) => NodeFailureCause::Failed(cause),
        Action::Refresh(cause) => NodeFailureCause::Unavailable(cause),
        other => NodeFailureCause::BadTopology(format!("unexpected reply: {other:?}")),
    }
}
