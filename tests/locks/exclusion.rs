//! Exclusion and ownership: one holder at a time, only the holder can end or
//! extend its lease, retries and dropped futures leave nothing behind, and
//! `.replicas(n)` either gets its acknowledgements or gives the lease back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::FutureExt;
use redis::Value;
use shardlock::testkit::{ClusterSpec, TestCluster};
use shardlock::{Error, LockManager, key_slot};
use tokio::task::JoinSet;

use crate::support::{lock_key, manager, wait_until};

/// Counters incremented under the locks in the mutual-exclusion test.
const COUNTERS: usize = 50;
/// Tasks per manager in the mutual-exclusion test.
const TASKS_PER_MANAGER: usize = 64;
/// Increments each of those tasks makes.
const ROUNDS: usize = 20;

/// What `key` holds now, read straight from the primary serving it (not
/// through the client under test, so its counters do not move).
async fn stored(cluster: &TestCluster, key: &str) -> Option<String> {
    let primary = cluster
        .primary_of_slot(key_slot(key.as_bytes()))
        .await
        .unwrap();
    match cluster
        .command(&primary, redis::cmd("GET").arg(key))
        .await
        .unwrap()
    {
        Value::Nil => None,
        Value::BulkString(v) => Some(String::from_utf8(v).unwrap()),
        other => panic!("GET {key}: {other:?}"),
    }
}

/// `PTTL` of `key` on the primary serving it.
async fn pttl(cluster: &TestCluster, key: &str) -> i64 {
    let primary = cluster
        .primary_of_slot(key_slot(key.as_bytes()))
        .await
        .unwrap();
    match cluster
        .command(&primary, redis::cmd("PTTL").arg(key))
        .await
        .unwrap()
    {
        Value::Int(ms) => ms,
        other => panic!("PTTL {key}: {other:?}"),
    }
}

/// A lock value is a 128-bit token in 32 lowercase hex digits, then
/// `.<fence>` when fenced; returns the fence.
fn parse_value(value: &str) -> Option<u64> {
    let (token, fence) = match value.split_once('.') {
        Some((token, fence)) => (token, Some(fence.parse::<u64>().expect("numeric fence"))),
        None => (value, None),
    };
    assert_eq!(token.len(), 32, "a 128-bit token in hex: {value:?}");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "a 128-bit token in hex: {value:?}"
    );
    fence
}

/// The counter that worker `worker` increments in round `round`: every
/// counter is shared by tasks of both managers.
fn counter_of(worker: usize, round: usize) -> usize {
    (worker * 17 + round * 31) % COUNTERS
}

/// Two managers (as two processes would be) with 64 tasks each doing
/// GET-then-SET increments under the locks lose no update, and no two tasks
/// are ever inside the same critical section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_exclude_each_other() {
    let cluster = TestCluster::start().await.unwrap();
    let managers = [manager(&cluster).await, manager(&cluster).await];
    let inside: Arc<Vec<AtomicUsize>> = Arc::new((0..COUNTERS).map(|_| 0.into()).collect());
    let mut tasks = JoinSet::new();
    for (m, mgr) in managers.iter().enumerate() {
        for t in 0..TASKS_PER_MANAGER {
            let worker = m * TASKS_PER_MANAGER + t;
            let (mgr, inside) = (mgr.clone(), inside.clone());
            tasks.spawn(async move {
                for round in 0..ROUNDS {
                    let c = counter_of(worker, round);
                    let guard = mgr
                        .lock(format!("counter:{c}"))
                        .wait(Duration::from_secs(60))
                        .acquire()
                        .await
                        .unwrap();
                    assert_eq!(inside[c].fetch_add(1, SeqCst), 0, "two holders of {c}");
                    let key = format!("count:{c}");
                    let client = mgr.client();
                    let n: Option<u64> = client
                        .query(&key, redis::cmd("GET").arg(&key).clone())
                        .await
                        .unwrap();
                    // Widen the window between read and write.
                    tokio::task::yield_now().await;
                    let next = n.unwrap_or(0) + 1;
                    let _: () = client
                        .query(&key, redis::cmd("SET").arg(&key).arg(next).clone())
                        .await
                        .unwrap();
                    inside[c].fetch_sub(1, SeqCst);
                    guard.release().await.unwrap();
                }
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }

    let mut expected = [0u64; COUNTERS];
    for worker in 0..2 * TASKS_PER_MANAGER {
        for round in 0..ROUNDS {
            expected[counter_of(worker, round)] += 1;
        }
    }
    for (c, want) in expected.iter().enumerate() {
        let key = format!("count:{c}");
        let got = stored(&cluster, &key)
            .await
            .map(|v| v.parse::<u64>().unwrap());
        assert_eq!(got.unwrap_or(0), *want, "counter {c}");
    }
}

/// Only the holder can release or extend: an expired holder's extend is
/// refused at once (its `valid_until` has passed), its releases reach the
/// server and are refused there (the value is the new holder's), and the
/// extend of a holder whose key was deleted behind its back is refused by
/// the server too; the new leases stay as they were; every acquisition
/// stores a fresh 128-bit token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_can_release_or_extend() {
    let cluster = TestCluster::start().await.unwrap();
    let a = manager(&cluster).await;
    let b = manager(&cluster).await;
    let keys = ["tok:release", "tok:extend"];

    let mut a_guards = Vec::new();
    let mut a_values = Vec::new();
    for key in keys {
        let guard = a
            .lock(key)
            .auto_renew(false)
            .ttl(Duration::from_millis(300))
            .acquire()
            .await
            .unwrap();
        a_guards.push(guard);
        a_values.push(stored(&cluster, &lock_key(key)).await.expect("A holds it"));
    }
    for key in keys {
        let cluster = &cluster;
        wait_until(
            Duration::from_secs(10),
            "A's lease to expire",
            || async move { stored(cluster, &lock_key(key)).await.is_none() },
        )
        .await;
    }
    let mut b_guards = Vec::new();
    let mut b_values = Vec::new();
    for key in keys {
        b_guards.push(b.lock(key).acquire().await.unwrap());
        b_values.push(stored(&cluster, &lock_key(key)).await.expect("B holds it"));
    }
    for (va, vb) in a_values.iter().zip(&b_values) {
        assert_eq!(parse_value(va), None);
        assert_eq!(parse_value(vb), None);
        assert_ne!(va, vb, "two acquisitions, two tokens");
    }

    let [a_release, a_extend]: [_; 2] = a_guards.try_into().unwrap();
    // A's leases are past their `valid_until`: the extend is refused without
    // a request; the releases (a lost lease is still compare-and-deleted)
    // reach the server, whose compare fails.
    let sent = a.client().stats().attempts;
    let extended = a_extend.extend(Duration::from_secs(60)).await;
    assert!(matches!(extended, Err(Error::NotHeld)), "{extended:?}");
    assert_eq!(a.client().stats().attempts, sent, "refused before sending");
    assert!(a_extend.is_lost());
    let sent = a.client().stats().attempts;
    let released = a_release.release().await;
    assert!(matches!(released, Err(Error::NotHeld)), "{released:?}");
    assert!(a.client().stats().attempts > sent, "the server decided");
    let sent = a.client().stats().attempts;
    let released = a_extend.release().await;
    assert!(matches!(released, Err(Error::NotHeld)), "{released:?}");
    assert!(a.client().stats().attempts > sent, "the server decided");

    // A holder whose key was deleted behind its back (as a failover that
    // lost it would) and taken by B: its extend reaches the server, whose
    // compare fails.
    let stolen = lock_key("tok:stolen");
    let a_stolen = a
        .lock("tok:stolen")
        .auto_renew(false)
        .ttl(Duration::from_secs(30))
        .acquire()
        .await
        .unwrap();
    let primary = cluster
        .primary_of_slot(key_slot(stolen.as_bytes()))
        .await
        .unwrap();
    cluster
        .command(&primary, redis::cmd("DEL").arg(&stolen))
        .await
        .unwrap();
    let b_stolen = b.lock("tok:stolen").acquire().await.unwrap();
    let vb = stored(&cluster, &stolen).await.expect("B holds it");
    let sent = a.client().stats().attempts;
    let extended = a_stolen.extend(Duration::from_secs(60)).await;
    assert!(matches!(extended, Err(Error::NotHeld)), "{extended:?}");
    assert!(a.client().stats().attempts > sent, "the server decided");
    assert!(a_stolen.is_lost());
    assert!(matches!(a_stolen.release().await, Err(Error::NotHeld)));
    assert_eq!(stored(&cluster, &stolen).await, Some(vb));
    b_stolen.release().await.unwrap();

    // B's leases are untouched: same values, TTLs not raised to A's 60 s.
    for (key, vb) in keys.iter().zip(&b_values) {
        assert_eq!(stored(&cluster, &lock_key(key)).await.as_ref(), Some(vb));
        let left = pttl(&cluster, &lock_key(key)).await;
        assert!((1..=10_000).contains(&left), "{key}: PTTL {left}");
    }
    for (key, guard) in keys.iter().zip(b_guards) {
        guard.extend(Duration::from_secs(20)).await.unwrap();
        assert!(pttl(&cluster, &lock_key(key)).await > 10_000);
        guard.release().await.unwrap();
        assert_eq!(stored(&cluster, &lock_key(key)).await, None);
    }

    // The same holder acquiring the same key twice stores two tokens.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let guard = b.lock("tok:again").acquire().await.unwrap();
        seen.push(stored(&cluster, &lock_key("tok:again")).await.unwrap());
        guard.release().await.unwrap();
    }
    assert_ne!(seen[0], seen[1]);
}

/// An acquire whose reply is lost (its primary is stopped past the response
/// timeout, then resumed) is retried with the same token, and the retry
/// counts the lease it finds as its own: one lease, the guard's, with the
/// same fencing token as stored when fenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_lost_reply_finds_its_own_lease() {
    let cluster = TestCluster::start_with(ClusterSpec {
        // No failover while a primary is stopped.
        node_timeout: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .unwrap();
    let mgr = LockManager::builder()
        .seeds(cluster.seeds())
        .namespace("lock:")
        .response_timeout(Duration::from_millis(200))
        .request_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let other = manager(&cluster).await;

    for fenced in [false, true] {
        let key = if fenced {
            "retry:fenced"
        } else {
            "retry:plain"
        };
        let full = lock_key(key);
        let primary = cluster
            .primary_of_slot(key_slot(full.as_bytes()))
            .await
            .unwrap();
        let request = || {
            let request = mgr.lock(key);
            if fenced { request.fenced() } else { request }
        };
        // Once before: the connection is open and the script loaded, so the
        // first attempt below really runs on the server (not NOSCRIPT).
        request().acquire().await.unwrap().release().await.unwrap();
        let before = mgr.client().stats();

        cluster.pause(&primary).unwrap();
        // No .wait(): a retry that took the lease for someone else's would
        // fail with Contended.
        let acquire = tokio::spawn(request().acquire());
        let client = mgr.client();
        wait_until(
            Duration::from_secs(20),
            "a timed-out attempt retried",
            || {
                let attempts = client.stats().attempts;
                async move { attempts >= before.attempts + 2 }
            },
        )
        .await;
        cluster.resume(&primary).unwrap();
        let acquired = acquire.await.unwrap();
        let guard = acquired.unwrap_or_else(|e| panic!("fenced {fenced}: not recognised: {e}"));
        let after = mgr.client().stats();
        assert!(
            after.retryable_errors > before.retryable_errors,
            "{after:?}"
        );

        let value = stored(&cluster, &full).await.expect("held");
        let fence = parse_value(&value);
        assert_eq!(fence, guard.fencing_token().map(|f| f.get()), "{value}");
        // One lease on that primary (plus the slot's fencing counter, at the
        // fence this acquire returned).
        let keys = match cluster
            .command(&primary, redis::cmd("KEYS").arg("*"))
            .await
            .unwrap()
        {
            Value::Array(keys) => keys,
            other => panic!("KEYS: {other:?}"),
        };
        let others: Vec<_> = keys
            .into_iter()
            .filter(|k| *k != Value::BulkString(full.clone().into_bytes()))
            .collect();
        match (fenced, others.as_slice()) {
            (false, []) => {}
            (true, [Value::BulkString(counter)]) => {
                let counter = String::from_utf8(counter.clone()).unwrap();
                let at = stored(&cluster, &counter).await.unwrap();
                assert_eq!(at.parse::<u64>().ok(), fence, "{counter}");
            }
            (_, others) => panic!("unexpected keys besides {full}: {others:?}"),
        }
        assert!(other.lock(key).try_acquire().await.unwrap().is_none());
        // Compare-and-delete succeeds: the stored value is the guard's.
        guard.release().await.unwrap();
        assert_eq!(stored(&cluster, &full).await, None);
    }
}

/// Acquire futures dropped at random points (after one poll with the SET on
/// the wire, in flight, while backing off) under contention, from another
/// manager and among themselves, leave no lease beyond its TTL and no task
/// behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_acquires_leave_nothing_behind() {
    const KEYS: usize = 16;
    const FUTURES: usize = 400;
    const TTL: Duration = Duration::from_millis(600);
    let cluster = TestCluster::start().await.unwrap();
    let holder = manager(&cluster).await;
    let mgr = manager(&cluster).await;
    let observer = manager(&cluster).await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("cancel:{i}")).collect();

    let mut held = Vec::new();
    for key in &keys {
        held.push(holder.lock(key).acquire().await.unwrap());
    }
    // Every client connects to every node it will use before the baseline:
    // a connection's driver task is not one left behind by an acquire.
    for client in [mgr.client(), observer.client()] {
        for key in &keys {
            let full = lock_key(key);
            let _: Option<String> = client
                .query(&full, redis::cmd("GET").arg(&full).clone())
                .await
                .unwrap();
        }
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();

    // Half the acquires start while the holder holds every key, half once
    // it has let go (then they contend among themselves).
    let (released_tx, released_rx) = tokio::sync::watch::channel(false);
    let ended = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..FUTURES {
        let request = mgr
            .lock(&keys[i % KEYS])
            .ttl(TTL)
            .wait(Duration::from_secs(10));
        let (ended, mut released) = (ended.clone(), released_rx.clone());
        tasks.spawn(async move {
            if i % 2 == 1 {
                released.wait_for(|r| *r).await.unwrap();
            }
            if i % 5 == 0 {
                // Dropped after its first poll: its SET may be on the wire.
                drop(request.acquire().now_or_never());
            } else {
                let limit = Duration::from_micros(fastrand::u64(0..500_000));
                if let Ok(Ok(guard)) = tokio::time::timeout(limit, request.acquire()).await {
                    if i % 3 == 0 {
                        drop(guard);
                    } else {
                        // NotHeld only if this task stalled past the TTL.
                        let released = guard.release().await;
                        assert!(
                            matches!(released, Ok(()) | Err(Error::NotHeld)),
                            "{released:?}"
                        );
                    }
                }
            }
            ended.fetch_add(1, SeqCst);
        });
    }
    let ended_ref = &ended;
    wait_until(
        Duration::from_secs(30),
        "a quarter of the acquires ended",
        || async move { ended_ref.load(SeqCst) >= FUTURES / 4 },
    )
    .await;
    for guard in held {
        guard.release().await.unwrap();
    }
    released_tx.send(true).unwrap();
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    // A last wave on free keys, each dropped with its SET on the wire: these
    // leases are taken on the server, and nobody holds their guard.
    for key in &keys {
        drop(mgr.lock(key).ttl(TTL).acquire().now_or_never());
    }

    // Such leases end by themselves within their TTL; none is renewed
    // behind the caller's back.
    let observer = &observer;
    for key in &keys {
        wait_until(
            Duration::from_secs(5),
            "every lease to end",
            || async move {
                let full = lock_key(key);
                let held: Option<String> = observer
                    .client()
                    .query(&full, redis::cmd("GET").arg(&full).clone())
                    .await
                    .unwrap();
                held.is_none()
            },
        )
        .await;
        let guard = observer.lock(key).try_acquire().await.unwrap();
        guard.expect("free again").release().await.unwrap();
    }
    wait_until(Duration::from_secs(10), "no task left by acquire", || {
        let alive = metrics.num_alive_tasks();
        async move { alive <= baseline }
    })
    .await;
}

/// `.replicas(1)` succeeds while the shard's replica acknowledges, and fails
/// with ReplicationTimeout (releasing the lease) while it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_acknowledge_or_the_lease_is_given_back() {
    let cluster = TestCluster::start().await.unwrap();
    let mgr = manager(&cluster).await;
    let other = manager(&cluster).await;
    let key = "replicated";
    let full = lock_key(key);
    let primary = cluster
        .primary_of_slot(key_slot(full.as_bytes()))
        .await
        .unwrap();
    let replica = cluster.replica_of(&primary).await.unwrap();

    let guard = mgr.lock(key).replicas(1).acquire().await.unwrap();
    assert!(stored(&cluster, &full).await.is_some());
    guard.release().await.unwrap();

    cluster.pause(&replica).unwrap();
    for fenced in [false, true] {
        let request = mgr.lock(key).replicas(1);
        let request = if fenced { request.fenced() } else { request };
        match request.acquire().await {
            Err(Error::ReplicationTimeout { acked, wanted }) => {
                assert_eq!((acked, wanted), (0, 1));
            }
            other => panic!("expected ReplicationTimeout, got {other:?}"),
        }
        assert_eq!(stored(&cluster, &full).await, None, "released again");
        let taken = other.lock(key).try_acquire().await.unwrap();
        taken.expect("free for others").release().await.unwrap();
    }
    cluster.resume(&replica).unwrap();

    // Once the replica has caught up, acknowledgements come back.
    let mgr = &mgr;
    wait_until(
        Duration::from_secs(30),
        "the replica to acknowledge",
        || async move {
            match mgr.lock(key).replicas(1).acquire().await {
                Ok(guard) => guard.release().await.is_ok(),
                Err(Error::ReplicationTimeout { .. }) => false,
                Err(e) => panic!("{e}"),
            }
        },
    )
    .await;
}
