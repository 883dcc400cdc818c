//! Network partitions of a proxied [`TestCluster`]: cutting and healing
//! links between the client side and nodes, and between nodes.
//!
//! A cut is silent: no byte passes either way, nothing is closed or reset,
//! and what was sent waits for the heal (see the proxy module's docs for
//! what holds and how it differs from a real network). Cuts apply at once
//! to open connections and to new ones; they add up, and a heal removes
//! exactly the link named.

use super::TestkitError;
use super::cluster::TestCluster;
use super::proxy::{End, Link, Proxies};

/// One side of a link that [`TestCluster::cut`] can cut.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Every client process at once: any connection to a node's proxy that
    /// does not come from another node (the test process, load-test
    /// clients).
    Client,
    /// A node, by its address as [`TestCluster::addrs`] lists it.
    Node(String),
}

impl Peer {
    /// [`Peer::Node`] of `addr`.
    pub fn node(addr: impl Into<String>) -> Peer {
        Peer::Node(addr.into())
    }
}

impl TestCluster {
    /// Whether the cluster was started with [`ClusterSpec::proxied`](super::ClusterSpec::proxied)
    /// (only then can links be cut).
    pub fn is_proxied(&self) -> bool {
        self.inner.proxies.is_some()
    }

    /// Cuts the link between `a` and `b`, both directions, for all their
    /// connections: open ones stop carrying bytes (what was sent waits),
    /// new ones are accepted and carry nothing. A no-op if already cut.
    ///
    /// [`TestkitError::InvalidArgument`] if the cluster is not proxied or
    /// `a == b`; [`TestkitError::UnknownNode`] for an address that is not
    /// one of its nodes.
    pub fn cut(&self, a: Peer, b: Peer) -> Result<(), TestkitError> {
        let (proxies, link) = self.link(&a, &b)?;
        proxies.cut(link);
        Ok(())
    }

    /// Heals the link between `a` and `b`: bytes queued while it was cut
    /// are delivered, late and in order. A no-op if it is not cut. Errors as
    /// for [`TestCluster::cut`].
    pub fn heal(&self, a: Peer, b: Peer) -> Result<(), TestkitError> {
        let (proxies, link) = self.link(&a, &b)?;
        proxies.heal(link);
        Ok(())
    }

    /// Heals every link. [`TestkitError::InvalidArgument`] if the cluster
    /// is not proxied.
    pub fn heal_all(&self) -> Result<(), TestkitError> {
        self.proxies()?.heal_all();
        Ok(())
    }

    /// Cuts the client side off from `node` (every client process at once;
    /// the node still talks to the other nodes). Undo with
    /// [`TestCluster::heal`]`(Peer::Client, Peer::node(node))` or
    /// [`TestCluster::heal_all`].
    pub fn cut_client(&self, node: &str) -> Result<(), TestkitError> {
        self.cut(Peer::Client, Peer::node(node))
    }

    /// Cuts `node` off from every other node — cluster bus and replication,
    /// both ways — while clients still reach it: the split-brain setup. A
    /// primary isolated so keeps answering and, until its
    /// `cluster-node-timeout` passes, accepting writes that never reach its
    /// replicas, while the majority side promotes one of them. Undo with
    /// [`TestCluster::heal_all`] (or one [`TestCluster::heal`] per node).
    pub fn isolate(&self, node: &str) -> Result<(), TestkitError> {
        let proxies = self.proxies()?;
        let me = self.inner.index_of(node)?;
        for other in (0..self.inner.nodes.len()).filter(|i| *i != me) {
            proxies.cut(Link::new(End::Node(me), End::Node(other)));
        }
        Ok(())
    }

    fn proxies(&self) -> Result<&Proxies, TestkitError> {
        self.inner.proxies.as_ref().ok_or_else(|| {
            TestkitError::InvalidArgument(
                "links can only be cut in a proxied cluster: start it with \
                 ClusterSpec { proxied: true, .. }"
                    .into(),
            )
        })
    }

    fn end(&self, peer: &Peer) -> Result<End, TestkitError> {
        match peer {
            Peer::Client => Ok(End::Client),
            Peer::Node(addr) => Ok(End::Node(self.inner.index_of(addr)?)),
        }
    }

    fn link(&self, a: &Peer, b: &Peer) -> Result<(&Proxies, Link), TestkitError> {
        let proxies = self.proxies()?;
        let (a_end, b_end) = (self.end(a)?, self.end(b)?);
        if a_end == b_end {
            return Err(TestkitError::InvalidArgument(format!(
                "a link needs two different peers, not {a:?} twice"
            )));
        }
        Ok((proxies, Link::new(a_end, b_end)))
    }
}
