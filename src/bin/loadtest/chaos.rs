//! `--chaos`: faults injected at a time into the run, one match arm per
//! kind in [`inject`]. A cluster fault hits the primary that serves key 0
//! (and its slots are watched for the longest gap without an acquire); a
//! client fault hits the last client process.
//!
//! Every fault yields a [`ChaosOutcome`] (for the report) and a fault
//! window on CLOCK_MONOTONIC (for the observer): from just before the fault
//! is injected to when it is over (the injection call returned, or a pause
//! ended).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shardlock::testkit::{TestCluster, TestkitError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::args::ChaosKind;
use crate::observer::LeaseEvent;
use crate::report::ChaosOutcome;
use crate::resource::now_ns;
use crate::workload::{GapTracker, Shared, key_slot_of};

/// What faults can be injected into.
pub(crate) struct Targets<'a> {
    pub(crate) cluster: Option<&'a TestCluster>,
    /// Client processes: (index, pid).
    pub(crate) clients: Vec<(usize, i32)>,
}

/// A fault that was injected.
pub(crate) struct Injected {
    pub(crate) outcome: ChaosOutcome,
    /// Watches the affected slots (in-process workers only).
    pub(crate) tracker: Option<Arc<GapTracker>>,
    /// The affected slots, for a gap computed from events instead.
    pub(crate) slots: Option<Vec<bool>>,
    pub(crate) start_ns: u64,
    pub(crate) end_ns: u64,
    /// A fault that ends later (a pause) ends in this task.
    pub(crate) ending: Option<JoinHandle<()>>,
}

/// Injects one fault of `kind` now.
pub(crate) async fn inject(
    targets: &Targets<'_>,
    shared: &Shared,
    kind: ChaosKind,
    start: Instant,
) -> Injected {
    let at = Instant::now();
    let start_ns = now_ns();
    let mut injected = Injected {
        outcome: ChaosOutcome {
            what: kind.to_string(),
            at_s: (at - start).as_secs_f64(),
            node: String::new(),
            unavailable_s: None,
            error: None,
        },
        tracker: None,
        slots: None,
        start_ns,
        end_ns: start_ns,
        ending: None,
    };
    let result = match kind {
        ChaosKind::Failover | ChaosKind::Kill | ChaosKind::Migrate => match targets.cluster {
            Some(cluster) => cluster_fault(cluster, shared, kind, &mut injected).await,
            None => Err("needs the embedded cluster".to_owned()),
        },
        ChaosKind::PauseClient(length) => match targets.clients.last() {
            Some(&(index, pid)) => {
                injected.outcome.node = format!("client process {index} (pid {pid})");
                match kill(Pid::from_raw(pid), Signal::SIGSTOP) {
                    Ok(()) => {
                        injected.end_ns = start_ns + length.as_nanos() as u64;
                        injected.ending = Some(tokio::spawn(async move {
                            tokio::time::sleep(length).await;
                            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                        }));
                        Ok(())
                    }
                    Err(e) => Err(format!("SIGSTOP: {e}")),
                }
            }
            None => Err("needs --processes 2 or more".to_owned()),
        },
    };
    if injected.ending.is_none() {
        injected.end_ns = now_ns();
    }
    if let Err(e) = result {
        injected.outcome.error = Some(e);
    }
    injected
}

/// A fault on the primary of key 0's slot.
async fn cluster_fault(
    cluster: &TestCluster,
    shared: &Shared,
    kind: ChaosKind,
    injected: &mut Injected,
) -> Result<(), String> {
    let slot = key_slot_of(0);
    let primary = cluster
        .primary_of_slot(slot)
        .await
        .map_err(|e| e.to_string())?;
    injected.outcome.node = primary.clone();
    // The slots the fault can make unavailable: all of the primary's for a
    // failover or kill, the one moved slot for a migration.
    let mut slots = vec![false; shardlock::SLOT_COUNT as usize];
    if let ChaosKind::Migrate = kind {
        slots[slot as usize] = true;
    } else {
        let topology = shared.mgr.client().topology();
        for s in 0..shardlock::SLOT_COUNT {
            if topology.primary_of_slot(s).map(|n| n.addr().as_ref()) == Some(primary.as_str()) {
                slots[s as usize] = true;
            }
        }
    }
    let tracker = Arc::new(GapTracker::new(slots.clone(), Instant::now()));
    shared
        .gaps
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(tracker.clone());
    shared.watching_gaps.store(true, Relaxed);
    injected.tracker = Some(tracker);
    injected.slots = Some(slots);
    let result: Result<(), TestkitError> = match kind {
        ChaosKind::Failover => cluster.failover(&primary).await.map(|_| ()),
        ChaosKind::Kill => cluster.kill(&primary),
        ChaosKind::Migrate => match cluster.primaries().await {
            Ok(primaries) => match primaries.into_iter().find(|p| *p != primary) {
                Some(target) => cluster.migrate_slot(slot, &target).await,
                None => Ok(()),
            },
            Err(e) => Err(e),
        },
        ChaosKind::PauseClient(_) => Ok(()),
    };
    result.map_err(|e| e.to_string())
}

/// The longest time without a granted lease on `slots`, from `since` to
/// `until` (ns), from the observer's events (for workers in other
/// processes, whose acquires no in-process tracker sees).
pub(crate) fn longest_gap_ns(leases: &[LeaseEvent], slots: &[bool], since: u64, until: u64) -> u64 {
    let mut granted: Vec<u64> = leases
        .iter()
        .filter(|l| slots[key_slot_of(l.key) as usize])
        .map(|l| l.acquire_replied)
        .filter(|&t| t >= since && t <= until)
        .collect();
    granted.sort_unstable();
    let mut last = since;
    let mut longest = 0;
    for t in granted.into_iter().chain([until]) {
        longest = longest.max(t.saturating_sub(last));
        last = t;
    }
    longest
}
