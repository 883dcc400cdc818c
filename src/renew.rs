//! The renewal task: keeps auto-renewed leases alive, batched per shard,
//! and reports the ones it loses.
//!
//! A handle plus a worker. Guards register their lease when acquired and
//! send it back for release when dropped; the worker ends when every
//! handle (the manager and all its guards) is gone. It runs on the runtime
//! that started it; if that runtime shuts down while the manager lives on,
//! every lease still held that the old worker was renewing (queued, in a
//! request in flight, or registered but not yet read) is marked lost as the
//! worker is dropped, so `is_lost()` is true and `lost()` resolves then,
//! not at the lease's expiry; the next registration or release (made from
//! within another runtime) starts a new worker there. The old worker's
//! background releases not yet decided (queued, unread, or in a request
//! dropped in flight) are kept in the handle's hand-over and taken over by
//! the next worker, when it starts and at each tick; if no worker is ever
//! started again, those keys expire by their TTL.
//!
//! Each tick (every `renew_interval`) the worker takes the leases due — a
//! lease is due once a third of its TTL has passed since its last renewal —
//! and groups them by the primary that serves their slot in the current
//! slot map. Per primary it sends one pipeline of `renew_batch.lua` calls,
//! each carrying up to `renew_chunk` leases of one TTL in ARGV (undeclared
//! keys, so one call covers many slots of that node). Round trips per tick
//! are therefore one per shard, and script calls per tick one per chunk:
//! both grow with shards and chunks, not with leases.
//!
//! Per lease the answer is: renewed; gone, held by another token or
//! overwritten with another type (`WRONGTYPE`): the lease is marked lost
//! and `lost()` resolves; or "non local key" (the
//! script could not reach the key on that node). Redis 7.0 answers the
//! latter for every key when the node is no longer the slot's primary (a
//! failover, an old primary back as a replica), and for the keys of a slot
//! that moved or is migrating. Then, by the slot map current when the
//! batch lands: if it names another node (or none) for the slot, the lease
//! goes back into the next tick's batch of the node it names; if it still
//! names the node that answered, that is a shard failure (below), unless
//! the slot is migrating: the node renewed (or found gone) other leases of
//! the same batch, so it is a primary, or a topology fetch that started
//! after the lease's first such answer has completed and the map still
//! names that node. Only then is that lease renewed on its own through the
//! router, which follows MOVED and ASK, at most [`SINGLES_IN_FLIGHT`] at
//! once, each for at most one request timeout (or until its expiry, if
//! sooner; see [`single_deadline`]), the rest queued; it keeps going one by one while its key stays
//! away, until a batch renews it again.
//!
//! Failure costs stay per shard: a batch that fails as a whole (transport
//! error, timeout, `CLUSTERDOWN`, a node that is no longer a primary), and
//! any other per-lease error, puts those leases back to be sent again as
//! one batch when the shard may be tried again. A node that left at least
//! half of a batch unanswered has failed: consecutive failures back it off
//! (jittered, doubling from one renewal interval up to 1 s or the interval
//! if longer); a batch the node answered for the most part is no failure,
//! and its few unconfirmed leases go in the next tick's batch. The backoff
//! never costs a lease its last attempt: a lease is sent even to a shard
//! backing off once it reaches its last chance, its expiry less one round
//! trip (the renewal interval, or the response timeout capped at a third
//! of its TTL, if longer), and again each tick after that while it is
//! unconfirmed and not expired. Each retry
//! groups the leases by the slot map then current (the failure also hints
//! the refresher). Leases of a slot the map leaves unassigned wait for the
//! next tick. A batch in flight is cut off by the request timeout (a
//! silent node by the response timeout), never by the expiry of one of
//! its leases, so a lease near its expiry does not make the fresh leases
//! it travels with unconfirmed. No lease is held past its expiry without
//! a confirmation: its holder sees it lost at its `valid_until`, and the
//! worker marks it lost when it comes back unconfirmed or is found due
//! after its expiry.
//!
//! Requests are not awaited in turn: the worker keeps them in flight and
//! acts on each as it lands, while it goes on ticking. A dead or failing-over
//! node therefore delays only its own leases (whose requests end when they
//! expire, at the latest), never the renewal of the other shards.
//!
//! The worker also runs the background releases of dropped guards (and of
//! leases handed over by [`crate::LockManager`]'s clean-ups), batched per
//! node with at most one batch in flight per node (see [`crate::releases`]);
//! when the last handle is gone it finishes them before it ends. It holds a
//! [`Client`] clone meanwhile (so the refresher and the connections live
//! on): the worker ends once every pending release is decided or its lease
//! has certainly expired by its TTL, that is at most the longest TTL a
//! pending lease may still carry (at most `max_ttl` from when it was handed
//! over) plus one response timeout, and the request timeout of a request
//! then in flight. With every node answering, that is one request timeout.
//!
//! The per-node backoff state is kept only for nodes the current slot map
//! names; it is pruned every tick.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::lock::Lease;
use crate::redirect::Action;
use crate::releases::{Handover, Released, Releases};
use crate::scripts;
use crate::topology::Topology;

/// Longest a failing shard waits between two batches (unless the renewal
/// interval is longer); a lease never waits past its expiry.
const SHARD_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// Most leases renewed one by one through the router at once (keys of a
/// migrating slot); the rest wait their turn.
pub(crate) const SINGLES_IN_FLIGHT: usize = 32;

/// Sends leases to the renewal worker.
pub(crate) struct RenewHandle {
    /// Replaced only when its worker has ended (see [`RenewHandle::send`]).
    tx: ArcSwap<mpsc::UnboundedSender<Msg>>,
    /// Held by the one caller replacing a stopped worker.
    respawn: Mutex<()>,
    /// What a replacement worker is started with.
    client: Client,
    interval: Duration,
    chunk: usize,
    paused: Arc<AtomicBool>,
    /// Background releases a worker dropped with its runtime left
    /// undecided; the next worker takes them over.
    handover: Handover,
}

enum Msg {
    /// A lease and the schedule it was registered under (read when the
    /// message is sent: an `extend` that starts a new schedule before the
    /// worker reads this message makes it stale).
    Register(Arc<Lease>, u32),
    Release(Arc<Lease>),
    /// Answer once the background release has nothing left to decide.
    Flush(oneshot::Sender<()>),
}

impl RenewHandle {
    /// Starts renewing `lease`.
    pub(crate) fn register(&self, lease: Arc<Lease>) {
        let schedule = lease.schedule();
        self.send(Msg::Register(lease, schedule));
    }

    /// Releases `lease` soon (its guard was dropped).
    pub(crate) fn release(&self, lease: Arc<Lease>) {
        self.send(Msg::Release(lease));
    }

    /// Resolves once the worker has decided every background release it
    /// was handed before this call (and any handed over meanwhile): nothing
    /// queued, nothing in flight. `Err` when the worker ended (with its
    /// runtime) before that; the caller bounds the wait.
    pub(crate) fn flushed(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Msg::Flush(tx));
        rx
    }

    /// Hands `msg` to the worker. The worker runs on the runtime that
    /// started it and ends when that runtime shuts down; the next message
    /// (sent from within another runtime) starts a new worker there. The
    /// leases the old worker had were marked lost when it was dropped (see
    /// [`Worker`]'s `Drop`); the releases it had not decided are taken
    /// over by the new one. Outside any runtime a registration's lease is
    /// marked lost, and a release waits for the next worker.
    fn send(&self, msg: Msg) {
        let Err(mpsc::error::SendError(msg)) = self.tx.load().send(msg) else {
            return;
        };
        let _respawn = self.respawn.lock().unwrap_or_else(|p| p.into_inner());
        let Err(mpsc::error::SendError(msg)) = self.tx.load().send(msg) else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            match msg {
                // Nothing can renew it.
                Msg::Register(lease, _) => {
                    lease.mark_lost();
                }
                Msg::Release(lease) => hand_over(&self.handover, [lease]),
                // Dropped: the caller learns that no worker runs.
                Msg::Flush(_) => {}
            }
            return;
        }
        tracing::debug!("the renewal task stopped with its runtime; starting it again");
        let tx = start(
            &self.client,
            self.interval,
            self.chunk,
            &self.paused,
            &self.handover,
        );
        let _ = tx.send(msg);
        self.tx.store(Arc::new(tx));
    }

    /// Stops (or resumes) sending renewals, as a holder cut off from Redis
    /// would; leases then expire and are reported lost. For fault tests.
    #[cfg(feature = "testkit")]
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
    }
}

/// Starts the worker on the current runtime; it ends when every handle is
/// dropped (or with the runtime).
pub(crate) fn spawn(client: Client, interval: Duration, chunk: usize) -> RenewHandle {
    let paused = Arc::new(AtomicBool::new(false));
    let handover = Handover::default();
    let tx = start(&client, interval, chunk, &paused, &handover);
    RenewHandle {
        tx: ArcSwap::from_pointee(tx),
        respawn: Mutex::new(()),
        client,
        interval,
        chunk,
        paused,
        handover,
    }
}

fn start(
    client: &Client,
    interval: Duration,
    chunk: usize,
    paused: &Arc<AtomicBool>,
    handover: &Handover,
) -> mpsc::UnboundedSender<Msg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut worker = Worker {
        paused: paused.clone(),
        client: client.clone(),
        interval,
        chunk,
        queue: BinaryHeap::new(),
        releases: Releases::default(),
        handover: handover.clone(),
        shards: HashMap::new(),
        singles: VecDeque::new(),
        singles_in_flight: 0,
        flushes: Vec::new(),
    };
    worker.adopt();
    tokio::spawn(worker.run(Inbox(rx, handover.clone())));
    tx
}

/// Keeps `leases` for the next worker to release.
fn hand_over(handover: &Handover, leases: impl IntoIterator<Item = Arc<Lease>>) {
    handover
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend(leases);
}

/// A lease waiting for its next renewal (or in flight).
struct Due {
    /// The lease's schedule this entry belongs to; an `extend` starts a new
    /// one, and entries (and renewal replies) of an older one are dropped.
    schedule: u32,
    /// When to renew next.
    at: Instant,
    /// When the lease ends on the server if no renewal succeeds before.
    expires: Instant,
    /// Set when the node the slot map names for this lease's slot said its
    /// key is not local (a failover the map has not caught up with, or a
    /// migration). Cleared by a batch renewal.
    non_local: Option<NonLocal>,
    lease: Arc<Lease>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Due) -> Ordering {
        other.at.cmp(&self.at)
    }
}

struct Worker {
    /// Set by fault tests: no renewal is sent while it is.
    paused: Arc<AtomicBool>,
    client: Client,
    interval: Duration,
    chunk: usize,
    /// Leases waiting for their next renewal; a lease in flight is not here.
    queue: BinaryHeap<Due>,
    /// Background releases, batched per node.
    releases: Releases,
    /// Where this worker leaves its undecided releases when dropped with
    /// its runtime, and takes over those of a worker dropped before it.
    handover: Handover,
    /// Nodes whose last batch failed, and when they may be tried again.
    shards: HashMap<Arc<str>, Failing>,
    /// Leases to renew one by one through the router (their slot's node
    /// still said "non local key" after a refresh: the slot is migrating),
    /// at most [`SINGLES_IN_FLIGHT`] at once.
    singles: VecDeque<Due>,
    singles_in_flight: usize,
    /// Callers of [`RenewHandle::flushed`] waiting for the background
    /// release to have nothing left (answered when it has; dropped with the
    /// worker otherwise).
    flushes: Vec<oneshot::Sender<()>>,
}

/// The leases the worker holds die with it: when its runtime shuts down,
/// every lease still held that it was renewing (queued, waiting to go one
/// by one, or in a request in flight, see [`Carried`]) is marked lost at
/// once, so `lost()` resolves then rather than at `valid_until`. Its
/// background releases not yet decided (queued, or in a request in
/// flight) go to the hand-over, for the next worker. When the worker ends
/// because every handle is gone, no lease is held any more, its releases
/// are decided, and this does nothing.
impl Drop for Worker {
    fn drop(&mut self) {
        for entry in self.queue.drain().chain(self.singles.drain(..)) {
            entry.lease.mark_lost();
        }
        let undecided = self.releases.take_all();
        if !undecided.is_empty() {
            hand_over(&self.handover, undecided);
        }
    }
}

/// The worker's end of its channel. Dropped with the worker's runtime, the
/// leases of registrations it never read are marked lost, as the ones it
/// held are (see [`Worker`]'s `Drop`), and the releases it never read go
/// to the hand-over (its second field), for the next worker.
struct Inbox(mpsc::UnboundedReceiver<Msg>, Handover);

impl Drop for Inbox {
    fn drop(&mut self) {
        self.0.close();
        while let Ok(msg) = self.0.try_recv() {
            match msg {
                Msg::Register(lease, _) => {
                    lease.mark_lost();
                }
                Msg::Release(lease) => hand_over(&self.1, [lease]),
                // Dropped unanswered: the waiter learns the worker ended.
                Msg::Flush(_) => {}
            }
        }
    }
}

/// The leases a request in flight carries. Dropped before the request
/// lands (the worker's runtime shut down under it), they are marked lost:
/// nothing renews them any more.
struct Carried(Vec<Due>);

impl Carried {
    /// The leases, once the request has its outcome.
    fn land(mut self) -> Vec<Due> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        for entry in &self.0 {
            entry.lease.mark_lost();
        }
    }
}

/// What is known of a lease whose key the node the map names said is not
/// local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NonLocal {
    /// First said when the client had completed this many topology
    /// fetches.
    Since(u64),
    /// Its slot is migrating (see [`Elsewhere::OneByOne`]): it goes one by
    /// one whenever that node says so.
    Migrating,
}

/// A node whose renewal or release batches fail.
struct Failing {
    /// Consecutive failed batches.
    failures: u32,
    /// No batch before this instant.
    not_before: Instant,
}

/// What became of one lease in a request.
enum Fate {
    /// Its key now expires this many milliseconds after the request was
    /// sent (the TTL the request carried, which `extend` may have changed
    /// since).
    Renewed(u32),
    Lost,
    /// The node says its key is not local ("non local key"): the node is
    /// no longer the slot's primary (a failover), or the slot moved or is
    /// migrating. What follows depends on the slot map (see [`elsewhere`]).
    Moved,
    /// The node did not answer for it (transport error, timeout,
    /// CLUSTERDOWN, not a primary): retry with the shard's next batch.
    Unconfirmed,
}

/// A request of the worker in flight; it never borrows the worker, so the
/// worker keeps ticking while a slow node or a failover holds it up.
type Flight = BoxFuture<'static, Landing>;

/// What a request in flight brings back.
enum Landing {
    /// A node's batch, sent at `sent_at`: each lease and its fate.
    Batch {
        addr: Arc<str>,
        sent_at: Instant,
        fates: Vec<(Due, Fate)>,
    },
    /// One lease renewed on its own through the router (`entries` holds
    /// that one lease).
    Single {
        sent_at: Instant,
        entries: Vec<Due>,
        fate: Fate,
    },
    /// A background release request done.
    Released(Released),
}

impl Worker {
    /// Ticks, sends, and acts on each request's outcome as soon as it lands:
    /// a slow node delays only its own leases, and a lease whose renewal
    /// cannot be confirmed is reported lost when its TTL runs out, not when
    /// the slowest request of its tick ends.
    async fn run(mut self, mut inbox: Inbox) {
        let rx = &mut inbox.0;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flights: FuturesUnordered<Flight> = FuturesUnordered::new();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.accept(msg),
                    None => break,
                },
                Some(landing) = flights.next(), if !flights.is_empty() => {
                    self.land(landing, &flights);
                }
                _ = tick.tick() => {
                    // Take everything already queued, so a burst of
                    // registrations lands in this tick's batches.
                    while let Ok(msg) = rx.try_recv() {
                        self.accept(msg);
                    }
                    // A worker dropped while this one started may have
                    // left releases since.
                    self.adopt();
                    prune_shards(&mut self.shards, &self.client.topology());
                    self.release_dropped(&flights);
                    self.answer_flushes();
                    self.renew_due(&flights);
                }
            }
        }
        // Manager and guards are gone: release what was dropped (still
        // batched per node and bounded), and let the requests in flight end
        // (each is bounded by its deadline); renewals are not sent again.
        self.release_dropped(&flights);
        loop {
            match flights.next().await {
                Some(Landing::Released(released)) => self.land_release(released, &flights),
                Some(_) => {}
                None if self.releases.is_idle() => break,
                None => {
                    // Only leases of nodes backing off (or of unassigned
                    // slots) are left; each leaves the queue by its expiry
                    // at the latest.
                    tokio::time::sleep(self.interval).await;
                    self.release_dropped(&flights);
                }
            }
        }
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Register(lease, schedule) => {
                if schedule != lease.schedule() {
                    return; // an extend registered it again since
                }
                // Counted from the confirmation's send time (the lease's
                // `valid_until`), not from now: the safe side.
                let expires = lease.valid_until();
                let ttl = lease.ttl();
                self.queue.push(Due {
                    schedule,
                    at: expires.checked_sub(ttl - ttl / 3).unwrap_or(expires),
                    expires,
                    non_local: None,
                    lease,
                });
            }
            Msg::Release(lease) => self.releases.push(lease),
            Msg::Flush(tx) => {
                self.flushes.push(tx);
                self.answer_flushes();
            }
        }
    }

    /// Answers the flush waiters once nothing is left to release: nothing
    /// queued or in flight here, nothing left by a dropped worker.
    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() || !self.releases.is_idle() {
            return;
        }
        if !self
            .handover
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
        {
            return;
        }
        for tx in self.flushes.drain(..) {
            let _ = tx.send(());
        }
    }

    /// Takes over the releases a worker dropped with its runtime left.
    fn adopt(&mut self) {
        let left = std::mem::take(&mut *self.handover.lock().unwrap_or_else(|p| p.into_inner()));
        for lease in left {
            self.releases.push(lease);
        }
    }

    /// Starts the background releases that may start now (see
    /// [`crate::releases`]): a batch per node not backing off.
    fn release_dropped(&mut self, flights: &FuturesUnordered<Flight>) {
        if self.releases.is_idle() {
            return;
        }
        let topology = self.client.topology();
        let now = Instant::now();
        let shards = &self.shards;
        let ready = |addr: &str| shards.get(addr).is_none_or(|f| f.not_before <= now);
        for started in self.releases.start(&self.client, &topology, ready) {
            flights.push(started.map(Landing::Released).boxed());
        }
    }

    fn land_release(&mut self, released: Released, flights: &FuturesUnordered<Flight>) {
        if let Some((addr, failed)) = self.releases.land(released) {
            self.note_batch(&addr, failed);
        }
        self.release_dropped(flights);
        self.answer_flushes();
    }

    /// Records how a node's batch went; failures back the node off.
    fn note_batch(&mut self, addr: &Arc<str>, failed: bool) {
        if !failed {
            self.shards.remove(addr);
            return;
        }
        let backoff = Backoff::new(self.interval, self.interval.max(SHARD_BACKOFF_CAP));
        let failing = self.shards.entry(addr.clone()).or_insert(Failing {
            failures: 0,
            not_before: Instant::now(),
        });
        let delay = backoff.delay(failing.failures);
        failing.failures = failing.failures.saturating_add(1);
        failing.not_before = Instant::now()
            .checked_add(delay)
            .unwrap_or(failing.not_before);
    }

    /// When the next batch to `addr` may go, if it is backing off.
    fn not_before(&self, addr: &str) -> Option<Instant> {
        self.shards
            .get(addr)
            .map(|f| f.not_before)
            .filter(|t| *t > Instant::now())
    }

    /// When `entry` is sent even to a shard that backs off: early enough
    /// before its expiry for one round trip (the renewal interval, or the
    /// response timeout capped at a third of its TTL, if longer).
    fn last_chance(&self, entry: &Due) -> Instant {
        let margin = self
            .interval
            .max(self.client.response_timeout().min(entry.lease.ttl() / 3));
        entry.expires.checked_sub(margin).unwrap_or(entry.expires)
    }

    /// Puts `entry` back to be retried at `at`, but never later than its
    /// last chance (see [`Worker::last_chance`]; once that has passed, at
    /// the next tick), so a shard's backoff never makes a lease lost
    /// without a last attempt, and one not confirmed by its expiry is
    /// reported lost on time.
    fn retry_at(&mut self, entry: Due, at: Instant) {
        let now = Instant::now();
        let latest = self.last_chance(&entry).max(now).min(entry.expires);
        self.queue.push(Due {
            at: at.min(latest),
            ..entry
        });
    }

    /// Sends every lease that is due: one pipeline per primary.
    fn renew_due(&mut self, flights: &FuturesUnordered<Flight>) {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.queue.peek().is_some_and(|d| d.at <= now) {
            let entry = self.queue.pop().expect("peeked");
            // Released or lost leases, and entries of a schedule an
            // `extend` replaced, leave the queue here.
            if entry.lease.is_held() && entry.schedule == entry.lease.schedule() {
                due.push(entry);
            }
        }
        // A lease whose TTL ran out since its last confirmed renewal may be
        // gone on the server: the holder can no longer know it holds it.
        due.retain(|entry| {
            let expired = now >= entry.expires;
            if expired {
                entry.lease.mark_lost();
            }
            !expired
        });
        if due.is_empty() {
            return;
        }
        if self.paused.load(Relaxed) {
            // Nothing is sent: each lease is lost once its TTL has run out.
            for entry in due {
                self.queue.push(Due {
                    at: now + self.interval,
                    ..entry
                });
            }
            return;
        }

        let topology = self.client.topology();
        let mut groups: HashMap<Arc<str>, Vec<Due>> = HashMap::new();
        let mut unassigned = false;
        for entry in due {
            match topology.primary_of_slot(entry.lease.slot) {
                Some(node) => match self.not_before(node.addr()) {
                    // The shard backs off: its leases wait for its next
                    // try, except those at their last chance.
                    Some(at) if now < self.last_chance(&entry) => self.retry_at(entry, at),
                    _ => groups.entry(node.addr().clone()).or_default().push(entry),
                },
                // Retried next tick, on the map a refresh brings.
                None => {
                    unassigned = true;
                    self.retry_at(entry, now + self.interval);
                }
            }
        }
        drop(topology);
        if unassigned {
            let _ = self.client.hint_refresh();
        }
        for (addr, entries) in groups {
            let client = self.client.clone();
            let batch = renew_on_node(client, addr, Carried(entries), self.chunk);
            flights.push(Box::pin(batch));
        }
        self.start_singles(flights);
    }

    /// Acts on the outcome of one request.
    fn land(&mut self, landing: Landing, flights: &FuturesUnordered<Flight>) {
        match landing {
            Landing::Batch {
                addr,
                sent_at,
                fates,
            } => {
                let topology = self.client.topology();
                let refreshes = self.client.router().shared.counters.refreshes.load(Relaxed);
                // Retried with the shard's next batch, and to be sent
                // again at once, in the batch of the node the map names now.
                let mut unconfirmed = Vec::new();
                let mut regroup = Vec::new();
                let total = fates.len();
                // The node served some of the batch: it is the primary of
                // those slots, so its "non local key" answers are keys of a
                // migrating slot, not a failover the map missed.
                let serving = fates
                    .iter()
                    .any(|(_, fate)| matches!(fate, Fate::Renewed(_) | Fate::Lost));
                for (mut entry, fate) in fates {
                    match fate {
                        Fate::Renewed(ttl_ms) => {
                            entry.non_local = None;
                            self.requeue(entry, sent_at, ttl_ms)
                        }
                        Fate::Lost => {
                            entry.lease.mark_lost();
                        }
                        Fate::Unconfirmed => unconfirmed.push(entry),
                        Fate::Moved => {
                            let owner = topology
                                .primary_of_slot(entry.lease.slot)
                                .map(|n| n.addr().as_ref());
                            match elsewhere(owner, &addr, serving, entry.non_local, refreshes) {
                                Elsewhere::Regroup => regroup.push(entry),
                                Elsewhere::OneByOne => {
                                    entry.non_local = Some(NonLocal::Migrating);
                                    self.singles.push_back(entry);
                                }
                                Elsewhere::Shard => {
                                    entry.non_local.get_or_insert(NonLocal::Since(refreshes));
                                    unconfirmed.push(entry);
                                }
                            }
                        }
                    }
                }
                drop(topology);
                let failed = node_failed(total, unconfirmed.len());
                self.note_batch(&addr, failed);
                if !unconfirmed.is_empty() || !regroup.is_empty() {
                    // CLUSTERDOWN, a failover, …: the map may be out of date.
                    let _ = self.client.hint_refresh();
                }
                // The unconfirmed leases are retried as one batch when the
                // shard may be tried again (at the next tick if the node
                // answered for most of the batch), on the then current map.
                let now = Instant::now();
                let at = self.not_before(&addr).unwrap_or(now + self.interval);
                for entry in unconfirmed {
                    self.retry_at(entry, at);
                }
                for entry in regroup {
                    self.retry_at(entry, now);
                }
                self.start_singles(flights);
            }
            Landing::Single {
                sent_at,
                entries,
                fate,
            } => {
                self.singles_in_flight = self.singles_in_flight.saturating_sub(1);
                let now = Instant::now();
                for entry in entries {
                    match fate {
                        Fate::Renewed(ttl_ms) => self.requeue(entry, sent_at, ttl_ms),
                        Fate::Lost => {
                            entry.lease.mark_lost();
                        }
                        // It cannot be confirmed any more: the holder can no
                        // longer know it holds it.
                        Fate::Moved | Fate::Unconfirmed if now >= entry.expires => {
                            entry.lease.mark_lost();
                        }
                        Fate::Moved | Fate::Unconfirmed => {
                            self.retry_at(entry, now + self.interval)
                        }
                    }
                }
                self.start_singles(flights);
            }
            Landing::Released(released) => self.land_release(released, flights),
        }
    }

    /// Starts one-by-one renewals up to [`SINGLES_IN_FLIGHT`]; the rest
    /// stay queued. A queued lease whose expiry passed is lost.
    fn start_singles(&mut self, flights: &FuturesUnordered<Flight>) {
        let now = Instant::now();
        while self.singles_in_flight < SINGLES_IN_FLIGHT {
            let Some(entry) = self.singles.pop_front() else {
                break;
            };
            if !entry.lease.is_held() || entry.schedule != entry.lease.schedule() {
                continue;
            }
            if now >= entry.expires {
                entry.lease.mark_lost();
                continue;
            }
            self.singles_in_flight += 1;
            let single = renew_one(self.client.clone(), Carried(vec![entry]));
            flights.push(Box::pin(single));
        }
    }

    /// Schedules the next renewal of a lease renewed for `ttl_ms` by a
    /// request sent at `sent_at` (its new expiry counts from the send, the
    /// safe side).
    /// A lease renewed one by one keeps its `non_local` mark (its key is
    /// still away from the node the map names); a batch renewal clears it.
    fn requeue(&mut self, entry: Due, sent_at: Instant, ttl_ms: u32) {
        crate::metrics::renewed();
        if entry.schedule != entry.lease.schedule() {
            // An `extend` was sent after this renewal and set the lease's
            // own TTL and schedule; this reply must not move them.
            return;
        }
        let ttl = Duration::from_millis(ttl_ms.into());
        entry.lease.confirm_renewal(sent_at, ttl, entry.schedule);
        self.queue.push(Due {
            schedule: entry.schedule,
            at: sent_at + ttl / 3,
            expires: sent_at + ttl,
            non_local: entry.non_local,
            lease: entry.lease,
        });
    }
}

/// Forgets the backoff of nodes the slot map no longer names: a node that
/// left the cluster costs no memory, and one that comes back starts afresh.
fn prune_shards(shards: &mut HashMap<Arc<str>, Failing>, topology: &Topology) {
    if !shards.is_empty() {
        shards.retain(|addr, _| topology.nodes().any(|n| n.addr() == addr));
    }
}

/// One pipeline to `addr` with a `renew_batch.lua` call per chunk of
/// leases (a call carries one TTL, so leases are grouped by TTL first).
/// The request's deadline is the request timeout (the connection's
/// response timeout cuts a silent node sooner), not the expiry of its
/// first lease: a lease that expires while its batch is in flight does not
/// cut the others off. Its holder sees it lost at its `valid_until`
/// (`is_lost()`, `lost()`), and the worker marks it lost when the batch
/// lands unconfirmed (or the node reports its key gone).
async fn renew_on_node(
    client: Client,
    addr: Arc<str>,
    mut carried: Carried,
    chunk: usize,
) -> Landing {
    let sent_at = Instant::now();
    let deadline = sent_at + client.request_timeout();
    carried.0.sort_by_cached_key(|e| ttl_ms(&e.lease));
    // Read once: an `extend` may change a lease's TTL meanwhile.
    let ttls: Vec<u32> = carried.0.iter().map(|e| ttl_ms(&e.lease)).collect();
    let chunks = chunk_ranges(&ttls, chunk);
    let mut replies = None;
    // By SHA1 first; by source if the node does not know the script.
    for eval in [false, true] {
        let pipeline = renew_pipeline(&carried.0, &ttls, &chunks, eval);
        match client
            .router()
            .send_to_node(&addr, &pipeline, deadline)
            .await
        {
            Ok(r) if !eval && r.iter().any(is_noscript) => continue,
            Ok(r) => {
                replies = Some(r);
                break;
            }
            Err(action) => {
                if matches!(action, Action::Refresh(_)) {
                    let _ = client.hint_refresh();
                }
                break;
            }
        }
    }
    crate::metrics::renew_batch(carried.0.len());
    let fates: Vec<Fate> = match replies {
        Some(replies) => chunks
            .iter()
            .zip(replies.iter().chain(std::iter::repeat(&Value::Nil)))
            .flat_map(|(range, reply)| chunk_fates(range.len(), ttls[range.start], reply))
            .collect(),
        None => carried.0.iter().map(|_| Fate::Unconfirmed).collect(),
    };
    let fates = carried.land().into_iter().zip(fates).collect();
    Landing::Batch {
        addr,
        sent_at,
        fates,
    }
}

/// Splits leases sorted by TTL into runs of one TTL, each at most `chunk`
/// long (one `renew_batch.lua` call each).
fn chunk_ranges(ttls: &[u32], chunk: usize) -> Vec<std::ops::Range<usize>> {
    let chunk = chunk.max(1);
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < ttls.len() {
        let mut end = start + 1;
        while end < ttls.len() && ttls[end] == ttls[start] && end - start < chunk {
            end += 1;
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// Renews one lease (the one `carried` holds) through the router, which
/// follows MOVED and ASK, trying until [`single_deadline`].
async fn renew_one(client: Client, carried: Carried) -> Landing {
    let sent_at = Instant::now();
    let mut fate = Fate::Unconfirmed;
    if let Some(entry) = carried.0.first() {
        let lease = &entry.lease;
        let ttl_ms = ttl_ms(lease);
        let deadline = single_deadline(sent_at, entry.expires, client.request_timeout());
        let request = scripts::extend(&lease.key, &lease.value(), ttl_ms.into());
        fate = match client.execute_until(lease.slot, &request, deadline).await {
            Ok(replies) => match replies.first() {
                Some(Value::Int(1)) => Fate::Renewed(ttl_ms),
                Some(Value::Int(0)) => Fate::Lost,
                _ => Fate::Unconfirmed,
            },
            Err(_) => Fate::Unconfirmed,
        };
    }
    Landing::Single {
        sent_at,
        entries: carried.land(),
        fate,
    }
}

/// When a one-by-one renewal sent at `sent_at` gives up: at the lease's
/// expiry, or one request timeout after the send if sooner (and never
/// before one millisecond after the send). A key whose node does not
/// answer therefore holds one of the [`SINGLES_IN_FLIGHT`] slots for at
/// most one request timeout, not until its expiry, and the singles queued
/// behind it are sent in time; a renewal that gave up is retried (in its
/// shard's batch first) while the lease has not expired.
fn single_deadline(sent_at: Instant, expires: Instant, request_timeout: Duration) -> Instant {
    let floor = sent_at + Duration::from_millis(1);
    let bound = sent_at.checked_add(request_timeout).unwrap_or(expires);
    expires.min(bound).max(floor)
}

/// The lease's TTL in milliseconds (validated to fit on input).
fn ttl_ms(lease: &Lease) -> u32 {
    u32::try_from(lease.ttl().as_millis()).unwrap_or(u32::MAX)
}

/// `EVALSHA renew_batch 0 ttl key value key value …` per chunk (a range
/// of `entries`, all of the TTL `ttls` gives them).
fn renew_pipeline(
    entries: &[Due],
    ttls: &[u32],
    chunks: &[std::ops::Range<usize>],
    eval: bool,
) -> redis::Pipeline {
    let script = &*scripts::RENEW_BATCH;
    let mut pipeline = redis::Pipeline::with_capacity(chunks.len());
    for range in chunks {
        let mut cmd = script.invocation(eval);
        cmd.arg(0).arg(ttls[range.start]);
        for entry in &entries[range.clone()] {
            cmd.arg(&entry.lease.key[..]).arg(entry.lease.value());
        }
        pipeline.add_command(cmd);
    }
    pipeline
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// What to do with a lease whose key a node reported "non local".
#[derive(Debug, PartialEq, Eq)]
enum Elsewhere {
    /// The map already names another node (or none) for its slot: send it
    /// again at once, in the batch of the node named now.
    Regroup,
    /// The map still names the node that answered: most likely that node
    /// is no longer the slot's primary (a failover the map has not caught
    /// up with, or an old primary back as a replica, which answers "non
    /// local key" for every key). A shard failure: hint a refresh and
    /// retry with the shard's next batch, on the map then current.
    Shard,
    /// The map still names that node, and that node served other leases
    /// of the batch, or the map still names it after a topology fetch that
    /// started after the first such answer: the slot is migrating; renew
    /// the lease on its own through the router, which follows ASK.
    OneByOne,
}

/// Decides [`Elsewhere`] for a lease of a slot the map now gives to
/// `owner`, reported non local by `answered`, which renewed or found gone
/// other leases of the same batch when `serving` (so it is a primary);
/// `known` is what earlier answers told (see [`Due::non_local`]),
/// `refreshes` the count of completed topology fetches now. Two more
/// fetches than at the first report guarantee that one of them started
/// after it.
fn elsewhere(
    owner: Option<&str>,
    answered: &str,
    serving: bool,
    known: Option<NonLocal>,
    refreshes: u64,
) -> Elsewhere {
    let confirmed = match known {
        Some(NonLocal::Migrating) => true,
        Some(NonLocal::Since(seen)) => refreshes >= seen.saturating_add(2),
        None => false,
    };
    if owner != Some(answered) {
        Elsewhere::Regroup
    } else if serving || confirmed {
        Elsewhere::OneByOne
    } else {
        Elsewhere::Shard
    }
}

/// Per-lease fates from one `renew_batch.lua` reply for `n` leases renewed
/// for `ttl_ms`.
fn chunk_fates(n: usize, ttl_ms: u32, reply: &Value) -> Vec<Fate> {
    match reply {
        Value::Array(items) if items.len() == n => items
            .iter()
            .map(|item| match item {
                Value::Int(1) => Fate::Renewed(ttl_ms),
                Value::Int(0) => Fate::Lost,
                item => item_error_fate(item),
            })
            .collect(),
        // The whole call failed (CLUSTERDOWN, not a primary any more, …):
        // a shard failure, retried as a batch.
        _ => (0..n).map(|_| Fate::Unconfirmed).collect(),
    }
}

/// Whether a batch of `total` leases of which `unconfirmed` came back
/// without an answer counts as the node's failure (backing it off): only
/// when the node left most of the batch unanswered. One key's error does
/// not back off the shard; its lease alone is retried.
fn node_failed(total: usize, unconfirmed: usize) -> bool {
    unconfirmed > 0 && unconfirmed.saturating_mul(2) >= total
}

/// The fate of a lease whose entry in a `renew_batch.lua` reply is an error
/// text: lost when the key holds another type (`WRONGTYPE`: overwritten,
/// so not our lock any more); `Moved` when the script could not reach it
/// on this node ("non local key", see [`elsewhere`]); any other error (the
/// cluster is down, the node is read-only, …) is unconfirmed, retried with
/// the shard's next batch.
fn item_error_fate(item: &Value) -> Fate {
    let text = match item {
        Value::BulkString(b) => String::from_utf8_lossy(b),
        Value::SimpleString(s) => s.as_str().into(),
        _ => return Fate::Unconfirmed,
    };
    if text.starts_with("WRONGTYPE") {
        return Fate::Lost;
    }
    let moved = ["non local key", "MOVED", "ASK", "TRYAGAIN"]
        .iter()
        .any(|marker| text.contains(marker));
    if moved {
        Fate::Moved
    } else {
        Fate::Unconfirmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn names(fates: &[Fate]) -> Vec<&'static str> {
        fates
            .iter()
            .map(|f| match f {
                Fate::Renewed(_) => "renewed",
                Fate::Lost => "lost",
                Fate::Moved => "moved",
                Fate::Unconfirmed => "unconfirmed",
            })
            .collect()
    }

    /// A per-lease "non local key" (what Redis 7.0 answers for every key
    /// when the node is no longer the slot's primary, and for keys of a
    /// slot moved or migrating) is `Moved`, decided by [`elsewhere`]; the
    /// shard's own errors, a whole-call error and a reply of the wrong
    /// shape are retried with the shard's next batch.
    #[test]
    fn non_local_keys_and_shard_errors() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            // Verbatim from a 7.0.15 replica (a failed-over old primary).
            text("ERR Script attempted to access a non local key in a cluster node"),
            text("ERR Script attempted to execute a command while the cluster is down"),
            text("READONLY You can't write against a read only replica."),
            Value::Nil,
            text("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ]);
        assert_eq!(
            names(&chunk_fates(7, 900, &reply)),
            [
                "renewed",
                "lost",
                "moved",
                "unconfirmed",
                "unconfirmed",
                "unconfirmed",
                "lost"
            ]
        );
        let down = redis::parse_redis_value(b"-CLUSTERDOWN The cluster is down\r\n").unwrap();
        assert_eq!(names(&chunk_fates(2, 900, &down)), ["unconfirmed"; 2]);
        let short = Value::Array(vec![Value::Int(1)]);
        assert_eq!(names(&chunk_fates(2, 900, &short)), ["unconfirmed"; 2]);
    }

    /// A non local key goes one by one only when the map still names the
    /// node that answered and that node served other keys of the batch, or
    /// after a fetch that started after the first such answer (a migrating
    /// slot); while the map names it, the node served nothing and no such
    /// fetch completed, it is a shard failure (a failover the map missed);
    /// when the map names another node or none, it is sent in that batch.
    #[test]
    fn non_local_key_decisions() {
        let a = "10.0.0.1:7000";
        let b = "10.0.0.2:7000";
        use NonLocal::{Migrating, Since};
        /// The map's owner, whether the node served others, what was
        /// known, fetches now, and the decision.
        type Row<'a> = (Option<&'a str>, bool, Option<NonLocal>, u64, Elsewhere);
        let table: &[Row] = &[
            (Some(a), false, None, 5, Elsewhere::Shard),
            (Some(a), false, Some(Since(5)), 5, Elsewhere::Shard),
            (Some(a), false, Some(Since(5)), 6, Elsewhere::Shard),
            (Some(a), false, Some(Since(5)), 7, Elsewhere::OneByOne),
            (Some(a), false, Some(Migrating), 0, Elsewhere::OneByOne),
            (Some(a), true, None, 5, Elsewhere::OneByOne),
            (Some(b), false, None, 0, Elsewhere::Regroup),
            (Some(b), true, Some(Since(1)), 9, Elsewhere::Regroup),
            (Some(b), false, Some(Migrating), 9, Elsewhere::Regroup),
            (None, false, None, 0, Elsewhere::Regroup),
        ];
        for (owner, serving, seen, refreshes, expected) in table {
            assert_eq!(
                elsewhere(*owner, a, *serving, *seen, *refreshes),
                *expected,
                "owner {owner:?}, serving {serving}, seen {seen:?}, refreshes {refreshes}"
            );
        }
    }

    /// A node backs off only when it left most of a batch unanswered.
    #[test]
    fn one_unconfirmed_key_does_not_fail_the_node() {
        let table = [
            (1, 0, false),
            (1, 1, true),
            (10, 1, false),
            (10, 4, false),
            (10, 5, true),
            (10, 10, true),
            (0, 0, false),
            (usize::MAX, usize::MAX, true),
        ];
        for (total, unconfirmed, failed) in table {
            assert_eq!(
                node_failed(total, unconfirmed),
                failed,
                "{unconfirmed} of {total}"
            );
        }
    }

    /// The backoff of nodes the map no longer names is forgotten.
    #[test]
    fn backoff_of_departed_nodes_is_pruned() {
        let failing = || Failing {
            failures: 3,
            not_before: Instant::now(),
        };
        let mut shards: HashMap<Arc<str>, Failing> = HashMap::new();
        shards.insert("10.0.0.1:7000".into(), failing());
        shards.insert("10.0.0.2:7000".into(), failing());
        prune_shards(&mut shards, &Topology::standalone("10.0.0.1:7000"));
        let left: Vec<&str> = shards.keys().map(|a| a.as_ref()).collect();
        assert_eq!(left, ["10.0.0.1:7000"]);
        prune_shards(&mut shards, &Topology::standalone("10.0.0.3:7000"));
        assert!(shards.is_empty());
    }

    /// A one-by-one renewal gives up at the lease's expiry or one request
    /// timeout after its send, whichever is first, never at or before the
    /// send.
    #[test]
    fn singles_give_up_by_the_request_timeout() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let table = [
            // (expires after now, request timeout, gives up after now)
            (ms(30_000), ms(2_000), ms(2_000)),
            (ms(500), ms(2_000), ms(500)),
            (ms(0), ms(2_000), ms(1)),
            (ms(30_000), Duration::ZERO, ms(1)),
            (ms(30_000), Duration::MAX, ms(30_000)),
        ];
        for (expires, timeout, gives_up) in table {
            assert_eq!(
                single_deadline(now, now + expires, timeout),
                now + gives_up,
                "expires {expires:?}, request timeout {timeout:?}"
            );
        }
    }

    /// Leases sorted by TTL split into runs of one TTL of at most `chunk`.
    #[test]
    fn chunks_hold_one_ttl() {
        assert_eq!(chunk_ranges(&[], 2), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(chunk_ranges(&[5, 5, 5, 7], 2), [0..2, 2..3, 3..4]);
        assert_eq!(chunk_ranges(&[5, 5], 0), [0..1, 1..2]);
    }
}

#[cfg(test)]
#[path = "renew_props.rs"]
mod props;
