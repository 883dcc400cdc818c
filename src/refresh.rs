//! The topology refresher: the one task that fetches the slot map.
//!
//! A handle plus a worker. Handles ([`RefreshHandle`]) send hints; the
//! worker fetches `CLUSTER SHARDS` (falling back to `CLUSTER SLOTS`) and
//! swaps a new snapshot in. The worker ends when the last handle drops; if it
//! dies, handles report [`Error::Stopped`] instead of hanging. A worker that
//! ended with its runtime is replaced by the router on the next call's
//! runtime (see `Router::refresher`).
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

use std::sync::Arc;

use redis::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, NodeFailure, NodeFailureCause, Result};
use crate::node::NodePool;
use crate::redirect::{Action, RetryCause, classify, classify_error};
use crate::router::Shared;
use crate::stats::Counters;
use crate::topology::Topology;

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

/// Asks the nodes of `current`, then the seeds, for the slot map. The
/// primaries are asked first, starting at `rotation` (mod their number), so
/// successive fetches spread over the cluster.
pub(crate) async fn fetch(
    config: &Config,
    nodes: &NodePool,
    current: Option<&Topology>,
    rotation: usize,
) -> Result<Topology, Vec<NodeFailure>> {
    let mut candidates: Vec<String> = Vec::new();
    if let Some(current) = current {
        // Primaries first (rotated), then replicas; nodes the cluster
        // reports as failing go last.
        let shards = current.shards();
        let primaries = (0..shards.len()).map(|i| shards[(rotation + i) % shards.len()].primary());
        let replicas = shards.iter().flat_map(|s| s.replicas());
        let (healthy, failing): (Vec<_>, Vec<_>) =
            primaries.chain(replicas).partition(|n| n.is_healthy());
        candidates.extend(healthy.iter().chain(&failing).map(|n| n.addr().to_string()));
    }
    for seed in &config.seeds {
        if !candidates.contains(seed) {
            candidates.push(seed.clone());
        }
    }

    let mut failures = Vec::new();
    let mut partial: Option<Topology> = None;
    for addr in candidates {
        match fetch_from(config, nodes, &addr).await {
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

/// One node's view of the slot map.
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

    let mut reply = query(&mut c, &["CLUSTER", "SHARDS"], deadline).await;
    let mut shards_form = true;
    if let Ok(Value::ServerError(e)) = &reply {
        let detail = e.details().unwrap_or_default().to_ascii_lowercase();
        if detail.contains("cluster support disabled") {
            return Ok(Topology::standalone(addr));
        }
        if detail.contains("unknown subcommand") || detail.contains("unknown command") {
            // Redis before 7.0 has no CLUSTER SHARDS.
            reply = query(&mut c, &["CLUSTER", "SLOTS"], deadline).await;
            shards_form = false;
        }
    }
    let value = match reply {
        Ok(Value::ServerError(e)) => {
            return Err(failure(classify_error(
                e.code(),
                e.details().unwrap_or_default(),
            )));
        }
        Ok(value) => value,
        Err(e) => {
            if e.is_unrecoverable_error() || e.is_connection_dropped() {
                node.discard(&conn);
            }
            return Err(failure(classify(&Err(e))));
        }
    };
    let parsed = if shards_form {
        Topology::from_cluster_shards(&value, addr)
    } else {
        Topology::from_cluster_slots(&value, addr)
    };
    parsed.map_err(|e| NodeFailureCause::BadTopology(e.to_string()))
}

async fn query(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
    deadline: Instant,
) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    match tokio::time::timeout_at(deadline, conn.send_packed_command(&cmd)).await {
        Ok(reply) => reply,
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
