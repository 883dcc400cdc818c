//! shardlock: fine-grained exclusive locks on Redis Cluster.
//!
//! This crate talks to a Redis Cluster directly: it computes each key's hash
//! slot, keeps its own snapshot of which primary serves which slot, and
//! follows the cluster through resharding and failover. [`LockManager`]
//! holds exclusive leases on it; [`Client`] is the routed connection
//! underneath.
//!
//! ```no_run
//! # async fn example() -> shardlock::Result<()> {
//! use std::time::Duration;
//! let mgr = shardlock::LockManager::builder()
//!     .seeds(["redis://127.0.0.1:7000"]) // any node(s), or one standalone server
//!     .namespace("lock:")
//!     .build()
//!     .await?;
//! let guard = mgr.lock("order:42").ttl(Duration::from_secs(10)).fenced().acquire().await?;
//! let token = guard.fencing_token(); // give it to the protected resource
//! guard.release().await?;
//! # let _ = token; Ok(()) }
//! ```
//!
//! # What holds for locks
//!
//! - Only the holder of a lease can release or extend it: each acquisition
//!   stores a fresh 128-bit random token and both operations compare it.
//! - Acquire is one `SET … NX PX … GET`; a retry that finds its own token
//!   counts as acquired, so lost replies are harmless. An acquire that
//!   fails (or is dropped) after sending releases what it may have set, by
//!   token, in the background.
//! - Auto-renewed leases are renewed once a third of their TTL has passed,
//!   batched per shard; a lease found gone or taken, or not confirmed before
//!   its [`LockGuard::valid_until`] passed (without auto-renewal: once its
//!   TTL ran out), is reported through [`LockGuard::lost`]. `valid_until`
//!   is never later than the key's expiry on the server, and a lost lease
//!   is still deleted by token on release and drop.
//! - Fencing tokens strictly increase per resource, also across a failover
//!   that lost recent writes, as long as the new primary's clock is not
//!   behind the old one's by more than the failover took.
//!
//! # What does not
//!
//! - Redis replicates asynchronously: a failover can lose a lease, and then
//!   two clients may believe they hold it until the first one's renewal
//!   reports the loss. Fencing tokens, checked by the protected resource, are
//!   what makes that safe. `.replicas(n)` narrows the window, no more.
//!
//! # What holds for routing
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
//! # What routing does not promise
//!
//! - A write acknowledged by a primary that dies before replicating it is
//!   gone after the failover; retrying cannot bring it back.
//! - A slot map is a snapshot and may be stale; correctness comes from the
//!   server's redirects, not from the snapshot.
//!
//! # Layout
//!
//! I/O-free core (table-tested with literal replies, property-tested with
//! generated ones in the `*_props.rs` files):
//! - [`slot`]: `key_slot`, the hash-tag rule, one short hash tag per slot.
//! - [`topology`]: the immutable slot-map snapshot and its parsers for
//!   `CLUSTER SHARDS` / `CLUSTER SLOTS`, RESP2 and RESP3; `topology/server.rs`
//!   reads a server's version (`HELLO`, 7.0 or later required) and `run_id`.
//! - [`redirect`]: `classify`, the retry decision for one reply, as data.
//! - `backoff`, `config`, `request`, `stats`: the backoff policy, settings,
//!   what is sent ([`Request`], [`Script`]), routing counters.
//!
//! With I/O:
//! - `node`: one multiplexed connection per node, made lazily, replaced when
//!   it breaks, with capped jittered backoff between attempts.
//! - `batcher`: auto-pipelining; requests for one node submitted together
//!   leave in one write (handle plus worker per node).
//! - `refresh`: the single-flight topology refresher (handle plus worker).
//! - `router`: slot → node → send → act on `classify`, within a deadline.
//! - `client`: [`Client`] and [`ClientBuilder`].
//! - [`lock`]: [`LockManager`], [`LockRequest`], [`LockGuard`], `lock_many`,
//!   fencing tokens, key classes (the metrics label for keys); `scripts`
//!   and `src/lua/*.lua`: the Lua it runs.
//! - `renew`: the renewal task (handle plus worker), batched per shard.
//! - `releases`: background releases, run by the renewal task, batched per node.
//! - [`redlock`]: [`RedlockManager`]: one lease on a majority of
//!   independent deployments, with its validity arithmetic I/O-free in
//!   [`redlock::validity`].
//! - [`metrics`]: metric names, buckets and descriptions; recording goes
//!   through the `metrics` facade and the application installs the
//!   exporter (`prometheus`, feature `prometheus`, is a one-call endpoint).
//! - `testkit` (feature `testkit`): real local `redis-server` clusters and
//!   fault injection, for tests and the load test.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod backoff;
mod batcher;
mod client;
mod config;
mod error;
pub mod lock;
pub mod metrics;
mod node;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod redirect;
pub mod redlock;
mod refresh;
mod releases;
mod renew;
mod request;
mod router;
mod scripts;
pub mod slot;
mod stats;
pub mod topology;

#[cfg(test)]
mod prop_values;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{Client, ClientBuilder};
pub use error::{Error, NodeFailure, NodeFailureCause, Result};
pub use lock::{
    FencingToken, LockGuard, LockGuards, LockManager, LockManagerBuilder, LockRequest,
    ManyLockRequest,
};
pub use redirect::{FailCause, RetryCause};
pub use redlock::{RedlockGuard, RedlockManager, RedlockManagerBuilder, RedlockRequest};
pub use request::{Request, Script};
pub use slot::{SLOT_COUNT, key_slot, slot_tag};
pub use stats::RouterStats;
pub use topology::Topology;
