//! The outside observer's checker: from the events every holder recorded
//! (leases and their writes to the protected resource, on one
//! CLOCK_MONOTONIC shared by every process on the host), the lock keys
//! left in the cluster, and the fault windows, it computes what the safety
//! claim is about. No I/O: the events come in as values (JSON lines are
//! parsed by [`LeaseEvent::from_json`] / [`WriteEvent::from_json`]).
//!
//! Definitions (one key at a time; B *supersedes* A when
//! `A.acquire_replied < B.acquire_sent`, so A's acquire returned before
//! B's was sent):
//! - `overlapping_holds`: pairs of leases of different holders whose hold
//!   intervals `[acquire_replied, max(end, last write sent)]` intersect.
//! - `stale_writes_rejected`: writes the resource refused that are not
//!   `fresh_writes_rejected`: fencing stopped them.
//! - `stale_writes_accepted` (the safety claim says 0): accepted writes of
//!   a lease A after the resource had received (lower `seq`) a write of a
//!   lease B that supersedes A.
//! - `fresh_writes_rejected`: refused writes of a lease B whose refusal
//!   came from a higher token of a lease that B supersedes (fencing order
//!   inverted).
//! - `lost_leases_reported`: leases whose guard reported the loss.
//! - `unreported_losses`: writes of A sent after a lease B superseding A
//!   was granted (`B.acquire_replied < write.sent`) while A's guard had not
//!   reported a loss at A's check.
//! - `orphaned_leases` / `unreleased_leases`: lock keys left after the run
//!   whose fence belongs to no granted lease of that key (a failed acquire's
//!   leftover) / to one (a release that did not reach the server); a key
//!   whose value carries no fence (unfenced modes) cannot be attributed and
//!   is counted in `unattributed_leftovers`.
//!
//! Per fault window, an item counts when its time falls in
//! `[start, counted_until]`: an overlap by the later start of its pair, a
//! write by its send time, a loss by its report time, a lease by its grant. Leftovers are not
//! timed and are only counted overall.
//!
//! What it does not see: writes that never returned (timed out) have no
//! `seq` and are left out of the resource order; a process killed before it
//! wrote its events contributes none.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use serde_json::{Value, json};

/// One lease, named by the process, the worker (global number) and the
/// worker's count of leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LeaseId {
    pub(crate) process: u32,
    pub(crate) worker: u32,
    pub(crate) n: u64,
}

impl LeaseId {
    /// `p<process>.w<worker>.<n>`: also the lease id written to the resource.
    pub(crate) fn label(&self) -> String {
        format!("p{}.w{}.{}", self.process, self.worker, self.n)
    }

    fn holder(&self) -> (u32, u32) {
        (self.process, self.worker)
    }
}

/// A granted lease; times are CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseEvent {
    pub(crate) id: LeaseId,
    pub(crate) key: u64,
    pub(crate) fence: Option<u64>,
    pub(crate) acquire_sent: u64,
    pub(crate) acquire_replied: u64,
    /// Release about to be sent, or the loss noticed (the holder stops).
    pub(crate) end: u64,
    /// When the guard first reported the loss (`is_lost()` or `lost()`).
    pub(crate) lost: Option<u64>,
}

/// What the resource said to one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    Accepted {
        seq: u64,
    },
    Rejected {
        seq: u64,
        highest: u64,
    },
    /// No answer (timeout or error): not in the resource's order.
    Failed,
}

/// One write to the protected resource inside a lease's critical section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteEvent {
    pub(crate) lease: LeaseId,
    pub(crate) key: u64,
    pub(crate) token: u64,
    /// The guard check before the work (the guard was then not lost and
    /// within `valid_until`, else no write is made).
    pub(crate) check: u64,
    pub(crate) sent: u64,
    pub(crate) replied: Option<u64>,
    pub(crate) outcome: WriteOutcome,
}

/// A fault: its name, when it started and ended, and until when its
/// effects are counted (its end plus a lease's TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FaultWindow {
    pub(crate) name: String,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) counted_until: u64,
}

/// A lock key left in the cluster after the run: its key number and the
/// fence its value carries (`<token>.<fence>`), if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leftover {
    pub(crate) key: u64,
    pub(crate) fence: Option<u64>,
}

/// The checker's counts, overall or for one fault window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Findings {
    pub(crate) leases: u64,
    pub(crate) writes: u64,
    pub(crate) failed_writes: u64,
    pub(crate) overlapping_holds: u64,
    pub(crate) stale_writes_rejected: u64,
    pub(crate) stale_writes_accepted: u64,
    pub(crate) fresh_writes_rejected: u64,
    pub(crate) lost_leases_reported: u64,
    pub(crate) unreported_losses: u64,
    /// Overall only (`None` in a window).
    pub(crate) orphaned_leases: Option<u64>,
    pub(crate) unreleased_leases: Option<u64>,
    pub(crate) unattributed_leftovers: Option<u64>,
    /// Fault start → first / last loss report in the window, ns.
    pub(crate) first_loss_after: Option<u64>,
    pub(crate) last_loss_after: Option<u64>,
}

/// Overall findings, the keys with any finding, and one per fault window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) overall: Findings,
    /// Keys with a non-zero overlap, stale or fresh write or unreported
    /// loss (at most [`MAX_KEYS_LISTED`]).
    pub(crate) keys: BTreeMap<u64, Findings>,
    pub(crate) windows: Vec<(FaultWindow, Findings)>,
}

/// The most keys listed one by one in a verdict.
pub(crate) const MAX_KEYS_LISTED: usize = 20;

/// Which count an item adds to, and at which time it happened.
#[derive(Clone, Copy)]
enum Item {
    Overlap,
    StaleRejected,
    StaleAccepted,
    FreshRejected,
    Lost,
    Unreported,
}

impl Findings {
    fn add(&mut self, item: Item) {
        let counter = match item {
            Item::Overlap => &mut self.overlapping_holds,
            Item::StaleRejected => &mut self.stale_writes_rejected,
            Item::StaleAccepted => &mut self.stale_writes_accepted,
            Item::FreshRejected => &mut self.fresh_writes_rejected,
            Item::Lost => &mut self.lost_leases_reported,
            Item::Unreported => &mut self.unreported_losses,
        };
        *counter += 1;
    }

    fn any_violation(&self) -> bool {
        self.overlapping_holds
            + self.stale_writes_rejected
            + self.stale_writes_accepted
            + self.fresh_writes_rejected
            + self.unreported_losses
            > 0
    }
}

/// Runs every check.
pub(crate) fn check(
    leases: &[LeaseEvent],
    writes: &[WriteEvent],
    windows: &[FaultWindow],
    leftovers: &[Leftover],
) -> Verdict {
    let mut verdict = Verdict {
        windows: windows
            .iter()
            .map(|w| (w.clone(), Findings::default()))
            .collect(),
        ..Verdict::default()
    };
    let mut per_key: HashMap<u64, Findings> = HashMap::new();
    let mut record = |key: u64, item: Item, at: u64, verdict: &mut Verdict| {
        verdict.overall.add(item);
        per_key.entry(key).or_default().add(item);
        for (window, findings) in &mut verdict.windows {
            if (window.start..=window.counted_until).contains(&at) {
                findings.add(item);
                if let Item::Lost = item {
                    let after = at - window.start;
                    findings.first_loss_after =
                        Some(findings.first_loss_after.map_or(after, |f| f.min(after)));
                    findings.last_loss_after =
                        Some(findings.last_loss_after.map_or(after, |l| l.max(after)));
                }
            }
        }
    };

    let by_id: HashMap<LeaseId, &LeaseEvent> = leases.iter().map(|l| (l.id, l)).collect();
    let mut last_write_sent: HashMap<LeaseId, u64> = HashMap::new();
    for w in writes {
        let at = last_write_sent.entry(w.lease).or_insert(w.sent);
        *at = (*at).max(w.sent);
    }
    let mut leases_by_key: HashMap<u64, Vec<&LeaseEvent>> = HashMap::new();
    for lease in leases {
        leases_by_key.entry(lease.key).or_default().push(lease);
    }
    let mut writes_by_key: HashMap<u64, Vec<&WriteEvent>> = HashMap::new();
    for w in writes {
        writes_by_key.entry(w.key).or_default().push(w);
    }
    verdict.overall.leases = leases.len() as u64;
    verdict.overall.writes = writes.len() as u64;
    verdict.overall.failed_writes = writes
        .iter()
        .filter(|w| w.outcome == WriteOutcome::Failed)
        .count() as u64;

    for (window, findings) in &mut verdict.windows {
        let within = |t: u64| (window.start..=window.counted_until).contains(&t);
        findings.leases = leases.iter().filter(|l| within(l.acquire_replied)).count() as u64;
        findings.writes = writes.iter().filter(|w| within(w.sent)).count() as u64;
        findings.failed_writes = writes
            .iter()
            .filter(|w| within(w.sent) && w.outcome == WriteOutcome::Failed)
            .count() as u64;
    }
    for lease in leases {
        if let Some(at) = lease.lost {
            record(lease.key, Item::Lost, at, &mut verdict);
        }
    }

    for (&key, key_leases) in &mut leases_by_key {
        // Overlaps: sweep by start, keeping the ends of intervals still open.
        key_leases.sort_by_key(|l| (l.acquire_replied, l.id));
        let mut open: BinaryHeap<Reverse<(u64, (u32, u32))>> = BinaryHeap::new();
        for lease in key_leases.iter() {
            let start = lease.acquire_replied;
            let end = lease
                .end
                .max(last_write_sent.get(&lease.id).copied().unwrap_or(0));
            while open.peek().is_some_and(|Reverse((e, _))| *e < start) {
                open.pop();
            }
            let others = open
                .iter()
                .filter(|Reverse((_, holder))| *holder != lease.id.holder())
                .count();
            for _ in 0..others {
                record(key, Item::Overlap, start, &mut verdict);
            }
            open.push(Reverse((end, lease.id.holder())));
        }
    }

    for (&key, key_writes) in &mut writes_by_key {
        // Leases of this key by acquire_sent, with the suffix minimum of
        // acquire_replied: the earliest grant among leases sent after t.
        let mut granted: Vec<(u64, u64)> = leases_by_key
            .get(&key)
            .map(|ls| {
                ls.iter()
                    .map(|l| (l.acquire_sent, l.acquire_replied))
                    .collect()
            })
            .unwrap_or_default();
        granted.sort_unstable();
        let mut suffix_min = vec![u64::MAX; granted.len() + 1];
        for i in (0..granted.len()).rev() {
            suffix_min[i] = suffix_min[i + 1].min(granted[i].1);
        }
        let earliest_grant_sent_after = |t: u64| {
            let from = granted.partition_point(|&(sent, _)| sent <= t);
            suffix_min[from]
        };
        for w in key_writes.iter() {
            let Some(a) = by_id.get(&w.lease) else {
                continue;
            };
            if earliest_grant_sent_after(a.acquire_replied) < w.sent {
                record(key, Item::Unreported, w.sent, &mut verdict);
            }
        }

        // The resource's order.
        let mut ordered: Vec<(u64, &WriteEvent)> = key_writes
            .iter()
            .filter_map(|w| match w.outcome {
                WriteOutcome::Accepted { seq } | WriteOutcome::Rejected { seq, .. } => {
                    Some((seq, *w))
                }
                WriteOutcome::Failed => None,
            })
            .collect();
        ordered.sort_by_key(|(seq, _)| *seq);
        // The latest acquire_sent among leases with a write received so far,
        // and the accepted write that holds the highest token.
        let mut latest_sent: Option<u64> = None;
        let mut highest: Option<(u64, LeaseId)> = None;
        for (_, w) in ordered {
            let Some(a) = by_id.get(&w.lease) else {
                continue;
            };
            match w.outcome {
                WriteOutcome::Accepted { .. } => {
                    if latest_sent.is_some_and(|sent| a.acquire_replied < sent) {
                        record(key, Item::StaleAccepted, w.sent, &mut verdict);
                    }
                    if highest.is_none_or(|(t, _)| w.token >= t) {
                        highest = Some((w.token, w.lease));
                    }
                }
                WriteOutcome::Rejected { .. } => {
                    let superseded_holder = highest
                        .and_then(|(_, id)| by_id.get(&id))
                        .is_some_and(|h| h.acquire_replied < a.acquire_sent);
                    let item = if superseded_holder {
                        Item::FreshRejected
                    } else {
                        Item::StaleRejected
                    };
                    record(key, item, w.sent, &mut verdict);
                }
                WriteOutcome::Failed => {}
            }
            latest_sent = Some(latest_sent.map_or(a.acquire_sent, |s| s.max(a.acquire_sent)));
        }
    }

    let granted: HashSet<(u64, u64)> = leases
        .iter()
        .filter_map(|l| l.fence.map(|f| (l.key, f)))
        .collect();
    let (mut orphaned, mut unreleased, mut unattributed) = (0, 0, 0);
    for left in leftovers {
        match left.fence {
            Some(fence) if granted.contains(&(left.key, fence)) => unreleased += 1,
            Some(_) => orphaned += 1,
            None => unattributed += 1,
        }
    }
    verdict.overall.orphaned_leases = Some(orphaned);
    verdict.overall.unreleased_leases = Some(unreleased);
    verdict.overall.unattributed_leftovers = Some(unattributed);

    let mut listed: Vec<(u64, Findings)> = per_key
        .into_iter()
        .filter(|(_, f)| f.any_violation())
        .collect();
    listed.sort_by_key(|(key, _)| *key);
    verdict.keys = listed.into_iter().take(MAX_KEYS_LISTED).collect();
    verdict
}

impl Findings {
    /// The JSON object, with the field names the README documents.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "leases": self.leases,
            "writes": self.writes,
            "failed_writes": self.failed_writes,
            "overlapping_holds": self.overlapping_holds,
            "stale_writes_rejected": self.stale_writes_rejected,
            "stale_writes_accepted": self.stale_writes_accepted,
            "fresh_writes_rejected": self.fresh_writes_rejected,
            "lost_leases_reported": self.lost_leases_reported,
            "unreported_losses": self.unreported_losses,
            "orphaned_leases": self.orphaned_leases,
            "unreleased_leases": self.unreleased_leases,
            "unattributed_leftovers": self.unattributed_leftovers,
            "first_loss_after_s": self.first_loss_after.map(|ns| ns as f64 / 1e9),
            "last_loss_after_s": self.last_loss_after.map(|ns| ns as f64 / 1e9),
        })
    }
}

impl LeaseEvent {
    /// One JSON line.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "lease": [self.id.process, self.id.worker, self.id.n],
            "key": self.key,
            "fence": self.fence,
            "acquire_sent": self.acquire_sent,
            "acquire_replied": self.acquire_replied,
            "end": self.end,
            "lost": self.lost,
        })
    }

    pub(crate) fn from_json(v: &Value) -> Option<LeaseEvent> {
        Some(LeaseEvent {
            id: lease_id(&v["lease"])?,
            key: v["key"].as_u64()?,
            fence: v["fence"].as_u64(),
            acquire_sent: v["acquire_sent"].as_u64()?,
            acquire_replied: v["acquire_replied"].as_u64()?,
            end: v["end"].as_u64()?,
            lost: v["lost"].as_u64(),
        })
    }
}

impl WriteEvent {
    /// One JSON line.
    pub(crate) fn to_json(&self) -> Value {
        let (outcome, seq, highest) = match self.outcome {
            WriteOutcome::Accepted { seq } => ("accepted", Some(seq), None),
            WriteOutcome::Rejected { seq, highest } => ("rejected", Some(seq), Some(highest)),
            WriteOutcome::Failed => ("failed", None, None),
        };
        json!({
            "write": [self.lease.process, self.lease.worker, self.lease.n],
            "key": self.key,
            "token": self.token,
            "check": self.check,
            "sent": self.sent,
            "replied": self.replied,
            "outcome": outcome,
            "seq": seq,
            "highest": highest,
        })
    }

    pub(crate) fn from_json(v: &Value) -> Option<WriteEvent> {
        let outcome = match v["outcome"].as_str()? {
            "accepted" => WriteOutcome::Accepted {
                seq: v["seq"].as_u64()?,
            },
            "rejected" => WriteOutcome::Rejected {
                seq: v["seq"].as_u64()?,
                highest: v["highest"].as_u64()?,
            },
            "failed" => WriteOutcome::Failed,
            _ => return None,
        };
        Some(WriteEvent {
            lease: lease_id(&v["write"])?,
            key: v["key"].as_u64()?,
            token: v["token"].as_u64()?,
            check: v["check"].as_u64()?,
            sent: v["sent"].as_u64()?,
            replied: v["replied"].as_u64(),
            outcome,
        })
    }
}

fn lease_id(v: &Value) -> Option<LeaseId> {
    let parts = v.as_array()?;
    match parts.as_slice() {
        [p, w, n] => Some(LeaseId {
            process: u32::try_from(p.as_u64()?).ok()?,
            worker: u32::try_from(w.as_u64()?).ok()?,
            n: n.as_u64()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(process: u32, worker: u32, n: u64) -> LeaseId {
        LeaseId { process, worker, n }
    }

    /// A lease of `key`: sent at `sent`, granted at `sent + 1`, ended at `end`.
    fn lease(who: LeaseId, key: u64, fence: u64, sent: u64, end: u64) -> LeaseEvent {
        LeaseEvent {
            id: who,
            key,
            fence: Some(fence),
            acquire_sent: sent,
            acquire_replied: sent + 1,
            end,
            lost: None,
        }
    }

    fn write(who: LeaseId, key: u64, token: u64, sent: u64, outcome: WriteOutcome) -> WriteEvent {
        WriteEvent {
            lease: who,
            key,
            token,
            check: sent.saturating_sub(1),
            sent,
            replied: Some(sent + 1),
            outcome,
        }
    }

    fn accepted(seq: u64) -> WriteOutcome {
        WriteOutcome::Accepted { seq }
    }

    fn rejected(seq: u64, highest: u64) -> WriteOutcome {
        WriteOutcome::Rejected { seq, highest }
    }

    #[test]
    fn sequential_leases_have_no_finding() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        let leases = [lease(a, 7, 10, 100, 200), lease(b, 7, 11, 300, 400)];
        let writes = [
            write(a, 7, 10, 150, accepted(1)),
            write(b, 7, 11, 350, accepted(2)),
        ];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.leases, 2);
        assert_eq!(v.overall.writes, 2);
        assert_eq!(v.overall.overlapping_holds, 0);
        assert_eq!(v.overall.stale_writes_rejected, 0);
        assert_eq!(v.overall.stale_writes_accepted, 0);
        assert_eq!(v.overall.fresh_writes_rejected, 0);
        assert_eq!(v.overall.unreported_losses, 0);
        assert!(v.keys.is_empty());
    }

    #[test]
    fn overlapping_holds_count_pairs_of_different_holders() {
        let (a, b, c) = (id(0, 0, 0), id(1, 1, 0), id(1, 2, 0));
        // a holds [101, 500]; b [201, 300] and c [251, 260] start inside it;
        // c also overlaps b: three pairs. Key 8 is independent.
        let leases = [
            lease(a, 7, 1, 100, 500),
            lease(b, 7, 2, 200, 300),
            lease(c, 7, 3, 250, 260),
            lease(id(0, 0, 1), 8, 4, 250, 260),
        ];
        let v = check(&leases, &[], &[], &[]);
        assert_eq!(v.overall.overlapping_holds, 3);
        assert_eq!(v.keys[&7].overlapping_holds, 3);
        assert!(!v.keys.contains_key(&8));
    }

    #[test]
    fn a_write_after_the_end_extends_the_hold() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        // a ended at 200 but wrote at 450, after b was granted at 301.
        let leases = [lease(a, 7, 1, 100, 200), lease(b, 7, 2, 300, 400)];
        let writes = [write(a, 7, 1, 450, accepted(1))];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.overlapping_holds, 1);
    }

    #[test]
    fn fencing_rejecting_a_superseded_write_is_stale_rejected() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        // a is granted at 101, stalls, b is sent at 300 (supersedes a) and
        // writes first; a's late write is refused.
        let leases = [lease(a, 7, 10, 100, 900), lease(b, 7, 11, 300, 400)];
        let writes = [
            write(b, 7, 11, 350, accepted(1)),
            write(a, 7, 10, 800, rejected(2, 11)),
        ];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.stale_writes_rejected, 1);
        assert_eq!(v.overall.stale_writes_accepted, 0);
        assert_eq!(v.overall.fresh_writes_rejected, 0);
        // a wrote at 800 after b was granted (301) without reporting a loss.
        assert_eq!(v.overall.unreported_losses, 1);
    }

    #[test]
    fn an_accepted_write_after_a_superseding_one_is_stale_accepted() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        // Without fencing (or with tokens inverted) the resource took a's
        // late write after b's.
        let leases = [lease(a, 7, 10, 100, 900), lease(b, 7, 9, 300, 400)];
        let writes = [
            write(b, 7, 9, 350, accepted(1)),
            write(a, 7, 10, 800, accepted(2)),
        ];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.stale_writes_accepted, 1);
        assert_eq!(v.keys[&7].stale_writes_accepted, 1);
        // An accepted write before the superseding one is fine.
        let early = [
            write(a, 7, 10, 150, accepted(1)),
            write(b, 7, 11, 350, accepted(2)),
        ];
        assert_eq!(
            check(&leases, &early, &[], &[])
                .overall
                .stale_writes_accepted,
            0
        );
    }

    #[test]
    fn a_superseding_write_refused_for_an_older_higher_token_is_fresh_rejected() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        // Clock skew: b supersedes a but got a lower token.
        let leases = [lease(a, 7, 50, 100, 200), lease(b, 7, 40, 300, 400)];
        let writes = [
            write(a, 7, 50, 150, accepted(1)),
            write(b, 7, 40, 350, rejected(2, 50)),
        ];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.fresh_writes_rejected, 1);
        assert_eq!(v.overall.stale_writes_rejected, 0);
    }

    #[test]
    fn a_write_checked_after_the_loss_report_is_not_unreported() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        // a wrote before b was granted: no unreported loss even though b
        // supersedes a.
        let mut la = lease(a, 7, 10, 100, 280);
        la.lost = Some(270);
        let leases = [la, lease(b, 7, 11, 300, 400)];
        let writes = [write(a, 7, 10, 250, accepted(1))];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.unreported_losses, 0);
        assert_eq!(v.overall.lost_leases_reported, 1);
    }

    #[test]
    fn fault_windows_count_their_items_and_time_the_loss_reports() {
        let (a, b, c) = (id(0, 0, 0), id(1, 1, 0), id(1, 2, 0));
        let mut la = lease(a, 7, 10, 100, 900);
        la.lost = Some(1_300);
        let mut lc = lease(c, 9, 5, 100, 200);
        lc.lost = Some(1_100);
        let leases = [la, lease(b, 7, 11, 300, 400), lc];
        let writes = [
            write(b, 7, 11, 350, accepted(1)),
            write(a, 7, 10, 800, rejected(2, 11)),
        ];
        let windows = [
            FaultWindow {
                name: "pause-client".into(),
                start: 700,
                end: 1_000,
                counted_until: 1_500,
            },
            FaultWindow {
                name: "failover".into(),
                start: 2_000,
                end: 2_100,
                counted_until: 3_000,
            },
        ];
        let v = check(&leases, &writes, &windows, &[]);
        let (_, pause) = &v.windows[0];
        assert_eq!(pause.stale_writes_rejected, 1);
        assert_eq!(pause.unreported_losses, 1);
        assert_eq!(pause.lost_leases_reported, 2);
        assert_eq!(pause.first_loss_after, Some(400));
        assert_eq!(pause.last_loss_after, Some(600));
        assert_eq!(pause.overlapping_holds, 0); // the overlap began at 301
        assert_eq!((pause.leases, pause.writes), (0, 1));
        assert_eq!(pause.orphaned_leases, None);
        let (_, failover) = &v.windows[1];
        assert_eq!(*failover, Findings::default());
        assert_eq!(v.overall.overlapping_holds, 1);
    }

    #[test]
    fn leftovers_are_orphaned_unreleased_or_unattributed() {
        let leases = [lease(id(0, 0, 0), 7, 10, 100, 200)];
        let leftovers = [
            Leftover {
                key: 7,
                fence: Some(10),
            }, // granted: a release that did not land
            Leftover {
                key: 7,
                fence: Some(12),
            }, // never granted: a failed acquire
            Leftover {
                key: 8,
                fence: Some(10),
            }, // fence 10 was granted on key 7 only
            Leftover {
                key: 9,
                fence: None,
            },
        ];
        let v = check(&leases, &[], &[], &leftovers);
        assert_eq!(v.overall.unreleased_leases, Some(1));
        assert_eq!(v.overall.orphaned_leases, Some(2));
        assert_eq!(v.overall.unattributed_leftovers, Some(1));
    }

    #[test]
    fn failed_writes_are_counted_but_not_ordered() {
        let (a, b) = (id(0, 0, 0), id(1, 1, 0));
        let leases = [lease(a, 7, 10, 100, 900), lease(b, 7, 11, 300, 400)];
        let writes = [
            write(b, 7, 11, 350, accepted(1)),
            write(a, 7, 10, 800, WriteOutcome::Failed),
        ];
        let v = check(&leases, &writes, &[], &[]);
        assert_eq!(v.overall.failed_writes, 1);
        assert_eq!(
            v.overall.stale_writes_rejected + v.overall.stale_writes_accepted,
            0
        );
    }

    #[test]
    fn events_round_trip_through_json_lines() {
        let mut l = lease(id(3, 4, 5), 7, 10, 100, 200);
        l.lost = Some(150);
        assert_eq!(LeaseEvent::from_json(&l.to_json()), Some(l.clone()));
        for outcome in [accepted(3), rejected(4, 11), WriteOutcome::Failed] {
            let w = write(id(3, 4, 5), 7, 10, 120, outcome);
            assert_eq!(WriteEvent::from_json(&w.to_json()), Some(w));
        }
        assert_eq!(LeaseEvent::from_json(&json!({"lease": [1, 2]})), None);
        assert_eq!(id(1, 2, 3).label(), "p1.w2.3");
    }
}
