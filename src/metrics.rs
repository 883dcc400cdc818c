//! Metric names, their descriptions, and the recording helpers.
//!
//! shardlock records through the [`metrics`] facade and never installs an
//! exporter: the application (or the load test, or
//! `shardlock::prometheus::install` with the `prometheus` feature) chooses
//! one. Without a recorder every call here is a cheap no-op. Install the
//! recorder before building a client, and call [`describe`] once to give
//! each metric its help text and unit.
//!
//! Labels stay bounded: `outcome` and `kind` from fixed lists, `shard` a
//! node address, `key_class` a label the application declares per key
//! (`LockManagerBuilder::key_classes`, default `"default"`) — never a key.
//! Durations are histograms in seconds; [`SECONDS_BUCKETS`] spans 50 µs to
//! 60 s.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

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
/// One request's round trip to a node, by `shard` (the node's address).
pub const COMMAND_SECONDS: &str = "shardlock_command_duration_seconds";
/// Connections opened, by `shard` (first connects and reconnects).
pub const NODE_CONNECTS_TOTAL: &str = "shardlock_node_connects_total";

/// Acquire calls by `outcome` (`acquired`, `contended`, `timeout`, `error`)
/// and `key_class`.
pub const ACQUIRES_TOTAL: &str = "shardlock_acquires_total";
/// Tries sent to take a lock, by `key_class` (each retry while waiting
/// counts; a `lock_many` try counts once).
pub const ACQUIRE_ATTEMPTS_TOTAL: &str = "shardlock_acquire_attempts_total";
/// Tries that found the lock held by another holder, by `key_class`.
pub const ACQUIRE_CONTENDED_TOTAL: &str = "shardlock_acquire_contended_total";
/// Time from an acquire call to its outcome, by `outcome` and `key_class`.
pub const ACQUIRE_WAIT_SECONDS: &str = "shardlock_acquire_wait_seconds";
/// Time a lease was held, from acquired to released, dropped or lost, by
/// `key_class`.
pub const HOLD_SECONDS: &str = "shardlock_hold_seconds";
/// Leases this process holds now, by `key_class`.
pub const LEASES_HELD: &str = "shardlock_leases_held";
/// Releases by `outcome` (`released`, `not_held`, `error`) and `key_class`;
/// background releases of dropped guards included.
pub const RELEASES_TOTAL: &str = "shardlock_releases_total";
/// Background releases by token after an acquire that failed or was
/// cancelled once it had sent a request (its `SET` may have landed with
/// the reply lost), by `outcome` (`released`: it had set the key;
/// `not_held`: it had not, or the key expired; `error`) and `key_class`.
/// Not in [`RELEASES_TOTAL`]: no guard ever held these leases.
pub const ORPHAN_RELEASES_TOTAL: &str = "shardlock_orphan_releases_total";
/// Leases renewed by the renewal task.
pub const RENEWALS_TOTAL: &str = "shardlock_renewals_total";
/// Leases per renewal round trip to one shard.
pub const RENEW_BATCH_LEASES: &str = "shardlock_renew_batch_leases";
/// Leases lost, by `key_class`: renewal or an extend found them gone or
/// taken, or they were not confirmed before their `valid_until` passed. A
/// lease without auto-renewal that simply runs out its TTL is not counted
/// (its `lost()` resolves all the same).
pub const LEASES_LOST_TOTAL: &str = "shardlock_leases_lost_total";

/// Histogram buckets for every `_seconds` metric: 50 µs to 60 s, about
/// 2–2.5× apart (a local lock round trip is ~100 µs; a wait can be a minute).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets for [`RENEW_BATCH_LEASES`].
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// The `key_class` of keys when the application declares no classes.
pub const DEFAULT_KEY_CLASS: &str = "default";

/// Gives every shardlock metric its help text and unit in the installed
/// recorder. Call once, after installing it.
pub fn describe() {
    use Unit::{Count, Seconds};
    describe_counter!(
        REDIRECTS_TOTAL,
        Count,
        "Redirect replies (MOVED, ASK) followed, by kind."
    );
    describe_counter!(
        TOPOLOGY_REFRESHES_TOTAL,
        Count,
        "Slot-map fetches from the cluster, by outcome (ok, error)."
    );
    describe_gauge!(
        TOPOLOGY_VERSION,
        Count,
        "Version of the slot map in use; changes when the cluster's slot map does."
    );
    describe_counter!(
        COMMAND_ERRORS_TOTAL,
        Count,
        "Failed command attempts, by kind (retried causes such as timeout or clusterdown, and final failures)."
    );
    describe_histogram!(
        COMMAND_SECONDS,
        Seconds,
        "Round trip of one request to a node, by shard (node address)."
    );
    describe_counter!(
        NODE_CONNECTS_TOTAL,
        Count,
        "Connections opened to a node, first connects and reconnects."
    );
    describe_counter!(
        ACQUIRES_TOTAL,
        Count,
        "Acquire calls by outcome: acquired, contended (held, no wait), timeout (still held after the wait), error."
    );
    describe_counter!(
        ACQUIRE_ATTEMPTS_TOTAL,
        Count,
        "Tries sent to take a lock; every retry while waiting counts."
    );
    describe_counter!(
        ACQUIRE_CONTENDED_TOTAL,
        Count,
        "Tries that found the lock held by another holder."
    );
    describe_histogram!(
        ACQUIRE_WAIT_SECONDS,
        Seconds,
        "Time from an acquire call to its outcome, waiting included."
    );
    describe_histogram!(
        HOLD_SECONDS,
        Seconds,
        "Time a lease was held, from acquired to released, dropped or lost."
    );
    describe_gauge!(LEASES_HELD, Count, "Leases this process holds now.");
    describe_counter!(
        RELEASES_TOTAL,
        Count,
        "Releases by outcome: released, not_held (expired or taken before the release), error."
    );
    describe_counter!(
        ORPHAN_RELEASES_TOTAL,
        Count,
        "Background releases by token after a failed or cancelled acquire that had sent its request, by outcome: released (it had set the key), not_held, error."
    );
    describe_counter!(RENEWALS_TOTAL, Count, "Leases renewed by the renewal task.");
    describe_histogram!(
        RENEW_BATCH_LEASES,
        Count,
        "Leases per renewal round trip to one shard."
    );
    describe_counter!(
        LEASES_LOST_TOTAL,
        Count,
        "Leases lost while held: found gone or taken, or not confirmed before they expired (a lease without auto-renewal running out its TTL is not counted)."
    );
}

/// Outcome of an acquire call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AcquireOutcome {
    Acquired,
    Contended,
    Timeout,
    Error,
}

impl AcquireOutcome {
    fn as_str(self) -> &'static str {
        match self {
            AcquireOutcome::Acquired => "acquired",
            AcquireOutcome::Contended => "contended",
            AcquireOutcome::Timeout => "timeout",
            AcquireOutcome::Error => "error",
        }
    }
}

pub(crate) fn acquire(class: &'static str, outcome: AcquireOutcome, waited: Duration) {
    let outcome = outcome.as_str();
    counter!(ACQUIRES_TOTAL, "outcome" => outcome, "key_class" => class).increment(1);
    histogram!(ACQUIRE_WAIT_SECONDS, "outcome" => outcome, "key_class" => class)
        .record(waited.as_secs_f64());
}

/// One try to take a lock; `held` when another holder had it.
pub(crate) fn acquire_attempt(class: &'static str, held: bool) {
    counter!(ACQUIRE_ATTEMPTS_TOTAL, "key_class" => class).increment(1);
    if held {
        counter!(ACQUIRE_CONTENDED_TOTAL, "key_class" => class).increment(1);
    }
}

/// A lease became held by this process.
pub(crate) fn lease_taken(class: &'static str) {
    gauge!(LEASES_HELD, "key_class" => class).increment(1.0);
}

/// A lease stopped being held (released, dropped or lost) after `held`.
pub(crate) fn lease_ended(class: &'static str, held: Duration) {
    gauge!(LEASES_HELD, "key_class" => class).decrement(1.0);
    histogram!(HOLD_SECONDS, "key_class" => class).record(held.as_secs_f64());
}

pub(crate) fn lease_lost(class: &'static str) {
    counter!(LEASES_LOST_TOTAL, "key_class" => class).increment(1);
}

/// Outcome of a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReleaseOutcome {
    Released,
    NotHeld,
    Error,
}

impl ReleaseOutcome {
    fn as_str(self) -> &'static str {
        match self {
            ReleaseOutcome::Released => "released",
            ReleaseOutcome::NotHeld => "not_held",
            ReleaseOutcome::Error => "error",
        }
    }
}

pub(crate) fn release(class: &'static str, outcome: ReleaseOutcome) {
    counter!(RELEASES_TOTAL, "outcome" => outcome.as_str(), "key_class" => class).increment(1);
}

/// The background release of what a failed or cancelled acquire may have
/// set.
pub(crate) fn orphan_release(class: &'static str, outcome: ReleaseOutcome) {
    counter!(ORPHAN_RELEASES_TOTAL, "outcome" => outcome.as_str(), "key_class" => class)
        .increment(1);
}

pub(crate) fn renewed() {
    counter!(RENEWALS_TOTAL).increment(1);
}

pub(crate) fn renew_batch(leases: usize) {
    histogram!(RENEW_BATCH_LEASES).record(leases as f64);
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

pub(crate) fn node_connected(shard: &Arc<str>) {
    counter!(NODE_CONNECTS_TOTAL, "shard" => shard.clone()).increment(1);
}

pub(crate) fn command_duration(shard: &Arc<str>, took: Duration) {
    histogram!(COMMAND_SECONDS, "shard" => shard.clone()).record(took.as_secs_f64());
}

/// Registers the counters with fixed label sets at zero, so rates and
/// alerts see a series from the start rather than after the first event.
pub(crate) fn register_zeroes() {
    for kind in ["moved", "ask"] {
        counter!(REDIRECTS_TOTAL, "kind" => kind).increment(0);
    }
    for outcome in ["ok", "error"] {
        counter!(TOPOLOGY_REFRESHES_TOTAL, "outcome" => outcome).increment(0);
    }
    counter!(RENEWALS_TOTAL).increment(0);
}

/// Registers the per-class lock series at zero for `class`.
pub(crate) fn register_class(class: &'static str) {
    for outcome in [
        AcquireOutcome::Acquired,
        AcquireOutcome::Contended,
        AcquireOutcome::Timeout,
        AcquireOutcome::Error,
    ] {
        counter!(ACQUIRES_TOTAL, "outcome" => outcome.as_str(), "key_class" => class).increment(0);
    }
    counter!(ACQUIRE_ATTEMPTS_TOTAL, "key_class" => class).increment(0);
    counter!(ACQUIRE_CONTENDED_TOTAL, "key_class" => class).increment(0);
    counter!(LEASES_LOST_TOTAL, "key_class" => class).increment(0);
    gauge!(LEASES_HELD, "key_class" => class).increment(0.0);
    for outcome in ["released", "not_held", "error"] {
        counter!(RELEASES_TOTAL, "outcome" => outcome, "key_class" => class).increment(0);
        counter!(ORPHAN_RELEASES_TOTAL, "outcome" => outcome, "key_class" => class).increment(0);
    }
}
