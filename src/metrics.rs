//! Metric names and recording helpers.
//!
//! shardlock records through the [`metrics`] facade and never installs an
//! exporter: the application (or the load test) chooses one. Without a
//! recorder every call here is a cheap no-op. Labels stay bounded: kinds and
//! outcomes from fixed lists, never a key.

use metrics::{counter, gauge};

use crate::redirect::RetryCause;

/// Redirect replies met, by `kind` (`moved`, `ask`).
pub const REDIRECTS_TOTAL: &str = "shardlock_redirects_total";
/// Topology fetches, by `outcome` (`ok`, `error`).
pub const TOPOLOGY_REFRESHES_TOTAL: &str = "shardlock_topology_refreshes_total";
/// Version of the slot map in use (bumped by every fetch or MOVED patch).
pub const TOPOLOGY_VERSION: &str = "shardlock_topology_version";
/// Failed command attempts, by `kind`: a retry cause (`timeout`,
/// `clusterdown`, `connection_refused`, …) or a final failure (`server`,
/// `auth`, `protocol`, `deadline`, `other`).
pub const COMMAND_ERRORS_TOTAL: &str = "shardlock_command_errors_total";
/// Connections opened to nodes (first connects and reconnects).
pub const NODE_CONNECTS_TOTAL: &str = "shardlock_node_connects_total";

pub(crate) fn redirect(kind: &'static str) {
    counter!(REDIRECTS_TOTAL, "kind" => kind).increment(1);
}

pub(crate) fn topology_refresh(ok: bool, version: u64) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(TOPOLOGY_REFRESHES_TOTAL, "outcome" => outcome).increment(1);
    if ok {
        topology_version(version);
    }
}

pub(crate) fn topology_version(version: u64) {
    gauge!(TOPOLOGY_VERSION).set(version as f64);
}

pub(crate) fn retryable_error(cause: &RetryCause) {
    counter!(COMMAND_ERRORS_TOTAL, "kind" => cause.as_str()).increment(1);
}

pub(crate) fn final_error(kind: &'static str) {
    counter!(COMMAND_ERRORS_TOTAL, "kind" => kind).increment(1);
}

pub(crate) fn node_connected() {
    counter!(NODE_CONNECTS_TOTAL).increment(1);
}
