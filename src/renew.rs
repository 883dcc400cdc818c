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
//! each carrying up to `renew_chunk` leases in ARGV (undeclared keys, so one
//! call covers many slots of that node). Round trips per tick are therefore
//! one per shard, and script calls per tick one per chunk: both grow with
//! shards and chunks, not with leases.
//!
//! Per lease the answer is: renewed; gone or held by another token (the
//! lease is marked lost and `lost()` resolves); or not touchable on that
//! node (its slot moved or is migrating), in which case that lease is
//! renewed on its own through the router, which follows MOVED and ASK. A
//! lease that cannot be confirmed before its TTL runs out (its node is
//! unreachable) is marked lost too: the holder can no longer know it holds
//! it.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use futures_util::future::join_all;
use redis::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Client;
use crate::lock::Lease;
use crate::redirect::Action;
use crate::scripts;

/// Sends leases to the renewal worker.
pub(crate) struct RenewHandle {
    tx: mpsc::UnboundedSender<Msg>,
    paused: Arc<AtomicBool>,
}

enum Msg {
    Register(Arc<Lease>),
    Release(Arc<Lease>),
}

impl RenewHandle {
    /// Starts renewing `lease`.
    pub(crate) fn register(&self, lease: Arc<Lease>) {
        // A closed channel means the worker died; the lease then simply
        // expires after its TTL, and `lost()` cannot be told.
        let _ = self.tx.send(Msg::Register(lease));
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

/// A lease waiting for its next renewal.
struct Due {
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
    queue: BinaryHeap<Due>,
    releases: Vec<Arc<Lease>>,
}

/// What became of one lease in a tick.
enum Fate {
    Renewed,
    Lost,
    /// Could not be decided here; retry through the router.
    Retry,
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.accept(msg),
                    None => break,
                },
                _ = tick.tick() => {
                    // Take everything already queued, so a burst of
                    // registrations lands in this tick's batches.
                    while let Ok(msg) = rx.try_recv() {
                        self.accept(msg);
                    }
                    self.release_dropped().await;
                    self.renew_due().await;
                }
            }
        }
        // Manager and guards are gone: release what was dropped last.
        self.release_dropped().await;
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Register(lease) => {
                let now = Instant::now();
                let ttl = lease.ttl();
                self.queue.push(Due {
                    at: now + ttl / 3,
                    expires: now + ttl,
                    lease,
                });
            }
            Msg::Release(lease) => self.releases.push(lease),
        }
    }

    /// Releases the leases of dropped guards, all at once.
    async fn release_dropped(&mut self) {
        if self.releases.is_empty() {
            return;
        }
        let leases = std::mem::take(&mut self.releases);
        let client = &self.client;
        join_all(leases.iter().map(|lease| async move {
            let request = scripts::release(&lease.key, &lease.value());
            // A failed release leaves the lease to expire after its TTL.
            if let Err(e) = client.execute(lease.slot, &request).await {
                tracing::debug!(error = %e, "background release failed; the lease expires by its TTL");
            }
        }))
        .await;
    }

    /// Renews every lease that is due, one pipeline per shard.
    async fn renew_due(&mut self) {
        let now = Instant::now();
        let mut due = Vec::new();
        while self.queue.peek().is_some_and(|d| d.at <= now) {
            let entry = self.queue.pop().expect("peeked");
            // Released or lost leases leave the queue here.
            if entry.lease.is_held() {
                due.push(entry);
            }
        }
        if due.is_empty() {
            return;
        }
        if self.paused.load(Relaxed) {
            // Nothing is sent: each lease is lost once its TTL has run out.
            for entry in due {
                if now >= entry.expires {
                    entry.lease.mark_lost();
                } else {
                    self.queue.push(Due {
                        at: now + self.interval,
                        ..entry
                    });
                }
            }
            return;
        }

        // Group by (primary, ttl): one script call carries one TTL.
        let topology = self.client.topology();
        let mut groups: HashMap<(Arc<str>, u32), Vec<Due>> = HashMap::new();
        let mut unrouted = Vec::new();
        for entry in due {
            match topology.primary_of_slot(entry.lease.slot) {
                Some(node) => {
                    let ttl_ms = entry.lease.ttl().as_millis() as u32;
                    groups
                        .entry((node.addr().clone(), ttl_ms))
                        .or_default()
                        .push(entry);
                }
                None => unrouted.push(entry),
            }
        }
        drop(topology);

        let sent_at = Instant::now();
        let batches = groups
            .into_iter()
            .map(|((addr, ttl_ms), entries)| self.renew_on_node(addr, ttl_ms, entries));
        let mut retry = unrouted;
        for outcome in join_all(batches).await {
            for (entry, fate) in outcome {
                match fate {
                    Fate::Renewed => self.requeue(entry, sent_at),
                    Fate::Lost => {
                        entry.lease.mark_lost();
                    }
                    Fate::Retry => retry.push(entry),
                }
            }
        }
        if !retry.is_empty() {
            self.renew_one_by_one(retry).await;
        }
    }

    /// One pipeline to `addr` with `renew_batch.lua` per chunk of leases.
    async fn renew_on_node(
        &self,
        addr: Arc<str>,
        ttl_ms: u32,
        entries: Vec<Due>,
    ) -> Vec<(Due, Fate)> {
        let deadline = Instant::now() + self.client.request_timeout();
        let chunks: Vec<&[Due]> = entries.chunks(self.chunk).collect();
        let mut replies = None;
        // By SHA1 first; by source if the node does not know the script.
        for eval in [false, true] {
            let pipeline = renew_pipeline(&chunks, ttl_ms, eval);
            match self
                .client
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
                        let _ = self.client.hint_refresh();
                    }
                    break;
                }
            }
        }
        crate::metrics::renew_batch(entries.len(), chunks.len());
        let fates: Vec<Fate> = match replies {
            Some(replies) => chunks
                .iter()
                .zip(replies.iter().chain(std::iter::repeat(&Value::Nil)))
                .flat_map(|(chunk, reply)| chunk_fates(chunk.len(), reply))
                .collect(),
            None => entries.iter().map(|_| Fate::Retry).collect(),
        };
        entries.into_iter().zip(fates).collect()
    }

    /// Renews leases one by one through the router (which follows MOVED
    /// and ASK); a lease that cannot be confirmed before it expires is lost.
    async fn renew_one_by_one(&mut self, entries: Vec<Due>) {
        let client = &self.client;
        let sent_at = Instant::now();
        let results = join_all(entries.into_iter().map(|entry| async move {
            let lease = &entry.lease;
            let deadline = entry.expires.max(Instant::now() + Duration::from_millis(1));
            let request =
                scripts::extend(&lease.key, &lease.value(), lease.ttl().as_millis() as u64);
            let fate = match client.execute_until(lease.slot, &request, deadline).await {
                Ok(replies) => match replies.first() {
                    Some(Value::Int(1)) => Fate::Renewed,
                    Some(Value::Int(0)) => Fate::Lost,
                    _ => Fate::Retry,
                },
                Err(_) => Fate::Retry,
            };
            (entry, fate)
        }))
        .await;
        let now = Instant::now();
        for (entry, fate) in results {
            match fate {
                Fate::Renewed => self.requeue(entry, sent_at),
                Fate::Lost => {
                    entry.lease.mark_lost();
                }
                Fate::Retry if now >= entry.expires => {
                    entry.lease.mark_lost();
                }
                Fate::Retry => self.queue.push(Due {
                    at: now + self.interval,
                    ..entry
                }),
            }
        }
    }

    /// Schedules the next renewal of a lease renewed by a request sent at
    /// `sent_at` (its new expiry counts from the send, the safe side).
    fn requeue(&mut self, entry: Due, sent_at: Instant) {
        crate::metrics::renewed();
        let ttl = entry.lease.ttl();
        self.queue.push(Due {
            at: sent_at + ttl / 3,
            expires: sent_at + ttl,
            lease: entry.lease,
        });
    }
}

/// `EVALSHA renew_batch 0 ttl key value key value …` per chunk.
fn renew_pipeline(chunks: &[&[Due]], ttl_ms: u32, eval: bool) -> redis::Pipeline {
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
        cmd.arg(0).arg(ttl_ms);
        for entry in chunk.iter() {
            cmd.arg(&entry.lease.key[..]).arg(entry.lease.value());
        }
        pipeline.add_command(cmd);
    }
    pipeline
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Per-lease fates from one `renew_batch.lua` reply for `n` leases.
fn chunk_fates(n: usize, reply: &Value) -> Vec<Fate> {
    match reply {
        Value::Array(items) if items.len() == n => items
            .iter()
            .map(|item| match item {
                Value::Int(1) => Fate::Renewed,
                Value::Int(0) => Fate::Lost,
                // An error text: not touchable on this node.
                _ => Fate::Retry,
            })
            .collect(),
        // The whole call failed (e.g. the node is not a primary any more).
        _ => (0..n).map(|_| Fate::Retry).collect(),
    }
}
