//! shardlock: fine-grained exclusive locks on Redis Cluster.
//!
//! (The crate-root tour is completed with the lock API.)
//!
//! # Layout
//!
//! I/O-free core:
//! - [`slot`]: `key_slot`, the hash-tag rule, one short hash tag per slot.
//! - [`topology`]: the immutable slot-map snapshot and its parsers.
//! - [`redirect`]: `classify`, the retry decision for one reply.
//! - `backoff`, `config`, `request`: policies, settings, what is sent.
//!
//! With I/O:
//! - `node`: one multiplexed connection per node, lazy, reconnecting.
//! - `refresh`: the single-flight topology refresher task.
//! - `router`: slot → node → send → act on `classify`, within a deadline.
//! - [`Client`]: the public handle over all of the above.
//! - [`metrics`]: metric names; recording goes through the `metrics` facade.
//! - `testkit` (feature): real local redis-server clusters and fault injection.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod backoff;
mod client;
mod config;
mod error;
pub mod metrics;
mod node;
pub mod redirect;
mod refresh;
mod request;
mod router;
pub mod slot;
mod stats;
pub mod topology;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use client::{Client, ClientBuilder};
pub use error::{Error, NodeFailure, NodeFailureCause, Result};
pub use redirect::{FailCause, RetryCause};
pub use request::{Request, Script};
pub use slot::{SLOT_COUNT, key_slot, slot_tag};
pub use stats::RouterStats;
pub use topology::Topology;
