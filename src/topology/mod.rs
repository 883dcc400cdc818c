//! An immutable snapshot of which node serves which slot.
//!
//! A [`Topology`] maps each of the 16384 slots to the [`Shard`] (a primary and
//! its replicas) that serves it. It is parsed from `CLUSTER SHARDS` (Redis
//! 7.0+; the refresher uses only this form, since older servers are refused,
//! see `server.rs`), from `CLUSTER SLOTS` (kept as a parser for tools), or
//! built for a non-cluster server with [`Topology::standalone`] /
//! [`Topology::standalone_server`], where one shard owns every slot.
//!
//! Invariants:
//! - A snapshot is immutable once built. Readers load the current one and
//!   drop it before any `.await`; a change makes a new snapshot (the refresher
//!   stores it, [`Topology::with_slot_moved`] patches a copy), never an edit in
//!   place.
//! - A snapshot may be stale: the cluster can move a slot at any moment. A
//!   `MOVED` reply repairs the one slot at once ([`Topology::with_slot_moved`])
//!   and asks for a full refresh; an `ASK` reply changes nothing here.
//! - Every slot maps to at most one shard; [`Shard::slot_ranges`] lists exactly
//!   the slots that map to that shard, as sorted, merged, inclusive ranges.
//! - Shards are ordered by their lowest slot; shards serving no slot (an empty
//!   primary, a failed primary after a failover) come last, by address. Two
//!   snapshots of the same cluster are therefore equal whatever order the
//!   server listed it in. A shard index is only meaningful for the snapshot
//!   it came from.
//! - A node the reply gives no usable address for (endpoint `?`) is left out;
//!   if it is a primary, its slots stay unassigned until a refresh or a
//!   `MOVED` tells where they are.

mod parse;
pub(crate) mod server;

use std::fmt;
use std::sync::Arc;

use crate::slot::SLOT_COUNT;

/// A Redis node: its address, its id when known (the cluster node id; for a
/// standalone server its `run_id`), and whether the cluster last reported it
/// healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    addr: Arc<str>,
    id: Option<String>,
    healthy: bool,
}

impl Node {
    /// A healthy node at `addr` ("host:port").
    ///
    /// The host is written the way Redis prints it in `CLUSTER SHARDS`,
    /// `CLUSTER SLOTS` and `MOVED` replies, so addresses compare equal
    /// across them: an IPv6 host is not bracketed (`::1:7000`), and the port
    /// is what follows the last `:`.
    pub fn new(addr: impl Into<Arc<str>>, id: Option<String>) -> Node {
        Node {
            addr: addr.into(),
            id,
            healthy: true,
        }
    }

    /// The same node with its health set to `healthy`.
    pub fn with_healthy(mut self, healthy: bool) -> Node {
        self.healthy = healthy;
        self
    }

    /// The node's address, "host:port", e.g. "127.0.0.1:7000".
    pub fn addr(&self) -> &Arc<str> {
        &self.addr
    }

    /// The host and port of [`Node::addr`], split at the last `:`; `None`
    /// when the address has no valid port.
    pub fn host_port(&self) -> Option<(&str, u16)> {
        let (host, port) = self.addr.rsplit_once(':')?;
        Some((host, port.parse().ok()?))
    }

    /// The 40-character cluster node id, when the reply gave one; for a
    /// standalone server, its `run_id` when `INFO server` gave it.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// False when the cluster reported the node failed or still loading its
    /// data; true otherwise (including when the reply says nothing about
    /// health, as `CLUSTER SLOTS`, which omits failed nodes instead).
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }
}

/// A primary, its replicas, and the slots the primary serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    primary: Node,
    replicas: Vec<Node>,
    slot_ranges: Vec<(u16, u16)>,
}

impl Shard {
    /// The node that serves this shard's slots.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The replicas of the primary, in address order.
    pub fn replicas(&self) -> &[Node] {
        &self.replicas
    }

    /// The slots this shard serves: sorted, non-overlapping, non-adjacent,
    /// inclusive `(first, last)` ranges. Empty for a primary without slots.
    pub fn slot_ranges(&self) -> &[(u16, u16)] {
        &self.slot_ranges
    }
}

/// Marks a slot no shard serves in [`Topology::slot_shard`].
const UNASSIGNED: u16 = u16::MAX;

/// An immutable snapshot of the cluster's slot map (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    version: u64,
    standalone: bool,
    shards: Vec<Shard>,
    /// For each slot, the index of its shard in `shards`, or [`UNASSIGNED`].
    /// Always `SLOT_COUNT` entries.
    slot_shard: Box<[u16]>,
}

impl Topology {
    /// The snapshot of a non-cluster server at `addr`: one shard whose primary
    /// (no id, no replicas) serves every slot.
    pub fn standalone(addr: &str) -> Topology {
        Topology::standalone_server(addr, None)
    }

    /// [`Topology::standalone`] with the server's `run_id` as the primary's
    /// id, so two names for one server can be told apart from two servers.
    pub fn standalone_server(addr: &str, run_id: Option<String>) -> Topology {
        Topology {
            version: 0,
            standalone: true,
            shards: vec![Shard {
                primary: Node::new(addr, run_id),
                replicas: Vec::new(),
                slot_ranges: vec![(0, SLOT_COUNT - 1)],
            }],
            slot_shard: vec![0; usize::from(SLOT_COUNT)].into_boxed_slice(),
        }
    }

    /// The snapshot's version: 0 when freshly parsed; the refresher numbers
    /// the snapshots it stores, and [`Topology::with_slot_moved`] adds one.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The same snapshot with version `version`.
    pub fn with_version(mut self, version: u64) -> Topology {
        self.version = version;
        self
    }

    /// True for the snapshot of a non-cluster server.
    pub fn is_standalone(&self) -> bool {
        self.standalone
    }

    /// Every shard, ordered as the module docs say.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The index in [`Topology::shards`] of the shard serving `slot`; `None`
    /// when no known node serves it or `slot` is not a slot.
    pub fn shard_index_of_slot(&self, slot: u16) -> Option<usize> {
        match self.slot_shard.get(usize::from(slot)) {
            Some(&index) if index != UNASSIGNED => Some(usize::from(index)),
            _ => None,
        }
    }

    /// The shard serving `slot`; `None` as for [`Topology::shard_index_of_slot`].
    pub fn shard_of_slot(&self, slot: u16) -> Option<&Shard> {
        self.shard_index_of_slot(slot)
            .map(|index| &self.shards[index])
    }

    /// The primary serving `slot`, where commands on keys of `slot` go. O(1),
    /// no allocation.
    pub fn primary_of_slot(&self, slot: u16) -> Option<&Node> {
        self.shard_of_slot(slot).map(Shard::primary)
    }

    /// The index of the shard whose primary is at `addr`.
    pub fn shard_index_of_primary(&self, addr: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|shard| &*shard.primary.addr == addr)
    }

    /// Every known node: all primaries (in shard order), then all replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        let primaries = self.shards.iter().map(Shard::primary);
        primaries.chain(self.shards.iter().flat_map(|shard| shard.replicas.iter()))
    }

    /// How many slots no known node serves (0 in a healthy, fully known
    /// cluster). O(16384).
    pub fn unassigned_slots(&self) -> usize {
        self.slot_shard
            .iter()
            .filter(|&&index| index == UNASSIGNED)
            .count()
    }

    /// A copy in which `slot` is served by the primary at `addr`, as a `MOVED
    /// slot addr` reply says.
    ///
    /// If `addr` is the primary of a known shard, the slot joins that shard;
    /// otherwise a new shard is added with a primary at `addr` (no id, no
    /// replicas; a replica just promoted stays listed as a replica too until
    /// the next full refresh). A shard that loses its last slot stays, with no
    /// slots. The result has version `self.version() + 1` and is not
    /// standalone (a server that redirects is a cluster node).
    ///
    /// Returns `None` when there is nothing to patch: `slot` is already served
    /// by `addr`, or `slot` is not a slot. (Also when adding a shard would pass
    /// the 65535-shard limit, far above any real cluster.)
    pub fn with_slot_moved(&self, slot: u16, addr: &str) -> Option<Topology> {
        let current = *self.slot_shard.get(usize::from(slot))?;
        if current != UNASSIGNED && &*self.shards[usize::from(current)].primary.addr == addr {
            return None;
        }
        let mut shards: Vec<(Node, Vec<Node>)> = self
            .shards
            .iter()
            .map(|shard| (shard.primary.clone(), shard.replicas.clone()))
            .collect();
        let target = match self.shard_index_of_primary(addr) {
            Some(index) => index,
            None => {
                shards.push((Node::new(addr, None), Vec::new()));
                shards.len() - 1
            }
        };
        let mut slot_shard = self.slot_shard.clone();
        slot_shard[usize::from(slot)] = u16::try_from(target)
            .ok()
            .filter(|&index| index != UNASSIGNED)?;
        Some(Topology::assemble(
            self.version.saturating_add(1),
            false,
            shards,
            slot_shard,
        ))
    }

    /// Builds a snapshot from shards (primary, replicas) and a slot table that
    /// indexes them: orders the shards and replicas canonically, remaps the
    /// table, and derives each shard's slot ranges from it.
    ///
    /// `slot_shard` has `SLOT_COUNT` entries, each `UNASSIGNED` or an index
    /// into `shards`, and `shards.len() < UNASSIGNED`.
    fn assemble(
        version: u64,
        standalone: bool,
        shards: Vec<(Node, Vec<Node>)>,
        mut slot_shard: Box<[u16]>,
    ) -> Topology {
        let mut ranges: Vec<Vec<(u16, u16)>> = vec![Vec::new(); shards.len()];
        for (slot, &index) in (0..SLOT_COUNT).zip(slot_shard.iter()) {
            let Some(shard_ranges) = ranges.get_mut(usize::from(index)) else {
                continue;
            };
            match shard_ranges.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => shard_ranges.push((slot, slot)),
            }
        }
        let mut shards: Vec<(usize, Shard)> = shards
            .into_iter()
            .zip(ranges)
            .enumerate()
            .map(|(old_index, ((primary, mut replicas), slot_ranges))| {
                replicas.sort_by(|a, b| a.addr.cmp(&b.addr));
                let shard = Shard {
                    primary,
                    replicas,
                    slot_ranges,
                };
                (old_index, shard)
            })
            .collect();
        shards.sort_by(|(_, a), (_, b)| {
            let first_slot = |shard: &Shard| shard.slot_ranges.first().map_or(SLOT_COUNT, |r| r.0);
            (first_slot(a), &a.primary.addr).cmp(&(first_slot(b), &b.primary.addr))
        });
        let mut new_index = vec![UNASSIGNED; shards.len()];
        for (position, (old_index, _)) in shards.iter().enumerate() {
            // Fits: shards.len() < UNASSIGNED.
            new_index[*old_index] = u16::try_from(position).unwrap_or(UNASSIGNED);
        }
        for index in slot_shard.iter_mut() {
            *index = new_index
                .get(usize::from(*index))
                .copied()
                .unwrap_or(UNASSIGNED);
        }
        Topology {
            version,
            standalone,
            shards: shards.into_iter().map(|(_, shard)| shard).collect(),
            slot_shard,
        }
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The per-slot table is derived from the shards' ranges; printing its
        // 16384 entries would bury them.
        f.debug_struct("Topology")
            .field("version", &self.version)
            .field("standalone", &self.standalone)
            .field("shards", &self.shards)
            .field("unassigned_slots", &self.unassigned_slots())
            .finish()
    }
}

/// Why a topology reply could not be turned into a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The reply does not have the shape of the command's documented reply.
    #[error("unexpected topology reply: {what}")]
    UnexpectedReply {
        /// What in the reply was not as expected, and where.
        what: String,
    },
    /// The reply assigns no slot to any node with a usable address.
    #[error("the topology reply assigns no slot to any node with a usable address")]
    EmptyCluster,
    /// The reply assigns one slot to two different primaries. (A snapshot is
    /// rejected rather than guessed: the previous one stays in use until a
    /// consistent reply arrives.)
    #[error("the topology reply assigns slot {slot} to both {first} and {second}")]
    OverlappingSlots {
        /// The first such slot.
        slot: u16,
        /// The primary the reply first assigned it to.
        first: Arc<str>,
        /// The other primary.
        second: Arc<str>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs<'a>(nodes: impl Iterator<Item = &'a Node>) -> Vec<&'a str> {
        nodes.map(|node| &**node.addr()).collect()
    }

    /// Three shards 0-5460 (A, replica A1), 5461-10922 (B), 10923-16383 (C).
    fn three_shards() -> Topology {
        let mut slot_shard = vec![0u16; usize::from(SLOT_COUNT)];
        slot_shard[5461..=10922].fill(1);
        slot_shard[10923..].fill(2);
        Topology::assemble(
            0,
            false,
            vec![
                (
                    Node::new("10.0.0.1:7000", Some("a".repeat(40))),
                    vec![Node::new("10.0.0.4:7000", None)],
                ),
                (Node::new("10.0.0.2:7000", None), Vec::new()),
                (Node::new("10.0.0.3:7000", None), Vec::new()),
            ],
            slot_shard.into_boxed_slice(),
        )
    }

    /// A standalone snapshot has one shard, no id, every slot, version 0.
    #[test]
    fn standalone_serves_every_slot() {
        let topology = Topology::standalone("localhost:6379");
        assert!(topology.is_standalone());
        assert_eq!(topology.version(), 0);
        assert_eq!(topology.shards().len(), 1);
        assert_eq!(topology.shards()[0].slot_ranges(), &[(0, 16383)]);
        assert!(topology.shards()[0].replicas().is_empty());
        assert_eq!(topology.unassigned_slots(), 0);
        for slot in [0, 1, 8000, 16383] {
            let primary = topology.primary_of_slot(slot).expect("assigned");
            assert_eq!(&**primary.addr(), "localhost:6379");
            assert_eq!(primary.id(), None);
            assert!(primary.is_healthy());
        }
        assert_eq!(topology.primary_of_slot(16384), None);
        assert_eq!(topology.shard_index_of_slot(u16::MAX), None);
    }

    /// Lookups by slot agree with the shards' ranges; nodes() lists primaries
    /// before replicas.
    #[test]
    fn lookups_and_nodes() {
        let topology = three_shards();
        assert_eq!(topology.shard_index_of_slot(5460), Some(0));
        assert_eq!(topology.shard_index_of_slot(5461), Some(1));
        assert_eq!(
            &**topology.primary_of_slot(16383).unwrap().addr(),
            "10.0.0.3:7000"
        );
        assert_eq!(topology.shard_of_slot(0).unwrap().replicas().len(), 1);
        assert_eq!(
            addrs(topology.nodes()),
            [
                "10.0.0.1:7000",
                "10.0.0.2:7000",
                "10.0.0.3:7000",
                "10.0.0.4:7000"
            ]
        );
        assert_eq!(topology.shard_index_of_primary("10.0.0.2:7000"), Some(1));
        assert_eq!(topology.shard_index_of_primary("10.0.0.4:7000"), None);
        assert!(!topology.is_standalone());
        assert_eq!(topology.with_version(7).version(), 7);
    }

    /// MOVED to a known primary moves the one slot to its shard, keeps both
    /// shards' ranges exact, and bumps the version.
    #[test]
    fn slot_moved_to_known_primary() {
        let before = three_shards().with_version(41);
        let after = before
            .with_slot_moved(100, "10.0.0.2:7000")
            .expect("changed");
        assert_eq!(after.version(), 42);
        assert_eq!(
            &**after.primary_of_slot(100).unwrap().addr(),
            "10.0.0.2:7000"
        );
        assert_eq!(after.shards().len(), 3);
        assert_eq!(after.shards()[0].slot_ranges(), &[(0, 99), (101, 5460)]);
        assert_eq!(
            after.shards()[1].slot_ranges(),
            &[(100, 100), (5461, 10922)]
        );
        assert_eq!(after.shards()[0].replicas(), before.shards()[0].replicas());
        assert_eq!(after.unassigned_slots(), 0);
        // The original is untouched.
        assert_eq!(
            &**before.primary_of_slot(100).unwrap().addr(),
            "10.0.0.1:7000"
        );
        // Moving it back merges the ranges again.
        let back = after.with_slot_moved(100, "10.0.0.1:7000").unwrap();
        assert_eq!(back.shards()[0].slot_ranges(), &[(0, 5460)]);
        assert_eq!(back.with_version(41), before);
    }

    /// MOVED to an unknown address adds a shard with that primary and no
    /// replicas; a shard that loses its only slot stays, sorted last.
    #[test]
    fn slot_moved_to_unknown_address() {
        let before = three_shards();
        let after = before.with_slot_moved(16383, "10.0.0.9:7001").unwrap();
        assert_eq!(after.version(), 1);
        assert_eq!(after.shards().len(), 4);
        let new = after.shard_of_slot(16383).unwrap();
        assert_eq!(&**new.primary().addr(), "10.0.0.9:7001");
        assert_eq!(new.primary().id(), None);
        assert!(new.replicas().is_empty());
        assert_eq!(new.slot_ranges(), &[(16383, 16383)]);
        assert_eq!(after.shards()[2].slot_ranges(), &[(10923, 16382)]);

        let mut single = Topology::standalone("a:1");
        for slot in [0, 1] {
            single = single.with_slot_moved(slot, "b:2").unwrap();
        }
        assert!(!single.is_standalone());
        assert_eq!(&**single.shards()[0].primary().addr(), "b:2");
        assert_eq!(single.shards()[0].slot_ranges(), &[(0, 1)]);
        assert_eq!(single.shards()[1].slot_ranges(), &[(2, 16383)]);
        let mut slot_shard = vec![1u16; usize::from(SLOT_COUNT)];
        slot_shard[16383] = 0;
        let shards = vec![
            (Node::new("a:1", None), vec![]),
            (Node::new("b:2", None), vec![]),
        ];
        let last_of_a = Topology::assemble(5, false, shards, slot_shard.into());
        assert_eq!(&**last_of_a.shards()[1].primary().addr(), "a:1");
        let all_moved = last_of_a.with_slot_moved(16383, "b:2").unwrap();
        assert_eq!(all_moved.version(), 6);
        assert_eq!(all_moved.shards()[0].slot_ranges(), &[(0, 16383)]);
        assert_eq!(&**all_moved.shards()[1].primary().addr(), "a:1");
        assert_eq!(all_moved.shards()[1].slot_ranges(), &[]);
    }

    /// MOVED to the address already serving the slot, or for a non-slot,
    /// patches nothing.
    #[test]
    fn slot_moved_to_current_primary_is_none() {
        let topology = three_shards();
        assert_eq!(topology.with_slot_moved(0, "10.0.0.1:7000"), None);
        assert_eq!(topology.with_slot_moved(SLOT_COUNT, "10.0.0.2:7000"), None);
    }

    /// MOVED for an unassigned slot assigns it.
    #[test]
    fn slot_moved_assigns_unassigned_slot() {
        let mut slot_shard = vec![0u16; usize::from(SLOT_COUNT)];
        slot_shard[..10].fill(UNASSIGNED);
        let topology = Topology::assemble(
            0,
            false,
            vec![(Node::new("h:1", None), vec![])],
            slot_shard.into(),
        );
        assert_eq!(topology.unassigned_slots(), 10);
        let patched = topology.with_slot_moved(3, "h:1").unwrap();
        assert_eq!(patched.unassigned_slots(), 9);
        assert_eq!(patched.shards()[0].slot_ranges(), &[(3, 3), (10, 16383)]);
    }

    /// A node address splits into host and port at the last colon, IPv6
    /// included.
    #[test]
    fn node_host_port() {
        assert_eq!(
            Node::new("127.0.0.1:7000", None).host_port(),
            Some(("127.0.0.1", 7000))
        );
        assert_eq!(Node::new("::1:7000", None).host_port(), Some(("::1", 7000)));
        assert_eq!(Node::new("nohost", None).host_port(), None);
        assert_eq!(Node::new("h:99999", None).host_port(), None);
        assert!(!Node::new("h:1", None).with_healthy(false).is_healthy());
    }

    /// Debug output names the shards, not 16384 table entries.
    #[test]
    fn debug_is_short() {
        let text = format!("{:?}", three_shards());
        assert!(text.contains("10.0.0.3:7000") && text.contains("unassigned_slots: 0"));
        assert!(text.len() < 2000, "{text}");
    }
}
