//! Background releases (dropped guards, failed acquires' orphans, Redlock
//! clean-up), run by the renewal worker: batched per node, bounded in
//! flight, never dropped unrecorded.
//!
//! Invariants:
//! - At most one release batch per node is in flight, of at most
//!   [`RELEASE_CHUNK`] leases: one pipeline of `release.lua` calls (each
//!   declares its key, so the node answers each on its own: deleted, not
//!   ours, or a redirect in place). A dead or paused node therefore holds
//!   up only its own leases, and costs one request per try, not one per
//!   lease.
//! - Only leases the node redirected (`MOVED`, `ASK`) are released one by
//!   one through the router, at most [`SINGLES_IN_FLIGHT`] at once, the
//!   rest queued. One that fails (the key may still hold our token) is
//!   queued again, each failed attempt recorded as `outcome="error"`.
//! - A worker dropped with its runtime leaves every undecided lease
//!   (queued or in flight, see [`Releases::take_all`]) in its
//!   [`Handover`], for the next worker.
//! - A batch that fails as a whole (transport, `CLUSTERDOWN`, `TRYAGAIN`,
//!   …) puts its leases back; the caller backs that node off. A lease stays
//!   queued until its release is decided or it has certainly expired on the
//!   server (`Lease::release_gives_up_at` plus one response timeout: the
//!   lease's `valid_until`, or for a lost lease, a failed acquire's orphan
//!   or an unguarded release, the longest TTL the key may still carry):
//!   then it is counted as a failed release (`outcome="error"`) and logged.
//! - Outcomes are recorded by the lease: orphans in
//!   `shardlock_orphan_releases_total`, the rest in
//!   `shardlock_releases_total`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::Value;
use tokio::time::Instant;

use crate::client::Client;
use crate::lock::{Lease, release_lease_unrecorded};
use crate::metrics::ReleaseOutcome;
use crate::redirect::{Action, classify};
use crate::scripts;
use crate::topology::Topology;

/// Most leases in one node's release batch.
pub(crate) const RELEASE_CHUNK: usize = 500;
/// Most one-by-one (redirected) releases in flight at once.
pub(crate) const SINGLES_IN_FLIGHT: usize = 32;

/// Leases whose background release a worker that died with its runtime
/// left undecided, kept for the next worker (see [`Releases::take_all`]).
pub(crate) type Handover = Arc<Mutex<Vec<Arc<Lease>>>>;

/// Releases waiting or in flight. Every lease handed over is in exactly
/// one of `pending`, `busy`, `singles` or `flying` until it is decided or
/// has certainly expired.
#[derive(Default)]
pub(crate) struct Releases {
    pending: VecDeque<Arc<Lease>>,
    /// Nodes with a release batch in flight, and the leases it carries.
    busy: HashMap<Arc<str>, Vec<Arc<Lease>>>,
    /// Redirected leases waiting for a one-by-one release.
    singles: VecDeque<Arc<Lease>>,
    /// Redirected leases whose one-by-one release is in flight.
    flying: Vec<Arc<Lease>>,
}

/// What a release request in flight brings back.
pub(crate) enum Released {
    /// A node's batch; `failed` is false when the node answered.
    Batch {
        addr: Arc<str>,
        failed: bool,
        /// Leases to try again in the node's next batch.
        again: Vec<Arc<Lease>>,
        /// Leases the node redirected.
        redirected: Vec<Arc<Lease>>,
    },
    /// One redirected lease: decided, or (`again`) to be queued again.
    Single { lease: Arc<Lease>, again: bool },
}

impl Releases {
    pub(crate) fn push(&mut self, lease: Arc<Lease>) {
        self.pending.push_back(lease);
    }

    /// Nothing queued and nothing in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.busy.is_empty()
            && self.singles.is_empty()
            && self.flying.is_empty()
    }

    /// Every lease not yet decided, queued or in flight (the worker is
    /// being dropped with its runtime: its requests in flight are dropped
    /// too, so their leases may still hold our token). A lease whose
    /// request had already deleted its key is released again, finding it
    /// gone (`not_held`).
    pub(crate) fn take_all(&mut self) -> Vec<Arc<Lease>> {
        let mut all: Vec<Arc<Lease>> = self.pending.drain(..).collect();
        all.extend(self.singles.drain(..));
        all.append(&mut self.flying);
        all.extend(self.busy.drain().flat_map(|(_, leases)| leases));
        all
    }

    /// Starts what may start now: a batch for each node that has none in
    /// flight and for which `ready` holds (not backing off), and redirected
    /// releases up to the cap. Leases of unassigned slots and of nodes not
    /// ready stay queued.
    pub(crate) fn start(
        &mut self,
        client: &Client,
        topology: &Topology,
        ready: impl Fn(&str) -> bool,
    ) -> Vec<BoxFuture<'static, Released>> {
        let mut started = Vec::new();
        let now = Instant::now();
        let grace = client.response_timeout();
        let mut batches: Vec<(Arc<str>, Vec<Arc<Lease>>)> = Vec::new();
        let mut keep = VecDeque::new();
        for lease in self.pending.drain(..) {
            if expired(&lease, now, grace) {
                continue;
            }
            let Some(addr) = topology.primary_of_slot(lease.slot).map(|n| n.addr()) else {
                keep.push_back(lease);
                continue;
            };
            if self.busy.contains_key(addr) || !ready(addr) {
                keep.push_back(lease);
                continue;
            }
            match batches.iter_mut().find(|(a, _)| a == addr) {
                Some((_, leases)) if leases.len() < RELEASE_CHUNK => leases.push(lease),
                Some(_) => keep.push_back(lease),
                None => batches.push((addr.clone(), vec![lease])),
            }
        }
        self.pending = keep;
        for (addr, leases) in batches {
            self.busy.insert(addr.clone(), leases.clone());
            started.push(release_on_node(client.clone(), addr, leases).boxed());
        }
        while self.flying.len() < SINGLES_IN_FLIGHT {
            let Some(lease) = self.singles.pop_front() else {
                break;
            };
            if expired(&lease, now, grace) {
                continue;
            }
            self.flying.push(lease.clone());
            started.push(release_one(client.clone(), lease).boxed());
        }
        started
    }

    /// Takes back what a request brought; returns the node and whether its
    /// batch failed, for the caller's backoff.
    pub(crate) fn land(&mut self, released: Released) -> Option<(Arc<str>, bool)> {
        match released {
            Released::Batch {
                addr,
                failed,
                again,
                redirected,
            } => {
                self.busy.remove(&addr);
                self.pending.extend(again);
                self.singles.extend(redirected);
                Some((addr, failed))
            }
            Released::Single { lease, again } => {
                if let Some(i) = self.flying.iter().position(|l| Arc::ptr_eq(l, &lease)) {
                    self.flying.swap_remove(i);
                }
                if again {
                    self.pending.push_back(lease);
                }
                None
            }
        }
    }
}

/// Certainly gone from the server by its TTL: dropped from the queue, and
/// recorded as a release that failed.
fn expired(lease: &Lease, now: Instant, grace: std::time::Duration) -> bool {
    let gone = lease
        .release_gives_up_at()
        .checked_add(grace)
        .is_some_and(|t| now >= t);
    if gone {
        lease.record_release(ReleaseOutcome::Error);
        tracing::debug!("background release not answered before the lease expired by its TTL");
    }
    gone
}

/// One pipeline of `release.lua` calls to `addr`, by SHA1 and then, for
/// those the node did not know, by source.
async fn release_on_node(client: Client, addr: Arc<str>, leases: Vec<Arc<Lease>>) -> Released {
    let deadline = Instant::now() + client.request_timeout();
    let mut redirected = Vec::new();
    let mut todo = leases;
    for eval in [false, true] {
        if todo.is_empty() {
            break;
        }
        let pipeline = release_pipeline(&todo, eval);
        let replies = match client
            .router()
            .send_to_node(&addr, &pipeline, deadline)
            .await
        {
            Ok(replies) => replies,
            Err(action) => {
                if matches!(action, Action::Refresh(_)) {
                    let _ = client.hint_refresh();
                }
                return Released::Batch {
                    addr,
                    failed: true,
                    again: todo,
                    redirected,
                };
            }
        };
        let mut noscript = Vec::new();
        let mut again = Vec::new();
        for (lease, reply) in todo
            .into_iter()
            .zip(replies.into_iter().map(Some).chain(std::iter::repeat(None)))
        {
            let Some(reply) = reply else {
                again.push(lease);
                continue;
            };
            match reply {
                Value::Int(1) => lease.record_release(ReleaseOutcome::Released),
                // Absent, or another holder's: not ours to delete.
                Value::Int(0 | -1) => lease.record_release(ReleaseOutcome::NotHeld),
                other => match classify(&Ok(vec![other])) {
                    Action::NoScript if !eval => noscript.push(lease),
                    Action::Moved { .. } | Action::Ask { .. } => redirected.push(lease),
                    Action::TryAgain | Action::Refresh(_) => again.push(lease),
                    _ => {
                        lease.record_release(ReleaseOutcome::Error);
                        tracing::debug!("background release refused; the lease expires by its TTL");
                    }
                },
            }
        }
        if !again.is_empty() {
            // The node is not serving (CLUSTERDOWN, TRYAGAIN, …): back off.
            let _ = client.hint_refresh();
            again.extend(noscript);
            return Released::Batch {
                addr,
                failed: true,
                again,
                redirected,
            };
        }
        todo = noscript;
    }
    Released::Batch {
        addr,
        failed: false,
        again: todo,
        redirected,
    }
}

/// Releases one redirected lease through the router (which follows MOVED
/// and ASK). Decided (deleted, absent or another holder's) it is done; a
/// release that failed (the key may still hold our token) goes back to
/// the queue (`again`), where it stays until decided or certainly
/// expired, as every background release does. Each failed attempt is
/// recorded as `outcome="error"`.
async fn release_one(client: Client, lease: Arc<Lease>) -> Released {
    // Recorded once, when decided: here, or as an error when the lease
    // leaves the queue expired.
    let again = match release_lease_unrecorded(&client, &lease).await {
        Ok(released) => {
            lease.record_release(if released {
                ReleaseOutcome::Released
            } else {
                ReleaseOutcome::NotHeld
            });
            false
        }
        Err(e) => {
            tracing::debug!(error = %e, "redirected background release failed; queued again");
            true
        }
    };
    Released::Single { lease, again }
}

/// `EVALSHA release 1 key value` (or `EVAL source …`) per lease.
fn release_pipeline(leases: &[Arc<Lease>], eval: bool) -> redis::Pipeline {
    let script = &*scripts::RELEASE;
    let mut pipeline = redis::Pipeline::with_capacity(leases.len());
    for lease in leases {
        let mut cmd = script.invocation(eval);
        cmd.arg(1).arg(&lease.key[..]).arg(lease.release_argv());
        pipeline.add_command(cmd);
    }
    pipeline
}
