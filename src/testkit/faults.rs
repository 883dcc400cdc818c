//! Faults: live slot migration, failover, and killing, pausing and
//! restarting nodes.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use redis::Value;
use tokio::time::Instant;

use super::TestkitError;
use super::cluster::{self, ClusterInner, TestCluster};
use super::views::{Deadline, Pending, Views};
use super::wire::{self, SlotRange};

/// Budget of one setup command of a fault (`SETSLOT`, `FAILOVER`, …).
const STEP_TIMEOUT: Duration = Duration::from_secs(2);
/// `MIGRATE`'s own timeout, and our budget for its reply (a little more).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(5);
const MIGRATE_BUDGET: Duration = Duration::from_secs(7);
/// How long a migration's end or a failover may take to be agreed on.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A manual failover that has not happened by then has been abandoned by the
/// replica (Redis gives it 5 s), so it is asked again.
const FAILOVER_REISSUE: Duration = Duration::from_secs(6);
/// Keys moved per `MIGRATE` by [`SlotMigration::finish`].
const FINISH_BATCH: usize = 100;

/// A slot migration in progress: the target is `IMPORTING` the slot and the
/// source is `MIGRATING` it, so the source answers `-ASK` for keys it no
/// longer has. Move keys step by step with [`SlotMigration::move_keys`], and
/// end with [`SlotMigration::finish`]. Dropped without `finish`, the slot
/// stays half-migrated (the cluster still works, through `-ASK`). It shares
/// the cluster's nodes, so they live until both it and the [`TestCluster`]
/// are dropped.
#[derive(Debug)]
pub struct SlotMigration {
    cluster: Arc<ClusterInner>,
    slot: u16,
    source: usize,
    target: usize,
    target_id: String,
}

impl TestCluster {
    /// Starts moving `slot` from its current primary to the primary `to`:
    /// `CLUSTER SETSLOT slot IMPORTING` on the target, then `MIGRATING` on
    /// the source. No key moves yet.
    pub async fn begin_migration(
        &self,
        slot: u16,
        to: &str,
    ) -> Result<SlotMigration, TestkitError> {
        cluster::check_slot(slot)?;
        let target = self.inner.index_of(to)?;
        let source_addr = self.primary_of_slot(slot).await?;
        let source = self.inner.index_of(&source_addr)?;
        if source == target {
            return Err(TestkitError::InvalidArgument(format!(
                "slot {slot} is already served by {to}"
            )));
        }
        let source_id = self.node_id(&source_addr).await?;
        let target_id = self.node_id(to).await?;
        let importing = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("IMPORTING")
            .arg(&source_id)
            .clone();
        self.inner
            .query::<()>(target, &importing, STEP_TIMEOUT)
            .await?;
        let migrating = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("MIGRATING")
            .arg(&target_id)
            .clone();
        self.inner
            .query::<()>(source, &migrating, STEP_TIMEOUT)
            .await?;
        Ok(SlotMigration {
            cluster: Arc::clone(&self.inner),
            slot,
            source,
            target,
            target_id,
        })
    }

    /// Moves `slot` to the primary `to`, all keys included, and waits until
    /// every live node agrees that `to` serves it.
    pub async fn migrate_slot(&self, slot: u16, to: &str) -> Result<(), TestkitError> {
        self.begin_migration(slot, to).await?.finish().await
    }

    /// Fails `primary` over to one of its replicas with `CLUSTER FAILOVER`
    /// (`FORCE` when `primary` does not answer), and waits until that replica
    /// is a primary, the cluster is ok and agrees, and the old primary (if it
    /// answers) replicates from the new one. Returns the new primary.
    pub async fn failover(&self, primary: &str) -> Result<String, TestkitError> {
        let old = self.inner.index_of(primary)?;
        let old_port = self.inner.nodes[old].port();
        let views = self.inner.views().await;
        let serves_slots = views
            .answered
            .iter()
            .any(|v| v.slots.iter().any(|r| r.primary_port == old_port));
        if !serves_slots {
            return Err(TestkitError::InvalidArgument(format!(
                "{primary} serves no slot now"
            )));
        }
        let old_answers = views.answered.iter().any(|v| v.index == old);
        let mut replicas = views
            .answered
            .iter()
            .filter(|v| !v.replication.is_primary && v.replication.primary_port == Some(old_port));
        let chosen = if old_answers {
            replicas.find(|v| v.replication.link_up)
        } else {
            replicas.next()
        };
        let new = chosen.map(|v| v.index).ok_or_else(|| {
            TestkitError::Unexpected(format!("no live replica of {primary} to fail over to"))
        })?;
        let new_addr = self.inner.nodes[new].addr().to_owned();

        self.inner
            .query::<()>(new, &failover_cmd(!old_answers), STEP_TIMEOUT)
            .await?;
        let mut issued = Instant::now();
        let mut reissue_error = String::new();
        let deadline = Deadline::new(
            format!("{new_addr} to take over from {primary}"),
            SETTLE_TIMEOUT,
        );
        loop {
            let views = self.inner.views().await;
            let result = self
                .inner
                .agreement(&views)
                .and_then(|map| failover_done(&self.inner, &views, &map, old, new));
            let mut pending = match result {
                Ok(()) => return Ok(new_addr),
                Err(pending) => pending,
            };
            let still_replica = views
                .answered
                .iter()
                .any(|v| v.index == new && !v.replication.is_primary);
            if still_replica && issued.elapsed() >= FAILOVER_REISSUE {
                let force = !views.answered.iter().any(|v| v.index == old);
                if let Err(e) = self
                    .inner
                    .query::<()>(new, &failover_cmd(force), STEP_TIMEOUT)
                    .await
                {
                    reissue_error = format!("; asking again failed: {e}");
                }
                issued = Instant::now();
            }
            pending.reason.push_str(&reissue_error);
            deadline.next_poll(&self.inner, &pending).await?;
        }
    }

    /// `SIGKILL`s a node and reaps it; a no-op if it is not running. Its
    /// directory (and `nodes.conf`) stays for [`TestCluster::restart`].
    pub fn kill(&self, addr: &str) -> Result<(), TestkitError> {
        self.inner.node(addr)?.kill();
        Ok(())
    }

    /// `SIGSTOP`s a node: it keeps its sockets but answers nothing.
    pub fn pause(&self, addr: &str) -> Result<(), TestkitError> {
        self.inner.node(addr)?.signal(Signal::SIGSTOP)
    }

    /// `SIGCONT`s a node paused by [`TestCluster::pause`].
    pub fn resume(&self, addr: &str) -> Result<(), TestkitError> {
        self.inner.node(addr)?.signal(Signal::SIGCONT)
    }

    /// Starts a node again (killing it first if it runs) on the same ports
    /// and directory, so its `nodes.conf` makes it rejoin; waits until it
    /// answers `PING`. Its data is gone (nothing is persisted). Call
    /// [`TestCluster::wait_cluster_ok`] to wait until it has rejoined.
    pub async fn restart(&self, addr: &str) -> Result<(), TestkitError> {
        self.inner.node(addr)?.restart().await
    }
}

fn failover_cmd(force: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("FAILOVER");
    if force {
        cmd.arg("FORCE");
    }
    cmd
}

/// The new primary serves slots, the old one none, the new one says it is a
/// primary, and the old one (if it answers) replicates it with its link up.
fn failover_done(
    cluster: &ClusterInner,
    views: &Views,
    map: &[SlotRange],
    old: usize,
    new: usize,
) -> Result<(), Pending> {
    let (old_node, new_node) = (&cluster.nodes[old], &cluster.nodes[new]);
    if !map.iter().any(|r| r.primary_port == new_node.port()) {
        return Err(Pending::new(
            format!("{} serves no slot yet", new_node.addr()),
            Some(new),
        ));
    }
    if map.iter().any(|r| r.primary_port == old_node.port()) {
        return Err(Pending::new(
            format!("{} still serves slots", old_node.addr()),
            Some(old),
        ));
    }
    if let Some(v) = views.answered.iter().find(|v| v.index == old) {
        let r = &v.replication;
        if r.is_primary || r.primary_port != Some(new_node.port()) || !r.link_up {
            let reason = format!(
                "{} does not replicate {} with its link up yet",
                v.addr,
                new_node.addr()
            );
            return Err(Pending::new(reason, Some(old)));
        }
    }
    Ok(())
}

impl SlotMigration {
    /// The node the slot is moving from (`127.0.0.1:PORT`).
    pub fn source(&self) -> &str {
        self.cluster.nodes[self.source].addr()
    }

    /// The node the slot is moving to.
    pub fn target(&self) -> &str {
        self.cluster.nodes[self.target].addr()
    }

    /// The slot being moved.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// Moves up to `count` keys of the slot from source to target
    /// (`CLUSTER GETKEYSINSLOT` + `MIGRATE … KEYS`, with `AUTH2` when the
    /// cluster has a password). Returns how many it moved; 0 when none are
    /// left.
    pub async fn move_keys(&mut self, count: usize) -> Result<usize, TestkitError> {
        Ok(self.step(count).await?.unwrap_or(0))
    }

    /// One batch: `None` when the source has no key of the slot left, else
    /// how many keys `MIGRATE` moved (0 if they expired meanwhile).
    async fn step(&self, count: usize) -> Result<Option<usize>, TestkitError> {
        if count == 0 {
            return Ok(Some(0));
        }
        let list = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(self.slot)
            .arg(count)
            .clone();
        let keys: Vec<Vec<u8>> = self.cluster.query(self.source, &list, STEP_TIMEOUT).await?;
        if keys.is_empty() {
            return Ok(None);
        }
        let target = &self.cluster.nodes[self.target];
        // Straight to the target's own address, past its proxy (if any):
        // moving keys is the test kit's doing, not traffic a cut applies to.
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg(target.direct_ip().to_string())
            .arg(target.port())
            .arg("")
            .arg(0)
            .arg(MIGRATE_TIMEOUT.as_millis() as u64);
        if let Some(pw) = &self.cluster.password {
            migrate.arg("AUTH2").arg("default").arg(pw);
        }
        migrate.arg("KEYS").arg(&keys);
        let reply: Value = self
            .cluster
            .query(self.source, &migrate, MIGRATE_BUDGET)
            .await?;
        match reply {
            Value::Okay => Ok(Some(keys.len())),
            Value::SimpleString(s) if s == "NOKEY" => Ok(Some(0)),
            other => Err(TestkitError::Unexpected(format!(
                "MIGRATE replied {other:?}"
            ))),
        }
    }

    /// Moves the remaining keys, then `CLUSTER SETSLOT slot NODE target` on
    /// the target, the source and every other live primary (in that order,
    /// as the Redis docs ask), and waits until every live node agrees that
    /// the target serves the slot.
    pub async fn finish(self) -> Result<(), TestkitError> {
        while self.step(FINISH_BATCH).await?.is_some() {}
        let assign = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(self.slot)
            .arg("NODE")
            .arg(&self.target_id)
            .clone();
        let cluster = &self.cluster;
        cluster
            .query::<()>(self.target, &assign, STEP_TIMEOUT)
            .await?;
        cluster
            .query::<()>(self.source, &assign, STEP_TIMEOUT)
            .await?;
        let views = cluster.views().await;
        let others = views.answered.iter().filter(|v| {
            v.replication.is_primary && v.index != self.source && v.index != self.target
        });
        for other in others {
            // The target bumped its epoch, so gossip also tells the others;
            // telling them directly only makes it quicker.
            cluster
                .query::<()>(other.index, &assign, STEP_TIMEOUT)
                .await?;
        }
        let target_port = cluster.nodes[self.target].port();
        let what = format!(
            "every live node to agree that {} serves slot {}",
            self.target(),
            self.slot
        );
        cluster
            .wait_agreement(&what, SETTLE_TIMEOUT, |_, map| {
                match wire::owner_of(map, self.slot) {
                    Some(port) if port == target_port => Ok(()),
                    owner => Err(Pending::new(
                        format!(
                            "slot {} is served by {:?}",
                            self.slot,
                            owner.map(cluster::addr_of_port)
                        ),
                        Some(self.target),
                    )),
                }
            })
            .await
    }
}
