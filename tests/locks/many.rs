//! `lock_many`: all or none, one round trip per shard, no deadlock between
//! overlapping calls, bad input refused before anything is sent, and keys of
//! a slot under live migration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shardlock::testkit::{StandaloneServer, TestCluster};
use shardlock::{Error, LockManager, key_slot};
use tokio::task::JoinSet;

use crate::support::{key_in, lock_key, manager, wait_until};

/// Two keys in each of six slots spread over the three shards (of the
/// default cluster layout), given out of order.
fn spread_keys(name: &str) -> Vec<String> {
    [12_100, 100, 6_000, 16_000, 6_100, 200]
        .into_iter()
        .flat_map(|slot| (0..2).map(move |i| key_in(slot, &format!("{name}:{i}"))))
        .collect()
}

/// Number of shards serving `keys`, as `mgr`'s slot map says.
fn shards_of(mgr: &LockManager, keys: &[String]) -> usize {
    let topology = mgr.client().topology();
    let mut shards: Vec<usize> = keys
        .iter()
        .map(|k| {
            let slot = key_slot(lock_key(k).as_bytes());
            topology.shard_index_of_slot(slot).expect("slot is served")
        })
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards.len()
}

/// The keys among `keys` whose lock key exists on the cluster now (asked
/// with a plain routed `EXISTS`, not through the lock API).
async fn present(mgr: &LockManager, keys: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for key in keys {
        let full = lock_key(key);
        let exists: i64 = mgr
            .client()
            .query(&full, redis::cmd("EXISTS").arg(&full).clone())
            .await
            .unwrap();
        if exists == 1 {
            found.push(key.clone());
        }
    }
    found
}

/// Keys over all three shards are taken together, guards come back in the
/// given order, and when one key is held elsewhere the call fails with
/// Contended (or Timeout with a wait) leaving none of the others held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_or_none() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let b = manager(&cluster).await;
    let keys = spread_keys("all");
    assert_eq!(shards_of(&a, &keys), 3, "the keys cover every shard");

    let guards = a.lock_many(&keys).acquire().await.unwrap();
    let given: Vec<&[u8]> = guards.guards().iter().map(|g| g.key()).collect();
    let expected: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
    assert_eq!(given, expected, "guards in the order the keys were given");
    assert_eq!(present(&b, &keys).await, keys);
    for key in &keys {
        assert!(b.lock(key).try_acquire().await.unwrap().is_none(), "{key}");
    }
    assert!(matches!(
        b.lock_many(&keys).acquire().await,
        Err(Error::Contended)
    ));
    assert_eq!(present(&b, &keys).await, keys, "b's failure left a's keys");
    guards.release().await.unwrap();
    assert!(present(&b, &keys).await.is_empty());

    // Held by b: the key that comes last in the global order, so every
    // other key (on all three shards) is taken before the conflict is seen.
    let last = keys
        .iter()
        .max_by_key(|k| (key_slot(lock_key(k).as_bytes()), lock_key(k)))
        .unwrap()
        .clone();
    let blocker = b.lock(&last).acquire().await.unwrap();
    let attempts = a.client().stats().attempts;
    assert!(matches!(
        a.lock_many(&keys).acquire().await,
        Err(Error::Contended)
    ));
    assert_eq!(
        a.client().stats().attempts - attempts,
        6,
        "three shards visited before the conflict, three rolled back"
    );
    assert_eq!(present(&a, &keys).await, vec![last.clone()]);
    let waited = a
        .lock_many(&keys)
        .wait(Duration::from_millis(300))
        .acquire()
        .await;
    assert!(matches!(waited, Err(Error::Timeout { .. })), "{waited:?}");
    assert_eq!(present(&a, &keys).await, vec![last.clone()]);

    // Once b lets go, a waiting call gets the whole set.
    let attempts = a.client().stats().attempts;
    let waiting = tokio::spawn({
        let a = a.clone();
        let keys = keys.clone();
        async move {
            a.lock_many(&keys)
                .wait(Duration::from_secs(10))
                .acquire()
                .await
        }
    });
    // It meets the held key (every shard visited) before b lets go.
    let client = a.client().clone();
    wait_until(
        Duration::from_secs(10),
        "the waiting call to meet the held key",
        || {
            let client = client.clone();
            async move { client.stats().attempts >= attempts + 3 }
        },
    )
    .await;
    blocker.release().await.unwrap();
    let guards = waiting.await.unwrap().unwrap();
    assert_eq!(present(&b, &keys).await, keys);
    guards.release().await.unwrap();
    assert!(present(&b, &keys).await.is_empty());
}

/// An uncontended lock_many of 30 keys over 3 shards costs exactly 3
/// round trips: one pipeline per shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_round_trip_per_shard() {
    let cluster = TestCluster::start().await.unwrap();
    let mgr = manager(&cluster).await;
    let keys: Vec<String> = (0..30).map(|i| format!("trip:{i}")).collect();
    assert_eq!(shards_of(&mgr, &keys), 3, "the keys cover every shard");
    let before = mgr.client().stats();
    let guards = mgr.lock_many(&keys).acquire().await.unwrap();
    let after = mgr.client().stats();
    assert_eq!(
        after.attempts - before.attempts,
        3,
        "{before:?} → {after:?}"
    );
    assert_eq!(present(&mgr, &keys).await, keys);
    guards.release().await.unwrap();
    assert!(present(&mgr, &keys).await.is_empty());
}

/// 16 tasks on two managers lock overlapping random subsets of a 10-key
/// pool, given in random order, and do a GET/SET+1 on a counter per key:
/// every task finishes its 30 locked rounds (no deadlock; a 5 s wait that
/// runs out is tried again) and every counter equals the number of times its
/// key was locked (mutual exclusion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_sets_do_not_deadlock() {
    const POOL: usize = 10;
    const TASKS: usize = 16;
    const ROUNDS: usize = 30;
    let cluster = TestCluster::start().await.unwrap();
    let managers = [manager(&cluster).await, manager(&cluster).await];
    let locked: Arc<Vec<AtomicU64>> = Arc::new((0..POOL).map(|_| AtomicU64::new(0)).collect());
    let longest_wait_ms = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();

    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let mgr = managers[t % 2].clone();
        let locked = locked.clone();
        let longest_wait_ms = longest_wait_ms.clone();
        let timeouts = timeouts.clone();
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::new();
            for _ in 0..ROUNDS {
                let mut pool: Vec<usize> = (0..POOL).collect();
                rng.shuffle(&mut pool);
                let chosen = &pool[..rng.usize(3..=6)];
                let keys: Vec<String> = chosen.iter().map(|i| format!("pool:{i}")).collect();
                let asked = tokio::time::Instant::now();
                let guards = loop {
                    match mgr
                        .lock_many(&keys)
                        .wait(Duration::from_secs(5))
                        .acquire()
                        .await
                    {
                        Ok(guards) => break guards,
                        // A bounded wait may run out while a large set
                        // starves behind smaller ones (a loaded CI machine);
                        // it holds nothing then, so that is no deadlock.
                        // A deadlock shows as rounds that never end.
                        Err(Error::Timeout { .. }) => {
                            timeouts.fetch_add(1, Relaxed);
                        }
                        Err(e) => panic!("lock_many failed: {e}"),
                    }
                };
                longest_wait_ms.fetch_max(asked.elapsed().as_millis() as u64, Relaxed);
                for &i in chosen {
                    let counter = format!("count:{i}");
                    let client = mgr.client();
                    let n: Option<u64> = client
                        .query(&counter, redis::cmd("GET").arg(&counter).clone())
                        .await
                        .unwrap();
                    tokio::task::yield_now().await;
                    let set = redis::cmd("SET")
                        .arg(&counter)
                        .arg(n.unwrap_or(0) + 1)
                        .clone();
                    let () = client.query(&counter, set).await.unwrap();
                    locked[i].fetch_add(1, Relaxed);
                }
                guards.release().await.unwrap();
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await
    .expect("every task finished its rounds (no deadlock)");

    let mut total = 0;
    for (i, times) in locked.iter().enumerate() {
        let counter = format!("count:{i}");
        let n: Option<u64> = managers[0]
            .client()
            .query(&counter, redis::cmd("GET").arg(&counter).clone())
            .await
            .unwrap();
        let times = times.load(Relaxed);
        assert_eq!(n.unwrap_or(0), times, "counter {i}");
        total += times;
    }
    assert!(total >= (TASKS * ROUNDS * 3) as u64);
    println!(
        "overlapping lock_many: {} rounds, {total} locks in {:?}, longest wait {} ms, {} timed-out waits",
        TASKS * ROUNDS,
        started.elapsed(),
        longest_wait_ms.load(Relaxed),
        timeouts.load(Relaxed)
    );
}

/// An empty list, a duplicate key, more keys than max_keys, an empty or
/// too long key and a too short TTL are refused with InvalidArgument saying
/// why, and nothing is sent: no attempt is counted and no key exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sends_nothing() {
    let cluster = TestCluster::start().await.unwrap();
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .max_keys(4)
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..5).map(|i| format!("bad:{i}")).collect();
    let k = |i: usize| keys[i].clone();
    let long = "x".repeat(5000);
    let cases: Vec<(Vec<String>, Option<Duration>, &str)> = vec![
        (vec![], None, "no keys"),
        (vec![k(0), k(1), k(0)], None, "twice (positions 0 and 2)"),
        (keys.clone(), None, "5 keys, above max_keys (4)"),
        (
            vec![k(0), String::new()],
            None,
            "position 1: the lock key is empty",
        ),
        (vec![k(0), long], None, "above max_key_len"),
        (vec![k(0)], Some(Duration::from_millis(10)), "ttl"),
    ];
    let before = mgr.client().stats().attempts;
    for (given, ttl, needle) in cases {
        let mut request = mgr.lock_many(&given);
        if let Some(ttl) = ttl {
            request = request.ttl(ttl);
        }
        match request.acquire().await {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("{needle}: {other:?}"),
        }
    }
    assert_eq!(mgr.client().stats().attempts, before, "nothing was sent");
    assert!(present(&mgr, &keys).await.is_empty());
}

/// During a live migration of a slot (half its keys moved), lock_many takes
/// keys of that slot (answered ASK, taken one by one on the target), sees
/// keys held on either side, rolls back through ASK, and keeps working
/// after the slot has moved (MOVED) while its slot map is stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_during_a_live_migration() {
    const SLOT: u16 = 100;
    let ttl = Duration::from_secs(30);
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let b = manager(&cluster).await;
    let source = cluster.primary_of_slot(SLOT).await.unwrap();
    let target = cluster.primary_of_slot(6_000).await.unwrap();
    let third = cluster.primary_of_slot(16_000).await.unwrap();
    assert!(
        source != target && third != source && third != target,
        "default layout"
    );

    // Data in the slot, and locks held there before the migration starts.
    for i in 0..40 {
        let data = key_in(SLOT, &format!("data:{i}"));
        let () = a
            .client()
            .query(&data, redis::cmd("SET").arg(&data).arg(i).clone())
            .await
            .unwrap();
    }
    let early: Vec<String> = (0..4)
        .map(|i| key_in(SLOT, &format!("early:{i}")))
        .collect();
    let early_guards = a.lock_many(&early).ttl(ttl).acquire().await.unwrap();

    let mut migration = cluster.begin_migration(SLOT, &target).await.unwrap();
    assert!(migration.move_keys(22).await.unwrap() > 0);

    // Free keys of the migrating slot are not on the source: ASK, taken on
    // the target one by one.
    let mut set1: Vec<String> = (0..6).map(|i| key_in(SLOT, &format!("k:{i}"))).collect();
    set1.push(key_in(6_000, "k"));
    set1.push(key_in(12_000, "k"));
    let ask = a.client().stats().ask;
    let guards1 = a.lock_many(&set1).ttl(ttl).acquire().await.unwrap();
    assert!(
        a.client().stats().ask >= ask + 6,
        "{:?}",
        a.client().stats()
    );
    assert_eq!(present(&b, &set1).await, set1);

    // Held keys are seen whichever side of the migration they are on.
    assert!(matches!(
        b.lock_many(&early).acquire().await,
        Err(Error::Contended)
    ));
    assert!(matches!(
        b.lock_many(&set1).acquire().await,
        Err(Error::Contended)
    ));

    // A conflict on the last shard rolls back keys taken through ASK.
    let blocked = key_in(16_000, "k");
    let blocker = a.lock(&blocked).ttl(ttl).acquire().await.unwrap();
    let mut set2: Vec<String> = (0..6).map(|i| key_in(SLOT, &format!("r:{i}"))).collect();
    set2.push(key_in(6_000, "r"));
    set2.push(blocked.clone());
    let ask = b.client().stats().ask;
    assert!(matches!(
        b.lock_many(&set2).acquire().await,
        Err(Error::Contended)
    ));
    assert!(
        b.client().stats().ask >= ask + 12,
        "taken and rolled back through ASK: {:?}",
        b.client().stats()
    );
    assert_eq!(present(&b, &set2).await, vec![blocked.clone()]);

    migration.finish().await.unwrap();

    // b's slot map may still name the source: MOVED, taken one by one.
    blocker.release().await.unwrap();
    let guards2 = b.lock_many(&set2).ttl(ttl).acquire().await.unwrap();
    assert_eq!(present(&a, &set2).await, set2);
    println!("after the migration: {:?}", b.client().stats());

    early_guards.release().await.unwrap();
    guards1.release().await.unwrap();
    guards2.release().await.unwrap();
    let all: Vec<String> = [early, set1, set2].concat();
    assert!(present(&a, &all).await.is_empty());
}

/// Against a standalone server (one shard owning every slot) lock_many is
/// one round trip, and all or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server() {
    let server = StandaloneServer::start().await.unwrap();
    let mgr = LockManager::builder()
        .seeds([server.url()])
        .namespace("lock:")
        .build()
        .await
        .unwrap();
    let keys = spread_keys("solo");
    let before = mgr.client().stats().attempts;
    let guards = mgr.lock_many(&keys).acquire().await.unwrap();
    assert_eq!(mgr.client().stats().attempts - before, 1);
    assert_eq!(present(&mgr, &keys).await, keys);
    let mut overlapping = vec![key_in(1, "free")];
    overlapping.push(keys[3].clone());
    assert!(matches!(
        mgr.lock_many(&overlapping).acquire().await,
        Err(Error::Contended)
    ));
    assert!(present(&mgr, &overlapping[..1]).await.is_empty());
    guards.release().await.unwrap();
    assert!(present(&mgr, &keys).await.is_empty());
}

/// lock_many futures dropped at any point (cut by short timeouts, with and
/// without contention) leave no lease behind beyond its TTL: nothing is
/// registered for renewal before every key is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_leave_nothing_beyond_the_ttl() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let b = manager(&cluster).await;
    let keys = spread_keys("drop");
    let blocked = keys[5].clone();
    let mut cut = 0;
    for round in 0..60 {
        let blocker = if round % 2 == 0 {
            // A dropped future of `a` may still hold it until its TTL.
            let wait = Duration::from_secs(5);
            Some(b.lock(&blocked).wait(wait).acquire().await.unwrap())
        } else {
            None
        };
        let request = a
            .lock_many(&keys)
            .ttl(Duration::from_secs(1))
            .wait(Duration::from_secs(1))
            .acquire();
        let budget = Duration::from_micros(fastrand::u64(0..4_000));
        match tokio::time::timeout(budget, request).await {
            Ok(Ok(guards)) => guards.release().await.unwrap(),
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => cut += 1,
        }
        if let Some(blocker) = blocker {
            blocker.release().await.unwrap();
        }
    }
    assert!(cut > 0, "some futures were dropped mid-flight");
    println!(
        "dropped futures: {cut} of 60 cut, {} keys left behind",
        present(&b, &keys).await.len()
    );
    wait_until(
        Duration::from_secs(10),
        "every lease left by a dropped future to expire",
        || async { present(&b, &keys).await.is_empty() },
    )
    .await;
}

/// A `lock_many` whose rollback fails (the first key's primary answers
/// `BUSY` past the request timeout: a script spins on it) hands the key it
/// could not give back to the background release when the call fails:
/// once the script is killed, the key is gone within seconds, not after
/// its 30 s TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rollback_leaves_no_orphan_lease() {
    // A primary busy for a second or two is not failed over meanwhile.
    let cluster = TestCluster::start_with(shardlock::testkit::ClusterSpec {
        node_timeout: Duration::from_secs(5),
        ..shardlock::testkit::ClusterSpec::default()
    })
    .await
    .unwrap();
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .response_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1))
        .build()
        .await
        .unwrap();
    let other = manager(&cluster).await;
    // Taken first (lowest slot), rolled back when `held` is found taken.
    let (first, held) = (
        key_in(100, "rollback:first"),
        key_in(12_100, "rollback:held"),
    );
    let x = cluster.primary_of_slot(100).await.unwrap();
    let y = cluster.primary_of_slot(12_100).await.unwrap();
    assert_ne!(x, y);
    // Connections open and scripts loaded before the faults.
    mgr.lock_many([&first, &held])
        .acquire()
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    cluster
        .command(
            &x,
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("busy-reply-threshold")
                .arg("50"),
        )
        .await
        .unwrap();
    let _held_elsewhere = other.lock(&held).acquire().await.unwrap();
    let exists_on_x = |key: String| {
        let (cluster, x) = (&cluster, x.clone());
        async move {
            let found = cluster
                .command(&x, redis::cmd("EXISTS").arg(lock_key(&key)))
                .await;
            matches!(found, Ok(redis::Value::Int(1)))
        }
    };

    // `first` is taken on x while the pipeline to y waits on y, stopped.
    cluster.pause(&y).unwrap();
    let acquire = tokio::spawn({
        let (mgr, keys) = (mgr.clone(), [first.clone(), held.clone()]);
        async move {
            mgr.lock_many(keys)
                .ttl(Duration::from_secs(30))
                .acquire()
                .await
                .map(drop)
        }
    });
    wait_until(Duration::from_secs(1), "the first key to be taken", || {
        exists_on_x(first.clone())
    })
    .await;
    // x turns busy, then y answers: `held` is taken, `first` is rolled back
    // while x refuses every command.
    let mut spinner = redis::Client::open(format!("redis://{x}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let spin = tokio::spawn(async move {
        let spun: redis::RedisResult<()> = redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query_async(&mut spinner)
            .await;
        spun
    });
    wait_until(Duration::from_secs(1), "x to answer BUSY", || {
        let (cluster, x) = (&cluster, x.clone());
        async move {
            let pinged = cluster.command(&x, &redis::cmd("PING")).await;
            matches!(&pinged, Err(e) if e.server_code() == Some("BUSY"))
        }
    })
    .await;
    cluster.resume(&y).unwrap();
    let acquired = acquire.await.unwrap();
    assert!(matches!(acquired, Err(Error::Contended)), "{acquired:?}");
    cluster
        .command_with_timeout(&x, redis::cmd("SCRIPT").arg("KILL"), Duration::from_secs(2))
        .await
        .unwrap();
    let _ = spin.await;
    wait_until(
        Duration::from_secs(3),
        "the key of the failed rollback to be released",
        || {
            let found = exists_on_x(first.clone());
            async move { !found.await }
        },
    )
    .await;
}
