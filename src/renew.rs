//! The renewal task: keeps auto-renewed leases alive, batched per shard,
//! and reports the ones it loses.
//!
//! A handle plus a worker. Guards register their lease when acquired and
//! send it back for release when dropped; the worker ends when every
//! handle (the manager and all its guards) is gone.
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
//! lease is marked lost and `lost()` resolves); or not touchable on that
//! node (its slot moved or is migrating), in which case that lease is
//! renewed on its own through the router, which follows MOVED and ASK. A
//! lease that cannot be confirmed before its TTL runs out (its node is
//! unreachable) is marked lost too: the holder can no longer know it holds
//! it.
//!
//! Requests are not awaited in turn: the worker keeps them in flight and
//! acts on each as it lands, while it goes on ticking. A dead or failing-over
//! node therefore delays only its own leases (whose requests end when they
//! expire, at the latest), never the renewal of the other shards.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::{FuturesUnordered, StreamExt};
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Client;
use crate::lock::{Lease, release_lease};
use crate::redirect::Action;
use crate::scripts;

/// Sends leases to the renewal worker.
pub(crate) struct RenewHandle {
    tx: mpsc::UnboundedSender<Msg>,
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
        // A closed channel means the worker died; the lease then simply
        // expires after its TTL, and `lost()` cannot be told.
        let schedule = lease.schedule();
        let _ = self.tx.send(Msg::Register(lease, schedule));
    }

    /// Releases `lease` soon (its guard was dropped).
    pub(crate) fn release(&self, lease: Arc<Lease>) {
        let _ = self.tx.send(Msg::Release(lease));
    }

    /// Stops (or resumes) sending renewals, as a holder cut off from Redis
    /// would; leases then expire and are reported lost. For fault tests.
    #[cfg(feature = "testkit")]
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Relaxed);
    }
}

/// Starts the worker; it ends when every handle is dropped.
pub(crate) fn spawn(client: Client, interval: Duration, chunk: usize) -> RenewHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let paused = Arc::new(AtomicBool::new(false));
    let worker = Worker {
        paused: paused.clone(),
        client,
        interval,
        chunk,
        queue: BinaryHeap::new(),
        releases: Vec::new(),
    };
    tokio::spawn(worker.run(rx));
    RenewHandle { tx, paused }
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
    releases: Vec<Arc<Lease>>,
}

/// What became of one lease in a request.
enum Fate {
    /// Its key now expires this many milliseconds after the request was
    /// sent (the TTL the request carried, which `extend` may have changed
    /// since).
    Renewed(u32),
    Lost,
    /// Could not be decided here; retry through the router.
    Retry,
}

/// A request of the worker in flight; it never borrows the worker, so the
/// worker keeps ticking while a slow node or a failover holds it up.
type Flight = BoxFuture<'static, Landing>;

/// What a request in flight brings back.
enum Landing {
    /// A node's batch, sent at `sent_at`: each lease and its fate.
    Batch {
        sent_at: Instant,
        fates: Vec<(Due, Fate)>,
    },
    /// One lease renewed on its own through the router.
    Single {
        sent_at: Instant,
        entry: Due,
        fate: Fate,
    },
    /// Background releases done.
    Released,
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
        // Manager and guards are gone: release what was dropped last, and
        // let the requests in flight end (each is bounded by its deadline).
        self.release_dropped(&flights);
        while flights.next().await.is_some() {}
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

    /// Releases the leases of dropped guards, all at once, in the background.
    fn release_dropped(&mut self, flights: &FuturesUnordered<Flight>) {
        if self.releases.is_empty() {
            return;
        }
        let leases = std::mem::take(&mut self.releases);
        let client = self.client.clone();
        flights.push(Box::pin(async move {
            join_all(leases.iter().map(|lease| {
                let client = &client;
                async move {
                    // A failed release leaves the lease to expire after its TTL.
                    if let Err(e) = release_lease(client, lease).await {
                        tracing::debug!(error = %e, "background release failed; the lease expires by its TTL");
                    }
                }
            }))
            .await;
            Landing::Released
        }));
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
        for entry in due {
            match topology.primary_of_slot(entry.lease.slot) {
                Some(node) => groups.entry(node.addr().clone()).or_default().push(entry),
                None => flights.push(Box::pin(renew_one(self.client.clone(), entry))),
            }
        }
        drop(topology);
        for (addr, entries) in groups {
            let client = self.client.clone();
            let batch = renew_on_node(client, addr, entries, self.chunk, self.interval);
            flights.push(Box::pin(batch));
        }
    }

    /// Acts on the outcome of one request.
    fn land(&mut self, landing: Landing, flights: &FuturesUnordered<Flight>) {
        match landing {
            Landing::Batch { sent_at, fates } => {
                for (entry, fate) in fates {
                    match fate {
                        Fate::Renewed(ttl_ms) => self.requeue(entry, sent_at, ttl_ms),
                        Fate::Lost => {
                            entry.lease.mark_lost();
                        }
                        Fate::Retry => {
                            flights.push(Box::pin(renew_one(self.client.clone(), entry)))
                        }
                    }
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
                    Fate::Retry if now >= entry.expires => {
                        entry.lease.mark_lost();
                    }
                    Fate::Retry => self.queue.push(Due {
                        at: now + self.interval,
                        ..entry
                    }),
                }
            }
            Landing::Released => {}
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
        None => entries.iter().map(|_| Fate::Retry).collect(),
    };
    let fates = entries.into_iter().map(|(_, e)| e).zip(fates).collect();
    Landing::Batch { sent_at, fates }
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
            _ => Fate::Retry,
        },
        Err(_) => Fate::Retry,
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
                // An error text: not touchable on this node.
                _ => Fate::Retry,
            })
            .collect(),
        // The whole call failed (e.g. the node is not a primary any more).
        _ => (0..n).map(|_| Fate::Retry).collect(),
    }
}

#[cfg(test)]
#[path = "renew_props.rs"]
mod props;
