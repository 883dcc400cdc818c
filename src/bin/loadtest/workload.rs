//! The workers: each draws key(s), takes the lock(s) the way `--mode` says,
//! holds, releases, and records what happened in its own [`Tally`]. With
//! `--rate` each worker follows a fixed schedule of intended start times and
//! latencies count from those (open loop: a stall shows up as latency of the
//! cycles that should have started during it, not as fewer samples).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use shardlock::{
    Error, LockGuard, LockGuards, LockManager, RedlockGuard, RedlockManager, key_slot,
};
use tokio::time::Instant;

use crate::args::{Args, Distribution, Mode};
use crate::observer::{LeaseEvent, LeaseId, WriteEvent, WriteOutcome};
use crate::resource::{Resource, now_ns};
use crate::safety::Safety;

/// Prefix of every lock key the load test takes.
pub(crate) const NAMESPACE: &str = "loadtest:";

/// The user key for key number `n`.
pub(crate) fn key_name(n: u64) -> String {
    format!("k:{n}")
}

/// The key number of a user key made by [`key_name`].
pub(crate) fn key_number(key: &[u8]) -> Option<u64> {
    std::str::from_utf8(key.strip_prefix(b"k:")?)
        .ok()?
        .parse()
        .ok()
}

/// The slot that key number `n`'s lock lives in.
pub(crate) fn key_slot_of(n: u64) -> u16 {
    key_slot(format!("{NAMESPACE}{}", key_name(n)).as_bytes())
}

/// What one worker saw; merged at the end (and for live progress).
pub(crate) struct Tally {
    pub(crate) cycles: u64,
    pub(crate) acquired: u64,
    pub(crate) failed_acquires: u64,
    pub(crate) lost_leases: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    /// Intended start → acquire returned, successful acquires, µs.
    pub(crate) acquire: Histogram<u64>,
    /// Intended start → release returned, µs.
    pub(crate) cycle: Histogram<u64>,
    /// Acquire returned → release about to be sent, µs.
    pub(crate) hold: Histogram<u64>,
    /// Per second of the run (index = whole seconds since the start), for
    /// the plot; not merged by [`Tally::merge`], which live progress calls
    /// often, but by [`Shared::timeline`] once at the end.
    pub(crate) seconds: Vec<Second>,
    /// The observer's events (recorded when [`Shared::observe`] is set);
    /// collected once at the end, never merged.
    pub(crate) leases: Vec<LeaseEvent>,
    pub(crate) writes: Vec<WriteEvent>,
}

/// One second of one worker's run.
pub(crate) struct Second {
    /// Cycles that completed (release returned) in this second.
    pub(crate) cycles: u64,
    /// Acquire latency, µs, of the acquires that returned in this second.
    pub(crate) acquire: Histogram<u64>,
}

impl Second {
    pub(crate) fn new() -> Second {
        Second {
            cycles: 0,
            // Two digits are plenty for a plot and keep the many small
            // histograms small.
            acquire: Histogram::new(2).expect("2 significant digits is valid"),
        }
    }
}

impl Tally {
    pub(crate) fn new() -> Tally {
        let histogram = || Histogram::new(3).expect("3 significant digits is valid");
        Tally {
            cycles: 0,
            acquired: 0,
            failed_acquires: 0,
            lost_leases: 0,
            errors: BTreeMap::new(),
            acquire: histogram(),
            cycle: histogram(),
            hold: histogram(),
            seconds: Vec::new(),
            leases: Vec::new(),
            writes: Vec::new(),
        }
    }

    /// This worker's bucket for the second that `at` falls in.
    pub(crate) fn second(&mut self, start: Instant, at: Instant) -> &mut Second {
        let index = at.saturating_duration_since(start).as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::new);
        }
        &mut self.seconds[index]
    }

    pub(crate) fn merge(&mut self, other: &Tally) {
        self.cycles += other.cycles;
        self.acquired += other.acquired;
        self.failed_acquires += other.failed_acquires;
        self.lost_leases += other.lost_leases;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        let _ = self.acquire.add(&other.acquire);
        let _ = self.cycle.add(&other.cycle);
        let _ = self.hold.add(&other.hold);
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.values().sum()
    }

    fn error(&mut self, e: &Error) {
        *self.errors.entry(error_kind(e)).or_default() += 1;
    }
}

/// The variant name of an error, in snake case (`DeadlineExceeded` →
/// `deadline_exceeded`), so errors can be counted by kind.
fn error_kind(e: &Error) -> String {
    let debug = format!("{e:?}");
    let name: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut kind = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            kind.push('_');
        }
        kind.push(c.to_ascii_lowercase());
    }
    kind
}

/// Draws key numbers from `0..keys`.
pub(crate) enum KeyChooser {
    Uniform(u64),
    /// Cumulative weights of keys 0, 1, …; key 0 is the most popular.
    Zipf(Vec<f64>),
}

/// Zipf over more keys than this would need an impractically large table.
const ZIPF_MAX_KEYS: u64 = 20_000_000;

impl KeyChooser {
    pub(crate) fn new(keys: u64, distribution: Distribution) -> Result<KeyChooser, String> {
        match distribution {
            Distribution::Uniform => Ok(KeyChooser::Uniform(keys)),
            Distribution::Zipf(_) if keys > ZIPF_MAX_KEYS => Err(format!(
                "--distribution zipf supports at most {ZIPF_MAX_KEYS} keys"
            )),
            Distribution::Zipf(s) => {
                let mut total = 0.0;
                let cumulative = (1..=keys)
                    .map(|k| {
                        total += (k as f64).powf(-s);
                        total
                    })
                    .collect();
                Ok(KeyChooser::Zipf(cumulative))
            }
        }
    }

    pub(crate) fn draw(&self, rng: &mut fastrand::Rng) -> u64 {
        match self {
            KeyChooser::Uniform(keys) => rng.u64(..*keys),
            KeyChooser::Zipf(cumulative) => {
                let total = cumulative.last().copied().unwrap_or(0.0);
                let target = rng.f64() * total;
                let index = cumulative.partition_point(|&c| c < target);
                index.min(cumulative.len() - 1) as u64
            }
        }
    }
}

/// The longest time without a successful acquire on a set of slots, from
/// the moment tracking starts (a fault) to the end of the run.
pub(crate) struct GapTracker {
    pub(crate) slots: Vec<bool>,
    pub(crate) since: Instant,
    last_success_us: AtomicU64,
    pub(crate) longest_gap_us: AtomicU64,
}

impl GapTracker {
    pub(crate) fn new(slots: Vec<bool>, since: Instant) -> GapTracker {
        GapTracker {
            slots,
            since,
            last_success_us: AtomicU64::new(0),
            longest_gap_us: AtomicU64::new(0),
        }
    }

    fn success(&self, slot: u16, at: Instant) {
        if !self.slots[slot as usize] || at < self.since {
            return;
        }
        let now = (at - self.since).as_micros() as u64;
        let previous = self.last_success_us.fetch_max(now, Relaxed);
        self.longest_gap_us
            .fetch_max(now.saturating_sub(previous), Relaxed);
    }

    /// The open gap at the end of the run counts too.
    pub(crate) fn close(&self, at: Instant) -> Duration {
        let end = at.saturating_duration_since(self.since).as_micros() as u64;
        let last = self.last_success_us.load(Relaxed);
        let longest = self
            .longest_gap_us
            .load(Relaxed)
            .max(end.saturating_sub(last));
        Duration::from_micros(longest)
    }
}

/// Which workers of the run this process runs: `process` numbers the
/// client process (0 without `--processes`), `workers` the global worker
/// numbers (they seed the key choices and the open-loop schedule).
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) process: u32,
    pub(crate) workers: std::ops::Range<usize>,
}

impl Placement {
    /// Every worker, in process 0.
    pub(crate) fn whole(args: &Args) -> Placement {
        Placement {
            process: 0,
            workers: 0..args.workers,
        }
    }

    /// Client process `index`'s share of `workers` (the first
    /// `workers % processes` processes run one more).
    pub(crate) fn share(index: usize, processes: usize, workers: usize) -> Placement {
        let base = workers / processes;
        let extra = workers % processes;
        let first = index * base + index.min(extra);
        let count = base + usize::from(index < extra);
        Placement {
            process: index as u32,
            workers: first..first + count,
        }
    }
}

/// What the workers share.
pub(crate) struct Shared {
    pub(crate) mgr: LockManager,
    /// Set for the Redlock phase: locks are taken on a majority of these
    /// instances instead of through `mgr`.
    pub(crate) redlock: Option<RedlockManager>,
    pub(crate) args: Args,
    pub(crate) keys: KeyChooser,
    pub(crate) safety: Safety,
    pub(crate) tallies: Vec<Mutex<Tally>>,
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    pub(crate) stop: AtomicBool,
    /// Fault windows being watched (set by the chaos task).
    pub(crate) gaps: Mutex<Vec<Arc<GapTracker>>>,
    pub(crate) watching_gaps: AtomicBool,
    pub(crate) placement: Placement,
    /// The protected resource (`--resource`): holders write to it.
    pub(crate) resource: Option<Resource>,
    /// Record the observer's events (leases, writes).
    pub(crate) observe: bool,
}

impl Shared {
    /// The state of a run that starts now and lasts `args.duration`; locks
    /// go through `redlock` when given, else through `mgr`.
    pub(crate) fn start(
        mgr: LockManager,
        redlock: Option<RedlockManager>,
        keys: KeyChooser,
        args: &Args,
    ) -> Arc<Shared> {
        Shared::start_at(
            mgr,
            redlock,
            keys,
            args,
            Instant::now(),
            Placement::whole(args),
            None,
            false,
        )
    }

    /// As [`Shared::start`], for the workers of `placement`, starting at
    /// `start`, writing to `resource` when given and recording events when
    /// `observe`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_at(
        mgr: LockManager,
        redlock: Option<RedlockManager>,
        keys: KeyChooser,
        args: &Args,
        start: Instant,
        placement: Placement,
        resource: Option<Resource>,
        observe: bool,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            mgr,
            redlock,
            keys,
            safety: Safety::new(),
            tallies: placement
                .workers
                .clone()
                .map(|_| Mutex::new(Tally::new()))
                .collect(),
            placement,
            resource,
            observe,
            start,
            end: start + args.duration,
            stop: AtomicBool::new(false),
            gaps: Mutex::new(Vec::new()),
            watching_gaps: AtomicBool::new(false),
            args: args.clone(),
        })
    }

    /// Every worker's events, taken out of the tallies.
    pub(crate) fn take_events(&self) -> (Vec<LeaseEvent>, Vec<WriteEvent>) {
        let (mut leases, mut writes) = (Vec::new(), Vec::new());
        for tally in &self.tallies {
            let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            leases.append(&mut tally.leases);
            writes.append(&mut tally.writes);
        }
        (leases, writes)
    }

    /// Spawns the run's workers.
    pub(crate) fn spawn_workers(self: &Arc<Shared>) -> tokio::task::JoinSet<()> {
        let mut workers = tokio::task::JoinSet::new();
        for local in 0..self.tallies.len() {
            workers.spawn(worker(self.clone(), local));
        }
        workers
    }

    /// All tallies merged, as of now.
    pub(crate) fn total(&self) -> Tally {
        let mut total = Tally::new();
        for tally in &self.tallies {
            total.merge(&tally.lock().unwrap_or_else(|p| p.into_inner()));
        }
        total
    }

    /// Every worker's per-second buckets merged, as of now.
    pub(crate) fn timeline(&self) -> Vec<Second> {
        let mut merged: Vec<Second> = Vec::new();
        for tally in &self.tallies {
            let tally = tally.lock().unwrap_or_else(|p| p.into_inner());
            if merged.len() < tally.seconds.len() {
                merged.resize_with(tally.seconds.len(), Second::new);
            }
            for (into, from) in merged.iter_mut().zip(&tally.seconds) {
                into.cycles += from.cycles;
                let _ = into.acquire.add(&from.acquire);
            }
        }
        merged
    }

    fn record_success(&self, keys: &[u64], at: Instant) {
        if !self.watching_gaps.load(Relaxed) {
            return;
        }
        let gaps = self.gaps.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for &n in keys {
            let slot = key_slot_of(n);
            for gap in &gaps {
                gap.success(slot, at);
            }
        }
    }
}

enum Held {
    One(LockGuard),
    Many(LockGuards),
    Redlock(RedlockGuard),
}

impl Held {
    /// Not lost, and the validity deadline still ahead: what a holder
    /// checks before it acts on its lease.
    fn valid_now(&self) -> bool {
        match self {
            Held::One(guard) => !guard.is_lost() && guard.valid_until() > Instant::now(),
            Held::Redlock(guard) => !guard.is_lost(),
            Held::Many(guards) => guards
                .guards()
                .iter()
                .all(|g| !g.is_lost() && g.valid_until() > Instant::now()),
        }
    }

    fn is_lost(&self) -> bool {
        match self {
            Held::One(guard) => guard.is_lost(),
            Held::Redlock(guard) => guard.is_lost(),
            Held::Many(guards) => guards.guards().iter().any(LockGuard::is_lost),
        }
    }

    fn token(&self) -> Option<u64> {
        match self {
            Held::One(guard) => guard.fencing_token().map(|t| t.get()),
            Held::Many(_) | Held::Redlock(_) => None,
        }
    }

    async fn lost(&self) {
        match self {
            Held::One(guard) => guard.lost().await,
            Held::Redlock(guard) => guard.lost().await,
            Held::Many(guards) => {
                let lost = guards.guards().iter().map(|g| Box::pin(g.lost()));
                futures_util::future::select_all(lost).await;
            }
        }
    }

    async fn release(self) -> shardlock::Result<()> {
        match self {
            Held::One(guard) => guard.release().await,
            Held::Redlock(guard) => guard.release().await,
            Held::Many(guards) => guards.release().await,
        }
    }
}

/// Takes the lock(s) on `keys` the way `mode` says: `Ok(None)` when held
/// by someone else (or still held after the wait).
async fn acquire(shared: &Shared, keys: &[u64]) -> shardlock::Result<Option<Held>> {
    let args = &shared.args;
    if let Some(redlock) = &shared.redlock {
        let one = || {
            redlock
                .lock(key_name(keys[0]))
                .ttl(args.ttl)
                .auto_renew(args.auto_renew)
        };
        let outcome = match args.mode {
            Mode::Wait(wait) => one().wait(wait).acquire().await.map(Some),
            _ => one().try_acquire().await,
        };
        return match outcome {
            Ok(guard) => Ok(guard.map(Held::Redlock)),
            Err(Error::Contended | Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        };
    }
    let one = || {
        shared
            .mgr
            .lock(key_name(keys[0]))
            .ttl(args.ttl)
            .auto_renew(args.auto_renew)
    };
    let outcome = match args.mode {
        Mode::Try => one().try_acquire().await.map(|g| g.map(Held::One)),
        Mode::Fenced => one().fenced().try_acquire().await.map(|g| g.map(Held::One)),
        Mode::Wait(wait) => one().wait(wait).acquire().await.map(|g| Some(Held::One(g))),
        Mode::Many(_) => shared
            .mgr
            .lock_many(keys.iter().map(|&n| key_name(n)))
            .ttl(args.ttl)
            .acquire()
            .await
            .map(|g| Some(Held::Many(g))),
    };
    match outcome {
        Err(Error::Contended | Error::Timeout { .. }) => Ok(None),
        other => other,
    }
}

fn draw_keys(shared: &Shared, rng: &mut fastrand::Rng, keys: &mut Vec<u64>) {
    keys.clear();
    let wanted = match shared.args.mode {
        Mode::Many(n) => (n as u64).min(shared.args.keys) as usize,
        _ => 1,
    };
    while keys.len() < wanted {
        let n = shared.keys.draw(rng);
        if !keys.contains(&n) {
            keys.push(n);
        }
    }
}

/// One worker (the `local`-th of this process): cycles until the end of
/// the run.
pub(crate) async fn worker(shared: Arc<Shared>, local: usize) {
    let args = &shared.args;
    let id = shared.placement.workers.start + local;
    let mut lease_n = 0u64;
    let mut rng =
        fastrand::Rng::with_seed(args.seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    // Open loop: worker `id` owns every `workers`-th slot of the schedule.
    let interval = args
        .rate
        .map(|rate| Duration::from_secs_f64(args.workers as f64 / rate));
    let mut next_start = shared.start
        + args.rate.map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(id as f64 / rate)
        });
    let mut keys = Vec::new();
    loop {
        let intended = match interval {
            Some(interval) => {
                let at = next_start;
                next_start += interval;
                if at >= shared.end {
                    break;
                }
                tokio::time::sleep_until(at).await;
                at
            }
            None => Instant::now(),
        };
        if shared.stop.load(Relaxed) || Instant::now() >= shared.end {
            break;
        }
        draw_keys(&shared, &mut rng, &mut keys);
        let acquire_sent = now_ns();
        let outcome = acquire(&shared, &keys).await;
        let acquired_at = Instant::now();
        let acquire_replied = now_ns();
        let tally = &shared.tallies[local];
        let held = match outcome {
            Ok(Some(held)) => held,
            Ok(None) => {
                tally
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .failed_acquires += 1;
                continue;
            }
            Err(e) => {
                tally.lock().unwrap_or_else(|p| p.into_inner()).error(&e);
                continue;
            }
        };
        shared.record_success(&keys, acquired_at);
        let token = held.token();
        for &n in &keys {
            shared.safety.enter(n, id, token);
        }
        let hold = if args.hold.max > args.hold.min {
            let span = (args.hold.max - args.hold.min).as_micros() as u64;
            args.hold.min + Duration::from_micros(rng.u64(..=span))
        } else {
            args.hold.min
        };
        let lease_id = LeaseId {
            process: shared.placement.process,
            worker: id as u32,
            n: lease_n,
        };
        lease_n += 1;
        let mut lost_at = None;
        let mut write = None;
        if let Some(resource) = &shared.resource {
            // Check, work, write: the work does not watch the guard, as a
            // real holder's does not; a stall here writes after the loss.
            let check = now_ns();
            if held.valid_now() {
                if !hold.is_zero() {
                    tokio::time::sleep(hold).await;
                }
                let fence = token.unwrap_or(0);
                let sent = now_ns();
                let outcome = resource.write(keys[0], fence, lease_id).await;
                write = Some(WriteEvent {
                    lease: lease_id,
                    key: keys[0],
                    token: fence,
                    check,
                    sent,
                    replied: (outcome != WriteOutcome::Failed).then(now_ns),
                    outcome,
                });
            } else {
                lost_at = Some(check);
            }
            if lost_at.is_none() && held.is_lost() {
                lost_at = Some(now_ns());
            }
        } else if hold.is_zero() {
            // Let other workers run while this one believes it holds.
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(hold) => {}
                _ = held.lost() => lost_at = Some(now_ns()),
            }
        }
        let lost_while_held = lost_at.is_some();
        for &n in &keys {
            shared.safety.leave(n, id);
        }
        let held_for = acquired_at.elapsed();
        let end = now_ns();
        let released = held.release().await;
        let mut tally = tally.lock().unwrap_or_else(|p| p.into_inner());
        if shared.observe {
            for &key in &keys {
                tally.leases.push(LeaseEvent {
                    id: lease_id,
                    key,
                    fence: token,
                    acquire_sent,
                    acquire_replied,
                    end,
                    lost: lost_at,
                });
            }
            tally.writes.extend(write);
        }
        tally.acquired += 1;
        let acquire_us = (acquired_at - intended).as_micros() as u64;
        let _ = tally.acquire.record(acquire_us);
        let _ = tally
            .second(shared.start, acquired_at)
            .acquire
            .record(acquire_us);
        let _ = tally.hold.record(held_for.as_micros() as u64);
        match released {
            Ok(()) if !lost_while_held => {
                tally.cycles += 1;
                let _ = tally.cycle.record(intended.elapsed().as_micros() as u64);
                tally.second(shared.start, Instant::now()).cycles += 1;
            }
            Ok(()) | Err(Error::NotHeld) => tally.lost_leases += 1,
            Err(e) => tally.error(&e),
        }
    }
}
