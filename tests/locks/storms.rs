//! What renewal and background release cost when a shard fails: requests
//! per shard and tick, not per lease.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{LockGuard, LockManager, SLOT_COUNT, key_slot};
use tokio::time::Instant;

use crate::support::{key_in, lock_key, wait_until};

/// Leases held through the outage.
const LEASES: usize = 10_000;
/// Their TTL: renewed every second (a third of it).
const TTL: Duration = Duration::from_secs(3);
/// The manager's renewal tick (the default).
const TICK: Duration = Duration::from_millis(100);
/// Bound for the waits on a failover and on every lease being decided.
const PATIENCE: Duration = Duration::from_secs(60);

async fn manager(cluster: &TestCluster) -> LockManager {
    LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .request_timeout(Duration::from_secs(20))
        .renew_interval(TICK)
        .build()
        .await
        .unwrap()
}

/// `LEASES` auto-renewed leases of `ttl`, spread evenly over the slots.
async fn hold_many(mgr: &LockManager, prefix: &str, ttl: Duration) -> Vec<LockGuard> {
    let keys: Vec<String> = (0..LEASES)
        .map(|i| {
            key_in(
                (i * SLOT_COUNT as usize / LEASES) as u16,
                &format!("{prefix}{i}"),
            )
        })
        .collect();
    futures::stream::iter(&keys)
        .map(|k| mgr.lock(k).ttl(ttl).acquire())
        .buffer_unordered(64)
        .try_collect()
        .await
        .unwrap()
}

/// kill -9 of a primary while 10,000 auto-renewed leases are held: from the
/// kill until every lease of the killed shard is decided (reported lost,
/// or renewed by a request sent after the failover), the renewal task
/// sends a bounded number of requests per shard and tick (failed batches
/// are retried as batches, with backoff, on the current topology), not one
/// routed, retrying request per lease; and the killed shard's leases are
/// still reported lost when their TTL runs out unconfirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_cost_stays_per_shard_through_a_primary_kill() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let guards = hold_many(&a, "storm", TTL).await;
    let victim = cluster.primary_of_slot(0).await.unwrap();
    let shards = cluster.primaries().await.unwrap().len() as u64;
    let topology = a.client().topology();
    let on_victim: Vec<&LockGuard> = guards
        .iter()
        .filter(|g| {
            let node = topology.primary_of_slot(key_slot(g.key()));
            node.is_some_and(|n| **n.addr() == *victim)
        })
        .collect();
    assert!(
        on_victim.len() > LEASES / 4,
        "{} leases on {victim}",
        on_victim.len()
    );
    // Every lease renewed at least once: the schedule is in its steady state.
    let since = Instant::now();
    let g = &guards;
    wait_until(PATIENCE, "a renewal of every lease", || async move {
        g.iter().all(|g| g.valid_until() > since + TTL)
    })
    .await;
    assert!(guards.iter().all(|g| !g.is_lost()));

    let before = a.client().stats();
    cluster.kill(&victim).unwrap();
    let killed = Instant::now();
    let (c, v) = (&cluster, &victim);
    wait_until(PATIENCE, "a replica to take over", || async move {
        matches!(c.primary_of_slot(0).await, Ok(p) if p != *v)
    })
    .await;
    let promoted = Instant::now();
    let on_v = &on_victim;
    wait_until(
        PATIENCE,
        "every lease of the killed shard decided",
        || async move {
            on_v.iter()
                .all(|g| g.is_lost() || g.valid_until() > promoted + TTL)
        },
    )
    .await;
    let window = killed.elapsed();
    let after = a.client().stats();

    let attempts = after.attempts - before.attempts;
    let ticks = (window.as_millis() / TICK.as_millis()) as u64 + 1;
    let lost_victim = on_victim.iter().filter(|g| g.is_lost()).count();
    let lost_all = guards.iter().filter(|g| g.is_lost()).count();
    println!(
        "{LEASES} leases (ttl {TTL:?}, tick {TICK:?}), kill -9 {victim} ({} of its leases): \
         {attempts} requests ({} retryable errors, {} deadlines) in the {window:?} until all were \
         decided ({ticks} ticks, {shards} shards, failover after {:?}); {lost_victim} of them \
         and {lost_all} leases in all reported lost",
        on_victim.len(),
        after.retryable_errors - before.retryable_errors,
        after.deadlines_exceeded - before.deadlines_exceeded,
        promoted - killed,
    );
    // One batch per shard and tick, a second one at most for leases due
    // in the same tick after a failed batch came back (per-key requests
    // only for keys that moved: none here).
    assert!(
        attempts <= 2 * shards * ticks,
        "{attempts} requests in {ticks} ticks for {shards} shards"
    );
    drop(guards);
}

/// `CLUSTER FAILOVER` of one shard while 10,000 auto-renewed leases are
/// held and the client's slot map still names the old primary: the old
/// primary, now a replica, answers "non local key" for every key of a
/// renewal batch, and the renewal task treats that as a shard failure
/// (refresh, retry as a batch on the new map) — a bounded number of
/// requests per shard and tick until every lease of that shard is renewed
/// on the new primary, not one routed request per lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_cost_stays_per_shard_through_a_failover() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let guards = hold_many(&a, "swap", TTL).await;
    let old = cluster.primary_of_slot(0).await.unwrap();
    let shards = cluster.primaries().await.unwrap().len() as u64;
    let topology = a.client().topology();
    let on_old: Vec<&LockGuard> = guards
        .iter()
        .filter(|g| {
            let node = topology.primary_of_slot(key_slot(g.key()));
            node.is_some_and(|n| **n.addr() == *old)
        })
        .collect();
    drop(topology);
    assert!(
        on_old.len() > LEASES / 4,
        "{} leases on {old}",
        on_old.len()
    );
    let since = Instant::now();
    let g = &guards;
    wait_until(PATIENCE, "a renewal of every lease", || async move {
        g.iter().all(|g| g.valid_until() > since + TTL)
    })
    .await;

    let before = a.client().stats();
    let started = Instant::now();
    let new = cluster.failover(&old).await.unwrap();
    let done = Instant::now();
    // What the old primary, now a replica, answers a script that reaches
    // one of its former keys: not READONLY, "non local key".
    let probe = redis::cmd("EVAL")
        .arg("local ok, e = pcall(redis.call, 'GET', ARGV[1]) return tostring(e.err or e)")
        .arg(0)
        .arg(lock_key(&String::from_utf8_lossy(on_old[0].key())))
        .clone();
    let reply = cluster.command(&old, &probe).await.unwrap();
    let text = match &reply {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    assert!(
        text.contains("non local key"),
        "the old primary answered {text:?}"
    );
    let on = &on_old;
    wait_until(
        PATIENCE,
        "every lease of the failed-over shard decided",
        || async move {
            on.iter()
                .all(|g| g.is_lost() || g.valid_until() > done + TTL)
        },
    )
    .await;
    let window = started.elapsed();
    let after = a.client().stats();
    let attempts = after.attempts - before.attempts;
    let ticks = (window.as_millis() / TICK.as_millis()) as u64 + 1;
    let lost = on_old.iter().filter(|g| g.is_lost()).count();
    println!(
        "{LEASES} leases (ttl {TTL:?}, tick {TICK:?}), CLUSTER FAILOVER {old} -> {new} ({} of \
         its leases; the old primary answers {text:?}): {attempts} requests ({} moved, {} \
         retryable errors) in the {window:?} until all were decided ({ticks} ticks, {shards} \
         shards, failover took {:?}); {lost} reported lost",
        on_old.len(),
        after.moved - before.moved,
        after.retryable_errors - before.retryable_errors,
        done - started,
    );
    // One batch per shard and tick, a second one at most for leases put
    // back in the same tick (no key is migrating: nothing goes one by one).
    assert!(
        attempts <= 2 * shards * ticks,
        "{attempts} requests in {ticks} ticks for {shards} shards"
    );
    drop(guards);
}

/// Dropping 10,000 guards while the primary of a third of them is paused
/// releases every lease on the other shards without waiting for the paused
/// one, in requests per node (at least one per 500 leases, far fewer than
/// one per lease), and the paused shard's leases once it answers again;
/// the leases' TTL (120 s) is far longer than the test may wait, so only a
/// release can have removed their keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_releases_go_per_node() {
    const LONG_TTL: Duration = Duration::from_secs(120);
    /// Far shorter than `LONG_TTL`: no key expires by its TTL meanwhile.
    const WAIT: Duration = Duration::from_secs(30);
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let guards = hold_many(&a, "drop", LONG_TTL).await;
    let held_since = Instant::now();
    let paused = cluster.primary_of_slot(0).await.unwrap();
    let primaries = cluster.primaries().await.unwrap();
    let others: Vec<String> = primaries
        .iter()
        .filter(|p| **p != paused)
        .cloned()
        .collect();
    let c = &cluster;
    let keys_on = |addr: String| async move {
        match c.command(&addr, &redis::cmd("DBSIZE")).await {
            Ok(redis::Value::Int(n)) => n,
            other => panic!("DBSIZE on {addr}: {other:?}"),
        }
    };
    let mut held = 0;
    for p in &primaries {
        held += keys_on(p.clone()).await;
    }
    assert_eq!(held, LEASES as i64, "every lease's key is on the server");
    let topology = a.client().topology();
    let on_others = guards
        .iter()
        .filter(|g| {
            let node = topology.primary_of_slot(key_slot(g.key()));
            node.is_some_and(|n| **n.addr() != *paused)
        })
        .count();
    drop(topology);
    cluster.pause(&paused).unwrap();
    let before = a.client().stats();
    drop(guards);
    let o = &others;
    wait_until(
        WAIT,
        "every lease on the other shards released",
        || async move {
            for addr in o {
                if keys_on(addr.clone()).await != 0 {
                    return false;
                }
            }
            true
        },
    )
    .await;
    let released = a.client().stats();
    cluster.resume(&paused).unwrap();
    let p = &paused;
    wait_until(WAIT, "the paused shard's leases released", || async move {
        keys_on(p.clone()).await == 0
    })
    .await;
    assert!(
        held_since.elapsed() < LONG_TTL / 2,
        "the keys could have expired by their TTL"
    );
    let attempts = released.attempts - before.attempts;
    println!(
        "{on_others} releases on healthy shards done with {attempts} requests while {paused} was paused"
    );
    assert!(
        attempts >= (on_others / 500) as u64,
        "{attempts} requests for {on_others} releases: fewer than one per batch of 500"
    );
    assert!(
        attempts < (on_others / 10) as u64,
        "{attempts} requests for {on_others} releases"
    );
}

/// A lease whose key a live migration has moved to the importing node
/// (its slot still the source's in every map) stays renewed: the source's
/// "non local key" is first taken as a shard failure, and once a topology
/// fetch confirms the map, the lease is renewed on its own through the
/// router (which follows ASK), well before its TTL runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_a_migrating_slot_stays_renewed() {
    const SLOT: u16 = 4242;
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let ttl = Duration::from_secs(3);
    let guard = a
        .lock(key_in(SLOT, "moving"))
        .ttl(ttl)
        .acquire()
        .await
        .unwrap();
    let source = cluster.primary_of_slot(SLOT).await.unwrap();
    let target = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    let mut migration = cluster.begin_migration(SLOT, &target).await.unwrap();
    assert_eq!(migration.move_keys(10).await.unwrap(), 1);
    let moved = Instant::now();
    // Renewed twice from the importing node: valid a whole TTL past two
    // renewal periods after the move.
    let g = &guard;
    wait_until(PATIENCE, "two renewals after the move", || async move {
        g.is_lost() || g.valid_until() > moved + ttl + 2 * ttl / 3
    })
    .await;
    assert!(!guard.is_lost(), "the lease of the migrating slot was lost");
    let stats = a.client().stats();
    assert!(stats.ask > 0, "renewed without ASK: {stats:?}");
    guard.release().await.unwrap();
    migration.finish().await.unwrap();
}

/// A lease that expires while its batch waits on a stalled node does not
/// cut that batch off: the fresh lease in the same batch is confirmed by
/// that one request when the node answers (no retry, no backoff), and only
/// the expired lease is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_near_expiry_does_not_cut_off_its_batch() {
    const SLOT: u16 = 777;
    const NEAR: Duration = Duration::from_millis(1800);
    const FRESH: Duration = Duration::from_secs(3);
    // No failover while the node is stopped for well under a second.
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(5),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    let a = manager(&cluster).await;
    let node = cluster.primary_of_slot(SLOT).await.unwrap();
    // One renewal first, so the node knows the script (no NOSCRIPT round).
    let warm = a
        .lock(key_in(SLOT, "warm"))
        .ttl(NEAR)
        .acquire()
        .await
        .unwrap();
    let first = warm.valid_until();
    let w = &warm;
    wait_until(
        PATIENCE,
        "a renewal",
        || async move { w.valid_until() > first },
    )
    .await;
    warm.release().await.unwrap();
    // Renewal held back, so that both leases are due in the same tick,
    // `near` with a third of its TTL left.
    a.pause_renewal(true);
    let acquired = Instant::now();
    let near = a
        .lock(key_in(SLOT, "near"))
        .ttl(NEAR)
        .acquire()
        .await
        .unwrap();
    let fresh = a
        .lock(key_in(SLOT, "fresh"))
        .ttl(FRESH)
        .acquire()
        .await
        .unwrap();
    // Both due, and put back together by the same paused tick.
    tokio::time::sleep_until(acquired + FRESH / 3 + 2 * TICK).await;
    assert!(!near.is_lost() && !fresh.is_lost());

    cluster.pause(&node).unwrap();
    let before = a.client().stats().attempts;
    let resumed = Instant::now();
    a.pause_renewal(false);
    let c = a.client();
    wait_until(PATIENCE, "the batch sent", || async move {
        c.stats().attempts > before
    })
    .await;
    let n = &near;
    wait_until(
        PATIENCE,
        "the near lease lost by its expiry",
        || async move { n.is_lost() },
    )
    .await;
    // The node stays stopped past the near lease's expiry (where the batch
    // used to be cut off) and answers well within the response timeout.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.resume(&node).unwrap();
    let f = &fresh;
    wait_until(PATIENCE, "the fresh lease renewed", || async move {
        f.is_lost() || f.valid_until() >= resumed + FRESH
    })
    .await;
    let attempts = a.client().stats().attempts - before;
    assert!(!fresh.is_lost(), "the fresh lease was lost");
    assert!(near.is_lost());
    assert_eq!(
        attempts, 1,
        "one batch renews the fresh lease; the near lease's expiry cut it off"
    );
}

/// A lease whose key was overwritten with another type (`WRONGTYPE` in the
/// renewal batch) is reported lost as soon as that batch lands, long before
/// its TTL runs out; the other lease of the same batch stays renewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_overwritten_with_another_type_is_lost_at_once() {
    const SLOT: u16 = 999;
    let ttl = Duration::from_secs(6);
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let node = cluster.primary_of_slot(SLOT).await.unwrap();
    let kept = a
        .lock(key_in(SLOT, "kept"))
        .ttl(ttl)
        .acquire()
        .await
        .unwrap();
    let taken = a
        .lock(key_in(SLOT, "taken"))
        .ttl(ttl)
        .acquire()
        .await
        .unwrap();
    let key = lock_key(&String::from_utf8_lossy(taken.key()));
    cluster
        .command(&node, redis::cmd("DEL").arg(&key))
        .await
        .unwrap();
    let hset = redis::cmd("HSET").arg(&key).arg("f").arg("v").clone();
    cluster.command(&node, &hset).await.unwrap();
    let valid_until = taken.valid_until();
    let t = &taken;
    wait_until(PATIENCE, "the overwritten lease lost", || async move {
        t.is_lost()
    })
    .await;
    assert!(
        Instant::now() < valid_until,
        "lost only when its validity ran out, not when renewal met WRONGTYPE"
    );
    let since = Instant::now();
    let k = &kept;
    wait_until(PATIENCE, "the other lease renewed", || async move {
        k.is_lost() || k.valid_until() > since + ttl
    })
    .await;
    assert!(!kept.is_lost());
}

/// A primary paused long enough to back its shard off past a lease's
/// expiry, but resumed before that expiry, does not cost the lease: each
/// lease still gets a last renewal attempt before it expires, whatever the
/// shard's backoff (the paused shard's leases whose last chance comes
/// after the resume stay held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backing_off_shard_still_gives_each_lease_a_last_attempt() {
    // No failover during the pause.
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(60),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    let response = Duration::from_millis(100);
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .request_timeout(Duration::from_secs(20))
        .response_timeout(response)
        .renew_interval(TICK)
        .build()
        .await
        .unwrap();
    // One slot, one shard; expiries every 20 ms from 4.5 s to 7.5 s after
    // the pause, so some lease expires in any window after the resume.
    let slot = 4242;
    let mut guards = Vec::new();
    for i in 0..150u64 {
        let ttl = Duration::from_millis(4_500 + 20 * i);
        let key = key_in(slot, &format!("lastchance{i}"));
        guards.push(mgr.lock(&key).ttl(ttl).acquire().await.unwrap());
    }
    let expiries: Vec<Instant> = guards.iter().map(|g| g.valid_until()).collect();
    let node = cluster.primary_of_slot(slot).await.unwrap();
    cluster.pause(&node).unwrap();
    let paused_at = Instant::now();
    // Every lease is due (a third of its TTL) by 2.5 s, and after some five
    // failed batches the shard backs off between 0.5 and 1 s. Resume just
    // after a batch sent after 4 s failed by its response timeout, so none
    // is in flight then.
    let stats = || mgr.client().stats().writes;
    let mut seen = stats();
    let mut sent_at = None;
    while sent_at.is_none() {
        assert!(
            paused_at.elapsed() < Duration::from_secs(6),
            "no renewal batch sent to the paused shard after 4 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = stats();
        if now != seen && paused_at.elapsed() >= Duration::from_secs(4) {
            sent_at = Some(Instant::now());
        }
        seen = now;
    }
    tokio::time::sleep_until(sent_at.unwrap() + response + Duration::from_millis(40)).await;
    cluster.resume(&node).unwrap();
    let resumed_at = Instant::now();
    // Leases whose last chance (expiry less one tick) comes a tick and a
    // round trip after the resume.
    let reachable: Vec<usize> = (0..guards.len())
        .filter(|&i| expiries[i] > resumed_at + TICK + Duration::from_millis(250))
        .collect();
    assert!(
        reachable.len() > 10,
        "too few leases expire after the resume"
    );
    let decided = |i: usize| guards[i].is_lost() || guards[i].valid_until() > expiries[i];
    wait_until(
        Duration::from_secs(15),
        "every lease expiring after the resume renewed or lost",
        || async { reachable.iter().all(|&i| decided(i)) },
    )
    .await;
    let lost: Vec<Duration> = reachable
        .iter()
        .filter(|&&i| guards[i].is_lost())
        .map(|&i| expiries[i] - resumed_at)
        .collect();
    assert!(
        lost.is_empty(),
        "{} leases expiring after the resume were lost (expiry after the resume: {lost:?})",
        lost.len()
    );
    // Some expired during the pause; the rest are released on drop.
    drop(guards);
}

/// A dropped guard's background release that a node redirected, and whose
/// one-by-one release through the router then failed (the slot's new
/// primary paused), is queued again rather than dropped: the key is gone
/// soon after that node answers again, long before its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_redirected_release_is_queued_again() {
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(60),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .request_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_millis(200))
        .refresh_interval(Duration::from_secs(3600))
        .renew_interval(TICK)
        .build()
        .await
        .unwrap();
    let slot = 777;
    let key = key_in(slot, "redirected-release");
    let full = lock_key(&key);
    let guard = mgr
        .lock(&key)
        .ttl(Duration::from_secs(60))
        .acquire()
        .await
        .unwrap();
    // The slot (with the key) moves without the manager knowing, and its
    // new primary stops answering.
    let from = cluster.primary_of_slot(slot).await.unwrap();
    let to = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != from)
        .unwrap();
    cluster.migrate_slot(slot, &to).await.unwrap();
    cluster.pause(&to).unwrap();
    let moved = mgr.client().stats().moved;
    drop(guard);
    let m = &mgr;
    wait_until(
        Duration::from_secs(10),
        "the background release redirected",
        || async move { m.client().stats().moved > moved },
    )
    .await;
    // The one-by-one release (sent at the redirect) has failed once its
    // deadline, one request timeout, has passed.
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    cluster.resume(&to).unwrap();
    let (c, t, f) = (&cluster, to.as_str(), full.as_str());
    wait_until(
        Duration::from_secs(5),
        "the key released after its node answers again",
        || async move {
            matches!(
                c.command(t, redis::cmd("PTTL").arg(f)).await,
                Ok(redis::Value::Int(-2))
            )
        },
    )
    .await;
}
