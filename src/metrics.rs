//! Metric names and recording helpers.
//!
//! shardlock records through the [`metrics`] facade and never installs an
//! exporter: the application (or the load test) chooses one. Without a
//! recorder every call here is a cheap no-op. Labels stay bounded: kinds and
//! outcomes from fixed lists, never a key.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

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

/// Acquire calls by `outcome` (`acquired`, `contended`, `timeout`).
pub const ACQUIRES_TOTAL: &str = "shardlock_acquires_total";
/// Time from the start of an acquire call to the lease being held.
pub const ACQUIRE_SECONDS: &str = "shardlock_acquire_duration_seconds";
/// Time a lease was held, from acquire to release (or guard drop).
pub const HOLD_SECONDS: &str = "shardlock_hold_duration_seconds";
/// Leases renewed by the renewal task.
pub const RENEWALS_TOTAL: &str = "shardlock_renewals_total";
/// Leases per renewal round trip to one shard.
pub const RENEW_BATCH_LEASES: &str = "shardlock_renew_batch_leases";
/// Leases lost: renewal found them gone or taken, or could not confirm them
/// before they expired.
pub const LEASES_LOST_TOTAL: &str = "shardlock_leases_lost_total";

pub(crate) fn acquired(waited: Duration) {
    counter!(ACQUIRES_TOTAL, "outcome" => "acquired").increment(1);
    histogram!(ACQUIRE_SECONDS).record(waited.as_secs_f64());
}

pub(crate) fn acquire_failed(outcome: &'static str) {
    counter!(ACQUIRES_TOTAL, "outcome" => outcome).increment(1);
}

pub(crate) fn hold_time(held: Duration) {
    histogram!(HOLD_SECONDS).record(held.as_secs_f64());
}

pub(crate) fn renewed() {
    counter!(RENEWALS_TOTAL).increment(1);
}

pub(crate) fn renew_batch(leases: usize, _chunks: usize) {
    histogram!(RENEW_BATCH_LEASES).record(leases as f64);
}

pub(crate) fn lease_lost() {
    counter!(LEASES_LOST_TOTAL).increment(1);
}

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
