//! Real local Redis clusters for tests, and the faults to inject into them
//! (cargo feature `testkit`).
//!
//! [`TestCluster::start`] launches `redis-server` processes (3 primaries and
//! 3 replicas by default) on free loopback ports inside one temporary
//! directory, joins them into a cluster with plain `CLUSTER` commands, and
//! returns once every node says `cluster_state:ok`, all nodes agree on the slot
//! map and every replica's link to its primary is up. Nothing is mocked: the
//! faults are the real thing.
//!
//! - [`TestCluster::begin_migration`] / [`TestCluster::migrate_slot`]: live slot
//!   migration, stepwise ([`SlotMigration`]) so a test can stop halfway and
//!   observe `-ASK`.
//! - [`TestCluster::failover`]: a manual `CLUSTER FAILOVER`, waited for.
//! - [`TestCluster::kill`], [`TestCluster::pause`], [`TestCluster::resume`],
//!   [`TestCluster::restart`]: `SIGKILL`, `SIGSTOP`, `SIGCONT`, and a restart on
//!   the same ports and `nodes.conf`.
//! - Network partitions, in a cluster started with
//!   [`ClusterSpec::proxied`]: [`TestCluster::cut_client`] (the client side
//!   ↔ one node), [`TestCluster::isolate`] (one node ↔ every other node,
//!   cluster bus and replication, while clients still reach it: split
//!   brain), [`TestCluster::cut`] between any two [`Peer`]s,
//!   [`TestCluster::heal`] and [`TestCluster::heal_all`].
//!
//! # Partitions: how a proxied cluster is wired
//!
//! Node `i` binds its own loopback address `127.0.0.(10+i)` (all of
//! `127.0.0.0/8` is loopback on Linux) and makes its outgoing cluster-bus
//! and replication connections from it (`bind-source-addr`). In front of it
//! the test kit runs two TCP proxies on `127.0.0.1`, on the same two port
//! numbers (client port and bus port), and the node announces those
//! (`cluster-announce-ip 127.0.0.1`). So a node's public address stays
//! `127.0.0.1:PORT`: [`TestCluster::seeds`], [`TestCluster::addrs`], the
//! slot map and `INFO replication` all name the proxies, and every method
//! takes those addresses. Clients, replication and the cluster bus
//! (`CLUSTER MEET` included) all pass through a proxy; a proxy tells who is
//! on the other end by the connection's source IP (`127.0.0.(10+j)` is node
//! `j`, anything else is the client side). The test kit's own queries
//! ([`TestCluster::command`], the waits, the slot-migration `MIGRATE`) go
//! to the node's own address, past its proxy, so the kit still sees what a
//! cut-off node believes.
//!
//! A cut is silent, as a real partition is: no byte passes either way on
//! the connections open before it or on new ones, nothing is closed or
//! reset, and what was sent waits (in kernel buffers, and at most 16 KiB
//! per direction of a connection in the proxy) until the heal delivers it,
//! late and in order. The peers see timeouts. What differs from a real
//! network: `connect` succeeds at once while cut (the kernel completes the
//! handshake) instead of timing out on unanswered SYNs, and a killed node's
//! proxy accepts and then closes a connection instead of refusing it. A
//! proxy rather than network namespaces: it needs no root, no `ip netns`
//! and no veth pairs, and works on any Linux (and in containers).
//!
//! The proxies run on a dedicated OS thread with its own tokio runtime, so
//! a busy or current-thread test runtime cannot stall them; dropping the
//! cluster stops that thread and closes every proxied socket. Kill, pause,
//! restart (same ports, same proxies), failover and migration work the same
//! behind proxies. Without `proxied` (the default) nodes bind `127.0.0.1`
//! directly and nothing changes.
//!
//! Guarantees:
//! - Every wait polls a condition against a deadline and fails with
//!   [`TestkitError::Timeout`] naming what did not happen (with the tail of the
//!   relevant node's log when there is one); nothing sleeps a fixed time in
//!   place of a condition.
//! - Queries ask the nodes what they believe *now*; a node that does not answer
//!   within [`NODE_QUERY_TIMEOUT`] (killed or paused) is skipped.
//! - Dropping a [`TestCluster`] or [`StandaloneServer`] — also while a test
//!   panics — `SIGKILL`s and reaps every process it started (paused ones too)
//!   and then removes the temporary directory.
//!
//! Not guaranteed: if the test process itself is killed with `SIGKILL`, its
//! servers survive (no `Drop` runs). They stay in the test's process group, so
//! a Ctrl-C in the terminal still stops them. The binary comes from
//! `$SHARDLOCK_REDIS_SERVER`, else `redis-server` on `PATH` (Debian:
//! `apt-get install redis-server`).
//!
//! Nodes start with `enable-debug-command local`, so tests may use
//! `DEBUG SLEEP` and friends through [`TestCluster::command`].
//!
//! # Example
//!
//! ```no_run
//! use shardlock::testkit::TestCluster;
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), shardlock::testkit::TestkitError> {
//! let cluster = TestCluster::start().await?;
//! let seeds = cluster.seeds(); // hand these to the client under test
//!
//! // Move slot 866 to another primary halfway, look, then finish.
//! let source = cluster.primary_of_slot(866).await?;
//! let target = cluster
//!     .primaries()
//!     .await?
//!     .into_iter()
//!     .find(|p| *p != source)
//!     .expect("three primaries");
//! let mut migration = cluster.begin_migration(866, &target).await?;
//! migration.move_keys(10).await?;
//! // ... the client under test now meets -ASK for the moved keys ...
//! migration.finish().await?;
//!
//! // Fail over the primary of slot 0 and wait until everyone agrees.
//! let old = cluster.primary_of_slot(0).await?;
//! let new = cluster.failover(&old).await?;
//! assert_eq!(cluster.primary_of_slot(0).await?, new);
//! cluster.wait_cluster_ok(Duration::from_secs(10)).await?;
//! # drop(seeds);
//! # Ok(())
//! # }
//! ```
//!
//! Layout: `server.rs` (one process: binary discovery, ports, spawn,
//! signals, `Drop`), `standalone.rs` ([`StandaloneServer`]), `wire.rs`
//! (connect with a deadline; parse `INFO`, `CLUSTER SLOTS`, `CLUSTER NODES`),
//! `views.rs` (what the live nodes believe, when they agree, polling with a
//! deadline), `cluster.rs` ([`TestCluster`]: forming and queries), `faults.rs`
//! (migration, failover, kill / pause / restart), `proxy.rs` (the
//! blackholing proxies of a proxied cluster), `partition.rs` ([`Peer`],
//! cutting and healing links).

mod baseline;
mod cluster;
mod faults;
mod partition;
mod proxy;
mod server;
mod standalone;
mod views;
mod wire;

use std::time::Duration;

pub use baseline::redis_benchmark_set;
pub use cluster::{ClusterSpec, TestCluster};
pub use faults::SlotMigration;
pub use partition::Peer;
pub use standalone::{StandaloneServer, StandaloneSpec};

/// How long a query waits for one node before treating it as down.
pub const NODE_QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// Everything that can go wrong while starting or driving a test cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// No `redis-server` binary was found.
    #[error(
        "redis-server not found on PATH (or $SHARDLOCK_REDIS_SERVER); install it with `apt-get install redis-server` (looked for {looked_for})"
    )]
    RedisServerNotFound {
        /// Where it was looked for.
        looked_for: String,
    },
    /// A `redis-server` process could not be started or exited at startup.
    #[error("could not start redis-server for {node}: {reason}")]
    Spawn {
        /// The node (directory or address) being started.
        node: String,
        /// Why, including the tail of its log when there is one.
        reason: String,
    },
    /// A node answered with an error, or the connection to it failed.
    #[error("{addr}: {source}")]
    Redis {
        /// The node that was asked.
        addr: String,
        /// The error as the client saw it (`source.code()` is e.g. `"ASK"`).
        #[source]
        source: redis::RedisError,
    },
    /// A condition did not come true before its deadline.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was waited for, the last thing seen, and a log tail if any.
        what: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The address is not one of the nodes this test cluster started.
    #[error("{0} is not a node of this test cluster")]
    UnknownNode(String),
    /// The caller asked for something that cannot be done (a bad spec, slot,
    /// or target).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A node replied with something the testkit did not expect.
    #[error("unexpected: {0}")]
    Unexpected(String),
    /// A local I/O error (temporary directory, log file, signal).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl TestkitError {
    /// The server's error code (`"ASK"`, `"MOVED"`, `"CLUSTERDOWN"`, …) when a
    /// node replied with an error.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            TestkitError::Redis { source, .. } => source.code(),
            _ => None,
        }
    }
}
