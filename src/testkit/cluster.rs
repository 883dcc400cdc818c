//! [`TestCluster`]: forming a cluster from fresh nodes, and its queries.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, Value};
use tempfile::TempDir;

use super::TestkitError;
use super::proxy::{self, Proxies};
use super::server::{self, NodeSetup, Proxied, RedisProcess};
use super::views::{Deadline, Pending, Views};
use super::wire::{self, NodeLine, SLOTS};

/// Budget of one command sent by [`TestCluster::command`] or while forming.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How long forming a cluster may take at each of its two waits. Forming
/// takes about 2 s, nearly all of it Redis's own `CLUSTER_WRITABLE_DELAY`: a
/// primary does not call its state ok until 2 s after it started.
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// The shape of a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of primaries; the 16384 slots are split evenly among them.
    pub primaries: usize,
    /// Replicas started for each primary.
    pub replicas_per_primary: usize,
    /// `cluster-node-timeout`: how soon a silent node is failed over.
    pub node_timeout: Duration,
    /// `requirepass` and `masterauth` on every node.
    pub password: Option<String>,
    /// The `redis-server` binary; `None` looks at `$SHARDLOCK_REDIS_SERVER`,
    /// then `PATH`.
    pub redis_server: Option<PathBuf>,
    /// Put every node behind blackholing proxies, so that network links can
    /// be cut ([`TestCluster::cut`], [`TestCluster::isolate`], …); see the
    /// module docs. At most 245 nodes.
    pub proxied: bool,
}

impl Default for ClusterSpec {
    /// 3 primaries with 1 replica each, 1 s node timeout, no password, no
    /// proxies.
    fn default() -> Self {
        ClusterSpec {
            primaries: 3,
            replicas_per_primary: 1,
            node_timeout: Duration::from_millis(1000),
            password: None,
            redis_server: None,
            proxied: false,
        }
    }
}

/// A running local Redis Cluster. Dropping it kills every node it started
/// (paused ones too) and removes their directory.
#[derive(Debug)]
pub struct TestCluster {
    pub(super) inner: Arc<ClusterInner>,
}

/// Shared by [`TestCluster`] and the [`super::SlotMigration`]s it hands out.
#[derive(Debug)]
pub(super) struct ClusterInner {
    // Declared before `_dir`: the processes die before their directory goes.
    /// Primaries first, in slot order, then replicas grouped by primary.
    pub(super) nodes: Vec<RedisProcess>,
    pub(super) password: Option<String>,
    /// In front of every node when the cluster is proxied.
    pub(super) proxies: Option<Proxies>,
    _dir: TempDir,
}

impl TestCluster {
    /// Starts 3 primaries and 3 replicas ([`ClusterSpec::default`]).
    pub async fn start() -> Result<TestCluster, TestkitError> {
        Self::start_with(ClusterSpec::default()).await
    }

    /// Starts a cluster as `spec` says; returns when every node says
    /// `cluster_state:ok`, all agree on the slot map and on who replicates
    /// whom, and every replica's link to its primary is up.
    pub async fn start_with(spec: ClusterSpec) -> Result<TestCluster, TestkitError> {
        if spec.primaries == 0 || spec.primaries > SLOTS as usize {
            return Err(TestkitError::InvalidArgument(format!(
                "ClusterSpec.primaries must be 1..=16384, not {}",
                spec.primaries
            )));
        }
        if spec.node_timeout < Duration::from_millis(1) {
            return Err(TestkitError::InvalidArgument(
                "ClusterSpec.node_timeout must be at least 1 ms".into(),
            ));
        }
        let total = spec
            .primaries
            .checked_mul(spec.replicas_per_primary.saturating_add(1))
            .ok_or_else(|| {
                TestkitError::InvalidArgument("ClusterSpec asks for too many nodes".into())
            })?;
        if spec.proxied && total > proxy::MAX_NODES {
            return Err(TestkitError::InvalidArgument(format!(
                "a proxied cluster has at most {} nodes (one loopback address each), not {total}",
                proxy::MAX_NODES
            )));
        }
        let binary = server::find_redis_server(spec.redis_server.as_deref())?;
        let dir = tempfile::Builder::new()
            .prefix("shardlock-testkit-")
            .tempdir()?;
        let proxies = if spec.proxied {
            Some(Proxies::start(total)?)
        } else {
            None
        };
        let setups = (0..total)
            .map(|i| NodeSetup {
                binary: binary.clone(),
                dir: dir.path().join(format!("node-{i:02}")),
                password: spec.password.clone(),
                cluster_node_timeout: Some(spec.node_timeout),
                proxied: proxies.as_ref().map(|p| {
                    let (port, bus_port) = p.ports(i);
                    Proxied {
                        ip: proxy::node_ip(i),
                        port,
                        bus_port,
                    }
                }),
            })
            .collect();
        let nodes = server::launch_all(setups).await?;
        // From here on, an error drops `cluster`, which kills the nodes.
        let cluster = TestCluster {
            inner: Arc::new(ClusterInner {
                nodes,
                password: spec.password,
                proxies,
                _dir: dir,
            }),
        };
        cluster
            .inner
            .form(spec.primaries, spec.replicas_per_primary)
            .await?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT` of every node started (`redis://:pw@…` with
    /// a password), killed ones included. In a proxied cluster these are the
    /// proxies' addresses, which the nodes announce.
    pub fn seeds(&self) -> Vec<String> {
        self.inner
            .nodes
            .iter()
            .map(|n| n.url().to_owned())
            .collect()
    }

    /// `127.0.0.1:PORT` of every node started, primaries first: the
    /// addresses the nodes announce (their proxies' in a proxied cluster),
    /// by which every method names a node.
    pub fn addrs(&self) -> Vec<String> {
        self.inner
            .nodes
            .iter()
            .map(|n| n.addr().to_owned())
            .collect()
    }

    /// The password every node requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.inner.password.as_deref()
    }

    /// The OS pid of a node while it runs (a paused node runs).
    pub fn pid(&self, addr: &str) -> Result<Option<u32>, TestkitError> {
        Ok(self.inner.node(addr)?.pid())
    }

    /// The end of a node's log, for failure messages.
    pub fn log_tail(&self, addr: &str) -> Result<String, TestkitError> {
        Ok(self.inner.node(addr)?.log_tail())
    }

    /// The primary serving `slot`, as most live nodes say now.
    pub async fn primary_of_slot(&self, slot: u16) -> Result<String, TestkitError> {
        check_slot(slot)?;
        let map = self.inner.majority_map().await?;
        wire::owner_of(&map, slot)
            .map(addr_of_port)
            .ok_or_else(|| TestkitError::Unexpected(format!("no primary serves slot {slot}")))
    }

    /// The primaries that serve slots now (as most live nodes say), sorted.
    pub async fn primaries(&self) -> Result<Vec<String>, TestkitError> {
        let map = self.inner.majority_map().await?;
        let mut ports: Vec<u16> = map.iter().map(|r| r.primary_port).collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(ports.into_iter().map(addr_of_port).collect())
    }

    /// A live replica of `primary` whose replication link is up (it says so
    /// itself in `INFO replication`).
    pub async fn replica_of(&self, primary: &str) -> Result<String, TestkitError> {
        let port = self.inner.node(primary)?.port();
        self.inner
            .views()
            .await
            .answered
            .into_iter()
            .find(|v| {
                !v.replication.is_primary
                    && v.replication.primary_port == Some(port)
                    && v.replication.link_up
            })
            .map(|v| v.addr)
            .ok_or_else(|| {
                TestkitError::Unexpected(format!("no live replica of {primary} with its link up"))
            })
    }

    /// The node's cluster id (`CLUSTER MYID`).
    pub async fn node_id(&self, addr: &str) -> Result<String, TestkitError> {
        let i = self.inner.index_of(addr)?;
        self.inner
            .query(i, redis::cmd("CLUSTER").arg("MYID"), COMMAND_TIMEOUT)
            .await
    }

    /// Sends one command to one node, directly (no routing, so `-MOVED` and
    /// `-ASK` come back as [`TestkitError::Redis`]); fails with
    /// [`TestkitError::Timeout`] after 2 s without a reply. In a proxied
    /// cluster it goes to the node's own address, past its proxy, so a cut
    /// never applies to it: it shows what a cut-off node believes. Every
    /// other query of the test kit does the same.
    pub async fn command(&self, addr: &str, cmd: &Cmd) -> Result<Value, TestkitError> {
        self.command_with_timeout(addr, cmd, COMMAND_TIMEOUT).await
    }

    /// [`TestCluster::command`] with its own budget for connect + reply.
    pub async fn command_with_timeout(
        &self,
        addr: &str,
        cmd: &Cmd,
        timeout: Duration,
    ) -> Result<Value, TestkitError> {
        let i = self.inner.index_of(addr)?;
        self.inner.query(i, cmd, timeout).await
    }

    /// Waits until every live node says `cluster_state:ok`, all of them agree
    /// on which primary serves each of the 16384 slots, every such primary
    /// answers, each live node sees every live node in the role that node
    /// reports for itself, and none flags a live node as failing.
    ///
    /// Nodes that do not answer within
    /// [`NODE_QUERY_TIMEOUT`](super::NODE_QUERY_TIMEOUT) (killed, paused) are
    /// skipped as observers, but a primary that serves slots must answer: after
    /// killing or pausing a primary this waits until a replica has taken over.
    /// A round of questions is not cut short by the deadline, so this may
    /// return up to `NODE_QUERY_TIMEOUT` after `timeout`.
    pub async fn wait_cluster_ok(&self, timeout: Duration) -> Result<(), TestkitError> {
        self.inner
            .wait_agreement(
                "cluster_state:ok and one slot map on every live node",
                timeout,
                |_, _| Ok(()),
            )
            .await
    }
}

impl ClusterInner {
    pub(super) fn index_of(&self, addr: &str) -> Result<usize, TestkitError> {
        self.nodes
            .iter()
            .position(|n| n.addr() == addr)
            .ok_or_else(|| TestkitError::UnknownNode(addr.to_owned()))
    }

    pub(super) fn node(&self, addr: &str) -> Result<&RedisProcess, TestkitError> {
        Ok(&self.nodes[self.index_of(addr)?])
    }

    pub(super) async fn query<T: redis::FromRedisValue>(
        &self,
        index: usize,
        cmd: &Cmd,
        budget: Duration,
    ) -> Result<T, TestkitError> {
        let node = &self.nodes[index];
        wire::query_once(node.addr(), node.direct_url(), cmd, budget).await
    }

    /// Joins freshly started nodes into a cluster: distinct config epochs,
    /// slots split evenly among the primaries, every pair MEETs, then
    /// replicas REPLICATE their primary; waits until it is all in effect.
    async fn form(
        &self,
        primaries: usize,
        replicas_per_primary: usize,
    ) -> Result<(), TestkitError> {
        let total = self.nodes.len();
        let mut ids = Vec::with_capacity(total);
        for i in 0..total {
            let id: String = self
                .query(i, redis::cmd("CLUSTER").arg("MYID"), COMMAND_TIMEOUT)
                .await?;
            ids.push(id);
        }
        // Distinct epochs before MEET, so no two nodes ever claim a slot with
        // the same epoch (what `redis-cli --cluster create` does too).
        for i in 0..total {
            let epoch = redis::cmd("CLUSTER")
                .arg("SET-CONFIG-EPOCH")
                .arg(i + 1)
                .clone();
            self.query::<()>(i, &epoch, COMMAND_TIMEOUT).await?;
        }
        for (i, (start, end)) in slot_split(primaries).into_iter().enumerate() {
            let add = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(start)
                .arg(end)
                .clone();
            self.query::<()>(i, &add, COMMAND_TIMEOUT).await?;
        }
        // Every node meets every earlier one: no waiting for gossip to spread
        // the news, which `redis-cli --cluster create` (all meet node 0) does.
        for (j, peer) in self.nodes.iter().enumerate() {
            let cluster_port = peer.cluster_port().ok_or_else(|| {
                TestkitError::Unexpected("cluster node without a cluster port".into())
            })?;
            // The announced address: through the proxies when proxied.
            let meet = redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(peer.port())
                .arg(cluster_port)
                .clone();
            for i in j + 1..total {
                self.query::<()>(i, &meet, COMMAND_TIMEOUT).await?;
            }
        }
        let deadline = Deadline::new(
            format!("all {total} nodes to know each other"),
            FORM_TIMEOUT,
        );
        loop {
            let views = self.views().await;
            let pending = match all_know_each_other(&views, total) {
                Ok(()) => break,
                Err(pending) => pending,
            };
            deadline.next_poll(self, &pending).await?;
        }

        let replica_of = |r: usize| (r - primaries) / replicas_per_primary.max(1);
        for r in primaries..total {
            let replicate = redis::cmd("CLUSTER")
                .arg("REPLICATE")
                .arg(&ids[replica_of(r)])
                .clone();
            self.query::<()>(r, &replicate, COMMAND_TIMEOUT).await?;
        }
        let what = "every node ok and agreeing, every replica's link up";
        self.wait_agreement(what, FORM_TIMEOUT, |views, map| {
            if views.answered.len() < total {
                return Err(Pending::new(
                    format!("silent nodes: {}", views.silent.join("; ")),
                    None,
                ));
            }
            for (p, node) in self.nodes.iter().enumerate().take(primaries) {
                if !map.iter().any(|r| r.primary_port == node.port()) {
                    return Err(Pending::new(
                        format!("{} serves no slot", node.addr()),
                        Some(p),
                    ));
                }
            }
            for v in &views.answered[primaries..] {
                let want = self.nodes[replica_of(v.index)].port();
                if v.replication.primary_port != Some(want) || !v.replication.link_up {
                    let reason = format!("{} has no live link to 127.0.0.1:{want} yet", v.addr);
                    return Err(Pending::new(reason, Some(v.index)));
                }
            }
            Ok(())
        })
        .await
    }
}

/// Every node answered and lists `total` nodes, none still in handshake and
/// every bus link connected.
fn all_know_each_other(views: &Views, total: usize) -> Result<(), Pending> {
    if views.answered.len() < total {
        return Err(Pending::new(
            format!("silent nodes: {}", views.silent.join("; ")),
            None,
        ));
    }
    for v in &views.answered {
        let settled =
            |l: &NodeLine| !l.has_flag("handshake") && !l.has_flag("noaddr") && l.connected;
        if v.nodes.len() != total || !v.nodes.iter().all(settled) {
            let reason = format!(
                "{} knows {} of {total} nodes, or some are still in handshake",
                v.addr,
                v.nodes.len()
            );
            return Err(Pending::new(reason, Some(v.index)));
        }
    }
    Ok(())
}

/// `127.0.0.1:PORT`: every node is known by a port on `127.0.0.1` (its own,
/// or its proxy's on the same port number), so a port names a node.
pub(super) fn addr_of_port(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

pub(super) fn check_slot(slot: u16) -> Result<(), TestkitError> {
    if u32::from(slot) < SLOTS {
        Ok(())
    } else {
        Err(TestkitError::InvalidArgument(format!(
            "slot {slot} is not below 16384"
        )))
    }
}

/// Splits the 16384 slots into `n` contiguous ranges whose sizes differ by
/// at most one.
fn slot_split(n: usize) -> Vec<(u16, u16)> {
    let n = n as u32;
    let (base, extra) = (SLOTS / n, SLOTS % n);
    let mut start = 0u32;
    (0..n)
        .map(|i| {
            let len = base + u32::from(i < extra);
            let range = (start as u16, (start + len - 1) as u16);
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::slot_split;

    #[test]
    fn slots_split_evenly_and_cover_everything() {
        assert_eq!(
            slot_split(3),
            vec![(0, 5461), (5462, 10922), (10923, 16383)]
        );
        assert_eq!(slot_split(1), vec![(0, 16383)]);
        let many = slot_split(16384);
        assert_eq!(many.len(), 16384);
        assert!(
            many.iter()
                .enumerate()
                .all(|(i, &(s, e))| s == e && usize::from(s) == i)
        );
    }
}
