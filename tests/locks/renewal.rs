//! Auto-renewal: a held lease outlives its TTL, a lease that is not renewed
//! or is taken behind the holder's back is reported lost, renewal costs
//! script calls per shard and chunk rather than per lease, and it follows
//! the cluster through live slot migration and failover.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::{FutureExt, StreamExt, TryStreamExt};
use redis::Value;
use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{Error, LockGuard, LockManager, SLOT_COUNT, key_slot};
use tokio::time::Instant;

use crate::support::{key_in, lock_key, manager, wait_until};

/// Lease length of the short-lease tests: six renewal intervals (100 ms).
const TTL: Duration = Duration::from_millis(600);
/// Bound for waits that normally take a TTL or a failover.
const PATIENCE: Duration = Duration::from_secs(30);
/// Pause between two reads of a polling loop.
const POLL: Duration = Duration::from_millis(20);

/// The slot of `key`'s lock key.
fn slot_of(key: &str) -> u16 {
    key_slot(lock_key(key).as_bytes())
}

/// Takes `key` for `ttl`, auto-renewed.
async fn hold(mgr: &LockManager, key: &str, ttl: Duration) -> LockGuard {
    mgr.lock(key)
        .ttl(ttl)
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquire {key}: {e}"))
}

/// Sends `cmd` straight to the node at `addr` (no redirect followed).
async fn on_node(cluster: &TestCluster, addr: &str, cmd: &redis::Cmd) -> Value {
    cluster
        .command(addr, cmd)
        .await
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// What `key`'s lock key holds on the node at `addr`.
async fn value_on(cluster: &TestCluster, addr: &str, key: &str) -> Option<String> {
    match on_node(cluster, addr, redis::cmd("GET").arg(lock_key(key))).await {
        Value::Nil => None,
        Value::BulkString(v) => Some(String::from_utf8(v).unwrap()),
        other => panic!("GET {key} on {addr}: {other:?}"),
    }
}

/// `PTTL` of `key`'s lock key on the node at `addr`.
async fn pttl_on(cluster: &TestCluster, addr: &str, key: &str) -> i64 {
    match on_node(cluster, addr, redis::cmd("PTTL").arg(lock_key(key))).await {
        Value::Int(ms) => ms,
        other => panic!("PTTL {key} on {addr}: {other:?}"),
    }
}

/// `PTTL` of `key`'s lock key wherever it lives now, read through `probe`'s
/// client (which follows MOVED and ASK). Use a manager other than the
/// holder's, so the probe's redirects do not repair the holder's slot map.
async fn pttl_routed(probe: &LockManager, key: &str) -> i64 {
    let full = lock_key(key);
    probe
        .client()
        .query(&full, redis::cmd("PTTL").arg(&full).clone())
        .await
        .unwrap_or_else(|e| panic!("PTTL {key}: {e}"))
}

/// Polls `read` (a PTTL) until it goes up between two reads, i.e. something
/// renewed the key; panics if the key is ever found without a TTL > 0.
async fn wait_renewed<F, Fut>(what: &str, mut read: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = i64>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut last = read().await;
    loop {
        assert!(last > 0, "{what}: PTTL {last}, the lease is gone");
        assert!(
            Instant::now() < deadline,
            "{what}: not renewed within {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
        let now = read().await;
        if now > last {
            assert!(now > 0, "{what}: PTTL {now}");
            return;
        }
        last = now;
    }
}

/// Checks that none of `guards` is lost.
fn assert_held(guards: &[&LockGuard]) {
    for g in guards {
        assert!(!g.is_lost(), "{g:?} was lost");
        assert!(g.lost().now_or_never().is_none(), "{g:?}: lost() resolved");
    }
}

/// Polls for `span` (a loop bound, not an assertion on time) that none of
/// `guards` is lost.
async fn stay_held_for(span: Duration, guards: &[&LockGuard]) {
    let until = Instant::now() + span;
    loop {
        assert_held(guards);
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An auto-renewed lease outlives several TTLs: another manager is refused
/// all along, `lost()` stays pending, and release then frees the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_renewal_keeps_the_lease() {
    let cluster = TestCluster::start().await.unwrap();
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let guard = hold(&a, "renew:kept", TTL).await;
    let until = Instant::now() + TTL * 4;
    let mut refused = 0;
    while Instant::now() < until {
        let other = b.lock("renew:kept").ttl(TTL).try_acquire().await.unwrap();
        assert!(other.is_none(), "another manager took a renewed lease");
        assert!(!guard.is_lost());
        assert!(guard.lost().now_or_never().is_none());
        refused += 1;
        tokio::time::sleep(POLL).await;
    }
    assert!(refused > 1);
    guard.release().await.unwrap();
    let again = b.lock("renew:kept").try_acquire().await.unwrap();
    again
        .expect("free after the release")
        .release()
        .await
        .unwrap();
}

/// A holder that stops renewing loses its lease after the TTL: `lost()`
/// resolves, another manager takes the key, and the old guard's release
/// says `NotHeld` without touching the new holder's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_renewal_loses_the_lease() {
    let cluster = TestCluster::start().await.unwrap();
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let guard = hold(&a, "renew:stopped", TTL).await;
    a.pause_renewal(true);
    tokio::time::timeout(PATIENCE, guard.lost())
        .await
        .expect("lost() resolves once the unrenewed lease expires");
    assert!(guard.is_lost());
    let taken = b
        .lock("renew:stopped")
        .ttl(TTL)
        .wait(PATIENCE)
        .acquire()
        .await
        .unwrap();
    a.pause_renewal(false);
    assert!(matches!(guard.release().await, Err(Error::NotHeld)));
    assert!(
        a.lock("renew:stopped")
            .try_acquire()
            .await
            .unwrap()
            .is_none()
    );
    taken.release().await.unwrap();
}

/// A lease deleted, or deleted and then taken by another manager, behind
/// its holder's back is reported lost by renewal, while the holder's other
/// leases stay held and the new holder's lease is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reports_deleted_and_taken_leases() {
    let cluster = TestCluster::start().await.unwrap();
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let mut others = Vec::new();
    for i in 0..12 {
        others.push(hold(&a, &format!("renew:other:{i}"), TTL).await);
    }
    let deleted = hold(&a, "renew:deleted", TTL).await;
    let taken = hold(&a, "renew:taken", TTL).await;
    for key in ["renew:deleted", "renew:taken"] {
        let node = cluster.primary_of_slot(slot_of(key)).await.unwrap();
        let del = on_node(&cluster, &node, redis::cmd("DEL").arg(lock_key(key))).await;
        assert_eq!(del, Value::Int(1), "DEL {key}");
    }
    let thief = b.lock("renew:taken").ttl(TTL).acquire().await.unwrap();
    for g in [&deleted, &taken] {
        tokio::time::timeout(PATIENCE, g.lost())
            .await
            .unwrap_or_else(|_| panic!("{g:?}: lost() did not resolve"));
    }
    let mut still = others.iter().collect::<Vec<_>>();
    still.push(&thief);
    stay_held_for(TTL * 3, &still).await;
    assert!(matches!(taken.release().await, Err(Error::NotHeld)));
    assert!(matches!(deleted.release().await, Err(Error::NotHeld)));
    // The thief's lease survived the old holder's renewals and release.
    thief.release().await.unwrap();
    for g in others {
        g.release().await.unwrap();
    }
}

/// `calls` of each command in `INFO commandstats` of the node at `addr`.
async fn command_calls(cluster: &TestCluster, addr: &str) -> HashMap<String, u64> {
    let info = match on_node(cluster, addr, redis::cmd("INFO").arg("commandstats")).await {
        Value::BulkString(b) => String::from_utf8(b).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO commandstats: {other:?}"),
    };
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|f| f.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// Renewal costs scale with shards, not leases: with 10,000 leases held,
/// each primary runs about ceil(its leases / renew_chunk) renewal scripts
/// per renewal round (at most twice that), not one per lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_cost_scales_with_shards_not_leases() {
    const LEASES: usize = 10_000;
    /// The default `renew_chunk`.
    const CHUNK: u64 = 500;
    /// Renewal rounds to observe (a lease is renewed once per round, every
    /// third of its TTL).
    const ROUNDS: u64 = 5;
    let ttl = Duration::from_secs(3);
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    // Keys spread evenly over the slot space, hence over every shard.
    let keys: Vec<String> = (0..LEASES)
        .map(|i| {
            key_in(
                (i * SLOT_COUNT as usize / LEASES) as u16,
                &format!("bulk{i}"),
            )
        })
        .collect();
    let started = Instant::now();
    let guards: Vec<LockGuard> = futures::stream::iter(&keys)
        .map(|k| a.lock(k).ttl(ttl).acquire())
        .buffer_unordered(64)
        .try_collect()
        .await
        .unwrap();
    let acquiring = started.elapsed();

    let primaries = cluster.primaries().await.unwrap();
    let mut held = HashMap::new();
    for p in &primaries {
        let Value::Int(n) = on_node(&cluster, p, &redis::cmd("DBSIZE")).await else {
            panic!("DBSIZE on {p}");
        };
        held.insert(p.clone(), n as u64);
        on_node(&cluster, p, redis::cmd("CONFIG").arg("RESETSTAT")).await;
    }
    assert_eq!(held.values().sum::<u64>(), LEASES as u64);

    // A renewal runs one PEXPIRE per lease (commands run by scripts are
    // counted too), so a node has done a round per `held` PEXPIREs.
    let (c, h) = (&cluster, &held);
    wait_until(
        Duration::from_secs(120),
        "renewal rounds on every primary",
        || async move {
            for (p, n) in h {
                let calls = command_calls(c, p).await;
                if calls.get("pexpire").copied().unwrap_or(0) < ROUNDS * n {
                    return false;
                }
            }
            true
        },
    )
    .await;
    println!(
        "{LEASES} leases (ttl {ttl:?}, renew_chunk {CHUNK}) acquired in {acquiring:?} with 64 in flight"
    );
    for p in &primaries {
        let calls = command_calls(&cluster, p).await;
        let get = |name: &str| calls.get(name).copied().unwrap_or(0);
        let scripts = get("evalsha") + get("eval");
        let n = held[p];
        let rounds = get("pexpire") as f64 / n as f64;
        let per_round = scripts as f64 / rounds;
        let ideal = n.div_ceil(CHUNK);
        println!(
            "{p}: {n} leases, {rounds:.2} rounds, {scripts} script calls \
             (evalsha {}, eval {}) = {per_round:.1} per round; ideal {ideal}, \
             one per lease would be {n}",
            get("evalsha"),
            get("eval"),
        );
        // Leases acquired in different ticks are due in different ticks:
        // a round (a third of the TTL, 10 ticks here) costs the sum over its
        // ticks of ceil(due / chunk), so a little more than `ideal`.
        assert!(
            per_round <= 2.0 * ideal as f64,
            "{p}: {per_round:.1} script calls per round for {n} leases, expected about {ideal}"
        );
    }
    assert!(guards.iter().all(|g| !g.is_lost()));
}

/// Renewal follows a live slot migration: while the keys of a slot move one
/// by one over several TTLs, every lease in it (and elsewhere) stays held
/// and is renewed wherever its key lives, and afterwards the new owner
/// holds each lease under its holder's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_follows_live_slot_migration() {
    const SLOT: u16 = 4000;
    let cluster = TestCluster::start().await.unwrap();
    let (a, probe) = (manager(&cluster).await, manager(&cluster).await);
    let moving: Vec<String> = (0..8).map(|i| key_in(SLOT, &format!("mig{i}"))).collect();
    let mut guards = Vec::new();
    for key in &moving {
        guards.push(hold(&a, key, TTL).await);
    }
    for i in 0..8 {
        guards.push(hold(&a, &format!("renew:stay:{i}"), TTL).await);
    }
    let source = cluster.primary_of_slot(SLOT).await.unwrap();
    let target = cluster
        .primaries()
        .await
        .unwrap()
        .into_iter()
        .find(|p| *p != source)
        .unwrap();
    let mut tokens = Vec::new();
    for key in &moving {
        tokens.push(value_on(&cluster, &source, key).await.expect("held"));
    }

    let started = Instant::now();
    let mut migration = cluster.begin_migration(SLOT, &target).await.unwrap();
    let mut moved = 0;
    loop {
        // Each step lasts until every lease of the slot has been renewed
        // where its key lives now: the source, or the target through ASK.
        let probe = &probe;
        join_all(
            moving
                .iter()
                .map(|k| wait_renewed(k, move || pttl_routed(probe, k))),
        )
        .await;
        assert_held(&guards.iter().collect::<Vec<_>>());
        if migration.move_keys(1).await.unwrap() == 0 {
            break;
        }
        moved += 1;
    }
    assert_eq!(moved, moving.len(), "a key expired during the migration");
    // Moved keys were renewed one by one through ASK, as the batch on the
    // source could not touch them.
    let asked = a.client().stats().ask;
    assert!(asked > 0, "the holder never followed ASK");
    migration.finish().await.unwrap();
    let took = started.elapsed();
    let stats = a.client().stats();

    // The slot is the target's now: renewal reaches it there directly.
    let c = &cluster;
    let target_ref = &target;
    join_all(
        moving
            .iter()
            .map(|k| wait_renewed(k, move || pttl_on(c, target_ref, k))),
    )
    .await;
    let all: Vec<&LockGuard> = guards.iter().collect();
    stay_held_for(TTL * 3, &all).await;
    for (key, token) in moving.iter().zip(&tokens) {
        assert_eq!(value_on(&cluster, &target, key).await.as_ref(), Some(token));
        assert!(probe.lock(key).try_acquire().await.unwrap().is_none());
    }
    println!(
        "slot {SLOT}: {moved} leases moved one by one from {source} to {target} in {took:?} \
         ({:.1} TTLs); none lost; the holder followed {} ASK and {} MOVED",
        took.as_secs_f64() / TTL.as_secs_f64(),
        stats.ask,
        stats.moved,
    );
    for g in guards {
        g.release().await.unwrap();
    }
}

/// Leases of the slot `SLOT_ON_SHARD` and of slots of every other shard.
const SLOT_ON_SHARD: u16 = 100;

/// Keys on the shard of `SLOT_ON_SHARD`, and keys on the other shards.
async fn shard_and_other_keys(cluster: &TestCluster, prefix: &str) -> (Vec<String>, Vec<String>) {
    let shard = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    let mut elsewhere = Vec::new();
    for slot in [SLOT_ON_SHARD + 6000, SLOT_ON_SHARD + 12000] {
        assert_ne!(cluster.primary_of_slot(slot).await.unwrap(), shard);
        for i in 0..4 {
            elsewhere.push(key_in(slot, &format!("{prefix}-other{i}")));
        }
    }
    let on_shard = (0..6)
        .map(|i| key_in(SLOT_ON_SHARD, &format!("{prefix}{i}")))
        .collect();
    (on_shard, elsewhere)
}

/// Renewal survives a manual failover (`CLUSTER FAILOVER`): no lease is
/// lost, and the new primary keeps renewing the shard's leases under the
/// holder's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_survives_manual_failover() {
    let cluster = TestCluster::start().await.unwrap();
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let (on_shard, elsewhere) = shard_and_other_keys(&cluster, "fo").await;
    let mut guards = Vec::new();
    for key in on_shard.iter().chain(&elsewhere) {
        guards.push(hold(&a, key, TTL).await);
    }
    let old = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    let mut tokens = Vec::new();
    for key in &on_shard {
        tokens.push(value_on(&cluster, &old, key).await.expect("held"));
    }
    let started = Instant::now();
    let new = cluster.failover(&old).await.unwrap();
    let took = started.elapsed();

    let (c, n) = (&cluster, &new);
    let renewed_on_new = |rounds: usize| {
        join_all(on_shard.iter().map(move |k| async move {
            for _ in 0..rounds {
                wait_renewed(k, || pttl_on(c, n, k)).await;
            }
        }))
    };
    // Three renewals per lease on the new primary: a TTL and more.
    renewed_on_new(3).await;
    let all: Vec<&LockGuard> = guards.iter().collect();
    stay_held_for(TTL * 2, &all).await;
    for (key, token) in on_shard.iter().zip(&tokens) {
        assert_eq!(value_on(&cluster, &new, key).await.as_ref(), Some(token));
        assert!(b.lock(key).try_acquire().await.unwrap().is_none());
    }
    println!("CLUSTER FAILOVER {old} -> {new} took {took:?}; no lease lost");
    for g in guards {
        g.release().await.unwrap();
    }
}

/// A primary that stops answering (SIGSTOP; node timeout long enough that
/// nothing fails over) costs only its own leases: they are reported lost
/// within about their TTL while the other shards' leases keep being renewed,
/// and once it answers again another manager takes the lost ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_node_costs_only_its_own_leases() {
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(120),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let (on_shard, elsewhere) = shard_and_other_keys(&cluster, "stall").await;
    let mut stalled_leases = Vec::new();
    for key in &on_shard {
        stalled_leases.push(hold(&a, key, TTL).await);
    }
    let mut others = Vec::new();
    for key in &elsewhere {
        others.push(hold(&a, key, TTL).await);
    }
    let stalled = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    cluster.pause(&stalled).unwrap();
    for g in &stalled_leases {
        tokio::time::timeout(PATIENCE, g.lost())
            .await
            .unwrap_or_else(|_| panic!("{g:?}: lost() did not resolve"));
    }
    let all: Vec<&LockGuard> = others.iter().collect();
    stay_held_for(TTL * 3, &all).await;
    cluster.resume(&stalled).unwrap();
    for key in &on_shard {
        let taken = b.lock(key).ttl(TTL).wait(PATIENCE).acquire().await;
        taken.unwrap().release().await.unwrap();
    }
    for g in others {
        g.release().await.unwrap();
    }
}

/// kill -9 of a primary (node timeout 1 s), Redis's default
/// `cluster-require-full-coverage yes`: the shard's leases with a TTL
/// shorter than the failover are reported lost within about their TTL,
/// before the failover and before anyone else can take them; its leases
/// with a longer TTL, replicated before the kill (`.replicas(1)`), survive
/// and are renewed on the new primary; long leases elsewhere survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_across_primary_kill() {
    primary_kill(true).await;
}

/// The same kill with `cluster-require-full-coverage no`, so the other
/// shards keep serving: renewal of their leases goes on undisturbed, even
/// of leases far shorter than the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_of_other_shards_continues_through_primary_kill() {
    primary_kill(false).await;
}

/// kill -9 of the primary of `SLOT_ON_SHARD` while short and long leases
/// are held on it and on the other shards; see the two tests above.
async fn primary_kill(full_coverage: bool) {
    // Longer than the failover and than the CLUSTERDOWN window, and due for
    // renewal (every third of it) while the failover runs.
    let long_ttl = Duration::from_secs(6);
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(1),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    if !full_coverage {
        for addr in cluster.addrs() {
            let set = redis::cmd("CONFIG")
                .arg("SET")
                .arg("cluster-require-full-coverage")
                .arg("no")
                .clone();
            assert_eq!(on_node(&cluster, &addr, &set).await, Value::Okay);
        }
    }
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let (on_shard, elsewhere) = shard_and_other_keys(&cluster, "kill").await;
    let (short_keys, long_keys) = on_shard.split_at(on_shard.len() / 2);
    let mut short = Vec::new();
    for key in short_keys {
        short.push(Arc::new(hold(&a, key, TTL).await));
    }
    let mut long = Vec::new();
    for key in long_keys {
        let guard = a.lock(key).ttl(long_ttl).replicas(1).acquire().await;
        long.push(guard.unwrap());
    }
    let (other_short_keys, other_long_keys) = elsewhere.split_at(elsewhere.len() / 2);
    let mut other_short = Vec::new();
    for key in other_short_keys {
        other_short.push(Arc::new(hold(&a, key, TTL).await));
    }
    let mut other_long = Vec::new();
    for key in other_long_keys {
        other_long.push(hold(&a, key, long_ttl).await);
    }
    let victim = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    let mut tokens = Vec::new();
    for key in long_keys {
        tokens.push(value_on(&cluster, &victim, key).await.expect("held"));
    }

    let witness = cluster
        .primary_of_slot(slot_of(&elsewhere[0]))
        .await
        .unwrap();
    // Only with full coverage does another shard answer CLUSTERDOWN.
    let down_window =
        full_coverage.then(|| tokio::spawn(clusterdown_window(witness, lock_key(&elsewhere[0]))));
    cluster.kill(&victim).unwrap();
    let killed = Instant::now();
    // Another manager takes each short lease as soon as the cluster lets
    // it; by then the first holder must already count it lost.
    let takers: Vec<_> = short_keys
        .iter()
        .zip(&short)
        .map(|(key, guard)| {
            let (b, key, guard) = (b.clone(), key.clone(), guard.clone());
            tokio::spawn(async move {
                let taken = b.lock(&key).ttl(TTL).wait(PATIENCE).acquire().await;
                (key, taken, guard.is_lost(), killed.elapsed())
            })
        })
        .collect();
    // When (if) each short lease on the other shards is reported lost.
    let watchers: Vec<_> = other_short
        .iter()
        .map(|guard| {
            let guard = guard.clone();
            tokio::spawn(async move {
                tokio::time::timeout(PATIENCE, guard.lost())
                    .await
                    .ok()
                    .map(|()| killed.elapsed())
            })
        })
        .collect();
    for g in &short {
        tokio::time::timeout(PATIENCE, g.lost())
            .await
            .unwrap_or_else(|_| panic!("{g:?}: lost() did not resolve"));
    }
    let all_lost = killed.elapsed();
    // Within about their TTL: the cluster has not even failed over yet.
    assert_eq!(
        cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap(),
        victim,
        "short leases reported lost only after the failover ({all_lost:?} after the kill)"
    );
    let (c, v) = (&cluster, &victim);
    wait_until(PATIENCE, "a replica to take over", || async move {
        matches!(c.primary_of_slot(SLOT_ON_SHARD).await, Ok(p) if p != *v)
    })
    .await;
    let promoted = killed.elapsed();
    let new = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    let mut taken_after = Duration::ZERO;
    let mut thieves = Vec::new();
    for taker in takers {
        let (key, taken, first_lost, at) = taker.await.unwrap();
        let taken = taken.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(
            first_lost,
            "{key} was taken while its first holder still held it"
        );
        taken_after = taken_after.max(at);
        thieves.push(taken);
    }

    let n = &new;
    join_all(
        long_keys
            .iter()
            .map(|k| wait_renewed(k, move || pttl_on(c, n, k))),
    )
    .await;
    let mut kept: Vec<&LockGuard> = long.iter().chain(&other_long).collect();
    kept.extend(&thieves);
    if !full_coverage {
        kept.extend(other_short.iter().map(|g| &**g));
    }
    stay_held_for(TTL * 3, &kept).await;
    for (key, token) in long_keys.iter().zip(&tokens) {
        assert_eq!(value_on(&cluster, &new, key).await.as_ref(), Some(token));
        assert!(b.lock(key).try_acquire().await.unwrap().is_none());
    }
    let down_window = match down_window {
        Some(probe) => probe.await.unwrap(),
        None => None,
    };
    let mut other_lost = Vec::new();
    for w in watchers {
        if let Some(at) = w.await.unwrap() {
            other_lost.push(at);
        }
    }
    println!(
        "kill -9 {victim} (full coverage {full_coverage}): another shard's primary answered \
         CLUSTERDOWN for {down_window:?}; its {} leases of ttl {TTL:?} all \
         reported lost {all_lost:?} after the kill; {new} promoted after {promoted:?}; another \
         manager took them after {taken_after:?}; its {} replicated leases of ttl {long_ttl:?} \
         and {} leases of ttl {long_ttl:?} on other shards kept; {} of {} leases of ttl \
         {TTL:?} on other shards lost, at {other_lost:?}",
        short.len(),
        long.len(),
        other_long.len(),
        other_lost.len(),
        other_short.len(),
    );
    for g in long.into_iter().chain(other_long).chain(thieves) {
        g.release().await.unwrap();
    }
}

/// While a killed primary has no replacement (its only replica is paused,
/// so no election ends the outage), Redis's default
/// `cluster-require-full-coverage yes` makes the other shards' primaries
/// answer `CLUSTERDOWN` for their own keys, renewal cannot get through, and
/// short leases on every shard are reported lost, not only the dead one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreplaced_primary_loses_short_leases_on_every_shard() {
    unreplaced_primary(true).await;
}

/// The same outage with `cluster-require-full-coverage no`: the other
/// shards keep answering and their short leases stay held; only the dead
/// shard's are lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreplaced_primary_loses_only_its_own_leases_without_full_coverage() {
    unreplaced_primary(false).await;
}

/// kill -9 of the primary of `SLOT_ON_SHARD` with its replica paused, short
/// leases held on every shard; see the two tests above. The outage lasts
/// until the replica is resumed, so what is asserted does not depend on how
/// long an election takes.
async fn unreplaced_primary(full_coverage: bool) {
    let spec = ClusterSpec {
        node_timeout: Duration::from_secs(1),
        ..ClusterSpec::default()
    };
    let cluster = TestCluster::start_with(spec).await.unwrap();
    if !full_coverage {
        for addr in cluster.addrs() {
            let set = redis::cmd("CONFIG")
                .arg("SET")
                .arg("cluster-require-full-coverage")
                .arg("no")
                .clone();
            assert_eq!(on_node(&cluster, &addr, &set).await, Value::Okay);
        }
    }
    let (a, b) = (manager(&cluster).await, manager(&cluster).await);
    let (on_shard, elsewhere) = shard_and_other_keys(&cluster, "outage").await;
    let mut dead = Vec::new();
    for key in &on_shard {
        dead.push(hold(&a, key, TTL).await);
    }
    let mut others = Vec::new();
    for key in &elsewhere {
        others.push(hold(&a, key, TTL).await);
    }
    let victim = cluster.primary_of_slot(SLOT_ON_SHARD).await.unwrap();
    let replica = cluster.replica_of(&victim).await.unwrap();
    let mut witnesses = Vec::new();
    for key in &elsewhere {
        let primary = cluster.primary_of_slot(slot_of(key)).await.unwrap();
        if !witnesses.iter().any(|(p, _)| *p == primary) {
            witnesses.push((primary, key.clone()));
        }
    }
    assert_eq!(witnesses.len(), 2, "{witnesses:?}");

    cluster.pause(&replica).unwrap();
    cluster.kill(&victim).unwrap();
    for g in &dead {
        tokio::time::timeout(PATIENCE, g.lost())
            .await
            .unwrap_or_else(|_| panic!("{g:?}: lost() did not resolve"));
    }
    let (c, v, w) = (&cluster, &victim, &witnesses);
    wait_until(
        PATIENCE,
        "the other primaries to mark the dead one failed",
        || async move {
            for (primary, _) in w {
                if !marks_failed(c, primary, v).await {
                    return false;
                }
            }
            true
        },
    )
    .await;
    for (primary, key) in &witnesses {
        let read = cluster
            .command(primary, redis::cmd("PTTL").arg(lock_key(key)))
            .await;
        if full_coverage {
            let e = read.expect_err("a read on a healthy shard during the outage");
            assert_eq!(e.server_code(), Some("CLUSTERDOWN"), "{primary}: {e}");
        } else {
            assert!(matches!(read, Ok(Value::Int(_))), "{primary}: {read:?}");
        }
    }
    if full_coverage {
        for g in &others {
            tokio::time::timeout(PATIENCE, g.lost())
                .await
                .unwrap_or_else(|_| panic!("{g:?}: lost() did not resolve"));
        }
    } else {
        let all: Vec<&LockGuard> = others.iter().collect();
        stay_held_for(TTL * 3, &all).await;
    }

    cluster.resume(&replica).unwrap();
    wait_until(PATIENCE, "the replica to take over", || async move {
        matches!(c.primary_of_slot(SLOT_ON_SHARD).await, Ok(p) if p != *v)
    })
    .await;
    // The leases reported lost were not renewed behind the holder's back:
    // once the cluster serves again, another manager takes them.
    let lost: Vec<&String> = if full_coverage {
        on_shard.iter().chain(&elsewhere).collect()
    } else {
        on_shard.iter().collect()
    };
    for key in lost {
        let taken = b.lock(key).ttl(TTL).wait(PATIENCE).acquire().await;
        taken
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .release()
            .await
            .unwrap();
    }
    if !full_coverage {
        for g in others {
            g.release().await.unwrap();
        }
    }
}

/// Whether the node at `observer` flags the node at `addr` as failed
/// (`fail`, not only `fail?`) in `CLUSTER NODES`.
async fn marks_failed(cluster: &TestCluster, observer: &str, addr: &str) -> bool {
    let nodes = match on_node(
        cluster,
        observer,
        &redis::cmd("CLUSTER").arg("NODES").clone(),
    )
    .await
    {
        Value::BulkString(text) => String::from_utf8(text).unwrap(),
        Value::VerbatimString { text, .. } => text,
        other => panic!("CLUSTER NODES on {observer}: {other:?}"),
    };
    let at = format!(" {addr}@");
    nodes.lines().any(|line| {
        line.contains(&at)
            && line
                .split(' ')
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|f| f == "fail"))
    })
}

/// How long the primary at `addr` answered `CLUSTERDOWN` to reads of `key`
/// (one of its own keys): from its first such answer to its first normal
/// answer after it, polled every 10 ms for at most `PATIENCE`; `None` if it
/// never did.
async fn clusterdown_window(addr: String, key: String) -> Option<Duration> {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let give_up = Instant::now() + PATIENCE;
    let mut down_since = None;
    while Instant::now() < give_up {
        let read: redis::RedisResult<Value> =
            redis::cmd("PTTL").arg(&key).query_async(&mut conn).await;
        match (read, down_since) {
            (Err(e), None) if e.code() == Some("CLUSTERDOWN") => down_since = Some(Instant::now()),
            (Ok(_), Some(since)) => return Some(since.elapsed()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}
