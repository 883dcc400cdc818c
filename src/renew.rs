//! The renewal task: keeps auto-renewed leases alive, batched per shard,
//! and reports the ones it loses.
//!
//! A handle plus a worker. Guards register their lease when acquired and
//! send it back for release when dropped; the worker ends when every
//! handle (the manager and all its guards) is gone. It runs on the runtime
//! that started it; if that runtime shuts down while the manager lives on,
//! the next registration or release (made from within another runtime)
//! starts a new worker there, and the leases the old one had expire by
//! their TTL.
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
//! Per lease the answer is: renewed; gone or held by another token (the
//! lease is marked lost and `lost()` resolves); or its key is not on that
//! node (the script reports "non local key": its slot moved or is
//! migrating), in which case that lease alone is renewed through the
//! router, which follows MOVED and ASK.
//!
//! Failure costs stay per shard: a batch that fails as a whole (transport
//! error, timeout, `CLUSTERDOWN`, a node that is no longer a primary), and
//! any per-lease error other than "non local key", puts the shard's leases
//! back to be sent again as one batch when the shard may be tried again:
//! consecutive failures of a node back it off (jittered, doubling from one
//! renewal interval up to 1 s or the interval if longer), and each retry
//! groups the leases by the slot map then current (the failure also hints
//! the refresher). Leases of a slot the map leaves unassigned wait for the
//! next tick. No lease waits past its expiry: a lease that cannot be
//! confirmed before its TTL runs out is marked lost then, since the holder
//! can no longer know it holds it.
//!
//! Requests are not awaited in turn: the worker keeps them in flight and
//! acts on each as it lands, while it goes on ticking. A dead or failing-over
//! node therefore delays only its own leases (whose requests end when they
//! expire, at the latest), never the renewal of the other shards.
//!
//! The worker also runs the background releases of dropped guards (and of
//! leases handed over by [`crate::LockManager`]'s clean-ups), batched per
//! node with at most one batch in flight per node (see [`crate::releases`]);
//! when the last handle is gone it finishes them before it ends.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::client::Client;
use crate::lock::Lease;
use crate::redirect::Action;
use crate::releases::{Released, Releases};
use crate::scripts;

/// Longest a failing shard waits between two batches (unless the renewal
/// interval is longer); a lease never waits past its expiry.
const SHARD_BACKOFF_CAP: Duration = Duration::from_secs(1);

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
}

enum Msg {
    /// A lease and the schedule it was registered under (read when the
    /// message is sent: an `extend` that starts a new schedule before the
    /// worker reads this message makes it stale).
    Register(Arc<Lease>, u32),
    Release(Arc<Lease>),
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

    /// Hands `msg` to the worker. The worker runs on the runtime that
    /// started it and ends when that runtime shuts down; the next message
    /// (sent from within another runtime) starts a new worker there. The
    /// leases the old worker had are not renewed any more: they expire by
    /// their TTL. Outside any runtime the message is dropped (the lease
    /// then expires by its TTL too).
    fn send(&self, msg: Msg) {
        let Err(mpsc::error::SendError(msg)) = self.tx.load().send(msg) else {
            return;
        };
        let _respawn = self.respawn.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::error::SendError(msg)) = self.tx.load().send(msg)
            && tokio::runtime::Handle::try_current().is_ok()
        {
            tracing::debug!("the renewal task stopped with its runtime; starting it again");
            let tx = start(&self.client, self.interval, self.chunk, &self.paused);
            let _ = tx.send(msg);
            self.tx.store(Arc::new(tx));
        }
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
    let tx = start(&client, interval, chunk, &paused);
    RenewHandle {
        tx: ArcSwap::from_pointee(tx),
        respawn: Mutex::new(()),
        client,
        interval,
        chunk,
        paused,
    }
}

fn start(
    client: &Client,
    interval: Duration,
    chunk: usize,
    paused: &Arc<AtomicBool>,
) -> mpsc::UnboundedSender<Msg> {
    let (tx, rx) = mpsc::unbounded_channel();
    let worker = Worker {
        paused: paused.clone(),
        client: client.clone(),
        interval,
        chunk,
        queue: BinaryHeap::new(),
        releases: Releases::default(),
        shards: HashMap::new(),
    };
    tokio::spawn(worker.run(rx));
    tx
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
    /// Nodes whose last batch failed, and when they may be tried again.
    shards: HashMap<Arc<str>, Failing>,
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
    /// Its key is not on that node (slot moved or migrating): renew it on
    /// its own through the router, which follows MOVED and ASK.
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
    /// One lease renewed on its own through the router.
    Single {
        sent_at: Instant,
        entry: Due,
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
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
                    self.release_dropped(&flights);
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
                    lease,
                });
            }
            Msg::Release(lease) => self.releases.push(lease),
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

    /// Puts `entry` back to be retried at `at`, but never later than its
    /// expiry, so a lease not confirmed in time is reported lost on time.
    fn retry_at(&mut self, entry: Due, at: Instant) {
        self.queue.push(Due {
            at: at.min(entry.expires),
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
                    // The shard backs off: its leases wait for its next try.
                    Some(at) => self.retry_at(entry, at),
                    None => groups.entry(node.addr().clone()).or_default().push(entry),
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
            let batch = renew_on_node(client, addr, entries, self.chunk, self.interval);
            flights.push(Box::pin(batch));
        }
    }

    /// Acts on the outcome of one request.
    fn land(&mut self, landing: Landing, flights: &FuturesUnordered<Flight>) {
        match landing {
            Landing::Batch {
                addr,
                sent_at,
                fates,
            } => {
                let mut failed = false;
                let mut unconfirmed = Vec::new();
                for (entry, fate) in fates {
                    match fate {
                        Fate::Renewed(ttl_ms) => self.requeue(entry, sent_at, ttl_ms),
                        Fate::Lost => {
                            entry.lease.mark_lost();
                        }
                        Fate::Moved => {
                            flights.push(Box::pin(renew_one(self.client.clone(), entry)))
                        }
                        Fate::Unconfirmed => {
                            failed = true;
                            unconfirmed.push(entry);
                        }
                    }
                }
                self.note_batch(&addr, failed);
                if failed {
                    // CLUSTERDOWN, READONLY, …: the map may be out of date.
                    let _ = self.client.hint_refresh();
                }
                // The whole shard's leases are retried as one batch when
                // it may be tried again, on the then current slot map.
                let at = self
                    .not_before(&addr)
                    .unwrap_or_else(|| Instant::now() + self.interval);
                for entry in unconfirmed {
                    self.retry_at(entry, at);
                }
            }
            Landing::Single {
                sent_at,
                entry,
                fate,
            } => {
                let now = Instant::now();
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
                    Fate::Moved | Fate::Unconfirmed => self.retry_at(entry, now + self.interval),
                }
            }
            Landing::Released(released) => self.land_release(released, flights),
        }
    }

    /// Schedules the next renewal of a lease renewed for `ttl_ms` by a
    /// request sent at `sent_at` (its new expiry counts from the send, the
    /// safe side).
    fn requeue(&mut self, entry: Due, sent_at: Instant, ttl_ms: u32) {
        crate::metrics::renewed();
        if entry.schedule != entry.lease.schedule() {
            // An `extend` was sent after this renewal and set the lease's
            // own TTL and schedule; this reply must not move them.
            return;
        }
        let ttl = Duration::from_millis(ttl_ms.into());
        entry.lease.confirm(sent_at, ttl);
        self.queue.push(Due {
            schedule: entry.schedule,
            at: sent_at + ttl / 3,
            expires: sent_at + ttl,
            lease: entry.lease,
        });
    }
}

/// One pipeline to `addr` with a `renew_batch.lua` call per chunk of
/// leases (a call carries one TTL, so leases are grouped by TTL first).
/// The request is cut off when the first of its leases expires (but not
/// before one renewal `interval`): the leases not confirmed by then are
/// decided one by one (see [`renew_one`]), each by its own expiry.
async fn renew_on_node(
    client: Client,
    addr: Arc<str>,
    entries: Vec<Due>,
    chunk: usize,
    interval: Duration,
) -> Landing {
    let sent_at = Instant::now();
    let first_expiry = entries.iter().map(|e| e.expires).min();
    let cutoff = first_expiry.unwrap_or(sent_at).max(sent_at + interval);
    let deadline = cutoff.min(sent_at + client.request_timeout());
    let mut entries: Vec<(u32, Due)> = entries.into_iter().map(|e| (ttl_ms(&e.lease), e)).collect();
    entries.sort_by_key(|(ttl_ms, _)| *ttl_ms);
    let chunks: Vec<&[(u32, Due)]> = entries
        .chunk_by(|a, b| a.0 == b.0)
        .flat_map(|same_ttl| same_ttl.chunks(chunk))
        .collect();
    let mut replies = None;
    // By SHA1 first; by source if the node does not know the script.
    for eval in [false, true] {
        let pipeline = renew_pipeline(&chunks, eval);
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
    crate::metrics::renew_batch(entries.len());
    let fates: Vec<Fate> = match replies {
        Some(replies) => chunks
            .iter()
            .zip(replies.iter().chain(std::iter::repeat(&Value::Nil)))
            .flat_map(|(chunk, reply)| chunk_fates(chunk.len(), chunk[0].0, reply))
            .collect(),
        None => entries.iter().map(|_| Fate::Unconfirmed).collect(),
    };
    let fates = entries.into_iter().map(|(_, e)| e).zip(fates).collect();
    Landing::Batch {
        addr,
        sent_at,
        fates,
    }
}

/// Renews one lease through the router (which follows MOVED and ASK),
/// trying until the lease expires.
async fn renew_one(client: Client, entry: Due) -> Landing {
    let sent_at = Instant::now();
    let lease = &entry.lease;
    let ttl_ms = ttl_ms(lease);
    let deadline = entry.expires.max(sent_at + Duration::from_millis(1));
    let request = scripts::extend(&lease.key, &lease.value(), ttl_ms.into());
    let fate = match client.execute_until(lease.slot, &request, deadline).await {
        Ok(replies) => match replies.first() {
            Some(Value::Int(1)) => Fate::Renewed(ttl_ms),
            Some(Value::Int(0)) => Fate::Lost,
            _ => Fate::Unconfirmed,
        },
        Err(_) => Fate::Unconfirmed,
    };
    Landing::Single {
        sent_at,
        entry,
        fate,
    }
}

/// The lease's TTL in milliseconds (validated to fit on input).
fn ttl_ms(lease: &Lease) -> u32 {
    u32::try_from(lease.ttl().as_millis()).unwrap_or(u32::MAX)
}

/// `EVALSHA renew_batch 0 ttl key value key value …` per chunk.
fn renew_pipeline(chunks: &[&[(u32, Due)]], eval: bool) -> redis::Pipeline {
    let script = &*scripts::RENEW_BATCH;
    let mut pipeline = redis::Pipeline::with_capacity(chunks.len());
    for chunk in chunks {
        let mut cmd = if eval {
            let mut c = redis::cmd("EVAL");
            c.arg(script.source());
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(script.sha1());
            c
        };
        cmd.arg(0).arg(chunk[0].0);
        for (_, entry) in chunk.iter() {
            cmd.arg(&entry.lease.key[..]).arg(entry.lease.value());
        }
        pipeline.add_command(cmd);
    }
    pipeline
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT")
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

/// The fate of a lease whose entry in a `renew_batch.lua` reply is an error
/// text: its key is elsewhere when the script could not reach it on this
/// node ("non local key": the slot moved or is migrating; renewed on its
/// own through the router); any other error (the cluster is down, the node
/// is read-only, …) is the shard's, retried with its next batch.
fn item_error_fate(item: &Value) -> Fate {
    let text = match item {
        Value::BulkString(b) => String::from_utf8_lossy(b),
        Value::SimpleString(s) => s.as_str().into(),
        _ => return Fate::Unconfirmed,
    };
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

    /// Per-lease errors go one by one through the router only when the key
    /// is elsewhere ("non local key"); the shard's own errors, a whole-call
    /// error and a reply of the wrong shape are retried with the shard's
    /// next batch.
    #[test]
    fn only_moved_keys_go_one_by_one() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::Int(0),
            text("ERR Script attempted to access a non local key in a cluster node script: f_1"),
            text("ERR Script attempted to execute a command while the cluster is down"),
            text("READONLY You can't write against a read only replica."),
            Value::Nil,
        ]);
        assert_eq!(
            names(&chunk_fates(6, 900, &reply)),
            [
                "renewed",
                "lost",
                "moved",
                "unconfirmed",
                "unconfirmed",
                "unconfirmed"
            ]
        );
        let down = redis::parse_redis_value(b"-CLUSTERDOWN The cluster is down\r\n").unwrap();
        assert_eq!(names(&chunk_fates(2, 900, &down)), ["unconfirmed"; 2]);
        let short = Value::Array(vec![Value::Int(1)]);
        assert_eq!(names(&chunk_fates(2, 900, &short)), ["unconfirmed"; 2]);
    }
}

#[cfg(test)]
#[path = "renew_props.rs"]
mod props;
