//! What the live nodes believe, asked in parallel, and the polling that
//! waits until they all believe the same thing.

use std::time::Duration;

use redis::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::cluster::ClusterInner;
use super::wire::{self, NodeLine, Replication, Session, SlotRange};
use super::{NODE_QUERY_TIMEOUT, TestkitError};

/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What one live node says: its cluster state, slot map, node table and
/// replication role.
#[derive(Debug)]
pub(super) struct NodeView {
    pub(super) index: usize,
    pub(super) addr: String,
    pub(super) cluster_ok: bool,
    pub(super) slots: Vec<SlotRange>,
    pub(super) nodes: Vec<NodeLine>,
    pub(super) replication: Replication,
}

/// The nodes that answered a round of questions, in node order, and why the
/// others did not.
#[derive(Debug)]
pub(super) struct Views {
    pub(super) answered: Vec<NodeView>,
    pub(super) silent: Vec<String>,
}

/// Why a condition is not true yet, and whose log would explain it.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) reason: String,
    pub(super) node: Option<usize>,
}

impl Pending {
    pub(super) fn new(reason: String, node: Option<usize>) -> Self {
        Pending { reason, node }
    }
}

/// A deadline for one wait; it names what is waited for when it passes.
pub(super) struct Deadline {
    started: Instant,
    timeout: Duration,
    what: String,
}

impl Deadline {
    pub(super) fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Deadline {
            started: Instant::now(),
            timeout,
            what: what.into(),
        }
    }

    /// Sleeps until the next poll, or fails with [`TestkitError::Timeout`]
    /// carrying the last pending reason and that node's log tail.
    pub(super) async fn next_poll(
        &self,
        cluster: &ClusterInner,
        pending: &Pending,
    ) -> Result<(), TestkitError> {
        let waited = self.started.elapsed();
        if waited >= self.timeout {
            let mut what = format!("{} (last seen: {})", self.what, pending.reason);
            if let Some(node) = pending.node.and_then(|i| cluster.nodes.get(i)) {
                what.push('\n');
                what.push_str(&node.log_tail());
            }
            return Err(TestkitError::Timeout { what, waited });
        }
        tokio::time::sleep(POLL_INTERVAL.min(self.timeout - waited)).await;
        Ok(())
    }
}

impl ClusterInner {
    /// Asks every running node, in parallel, what it believes.
    pub(super) async fn views(&self) -> Views {
        let mut tasks = JoinSet::new();
        let mut silent = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.pid().is_none() {
                silent.push(format!("{} is not running", node.addr()));
                continue;
            }
            let (addr, url) = (node.addr().to_owned(), node.direct_url().to_owned());
            tasks.spawn(async move {
                let view =
                    tokio::time::timeout(NODE_QUERY_TIMEOUT, view_of(index, &addr, &url)).await;
                view.unwrap_or_else(|_| {
                    Err(TestkitError::Timeout {
                        what: format!("{addr} to describe the cluster"),
                        waited: NODE_QUERY_TIMEOUT,
                    })
                })
            });
        }
        let mut answered = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(view)) => answered.push(view),
                Ok(Err(e)) => silent.push(e.to_string()),
                Err(e) => silent.push(format!("query task failed: {e}")),
            }
        }
        answered.sort_by_key(|v| v.index);
        Views { answered, silent }
    }

    /// The slot map most live nodes report now.
    pub(super) async fn majority_map(&self) -> Result<Vec<SlotRange>, TestkitError> {
        let views = self.views().await;
        let mut best: Option<(&Vec<SlotRange>, usize)> = None;
        for v in &views.answered {
            let votes = views.answered.iter().filter(|w| w.slots == v.slots).count();
            if best.is_none_or(|(_, b)| votes > b) {
                best = Some((&v.slots, votes));
            }
        }
        best.map(|(map, _)| map.clone()).ok_or_else(|| {
            TestkitError::Unexpected(format!(
                "no live node answered: {}",
                views.silent.join("; ")
            ))
        })
    }

    /// The agreed slot map, if every live node is ok, they agree on it, every
    /// primary in it answers, and each live node sees every live node in the
    /// role that node reports for itself.
    pub(super) fn agreement(&self, views: &Views) -> Result<Vec<SlotRange>, Pending> {
        let Some(first) = views.answered.first() else {
            return Err(Pending::new(
                format!("no live node answered: {}", views.silent.join("; ")),
                None,
            ));
        };
        for v in &views.answered {
            let pending = |reason: String| Err(Pending::new(reason, Some(v.index)));
            if !v.cluster_ok {
                return pending(format!("{} says cluster_state is not ok", v.addr));
            }
            if !wire::covers_all_slots(&v.slots) {
                return pending(format!("{} does not see every slot served", v.addr));
            }
            if v.slots != first.slots {
                return pending(format!(
                    "{} and {} disagree on the slot map",
                    first.addr, v.addr
                ));
            }
        }
        for r in &first.slots {
            if !views
                .answered
                .iter()
                .any(|v| self.nodes[v.index].port() == r.primary_port)
            {
                let reason = format!(
                    "slots {}-{} are served by 127.0.0.1:{}, which does not answer",
                    r.start, r.end, r.primary_port
                );
                let silent = self.nodes.iter().position(|n| n.port() == r.primary_port);
                return Err(Pending::new(reason, silent));
            }
        }
        for v in &views.answered {
            for live in &views.answered {
                let pending = |what: &str| {
                    Err(Pending::new(
                        format!("{} {what} {}", v.addr, live.addr),
                        Some(v.index),
                    ))
                };
                let port = self.nodes[live.index].port();
                let Some(line) = v.nodes.iter().find(|l| l.port == port) else {
                    return pending("does not know");
                };
                if line.has_flag("fail") || line.has_flag("fail?") {
                    return pending("still flags as failing:");
                }
                if live.replication.is_primary {
                    if !line.has_flag("master") {
                        return pending("does not yet see as a primary:");
                    }
                } else {
                    let primary_id = v
                        .nodes
                        .iter()
                        .find(|l| Some(l.port) == live.replication.primary_port)
                        .map(|l| &l.id);
                    if !line.has_flag("slave")
                        || primary_id.is_none()
                        || line.primary_id.as_ref() != primary_id
                    {
                        return pending("does not yet see the replica role of");
                    }
                }
            }
        }
        Ok(first.slots.clone())
    }

    /// Polls until [`ClusterInner::agreement`] holds and `also` accepts the
    /// views and the agreed map; returns what `also` returned.
    pub(super) async fn wait_agreement<T>(
        &self,
        what: &str,
        timeout: Duration,
        also: impl Fn(&Views, &[SlotRange]) -> Result<T, Pending>,
    ) -> Result<T, TestkitError> {
        let deadline = Deadline::new(what, timeout);
        loop {
            let views = self.views().await;
            let pending = match self.agreement(&views).and_then(|map| also(&views, &map)) {
                Ok(done) => return Ok(done),
                Err(pending) => pending,
            };
            deadline.next_poll(self, &pending).await?;
        }
    }
}

/// Asks one node for its cluster state, slot map, node table and role.
async fn view_of(index: usize, addr: &str, url: &str) -> Result<NodeView, TestkitError> {
    let budget = NODE_QUERY_TIMEOUT;
    let mut session = Session::open(addr, url, budget).await?;
    let info: String = session
        .query(redis::cmd("CLUSTER").arg("INFO"), budget)
        .await?;
    let slots: Value = session
        .query(redis::cmd("CLUSTER").arg("SLOTS"), budget)
        .await?;
    let nodes: String = session
        .query(redis::cmd("CLUSTER").arg("NODES"), budget)
        .await?;
    let replication: String = session
        .query(redis::cmd("INFO").arg("replication"), budget)
        .await?;
    Ok(NodeView {
        index,
        addr: addr.to_owned(),
        cluster_ok: wire::info_field(&info, "cluster_state") == Some("ok"),
        slots: wire::parse_cluster_slots(&slots)?,
        nodes: wire::parse_cluster_nodes(&nodes)?,
        replication: Replication::parse(&replication)?,
    })
}
