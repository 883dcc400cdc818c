//! shardlock: fine-grained exclusive locks on Redis Cluster.
//!
//! This crate talks to a Redis Cluster directly: it computes each key's hash
//! slot, keeps its own snapshot of which primary serves which slot, and
//! follows the cluster through resharding and failover. This release holds
//! the routing core that lock operations run on; [`Client`] is its public
//! handle.
//!
//! ```no_run
//! # async fn example() -> shardlock::Result<()> {
//! let client = shardlock::Client::builder()
//!     .seeds(["redis://127.0.0.1:7000"]) // any node(s), or one standalone server
//!     .build()
//!     .await?;
//! let key = "{order:42}:state";
//! let _: () = client.query(key, redis::cmd("SET").arg(key).arg("paid").clone()).await?;
//! # Ok(()) }
//! ```
//!
//! # What holds
//!
//! - Every request goes to the primary that serves its slot in the current
//!   snapshot; `MOVED` and `ASK` are followed, transient cluster states
//!   (`TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, broken connections) are retried
//!   with backoff, all within the request's deadline. When the deadline
//!   passes the caller gets [`Error::DeadlineExceeded`] naming the last
//!   cause; nothing is retried after that.
//! - A request may be sent more than once. Requests must be idempotent, or
//!   recognise their own earlier success.
//! - The slot map is never locked across an `.await`: readers load an
//!   immutable [`Topology`]; only the refresher and `MOVED` patches replace it.
//!
//! # What does not
//!
//! - Redis replicates asynchronously. A write acknowledged by a primary that
//!   dies before replicating it is gone after the failover; retrying cannot
//!   bring it back.
//! - A slot map is a snapshot and may be stale; correctness comes from the
//!   server's redirects, not from the snapshot.
//!
//! # Layout
//!
//! I/O-free core (table-tested with literal replies):
//! - [`slot`]: `key_slot`, the hash-tag rule, one short hash tag per slot.
//! - [`topology`]: the immutable slot-map snapshot and its parsers for
//!   `CLUSTER SHARDS` / `CLUSTER SLOTS`, RESP2 and RESP3.
//! - [`redirect`]: `classify`, the retry decision for one reply, as data.
//! - `backoff`, `config`, `request`, `stats`: the backoff policy, settings,
//!   what is sent ([`Request`], [`Script`]), routing counters.
//!
//! With I/O:
//! - `node`: one multiplexed connection per node, made lazily, replaced when
//!   it breaks, with capped jittered backoff between attempts.
//! - `refresh`: the single-flight topology refresher (handle plus worker).
//! - `router`: slot → node → send → act on `classify`, within a deadline.
//! - `client`: [`Client`] and [`ClientBuilder`].
//! - [`metrics`]: metric names; recording goes through the `metrics` facade
//!   and the application installs the exporter.
//! - `testkit` (feature `testkit`): real local `redis-server` clusters and
//!   fault injection, for tests and the load test.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod backoff;
mod client;
mod config;
mod error;
pub mod lock;
pub mod metrics;
mod node;
pub mod redirect;
mod refresh;
mod renew;
mod request;
mod router;
mod scripts;
pub mod slot;
mod stats;
pub mod topology;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{Client, ClientBuilder};
pub use error::{Error, NodeFailure, NodeFailureCause, Result};
pub use lock::{
    FencingToken, LockGuard, LockGuards, LockManager, LockManagerBuilder, LockRequest,
    ManyLockRequest,
};
pub use redirect::{FailCause, RetryCause};
pub use request::{Request, Script};
pub use slot::{SLOT_COUNT, key_slot, slot_tag};
pub use stats::RouterStats;
pub use topology::Topology;
