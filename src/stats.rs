//! Counters of what routing did, readable by tests and dashboards.
//!
//! The same events are also recorded through [`crate::metrics`]; these
//! in-process counters exist so a caller (or a test) can read them without
//! installing a metrics recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of a client's routing counters (monotonic since it was built).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterStats {
    /// Attempts sent to a node (first tries and retries).
    pub attempts: u64,
    /// Pipelines handed to node connections: with auto-pipelining several
    /// attempts share one (and one write); without it each attempt is its
    /// own (the connection may still join some in one system call).
    pub writes: u64,
    /// `MOVED` replies met.
    pub moved: u64,
    /// `ASK` replies met.
    pub ask: u64,
    /// `TRYAGAIN` replies met.
    pub try_again: u64,
    /// `NOSCRIPT` replies met (the script's source was sent instead).
    pub noscript: u64,
    /// Attempts that met a retryable failure (transport errors,
    /// `CLUSTERDOWN`, `LOADING`, …), redirects not included.
    pub retryable_errors: u64,
    /// Requests that gave up because their deadline passed.
    pub deadlines_exceeded: u64,
    /// Refresh hints sent to the refresher (most are coalesced).
    pub refresh_requests: u64,
    /// Topology fetches that produced a snapshot.
    pub refreshes: u64,
    /// Topology fetches where no node gave a usable answer.
    pub refresh_failures: u64,
    /// Version of the slot map in use.
    pub topology_version: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) attempts: AtomicU64,
    /// Shared with the nodes' batching workers.
    pub(crate) writes: Arc<AtomicU64>,
    pub(crate) moved: AtomicU64,
    pub(crate) ask: AtomicU64,
    pub(crate) try_again: AtomicU64,
    pub(crate) noscript: AtomicU64,
    pub(crate) retryable_errors: AtomicU64,
    pub(crate) deadlines_exceeded: AtomicU64,
    pub(crate) refresh_requests: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, topology_version: u64) -> RouterStats {
        RouterStats {
            attempts: self.attempts.load(Relaxed),
            writes: self.writes.load(Relaxed),
            moved: self.moved.load(Relaxed),
            ask: self.ask.load(Relaxed),
            try_again: self.try_again.load(Relaxed),
            noscript: self.noscript.load(Relaxed),
            retryable_errors: self.retryable_errors.load(Relaxed),
            deadlines_exceeded: self.deadlines_exceeded.load(Relaxed),
            refresh_requests: self.refresh_requests.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
            topology_version,
        }
    }
}
